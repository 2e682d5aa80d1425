//! `enricher`: consumes `sensors-sample`, joins each event with the `cars`, `car_models` and
//! `car_colors` tables from S3 (left joins, as the seed), adds `expected_gear` and produces the
//! result to `samples-enriched`, keyed by car id.
//!
//! At-least-once: an input's offset is committed only after its enriched event is acknowledged
//! (see `pipeline_kafka::runtime`). The tables are loaded at start (waiting, with backoff, while
//! S3 or a table is missing); every `--dims-poll` a LIST of their objects tells whether they
//! changed, and only then are they read and swapped in atomically between two events (`dims`).
//! Every record carries the version it was joined with in its `dims.version` header.

mod dims;

use pipeline_core::defaults;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::Parser;
use pipeline_core::schema::{JsonEvent, SensorEvent};
use pipeline_kafka::args::{ServiceArgs, positive_duration};
use pipeline_kafka::runtime::{self, InputMeta, Output, Processor};
use pipeline_s3::S3Args;
use pipeline_s3::store::ObjectStore;
use tokio_util::sync::CancellationToken;

use crate::dims::{Dims, Poller};

/// `--dims-poll`'s default.
const DEFAULT_DIMS_POLL: Duration = Duration::from_secs(10);

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
    #[arg(long, env = "SENSORS_TOPIC", default_value = defaults::SENSORS_TOPIC)]
    input_topic: String,

    /// Topic the enriched events go to.
    #[arg(long, env = "ENRICHED_TOPIC", default_value = defaults::ENRICHED_TOPIC)]
    output_topic: String,

    /// How often the dimension tables are checked for a change: one LIST per table, no read;
    /// they are read and swapped in only when their objects changed [default: 10s].
    #[arg(long, env = "DIMS_POLL", value_parser = positive_duration)]
    dims_poll: Option<Duration>,

    /// Deprecated alias of --dims-poll (it was a full reload every interval; a reload now
    /// happens only on a change). Used when --dims-poll / DIMS_POLL is not set, with a warning.
    #[arg(long, env = "DIMS_REFRESH", hide = true, value_parser = positive_duration)]
    dims_refresh: Option<Duration>,
}

impl Cli {
    /// The poll interval: `--dims-poll`, else the deprecated `--dims-refresh`, else 10 s.
    fn dims_poll(&self) -> Duration {
        match (self.dims_poll, self.dims_refresh) {
            (Some(poll), _) => poll,
            (None, Some(refresh)) => {
                tracing::warn!(
                    every = ?refresh,
                    "--dims-refresh / DIMS_REFRESH is deprecated: use --dims-poll / DIMS_POLL (the tables are \
                     now checked for a change every interval and read only when they changed)"
                );
                refresh
            }
            (None, None) => DEFAULT_DIMS_POLL,
        }
    }
}

/// The join as a runtime processor.
struct Enricher {
    /// The current tables, swapped whole by the poll task.
    dims: Arc<ArcSwap<Dims>>,
    /// Destination topic.
    output: Arc<str>,
    /// Events whose car is not in `cars` (they still flow on, with null fields).
    unknown: u64,
    /// `pipeline_unknown_car_events_total`, registered once: an increment is one atomic add,
    /// no registry lookup per event.
    unknown_metric: metrics::Counter,
    /// Unknown car ids already logged, so each is logged once.
    unknown_logged: HashSet<i64>,
}

impl Processor for Enricher {
    type Restored = ();
    type Input<'a> = SensorEvent;

    fn process(&mut self, event: SensorEvent, _: InputMeta<'_>, out: &mut Vec<Output>) {
        let dims = self.dims.load();
        let (enriched, known) = dims.index.enrich(event);
        if !known {
            self.unknown += 1;
            self.unknown_metric.increment(1);
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
            // The version's prepared header, copied (librdkafka owns each record's headers).
            headers: Some(dims.headers.clone()),
        });
    }

    fn on_shutdown(&mut self, _: &mut Vec<Output>) {
        tracing::info!(unknown_car_events = self.unknown, dims_version = %self.dims.load().version, "enricher stopping");
    }
}

async fn run(cli: Cli, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut config = runtime::RuntimeConfig::new(
        &cli.service,
        "enricher",
        &cli.input_topic,
        runtime::OffsetCommits::Acknowledged,
        Duration::from_secs(3600),
    )?;
    config.output_topics = vec![cli.output_topic.clone()];
    config.readiness.require(dims::READY_CHECK);
    cli.service.observe(&config.readiness, &cancel).await?;
    let store = ObjectStore::connect(&cli.s3).await;
    let started = Poller::start(store, cli.s3.dims_prefix.clone(), config.readiness.clone(), &cancel).await;
    let Some(poller) = started.context("loading the dimension tables")? else {
        return Ok(());
    };
    let dims = poller.current();
    // The poller stops the service (cancels `stop`) when S3 refuses the tables for good.
    let stop = cancel.child_token();
    let polling = tokio::spawn(poller.run(cli.dims_poll(), stop.clone()));
    let processor = Enricher {
        dims,
        output: Arc::from(cli.output_topic.as_str()),
        unknown: 0,
        unknown_metric: metrics::counter!("pipeline_unknown_car_events_total"),
        unknown_logged: HashSet::new(),
    };
    let result = runtime::run(&config, processor, stop.clone()).await;
    stop.cancel();
    let polled = polling.await.context("the dimension tables' poller panicked")?;
    result?;
    polled.context("reloading the dimension tables")
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (log_format, drain_timeout) = (cli.service.log_format, cli.service.drain_timeout);
    pipeline_kafka::shutdown::service_main("enricher", log_format, drain_timeout, |cancel| run(cli, cancel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(args: &[&str]) -> Duration {
        let cli = Cli::try_parse_from([&["enricher"][..], args].concat()).expect("flags");
        cli.dims_poll()
    }

    #[test]
    fn dims_poll_defaults_to_ten_seconds_and_the_old_flag_still_works() {
        // Built from flags only: DIMS_POLL / DIMS_REFRESH in the test environment would win.
        if std::env::var_os("DIMS_POLL").is_some() || std::env::var_os("DIMS_REFRESH").is_some() {
            return;
        }
        assert_eq!(poll(&[]), Duration::from_secs(10));
        assert_eq!(poll(&["--dims-poll", "500ms"]), Duration::from_millis(500));
        assert_eq!(poll(&["--dims-refresh", "2s"]), Duration::from_secs(2), "deprecated alias");
        assert_eq!(poll(&["--dims-refresh", "2s", "--dims-poll", "1s"]), Duration::from_secs(1));
    }
}
