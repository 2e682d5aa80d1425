//! `detector`: consumes `samples-enriched` and produces to `alert-data` the events that break a
//! rule — speed above the limit, rpm above the limit, or (where the gear rule applies) gear
//! different from `expected_gear` — each with the list of rules it broke in `alert_reasons` and
//! the thresholds it was judged by in `thresholds`.
//!
//! The limits are the operator's rules table in S3, per model or brand, followed live (`rules`:
//! polled, validated, swapped in between two events); every alert's `rules.version` header
//! names the version that judged it. Without a table, the seed's rules under `--max-speed` /
//! `--max-rpm`.
//!
//! At-least-once: an input's offset is committed only after its alert (if any) is acknowledged
//! (see `pipeline_kafka::runtime`).

mod rules;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::Parser;
use pipeline_core::defaults;
use pipeline_core::schema::{AlertEvent, EnrichedEvent};
use pipeline_kafka::args::{ServiceArgs, positive_duration};
use pipeline_kafka::runtime::{self, InputMeta, Output, Processor};
use pipeline_s3::S3Args;
use pipeline_s3::rules_store::{RulesArgs, ThresholdArgs};
use pipeline_s3::store::ObjectStore;
use tokio_util::sync::CancellationToken;

use crate::rules::{Poller, Rules, Source};

/// Keeps the enriched events that break a rule.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Kafka and runtime settings.
    #[command(flatten)]
    service: ServiceArgs,

    /// Where the dims (the models a rule may name) and the rules are.
    #[command(flatten)]
    s3: S3Args,

    /// Where the rules table is.
    #[command(flatten)]
    rules: RulesArgs,

    /// The thresholds without a table, and a table's default row's fallback.
    #[command(flatten)]
    thresholds: ThresholdArgs,

    /// Topic of the enriched events.
    #[arg(long, env = "ENRICHED_TOPIC", default_value = defaults::ENRICHED_TOPIC)]
    input_topic: String,

    /// Topic the alerts go to.
    #[arg(long, env = "ALERTS_TOPIC", default_value = defaults::ALERTS_TOPIC)]
    output_topic: String,

    /// How often the rules table and the dims are checked for a change (a LIST each; read
    /// only when changed).
    #[arg(long, env = "RULES_POLL", default_value = "10s", value_parser = positive_duration)]
    rules_poll: Duration,
}

/// The rule check as a runtime processor.
struct Detector {
    /// The rules in use, swapped whole by the poll task.
    rules: Arc<ArcSwap<Rules>>,
    /// Destination topic.
    output: Arc<str>,
}

impl Processor for Detector {
    type Restored = ();
    type Input<'a> = EnrichedEvent<'a>;

    fn process(&mut self, event: EnrichedEvent<'_>, meta: InputMeta<'_>, out: &mut Vec<Output>) {
        // One load per event: a new version takes effect between two events, never inside one.
        let rules = self.rules.load();
        let thresholds = *rules.by_model.for_model(event.model_id);
        let reasons = thresholds.check_event(&event);
        if reasons.is_empty() {
            return;
        }
        let mut payload = Vec::with_capacity(384);
        AlertEvent { event: &event, alert_reasons: reasons, thresholds }.encode_into(&mut payload);
        out.push(Output {
            topic: self.output.clone(),
            key: meta.key.map(<[u8]>::to_vec),
            payload,
            headers: Some(rules.headers.clone()),
        });
    }
}

async fn run(cli: Cli, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut config = runtime::RuntimeConfig::new(
        &cli.service,
        "detector",
        &cli.input_topic,
        runtime::OffsetCommits::Acknowledged,
        Duration::from_secs(3600),
    )?;
    config.output_topics = vec![cli.output_topic.clone()];
    config.readiness.require(rules::READY_CHECK);
    cli.service.observe(&config.readiness, &cancel).await?;
    // A missing topic says so at once, not after the rules' wait for S3.
    runtime::check_topics(&config).await?;
    let source = Source {
        store: ObjectStore::connect(&cli.s3).await,
        rules_prefix: cli.rules.rules_prefix.clone(),
        dims_prefix: cli.s3.dims_prefix.clone(),
        base: cli.thresholds.rules(),
    };
    let Some(poller) = Poller::start(source, config.readiness.clone(), &cancel).await.context("loading the rules")?
    else {
        return Ok(());
    };
    let processor = Detector { rules: poller.current(), output: Arc::from(cli.output_topic.as_str()) };
    // The poller stops the service (cancels `stop`) when S3 refuses for good.
    let stop = cancel.child_token();
    let polling = tokio::spawn(poller.run(cli.rules_poll, stop.clone()));
    let result = runtime::run(&config, processor, stop.clone()).await;
    stop.cancel();
    let polled = polling.await.context("the rules' poller panicked")?;
    result?;
    polled.context("following the rules")
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (log_format, drain_timeout) = (cli.service.log_format, cli.service.drain_timeout);
    pipeline_kafka::shutdown::service_main("detector", log_format, drain_timeout, |cancel| run(cli, cancel))
}
