//! Reading whole topics fast for `ops audit`: a `BaseConsumer` assigned every partition from
//! its low watermark up to the high watermark captured when the audit started (no consumer
//! group joined, nothing committed), with large fetches, handing each record's value to a
//! callback that borrows it (no copy per record).

use std::time::{Duration, Instant};

use pipeline_kafka::args::KafkaArgs;
use pipeline_kafka::client::{self, KafkaSetupError};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedHeaders;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Why a topic could not be read: every variant is a "cannot run" (exit 2), one line each.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The broker is unreachable, refuses the credentials, or the topic does not exist.
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// The `-X` settings are not a valid librdkafka configuration.
    #[error("invalid Kafka client configuration: {0}")]
    Config(KafkaError),
    /// The partition's low/high watermarks could not be read.
    #[error("reading the watermarks of {topic}/{partition}: {source}")]
    Watermarks {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// librdkafka's reason.
        source: KafkaError,
    },
    /// The consumer refused the assignment or a fetch failed for good.
    #[error("reading {topic}: {source}")]
    Consume {
        /// The topic.
        topic: String,
        /// librdkafka's reason.
        source: KafkaError,
    },
    /// Nothing arrived for too long while records below the captured high watermarks remain.
    #[error(
        "reading {topic} stalled: nothing for {timeout:?} with partition(s) {partitions:?} not read to their end (broker overloaded? raise --stall-timeout)"
    )]
    Stalled {
        /// The topic.
        topic: String,
        /// The stall timeout.
        timeout: Duration,
        /// Partitions not read to their captured high watermark.
        partitions: Vec<i32>,
    },
}

/// What a topic held when the audit started: per partition, (id, low, high) watermarks.
/// Captured for every topic before any is read, so all of them are audited as of one moment.
#[derive(Debug, Clone)]
pub struct Extent {
    /// The topic's name.
    pub topic: String,
    /// (partition, low watermark, high watermark), by partition id.
    pub partitions: Vec<(i32, i64, i64)>,
}

impl Extent {
    /// Records between the watermarks (what the read will hand over).
    pub fn records(&self) -> i64 {
        self.partitions.iter().map(|(_, low, high)| high - low).sum()
    }
}

/// A consumer for bounded reads: assign() only (librdkafka wants a group id for that; a fresh
/// one is never joined nor committed to), fetches as large as the broker gives, the partition
/// EOF event so a read knows when a partition is done.
fn consumer(kafka: &KafkaArgs) -> Result<BaseConsumer<EndIsNoError>, ReadError> {
    let group = format!("ops-audit-{}", uuid::Uuid::new_v4().simple());
    kafka
        .client_config(&[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            ("fetch.max.bytes", "52428800"),
            ("max.partition.fetch.bytes", "16777216"),
            ("receive.message.max.bytes", "104857600"),
            ("queued.min.messages", "1000000"),
            ("queued.max.messages.kbytes", "524288"),
            ("fetch.wait.max.ms", "100"),
            ("check.crcs", "false"),
        ])
        .create_with_context(EndIsNoError)
        .map_err(ReadError::Config)
}

/// The bounded reader's client context: a partition's end is what it reads to, so librdkafka's
/// `PartitionEOF` reported as an error (besides the event `read` handles) is not logged as one;
/// every other error is, as rdkafka's default context logs it.
pub struct EndIsNoError;

impl ClientContext for EndIsNoError {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF) | KafkaError::PartitionEOF(_)) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for EndIsNoError {}

/// Checks that `topic` exists (one clear error when the broker is unreachable or it is
/// missing) and captures its watermarks.
pub async fn extent(kafka: &KafkaArgs, topic: &str) -> Result<Extent, ReadError> {
    let metadata = client::check_cluster(kafka, Some(topic)).await?;
    let mut ids: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer = consumer(&kafka)?;
        let mut partitions = Vec::with_capacity(ids.len());
        for p in ids {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, kafka.connect_timeout)
                .map_err(|source| ReadError::Watermarks { topic: topic.clone(), partition: p, source })?;
            partitions.push((p, low, high));
        }
        Ok(Extent { topic, partitions })
    })
    .await
    .expect("watermark task does not panic")
}

/// Reads every record of `extent` (each partition in offset order, partitions interleaved) and
/// calls `each(partition, offset, value)`; returns how many records were read. Fails when
/// nothing arrives for `stall` while records remain.
pub fn read(
    kafka: &KafkaArgs,
    extent: &Extent,
    stall: Duration,
    mut each: impl FnMut(i32, i64, Option<&[u8]>, Option<&BorrowedHeaders>),
) -> Result<u64, ReadError> {
    let topic = extent.topic.as_str();
    let consume = |source| ReadError::Consume { topic: topic.to_owned(), source };
    // Partition → the high watermark still to reach (the last offset read is high - 1).
    let mut remaining: std::collections::HashMap<i32, i64> =
        extent.partitions.iter().filter(|(_, low, high)| low < high).map(|&(p, _, high)| (p, high)).collect();
    if remaining.is_empty() {
        return Ok(0);
    }
    let consumer = consumer(kafka)?;
    let mut tpl = TopicPartitionList::new();
    for &(p, low, high) in &extent.partitions {
        if low < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(low)).map_err(consume)?;
        }
    }
    consumer.assign(&tpl).map_err(consume)?;

    let mut read = 0u64;
    let mut last_progress = Instant::now();
    while !remaining.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let (p, offset) = (m.partition(), m.offset());
                let Some(&high) = remaining.get(&p) else { continue };
                if offset >= high {
                    // Written after the audit started: not part of it.
                    remaining.remove(&p);
                    continue;
                }
                each(p, offset, m.payload(), m.headers());
                read += 1;
                if offset + 1 >= high {
                    remaining.remove(&p);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // A partition whose records below the mark are gone (compacted, transaction
                // markers) ends here.
                remaining.remove(&p);
            }
            Some(Err(e)) => return Err(consume(e)),
            None => {}
        }
        if last_progress.elapsed() >= stall && !remaining.is_empty() {
            let mut partitions: Vec<i32> = remaining.into_keys().collect();
            partitions.sort_unstable();
            return Err(ReadError::Stalled { topic: topic.to_owned(), timeout: stall, partitions });
        }
    }
    Ok(read)
}
