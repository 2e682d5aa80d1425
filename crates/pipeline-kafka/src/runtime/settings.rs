//! How a runtime loop runs: its configuration and the client defaults every service shares.

use std::time::Duration;

use super::clients::{ClientRoles, LoopClients};
use crate::args::{Guarantee, KafkaArgs, ServiceArgs, host_name};
use crate::observe::Readiness;
use crate::setting_guard::{SettingError, check_service};

/// How the loop runs. Built by [`RuntimeConfig::new`] only: the fields its clients' settings
/// follow from (service, group, commits, guarantee, transactional id, metrics) are read-only,
/// so the settings in [`LoopClients`] cannot drift from them; the others may be set after.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Service name: the consumer group's default, logs and the `dlq.service` header.
    pub(crate) service: String,
    /// Kafka cluster and `-X` overrides: the start-up checks of the cluster and its topics.
    pub(crate) kafka: KafkaArgs,
    /// The finished settings of the loop's clients, made once from `kafka` and the fields here.
    pub(crate) clients: LoopClients,
    /// Consumer group id.
    pub(crate) group_id: String,
    /// Topic consumed.
    pub input_topic: String,
    /// Where poison inputs go.
    pub dlq_topic: String,
    /// Topics the processor produces to, checked at start (with the dead-letter topic) so a
    /// missing one stops the service with one line instead of failing record by record.
    pub output_topics: Vec<String>,
    /// Which offsets it commits: each input's once acknowledged, or only what a checkpoint
    /// covers.
    pub(crate) commits: OffsetCommits,
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
    /// At-least-once (the default) or exactly-once (transactions).
    pub(crate) guarantee: Guarantee,
    /// Exactly-once: this instance's transactional id, unique per running instance (see
    /// `--transactional-id`; a restarted instance with the same id fences its predecessor).
    pub(crate) transactional_id: String,
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

impl RuntimeConfig {
    /// The runtime loop's configuration for `service` reading `input_topic`; a setting that
    /// would break the service's guarantee is refused ([`crate::setting_guard`]).
    pub fn new(
        args: &ServiceArgs,
        service: &str,
        input_topic: &str,
        commits: OffsetCommits,
        tick: Duration,
    ) -> Result<Self, SettingError> {
        let session = super::clients::default_session_timeout(args.group_instance_id.is_some());
        check_service(&args.kafka, args.guarantee, args.drain_timeout, session)?;
        // The loop's own checks are registered now, not when the loop starts: a service with a
        // check of its own (the enricher's dims) would otherwise answer /readyz with 200 between
        // that check passing and the loop joining its group.
        let readiness = Readiness::default();
        readiness.require("broker");
        readiness.require("partitions_assigned");
        let group_id = args.group_id.clone().unwrap_or_else(|| service.to_owned());
        let transactional_id = args
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("{group_id}-{}-{}", host_name(), std::process::id()));
        let roles = ClientRoles {
            service,
            group_id: &group_id,
            group_instance_id: args.group_instance_id.as_deref(),
            commits,
            guarantee: args.guarantee,
            transactional_id: &transactional_id,
            statistics: args.metrics_addr.is_some(),
        };
        Ok(Self {
            service: service.to_owned(),
            kafka: args.kafka.clone(),
            clients: LoopClients::new(&args.kafka, &roles),
            group_id,
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
            guarantee: args.guarantee,
            transactional_id,
            transaction_interval: args.transaction_interval,
            below_checkpoint: BelowCheckpoint::default(),
        })
    }

    /// The consumer group's id.
    pub fn group_id(&self) -> &str {
        &self.group_id
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
