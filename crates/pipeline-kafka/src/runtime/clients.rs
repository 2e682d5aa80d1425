//! The Kafka client settings a loop makes its clients from, finished once, when its
//! [`RuntimeConfig`](super::RuntimeConfig) is built: the group consumer, the at-least-once
//! producer and the transactional producer, each the project's defaults under the user's `-X`
//! overrides plus what the loop itself needs. Nothing downstream reads `-X` again.

use rdkafka::ClientConfig;

use super::settings::OffsetCommits;
use crate::args::{Guarantee, KafkaArgs};
use crate::client::PRODUCER_DEFAULTS;

/// The services' consumer session timeout, in milliseconds (`session.timeout.ms`): a dead
/// instance's partitions move after 10 s.
pub const SESSION_TIMEOUT_MS: &str = "10000";

/// The session timeout of a static member (`--group-instance-id`), in milliseconds: its
/// partitions wait this long for it after it stops, so a restart (a rolling update's) fits.
pub const STATIC_SESSION_TIMEOUT_MS: &str = "45000";

/// The session timeout the consumer gets unless `-X session.timeout.ms` sets one.
pub fn default_session_timeout(static_member: bool) -> std::time::Duration {
    let ms = if static_member { STATIC_SESSION_TIMEOUT_MS } else { SESSION_TIMEOUT_MS };
    std::time::Duration::from_millis(ms.parse().unwrap_or(10_000))
}

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

/// How long a transaction may stay open before the broker aborts it.
const TRANSACTION_TIMEOUT_MS: &str = "60000";

/// Who the loop's clients are and how they commit: what their settings depend on besides `-X`.
pub(super) struct ClientRoles<'a> {
    /// `client.id` of every client.
    pub(super) service: &'a str,
    /// The consumer's `group.id`.
    pub(super) group_id: &'a str,
    /// The consumer's `group.instance.id` (static membership), if any.
    pub(super) group_instance_id: Option<&'a str>,
    /// Which offsets the loop commits.
    pub(super) commits: OffsetCommits,
    /// At-least-once or exactly-once.
    pub(super) guarantee: Guarantee,
    /// The transactional producer's `transactional.id`.
    pub(super) transactional_id: &'a str,
    /// Ask librdkafka for statistics (consumer lag, for `/metrics`).
    pub(super) statistics: bool,
}

/// The finished settings of a loop's clients.
#[derive(Clone)]
pub struct LoopClients {
    /// The group consumer of the input topic.
    pub(super) consumer: ClientConfig,
    /// The at-least-once loop's producer.
    pub(super) producer: ClientConfig,
    /// The exactly-once loop's transactional producer.
    pub(super) transactional: ClientConfig,
    /// Every assignor is cooperative: rebalances are incremental.
    pub(super) cooperative: bool,
    /// The largest record the producer accepts (`message.max.bytes`): dead letters are cut to it.
    pub(super) max_message_bytes: usize,
}

impl LoopClients {
    /// The settings of `roles`'s clients on `kafka`'s cluster.
    pub(super) fn new(kafka: &KafkaArgs, roles: &ClientRoles<'_>) -> Self {
        let transactional = roles.guarantee == Guarantee::ExactlyOnce;
        // Offsets are committed by librdkafka (at-least-once) or inside transactions (exactly-once).
        let auto_commit = roles.commits == OffsetCommits::Acknowledged && !transactional;
        let commit =
            [("enable.auto.commit", if auto_commit { "true" } else { "false" }), ("auto.commit.interval.ms", "1000")];
        let defaults: Vec<_> = CONSUMER_DEFAULTS.iter().copied().chain(commit).collect();
        let mut consumer = kafka.client_config(&defaults);
        consumer.set("group.id", roles.group_id).set("client.id", roles.service);
        if let Some(instance) = roles.group_instance_id {
            consumer.set("group.instance.id", instance);
            if kafka.property("session.timeout.ms").is_none() {
                consumer.set("session.timeout.ms", STATIC_SESSION_TIMEOUT_MS);
            }
        }
        if transactional {
            // Never read a record of an aborted (or still open) transaction.
            consumer.set("isolation.level", "read_committed");
        }
        let mut producer = kafka.client_config(PRODUCER_DEFAULTS);
        if roles.statistics {
            consumer.set("statistics.interval.ms", "2000");
            producer.set("statistics.interval.ms", "2000");
        }
        let mut transactional = crate::client::transactional_config(kafka, roles.transactional_id);
        transactional.set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS).set("client.id", roles.service);
        Self {
            consumer,
            producer,
            transactional,
            cooperative: kafka.cooperative(),
            max_message_bytes: kafka
                .property("message.max.bytes")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(1_000_000),
        }
    }
}

/// Keys only: the settings hold credentials.
impl std::fmt::Debug for LoopClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = |c: &ClientConfig| {
            let mut keys: Vec<String> = c.config_map().keys().map(ToString::to_string).collect();
            keys.sort_unstable();
            keys.join(",")
        };
        f.debug_struct("LoopClients")
            .field("consumer", &keys(&self.consumer))
            .field("producer", &keys(&self.producer))
            .field("transactional", &keys(&self.transactional))
            .field("cooperative", &self.cooperative)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    fn kafka(properties: &[(&str, &str)]) -> KafkaArgs {
        KafkaArgs {
            bootstrap_servers: "b:9092".into(),
            properties: Vec::new(),
            connect_timeout: Duration::from_secs(1),
        }
        .with_properties(properties)
    }

    fn roles(commits: OffsetCommits, guarantee: Guarantee, statistics: bool) -> ClientRoles<'static> {
        ClientRoles {
            service: "svc",
            group_id: "grp",
            group_instance_id: None,
            commits,
            guarantee,
            transactional_id: "grp-h-1",
            statistics,
        }
    }

    #[test]
    fn at_least_once_auto_commits_what_the_loop_stores_and_reads_everything() {
        let c = LoopClients::new(&kafka(&[]), &roles(OffsetCommits::Acknowledged, Guarantee::AtLeastOnce, false));
        assert_eq!(c.consumer.get("enable.auto.commit"), Some("true"));
        assert_eq!(c.consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.consumer.get("group.id"), Some("grp"));
        assert_eq!(c.consumer.get("client.id"), Some("svc"));
        assert_eq!(c.consumer.get("isolation.level"), None);
        assert_eq!(c.consumer.get("statistics.interval.ms"), None);
        assert_eq!(c.consumer.get("group.instance.id"), None, "dynamic membership by default");
        assert_eq!(c.consumer.get("session.timeout.ms"), Some(SESSION_TIMEOUT_MS));
        assert_eq!(c.producer.get("acks"), Some("all"));
        assert_eq!(c.producer.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(c.max_message_bytes, 1_000_000);
        assert!(!c.cooperative);
    }

    #[test]
    fn a_checkpointing_loop_commits_only_what_its_checkpoint_covers() {
        let c = LoopClients::new(&kafka(&[]), &roles(OffsetCommits::Checkpointed, Guarantee::AtLeastOnce, true));
        assert_eq!(c.consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.consumer.get("statistics.interval.ms"), Some("2000"));
        assert_eq!(c.producer.get("statistics.interval.ms"), Some("2000"));
    }

    #[test]
    fn exactly_once_reads_committed_and_commits_in_transactions() {
        let c = LoopClients::new(&kafka(&[]), &roles(OffsetCommits::Acknowledged, Guarantee::ExactlyOnce, false));
        assert_eq!(c.consumer.get("isolation.level"), Some("read_committed"));
        assert_eq!(c.consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.transactional.get("transactional.id"), Some("grp-h-1"));
        assert_eq!(c.transactional.get("enable.idempotence"), Some("true"));
        assert_eq!(c.transactional.get("transaction.timeout.ms"), Some(TRANSACTION_TIMEOUT_MS));
        assert_eq!(c.transactional.get("client.id"), Some("svc"));
    }

    #[test]
    fn overrides_are_read_once_and_the_debug_shows_no_value() {
        let props = [
            ("message.max.bytes", "2000000"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("sasl.password", "hunter2"),
            ("linger.ms", "5"),
        ];
        let c = LoopClients::new(&kafka(&props), &roles(OffsetCommits::Acknowledged, Guarantee::AtLeastOnce, false));
        assert_eq!(c.max_message_bytes, 2_000_000);
        assert!(c.cooperative);
        assert_eq!(c.producer.get("linger.ms"), Some("5"), "-X wins over the defaults");
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
    }

    #[test]
    fn a_static_member_has_its_instance_id_and_a_session_timeout_a_restart_fits_in() {
        let at_least_once = roles(OffsetCommits::Acknowledged, Guarantee::AtLeastOnce, false);
        let member = ClientRoles { group_instance_id: Some("enricher-1"), ..at_least_once };
        let c = LoopClients::new(&kafka(&[]), &member);
        assert_eq!(c.consumer.get("group.instance.id"), Some("enricher-1"));
        assert_eq!(c.consumer.get("session.timeout.ms"), Some(STATIC_SESSION_TIMEOUT_MS));
        assert_eq!(c.producer.get("group.instance.id"), None, "the consumer's alone");
        let c = LoopClients::new(&kafka(&[("session.timeout.ms", "60000")]), &member);
        assert_eq!(c.consumer.get("session.timeout.ms"), Some("60000"), "-X wins");
        assert_eq!(default_session_timeout(true), Duration::from_secs(45));
        assert_eq!(default_session_timeout(false), Duration::from_secs(10));
    }
}
