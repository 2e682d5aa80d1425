//! Rebalancing: the consumer context librdkafka calls on assignment and revocation, and the
//! loop's side that applies assignments (after the processor says where each partition resumes)
//! and passes revocations on to the processor.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pipeline_core::lock;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::deliveries::Deliveries;
use super::error::RuntimeError;
use super::hand_off::HandOffs;
use super::processor::{Processor, Resume};
use super::settings::RuntimeConfig;
use crate::observe::Readiness;

/// Work that must be finished before partitions are given up (exactly-once: the open
/// transaction commits, so its inputs' offsets go with it). Called on the consumer's thread
/// inside the rebalance callback.
pub(super) trait BeforeRevoke: Send + Sync {
    /// Finishes it. `group` asks librdkafka for the group metadata the transaction needs: a
    /// request to the client's own queue, so it is called only when a transaction is open.
    /// Returns, when the transaction had to abort, the first offset of its inputs per
    /// partition: where the partitions this consumer keeps must be read again from.
    fn before_revoke(&self, group: &dyn Fn() -> Option<ConsumerGroupMetadata>, budget: Duration) -> Vec<(i32, i64)>;
}

/// What a revocation must finish before the partitions go, by delivery guarantee.
pub(super) enum RevokeWork {
    /// At-least-once: wait (bounded) for the revoked partitions' in-flight outputs and store the
    /// offsets of what is acknowledged.
    Drain(Arc<Deliveries>),
    /// At-least-once committing by checkpoint (the counter): the revoked partitions' state is
    /// written to the store before they go, so their next owner starts from it. The loop owns
    /// that state, so the callback leaves the revocation to it and returns (librdkafka waits for
    /// the loop's unassign); while stopping, it drains as [`RevokeWork::Drain`].
    HandOff(Arc<Deliveries>, Arc<HandOffs>),
    /// Exactly-once: commit the open transaction (its inputs' offsets go with it); if it
    /// aborts, rewind the partitions kept.
    CommitTransaction(Arc<dyn BeforeRevoke>),
}

/// Consumer context: logs through tracing and commits stored offsets when partitions are
/// revoked.
///
/// The callback never asks librdkafka anything that waits for an answer on the client's own
/// queue (`assignment()`, `rebalance_protocol()`, a synchronous commit) once the loop is
/// stopping: inside the consumer's close that answer may never come, and the close — and the
/// process, and a test's runtime — hung on it (`rd_kafka_assignment` → `rd_kafka_op_req`). So
/// what is assigned is kept here, the protocol is known from the configuration, and while
/// stopping a revocation only hands the partitions back.
pub(super) struct RuntimeContext {
    /// Service name for log lines.
    pub(super) service: String,
    /// Whether this consumer commits at all.
    pub(super) commit: bool,
    /// Bumped on every revocation; in-flight inputs of an older epoch are no longer ours.
    pub(super) epoch: Arc<AtomicU64>,
    /// Partitions revoked since the loop last looked.
    pub(super) revoked: Arc<std::sync::Mutex<Vec<i32>>>,
    /// An assignment waiting for the loop to apply it (and whether the protocol is cooperative).
    pub(super) assignment: Arc<std::sync::Mutex<Option<(TopicPartitionList, bool)>>>,
    /// Wakes the loop when an assignment waits.
    pub(super) assigned: Arc<tokio::sync::Notify>,
    /// Ready once partitions are assigned.
    pub(super) readiness: Readiness,
    /// What a revocation finishes before the partitions go.
    pub(super) revoke: RevokeWork,
    /// How long a revocation waits for in-flight outputs (below the session timeout).
    pub(super) drain_timeout: Duration,
    /// The topic consumed (offsets are stored for it).
    pub(super) input_topic: String,
    /// Whether the assignment strategy is cooperative (incremental assign and unassign), from
    /// the configuration, not asked of librdkafka in the callback.
    pub(super) cooperative: bool,
    /// Shared with the loop: the partitions assigned to librdkafka (by the loop once restored,
    /// or here while stopping) minus what was revoked. Never asked of librdkafka, see above.
    pub(super) applied: Arc<std::sync::Mutex<BTreeSet<i32>>>,
    /// Cancelled when the loop starts stopping (a stop request, or a fatal error): from then
    /// on a revocation waits for nothing and commits asynchronously.
    pub(super) stopping: CancellationToken,
}

/// The `/readyz` check a stalled partition shows as (degraded: `partitions_flowing degraded:
/// partition 3 stalled: …`); absent while every partition flows.
const STALLED_CHECK: &str = "partitions_flowing";

impl ClientContext for RuntimeContext {
    /// librdkafka's statistics (every 2 s with metrics on): consumer lag per assigned
    /// partition, the broker's high watermark minus the position the loop has read to, and the
    /// client's request and wake-up counts.
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::observe::record_client_statistics(&self.service, "consumer", &statistics);
        let health = &self.readiness.partitions;
        let now = tokio::time::Instant::now();
        for (topic, t) in &statistics.topics {
            for (partition, p) in t.partitions.iter().filter(|(id, p)| **id >= 0 && p.desired) {
                // Until a record of a newly assigned partition reaches the loop its position is
                // unknown to librdkafka (-1001): reading starts at the committed offset.
                let position = if p.app_offset >= 0 { p.app_offset } else { p.committed_offset };
                if p.hi_offset >= 0 && position >= 0 {
                    health.observe(&self.service, topic, *partition, p.hi_offset, position, now);
                }
            }
        }
        // A stalled partition shows on /readyz as a degraded check (still ready: another
        // instance would stall on it the same way).
        let stalled = health.stalled(now);
        if stalled.is_empty() {
            self.readiness.clear(STALLED_CHECK);
        } else {
            self.readiness.degrade(STALLED_CHECK, stalled.join("; "));
        }
    }
}

impl ConsumerContext for RuntimeContext {
    /// Revocations are applied at once (after committing what is stored); assignments are
    /// handed to the loop, which first asks the processor where each partition resumes and
    /// then assigns with those offsets (librdkafka waits for the assign call meanwhile). So a
    /// processor restoring a checkpoint never races librdkafka's own committed-offset lookup.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(service = %self.service, ?parts, "partitions assigned");
                if self.stopping.is_cancelled() {
                    // Nobody applies it any more: take it as offered, so the close can go on
                    // (it revokes it next).
                    let done = if self.cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                    match done {
                        Ok(()) => lock(&self.applied).extend(&parts),
                        Err(e) => tracing::warn!(service = %self.service, error = %e, "assign while stopping failed"),
                    }
                    return;
                }
                *lock(&self.assignment) = Some((tpl.clone(), self.cooperative));
                self.assigned.notify_one();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                lock(&self.assignment).take();
                match &self.revoke {
                    RevokeWork::CommitTransaction(txn) => {
                        let aborted = txn.before_revoke(&|| consumer.group_metadata(), self.drain_timeout);
                        self.rewind_kept(consumer, &aborted, &parts);
                    }
                    RevokeWork::HandOff(_, hand_offs) if !self.stopping.is_cancelled() => {
                        hand_offs.request(parts, Instant::now());
                        return;
                    }
                    RevokeWork::Drain(deliveries) | RevokeWork::HandOff(deliveries, _) => {
                        self.drain_revoked(consumer, deliveries, &parts, Instant::now());
                    }
                }
                self.give_up(consumer, &parts);
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(service = %self.service, error = %code, "rebalance error");
                lock(&self.applied).clear();
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(service = %self.service, error = %e, "unassign failed");
                }
            }
        }
    }
}

impl RuntimeContext {
    /// After an aborted transaction at a cooperative revocation: the partitions kept are read
    /// again from the aborted transaction's first inputs (as the loop does after an abort), or
    /// those inputs would be lost — their offsets are behind this consumer's position and no
    /// other owner reads them. The revoked ones' next owner starts from the committed offsets.
    /// The seek is asynchronous (a zero timeout): nothing here waits on the client's queue.
    fn rewind_kept(&self, consumer: &BaseConsumer<Self>, aborted: &[(i32, i64)], revoked: &[i32]) {
        let kept: Vec<(i32, i64)> = aborted.iter().copied().filter(|(p, _)| !revoked.contains(p)).collect();
        if kept.is_empty() || !self.cooperative {
            return;
        }
        match consumer.seek_partitions(offsets_list(&self.input_topic, &kept), Duration::ZERO) {
            Ok(_) => {
                tracing::info!(service = %self.service, ?kept, "kept partitions rewound to the aborted transaction's inputs")
            }
            Err(e) => {
                tracing::error!(service = %self.service, ?kept, error = %e, "rewinding the kept partitions failed")
            }
        }
    }

    /// Gives `parts` up once what had to be finished first is: the loop and the processor hear
    /// of it, their gauges go, stored offsets are committed (at-least-once) and librdkafka
    /// unassigns them (incrementally when cooperative). From the callback, or from the loop
    /// after a hand-off.
    pub(super) fn give_up<C: Consumer<Self>>(&self, consumer: &C, parts: &[i32]) {
        lock(&self.revoked).extend(parts);
        self.readiness.partitions.forget(parts);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.commit && !parts.is_empty() {
            // While stopping, the final commit has run (or runs) under the drain deadline; an
            // asynchronous one here waits for nothing.
            let mode = if self.stopping.is_cancelled() { CommitMode::Async } else { CommitMode::Sync };
            match consumer.commit_consumer_state(mode) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(service = %self.service, error = %e, "commit on revoke failed"),
            }
        }
        tracing::info!(service = %self.service, partitions = parts.len(), "partitions revoked");
        let mut applied = lock(&self.applied);
        let done = if self.cooperative {
            // Only what was assigned: a partition still being restored never was, and
            // librdkafka refuses the whole unassign for one it does not hold. Cooperative
            // rebalancing keeps the partitions it does not revoke.
            let held: Vec<(i32, i64)> = parts.iter().filter(|p| applied.remove(p)).map(|&p| (p, 0)).collect();
            if held.is_empty() {
                Ok(())
            } else {
                consumer.incremental_unassign(&offsets_list(&self.input_topic, &held))
            }
        } else {
            applied.clear();
            consumer.unassign()
        };
        let kept = !applied.is_empty();
        drop(applied);
        if let Err(e) = done {
            tracing::warn!(service = %self.service, error = %e, "unassign failed");
        }
        self.readiness.set("partitions_assigned", kept);
    }

    /// Before giving partitions up: waits (bounded) for their in-flight outputs, stores the
    /// offsets of what is acknowledged, and forgets them (a late report is stale then).
    pub(super) fn drain_revoked<C: Consumer<Self>>(
        &self,
        consumer: &C,
        deliveries: &Deliveries,
        parts: &[i32],
        started: Instant,
    ) {
        let (stores, abandoned) = deliveries.drain(parts, started + self.drain_timeout, &self.stopping);
        store_offsets(consumer, &self.input_topic, &stores);
        let mut state = deliveries.lock();
        for &p in parts {
            state.tracker.revoke(p);
        }
        state.forget_abandoned();
        drop(state);
        if abandoned > 0 {
            metrics::counter!("pipeline_inputs_abandoned_total", "service" => self.service.clone())
                .increment(abandoned as u64);
            tracing::warn!(
                service = %self.service, ?parts, abandoned, waited = ?started.elapsed(),
                "revoked with outputs still unacknowledged; the partitions' next owner reads those inputs again"
            );
        } else {
            tracing::info!(service = %self.service, ?parts, waited = ?started.elapsed(), "drained revoked partitions");
        }
    }
}

/// Stores `(partition, next offset)` pairs of `topic` for the next commit. A partition no
/// longer assigned refuses its offset: harmless, its next owner starts from the committed one.
pub(super) fn store_offsets<C: Consumer<X>, X: ConsumerContext>(consumer: &C, topic: &str, stores: &[(i32, i64)]) {
    if stores.is_empty() {
        return;
    }
    if let Err(e) = consumer.store_offsets(&offsets_list(topic, stores)) {
        tracing::debug!(topic, error = %e, "offsets not stored (partitions no longer assigned)");
    }
}

/// `(partition, next offset)` pairs of `topic` as librdkafka's list (an offset librdkafka
/// refuses is logged and left out).
pub(super) fn offsets_list(topic: &str, offsets: &[(i32, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for &(partition, next) in offsets {
        if tpl.add_partition_offset(topic, partition, Offset::Offset(next)).is_err() {
            tracing::warn!(topic, partition, next, "offset out of range; left out");
        }
    }
    tpl
}

/// The loop's consumer type.
pub(super) type LoopConsumer = StreamConsumer<RuntimeContext>;

/// The loop's side of rebalancing: the consumer context records revocations and waiting
/// assignments; the loop passes them on to the processor, has it restore each assigned
/// partition (off the loop, `super::restores`) and then applies the assignment.
pub(super) struct Rebalancer {
    /// Bumped by the context on every revocation.
    pub(super) epoch: Arc<AtomicU64>,
    /// The epoch the processor last heard of (revocations are passed on when it moves).
    pub(super) seen_epoch: u64,
    /// Shared with the consumer context: partitions revoked since the last look.
    pub(super) revoked: Arc<std::sync::Mutex<Vec<i32>>>,
    /// Shared with the consumer context: an assignment to apply.
    pub(super) assignment: Arc<std::sync::Mutex<Option<(TopicPartitionList, bool)>>>,
    /// Signalled when one waits.
    pub(super) assigned: Arc<tokio::sync::Notify>,
    /// Per assigned partition, the first offset the processor wants (after [`Processor::resumed`]).
    pub(super) resumed: HashMap<i32, i64>,
    /// Shared with the consumer context: the partitions assigned to librdkafka.
    pub(super) applied: Arc<std::sync::Mutex<BTreeSet<i32>>>,
}

impl Rebalancer {
    pub(super) fn new() -> Self {
        Self {
            epoch: Arc::default(),
            seen_epoch: 0,
            revoked: Arc::default(),
            assignment: Arc::default(),
            assigned: Arc::default(),
            resumed: HashMap::new(),
            applied: Arc::default(),
        }
    }

    /// The current epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Tells the processor about partitions revoked since the last look; returns them.
    pub(super) fn sync_revocations<P: Processor>(&mut self, processor: &mut P) -> Vec<i32> {
        let epoch = self.epoch();
        if epoch == self.seen_epoch {
            return Vec::new();
        }
        self.seen_epoch = epoch;
        let revoked = std::mem::take(&mut *lock(&self.revoked));
        for p in &revoked {
            self.resumed.remove(p);
        }
        processor.on_revoke(&revoked);
        revoked
    }

    /// Takes a waiting assignment (of the one input topic): its partitions, possibly none (an
    /// eager assignment must be answered even then), and whether the protocol is cooperative.
    pub(super) fn take_assignment(&self) -> Option<(Vec<i32>, bool)> {
        let (tpl, cooperative) = lock(&self.assignment).take()?;
        Some((tpl.elements().iter().map(|e| e.partition()).collect(), cooperative))
    }

    /// Assigns `resumes` of `topic`, each partition at the offset its restored state names (the
    /// committed one where the processor has no opinion); returns the partitions.
    pub(super) fn assign_resumes(
        &mut self,
        consumer: &LoopConsumer,
        config: &RuntimeConfig,
        topic: &str,
        cooperative: bool,
        resumes: Vec<(i32, Resume)>,
    ) -> Result<Vec<i32>, RuntimeError> {
        let mut offsets = TopicPartitionList::new();
        for (partition, resume) in resumes {
            let (offset, from) = match resume {
                Resume::Committed => (Offset::Invalid, i64::MIN),
                Resume::At(from) => (Offset::Offset(from), from),
            };
            self.resumed.insert(partition, from);
            offsets
                .add_partition_offset(topic, partition, offset)
                .map_err(|source| RuntimeError::Subscribe { topic: topic.to_owned(), source })?;
        }
        let done = if cooperative { consumer.incremental_assign(&offsets) } else { consumer.assign(&offsets) };
        done.map_err(|source| RuntimeError::Subscribe { topic: config.input_topic.clone(), source })?;
        let mut applied = lock(&self.applied);
        if !cooperative {
            applied.clear();
        }
        applied.extend(offsets.elements().iter().map(|e| e.partition()));
        drop(applied);
        // An incremental assignment adds to what is kept: ready while anything is assigned.
        config.readiness.set("partitions_assigned", !self.resumed.is_empty());
        Ok(offsets.elements().iter().map(|e| e.partition()).collect())
    }

    /// Whether the processor wants `message`: its partition is assigned (a record fetched
    /// before a revocation may still arrive after it), and it is not before the offset the
    /// processor's restored state resumes from (those are already counted in it).
    pub(super) fn wanted(&self, message: &BorrowedMessage<'_>) -> bool {
        self.resumed.get(&message.partition()).is_some_and(|from| message.offset() >= *from)
    }

    /// The offset `message`'s partition resumes from, when `message` lies below it: the log is
    /// behind the processor's checkpoint ([`super::BelowCheckpoint`]).
    pub(super) fn below_resume(&self, message: &BorrowedMessage<'_>) -> Option<i64> {
        self.resumed.get(&message.partition()).copied().filter(|from| message.offset() < *from)
    }
}
