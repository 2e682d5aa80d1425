//! State handed over at a revocation (the counter): before a partition goes, its windows are
//! written to the store with the offset they cover, so its next owner restores them there and
//! reads nothing again — rather than restoring a checkpoint up to `--checkpoint-interval` old
//! and reading forward from it.
//!
//! The state is the loop's (its processor's), and the rebalance callback runs inside the
//! loop's own poll, so the callback cannot write it: it records the revocation here and
//! returns without unassigning, and librdkafka waits for the unassign (its rebalance goes on
//! only then, so the next owner's restore cannot start before the write). The loop then, within
//! the drain deadline counted from the callback: lets a periodic checkpoint being written finish
//! (two writes of one partition must not race), waits for the partitions' in-flight outputs,
//! has the processor snapshot them ([`Processor::hand_off`]), writes and commits that, and
//! gives the partitions up. Past the deadline it gives them up anyway: the next owner restores
//! the last checkpoint, as before, and counts the same (a partial is a function of partition
//! and offset). A stop with a revocation waiting gives it up after the final checkpoint.

use std::sync::Mutex;
use std::time::Instant;

use pipeline_core::lock;
use rdkafka::consumer::{CommitMode, Consumer};

use super::at_least_once::AtLeastOnceLoop;
use super::checkpoint_commits::poll_within;
use super::close;
use super::error::RuntimeError;
use super::processor::{CheckpointWrite, Processor};
use super::rebalance::{LoopConsumer, RevokeWork};

/// A revocation the consumer context left to the loop.
#[derive(Debug, Default)]
pub(super) struct HandOffs {
    /// The partitions being revoked and when librdkafka said so (the drain deadline counts
    /// from then); None when none waits.
    pending: Mutex<Option<(Vec<i32>, Instant)>>,
    /// Wakes the loop when one waits.
    pub(super) wake: tokio::sync::Notify,
}

impl HandOffs {
    /// The callback: `parts` are being revoked, since `at`. (librdkafka asks for no other
    /// rebalance before the unassign, so one waits at most; a second would join it.)
    pub(super) fn request(&self, parts: Vec<i32>, at: Instant) {
        let mut pending = lock(&self.pending);
        match pending.as_mut() {
            Some((waiting, _)) => waiting.extend(parts),
            None => *pending = Some((parts, at)),
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// The waiting revocation, taken.
    pub(super) fn take(&self) -> Option<(Vec<i32>, Instant)> {
        lock(&self.pending).take()
    }
}

impl<P: Processor> AtLeastOnceLoop<'_, P> {
    /// Hands the waiting revocation's partitions over and gives them up (see the module
    /// header). `writing` is the periodic checkpoint being written, if any.
    pub(super) async fn hand_off(
        &mut self,
        consumer: &LoopConsumer,
        writing: &mut Option<CheckpointWrite>,
    ) -> Result<(), RuntimeError> {
        let Some((parts, since)) = self.hand_offs.take() else { return Ok(()) };
        let outcome = self.write_hand_off(consumer, writing, &parts, since).await;
        consumer.context().give_up(consumer, &parts);
        self.core.sync_revocations();
        outcome
    }

    /// Everything before the partitions go: the periodic write, their outputs, their snapshot.
    async fn write_hand_off(
        &mut self,
        consumer: &LoopConsumer,
        writing: &mut Option<CheckpointWrite>,
        parts: &[i32],
        since: Instant,
    ) -> Result<(), RuntimeError> {
        let config = self.core.config;
        let deadline = since + config.drain_timeout;
        let service = &config.service;
        if let Some(write) = writing.take() {
            match poll_within(deadline, write).await {
                Some(written) => self.checkpoint_written(consumer, written, CommitMode::Async)?,
                None => tracing::warn!(%service, "checkpoint unfinished within the drain deadline"),
            }
        }
        let context = consumer.context();
        if let RevokeWork::HandOff(deliveries, _) = &context.revoke {
            close::blocking(|| context.drain_revoked(consumer, deliveries, parts, since));
        }
        let Some(write) = self.core.processor.hand_off(parts) else {
            tracing::info!(%service, ?parts, "handing over: nothing changed since the last checkpoint");
            return Ok(());
        };
        match poll_within(deadline, write).await {
            // Committed while the partitions are still ours: lag tools see the next owner's start.
            Some(written) => self.checkpoint_written(consumer, written, CommitMode::Async)?,
            None => tracing::warn!(
                %service, ?parts, waited = ?since.elapsed(),
                "hand-off unfinished within the drain deadline; the next owner restores the last checkpoint"
            ),
        }
        Ok(())
    }

    /// A stop with a revocation waiting: the final checkpoint covered its partitions; they go.
    pub(super) fn give_up_waiting(&mut self, consumer: &LoopConsumer) {
        if let Some((parts, _)) = self.hand_offs.take() {
            consumer.context().give_up(consumer, &parts);
            self.core.sync_revocations();
        }
    }
}
