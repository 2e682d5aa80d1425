//! `enricher`: consumes `sensors-sample`, joins each event with the `cars`, `car_models` and
//! `car_colors` tables from S3 (left joins, as the seed), adds `expected_gear` and produces the
//! result to `samples-enriched`, keyed by car id.
//!
//! At-least-once: an input's offset is committed only after its enriched event is acknowledged
//! (see `pipeline_kafka::runtime`). The tables are loaded at start (waiting, with backoff, while
//! S3 or a table is missing) and re-read every `--dims-refresh`; a reload swaps them atomically
//! between two events, and a failed reload keeps the tables in use.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use clap::Parser;
use pipeline_core::join::{DimTables, JoinIndex};
use pipeline_core::schema::{JsonEvent, SensorEvent};
use pipeline_kafka::args::ServiceArgs;
use pipeline_kafka::runtime::{self, InputMeta, Output, Processor};
use pipeline_s3::S3Args;
use pipeline_s3::dims::load_tables;
use pipeline_s3::store::ObjectStore;
use tokio_util::sync::CancellationToken;

/// Enriches sensor events with the dimension tables.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Kafka and runtime settings.
    #[command(flatten)]
    service: ServiceArgs,

    /// Where the dimension tables are.
    #[command(flatten)]
    s3: S3Args,

    /// Topic of the sensor events.
    #[arg(long, env = "SENSORS_TOPIC", default_value = "sensors-sample")]
    input_topic: String,

    /// Topic the enriched events go to.
    #[arg(long, env = "ENRICHED_TOPIC", default_value = "samples-enriched")]
    output_topic: String,

    /// How often the dimension tables are re-read from S3.
    #[arg(long, env = "DIMS_REFRESH", default_value = "5m", value_parser = humantime::parse_duration)]
    dims_refresh: Duration,
}

/// The join as a runtime processor.
struct Enricher {
    /// The current tables, swapped whole by the reload task.
    dims: Arc<ArcSwap<JoinIndex>>,
    /// Destination topic.
    output: Arc<str>,
    /// Events whose car is not in `cars` (they still flow on, with null fields).
    unknown: u64,
    /// Unknown car ids already logged, so each is logged once.
    unknown_logged: HashSet<i64>,
}

impl Processor for Enricher {
    type Input<'a> = SensorEvent;

    fn process(&mut self, event: SensorEvent, _: InputMeta<'_>, out: &mut Vec<Output>) {
        let dims = self.dims.load();
        let (enriched, known) = dims.enrich(event);
        if !known {
            self.unknown += 1;
            if self.unknown_logged.len() < 1000 && self.unknown_logged.insert(enriched.car_id) {
                tracing::warn!(
                    car_id = enriched.car_id,
                    "event for a car not in the cars table; dimension fields left null"
                );
            }
        }
        // The record owns its payload: one buffer of the right size, written in place.
        let mut payload = Vec::with_capacity(320);
        enriched.encode_into(&mut payload);
        out.push(Output {
            topic: self.output.clone(),
            key: Some(enriched.car_id.to_string().into_bytes()),
            payload,
            headers: None,
        });
    }

    fn on_shutdown(&mut self, _: &mut Vec<Output>) {
        tracing::info!(unknown_car_events = self.unknown, "enricher stopping");
    }
}

/// Row counts and load time of the tables in use (the dims' age is `time() - loaded`).
fn record_dims(t: &DimTables) {
    for (table, rows) in [("cars", t.cars.len()), ("car_models", t.models.len()), ("car_colors", t.colors.len())] {
        metrics::gauge!("pipeline_dims_rows", "table" => table).set(rows as f64);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    metrics::gauge!("pipeline_dims_loaded_timestamp_seconds").set(now.as_secs_f64());
}

/// Loads the tables, retrying with backoff (1 s doubling to 30 s) until they load or `cancel`.
async fn load_until_ready(store: &ObjectStore, prefix: &str, cancel: &CancellationToken) -> Option<JoinIndex> {
    let mut backoff = Duration::from_secs(1);
    loop {
        match load_tables(store, prefix).await {
            Ok(tables) => {
                record_dims(&tables);
                let index = JoinIndex::new(&tables);
                tracing::info!(
                    cars = tables.cars.len(),
                    models = tables.models.len(),
                    colors = tables.colors.len(),
                    "dimension tables loaded"
                );
                return Some(index);
            }
            Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "dimension tables not available yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Re-reads the tables every `every`; a failure keeps the current ones.
async fn reload_forever(
    store: ObjectStore,
    prefix: String,
    every: Duration,
    dims: Arc<ArcSwap<JoinIndex>>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => return,
        }
        match load_tables(&store, &prefix).await {
            Ok(tables) => {
                record_dims(&tables);
                dims.store(Arc::new(JoinIndex::new(&tables)));
                tracing::info!(cars = tables.cars.len(), "dimension tables reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "reloading the dimension tables failed; keeping the ones in use"),
        }
    }
}

async fn run(cli: Cli, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut config =
        runtime::RuntimeConfig::new(&cli.service, "enricher", &cli.input_topic, true, Duration::from_secs(3600));
    config.output_topics = vec![cli.output_topic.clone()];
    config.readiness.require("dims_loaded");
    cli.service.observe(&config.readiness, &cancel).await?;
    let store = ObjectStore::connect(&cli.s3).await;
    let Some(index) = load_until_ready(&store, &cli.s3.dims_prefix, &cancel).await else {
        return Ok(());
    };
    config.readiness.set("dims_loaded", true);
    let dims = Arc::new(ArcSwap::from_pointee(index));
    tokio::spawn(reload_forever(store, cli.s3.dims_prefix.clone(), cli.dims_refresh, dims.clone(), cancel.clone()));
    let processor =
        Enricher { dims, output: Arc::from(cli.output_topic.as_str()), unknown: 0, unknown_logged: HashSet::new() };
    runtime::run(&config, processor, cancel).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pipeline_kafka::shutdown::serve("enricher", cli.service.log_format, |cancel| run(cli, cancel)).await
}
