//! Delivery reports, and what the at-least-once loop keeps about its in-flight inputs.
//!
//! The producer's own thread calls [`DeliveryContext::delivery`] for every record. An
//! acknowledgement counts against its input in the [`OffsetTracker`]; a failure is classified:
//! a retriable one (broker gone, time-out, a purged queue) goes to the retry queue with a
//! backoff, a refusal of the record itself (too large, invalid) to the refused list (the loop
//! dead-letters it), and a refusal of the topic (authorization, topic gone) stops the service.
//! Nothing here blocks or sleeps: the loop resends due retries between its other work, so one
//! failing record never holds up the consumer or other partitions.
//!
//! Shared state sits behind one mutex (the producer thread, the loop and the rebalance
//! callback all touch it briefly); `changed` wakes a rebalance drain, `wake` the async loop.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pipeline_core::lock;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{DeliveryResult, ProducerContext};

use super::offset_tracker::{OffsetTracker, Ticket};

/// How a failed delivery is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The broker may take it later: send it again after a backoff.
    Retriable,
    /// The broker will never take this record (too large, invalid): dead-letter it.
    RecordRefused,
    /// The broker will take nothing for this topic (authorization, the topic is gone): stop.
    TopicRefused,
}

/// Classifies a produce error (at enqueue or in a delivery report).
pub(super) fn classify(error: &KafkaError) -> Failure {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::InvalidMessage | C::InvalidRecord | C::PolicyViolation) => {
            Failure::RecordRefused
        }
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::UnknownTopic
            | C::UnknownTopicOrPartition
            | C::InvalidTopic,
        ) => Failure::TopicRefused,
        _ => Failure::Retriable,
    }
}

/// Backoff before the `attempt`-th resend of a record: 100 ms doubling to 5 s.
pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

/// What a delivery report needs to find its input.
#[derive(Debug, Clone, Copy)]
pub(super) struct Token {
    /// The input it belongs to; None for outputs of a tick or of shutdown.
    pub(super) input: Option<Ticket>,
    /// A dead letter (counted apart; its refusal stops the service).
    pub(super) dead_letter: bool,
    /// Failed deliveries so far, for the backoff.
    pub(super) attempts: u32,
    /// The record's key and value bytes, counted against `--max-in-flight-bytes`.
    pub(super) bytes: u32,
}

/// A record to send again (or to dead-letter), owned: the report's message is borrowed.
#[derive(Debug)]
pub(super) struct Undelivered {
    /// Its token's key in [`DeliveryState::tokens`].
    pub(super) key: usize,
    /// Destination topic.
    pub(super) topic: String,
    /// Record key.
    pub(super) record_key: Option<Vec<u8>>,
    /// Record value.
    pub(super) payload: Vec<u8>,
    /// Record headers.
    pub(super) headers: Option<OwnedHeaders>,
    /// Why it failed (logged, and the dead letter's reason).
    pub(super) error: String,
    /// Not to be sent before this.
    pub(super) due: Instant,
}

/// Tokens of records handed to the producer, addressed by the `usize` librdkafka carries as the
/// record's opaque: no allocation per record once warm.
#[derive(Debug, Default)]
pub(super) struct Tokens {
    /// Slots; None is free.
    slots: Vec<Option<Token>>,
    /// Free slots.
    free: Vec<usize>,
    /// Sum of the stored tokens' `bytes`.
    bytes: usize,
}

impl Tokens {
    /// Stores `token`, returning its key.
    pub(super) fn insert(&mut self, token: Token) -> usize {
        self.bytes += token.bytes as usize;
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(token);
                key
            }
            None => {
                self.slots.push(Some(token));
                self.slots.len() - 1
            }
        }
    }

    /// The token at `key`.
    pub(super) fn get_mut(&mut self, key: usize) -> Option<&mut Token> {
        self.slots.get_mut(key).and_then(Option::as_mut)
    }

    /// Takes the token at `key` out.
    pub(super) fn remove(&mut self, key: usize) -> Option<Token> {
        let token = self.slots.get_mut(key)?.take();
        if let Some(t) = &token {
            self.free.push(key);
            self.bytes -= t.bytes as usize;
        }
        token
    }

    /// The input partition of the record at `key`.
    pub(super) fn partition_of(&self, key: usize) -> Option<i32> {
        self.slots.get(key).copied().flatten().and_then(|t| t.input).map(|t| t.partition)
    }

    /// Records in flight (handed to the producer or waiting for a resend).
    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Key and value bytes of the records in flight.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The in-flight state the producer thread, the loop and the rebalance callback share.
#[derive(Debug, Default)]
pub(super) struct DeliveryState {
    /// Inputs awaiting their outputs' acknowledgements, per partition.
    pub(super) tracker: OffsetTracker<Instant>,
    /// The token of every record not yet acknowledged.
    pub(super) tokens: Tokens,
    /// Records whose delivery failed and that will be sent again.
    pub(super) retries: VecDeque<Undelivered>,
    /// Records the broker refused for good: the loop dead-letters them.
    pub(super) refused: Vec<Undelivered>,
    /// A refusal that stops the service (a topic refused, or a dead letter refused).
    pub(super) fatal: Option<String>,
    /// Outputs acknowledged (dead letters not counted).
    pub(super) produced: u64,
    /// Failed deliveries (each is retried or dead-lettered).
    pub(super) failures: u64,
    /// The last failure's reason, for the loop's summary lines.
    pub(super) last_error: Option<String>,
}

impl DeliveryState {
    /// Whether the record under token `key` still counts: it has no input, or its input belongs
    /// to a partition this instance still owns (in the same assignment).
    fn is_current(&self, key: usize) -> bool {
        self.tokens
            .slots
            .get(key)
            .copied()
            .flatten()
            .is_some_and(|t| t.input.is_none_or(|i| self.tracker.is_current(i)))
    }

    /// Forgets the retries and refusals of inputs given up in a revocation: the partitions' next
    /// owner reads those inputs again, so sending their outputs would only add duplicates.
    pub(super) fn forget_abandoned(&mut self) -> usize {
        let stale: Vec<usize> =
            self.retries.iter().chain(&self.refused).map(|r| r.key).filter(|&key| !self.is_current(key)).collect();
        if stale.is_empty() {
            return 0;
        }
        self.retries.retain(|r| !stale.contains(&r.key));
        self.refused.retain(|r| !stale.contains(&r.key));
        for &key in &stale {
            self.tokens.remove(key);
        }
        stale.len()
    }
}

/// [`DeliveryState`] with the signals around it.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    /// The state.
    state: Mutex<DeliveryState>,
    /// Signalled on every report: a rebalance drain waits on it (on the consumer's thread).
    pub(super) changed: Condvar,
    /// Signalled on every report: the async loop waits on it when it may not read.
    pub(super) wake: tokio::sync::Notify,
}

impl Deliveries {
    /// Locks the state.
    pub(super) fn lock(&self) -> MutexGuard<'_, DeliveryState> {
        lock(&self.state)
    }

    /// Blocks (on the consumer's thread, inside a revocation) until every in-flight input of
    /// `partitions` is acknowledged or `deadline` passes, and returns the offsets to store for
    /// them. Records waiting for a resend are not waited for: nobody sends them meanwhile, and
    /// the partitions' next owner reads their inputs again. Nor is anything waited for once
    /// `stopping` is cancelled: the stop has its own drain, under its own deadline. Returns also
    /// how many inputs are abandoned that way.
    pub(super) fn drain(
        &self,
        partitions: &[i32],
        deadline: Instant,
        stopping: &tokio_util::sync::CancellationToken,
    ) -> (Vec<(i32, i64)>, usize) {
        let mut stores = Vec::new();
        let mut state = self.lock();
        loop {
            for &p in partitions {
                if let Some(next) = state.tracker.advance(p, |_| {}) {
                    stores.retain(|(q, _)| *q != p);
                    stores.push((p, next));
                }
            }
            let in_flight: usize = partitions.iter().map(|p| state.tracker.in_flight_on(*p)).sum();
            let waiting_resend = state
                .retries
                .iter()
                .filter(|r| state.tokens.partition_of(r.key).is_some_and(|p| partitions.contains(&p)))
                .count();
            let now = Instant::now();
            if in_flight == 0 || waiting_resend > 0 || now >= deadline || stopping.is_cancelled() {
                return (stores, in_flight);
            }
            state = self.wait(state, (deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Waits up to `timeout` for a report (spurious wake-ups are fine: callers re-check).
    pub(super) fn wait<'a>(
        &self,
        guard: MutexGuard<'a, DeliveryState>,
        timeout: Duration,
    ) -> MutexGuard<'a, DeliveryState> {
        match self.changed.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}

/// The loop's producer context: delivery reports land in [`Deliveries`].
#[derive(Debug)]
pub(super) struct DeliveryContext {
    /// Shared with the loop and the consumer's rebalance callback.
    pub(super) deliveries: Arc<Deliveries>,
    /// `pipeline_records_produced_total`.
    pub(super) produced: metrics::Counter,
    /// `pipeline_produce_retries_total`.
    pub(super) retried: metrics::Counter,
    /// Service name, the label of the producer's statistics.
    pub(super) service: String,
}

impl ClientContext for DeliveryContext {
    /// The producer's requests and broker-thread wake-ups (statistics are on with metrics).
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::observe::record_client_statistics(&self.service, "producer", &statistics);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, key: usize) {
        let mut state = self.deliveries.lock();
        match result {
            Ok(_) => {
                if let Some(token) = state.tokens.remove(key) {
                    if let Some(ticket) = token.input {
                        state.tracker.ack(ticket);
                    }
                    if !token.dead_letter {
                        state.produced += 1;
                        self.produced.increment(1);
                    }
                }
            }
            Err((error, _)) if !state.is_current(key) => {
                // Its input was given up in a revocation: the next owner produces it again.
                state.tokens.remove(key);
                state.last_error = Some(error.to_string());
            }
            Err((error, message)) => {
                let Some(token) = state.tokens.get_mut(key) else { return };
                token.attempts += 1;
                let (attempts, dead_letter) = (token.attempts, token.dead_letter);
                state.failures += 1;
                state.last_error = Some(error.to_string());
                let undelivered = Undelivered {
                    key,
                    topic: message.topic().to_owned(),
                    record_key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers: message.headers().map(|h| h.detach()),
                    error: error.to_string(),
                    due: Instant::now() + backoff(attempts),
                };
                match classify(error) {
                    Failure::Retriable => {
                        self.retried.increment(1);
                        state.retries.push_back(undelivered);
                    }
                    Failure::RecordRefused if !dead_letter => state.refused.push(undelivered),
                    Failure::RecordRefused | Failure::TopicRefused => {
                        let what = if dead_letter { "a dead letter" } else { "the records" };
                        state.fatal.get_or_insert(format!("topic `{}` refused {what}: {error}", message.topic()));
                    }
                }
            }
        }
        drop(state);
        self.deliveries.changed.notify_all();
        self.deliveries.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_what_a_retry_could_change() {
        use RDKafkaErrorCode as C;
        let produce = |c| KafkaError::MessageProduction(c);
        assert_eq!(classify(&produce(C::MessageTimedOut)), Failure::Retriable);
        assert_eq!(classify(&produce(C::BrokerTransportFailure)), Failure::Retriable);
        assert_eq!(classify(&produce(C::PurgeQueue)), Failure::Retriable);
        assert_eq!(classify(&produce(C::NotEnoughReplicas)), Failure::Retriable);
        assert_eq!(classify(&produce(C::MessageSizeTooLarge)), Failure::RecordRefused);
        assert_eq!(classify(&produce(C::InvalidRecord)), Failure::RecordRefused);
        assert_eq!(classify(&produce(C::TopicAuthorizationFailed)), Failure::TopicRefused);
        assert_eq!(classify(&produce(C::UnknownTopicOrPartition)), Failure::TopicRefused);
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(6), Duration::from_secs(5));
        assert_eq!(backoff(40), Duration::from_secs(5));
    }

    #[test]
    fn retries_of_revoked_partitions_are_forgotten() {
        let mut s = DeliveryState::default();
        let kept = s.tracker.push(0, 1, 1, Instant::now()).unwrap();
        let lost = s.tracker.push(1, 1, 1, Instant::now()).unwrap();
        for ticket in [kept, lost] {
            let key = s.tokens.insert(Token { input: Some(ticket), dead_letter: false, attempts: 1, bytes: 0 });
            s.retries.push_back(Undelivered {
                key,
                topic: "out".into(),
                record_key: None,
                payload: Vec::new(),
                headers: None,
                error: "timed out".into(),
                due: Instant::now(),
            });
        }
        s.tracker.revoke(1);
        assert_eq!((s.forget_abandoned(), s.retries.len(), s.tokens.len()), (1, 1, 1));
        assert_eq!(s.tokens.partition_of(s.retries[0].key), Some(0));
        assert_eq!(s.forget_abandoned(), 0);
    }

    #[test]
    fn token_keys_are_reused() {
        let mut t = Tokens::default();
        let token = Token { input: None, dead_letter: false, attempts: 0, bytes: 100 };
        let (a, b) = (t.insert(token), t.insert(token));
        assert_eq!((a, b, t.len(), t.bytes()), (0, 1, 2, 200));
        assert!(t.remove(a).is_some() && t.remove(a).is_none());
        assert_eq!(t.bytes(), 100);
        assert_eq!((t.insert(token), t.len(), t.bytes()), (0, 2, 200));
    }
}
