//! The at-least-once loop's producing side: outputs handed to the producer under a token, what
//! a refusal at enqueue becomes (a retry, a dead letter, a stop), and the producer itself.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer};

use super::at_least_once::{AtLeastOnceLoop, LoopProducer};
use super::dead_letter::{Source, dead_letter};
use super::deliveries::{Deliveries, DeliveryContext, Failure, Token, Undelivered, backoff, classify};
use super::error::RuntimeError;
use super::metrics::LoopMetrics;
use super::processor::{Output, Processor};
use super::settings::{OffsetCommits, RuntimeConfig};
use crate::client;

/// Makes the loop's producer.
pub(super) fn producer(
    config: &RuntimeConfig,
    deliveries: &Arc<Deliveries>,
    metrics: &LoopMetrics,
) -> Result<LoopProducer, RuntimeError> {
    let context = DeliveryContext {
        deliveries: deliveries.clone(),
        produced: metrics.produced.clone(),
        retried: metrics.retried.clone(),
        service: config.service.clone(),
    };
    Ok(config.clients.producer.create_with_context(context).map_err(client::KafkaSetupError::Config)?)
}

impl<P: Processor> AtLeastOnceLoop<'_, P> {
    /// Hands the buffered outputs to the producer, tracking them against `input`.
    pub(super) fn send_outputs(&mut self, input: Option<(i32, i64)>, dead_letter: bool) -> Result<(), RuntimeError> {
        // One lock for the input and all its outputs' tokens; the keys go to a reused buffer.
        let mut keys = std::mem::take(&mut self.output_keys);
        {
            let mut state = self.deliveries.lock();
            let ticket = match input.filter(|_| self.core.config.commits == OffsetCommits::Acknowledged) {
                Some((partition, offset)) => {
                    let count = self.core.outputs.len() as u32;
                    match state.tracker.push(partition, offset, count, Instant::now()) {
                        Ok(ticket) => Some(ticket),
                        // A re-read after a seek: the input is tracked already; never store past it.
                        Err(e) => {
                            tracing::debug!(service = %self.core.config.service, error = %e, "input already tracked");
                            None
                        }
                    }
                }
                None => None,
            };
            keys.extend(self.core.outputs.iter().map(|output| {
                let bytes = output.payload.len() + output.key.as_ref().map_or(0, Vec::len);
                let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
                state.tokens.insert(Token { input: ticket, dead_letter, attempts: 0, bytes })
            }));
        }
        // Drained and put back: the buffers keep their capacity for the next input.
        let mut outputs = std::mem::take(&mut self.core.outputs);
        let mut result = Ok(());
        for (output, key) in outputs.drain(..).zip(keys.drain(..)) {
            if result.is_ok() {
                result = self.send_record(key, &output.topic, output.key.as_deref(), &output.payload, output.headers);
            }
        }
        self.core.outputs = outputs;
        self.output_keys = keys;
        result
    }

    /// Enqueues one record under token `key`. A full queue or a retriable refusal becomes a
    /// retry; a refused record a dead letter; a refused topic stops the loop.
    pub(super) fn send_record(
        &mut self,
        key: usize,
        topic: &str,
        record_key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), RuntimeError> {
        let mut record = BaseRecord::with_opaque_to(topic, key).payload(payload);
        if let Some(k) = record_key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let Err((error, record)) = self.producer.send(record) else { return Ok(()) };
        let mut state = self.deliveries.lock();
        let Some(token) = state.tokens.get_mut(key) else { return Ok(()) };
        // A full local queue is retriable but no failed attempt: it takes no backoff step.
        let failure = classify(&error);
        let queue_full = matches!(error, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
        let dead_letter = token.dead_letter;
        if failure == Failure::Retriable && !queue_full {
            token.attempts += 1;
        }
        let undelivered = Undelivered {
            key,
            topic: topic.to_owned(),
            record_key: record_key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            headers: record.headers,
            error: error.to_string(),
            due: Instant::now() + backoff(token.attempts),
        };
        match failure {
            Failure::Retriable => state.retries.push_back(undelivered),
            Failure::RecordRefused if !dead_letter => {
                drop(state);
                return self.dead_letter_refused(undelivered);
            }
            Failure::RecordRefused | Failure::TopicRefused => {
                let reason = format!("topic `{topic}` refused a record: {error}");
                drop(state);
                self.core.config.readiness.fail("outputs", reason.clone());
                return Err(RuntimeError::OutputRefused { service: self.core.config.service.clone(), reason });
            }
        }
        Ok(())
    }

    /// An output the broker refused for good: its dead letter (the output's bytes, cut to fit,
    /// naming the input and the reason) takes its place under the same token.
    pub(super) fn dead_letter_refused(&mut self, record: Undelivered) -> Result<(), RuntimeError> {
        let input = {
            let mut state = self.deliveries.lock();
            let Some(token) = state.tokens.get_mut(record.key) else { return Ok(()) };
            token.dead_letter = true;
            token.attempts = 0;
            token.input
        };
        let (partition, offset) = input.map_or((-1, -1), |t| (t.partition, t.offset));
        if crate::telemetry::admit_line(&mut self.core.refused_log, "refused-output") {
            tracing::warn!(
                service = %self.core.config.service, topic = %record.topic, partition, offset, error = %record.error,
                "the broker refused an output for good; dead-lettering it"
            );
        }
        self.core.stats.dead_lettered += 1;
        self.core.metrics.dead_lettered.increment(1);
        let source = Source {
            topic: &self.core.config.input_topic,
            partition,
            offset,
            key: record.record_key.as_deref(),
            payload: &record.payload,
            headers: record.headers.as_ref(),
            output_topic: Some(&record.topic),
        };
        let letter: Output =
            dead_letter(&self.core.dlq_topic, &self.core.config.service, source, &record.error, self.max_message_bytes);
        self.send_record(record.key, &letter.topic, letter.key.as_deref(), &letter.payload, letter.headers)
    }

    /// A fatal producer error (the broker lost an idempotent producer's sequence state, say,
    /// after its restart) leaves the producer useless: replace it. Dropping the old one purges
    /// what it had not delivered; those reports come back as retries for the new one.
    pub(super) fn renew_if_fatal(&mut self) -> Result<(), RuntimeError> {
        let Some((code, reason)) = self.producer.client().fatal_error() else { return Ok(()) };
        tracing::warn!(
            service = %self.core.config.service, %code, reason,
            "the producer hit a fatal error; replacing it (undelivered records are sent again)"
        );
        self.producer = producer(self.core.config, &self.deliveries, &self.core.metrics)?;
        Ok(())
    }
}
