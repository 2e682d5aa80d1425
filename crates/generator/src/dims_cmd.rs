//! `generator dims`: the seed's dimension tables, written to S3 as Parquet, and the default
//! rules table beside them when there is none.

use anyhow::Context;
use pipeline_core::join::DimTables;
use pipeline_core::rules::table::Canonical;
use pipeline_s3::dims::{DimsError, load_tables, write_tables};
use pipeline_s3::rules_store;
use pipeline_s3::store::ObjectStore;

use crate::cli::DimsArgs;

/// Creates the bucket if missing and writes the three tables (or, with `--if-missing`, leaves
/// complete existing tables alone); then the default rules table, unless one exists.
pub async fn dims(args: DimsArgs) -> anyhow::Result<()> {
    let store = ObjectStore::connect(&args.s3).await;
    store.ensure_bucket().await?;
    write_tables_unless_present(&store, &args).await?;
    let prefix = &args.rules.rules_prefix;
    match rules_store::list_current(&store, prefix).await.context("checking for a rules table")? {
        Some(_) => println!("rules table present at {} (left as it is)", store.url(&rules_store::current_key(prefix))),
        None => {
            let rules = Canonical::of_base(args.thresholds.rules()).context("the default rules")?;
            let written = rules_store::write(&store, prefix, &rules, args.rules.rules_keep).await?;
            println!(
                "wrote the default rules table (version {}) to {}",
                written.version,
                store.url(&rules_store::current_key(prefix))
            );
        }
    }
    Ok(())
}

/// The tables, unless `--if-missing` and all three exist.
async fn write_tables_unless_present(store: &ObjectStore, args: &DimsArgs) -> anyhow::Result<()> {
    let prefix = &args.s3.dims_prefix;
    if args.if_missing {
        match load_tables(store, prefix).await {
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
    write_tables(store, prefix, &tables).await?;
    println!(
        "wrote {} cars (seed {seed}), {} models, {} colors to {}",
        tables.cars.len(),
        tables.models.len(),
        tables.colors.len(),
        store.url(prefix)
    );
    Ok(())
}
