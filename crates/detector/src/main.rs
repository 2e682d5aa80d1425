//! `detector`: consumes `samples-enriched` and produces to `alert-data` the events that break a
//! rule — speed above `--max-speed`, rpm above `--max-rpm`, or gear different from
//! `expected_gear` — each with the list of rules it broke in `alert_reasons`.
//!
//! At-least-once: an input's offset is committed only after its alert (if any) is acknowledged
//! (see `pipeline_kafka::runtime`).

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{AlertEvent, EnrichedEvent};
use pipeline_kafka::args::ServiceArgs;
use pipeline_kafka::runtime::{self, InputMeta, Output, Processor};
use tokio_util::sync::CancellationToken;

/// Keeps the enriched events that break a rule.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Kafka and runtime settings.
    #[command(flatten)]
    service: ServiceArgs,

    /// Topic of the enriched events.
    #[arg(long, env = "ENRICHED_TOPIC", default_value = "samples-enriched")]
    input_topic: String,

    /// Topic the alerts go to.
    #[arg(long, env = "ALERTS_TOPIC", default_value = "alert-data")]
    output_topic: String,

    /// A speed strictly above this (km/h) is an alert.
    #[arg(long, env = "ALERT_MAX_SPEED", default_value_t = 120.0)]
    max_speed: f64,

    /// An rpm strictly above this is an alert.
    #[arg(long, env = "ALERT_MAX_RPM", default_value_t = 6000)]
    max_rpm: i32,
}

/// The rule check as a runtime processor.
struct Detector {
    /// Thresholds.
    rules: AlertRules,
    /// Destination topic.
    output: Arc<str>,
}

impl Processor for Detector {
    type Restored = ();
    type Input<'a> = EnrichedEvent<'a>;

    fn process(&mut self, event: EnrichedEvent<'_>, meta: InputMeta<'_>, out: &mut Vec<Output>) {
        let reasons = self.rules.check_event(&event);
        if reasons.is_empty() {
            return;
        }
        let mut payload = Vec::with_capacity(320);
        AlertEvent { event: &event, alert_reasons: reasons }.encode_into(&mut payload);
        out.push(Output { topic: self.output.clone(), key: meta.key.map(<[u8]>::to_vec), payload, headers: None });
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
    cli.service.observe(&config.readiness, &cancel).await?;
    let processor = Detector {
        rules: AlertRules { max_speed: cli.max_speed, max_rpm: cli.max_rpm },
        output: Arc::from(cli.output_topic.as_str()),
    };
    runtime::run(&config, processor, cancel).await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (log_format, drain_timeout) = (cli.service.log_format, cli.service.drain_timeout);
    pipeline_kafka::shutdown::service_main("detector", log_format, drain_timeout, |cancel| run(cli, cancel))
}
