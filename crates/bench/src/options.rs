//! `bench-e2e`'s command line: what to run (systems, rates, events) and how.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// A system measured: the services, or one of the two relays through the same hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// generator → enricher → detector → counter.
    Pipeline,
    /// `relay source` → `relay hop` → `relay hop --only-alerts` → `relay sink`: the runtime's
    /// design (offsets stored after delivery in offset order, futures) without the services.
    Relay,
    /// `relay source` → `relay bare-hop` → `relay bare-hop --only-alerts` → `relay sink`:
    /// BaseConsumer + BaseProducer, offsets stored after each flush; the client's floor.
    Bare,
}

impl System {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pipeline => "pipeline",
            Self::Relay => "relay",
            Self::Bare => "bare",
        }
    }

    /// The processes' names: source, first hop, second hop, final stage.
    pub fn process_names(self) -> [&'static str; 4] {
        match self {
            Self::Pipeline => ["generator", "enricher", "detector", "counter"],
            Self::Relay => ["relay-source", "relay-hop1", "relay-hop2", "relay-sink"],
            Self::Bare => ["bare-source", "bare-hop1", "bare-hop2", "bare-sink"],
        }
    }
}

/// End-to-end benchmark: the four services on the local stack against two rdkafka relays
/// through the same hops (same broker, same records). Prints a table and a summary.
#[derive(Debug, Parser)]
#[command(name = "bench-e2e", version)]
pub struct Options {
    /// Events of each full-speed phase.
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 1_000_000)]
    pub events: u64,

    /// Offered rates in events/s, comma separated; 0 = full speed. Each rate runs every system
    /// of --systems, in that order.
    #[arg(long = "rate", env = "BENCH_RATES", value_delimiter = ',', default_values_t = [0.0, 1000.0, 5000.0, 20000.0])]
    pub rates: Vec<f64>,

    /// Events of each paced phase (rate > 0), the same for every rate; at most --events.
    /// Default: --paced-seconds of each rate.
    #[arg(long, env = "BENCH_PACED_EVENTS")]
    pub paced_events: Option<u64>,

    /// Without --paced-events, a paced phase produces rate × this many events (10 000 at
    /// 1 000/s), at most --events.
    #[arg(long, env = "BENCH_PACED_SECONDS", default_value_t = 10.0)]
    pub paced_seconds: f64,

    /// Systems to run at each rate, comma separated, in this order.
    #[arg(long, env = "BENCH_SYSTEMS", value_enum, value_delimiter = ',', default_values_t = [System::Pipeline, System::Relay, System::Bare])]
    pub systems: Vec<System>,

    /// Run the pipeline phases only (the same as --systems pipeline).
    #[arg(long, env = "BENCH_SKIP_RELAY")]
    pub skip_relay: bool,

    /// Partitions of every topic.
    #[arg(long, env = "BENCH_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,

    /// Seed of the dimension tables and of the events.
    #[arg(long, env = "BENCH_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Directory of the generator, enricher, detector, counter and relay binaries (default: the
    /// directory of this binary).
    #[arg(long, env = "BENCH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,

    /// librdkafka property given to every service, the generator and the relays (-X linger.ms=5).
    #[arg(short = 'X', long = "kafka-property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,

    /// Longest a phase may take from the first produce to the last count.
    #[arg(long, env = "BENCH_TIMEOUT", default_value = "15m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Also write the figures as JSON to this file.
    #[arg(long, env = "BENCH_JSON")]
    pub json: Option<PathBuf>,

    /// Keep each phase's topics (default: deleted after the phase).
    #[arg(long)]
    pub keep_topics: bool,

    /// Directory for the processes' logs (default: a new one under the temporary directory).
    #[arg(long, env = "BENCH_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
}

impl Options {
    /// The systems to run at each rate, without repeats (`--skip-relay` keeps the pipeline).
    pub fn systems(&self) -> Vec<System> {
        let mut systems = Vec::new();
        for &s in &self.systems {
            if !systems.contains(&s) && (s == System::Pipeline || !self.skip_relay) {
                systems.push(s);
            }
        }
        systems
    }

    /// Events of a phase at `rate` (0 = full speed).
    pub fn events_at(&self, rate: f64) -> u64 {
        if rate == 0.0 {
            return self.events;
        }
        let paced = self.paced_events.unwrap_or_else(|| (rate * self.paced_seconds).round().max(1.0) as u64);
        paced.min(self.events)
    }

    /// Checks the values clap cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.events > 0, "--events must be at least 1");
        anyhow::ensure!(self.paced_events != Some(0), "--paced-events must be at least 1");
        anyhow::ensure!(
            self.paced_seconds.is_finite() && self.paced_seconds > 0.0,
            "--paced-seconds must be more than 0"
        );
        anyhow::ensure!(
            self.rates.iter().all(|r| r.is_finite() && *r >= 0.0),
            "--rate takes events/s >= 0 (0 = full speed)"
        );
        anyhow::ensure!(!self.systems().is_empty(), "--systems names none to run");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("bench-e2e").chain(args.iter().copied())).expect("valid flags")
    }

    #[test]
    fn defaults_run_every_system_at_four_rates() {
        let o = parse(&[]);
        assert_eq!(o.rates, [0.0, 1000.0, 5000.0, 20000.0]);
        assert_eq!(o.systems(), [System::Pipeline, System::Relay, System::Bare]);
        let events: Vec<u64> = o.rates.iter().map(|&r| o.events_at(r)).collect();
        assert_eq!(events, [1_000_000, 10_000, 50_000, 200_000]);
    }

    #[test]
    fn paced_events_override_and_cap() {
        let o = parse(&["--events", "30000", "--paced-events", "20000", "--rate", "0,1000,50000"]);
        assert_eq!([o.events_at(0.0), o.events_at(1000.0), o.events_at(50000.0)], [30000, 20000, 20000]);
        let o = parse(&["--events", "30000", "--paced-seconds", "2", "--rate", "5000,40000"]);
        assert_eq!([o.events_at(5000.0), o.events_at(40000.0)], [10000, 30000]);
    }

    #[test]
    fn systems_selection() {
        assert_eq!(parse(&["--systems", "bare,pipeline,bare"]).systems(), [System::Bare, System::Pipeline]);
        assert_eq!(parse(&["--skip-relay"]).systems(), [System::Pipeline]);
        let none = parse(&["--skip-relay", "--systems", "relay"]);
        assert!(none.systems().is_empty() && none.validate().is_err());
        assert!(Options::try_parse_from(["bench-e2e", "--systems", "kafka"]).is_err());
    }
}
