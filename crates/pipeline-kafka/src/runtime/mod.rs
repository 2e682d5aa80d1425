//! The consume → transform → produce → store-offset loop every consuming service runs.
//!
//! # Delivery guarantee: at-least-once
//!
//! An input record's offset is stored (`enable.auto.offset.store=false`) only after every
//! output it caused — enriched event, alert, dead letter — is acknowledged by the broker, and in
//! order per partition: a later offset never passes an earlier one still in flight
//! (`offset_tracker`, one state per partition, so cooperative rebalancing never disturbs the
//! partitions it keeps). librdkafka commits the stored offsets every second; a revocation first
//! drains the revoked partitions (bounded by `drain_timeout`), stores what is acknowledged and
//! commits synchronously; shutdown drains once, bounded the same way, and commits. (A loop that
//! commits by checkpoint, the counter's, hands the revoked partitions' state to its store first:
//! `hand_off`.) So every
//! input is reflected in the output topics before its offset is committed, and nothing is lost
//! across a crash, a restart, a rebalance or a broker outage.
//!
//! Limits, all of them duplicates, never loss:
//! - a crash (SIGKILL, OOM, power) re-processes everything after the last commit (at most about
//!   one commit interval plus the in-flight window);
//! - inputs still unacknowledged when a drain's deadline passes (revocation, shutdown) are
//!   re-processed by the partition's next owner (their outputs may already be in Kafka);
//! - a delivery that fails after librdkafka's own retries (`message.timeout.ms`) is sent again by
//!   this loop with backoff (100 ms doubling to 5 s), so it can appear twice and out of order
//!   with later records of its key.
//!
//! Failures never block the loop: delivery reports land in `deliveries` on the producer's
//! thread, and the loop resends due retries between its other work, so the consumer keeps being
//! polled (no fall-out from the group), other partitions keep committing, and the timers fire
//! on time. A stop request is obeyed in every state within `drain_timeout`, plus at most a
//! second for the consumer's close when the broker does not answer: every call that waits for
//! a broker runs on a thread of its own under a budget (`close`), and the rebalance callback
//! asks librdkafka nothing that could wait inside the close (`rebalance`).
//!
//! Poison inputs (not UTF-8, not JSON, wrong schema, non-finite numbers, oversized, or refused by
//! the processor's [`Processor::admit`]) are counted, logged at warn with the reason (cut and
//! escaped, one line per 10 s and a summary: `pipeline_core::log_limit`), and sent to the
//! dead-letter topic with their original bytes,
//! key and headers plus `dlq.*` headers naming the source topic, partition, offset, service and
//! error. An output the broker refuses for good (too large, invalid) is dead-lettered the same
//! way, naming its input and the output topic. A dead letter is cut to fit the producer's
//! `message.max.bytes` (the head of its value, and of its key when the key alone would not fit,
//! kept; `dlq.truncated`, `dlq.original.size`, `dlq.original.sha256` and their `dlq.key.*`
//! counterparts say so). Their offsets then advance like any other. A topic that
//! refuses everything (authorization, deleted) or a refused dead letter stops the service with
//! one line, after `/readyz` reports `outputs failed: …`; output and dead-letter topics are
//! checked at start.
//!
//! Processing is pipelined: records are produced as soon as they are transformed (librdkafka
//! batches them) and up to `max_in_flight` inputs await acknowledgement at once.

mod at_least_once;
mod below_checkpoint;
mod checkpoint_commits;
mod clients;
mod close;
mod dead_letter;
mod deliveries;
mod error;
mod exactly_once;
mod failure_report;
mod hand_off;
mod loop_core;
mod metrics;
mod offset_tracker;
mod outputs;
mod processor;
mod rebalance;
mod restores;
mod settings;
mod subscribe;
mod transactions;

pub use self::clients::{CONSUMER_DEFAULTS, LoopClients, SESSION_TIMEOUT_MS};
pub use self::close::{CLOSE_BUDGET, off_runtime};
pub use self::dead_letter::dlq_headers;
pub use self::error::{ProcessorError, RuntimeError};
use self::loop_core::Core;
pub use self::metrics::RunStats;
pub use self::processor::{CheckpointWrite, Detached, InputMeta, Output, Processor, Resume};
use self::rebalance::{LoopConsumer, Rebalancer};
pub use self::settings::{BelowCheckpoint, OffsetCommits, RuntimeConfig};
pub use crate::args::Guarantee;
use crate::client::{self, KafkaSetupError};
use tokio_util::sync::CancellationToken;

/// Runs `processor` over `config.input_topic` until `cancel` fires, then drains, commits and
/// returns what it did: the at-least-once loop (`at_least_once`), or with
/// [`Guarantee::ExactlyOnce`] (and a service that commits) the transactional one
/// (`exactly_once`). Each makes its clients from `config`'s finished settings and closes them.
pub async fn run<P: Processor>(
    config: &RuntimeConfig,
    processor: P,
    cancel: CancellationToken,
) -> Result<RunStats, RuntimeError> {
    check_topics(config).await?;
    config.readiness.set("broker", true);
    if config.guarantee == Guarantee::ExactlyOnce && config.commits == OffsetCommits::Acknowledged {
        exactly_once::run(config, processor, cancel).await
    } else {
        at_least_once::run(config, processor, cancel).await
    }
}

/// The broker answers, and the input, output and dead-letter topics exist: each missing one
/// is named in one line before anything is consumed. [`run`] checks first; a service that
/// waits for S3 before running checks earlier too, so a missing topic is not hidden behind it.
pub async fn check_topics(config: &RuntimeConfig) -> Result<(), RuntimeError> {
    client::check_cluster(&config.kafka, Some(&config.input_topic)).await?;
    for topic in config.output_topics.iter().chain([&config.dlq_topic]) {
        match client::check_cluster(&config.kafka, Some(topic)).await {
            Ok(_) => {}
            Err(KafkaSetupError::NoSuchTopic { topic, bootstrap }) => {
                return Err(RuntimeError::NoOutputTopic { service: config.service.clone(), topic, bootstrap });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
