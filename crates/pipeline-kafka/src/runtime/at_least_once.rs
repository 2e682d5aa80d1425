//! The at-least-once loop: consume, transform, produce, and store an input's offset once all
//! its outputs are acknowledged (the guarantee and its limits are in [`super`]'s header).
//!
//! One task, never blocked by a failure: delivery reports land in [`Deliveries`] on the
//! producer's thread; every [`HOUSEKEEPING`] the loop stores the offsets acknowledged so far
//! (one batched store per round), resends the records whose backoff has passed, dead-letters
//! what the broker refused for good, and stops on a refusal no dead letter can fix. Its timers
//! come before the consumer in the `select!`, so a backlog never starves them. Reading pauses
//! while `max_in_flight` inputs (or `max_in_flight_bytes` of outputs) await acknowledgement,
//! or while a checkpoint waits for every output so far (only for its snapshot: the processor's
//! write to its store, and a restore of newly assigned partitions, run beside the polling, so a
//! stalled store never stops it and never costs the group membership).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::ThreadedProducer;
use tokio_util::sync::CancellationToken;

use pipeline_core::lock;

use super::checkpoint_commits::poll_detached;
use super::close;
use super::deliveries::{Deliveries, DeliveryContext, DeliveryState, Undelivered};
use super::error::RuntimeError;
use super::failure_report::{FailureLine, FailureReport};
use super::hand_off::HandOffs;
use super::loop_core::{Core, Taken};
use super::metrics::RunStats;
use super::processor::{CheckpointWrite, Processor};
use super::rebalance::{LoopConsumer, Rebalancer, RevokeWork, store_offsets};
use super::settings::{OffsetCommits, RuntimeConfig};
use super::subscribe::subscribe;

/// How often offsets are stored and due retries resent.
pub(super) const HOUSEKEEPING: Duration = Duration::from_millis(50);

/// The loop's producer: delivery reports go to [`Deliveries`] from librdkafka's own thread.
pub(super) type LoopProducer = ThreadedProducer<DeliveryContext>;

/// The running loop's state.
pub(super) struct AtLeastOnceLoop<'a, P: Processor> {
    /// What both loops share.
    pub(super) core: Core<'a, P>,
    /// Replaced when it hits a fatal error (its undelivered records come back as retries).
    pub(super) producer: LoopProducer,
    /// In-flight inputs and delivery outcomes, shared with the producer and the consumer.
    pub(super) deliveries: Arc<Deliveries>,
    /// A checkpoint is due: reading pauses until every output so far is acknowledged.
    pub(super) checkpoint_due: bool,
    /// What the delivery-failure log lines last said.
    pub(super) failure_report: FailureReport,
    /// The largest record the producer accepts (`message.max.bytes`), for dead letters.
    pub(super) max_message_bytes: usize,
    /// Token keys of the outputs being sent, reused from input to input.
    pub(super) output_keys: Vec<usize>,
    /// Shared with the consumer context; cancelled when the loop starts stopping, so a
    /// revocation from then on (the close's own) waits for nothing.
    pub(super) stopping: CancellationToken,
    /// Revocations the consumer context left to the loop, to hand their state over first
    /// (checkpointed commits only; never one otherwise).
    pub(super) hand_offs: Arc<HandOffs>,
}

/// Runs `processor` at-least-once until `cancel` fires, then drains within `drain_timeout`,
/// commits, and closes the consumer and then the producer.
pub(super) async fn run<P: Processor>(
    config: &RuntimeConfig,
    processor: P,
    cancel: CancellationToken,
) -> Result<RunStats, RuntimeError> {
    let rebalance = Rebalancer::new();
    // Cancelled with `cancel`, or by the loop itself when it stops on an error.
    let stopping = cancel.child_token();
    let deliveries = Arc::new(Deliveries::default());
    let hand_offs = Arc::new(HandOffs::default());
    let revoke = match config.commits {
        OffsetCommits::Acknowledged => RevokeWork::Drain(deliveries.clone()),
        OffsetCommits::Checkpointed => RevokeWork::HandOff(deliveries.clone(), hand_offs.clone()),
    };
    let consumer = Arc::new(subscribe(config, &rebalance, &stopping, revoke)?);
    let pending = rebalance.assignment.clone();
    let core = Core::new(config, processor, rebalance);
    let producer = super::outputs::producer(config, &deliveries, &core.metrics)?;
    let mut state = AtLeastOnceLoop {
        core,
        producer,
        deliveries,
        checkpoint_due: false,
        failure_report: FailureReport::new(Instant::now()),
        max_message_bytes: config.clients.max_message_bytes,
        output_keys: Vec::new(),
        stopping,
        hand_offs,
    };
    let outcome = state.run_until_stopped(&consumer, cancel).await;
    let stats = state.stats();
    let assignment_pending = lock(&pending).is_some();
    close::close(consumer, &config.service, assignment_pending).await;
    // The producer's drop purges and flushes (up to 500 ms) and joins librdkafka's threads:
    // off the runtime too, bounded.
    let AtLeastOnceLoop { producer, core, .. } = state;
    drop(core);
    close::off_runtime("producer-close", close::CLOSE_BUDGET, move || drop(producer)).await;
    outcome.map(|()| stats)
}

impl<P: Processor> AtLeastOnceLoop<'_, P> {
    /// Polls, produces and commits until `cancel` fires (or an error stops it), then drains.
    async fn run_until_stopped(
        &mut self,
        consumer: &Arc<LoopConsumer>,
        cancel: CancellationToken,
    ) -> Result<(), RuntimeError> {
        let config = self.core.config;
        let mut tick = tokio::time::interval(config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = tokio::time::interval(Duration::from_secs(30));
        report.tick().await;
        let every = config.checkpoint_interval;
        let mut checkpoint = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checkpoint.tick().await;
        let assigned = self.core.rebalance.assigned.clone();
        let deliveries = self.deliveries.clone();
        let hand_offs = self.hand_offs.clone();
        // The checkpoint being written (one at a time), polled beside the consumer.
        let mut writing: Option<CheckpointWrite> = None;
        let outcome = loop {
            let can_read = !self.checkpoint_due && {
                let state = self.deliveries.lock();
                state.tracker.in_flight() < config.max_in_flight && state.tokens.bytes() < config.max_in_flight_bytes
            };
            // Biased, and the consumer last: under any backlog the timers still fire on time.
            let step = tokio::select! {
                biased;
                _ = cancel.cancelled() => break Ok(()),
                _ = assigned.notified() => {
                    let assigned = self.core.begin_assignment(consumer);
                    assigned.map(|parts| self.track(parts))
                }
                _ = hand_offs.wake.notified() => self.hand_off(consumer, &mut writing).await,
                finished = self.core.restores.next(), if self.core.restores.is_running() => {
                    self.core.restore_finished(consumer, finished).map(|parts| self.track(parts))
                }
                written = poll_detached(&mut writing), if writing.is_some() => {
                    writing = None;
                    self.checkpoint_written(consumer, written, CommitMode::Async)
                }
                _ = housekeeping.tick() => {
                    // The heartbeat behind /healthz: this timer fires with the broker gone too.
                    self.core.beat();
                    self.housekeeping(consumer)
                }
                _ = tick.tick() => {
                    self.core.tick();
                    self.send_outputs(None, false)
                }
                _ = checkpoint.tick(), if every.is_some() => {
                    // One write at a time: a store slower than the interval skips a beat.
                    self.checkpoint_due = writing.is_none();
                    Ok(())
                }
                _ = report.tick() => {
                    tracing::info!(service = %config.service, stats = ?self.stats(), "progress");
                    Ok(())
                }
                message = consumer.recv(), if can_read => match message {
                    Ok(message) => self.handle(&message),
                    Err(e) => self.consumer_error(e),
                },
                _ = deliveries.wake.notified(), if !can_read => Ok(()),
            };
            if let Err(e) = step {
                break Err(e);
            }
            if self.checkpoint_due && self.deliveries.lock().tokens.len() == 0 {
                // Every output so far is acknowledged: the snapshot is taken now, written beside
                // the polling.
                self.checkpoint_due = false;
                self.core.sync_revocations();
                writing = self.core.processor.checkpoint();
            }
        };
        let stopped = self.shutdown(consumer, writing).await;
        outcome.and(stopped)
    }

    /// A new generation per newly assigned partition: reports of an earlier ownership are stale.
    fn track(&self, parts: Vec<i32>) {
        let mut state = self.deliveries.lock();
        parts.into_iter().for_each(|p| state.tracker.assign(p));
    }

    /// Stores what is acknowledged, resends due retries, dead-letters refused records, and
    /// stops on a refusal nothing can fix (after saying so on `/readyz`).
    fn housekeeping(&mut self, consumer: &LoopConsumer) -> Result<(), RuntimeError> {
        let now = Instant::now();
        let deliveries = self.deliveries.clone();
        let mut state = deliveries.lock();
        if let Some(reason) = state.fatal.clone() {
            drop(state);
            self.core.config.readiness.fail("outputs", reason.clone());
            return Err(RuntimeError::OutputRefused { service: self.core.config.service.clone(), reason });
        }
        state.forget_abandoned();
        let mut stores = Vec::new();
        let latency = &self.core.metrics.latency;
        for p in state.tracker.partitions().collect::<Vec<_>>() {
            if let Some(next) = state.tracker.advance(p, |read_at| latency.record(read_at.elapsed())) {
                stores.push((p, next));
            }
        }
        let (due, later): (VecDeque<Undelivered>, VecDeque<Undelivered>) =
            std::mem::take(&mut state.retries).into_iter().partition(|r| r.due <= now);
        state.retries = later;
        let refused = std::mem::take(&mut state.refused);
        self.core.metrics.inputs_in_flight.set(state.tracker.in_flight() as f64);
        self.core.metrics.outputs_in_flight.set(state.tokens.len() as f64);
        self.report_failures(&state, now);
        drop(state);
        store_offsets(consumer, &self.core.config.input_topic, &stores);
        for retry in due {
            self.renew_if_fatal()?;
            self.send_record(retry.key, &retry.topic, retry.record_key.as_deref(), &retry.payload, retry.headers)?;
        }
        for record in refused {
            self.dead_letter_refused(record)?;
        }
        Ok(())
    }

    /// One summary line while deliveries fail (not one per record), and one when they recover.
    fn report_failures(&mut self, state: &DeliveryState, now: Instant) {
        let service = &self.core.config.service;
        match self.failure_report.observe(state.failures, state.produced, state.retries.is_empty(), now) {
            Some(FailureLine::Failing { failures }) => tracing::warn!(
                %service, failures, waiting_resend = state.retries.len(),
                last_error = state.last_error.as_deref().unwrap_or(""),
                "deliveries failing; resending with backoff (offsets stay behind the undelivered records)"
            ),
            Some(FailureLine::Recovered) => tracing::info!(%service, "deliveries recovered"),
            None => {}
        }
    }

    /// Decodes one input, transforms it and sends its outputs.
    fn handle(&mut self, message: &BorrowedMessage<'_>) -> Result<(), RuntimeError> {
        match self.core.take(message, self.max_message_bytes)? {
            Taken::Skipped => Ok(()),
            taken => self.send_outputs(Some((message.partition(), message.offset())), taken == Taken::DeadLettered),
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

    /// What the loop did so far.
    fn stats(&self) -> RunStats {
        let state = self.deliveries.lock();
        RunStats { produced: state.produced, retried: state.failures, ..self.core.stats.clone() }
    }

    /// One drain, bounded by `drain_timeout` whatever the broker does: the processor's last
    /// outputs, then deliveries for three quarters of it (resending while time remains), the
    /// offsets of what is acknowledged, the commit and the processor's checkpoint (if nothing is
    /// left in flight) in the rest (at least [`LAST_STEP`] each). Undelivered records are
    /// dropped with the producer: their inputs are read again on the next start.
    async fn shutdown(
        &mut self,
        consumer: &Arc<LoopConsumer>,
        writing: Option<CheckpointWrite>,
    ) -> Result<(), RuntimeError> {
        self.stopping.cancel();
        let config = self.core.config;
        let started = Instant::now();
        let (deliveries_until, until) = (started + config.drain_timeout * 3 / 4, started + config.drain_timeout);
        let remaining = || until.saturating_duration_since(Instant::now()).max(LAST_STEP);
        self.core.processor.on_shutdown(&mut self.core.outputs);
        let mut outcome = self.send_outputs(None, false);
        loop {
            if outcome.is_ok() {
                outcome = self.housekeeping(consumer);
            }
            let in_flight = self.deliveries.lock().tokens.len();
            let now = Instant::now();
            if in_flight == 0 {
                break;
            }
            if now >= deliveries_until || outcome.is_err() {
                let abandoned = self.deliveries.lock().tracker.in_flight() as u64;
                metrics::counter!("pipeline_inputs_abandoned_total", "service" => config.service.clone())
                    .increment(abandoned);
                tracing::warn!(
                    service = %config.service, in_flight,
                    "drain deadline passed with outputs unacknowledged; their inputs will be read again"
                );
                break;
            }
            let nap = (deliveries_until - now).min(HOUSEKEEPING);
            tokio::select! {
                _ = self.deliveries.wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
        if config.commits == OffsetCommits::Acknowledged {
            // A synchronous commit waits for the group coordinator: off the runtime, bounded.
            let committer = consumer.clone();
            let commit = close::off_runtime("final-commit", remaining(), move || {
                committer.commit_consumer_state(CommitMode::Sync)
            });
            match commit.await {
                Some(Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
                Some(Err(e)) => tracing::warn!(service = %config.service, error = %e, "final commit failed"),
                None => tracing::warn!(
                    service = %config.service,
                    "final commit unanswered within the drain deadline; the next start reads from the last commit"
                ),
            }
        }
        if self.deliveries.lock().tokens.len() == 0 {
            outcome = outcome.and(self.final_checkpoint(consumer, writing, remaining()).await);
        }
        self.give_up_waiting(consumer);
        // No unsubscribe here: it waits for librdkafka's answer; the close leaves the group.
        tracing::info!(service = %config.service, stats = ?self.stats(), "stopped");
        outcome
    }
}

/// The least time the final commit and the final checkpoint each get when the drain has used
/// the whole deadline: a stop takes at most `drain_timeout` plus twice this, plus the close.
const LAST_STEP: Duration = Duration::from_millis(250);
