//! `ops audit`'s flags, and the window settings `what-if` shares with it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use pipeline_core::defaults;
use pipeline_kafka::args::KafkaArgs;
use pipeline_s3::S3Args;
use pipeline_s3::rules_store::{RulesArgs, ThresholdArgs};

use super::parse_time;

/// `ops audit`. Topic, rule and window flags take the services' own environment variables,
/// so after `source scripts/env.sh` it audits the pipeline the services run.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The Kafka cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Where the dimension tables are (the enricher's --s3-bucket and --dims-prefix).
    #[command(flatten)]
    pub s3: S3Args,

    /// Topic of the pipeline's input (the enricher's input).
    #[arg(long, env = "SENSORS_TOPIC", default_value = defaults::SENSORS_TOPIC)]
    pub input_topic: String,

    /// Topic of the enriched events (the enricher's output).
    #[arg(long, env = "ENRICHED_TOPIC", default_value = defaults::ENRICHED_TOPIC)]
    pub enriched_topic: String,

    /// Topic of the alerts (the detector's output).
    #[arg(long, env = "ALERTS_TOPIC", default_value = defaults::ALERTS_TOPIC)]
    pub alerts_topic: String,

    /// Topic of the counter's partial windows.
    #[arg(long, env = "COUNTS_TOPIC", default_value = defaults::COUNTS_TOPIC)]
    pub counts_topic: String,

    /// Audit only events with an event_time at or after this (RFC 3339). Event time, not the
    /// record timestamp: it is the same in every stage. Windows cut by a bound are not compared.
    #[arg(long, env = "OPS_AUDIT_FROM", value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,

    /// Audit only events with an event_time before this (RFC 3339).
    #[arg(long, env = "OPS_AUDIT_TO", value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,

    /// Where the rules versions are (each alert is judged by the one its header names).
    #[command(flatten)]
    pub rules: RulesArgs,

    /// The detector's thresholds without a rules table.
    #[command(flatten)]
    pub thresholds: ThresholdArgs,

    /// The counter's windows.
    #[command(flatten)]
    pub windows: WindowArgs,

    /// Records larger than this are invalid (the services dead-letter them).
    #[arg(long, env = "MAX_RECORD_BYTES", default_value_t = 1 << 20)]
    pub max_record_bytes: usize,

    /// Differences shown as examples per stage (all are counted).
    #[arg(long, env = "OPS_AUDIT_EXAMPLES", default_value_t = 10)]
    pub examples: usize,

    /// Give up (exit 2) when a topic yields nothing for this long before its end.
    #[arg(long, env = "OPS_AUDIT_STALL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,

    /// Output: `text` (a table, examples and a verdict line) or `json` (one document).
    #[arg(long, env = "OPS_AUDIT_FORMAT", value_enum, default_value_t)]
    pub format: AuditFormat,
}

/// The counter's window settings an offline reader needs to recompute its windows.
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// The counter's window length.
    #[arg(long, env = "COUNTER_WINDOW", default_value = defaults::WINDOW, value_parser = humantime::parse_duration)]
    pub window: Duration,

    /// The counter's counted colors (its `num_of_<color>` columns), comma separated.
    #[arg(long, env = "COUNTER_COLORS", value_delimiter = ',', default_value = "Black,White,Silver")]
    pub colors: Vec<String>,
}

impl WindowArgs {
    /// The counter's window configuration with nothing ever late (a batch recomputation).
    pub fn config(&self) -> anyhow::Result<pipeline_core::window::WindowConfig> {
        anyhow::ensure!(!self.window.is_zero(), "--window must be longer than zero");
        Ok(pipeline_core::window::WindowConfig {
            size: chrono::Duration::from_std(self.window).map_err(|_| anyhow::anyhow!("--window is too large"))?,
            watermark_delay: chrono::Duration::zero(),
            idle_timeout: std::time::Duration::MAX,
            colors: self.colors.iter().map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect(),
        })
    }
}

/// `audit`'s output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AuditFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object, for scripts.
    Json,
}
