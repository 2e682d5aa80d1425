//! Kafka clients with the project's defaults, start-up checks and topic administration.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::args::KafkaArgs;

/// Kafka set-up errors, each with the next step.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// The broker did not answer a metadata request in time.
    #[error(
        "cannot reach Kafka at {bootstrap} within {timeout:?} ({detail}); start the local stack with \
         `scripts/stack.sh up` or set --bootstrap-servers / KAFKA_BOOTSTRAP_SERVERS (a broker that requires \
         TLS or authentication also needs -X security.protocol=… and the sasl.* / ssl.* settings)"
    )]
    Unreachable { bootstrap: String, timeout: Duration, detail: String },
    /// The broker answered but refused the credentials.
    #[error(
        "Kafka at {bootstrap} refused the credentials ({detail}); check -X sasl.username / sasl.password \
         (KAFKA_PROPERTIES) and sasl.mechanisms (the local broker speaks SCRAM-SHA-512)"
    )]
    AuthenticationFailed { bootstrap: String, detail: String },
    /// The topic is not in the cluster's metadata.
    #[error(
        "topic `{topic}` does not exist at {bootstrap}; create it (`scripts/stack.sh up` creates the pipeline's topics)"
    )]
    NoSuchTopic { topic: String, bootstrap: String },
    /// An `-X` entry is malformed or refused (its value not shown).
    #[error(transparent)]
    Setting(#[from] crate::setting_guard::SettingError),
    /// librdkafka refused the configuration (a bad `-X` property, say).
    #[error("invalid Kafka client configuration: {}", crate::setting_guard::redacted(.0))]
    Config(KafkaError),
    /// Topic creation failed.
    #[error("creating topic `{topic}` failed: {detail}")]
    CreateTopic { topic: String, detail: String },
    /// Topic deletion failed.
    #[error("deleting topic `{topic}` failed: {detail}")]
    DeleteTopic { topic: String, detail: String },
}

/// Producer defaults: acknowledged by all in-sync replicas, batched (linger 50 ms, up to 10 000
/// records or 1 MiB a batch), a deep local queue so bursts never block the caller. Each value is
/// measured on the local stack (BENCHMARKS.md, "librdkafka's idle cost"):
///
/// - `linger.ms` 50: the local Nisshi broker writes every produce request to S3, so its cost is
///   per request. At 1 500 events/s over 3 partitions, linger 5 ms gave 703 acknowledged
///   events/s (the broker fell behind and requests timed out), 20 ms 1 328/s and 50 ms 1 483/s.
///   Override with `-X linger.ms=…` where latency matters more.
/// - `enable.idempotence` false, `max.in.flight.requests.per.connection` 1: librdkafka 2.12's
///   idempotent producer sends a partition's next batch only once the previous one is
///   acknowledged, and while it waits with a batch whose linger has passed its broker thread
///   polls without sleeping. Whenever a produce round trip exceeds the linger (a busy broker),
///   each producer burns a core, which starves the broker further: at 5 000 events/s the
///   generator used 3.6 CPU-s instead of 0.45 and the enricher 3.4 instead of 0.26, produce
///   round trips rose from 10 ms to 91 ms (1.2 s max). Nisshi also answered an idempotent
///   producer at full speed with `OutOfOrderSequenceNumber`. One request in flight per
///   connection keeps each partition's order across retries; a retry after a lost
///   acknowledgement can duplicate a batch, which at-least-once delivery admits anyway. The
///   exactly-once mode's transactional producer turns idempotence back on (it needs it).
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "false"),
    ("max.in.flight.requests.per.connection", "1"),
    ("linger.ms", "50"),
    ("batch.num.messages", "10000"),
    ("batch.size", "1048576"),
    ("queue.buffering.max.messages", "500000"),
    ("queue.buffering.max.kbytes", "1048576"),
    ("message.timeout.ms", "60000"),
];

/// A transactional producer's configuration: [`PRODUCER_DEFAULTS`] under the user's `-X`
/// overrides, with `transactional.id` and the idempotence transactions need (the defaults turn
/// it off; librdkafka refuses a transactional id without it).
pub fn transactional_config(args: &KafkaArgs, transactional_id: &str) -> ClientConfig {
    let mut config = args.client_config(PRODUCER_DEFAULTS);
    config
        .set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5");
    config
}

/// Builds a producer with [`PRODUCER_DEFAULTS`] under the user's `-X` overrides.
pub fn producer(args: &KafkaArgs) -> Result<FutureProducer, KafkaSetupError> {
    args.client_config(PRODUCER_DEFAULTS).create().map_err(KafkaSetupError::Config)
}

/// A record of raw bytes, with its key and headers when it has them.
pub fn record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    headers: Option<OwnedHeaders>,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    record
}

/// Enqueues one record without waiting for its delivery; while librdkafka's local queue is
/// full it pauses (the producer's thread keeps serving delivery reports, so the queue drains)
/// and tries again. Any other refusal is returned.
pub async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<DeliveryFuture, KafkaError> {
    let mut record = record(topic, key, payload, headers);
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                record = back;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Fetches cluster metadata, waiting up to `--connect-timeout` for the broker to answer.
/// With `topic`, also checks that it exists. First the `-X` entries are checked
/// ([`KafkaArgs::check`]): every tool meets a malformed one here, before any client.
pub async fn check_cluster(args: &KafkaArgs, topic: Option<&str>) -> Result<Metadata, KafkaSetupError> {
    args.check()?;
    let consumer: BaseConsumer<ErrorCapture> =
        args.client_config(&[]).create_with_context(ErrorCapture::default()).map_err(KafkaSetupError::Config)?;
    let timeout = args.connect_timeout;
    let owned_topic = topic.map(str::to_owned);
    let bootstrap = args.bootstrap_servers.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        consumer.fetch_metadata(owned_topic.as_deref(), timeout).map_err(|e| {
            // The reason is an error event: serve the client's events to see it.
            let _ = consumer.poll(Duration::from_millis(100));
            match consumer.context().authentication_failure() {
                Some(detail) => KafkaSetupError::AuthenticationFailed { bootstrap, detail },
                None => KafkaSetupError::Unreachable { bootstrap, timeout, detail: e.to_string() },
            }
        })
    })
    .await
    .expect("metadata task does not panic")?;
    if let Some(topic) = topic {
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        if found.is_none_or(|t| t.error().is_some() || t.partitions().is_empty()) {
            return Err(KafkaSetupError::NoSuchTopic {
                topic: topic.to_owned(),
                bootstrap: args.bootstrap_servers.clone(),
            });
        }
    }
    Ok(metadata)
}

/// Remembers an authentication failure the client reports as an error event.
#[derive(Debug, Default)]
struct ErrorCapture {
    /// librdkafka's reason for the last authentication failure (it never holds the password).
    authentication: std::sync::Mutex<Option<String>>,
}

impl ErrorCapture {
    fn authentication_failure(&self) -> Option<String> {
        pipeline_core::lock(&self.authentication).clone()
    }
}

impl ClientContext for ErrorCapture {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
        ) {
            *pipeline_core::lock(&self.authentication) = Some(reason.to_owned());
        }
        tracing::debug!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for ErrorCapture {}

/// An admin client, and options that wait up to `--connect-timeout` for the broker.
fn admin_client(args: &KafkaArgs) -> Result<(AdminClient<DefaultClientContext>, AdminOptions), KafkaSetupError> {
    let admin = args.client_config(&[]).create().map_err(KafkaSetupError::Config)?;
    let opts =
        AdminOptions::new().operation_timeout(Some(args.connect_timeout)).request_timeout(Some(args.connect_timeout));
    Ok((admin, opts))
}

/// Creates `topics` with `partitions` partitions and `replication` replicas each, treating
/// "already exists" as success.
pub async fn create_topics(
    args: &KafkaArgs,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaSetupError> {
    let (admin, opts) = admin_client(args)?;
    let new: Vec<NewTopic> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication))).collect();
    let results = admin.create_topics(&new, &opts).await.map_err(|e| unreachable(args, &e))?;
    admin_outcome(results, RDKafkaErrorCode::TopicAlreadyExists, |topic, detail| KafkaSetupError::CreateTopic {
        topic,
        detail,
    })
}

/// The broker did not answer an admin request.
fn unreachable(args: &KafkaArgs, e: &KafkaError) -> KafkaSetupError {
    KafkaSetupError::Unreachable {
        bootstrap: args.bootstrap_servers.clone(),
        timeout: args.connect_timeout,
        detail: e.to_string(),
    }
}

/// The first per-topic failure of an admin request, `benign` counting as success.
fn admin_outcome(
    results: Vec<Result<String, (String, RDKafkaErrorCode)>>,
    benign: RDKafkaErrorCode,
    error: impl Fn(String, String) -> KafkaSetupError,
) -> Result<(), KafkaSetupError> {
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, code)) if code == benign => {}
            Err((topic, code)) => return Err(error(topic, code.to_string())),
        }
    }
    Ok(())
}

/// Deletes `topics`, treating "does not exist" as success (the counterpart of
/// [`create_topics`]; tools use it to remove the temporary topics they make).
pub async fn delete_topics(args: &KafkaArgs, topics: &[&str]) -> Result<(), KafkaSetupError> {
    let (admin, opts) = admin_client(args)?;
    let results = admin.delete_topics(topics, &opts).await.map_err(|e| unreachable(args, &e))?;
    admin_outcome(results, RDKafkaErrorCode::UnknownTopicOrPartition, |topic, detail| KafkaSetupError::DeleteTopic {
        topic,
        detail,
    })
}

/// One partition of a topic as [`describe_topics`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition id.
    pub id: i32,
    /// Broker id of the leader (-1 when there is none).
    pub leader: i32,
    /// Broker ids holding a replica.
    pub replicas: Vec<i32>,
    /// Broker ids of the in-sync replicas.
    pub isr: Vec<i32>,
    /// Offset of the oldest retained record.
    pub low: i64,
    /// Offset the next record will get (the high watermark).
    pub high: i64,
}

/// A topic's partitions, leaders, replicas and watermarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Its partitions, by id.
    pub partitions: Vec<PartitionInfo>,
}

/// Describes `topics` (one metadata request, then the watermarks of every partition), in the
/// order given; a topic that does not exist is a [`KafkaSetupError::NoSuchTopic`].
pub async fn describe_topics(args: &KafkaArgs, topics: &[&str]) -> Result<Vec<TopicInfo>, KafkaSetupError> {
    let metadata = check_cluster(args, None).await?;
    let mut infos = Vec::with_capacity(topics.len());
    for &name in topics {
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| KafkaSetupError::NoSuchTopic {
                topic: name.to_owned(),
                bootstrap: args.bootstrap_servers.clone(),
            })?;
        let mut partitions: Vec<PartitionInfo> = topic
            .partitions()
            .iter()
            .map(|p| PartitionInfo {
                id: p.id(),
                leader: p.leader(),
                replicas: p.replicas().to_vec(),
                isr: p.isr().to_vec(),
                low: 0,
                high: 0,
            })
            .collect();
        partitions.sort_by_key(|p| p.id);
        infos.push(TopicInfo { name: name.to_owned(), partitions });
    }
    let consumer: BaseConsumer = args.client_config(&[]).create().map_err(KafkaSetupError::Config)?;
    let timeout = args.connect_timeout;
    tokio::task::spawn_blocking(move || {
        for topic in &mut infos {
            for p in &mut topic.partitions {
                (p.low, p.high) = consumer
                    .fetch_watermarks(&topic.name, p.id, timeout)
                    .map_err(|e| format!("watermarks of {}/{}: {e}", topic.name, p.id))?;
            }
        }
        Ok(infos)
    })
    .await
    .expect("watermarks task does not panic")
    .map_err(|detail| KafkaSetupError::Unreachable { bootstrap: args.bootstrap_servers.clone(), timeout, detail })
}
