//! The generator's command line.

use pipeline_core::defaults;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use pipeline_kafka::args::{KafkaArgs, LogFormat};
use pipeline_s3::S3Args;

/// Writes the pipeline's dimension tables to S3 and produces random telemetry of those cars to
/// Kafka, like the seed's generator.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t, global = true)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The generator's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the bucket if needed and write the `cars`, `car_models` and `car_colors` tables.
    Dims(DimsArgs),
    /// Load the cars from S3 and produce sensor events to Kafka.
    Run(RunArgs),
}

/// `generator dims`.
#[derive(Debug, Args)]
pub struct DimsArgs {
    /// Where to write the tables.
    #[command(flatten)]
    pub s3: S3Args,

    /// How many random cars to write.
    #[arg(long, env = "DIMS_CARS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub cars: u32,

    /// Seed of the random cars (same seed, same cars); random when unset.
    #[arg(long, env = "DIMS_SEED")]
    pub seed: Option<u64>,

    /// Leave the tables alone when all three already exist.
    #[arg(long, env = "DIMS_IF_MISSING")]
    pub if_missing: bool,

    /// Where the rules table goes (the default one is written when there is none; an
    /// existing table, an operator's, is left alone).
    #[command(flatten)]
    pub rules: pipeline_s3::rules_store::RulesArgs,

    /// The default table's thresholds (the detector's, from the same variables).
    #[command(flatten)]
    pub thresholds: pipeline_s3::rules_store::ThresholdArgs,
}

/// `generator run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where the `cars` table is.
    #[command(flatten)]
    pub s3: S3Args,

    /// The Kafka cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Topic the events go to.
    #[arg(long, env = "SENSORS_TOPIC", default_value = defaults::SENSORS_TOPIC)]
    pub topic: String,

    /// Stop after this many events (default: run until interrupted).
    #[arg(long, env = "GENERATOR_COUNT")]
    pub count: Option<u64>,

    /// Events per second; 0 = as fast as the producer takes them. The default, 2, is the
    /// seed's one event every 0.5 s.
    #[arg(long, env = "GENERATOR_RATE", default_value_t = 2.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Seed of the random events, ids included (same seed and start time, same events).
    #[arg(long, env = "GENERATOR_SEED")]
    pub seed: Option<u64>,

    /// Stamp synthetic event times from this RFC 3339 instant instead of the wall clock
    /// (tests, backfills).
    #[arg(long, env = "GENERATOR_START_TIME", value_parser = parse_time)]
    pub start_time: Option<DateTime<Utc>>,

    /// With --start-time: event-time distance between consecutive events.
    #[arg(long, env = "GENERATOR_TIME_STEP", default_value = "500ms", value_parser = humantime::parse_duration, requires = "start_time")]
    pub time_step: Duration,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a rate: give events per second, a number >= 0 (0 = unthrottled)")),
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    pipeline_core::schema::event_time::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_rate_and_time_are_clear() {
        let err = Cli::try_parse_from(["g", "run", "--rate=-1"]).unwrap_err().to_string();
        assert!(err.contains("not a rate"), "{err}");
        let err = Cli::try_parse_from(["g", "run", "--start-time", "noon"]).unwrap_err().to_string();
        assert!(err.contains("not an RFC 3339"), "{err}");
    }
}
