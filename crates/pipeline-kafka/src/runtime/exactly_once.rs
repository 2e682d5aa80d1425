//! The exactly-once loop: consume (read committed) → transform → produce and commit the input
//! offsets in one Kafka transaction.
//!
//! # Delivery guarantee: exactly-once for read-committed readers
//!
//! Inputs are read with `isolation.level=read_committed`. A transaction is opened at the first
//! input after the previous commit and collects every output of every input (results and dead
//! letters); after `transaction_interval` (or `max_in_flight` inputs) its outputs are produced,
//! the inputs' next offsets are added with `send_offsets_to_transaction` (carrying the
//! consumer's group metadata, so a member of an older generation is fenced by the group
//! coordinator) and the transaction commits: outputs and offsets become visible together or
//! not at all.
//!
//! - An abortable error (a failed delivery, a timeout after retries) aborts the transaction and
//!   rewinds the consumer to the first input of the transaction on every partition; the
//!   inputs are processed again into a new transaction.
//! - A revocation commits the open transaction before the partitions are given up (from the
//!   rebalance callback), so a rebalance neither loses nor repeats anything.
//! - A crash leaves the open transaction to be aborted — by the broker after
//!   `transaction.timeout.ms`, or at once when an instance with the same transactional id
//!   starts (`init_transactions` fences the zombie). Its inputs are read again from the last
//!   committed offsets.
//! - A fenced producer (another live instance has this transactional id) is fatal: the
//!   service exits with one line naming the id.
//!
//! Limits: exactly-once holds for readers with `read_committed`; a `read_uncommitted` reader
//! also sees aborted records. It needs a broker with transactions (Apache Kafka). The local
//! transactional broker (Tansu, memory storage) lists no aborted transactions in its fetch
//! responses, so there read-committed readers do see aborted records, and a fenced producer
//! sees timeouts rather than a fencing error (`docs/transactions.md`). Because a transaction's
//! records are produced only at its commit, a crash shows duplicates there only when it falls
//! inside the commit itself.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;

use super::close::{self, blocking};
use super::loop_core::Taken;
use super::rebalance::RevokeWork;
use super::subscribe::subscribe;
use super::transactions::{CALL_TIMEOUT, Outcome, Transactions};
use super::{Core, LoopConsumer, Processor, Rebalancer, RunStats, RuntimeConfig, RuntimeError};
use pipeline_core::lock;

/// The transactional loop's state.
pub(super) struct TxnLoop<'a, P: Processor> {
    /// What both loops share.
    pub(super) core: Core<'a, P>,
    /// The transactional producer and the open transaction.
    pub(super) txn: Arc<Transactions>,
}

/// How long the loop's own commits may take (the final one, at a stop, gets `drain_timeout`).
const COMMIT_BUDGET: Duration = Duration::from_secs(90);

/// Runs `processor` exactly-once until `cancel` fires, then commits the open transaction
/// within `drain_timeout` and closes the consumer.
pub(super) async fn run<P: Processor>(
    config: &RuntimeConfig,
    processor: P,
    cancel: CancellationToken,
) -> Result<RunStats, RuntimeError> {
    let txn = tokio::select! {
        // init_transactions waits for the broker (up to a minute); a stop request does not.
        _ = cancel.cancelled() => return Ok(RunStats::default()),
        txn = Transactions::start(config) => txn?,
    };
    let rebalance = Rebalancer::new();
    // Cancelled when the loop ends, whatever ended it.
    let stopping = cancel.child_token();
    let consumer = Arc::new(subscribe(config, &rebalance, &stopping, RevokeWork::CommitTransaction(txn.clone()))?);
    let pending = rebalance.assignment.clone();
    let mut state = TxnLoop { core: Core::new(config, processor, rebalance), txn };
    let result = state.run(&consumer, cancel).await;
    stopping.cancel();
    tracing::info!(service = %config.service, stats = ?state.core.stats, "stopped");
    let assignment_pending = lock(&pending).is_some();
    close::close(consumer, &config.service, assignment_pending).await;
    result.map(|()| state.core.stats)
}

impl<P: Processor> TxnLoop<'_, P> {
    pub(super) async fn run(&mut self, consumer: &LoopConsumer, cancel: CancellationToken) -> Result<(), RuntimeError> {
        let mut tick = tokio::time::interval(self.core.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = tokio::time::interval(Duration::from_secs(30));
        report.tick().await;
        let assigned = self.core.rebalance.assigned.clone();
        // The heartbeat behind /healthz (the tick may be an hour: the enricher's).
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due =
                self.txn.since().map(|t| tokio::time::Instant::from_std(t + self.core.config.transaction_interval));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                // Before the consumer: a backlog never starves it.
                _ = heartbeat.tick() => self.core.beat(),
                _ = assigned.notified() => drop(self.core.begin_assignment(consumer)?),
                finished = self.core.restores.next(), if self.core.restores.is_running() => {
                    drop(self.core.restore_finished(consumer, finished)?);
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    self.commit(consumer).await?;
                }
                message = consumer.recv() => match message {
                    Ok(message) => self.handle(consumer, &message).await?,
                    Err(e) => tracing::warn!(service = %self.core.config.service, error = %e, "consumer error (retrying)"),
                },
                _ = tick.tick() => {
                    self.core.tick();
                    self.send_outputs()?;
                }
                _ = report.tick() => tracing::info!(service = %self.core.config.service, stats = ?self.core.stats, "progress"),
            }
        }
        self.core.processor.on_shutdown(&mut self.core.outputs);
        self.send_outputs()?;
        self.commit_within(consumer, self.core.config.drain_timeout).await
    }

    pub(super) async fn handle(
        &mut self,
        consumer: &LoopConsumer,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), RuntimeError> {
        if self.core.take(message, self.core.config.clients.max_message_bytes)? == Taken::Skipped {
            return Ok(());
        }
        // Every input belongs to a transaction, with or without outputs: its offset commits there.
        self.txn.begin()?;
        self.txn.read(message.partition(), message.offset(), &mut self.core.outputs);
        if lock(&self.txn.state).inputs >= self.core.config.max_in_flight as u64 {
            self.commit(consumer).await?;
        }
        Ok(())
    }

    /// Adds the buffered outputs (of a tick) to the open transaction, opening one if needed.
    pub(super) fn send_outputs(&mut self) -> Result<(), RuntimeError> {
        if !self.core.outputs.is_empty() {
            self.txn.begin()?;
            self.txn.add(&mut self.core.outputs);
        }
        Ok(())
    }

    /// Commits the open transaction; after an abort, rewinds the consumer to its first inputs.
    pub(super) async fn commit(&mut self, consumer: &LoopConsumer) -> Result<(), RuntimeError> {
        self.commit_within(consumer, COMMIT_BUDGET).await
    }

    /// [`TxnLoop::commit`] within `budget`.
    async fn commit_within(&mut self, consumer: &LoopConsumer, budget: Duration) -> Result<(), RuntimeError> {
        let since = self.txn.since();
        let outcome = blocking(|| self.txn.commit(&|| consumer.group_metadata(), budget))?;
        match outcome {
            Outcome::Committed { inputs, outputs } => {
                self.core.stats.produced += outputs;
                self.core.metrics.produced.increment(outputs);
                if let Some(since) = since {
                    self.core.metrics.latency.record(since.elapsed());
                }
                tracing::debug!(service = %self.core.config.service, inputs, outputs, "transaction committed");
            }
            Outcome::Aborted { rewind: first } => {
                self.core.stats.retried += first.len() as u64;
                self.core.metrics.retried.increment(1);
                for (partition, offset) in first {
                    consumer
                        .seek(&self.core.config.input_topic, partition, Offset::Offset(offset), CALL_TIMEOUT)
                        .map_err(|source| RuntimeError::Subscribe {
                            topic: self.core.config.input_topic.clone(),
                            source,
                        })?;
                }
            }
        }
        Ok(())
    }
}
