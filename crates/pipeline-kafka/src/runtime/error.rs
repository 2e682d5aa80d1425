//! Why a consuming service stops: one error type for both loops, each variant saying what to do.

use rdkafka::error::KafkaError;

use crate::client::KafkaSetupError;

/// Errors that stop a service.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Set-up failed (broker unreachable, topic missing, bad configuration).
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// The cluster refused us for good (authentication, authorization).
    #[error(
        "Kafka refused the {service} consumer: {source}; check the credentials and ACLs (-X sasl.* / security.protocol)"
    )]
    Fatal { service: String, source: KafkaError },
    /// Subscribing to the input topic failed.
    #[error("subscribing to `{topic}` failed: {source}")]
    Subscribe { topic: String, source: KafkaError },
    /// A record could not be handed to the producer.
    #[error("producing to `{topic}` failed: {source}")]
    Produce { topic: String, source: KafkaError },
    /// The broker refused to start transactions (exactly-once).
    #[error(
        "Kafka at {bootstrap} refused transactions for transactional id `{id}` ({source}); exactly-once needs a \
         broker with transactions (Apache Kafka; locally `scripts/stack.sh up --txn` and \
         --bootstrap-servers $TXN_KAFKA_BOOTSTRAP_SERVERS), or run with --guarantee at-least-once"
    )]
    Transactions { bootstrap: String, id: String, source: Box<KafkaError> },
    /// Another live instance took over this transactional id.
    #[error(
        "{service} was fenced: another instance uses transactional id `{id}` ({source}); give every instance its \
         own --transactional-id / TRANSACTIONAL_ID"
    )]
    Fenced { service: String, id: String, source: Box<KafkaError> },
    /// A transaction could neither commit nor abort.
    #[error(
        "{service}: transaction of `{id}` could neither commit nor abort ({detail}); restart it: the broker aborts \
         the open transaction and the inputs are read again from the committed offsets"
    )]
    TransactionStuck { service: String, id: String, detail: String },
    /// The broker refuses every record of an output or dead-letter topic (authorization, the
    /// topic is gone), or a dead letter itself: no retry or dead letter can fix it.
    #[error(
        "{service}: {reason}; nothing was committed past the last acknowledged input. Fix the topic or its ACLs \
         (`ops topics describe`), then restart"
    )]
    OutputRefused { service: String, reason: String },
    /// An output or dead-letter topic does not exist at start.
    #[error(
        "{service}: output topic `{topic}` does not exist at {bootstrap}; create it (`scripts/stack.sh up` creates the pipeline's topics, or `ops topics create {topic}`)"
    )]
    NoOutputTopic { service: String, topic: String, bootstrap: String },
    /// A partition's log is behind the checkpoint restored for it, with `--below-checkpoint stop`.
    #[error(
        "{service}: partition {partition} of `{topic}` is at offset {offset}, below the offset {from} its \
         checkpoint resumes from: the topic was recreated or the broker lost records. Restart with \
         --below-checkpoint replay to count the log as it is now, or --checkpoint-recovery replay"
    )]
    BelowCheckpoint { service: String, topic: String, partition: i32, offset: i64, from: i64 },
    /// The processor's own state failed (a checkpoint that cannot be read, say).
    #[error("{error}")]
    Processor { service: String, error: ProcessorError },
}

/// An error of a processor's own state.
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync>;
