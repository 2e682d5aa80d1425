//! The at-least-once loop: consume, transform, produce, and store an input's offset once all
//! its outputs are acknowledged (see the module header of [`super`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer};
use tokio_util::sync::CancellationToken;

use super::core::Core;
use super::error::RuntimeError;
use super::pending::Pending;
use super::processor::Processor;
use super::rebalance::LoopConsumer;
use crate::client;

/// Identifies the input an output belongs to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Token {
    /// Rebalance epoch when the input was read.
    pub(super) epoch: u64,
    /// Input partition and offset; None for outputs of [`Processor::on_tick`].
    pub(super) input: Option<(i32, i64)>,
    /// Whether the output is a dead letter (counted apart).
    pub(super) dead_letter: bool,
}

/// A delivery report tagged with its token.
pub(super) struct Tracked {
    pub(super) token: Token,
    pub(super) delivery: DeliveryFuture,
}

impl Future for Tracked {
    type Output = (Token, <DeliveryFuture as Future>::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let token = self.token;
        self.delivery.poll_unpin(cx).map(|report| (token, report))
    }
}

/// The running loop's state. The consumer is kept apart: a message borrowed from it stays
/// alive while the loop's state changes.
pub(super) struct AtLeastOnceLoop<'a, P: Processor> {
    /// What both loops share.
    pub(super) core: Core<'a, P>,
    pub(super) producer: FutureProducer,
    pub(super) pending: Pending,
    pub(super) in_flight: FuturesUnordered<Tracked>,
}

impl<P: Processor> AtLeastOnceLoop<'_, P> {
    pub(super) async fn run(&mut self, consumer: &LoopConsumer, cancel: CancellationToken) -> Result<(), RuntimeError> {
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
    pub(super) async fn checkpoint(&mut self, consumer: &LoopConsumer, mode: CommitMode) -> Result<(), RuntimeError> {
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
    pub(super) async fn handle(
        &mut self,
        consumer: &LoopConsumer,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), RuntimeError> {
        self.pending.sync_epoch(self.core.rebalance.epoch());
        match self.core.take(message) {
            Some(dead) => self.send_outputs(consumer, Some((message.partition(), message.offset())), dead).await,
            None => Ok(()),
        }
    }

    /// Hands the buffered outputs to the producer, tracking them against `input`.
    pub(super) async fn send_outputs(
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
    pub(super) async fn delivered(
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
        self.producer = client::producer(&self.core.config.kafka)?;
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
pub(super) async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<DeliveryFuture, RuntimeError> {
    client::enqueue(producer, topic, key, payload, headers)
        .await
        .map_err(|source| RuntimeError::Produce { topic: topic.to_owned(), source })
}

pub(super) async fn resend(producer: &FutureProducer, message: &OwnedMessage) -> Result<DeliveryFuture, RuntimeError> {
    send(producer, message.topic(), message.key(), message.payload().unwrap_or_default(), message.headers().cloned())
        .await
}
