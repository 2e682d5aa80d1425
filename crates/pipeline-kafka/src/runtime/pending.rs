//! Per-partition queues of inputs whose outputs await acknowledgement, in offset order.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// An input awaiting acknowledgement of its outputs.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) offset: i64,
    pub(super) outstanding: u32,
    /// When it was read: its processing latency ends when its last output is acknowledged.
    pub(super) read_at: Instant,
}

/// Per-partition queues of inputs in offset order.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) epoch: u64,
    pub(super) partitions: HashMap<i32, VecDeque<Slot>>,
    pub(super) len: usize,
}

impl Pending {
    /// Forgets everything when the epoch moved (a revocation): those inputs are not ours now.
    pub(super) fn sync_epoch(&mut self, epoch: u64) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.partitions.clear();
            self.len = 0;
        }
    }

    pub(super) fn push(&mut self, partition: i32, offset: i64, outstanding: u32, read_at: Instant) {
        self.partitions.entry(partition).or_default().push_back(Slot { offset, outstanding, read_at });
        self.len += 1;
    }

    /// One output of (partition, offset) was acknowledged.
    pub(super) fn ack(&mut self, partition: i32, offset: i64) {
        if let Some(queue) = self.partitions.get_mut(&partition)
            && let Ok(i) = queue.binary_search_by_key(&offset, |s| s.offset)
        {
            queue[i].outstanding -= 1;
        }
    }

    /// Pops the fully acknowledged inputs at the head of `partition`'s queue, calling `done`
    /// with each one's read time, and returns the last offset popped: everything up to it may
    /// be committed.
    pub(super) fn advance(&mut self, partition: i32, mut done: impl FnMut(Instant)) -> Option<i64> {
        let queue = self.partitions.get_mut(&partition)?;
        let mut last = None;
        while let Some(slot) = queue.front().filter(|s| s.outstanding == 0) {
            done(slot.read_at);
            last = Some(slot.offset);
            queue.pop_front();
            self.len -= 1;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_advance_only_over_fully_acknowledged_inputs() {
        let mut p = Pending::default();
        let t = Instant::now();
        p.push(0, 10, 2, t);
        p.push(0, 11, 0, t); // filtered out: nothing to wait for, but behind offset 10
        p.push(0, 12, 1, t);
        p.push(1, 5, 1, t);
        assert_eq!(p.advance(0, |_| {}), None, "10 is still in flight");
        p.ack(0, 12);
        assert_eq!(p.advance(0, |_| {}), None, "12 is done but 10 is not: never pass it");
        p.ack(0, 10);
        assert_eq!(p.advance(0, |_| {}), None, "10 has one more output");
        p.ack(0, 10);
        assert_eq!(p.advance(0, |_| {}), Some(12), "10, 11, 12 all done");
        assert_eq!(p.len, 1);
        p.ack(1, 5);
        assert_eq!(p.advance(1, |_| {}), Some(5));
        assert_eq!((p.len, p.advance(1, |_| {})), (0, None));
    }

    #[test]
    fn a_revocation_forgets_in_flight_inputs() {
        let mut p = Pending::default();
        p.push(0, 1, 1, Instant::now());
        p.sync_epoch(1);
        assert_eq!(p.len, 0);
        p.ack(0, 1); // a late report of the old epoch finds nothing
        assert_eq!(p.advance(0, |_| {}), None);
    }
}
