//! The exactly-once loop's transactional producer and its open transaction: begin, the
//! outputs and input offsets added, commit or abort (and what to rewind), and the commit a
//! revocation asks for first (the guarantee is in [`super::exactly_once`]'s header).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::rebalance::BeforeRevoke;
use super::{Output, RuntimeConfig, RuntimeError};
use crate::client::{self, KafkaSetupError};
use pipeline_core::lock;

/// How long one transactional call may take before it counts as failed.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The transactional producer and the open transaction, shared by the loop and the rebalance
/// callback (which commits before partitions are revoked).
pub(crate) struct Transactions {
    /// The transactional producer.
    pub(super) producer: FutureProducer,
    /// Its transactional id, for messages.
    pub(super) id: String,
    /// Service name, for messages.
    pub(super) service: String,
    /// Input topic, for the offsets sent to the transaction.
    pub(super) topic: String,
    /// The open transaction.
    pub(super) state: Mutex<Open>,
}

/// What the open transaction holds.
#[derive(Debug, Default)]
pub(super) struct Open {
    /// A transaction is open.
    pub(super) open: bool,
    /// Per input partition, the first offset read in it (where an abort rewinds to).
    pub(super) first: HashMap<i32, i64>,
    /// Per input partition, the next offset to commit.
    pub(super) next: HashMap<i32, i64>,
    /// Inputs in it.
    pub(super) inputs: u64,
    /// Its outputs (dead letters included), held until the commit (see [`Transactions::commit`]).
    pub(super) outputs: Vec<Output>,
    /// When its first input was read.
    pub(super) since: Option<Instant>,
}

/// How a commit attempt ended.
pub(super) enum Outcome {
    /// Committed.
    Committed {
        /// Inputs whose offsets it committed.
        inputs: u64,
        /// Outputs it made visible.
        outputs: u64,
    },
    /// Aborted: the consumer must read each partition again from here.
    Aborted {
        /// Per input partition, the transaction's first offset.
        rewind: HashMap<i32, i64>,
    },
}

impl Transactions {
    /// A transactional producer with `config.transactional_id`, initialized (which fences any
    /// earlier producer with the same id and aborts its open transaction).
    pub(crate) async fn start(config: &RuntimeConfig) -> Result<Arc<Self>, RuntimeError> {
        let producer: FutureProducer = config.clients.transactional.create().map_err(KafkaSetupError::Config)?;
        let p = producer.clone();
        // Off the runtime on a thread of its own: a stop request does not wait for it.
        let init =
            super::close::off_runtime("init-transactions", CALL_TIMEOUT * 2, move || p.init_transactions(CALL_TIMEOUT));
        init.await.unwrap_or(Err(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut))).map_err(|source| {
            RuntimeError::Transactions {
                bootstrap: config.kafka.bootstrap_servers.clone(),
                id: config.transactional_id.clone(),
                source: Box::new(source),
            }
        })?;
        tracing::info!(service = %config.service, transactional_id = %config.transactional_id, "transactions initialized");
        Ok(Arc::new(Self {
            producer,
            id: config.transactional_id.clone(),
            service: config.service.clone(),
            topic: config.input_topic.clone(),
            state: Mutex::new(Open::default()),
        }))
    }

    /// Opens a transaction unless one is open.
    pub(super) fn begin(&self) -> Result<(), RuntimeError> {
        let mut st = lock(&self.state);
        if !st.open {
            self.producer.begin_transaction().map_err(|e| self.fatal(e))?;
            st.open = true;
        }
        Ok(())
    }

    /// Notes an input read into the open transaction, with its outputs.
    pub(super) fn read(&self, partition: i32, offset: i64, outputs: &mut Vec<Output>) {
        let mut st = lock(&self.state);
        st.first.entry(partition).or_insert(offset);
        st.next.insert(partition, offset + 1);
        st.inputs += 1;
        st.outputs.append(outputs);
        st.since.get_or_insert_with(Instant::now);
    }

    /// Adds outputs that belong to no input (a processor's tick) to the open transaction.
    pub(super) fn add(&self, outputs: &mut Vec<Output>) {
        lock(&self.state).outputs.append(outputs);
    }

    /// When the open transaction's first input was read.
    pub(super) fn since(&self) -> Option<Instant> {
        lock(&self.state).since
    }

    pub(super) fn fatal(&self, source: KafkaError) -> RuntimeError {
        RuntimeError::Fenced { service: self.service.clone(), id: self.id.clone(), source: Box::new(source) }
    }

    /// Produces the open transaction's outputs, then commits it with its input offsets; on an
    /// abortable failure aborts it and returns where to rewind. Blocks (transactional calls wait
    /// for the broker), for about `budget` at most: every call gets what is left of it. `group`
    /// is asked only when a transaction is open.
    ///
    /// The outputs reach the broker only now, at the end of the transaction, not as they are
    /// made: a process killed before its commit leaves nothing behind it on the broker. On
    /// Apache Kafka that changes nothing (read-committed readers never see an aborted record);
    /// on the local Tansu, whose fetch responses list no aborted transactions, it keeps aborted
    /// records from reaching readers except when a crash falls inside the commit itself.
    pub(super) fn commit(
        &self,
        group: &dyn Fn() -> Option<ConsumerGroupMetadata>,
        budget: Duration,
    ) -> Result<Outcome, RuntimeError> {
        let mut st = lock(&self.state);
        if !st.open {
            return Ok(Outcome::Committed { inputs: 0, outputs: 0 });
        }
        let deadline = Instant::now() + budget;
        let produced = st.outputs.len() as u64;
        let result =
            self.produce(&mut st.outputs, deadline).and_then(|()| self.try_commit(&st, group().as_ref(), deadline));
        let done = std::mem::take(&mut *st);
        match result {
            Ok(()) => Ok(Outcome::Committed { inputs: done.inputs, outputs: produced }),
            Err(e) if is_fatal(&e) => Err(self.fatal(e)),
            Err(e) => {
                tracing::warn!(service = %self.service, error = %e, inputs = done.inputs, "transaction failed; aborting and rewinding");
                if let Err(abort) = self.producer.abort_transaction(left(deadline)) {
                    if is_fatal(&abort) {
                        return Err(self.fatal(abort));
                    }
                    // The producer can't be trusted to be in a clean state: stop, a restart
                    // fences the old transaction and re-reads from the committed offsets.
                    return Err(RuntimeError::TransactionStuck {
                        service: self.service.clone(),
                        id: self.id.clone(),
                        detail: format!("{e}; then abort: {abort}"),
                    });
                }
                Ok(Outcome::Aborted { rewind: done.first })
            }
        }
    }

    /// Enqueues `outputs` (waiting while librdkafka's queue is full, until `deadline`); their
    /// deliveries are settled by `commit_transaction`, which fails if any failed.
    pub(super) fn produce(&self, outputs: &mut Vec<Output>, deadline: Instant) -> Result<(), KafkaError> {
        for output in outputs.drain(..) {
            let mut record = client::record(&output.topic, output.key.as_deref(), &output.payload, output.headers);
            loop {
                match self.producer.send_result(record) {
                    Ok(_delivery) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if Instant::now() >= deadline {
                            return Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
                        }
                        self.producer.poll(Duration::from_millis(5));
                        record = back;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        Ok(())
    }

    pub(super) fn try_commit(
        &self,
        st: &Open,
        group: Option<&ConsumerGroupMetadata>,
        deadline: Instant,
    ) -> Result<(), KafkaError> {
        if let Some(group) = group
            && !st.next.is_empty()
        {
            let mut offsets = TopicPartitionList::new();
            for (partition, next) in &st.next {
                offsets.add_partition_offset(&self.topic, *partition, Offset::Offset(*next))?;
            }
            self.producer.send_offsets_to_transaction(&offsets, group, left(deadline))?;
        }
        // A timeout is retriable: the same commit may be retried (librdkafka resumes it).
        let mut attempts = 0;
        loop {
            match self.producer.commit_transaction(left(deadline)) {
                Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 2 => attempts += 1,
                other => return other,
            }
        }
    }

    /// From the rebalance callback: commits the open transaction before its partitions are
    /// revoked (aborting it if that fails; the new owner then re-reads its inputs), within
    /// `budget` (the drain deadline: a revocation must finish within the session).
    /// Returns, when it aborted, where each partition's aborted inputs start.
    pub(crate) fn finish_before_revoke(
        &self,
        group: &dyn Fn() -> Option<ConsumerGroupMetadata>,
        budget: Duration,
    ) -> Vec<(i32, i64)> {
        match self.commit(group, budget) {
            Ok(Outcome::Committed { inputs, .. }) => {
                if inputs > 0 {
                    tracing::info!(service = %self.service, inputs, "committed the open transaction before revocation");
                }
                Vec::new()
            }
            Ok(Outcome::Aborted { rewind: first }) => {
                tracing::warn!(
                    service = %self.service, ?first,
                    "open transaction aborted at revocation; its inputs are read again (the revoked partitions' by their new owner)"
                );
                first.into_iter().collect()
            }
            Err(e) => {
                tracing::error!(service = %self.service, error = %e, "transaction at revocation");
                Vec::new()
            }
        }
    }
}

/// What is left of `deadline` for one transactional call (never zero: librdkafka reads a zero
/// timeout as "don't wait", which fails a call that could still finish).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100))
}

/// Whether a transactional error leaves this producer unusable (fenced, or a fatal idempotence
/// error).
pub(super) fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(e) => e.is_fatal(),
        other => matches!(
            other.rdkafka_error_code(),
            Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch | RDKafkaErrorCode::Fenced)
        ),
    }
}

impl BeforeRevoke for Transactions {
    fn before_revoke(&self, group: &dyn Fn() -> Option<ConsumerGroupMetadata>, budget: Duration) -> Vec<(i32, i64)> {
        self.finish_before_revoke(group, budget)
    }
}
