//! How a runtime loop runs: its configuration and the client defaults every service shares.

use std::time::Duration;

use crate::args::{Guarantee, KafkaArgs, ServiceArgs, host_name};
use crate::observe::Readiness;
use crate::setting_guard::{SettingError, check_service};

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Service name: the consumer group's default, logs and the `dlq.service` header.
    pub service: String,
    /// Kafka cluster and `-X` overrides.
    pub kafka: KafkaArgs,
    /// Consumer group id.
    pub group_id: String,
    /// Topic consumed.
    pub input_topic: String,
    /// Where poison inputs go.
    pub dlq_topic: String,
    /// Topics the processor produces to, checked at start (with the dead-letter topic) so a
    /// missing one stops the service with one line instead of failing record by record.
    pub output_topics: Vec<String>,
    /// Which offsets it commits: each input's once acknowledged, or only what a checkpoint
    /// covers.
    pub commits: OffsetCommits,
    /// Most inputs awaiting acknowledgement at once; beyond it the loop stops reading.
    pub max_in_flight: usize,
    /// Most output bytes awaiting acknowledgement at once; beyond it the loop stops reading.
    pub max_in_flight_bytes: usize,
    /// Inputs larger than this are dead-lettered unparsed.
    pub max_record_bytes: usize,
    /// How long shutdown waits for in-flight records; keep it below the session timeout.
    pub drain_timeout: Duration,
    /// Interval of [`Processor::on_tick`](super::Processor::on_tick).
    pub tick: Duration,
    /// Interval of [`Processor::checkpoint`](super::Processor::checkpoint) (None: never, but at shutdown).
    pub checkpoint_interval: Option<Duration>,
    /// Readiness checks this loop maintains (`broker`, `partitions_assigned`).
    pub readiness: Readiness,
    /// Metrics are served: ask librdkafka for statistics (consumer lag).
    pub metrics: bool,
    /// At-least-once (the default) or exactly-once (transactions).
    pub guarantee: Guarantee,
    /// Exactly-once: this instance's transactional id, unique per running instance (see
    /// `--transactional-id`; a restarted instance with the same id fences its predecessor).
    pub transactional_id: String,
    /// Exactly-once: how long a transaction collects inputs before it commits.
    pub transaction_interval: Duration,
    /// What to do when a partition's records arrive below the offset its restored state
    /// resumes from (only a processor that resumes at offsets of its own meets it).
    pub below_checkpoint: BelowCheckpoint,
}

/// Which input offsets a loop commits to its consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetCommits {
    /// Each input's, once all its outputs are acknowledged (the enricher, the detector).
    Acknowledged,
    /// Only those a processor checkpoint covers (the counter: its checkpoint is the truth, the
    /// group's offsets follow it so lag tools see progress).
    Checkpointed,
}

/// What a loop does when a partition's records arrive below the offset the processor's
/// restored state resumes from. It never happens while the log is the one the checkpoint was
/// taken of (reading starts at that offset); it does when the topic was deleted and recreated,
/// or the broker lost acknowledged records (an unclean leader election): the offsets the
/// checkpoint covers name other records now, or none. Logged (one error line per partition),
/// counted (`pipeline_offsets_below_checkpoint_total`), then:
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BelowCheckpoint {
    /// Forget the partition's restored state and count its log as it is now, from the first
    /// record there (the default: what is counted is what the log holds). Windows only the old
    /// log had keep their last published rows in the counts topic; a window both logs have is
    /// published afresh, but readers that merge partials by input offset (other counters,
    /// `ops`) keep the old log's row for it until the new log passes the old one's offset.
    #[default]
    Replay,
    /// Take the records below the checkpoint as counted already (right only when the log was
    /// rewritten with the same records).
    Skip,
    /// Stop the service with one line naming the partition and both offsets: an operator
    /// decides (the checkpoint and the log are left as they are).
    Stop,
}

/// The services' consumer session timeout, in milliseconds (`session.timeout.ms`).
pub const SESSION_TIMEOUT_MS: &str = "10000";

/// Consumer defaults of every service: a short session timeout so a dead instance's partitions
/// move quickly, short fetch waits for latency, and a new group starts from the earliest offset.
/// (Public so the benchmark's relays consume exactly like the services.)
///
/// The prefetch is sized, not left at librdkafka's defaults (100 000 records per partition, up
/// to 64 MiB), which read a whole backlog into memory: the enricher draining 300 000 queued
/// events peaked at 91–96 MiB. 10 000 records per partition and 16 MiB bring that to 56 MiB
/// in the same 2.7–2.9 s, but only with `fetch.queue.backoff.ms` short: at its default
/// (1 s) a full queue pauses fetching for a second and the same drain took 14 s.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("session.timeout.ms", SESSION_TIMEOUT_MS),
    ("heartbeat.interval.ms", "1000"),
    ("fetch.wait.max.ms", "50"),
    ("enable.partition.eof", "false"),
    ("queued.min.messages", "10000"),
    ("queued.max.messages.kbytes", "16384"),
    ("fetch.queue.backoff.ms", "10"),
];

/// Offsets stored by the loop are committed by librdkafka every second (or never, for a
/// service that rebuilds its state by replay).
pub(super) fn commit_defaults(commit: bool) -> [(&'static str, &'static str); 2] {
    if commit {
        [("enable.auto.commit", "true"), ("auto.commit.interval.ms", "1000")]
    } else {
        [("enable.auto.commit", "false"), ("auto.commit.interval.ms", "1000")]
    }
}

impl RuntimeConfig {
    /// The largest record the producer accepts: `-X message.max.bytes`, else librdkafka's
    /// default. Dead letters are cut to fit under it.
    pub fn max_message_bytes(&self) -> usize {
        self.kafka.property("message.max.bytes").and_then(|v| v.trim().parse().ok()).unwrap_or(1_000_000)
    }

    /// The runtime loop's configuration for `service` reading `input_topic`; a setting that
    /// would break the service's guarantee is refused ([`crate::setting_guard`]).
    pub fn new(
        args: &ServiceArgs,
        service: &str,
        input_topic: &str,
        commits: OffsetCommits,
        tick: Duration,
    ) -> Result<Self, SettingError> {
        check_service(&args.kafka, args.guarantee, args.drain_timeout)?;
        // The loop's own checks are registered now, not when the loop starts: a service with a
        // check of its own (the enricher's dims) would otherwise answer /readyz with 200 between
        // that check passing and the loop joining its group.
        let readiness = Readiness::default();
        readiness.require("broker");
        readiness.require("partitions_assigned");
        Ok(Self {
            service: service.to_owned(),
            kafka: args.kafka.clone(),
            group_id: args.group_id.clone().unwrap_or_else(|| service.to_owned()),
            input_topic: input_topic.to_owned(),
            dlq_topic: args.dlq_topic.clone().unwrap_or_else(|| format!("{input_topic}.dlq")),
            output_topics: Vec::new(),
            commits,
            max_in_flight: args.max_in_flight.max(1),
            max_in_flight_bytes: args.max_in_flight_bytes.max(1),
            max_record_bytes: args.max_record_bytes,
            drain_timeout: args.drain_timeout,
            tick,
            checkpoint_interval: None,
            readiness,
            metrics: args.metrics_addr.is_some(),
            guarantee: args.guarantee,
            transactional_id: args.transactional_id.clone().unwrap_or_else(|| {
                let group = args.group_id.clone().unwrap_or_else(|| service.to_owned());
                format!("{group}-{}-{}", host_name(), std::process::id())
            }),
            transaction_interval: args.transaction_interval,
            below_checkpoint: BelowCheckpoint::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[test]
    fn not_ready_before_the_loop_has_joined_its_group() {
        #[derive(Debug, Parser)]
        struct Service {
            #[command(flatten)]
            service: ServiceArgs,
        }
        let cli = Service::try_parse_from(["x"]).unwrap();
        let config =
            RuntimeConfig::new(&cli.service, "enricher", "in", OffsetCommits::Acknowledged, Duration::from_secs(1))
                .unwrap();
        config.readiness.require("dims_loaded");
        config.readiness.set("dims_loaded", true);
        assert!(!config.readiness.is_ready(), "{}", config.readiness.report());
        assert_eq!(config.readiness.report(), "broker waiting\ndims_loaded ok\npartitions_assigned waiting\n");
    }

    #[test]
    fn the_default_transactional_id_is_unique_per_running_instance_and_a_given_one_is_kept() {
        #[derive(Debug, Parser)]
        struct Service {
            #[command(flatten)]
            service: ServiceArgs,
        }
        let config = |args: &[&str]| {
            let cli = Service::try_parse_from([&["x"][..], args].concat()).unwrap();
            RuntimeConfig::new(&cli.service, "enricher", "in", OffsetCommits::Acknowledged, Duration::from_secs(1))
                .unwrap()
                .transactional_id
        };
        if std::env::var_os("TRANSACTIONAL_ID").is_some() || std::env::var_os("GROUP_ID").is_some() {
            return; // the environment would win over the defaults
        }
        // Two instances on one host (or two containers without HOSTNAME) differ by process.
        assert_eq!(config(&[]), format!("enricher-{}-{}", crate::args::host_name(), std::process::id()));
        assert_eq!(config(&["--transactional-id", "enricher-0"]), "enricher-0", "a stable id is kept");
    }
}
