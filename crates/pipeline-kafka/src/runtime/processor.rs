//! What a service plugs into the runtime: its transform ([`Processor`]) and the records it emits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use pipeline_core::schema::JsonEvent;
use rdkafka::message::OwnedHeaders;

use super::error::ProcessorError;

/// Where reading a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// At the group's committed offset (the normal case).
    Committed,
    /// At this offset (before or after the committed one): the processor's restored state
    /// covers everything before it.
    At(i64),
}

/// Work a processor hands the loop that owns everything it needs (a store client, a snapshot):
/// the loop polls it beside the consumer, so a slow or stalled store never stops the polling
/// (and never costs the group membership, `max.poll.interval.ms`).
pub type Detached<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A checkpoint being written: yields the (partition, next offset) pairs it made durable.
pub type CheckpointWrite = Detached<Result<Vec<(i32, i64)>, ProcessorError>>;

/// One record to produce.
#[derive(Debug)]
pub struct Output {
    /// Destination topic.
    pub topic: Arc<str>,
    /// Record key (None: the partitioner spreads them).
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record headers.
    pub headers: Option<OwnedHeaders>,
}

/// Where an input record came from, for processors that need more than its decoded value.
#[derive(Debug, Clone, Copy)]
pub struct InputMeta<'a> {
    /// The record's raw value.
    pub payload: &'a [u8],
    /// The record's key.
    pub key: Option<&'a [u8]>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// The transform of a service.
pub trait Processor: Send {
    /// What restoring one partition's state gives back ([`Processor::restore`]); `()` for a
    /// processor without state of its own.
    type Restored: Default + Send + 'static;

    /// The decoded input type, which may borrow from the record it was decoded from (`'a`):
    /// an event's strings are not copied out of the record.
    type Input<'a>: JsonEvent<'a>;

    /// Handles one valid input, pushing the outputs it causes (possibly none) to `out`.
    fn process(&mut self, input: Self::Input<'_>, meta: InputMeta<'_>, out: &mut Vec<Output>);

    /// Whether a valid `input` may reach [`Processor::process`]: `Err(reason)` dead-letters it
    /// with the reason, like a poison record. For an input that decodes but must not get into
    /// this service's state (an alert stamped years ahead, say); called on the hot path, so a
    /// cheap check, allocating only to refuse.
    fn admit(&mut self, _input: &Self::Input<'_>) -> Result<(), String> {
        Ok(())
    }

    /// An input of `partition` at `offset` was poison and went to the dead-letter topic
    /// instead of [`Processor::process`]: a processor that commits by checkpoint counts its
    /// offset as covered (a poison record never becomes valid by being read again).
    fn on_dead_letter(&mut self, _partition: i32, _offset: i64) {}

    /// Called every [`RuntimeConfig::tick`](super::RuntimeConfig::tick); outputs pushed here belong to no input offset.
    fn on_tick(&mut self, _out: &mut Vec<Output>) {}

    /// Called once when the loop stops consuming, before the final drain and commit.
    fn on_shutdown(&mut self, _out: &mut Vec<Output>) {}

    /// Called when `partition` is assigned, before its first record: a processor with state of
    /// its own starts restoring it. The loop polls the returned future beside the consumer (its
    /// other partitions keep flowing) and assigns the partition once it is done: an `Err` stops
    /// the service, so a store that may come back is waited for inside the future.
    fn restore(&mut self, _partition: i32) -> Detached<Result<Self::Restored, ProcessorError>> {
        Box::pin(std::future::ready(Ok(Self::Restored::default())))
    }

    /// `partition`'s restore finished with `restored`: install it and say where reading
    /// resumes.
    fn resumed(&mut self, _partition: i32, _restored: Self::Restored) -> Resume {
        Resume::Committed
    }

    /// `partition`'s log is behind the state restored for it (see
    /// [`super::BelowCheckpoint::Replay`]): forget that state; the partition's records are
    /// handed over again from the first one there.
    fn replay(&mut self, _partition: i32) {}

    /// The partitions are being taken away (a rebalance) and are still this instance's:
    /// snapshot their state and return the write that makes it durable, so their next owner
    /// restores it at the offset this one reached instead of an older checkpoint it would read
    /// forward from (None: nothing changed since the last checkpoint, or no store). The loop
    /// waits for it within the drain deadline, commits what it made durable and only then gives
    /// the partitions up; [`Processor::on_revoke`] follows. For a service that commits by
    /// checkpoint.
    fn hand_off(&mut self, _partitions: &[i32]) -> Option<CheckpointWrite> {
        None
    }

    /// The partitions were taken away (a rebalance): forget their state, publish nothing more
    /// for them.
    fn on_revoke(&mut self, _partitions: &[i32]) {}

    /// Every [`RuntimeConfig::checkpoint_interval`](super::RuntimeConfig::checkpoint_interval) and at shutdown, once every output so far
    /// is acknowledged: snapshot the state and return the work that makes it durable (None:
    /// nothing changed). The future yields the (partition, next offset) pairs it made durable;
    /// the loop keeps reading meanwhile, then commits them to the group (so lag tools see
    /// progress) and tells [`Processor::checkpointed`]. An `Err` stops the service. For a
    /// service that commits by checkpoint rather than per acknowledged input.
    fn checkpoint(&mut self) -> Option<CheckpointWrite> {
        None
    }

    /// The checkpoint last returned by [`Processor::checkpoint`] made `durable` durable (the
    /// partitions it left out failed, and are due again).
    fn checkpointed(&mut self, _durable: &[(i32, i64)]) {}
}
