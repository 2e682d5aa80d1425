//! The at-least-once loop's checkpoint commits (a loop that commits by checkpoint: the
//! counter's): a written checkpoint's offsets are committed for the partitions still owned (a
//! partition revoked while it was written is its next owner's to commit), and the last
//! checkpoint at a stop is written within what is left of the drain deadline.

use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};

use super::at_least_once::AtLeastOnceLoop;
use super::error::{ProcessorError, RuntimeError};
use super::processor::{CheckpointWrite, Detached, Processor};
use super::rebalance::{LoopConsumer, offsets_list};

impl<P: Processor> AtLeastOnceLoop<'_, P> {
    /// A checkpoint was written: commits the offsets it covers of the partitions still owned (a
    /// partition revoked while it was written is its next owner's to commit) and tells the
    /// processor; a store that refuses it for good stops the service.
    pub(super) fn checkpoint_written(
        &mut self,
        consumer: &LoopConsumer,
        written: Result<Vec<(i32, i64)>, ProcessorError>,
        mode: CommitMode,
    ) -> Result<(), RuntimeError> {
        let service = &self.core.config.service;
        let mut durable = written.map_err(|error| RuntimeError::Processor { service: service.clone(), error })?;
        self.core.sync_revocations();
        self.core.processor.checkpointed(&durable);
        durable.retain(|(p, _)| self.core.rebalance.resumed.contains_key(p));
        commit_offsets(consumer, &self.core.config.input_topic, &durable, mode, service);
        Ok(())
    }

    /// The last checkpoint, within `budget`: the one being written finishes first (its
    /// snapshot is older), then one of everything since.
    pub(super) async fn final_checkpoint(
        &mut self,
        consumer: &LoopConsumer,
        writing: Option<CheckpointWrite>,
        budget: Duration,
    ) -> Result<(), RuntimeError> {
        let service = self.core.config.service.clone();
        let until = tokio::time::Instant::now() + budget;
        for write in [writing, None] {
            self.core.sync_revocations();
            let Some(write) = write.or_else(|| self.core.processor.checkpoint()) else { continue };
            match tokio::time::timeout_at(until, write).await {
                Ok(written) => self.checkpoint_written(consumer, written, CommitMode::Async)?,
                Err(_) => {
                    tracing::warn!(%service, "checkpoint unfinished within the drain deadline");
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// `work`'s result, or None when `deadline` passes first.
pub(super) async fn poll_within<T>(deadline: Instant, work: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout_at(deadline.into(), work).await.ok()
}

/// Polls the detached work in `slot` (the caller's `select!` guards it with `is_some`).
pub(super) async fn poll_detached<T>(slot: &mut Option<Detached<T>>) -> T {
    match slot {
        Some(work) => work.await,
        None => std::future::pending().await,
    }
}

/// Commits `(partition, next offset)` pairs a checkpoint covers.
fn commit_offsets(consumer: &LoopConsumer, topic: &str, commits: &[(i32, i64)], mode: CommitMode, service: &str) {
    if commits.is_empty() {
        return;
    }
    match consumer.commit(&offsets_list(topic, commits), mode) {
        Ok(()) => tracing::debug!(%service, ?commits, "committed checkpointed offsets"),
        Err(e) => tracing::warn!(%service, error = %e, "committing checkpointed offsets failed"),
    }
}
