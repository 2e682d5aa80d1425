//! `generator dims`: the seed's dimension tables, written to S3 as Parquet.

use anyhow::Context;
use pipeline_core::join::DimTables;
use pipeline_s3::dims::{DimsError, load_tables, write_tables};
use pipeline_s3::store::ObjectStore;

use crate::cli::DimsArgs;

/// Creates the bucket if missing and writes the three tables (or, with `--if-missing`, leaves
/// complete existing tables alone).
pub async fn dims(args: DimsArgs) -> anyhow::Result<()> {
    let store = ObjectStore::connect(&args.s3).await;
    store.ensure_bucket().await?;
    let prefix = &args.s3.dims_prefix;
    if args.if_missing {
        match load_tables(&store, prefix).await {
            Ok(t) => {
                println!(
                    "dims already present at {}: {} cars, {} models, {} colors (left as they are)",
                    store.url(prefix),
                    t.cars.len(),
                    t.models.len(),
                    t.colors.len()
                );
                return Ok(());
            }
            Err(DimsError::Missing { .. }) => {}
            Err(e) => return Err(e).context("checking the existing tables"),
        }
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let tables = DimTables::seed(args.cars as usize, seed);
    write_tables(&store, prefix, &tables).await?;
    println!(
        "wrote {} cars (seed {seed}), {} models, {} colors to {}",
        tables.cars.len(),
        tables.models.len(),
        tables.colors.len(),
        store.url(prefix)
    );
    Ok(())
}
