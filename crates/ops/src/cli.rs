//! The ops tool's command line. Kafka and S3 flags (and their environment variables) are the
//! services' own (`KafkaArgs`, `S3Args`), so one env file configures the services and the tools.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use pipeline_core::defaults;
use pipeline_kafka::args::{KafkaArgs, LogFormat};
use pipeline_s3::S3Args;

mod audit_args;

pub use audit_args::{AuditArgs, AuditFormat, WindowArgs};

/// The operator's tools for the telemetry pipeline: check the stack, send and read records,
/// manage topics.
#[derive(Debug, Parser)]
#[command(name = "ops", version, propagate_version = true)]
pub struct Cli {
    /// Log line format on stderr (the tools' own output always goes to stdout).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t, global = true)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check S3 (list, put, get, delete of a probe object) and Kafka (metadata, then produce and
    /// consume a probe on a temporary topic); one PASS/FAIL line per check, exit 1 if any fails.
    Smoke(SmokeArgs),
    /// Send JSON events to a topic, validated against the topic's schema (unless --raw).
    Produce(ProduceArgs),
    /// Print a topic's records (key, partition, offset, timestamp, headers, value).
    Tail(TailArgs),
    /// Create, list and describe topics.
    Topics(TopicsArgs),
    /// Reconcile the pipeline's outputs with its input: recompute enrichment, alerts and
    /// windows with the services' own code and report what is missing, duplicated or different
    /// per stage. Exit 0 clean, 1 differences, 2 cannot run.
    Audit(AuditArgs),
    /// Show, validate and change the detector's rules table.
    Rules(crate::rules::RulesCmd),
    /// What a candidate rules table would change: reads the enriched events of an event-time
    /// range and compares the alerts and windows of the rules in use with the candidate's.
    /// Reads only (no group, nothing committed or produced).
    WhatIf(crate::what_if::WhatIfArgs),
}

/// `ops smoke`.
#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// The Kafka cluster to check.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// The S3 store to check (the probe object goes to --s3-bucket).
    #[command(flatten)]
    pub s3: S3Args,

    /// Key prefix of the probe object, so a leftover probe is easy to spot and delete.
    #[arg(long, env = "OPS_SMOKE_PREFIX", default_value = "ops-smoke/")]
    pub probe_prefix: String,

    /// Name prefix of the temporary topic (a random suffix makes it unique; it is deleted after).
    #[arg(long, env = "OPS_SMOKE_TOPIC_PREFIX", default_value = "ops-smoke")]
    pub topic_prefix: String,

    /// How long to wait for the probe record's acknowledgement and for reading it back.
    #[arg(long, env = "OPS_SMOKE_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `ops produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The Kafka cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Topic to send to (it must exist).
    pub topic: String,

    /// The record's value, one JSON event. Without --value or --file, records are read from
    /// stdin.
    #[arg(long, env = "OPS_PRODUCE_VALUE", conflicts_with = "file")]
    pub value: Option<String>,

    /// File of records: one JSON document, or one record per line (NDJSON). `-` is stdin.
    #[arg(long, env = "OPS_PRODUCE_FILE")]
    pub file: Option<PathBuf>,

    /// Record key (default: the event's car_id, as the generator keys them, for event schemas;
    /// none otherwise).
    #[arg(long, env = "OPS_PRODUCE_KEY")]
    pub key: Option<String>,

    /// Schema to validate against, overriding the one the topic name implies (`none`: any JSON).
    #[arg(long, env = "OPS_PRODUCE_SCHEMA", value_enum)]
    pub schema: Option<SchemaChoice>,

    /// Send the bytes unchecked (not even JSON): to reproduce poison input, say.
    #[arg(long, env = "OPS_PRODUCE_RAW", conflicts_with = "schema")]
    pub raw: bool,

    /// Record header, key=value; repeatable (`;`-separated in the environment). Dead-letter
    /// records carry `dlq.*` headers.
    #[arg(long = "header", value_name = "KEY=VALUE", env = "OPS_PRODUCE_HEADERS", value_delimiter = ';', value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// Refuse records larger than this many bytes (the services dead-letter them).
    #[arg(long, env = "MAX_RECORD_BYTES", default_value_t = 1 << 20)]
    pub max_record_bytes: usize,

    /// Which topic names carry which schema.
    #[command(flatten)]
    pub topics: TopicNames,
}

/// The pipeline's topic names, as the services read them, so `produce` knows which schema a
/// topic carries.
#[derive(Debug, Clone, Args)]
pub struct TopicNames {
    /// Topic of the sensor events (validated as SensorEvent).
    #[arg(long, env = "SENSORS_TOPIC", default_value = defaults::SENSORS_TOPIC)]
    pub sensors_topic: String,

    /// Topic of the enriched events (validated as EnrichedEvent).
    #[arg(long, env = "ENRICHED_TOPIC", default_value = defaults::ENRICHED_TOPIC)]
    pub enriched_topic: String,

    /// Topic of the alerts (validated as an enriched event with alert_reasons).
    #[arg(long, env = "ALERTS_TOPIC", default_value = defaults::ALERTS_TOPIC)]
    pub alerts_topic: String,
}

/// A schema `produce` validates against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaChoice {
    /// SensorEvent (`sensors-sample`).
    Sensor,
    /// EnrichedEvent (`samples-enriched`).
    Enriched,
    /// An enriched event plus `alert_reasons` (`alert-data`).
    Alert,
    /// Any JSON.
    None,
}

/// `ops tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The Kafka cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Topic to read.
    pub topic: String,

    /// Where to start in each partition: earliest, latest, an offset, or an RFC 3339 time (the
    /// first record at or after it).
    #[arg(long, env = "OPS_TAIL_FROM", default_value = "earliest", value_parser = parse_start)]
    pub from: StartAt,

    /// Read only these partitions (repeatable or comma-separated; default: all).
    #[arg(long, env = "OPS_TAIL_PARTITION", value_delimiter = ',')]
    pub partition: Vec<i32>,

    /// Keep waiting for new records (until Ctrl-C or --max); otherwise stop at the end each
    /// partition had when the command started.
    #[arg(long, env = "OPS_TAIL_FOLLOW")]
    pub follow: bool,

    /// Stop after this many records.
    #[arg(long, env = "OPS_TAIL_MAX")]
    pub max: Option<u64>,

    /// Output: `pretty` for people, `json` (one object per line) for scripts.
    #[arg(long, env = "OPS_TAIL_FORMAT", value_enum, default_value_t)]
    pub format: TailFormat,
}

/// Where `tail` starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained record.
    Earliest,
    /// After the newest record (only new records).
    Latest,
    /// This offset (clamped to the partition's low/high watermarks).
    Offset(i64),
    /// The first record with a timestamp at or after this time.
    Time(DateTime<Utc>),
}

fn parse_start(s: &str) -> Result<StartAt, String> {
    match s {
        "earliest" | "beginning" => Ok(StartAt::Earliest),
        "latest" | "end" => Ok(StartAt::Latest),
        _ if s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map(StartAt::Offset).map_err(|_| format!("offset `{s}` is too large"))
        }
        _ => pipeline_core::schema::event_time::parse(s).map(StartAt::Time).map_err(|_| {
            format!("`{s}` is not a start: give earliest, latest, an offset (0, 42) or an RFC 3339 time (2026-01-02T03:04:05Z)")
        }),
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not a header: write it as key=value (e.g. --header dlq.error=boom)")),
    }
}

/// `tail`'s output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TailFormat {
    /// A header line per record, its headers, then the value (indented JSON when it parses).
    #[default]
    Pretty,
    /// One JSON object per record and line.
    Json,
}

pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    pipeline_core::schema::event_time::parse(s)
        .map_err(|_| format!("`{s}` is not an RFC 3339 time (2026-01-02T03:04:05Z)"))
}

/// `ops topics`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    /// What to do with topics.
    #[command(subcommand)]
    pub command: TopicsCommand,
}

/// `ops topics` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create topics (an existing one is reported and left as it is).
    Create(CreateArgs),
    /// List topics with their partition counts.
    List(ListArgs),
    /// Show each partition's leader, replicas and low/high watermarks.
    Describe(DescribeArgs),
}

/// `ops topics create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The Kafka cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Names of the topics.
    #[arg(required = true)]
    pub names: Vec<String>,

    /// Partitions of each new topic (the local stack uses 3, `STACK_PARTITIONS`).
    #[arg(long, env = "OPS_TOPIC_PARTITIONS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,

    /// Replicas of each partition (1 on a single broker).
    #[arg(long, env = "OPS_TOPIC_REPLICATION", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub replication: i32,
}

/// `ops topics list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The Kafka cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Include internal topics (names starting with `__`), hidden by default as noise.
    #[arg(long, env = "OPS_TOPICS_ALL")]
    pub all: bool,
}

/// `ops topics describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The Kafka cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Names of the topics.
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("earliest"), Ok(StartAt::Earliest));
        assert_eq!(parse_start("latest"), Ok(StartAt::Latest));
        assert_eq!(parse_start("42"), Ok(StartAt::Offset(42)));
        assert_eq!(
            parse_start("2026-01-02T05:04:05+02:00"),
            Ok(StartAt::Time(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()))
        );
        let err = parse_start("-3").unwrap_err();
        assert!(err.contains("not a start"), "{err}");
        assert!(parse_start("99999999999999999999").unwrap_err().contains("too large"));
    }

    #[test]
    fn headers_parse() {
        assert_eq!(parse_header("dlq.error=a=b"), Ok(("dlq.error".into(), "a=b".into())));
        assert_eq!(parse_header("k="), Ok(("k".into(), String::new())));
        assert!(parse_header("=v").unwrap_err().contains("key=value"));
        assert!(parse_header("novalue").is_err());
    }

    #[test]
    fn raw_and_schema_are_exclusive() {
        let err = Cli::try_parse_from(["ops", "produce", "t", "--raw", "--schema", "sensor"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
