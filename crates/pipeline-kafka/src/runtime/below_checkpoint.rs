//! A partition whose log is behind the checkpoint its processor restored (the topic was deleted
//! and recreated, or the broker lost acknowledged records): the offsets the checkpoint covers
//! name other records now, or none. Met in two places — at assignment, when the partition's
//! high watermark is below the offset the checkpoint resumes from (a broker that answers a fetch
//! beyond its end with nothing, as Nisshi does), and at a record below that offset (Apache Kafka
//! answers out of range, and librdkafka resets to the earliest record) — and handled there by
//! one policy, [`BelowCheckpoint`]: logged, counted, then replayed, skipped or stopped on.

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};

use super::close::blocking;
use super::error::RuntimeError;
use super::loop_core::Core;
use super::processor::{Processor, Resume};
use super::rebalance::LoopConsumer;
use super::settings::BelowCheckpoint;

/// How long the high-watermark lookup at an assignment may take (a broker round trip; the loop
/// does not poll meanwhile, so it is kept far below `max.poll.interval.ms`).
const WATERMARK_LOOKUP: Duration = Duration::from_secs(5);

impl<P: Processor> Core<'_, P> {
    /// `resume` of a newly assigned `partition`, checked against the partition's log: a
    /// checkpoint beyond the log's end is handled by the policy (replayed: from the log's
    /// first record).
    pub(super) fn check_resume(
        &mut self,
        consumer: &LoopConsumer,
        topic: &str,
        partition: i32,
        resume: Resume,
    ) -> Result<Resume, RuntimeError> {
        let Resume::At(from) = resume else { return Ok(resume) };
        if from <= 0 {
            return Ok(resume);
        }
        let (low, high) = match blocking(|| consumer.fetch_watermarks(topic, partition, WATERMARK_LOOKUP)) {
            Ok(marks) => marks,
            Err(e) => {
                // The record-level check below still applies.
                tracing::debug!(topic, partition, error = %e, "high watermark unknown at assignment");
                return Ok(resume);
            }
        };
        if high >= from {
            return Ok(resume);
        }
        Ok(if self.log_behind(topic, partition, high, from)? { Resume::At(low) } else { resume })
    }

    /// Whether `message`, not wanted, is to be handled after all: it lies below its partition's
    /// checkpoint and the policy replays the partition.
    pub(super) fn below_checkpoint(&mut self, message: &BorrowedMessage<'_>) -> Result<bool, RuntimeError> {
        let Some(from) = self.rebalance.below_resume(message) else { return Ok(false) };
        let (partition, offset) = (message.partition(), message.offset());
        if !self.log_behind(message.topic(), partition, offset, from)? {
            return Ok(false);
        }
        self.rebalance.resumed.insert(partition, offset);
        Ok(true)
    }

    /// `partition`'s log reaches only `offset`, below the checkpoint's `from`: logged, counted,
    /// then the policy. Ok(true): replayed (the processor forgot the partition's state).
    fn log_behind(&mut self, topic: &str, partition: i32, offset: i64, from: i64) -> Result<bool, RuntimeError> {
        let service = &self.config.service;
        self.metrics.below_checkpoint.increment(1);
        match self.config.below_checkpoint {
            BelowCheckpoint::Replay => {
                tracing::error!(
                    %service, topic, partition, offset, checkpoint = from,
                    "the partition's log is behind its checkpoint (the topic was recreated, or the broker lost \
                     records): forgetting the restored state and counting the log from its start \
                     (--below-checkpoint replay)"
                );
                self.processor.replay(partition);
                Ok(true)
            }
            BelowCheckpoint::Skip => {
                if self.skipping_below.insert(partition) {
                    tracing::error!(
                        %service, topic, partition, offset, checkpoint = from,
                        "the partition's log is behind its checkpoint: taking its records below the checkpoint as \
                         counted (--below-checkpoint skip)"
                    );
                }
                Ok(false)
            }
            BelowCheckpoint::Stop => Err(RuntimeError::BelowCheckpoint {
                service: service.clone(),
                topic: topic.to_owned(),
                partition,
                offset,
                from,
            }),
        }
    }
}
