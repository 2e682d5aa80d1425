//! What both loops (at-least-once and exactly-once) share: decode-or-dead-letter, the
//! processor, rebalancing and the counters.

use std::sync::Arc;

use pipeline_core::log_limit::{Bounded, LogLimit};
use pipeline_core::schema::JsonEvent;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;

use super::dead_letter::{Source, dead_letter};
use super::error::RuntimeError;
use super::metrics::{LoopMetrics, RunStats};
use super::processor::{InputMeta, Output, Processor};
use super::rebalance::{LoopConsumer, Rebalancer};
use super::restores::{Restored, Restores};
use super::settings::RuntimeConfig;
use crate::telemetry::{admit_line, flush_lines};

/// What [`Core::take`] did with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    /// Not for the processor: its partition is not ours (a record fetched before a revocation),
    /// or its restored state covers it already.
    Skipped,
    /// Processed: its outputs are in `Core::outputs`.
    Processed,
    /// Poison, or refused by the processor: its dead letter is in `Core::outputs`.
    DeadLettered,
}

/// What both loops (at-least-once and exactly-once) share: the configuration, the processor
/// and how inputs reach it.
pub(super) struct Core<'a, P: Processor> {
    pub(super) config: &'a RuntimeConfig,
    pub(super) processor: P,
    /// Assignments and revocations, as the consumer context hands them over.
    pub(super) rebalance: Rebalancer,
    /// The waiting assignment's restores, polled by the loop beside the consumer.
    pub(super) restores: Restores<P::Restored>,
    /// Outputs of what is being handled, drained into the producer.
    pub(super) outputs: Vec<Output>,
    pub(super) dlq_topic: Arc<str>,
    pub(super) stats: RunStats,
    pub(super) metrics: LoopMetrics,
    /// Poison lines written: a flood of poison gives one line per period and a summary.
    pub(super) poison_log: LogLimit,
    /// Lines about outputs the broker refused for good, limited the same way.
    pub(super) refused_log: LogLimit,
    /// Partitions whose records below the checkpoint are being skipped (said once each).
    pub(super) skipping_below: std::collections::HashSet<i32>,
    /// Per owned partition (by id), the newest event time processed, in ms: handed to the
    /// partition gauges at each heartbeat, not per record; forgotten at a revocation.
    newest_event_ms: Vec<Option<i64>>,
}

impl<'a, P: Processor> Core<'a, P> {
    pub(super) fn new(config: &'a RuntimeConfig, processor: P, rebalance: Rebalancer) -> Self {
        Self {
            config,
            processor,
            rebalance,
            restores: Restores::default(),
            outputs: Vec::new(),
            dlq_topic: Arc::from(config.dlq_topic.as_str()),
            stats: RunStats::default(),
            metrics: LoopMetrics::new(&config.service),
            poison_log: LogLimit::default(),
            refused_log: LogLimit::default(),
            skipping_below: std::collections::HashSet::new(),
            newest_event_ms: Vec::new(),
        }
    }

    /// Decodes one input and has the processor transform it into `outputs`; a poison input, or
    /// one the processor does not admit, becomes a dead letter instead (counted and logged).
    /// Says what became of it; an error only when a log behind its checkpoint stops the service.
    pub(super) fn take(
        &mut self,
        message: &BorrowedMessage<'_>,
        max_message_bytes: usize,
    ) -> Result<Taken, RuntimeError> {
        self.sync_revocations();
        if !self.rebalance.wanted(message) && !self.below_checkpoint(message)? {
            return Ok(Taken::Skipped);
        }
        self.stats.consumed += 1;
        self.metrics.consumed.increment(1);
        let payload = message.payload().unwrap_or_default();
        let (partition, offset) = (message.partition(), message.offset());
        let refusal = match <P::Input<'_>>::decode(payload, self.config.max_record_bytes) {
            Ok(event) => match self.processor.admit(&event) {
                Ok(()) => {
                    if let (Some(ms), Ok(index)) = (event.event_time_ms(), usize::try_from(partition)) {
                        if index >= self.newest_event_ms.len() {
                            self.newest_event_ms.resize(index + 1, None);
                        }
                        let newest = &mut self.newest_event_ms[index];
                        *newest = Some(newest.map_or(ms, |n| n.max(ms)));
                    }
                    let meta = InputMeta { payload, key: message.key(), partition, offset };
                    self.processor.process(event, meta, &mut self.outputs);
                    return Ok(Taken::Processed);
                }
                Err(refusal) => refusal,
            },
            Err(error) => error.to_string(),
        };
        self.poison(message, &refusal, max_message_bytes);
        Ok(Taken::DeadLettered)
    }

    /// Dead-letters `message` for `error` (counted, and logged within [`Core::poison_log`]).
    fn poison(&mut self, message: &BorrowedMessage<'_>, error: &str, max_message_bytes: usize) {
        let (partition, offset) = (message.partition(), message.offset());
        self.processor.on_dead_letter(partition, offset);
        self.stats.dead_lettered += 1;
        self.metrics.dead_lettered.increment(1);
        if admit_line(&mut self.poison_log, "dead-lettering") {
            tracing::warn!(
                service = %self.config.service, topic = message.topic(), partition, offset, error = %Bounded(error),
                "dead-lettering a poison record"
            );
        }
        let source = Source {
            topic: message.topic(),
            partition,
            offset,
            key: message.key(),
            payload: message.payload().unwrap_or_default(),
            headers: message.headers(),
            output_topic: None,
        };
        self.outputs.push(dead_letter(&self.dlq_topic, &self.config.service, source, &error, max_message_bytes));
    }

    /// Passes revocations on to the processor and drops the revoked partitions' restores;
    /// returns the partitions revoked since the last look.
    pub(super) fn sync_revocations(&mut self) -> Vec<i32> {
        let revoked = self.rebalance.sync_revocations(&mut self.processor);
        for index in revoked.iter().filter_map(|p| usize::try_from(*p).ok()) {
            if let Some(newest) = self.newest_event_ms.get_mut(index) {
                *newest = None;
            }
        }
        if !revoked.is_empty() {
            self.restores.revoke(&revoked, self.config.clients.cooperative);
        }
        revoked
    }

    /// Takes a waiting assignment and starts restoring its partitions (off the loop, see
    /// `super::restores`); returns the partitions it assigned when there was nothing to wait
    /// for.
    pub(super) fn begin_assignment(&mut self, consumer: &LoopConsumer) -> Result<Vec<i32>, RuntimeError> {
        self.sync_revocations();
        let Some((partitions, cooperative)) = self.rebalance.take_assignment() else { return Ok(Vec::new()) };
        let restores: Vec<_> = partitions.into_iter().map(|p| (p, self.processor.restore(p))).collect();
        self.restores.start(self.config.input_topic.clone(), cooperative, restores);
        match self.restores.complete() {
            Some(restored) => self.assign(consumer, restored),
            None => Ok(Vec::new()),
        }
    }

    /// One restore finished (`restores.next()`): the partitions assigned if it completed the
    /// waiting assignment; a failed restore stops the service.
    pub(super) fn restore_finished(
        &mut self,
        consumer: &LoopConsumer,
        finished: Result<Option<Restored<P::Restored>>, super::error::ProcessorError>,
    ) -> Result<Vec<i32>, RuntimeError> {
        let service = &self.config.service;
        match finished.map_err(|error| RuntimeError::Processor { service: service.clone(), error })? {
            Some(restored) => self.assign(consumer, restored),
            None => Ok(Vec::new()),
        }
    }

    /// Assigns `restored`, less what was revoked meanwhile (an eager revocation: all of it).
    fn assign(
        &mut self,
        consumer: &LoopConsumer,
        mut restored: Restored<P::Restored>,
    ) -> Result<Vec<i32>, RuntimeError> {
        let revoked = self.sync_revocations();
        if !revoked.is_empty() {
            if !restored.cooperative {
                return Ok(Vec::new());
            }
            restored.partitions.retain(|(p, _)| !revoked.contains(p));
        }
        let Restored { topic, cooperative, partitions } = restored;
        let mut resumes = Vec::with_capacity(partitions.len());
        for (partition, state) in partitions {
            let resume = self.processor.resumed(partition, state);
            resumes.push((partition, self.check_resume(consumer, &topic, partition, resume)?));
        }
        self.rebalance.assign_resumes(consumer, self.config, &topic, cooperative, resumes)
    }

    /// The loop turned: the heartbeat behind `/healthz`, and the newest event times since the
    /// last turn to the partition gauges.
    pub(super) fn beat(&mut self) {
        let readiness = &self.config.readiness;
        readiness.heartbeat.beat();
        // Every turn, not only after new records: the gauges learn a partition from librdkafka's
        // statistics, which may come after its records.
        for (partition, newest) in self.newest_event_ms.iter().enumerate() {
            if let (Some(ms), Ok(partition)) = (*newest, i32::try_from(partition)) {
                readiness.partitions.event_time(partition, ms);
            }
        }
    }

    /// A tick: revocations first, then the processor's own tick outputs.
    pub(super) fn tick(&mut self) {
        flush_lines(&mut self.poison_log, "dead-lettering");
        flush_lines(&mut self.refused_log, "refused-output");
        self.sync_revocations();
        self.processor.on_tick(&mut self.outputs);
    }
}
