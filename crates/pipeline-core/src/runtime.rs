//! The consume → transform → produce → store-offset loop every consuming service runs.
//!
//! # Delivery guarantee: at-least-once
//!
//! An input record's offset is stored (`enable.auto.offset.store=false`) only after every
//! output it caused — enriched event, alert, dead letter — is acknowledged by the broker, and in
//! order per partition: a later offset never passes an earlier one still in flight. librdkafka
//! commits the stored offsets every second, synchronously when partitions are revoked, and the
//! loop commits once more at shutdown after draining its in-flight records. So every input is
//! reflected in the output topics before its offset is committed, and nothing is lost across a
//! crash, a restart or a rebalance.
//!
//! Limits, all of them duplicates, never loss:
//! - a crash (SIGKILL, OOM, power) re-processes everything after the last commit (at most about
//!   one commit interval plus the in-flight window);
//! - on a rebalance, inputs still in flight on revoked partitions are re-processed by the new
//!   owner (their outputs may already be in Kafka);
//! - a delivery that fails after librdkafka's own retries (`message.timeout.ms`) is sent again by
//!   this loop, so it can appear twice and out of order with later records of its key.
//!
//! Poison inputs (not UTF-8, not JSON, wrong schema, non-finite numbers, oversized) are counted,
//! logged at warn with the reason, and sent to the dead-letter topic with their original bytes,
//! key and headers plus `dlq.*` headers naming the source topic, partition, offset, service and
//! error. Their offset then advances like any other: redelivery would not make them valid.
//!
//! Processing is pipelined: records are produced as soon as they are transformed (librdkafka
//! batches them) and up to `max_in_flight` inputs await acknowledgement at once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

pub use crate::config::Guarantee;
use crate::config::KafkaArgs;
use crate::kafka::{self, KafkaSetupError};
use crate::observe::Readiness;
use crate::schema::{DecodeError, JsonEvent};

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
    /// The processor's own state failed (a checkpoint that cannot be read, say).
    #[error("{error}")]
    Processor { service: String, error: ProcessorError },
}

/// An error of a processor's own state.
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync>;

/// Where reading a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// At the group's committed offset (the normal case).
    Committed,
    /// At this offset (before or after the committed one): the processor's restored state
    /// covers everything before it.
    At(i64),
}

/// One record to produce.
#[derive(Debug)]
pub struct Output {
    /// Destination topic.
    pub topic: Arc<str>,
    /// Record key (None: the partitioner spreads them).
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record headers.
    pub headers: Option<OwnedHeaders>,
}

/// Where an input record came from, for processors that need more than its decoded value.
#[derive(Debug, Clone, Copy)]
pub struct InputMeta<'a> {
    /// The record's raw value.
    pub payload: &'a [u8],
    /// The record's key.
    pub key: Option<&'a [u8]>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// The transform of a service.
pub trait Processor: Send {
    /// The decoded input type.
    type Input: JsonEvent;

    /// Handles one valid input, pushing the outputs it causes (possibly none) to `out`.
    fn process(&mut self, input: Self::Input, meta: InputMeta<'_>, out: &mut Vec<Output>);

    /// Called every [`RuntimeConfig::tick`]; outputs pushed here belong to no input offset.
    fn on_tick(&mut self, _out: &mut Vec<Output>) {}

    /// Called once when the loop stops consuming, before the final drain and commit.
    fn on_shutdown(&mut self, _out: &mut Vec<Output>) {}

    /// Called before the first record of a newly assigned partition: a processor with state
    /// of its own restores it here and says where reading resumes.
    fn resume(&mut self, _partition: i32) -> impl Future<Output = Result<Resume, ProcessorError>> + Send {
        std::future::ready(Ok(Resume::Committed))
    }

    /// The partitions were taken away (a rebalance): forget their state, publish nothing more
    /// for them.
    fn on_revoke(&mut self, _partitions: &[i32]) {}

    /// Every [`RuntimeConfig::checkpoint_interval`] and at shutdown, once every output so far
    /// is acknowledged: make the state durable, and return the (partition, next offset) pairs
    /// it now covers; the loop commits them to the group (so lag tools see progress). For a
    /// service that commits by checkpoint rather than per acknowledged input.
    fn checkpoint(&mut self) -> impl Future<Output = Vec<(i32, i64)>> + Send {
        std::future::ready(Vec::new())
    }
}

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
    /// Store and commit offsets (false: the service rebuilds its state by replaying its input
    /// from the earliest offset at every start and commits nothing).
    pub commit: bool,
    /// Most inputs awaiting acknowledgement at once; beyond it the loop stops reading.
    pub max_in_flight: usize,
    /// Inputs larger than this are dead-lettered unparsed.
    pub max_record_bytes: usize,
    /// How long shutdown waits for in-flight records; keep it below the session timeout.
    pub drain_timeout: Duration,
    /// Interval of [`Processor::on_tick`].
    pub tick: Duration,
    /// Interval of [`Processor::checkpoint`] (None: never, but at shutdown).
    pub checkpoint_interval: Option<Duration>,
    /// Readiness checks this loop maintains (`broker`, `partitions_assigned`).
    pub readiness: Readiness,
    /// Metrics are served: ask librdkafka for statistics (consumer lag).
    pub metrics: bool,
    /// At-least-once (the default) or exactly-once (transactions).
    pub guarantee: Guarantee,
    /// Exactly-once: this instance's transactional id (a restarted instance with the same id
    /// fences its predecessor).
    pub transactional_id: String,
    /// Exactly-once: how long a transaction collects inputs before it commits.
    pub transaction_interval: Duration,
}

mod exactly_once;

/// Consumer defaults of every service: a short session timeout so a dead instance's partitions
/// move quickly, short fetch waits for latency, and a new group starts from the earliest offset.
/// (Public so the benchmark's bare relay consumes exactly like the services.)
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
    ("fetch.wait.max.ms", "50"),
    ("enable.partition.eof", "false"),
];

/// Offsets stored by the loop are committed by librdkafka every second (or never, for a
/// service that rebuilds its state by replay).
fn commit_defaults(commit: bool) -> [(&'static str, &'static str); 2] {
    if commit {
        [("enable.auto.commit", "true"), ("auto.commit.interval.ms", "1000")]
    } else {
        [("enable.auto.commit", "false"), ("auto.commit.interval.ms", "1000")]
    }
}

/// Counts of what the loop did, returned at shutdown.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    /// Input records read.
    pub consumed: u64,
    /// Output records acknowledged (dead letters excluded).
    pub produced: u64,
    /// Inputs sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Deliveries that failed and were sent again.
    pub retried: u64,
}

/// Consumer context: logs through tracing and commits stored offsets when partitions are
/// revoked.
struct RuntimeContext {
    /// Service name for log lines.
    service: String,
    /// Whether this consumer commits at all.
    commit: bool,
    /// Bumped on every revocation; in-flight inputs of an older epoch are no longer ours.
    epoch: Arc<AtomicU64>,
    /// Partitions revoked since the loop last looked.
    revoked: Arc<std::sync::Mutex<Vec<i32>>>,
    /// An assignment waiting for the loop to apply it (and whether the protocol is cooperative).
    assignment: Arc<std::sync::Mutex<Option<(TopicPartitionList, bool)>>>,
    /// Wakes the loop when an assignment waits.
    assigned: Arc<tokio::sync::Notify>,
    /// Ready once partitions are assigned.
    readiness: Readiness,
    /// Exactly-once: the open transaction, committed before partitions are given up.
    txn: Option<Arc<exactly_once::Transactions>>,
}

impl ClientContext for RuntimeContext {
    /// librdkafka's statistics (every 2 s with metrics on): consumer lag per assigned
    /// partition, the broker's high watermark minus the position the loop has read to.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in t.partitions.iter().filter(|(id, p)| **id >= 0 && p.desired) {
                if p.hi_offset >= 0 && p.app_offset >= 0 {
                    let labels = [
                        ("service", self.service.clone()),
                        ("topic", topic.clone()),
                        ("partition", partition.to_string()),
                    ];
                    metrics::gauge!("pipeline_consumer_lag", &labels).set((p.hi_offset - p.app_offset).max(0) as f64);
                }
            }
        }
    }
}

impl ConsumerContext for RuntimeContext {
    /// Revocations are applied at once (after committing what is stored); assignments are
    /// handed to the loop, which first asks the processor where each partition resumes and
    /// then assigns with those offsets (librdkafka waits for the assign call meanwhile). So a
    /// processor restoring a checkpoint never races librdkafka's own committed-offset lookup.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(service = %self.service, ?parts, "partitions assigned");
                *lock(&self.assignment) = Some((tpl.clone(), cooperative));
                self.assigned.notify_one();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                lock(&self.assignment).take();
                if let Some(txn) = &self.txn {
                    txn.finish_before_revoke(consumer);
                }
                lock(&self.revoked).extend(tpl.elements().iter().map(|e| e.partition()));
                self.epoch.fetch_add(1, Ordering::SeqCst);
                if self.commit && tpl.count() > 0 {
                    match consumer.commit_consumer_state(CommitMode::Sync) {
                        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                        Err(e) => tracing::warn!(service = %self.service, error = %e, "commit on revoke failed"),
                    }
                }
                self.readiness.set("partitions_assigned", false);
                tracing::info!(service = %self.service, partitions = tpl.count(), "partitions revoked");
                let done = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = done {
                    tracing::warn!(service = %self.service, error = %e, "unassign failed");
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(service = %self.service, error = %code, "rebalance error");
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(service = %self.service, error = %e, "unassign failed");
                }
            }
        }
    }
}

use crate::lock;

/// The loop's consumer type.
type LoopConsumer = StreamConsumer<RuntimeContext>;

/// Identifies the input an output belongs to.
#[derive(Debug, Clone, Copy)]
struct Token {
    /// Rebalance epoch when the input was read.
    epoch: u64,
    /// Input partition and offset; None for outputs of [`Processor::on_tick`].
    input: Option<(i32, i64)>,
    /// Whether the output is a dead letter (counted apart).
    dead_letter: bool,
}

/// A delivery report tagged with its token.
struct Tracked {
    token: Token,
    delivery: DeliveryFuture,
}

impl Future for Tracked {
    type Output = (Token, <DeliveryFuture as Future>::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let token = self.token;
        self.delivery.poll_unpin(cx).map(|report| (token, report))
    }
}

/// An input awaiting acknowledgement of its outputs.
#[derive(Debug)]
struct Slot {
    offset: i64,
    outstanding: u32,
    /// When it was read: its processing latency ends when its last output is acknowledged.
    read_at: Instant,
}

/// Per-partition queues of inputs in offset order.
#[derive(Debug, Default)]
struct Pending {
    epoch: u64,
    partitions: HashMap<i32, VecDeque<Slot>>,
    len: usize,
}

impl Pending {
    /// Forgets everything when the epoch moved (a revocation): those inputs are not ours now.
    fn sync_epoch(&mut self, epoch: u64) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.partitions.clear();
            self.len = 0;
        }
    }

    fn push(&mut self, partition: i32, offset: i64, outstanding: u32, read_at: Instant) {
        self.partitions.entry(partition).or_default().push_back(Slot { offset, outstanding, read_at });
        self.len += 1;
    }

    /// One output of (partition, offset) was acknowledged.
    fn ack(&mut self, partition: i32, offset: i64) {
        if let Some(queue) = self.partitions.get_mut(&partition)
            && let Ok(i) = queue.binary_search_by_key(&offset, |s| s.offset)
        {
            queue[i].outstanding -= 1;
        }
    }

    /// Pops the fully acknowledged inputs at the head of `partition`'s queue, calling `done`
    /// with each one's read time, and returns the last offset popped: everything up to it may
    /// be committed.
    fn advance(&mut self, partition: i32, mut done: impl FnMut(Instant)) -> Option<i64> {
        let queue = self.partitions.get_mut(&partition)?;
        let mut last = None;
        while let Some(slot) = queue.front().filter(|s| s.outstanding == 0) {
            done(slot.read_at);
            last = Some(slot.offset);
            queue.pop_front();
            self.len -= 1;
        }
        last
    }
}

/// The running loop's state. The consumer is kept apart: a message borrowed from it stays
/// alive while the loop's state changes.
struct Loop<'a, P: Processor> {
    /// What both loops share.
    core: Core<'a, P>,
    producer: FutureProducer,
    pending: Pending,
    in_flight: FuturesUnordered<Tracked>,
}

/// What both loops (at-least-once and exactly-once) share: the configuration, the processor
/// and how inputs reach it.
struct Core<'a, P: Processor> {
    config: &'a RuntimeConfig,
    processor: P,
    /// Assignments and revocations, as the consumer context hands them over.
    rebalance: Rebalancer,
    /// Outputs of what is being handled, drained into the producer.
    outputs: Vec<Output>,
    dlq_topic: Arc<str>,
    stats: RunStats,
    metrics: LoopMetrics,
}

impl<'a, P: Processor> Core<'a, P> {
    fn new(config: &'a RuntimeConfig, processor: P, rebalance: Rebalancer) -> Self {
        Self {
            config,
            processor,
            rebalance,
            outputs: Vec::new(),
            dlq_topic: Arc::from(config.dlq_topic.as_str()),
            stats: RunStats::default(),
            metrics: LoopMetrics::new(&config.service),
        }
    }

    /// Decodes one input and has the processor transform it into `outputs`; a poison input
    /// becomes a dead letter instead (counted and logged). None when the processor's restored
    /// state already covers the input (skipped); else whether it was dead-lettered.
    fn take(&mut self, message: &BorrowedMessage<'_>) -> Option<bool> {
        self.rebalance.sync_revocations(&mut self.processor);
        if !self.rebalance.wanted(message) {
            return None;
        }
        self.stats.consumed += 1;
        self.metrics.consumed.increment(1);
        let payload = message.payload().unwrap_or_default();
        let (partition, offset) = (message.partition(), message.offset());
        match P::Input::decode(payload, self.config.max_record_bytes) {
            Ok(event) => {
                let meta = InputMeta { payload, key: message.key(), partition, offset };
                self.processor.process(event, meta, &mut self.outputs);
                Some(false)
            }
            Err(error) => {
                self.stats.dead_lettered += 1;
                self.metrics.dead_lettered.increment(1);
                tracing::warn!(
                    service = %self.config.service, topic = message.topic(), partition, offset, %error,
                    "dead-lettering a poison record"
                );
                self.outputs.push(dead_letter(&self.dlq_topic, &self.config.service, message, &error));
                Some(true)
            }
        }
    }

    /// Applies a waiting assignment (see [`Rebalancer::apply_assignment`]).
    async fn apply_assignment(&mut self, consumer: &LoopConsumer) -> Result<(), RuntimeError> {
        self.rebalance.apply_assignment(consumer, &mut self.processor, self.config).await
    }

    /// A tick: revocations first, then the processor's own tick outputs.
    fn tick(&mut self) {
        self.rebalance.sync_revocations(&mut self.processor);
        self.processor.on_tick(&mut self.outputs);
    }
}

/// The loop's side of rebalancing: the consumer context records revocations and waiting
/// assignments; the loop passes them on to the processor and applies the assignments.
struct Rebalancer {
    /// Bumped by the context on every revocation.
    epoch: Arc<AtomicU64>,
    /// The epoch the processor last heard of (revocations are passed on when it moves).
    seen_epoch: u64,
    /// Shared with the consumer context: partitions revoked since the last look.
    revoked: Arc<std::sync::Mutex<Vec<i32>>>,
    /// Shared with the consumer context: an assignment to apply.
    assignment: Arc<std::sync::Mutex<Option<(TopicPartitionList, bool)>>>,
    /// Signalled when one waits.
    assigned: Arc<tokio::sync::Notify>,
    /// Per assigned partition, the first offset the processor wants (after [`Processor::resume`]).
    resumed: HashMap<i32, i64>,
}

impl Rebalancer {
    fn new() -> Self {
        Self {
            epoch: Arc::default(),
            seen_epoch: 0,
            revoked: Arc::default(),
            assignment: Arc::default(),
            assigned: Arc::default(),
            resumed: HashMap::new(),
        }
    }

    /// The current epoch.
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Tells the processor about partitions revoked since the last look.
    fn sync_revocations<P: Processor>(&mut self, processor: &mut P) {
        let epoch = self.epoch();
        if epoch == self.seen_epoch {
            return;
        }
        self.seen_epoch = epoch;
        let revoked = std::mem::take(&mut *lock(&self.revoked));
        for p in &revoked {
            self.resumed.remove(p);
        }
        processor.on_revoke(&revoked);
    }

    /// Applies a waiting assignment: asks the processor where each partition resumes, then
    /// assigns with those offsets (the committed one where it has no opinion).
    async fn apply_assignment<P: Processor>(
        &mut self,
        consumer: &LoopConsumer,
        processor: &mut P,
        config: &RuntimeConfig,
    ) -> Result<(), RuntimeError> {
        self.sync_revocations(processor);
        let Some((tpl, cooperative)) = lock(&self.assignment).take() else { return Ok(()) };
        let mut offsets = TopicPartitionList::new();
        for e in tpl.elements() {
            let partition = e.partition();
            let resume = processor
                .resume(partition)
                .await
                .map_err(|error| RuntimeError::Processor { service: config.service.clone(), error })?;
            let (offset, from) = match resume {
                Resume::Committed => (Offset::Invalid, i64::MIN),
                Resume::At(from) => (Offset::Offset(from), from),
            };
            self.resumed.insert(partition, from);
            offsets
                .add_partition_offset(e.topic(), partition, offset)
                .map_err(|source| RuntimeError::Subscribe { topic: e.topic().to_owned(), source })?;
        }
        let done = if cooperative { consumer.incremental_assign(&offsets) } else { consumer.assign(&offsets) };
        done.map_err(|source| RuntimeError::Subscribe { topic: config.input_topic.clone(), source })?;
        config.readiness.set("partitions_assigned", offsets.count() > 0);
        Ok(())
    }

    /// Whether the processor wants `message`: records before the offset its restored state
    /// resumes from are already counted in it.
    fn wanted(&self, message: &BorrowedMessage<'_>) -> bool {
        self.resumed.get(&message.partition()).is_none_or(|from| message.offset() >= *from)
    }
}

/// The loop's metric handles, registered once (a no-op without `--metrics-addr`).
struct LoopMetrics {
    consumed: metrics::Counter,
    produced: metrics::Counter,
    dead_lettered: metrics::Counter,
    retried: metrics::Counter,
    /// Read → last output acknowledged, per input.
    latency: metrics::Histogram,
}

impl LoopMetrics {
    fn new(service: &str) -> Self {
        let label = || [("service", service.to_owned())];
        Self {
            consumed: metrics::counter!("pipeline_records_consumed_total", &label()),
            produced: metrics::counter!("pipeline_records_produced_total", &label()),
            dead_lettered: metrics::counter!("pipeline_records_dead_lettered_total", &label()),
            retried: metrics::counter!("pipeline_produce_retries_total", &label()),
            latency: metrics::histogram!("pipeline_processing_seconds", &label()),
        }
    }
}

/// Runs `processor` over `config.input_topic` until `cancel` fires, then drains, commits and
/// returns what it did. With [`Guarantee::ExactlyOnce`] (and a service that commits) the
/// transactional loop of [`exactly_once`] runs instead.
pub async fn run<P: Processor>(
    config: &RuntimeConfig,
    processor: P,
    cancel: CancellationToken,
) -> Result<RunStats, RuntimeError> {
    kafka::check_cluster(&config.kafka, Some(&config.input_topic)).await?;
    config.readiness.set("broker", true);
    let rebalance = Rebalancer::new();
    if config.guarantee == Guarantee::ExactlyOnce && config.commit {
        let txn = exactly_once::Transactions::start(config).await?;
        let consumer = subscribe(config, &rebalance, Some(txn.clone()))?;
        return exactly_once::run(config, &consumer, rebalance, txn, processor, cancel).await;
    }
    let consumer = subscribe(config, &rebalance, None)?;
    let producer = kafka::producer(&config.kafka)?;
    let mut state = Loop {
        core: Core::new(config, processor, rebalance),
        producer,
        pending: Pending::default(),
        in_flight: FuturesUnordered::new(),
    };
    state.run(&consumer, cancel).await?;
    Ok(state.core.stats)
}

/// The group consumer of `config.input_topic`, subscribed, its context wired to `rebalance`
/// (and to the open transaction, which a revocation commits first).
fn subscribe(
    config: &RuntimeConfig,
    rebalance: &Rebalancer,
    txn: Option<Arc<exactly_once::Transactions>>,
) -> Result<LoopConsumer, RuntimeError> {
    let context = RuntimeContext {
        service: config.service.clone(),
        commit: config.commit && txn.is_none(),
        epoch: rebalance.epoch.clone(),
        revoked: rebalance.revoked.clone(),
        assignment: rebalance.assignment.clone(),
        assigned: rebalance.assigned.clone(),
        readiness: config.readiness.clone(),
        txn,
    };
    // Offsets are committed by librdkafka (at-least-once) or inside transactions (exactly-once).
    let auto_commit = config.commit && config.guarantee == Guarantee::AtLeastOnce;
    let defaults: Vec<_> = CONSUMER_DEFAULTS.iter().copied().chain(commit_defaults(auto_commit)).collect();
    let mut consumer_config = config.kafka.client_config(&defaults);
    consumer_config.set("group.id", &config.group_id).set("client.id", &config.service);
    if config.guarantee == Guarantee::ExactlyOnce {
        // Never read a record of an aborted (or still open) transaction.
        consumer_config.set("isolation.level", "read_committed");
    }
    if config.metrics {
        consumer_config.set("statistics.interval.ms", "2000");
    }
    let consumer: LoopConsumer = consumer_config.create_with_context(context).map_err(KafkaSetupError::Config)?;
    consumer
        .subscribe(&[&config.input_topic])
        .map_err(|source| RuntimeError::Subscribe { topic: config.input_topic.clone(), source })?;
    tracing::info!(
        service = %config.service, input = %config.input_topic, group = %config.group_id,
        commit = config.commit, guarantee = ?config.guarantee, "consuming"
    );
    Ok(consumer)
}

impl<P: Processor> Loop<'_, P> {
    async fn run(&mut self, consumer: &LoopConsumer, cancel: CancellationToken) -> Result<(), RuntimeError> {
        let mut tick = tokio::time::interval(self.core.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = tokio::time::interval(Duration::from_secs(30));
        report.tick().await;
        let every = self.core.config.checkpoint_interval;
        let mut checkpoint = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checkpoint.tick().await;
        let assigned = self.core.rebalance.assigned.clone();
        loop {
            let can_read = self.pending.len < self.core.config.max_in_flight;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = assigned.notified() => self.core.apply_assignment(consumer).await?,
                Some((token, report)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.delivered(consumer, token, report).await?;
                }
                message = consumer.recv(), if can_read => match message {
                    Ok(message) => self.handle(consumer, &message).await?,
                    Err(e) => self.consumer_error(e)?,
                },
                _ = tick.tick() => {
                    self.core.tick();
                    self.send_outputs(consumer, None, false).await?;
                }
                _ = checkpoint.tick(), if every.is_some() => self.checkpoint(consumer, CommitMode::Async).await?,
                _ = report.tick() => tracing::info!(service = %self.core.config.service, stats = ?self.core.stats, "progress"),
            }
        }
        self.shutdown(consumer).await
    }

    /// Waits until every output so far is acknowledged, has the processor checkpoint its
    /// state, and commits the offsets the checkpoint covers.
    async fn checkpoint(&mut self, consumer: &LoopConsumer, mode: CommitMode) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + self.core.config.drain_timeout;
        while let Ok(Some((token, report))) = tokio::time::timeout_at(deadline, self.in_flight.next()).await {
            self.delivered(consumer, token, report).await?;
        }
        if !self.in_flight.is_empty() {
            tracing::warn!(
                service = %self.core.config.service, in_flight = self.in_flight.len(),
                "checkpoint skipped: outputs not acknowledged within the drain timeout"
            );
            return Ok(());
        }
        self.core.rebalance.sync_revocations(&mut self.core.processor);
        let commits = self.core.processor.checkpoint().await;
        if commits.is_empty() {
            return Ok(());
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (partition, next) in &commits {
            if let Err(e) =
                tpl.add_partition_offset(&self.core.config.input_topic, *partition, rdkafka::Offset::Offset(*next))
            {
                tracing::warn!(service = %self.core.config.service, partition, error = %e, "bad checkpoint offset");
            }
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => tracing::debug!(service = %self.core.config.service, ?commits, "committed checkpointed offsets"),
            Err(e) => {
                tracing::warn!(service = %self.core.config.service, error = %e, "committing checkpointed offsets failed")
            }
        }
        Ok(())
    }

    /// Decodes one input, transforms it and sends its outputs.
    async fn handle(&mut self, consumer: &LoopConsumer, message: &BorrowedMessage<'_>) -> Result<(), RuntimeError> {
        self.pending.sync_epoch(self.core.rebalance.epoch());
        match self.core.take(message) {
            Some(dead) => self.send_outputs(consumer, Some((message.partition(), message.offset())), dead).await,
            None => Ok(()),
        }
    }

    /// Hands the buffered outputs to the producer, tracking them against `input`.
    async fn send_outputs(
        &mut self,
        consumer: &LoopConsumer,
        input: Option<(i32, i64)>,
        dead_letter: bool,
    ) -> Result<(), RuntimeError> {
        let token = Token { epoch: self.pending.epoch, input, dead_letter };
        let count = self.core.outputs.len() as u32;
        // Drained and put back: the buffer keeps its capacity for the next input.
        let mut outputs = std::mem::take(&mut self.core.outputs);
        for output in outputs.drain(..) {
            let (key, headers) = (output.key.as_deref(), output.headers);
            let delivery = match send(&self.producer, &output.topic, key, &output.payload, headers.clone()).await {
                Ok(delivery) => delivery,
                Err(e) if !self.renew_if_fatal()? => return Err(e),
                Err(_) => send(&self.producer, &output.topic, key, &output.payload, headers).await?,
            };
            self.in_flight.push(Tracked { token, delivery });
        }
        self.core.outputs = outputs;
        if let Some((partition, offset)) = input
            && self.core.config.commit
        {
            self.pending.push(partition, offset, count, Instant::now());
            self.store_acknowledged(consumer, partition);
        }
        Ok(())
    }

    /// A delivery report arrived.
    async fn delivered(
        &mut self,
        consumer: &LoopConsumer,
        token: Token,
        report: <DeliveryFuture as Future>::Output,
    ) -> Result<(), RuntimeError> {
        match report {
            Ok(Ok(_)) => {
                self.pending.sync_epoch(self.core.rebalance.epoch());
                if !token.dead_letter {
                    self.core.stats.produced += 1;
                    self.core.metrics.produced.increment(1);
                }
                if let Some((partition, offset)) = token.input
                    && self.core.config.commit
                    && token.epoch == self.pending.epoch
                {
                    self.pending.ack(partition, offset);
                    self.store_acknowledged(consumer, partition);
                }
                Ok(())
            }
            Ok(Err((error, message))) => {
                // librdkafka gave up after its own retries; never store past this input: send
                // the same record again after a pause.
                self.core.stats.retried += 1;
                self.core.metrics.retried.increment(1);
                tracing::warn!(service = %self.core.config.service, topic = message.topic(), %error, "delivery failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.renew_if_fatal()?;
                let delivery = resend(&self.producer, &message).await?;
                self.in_flight.push(Tracked { token, delivery });
                Ok(())
            }
            Err(_canceled) => unreachable!("the producer outlives every delivery future"),
        }
    }

    /// A fatal producer error (the broker lost an idempotent producer's sequence state, say,
    /// after its restart) leaves the producer useless: replace it. Nothing it had not delivered
    /// was committed, and each such record is sent again by the new one. Returns whether it did.
    fn renew_if_fatal(&mut self) -> Result<bool, RuntimeError> {
        let Some((code, reason)) = self.producer.client().fatal_error() else { return Ok(false) };
        tracing::warn!(
            service = %self.core.config.service, %code, reason,
            "the producer hit a fatal error; replacing it (undelivered records are sent again)"
        );
        self.producer = kafka::producer(&self.core.config.kafka)?;
        Ok(true)
    }

    /// Stores the offset of the last fully acknowledged input of `partition`.
    fn store_acknowledged(&mut self, consumer: &LoopConsumer, partition: i32) {
        let latency = &self.core.metrics.latency;
        if let Some(offset) = self.pending.advance(partition, |read_at| latency.record(read_at.elapsed())) {
            // store_offset stores offset + 1: the next record to read.
            if let Err(e) = consumer.store_offset(&self.core.config.input_topic, partition, offset) {
                tracing::debug!(partition, offset, error = %e, "offset not stored (partition no longer assigned)");
            }
        }
    }

    fn consumer_error(&self, error: KafkaError) -> Result<(), RuntimeError> {
        let fatal = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            )
        );
        if fatal {
            return Err(RuntimeError::Fatal { service: self.core.config.service.clone(), source: error });
        }
        tracing::warn!(service = %self.core.config.service, %error, "consumer error (retrying)");
        Ok(())
    }

    /// Stop reading, let the processor flush, wait (bounded) for in-flight records, commit.
    async fn shutdown(&mut self, consumer: &LoopConsumer) -> Result<(), RuntimeError> {
        self.core.processor.on_shutdown(&mut self.core.outputs);
        self.send_outputs(consumer, None, false).await?;
        let deadline = tokio::time::Instant::now() + self.core.config.drain_timeout;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.next()).await {
                Ok(Some((token, report))) => self.delivered(consumer, token, report).await?,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        service = %self.core.config.service, in_flight = self.in_flight.len(),
                        "drain deadline passed; their inputs will be re-processed"
                    );
                    break;
                }
            }
        }
        if self.core.config.commit {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(service = %self.core.config.service, error = %e, "final commit failed"),
            }
        }
        self.checkpoint(consumer, CommitMode::Sync).await?;
        if let Err(e) = self.producer.flush(Duration::from_secs(2)) {
            tracing::warn!(service = %self.core.config.service, error = %e, "producer flush at shutdown");
        }
        consumer.unsubscribe();
        tracing::info!(service = %self.core.config.service, stats = ?self.core.stats, "stopped");
        Ok(())
    }
}

/// Enqueues one output, mapping a refusal to the loop's error.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<DeliveryFuture, RuntimeError> {
    kafka::enqueue(producer, topic, key, payload, headers)
        .await
        .map_err(|source| RuntimeError::Produce { topic: topic.to_owned(), source })
}

async fn resend(producer: &FutureProducer, message: &OwnedMessage) -> Result<DeliveryFuture, RuntimeError> {
    send(producer, message.topic(), message.key(), message.payload().unwrap_or_default(), message.headers().cloned())
        .await
}

/// Header names carried by dead letters.
pub mod dlq_headers {
    /// Topic the poison record was read from.
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    /// Its partition (decimal).
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    /// Its offset (decimal).
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    /// The service that rejected it.
    pub const SERVICE: &str = "dlq.service";
    /// Why it was rejected.
    pub const ERROR: &str = "dlq.error";
}

/// The dead letter of `message`: its bytes, key and headers, plus the `dlq.*` headers.
fn dead_letter(dlq_topic: &Arc<str>, service: &str, message: &BorrowedMessage<'_>, error: &DecodeError) -> Output {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for h in original.iter() {
            headers = headers.insert(Header { key: h.key, value: h.value });
        }
    }
    let (partition, offset, reason) =
        (message.partition().to_string(), message.offset().to_string(), error.to_string());
    for (key, value) in [
        (dlq_headers::SOURCE_TOPIC, message.topic()),
        (dlq_headers::SOURCE_PARTITION, &partition),
        (dlq_headers::SOURCE_OFFSET, &offset),
        (dlq_headers::SERVICE, service),
        (dlq_headers::ERROR, &reason),
    ] {
        headers = headers.insert(Header { key, value: Some(value) });
    }
    Output {
        topic: dlq_topic.clone(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers: Some(headers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_advance_only_over_fully_acknowledged_inputs() {
        let mut p = Pending::default();
        let t = Instant::now();
        p.push(0, 10, 2, t);
        p.push(0, 11, 0, t); // filtered out: nothing to wait for, but behind offset 10
        p.push(0, 12, 1, t);
        p.push(1, 5, 1, t);
        assert_eq!(p.advance(0, |_| {}), None, "10 is still in flight");
        p.ack(0, 12);
        assert_eq!(p.advance(0, |_| {}), None, "12 is done but 10 is not: never pass it");
        p.ack(0, 10);
        assert_eq!(p.advance(0, |_| {}), None, "10 has one more output");
        p.ack(0, 10);
        assert_eq!(p.advance(0, |_| {}), Some(12), "10, 11, 12 all done");
        assert_eq!(p.len, 1);
        p.ack(1, 5);
        assert_eq!(p.advance(1, |_| {}), Some(5));
        assert_eq!((p.len, p.advance(1, |_| {})), (0, None));
    }

    #[test]
    fn a_revocation_forgets_in_flight_inputs() {
        let mut p = Pending::default();
        p.push(0, 1, 1, Instant::now());
        p.sync_epoch(1);
        assert_eq!(p.len, 0);
        p.ack(0, 1); // a late report of the old epoch finds nothing
        assert_eq!(p.advance(0, |_| {}), None);
    }
}
