//! Per-partition offset tracking for an at-least-once consume→produce pipeline.
//!
//! Guarantee: never yields a store offset past an input with an unacknowledged output of the current assignment.
//! The offset only moves over a prefix of fully acknowledged inputs (head-of-line); partitions are independent, so
//! cooperative rebalancing can assign or revoke one without disturbing others; stale acks are ignored.

use std::collections::{HashMap, VecDeque};
use std::fmt;

/// One consumed input whose outputs may still await acknowledgement.
#[derive(Debug)]
struct Slot<M> {
    /// Input offset; slots stay in increasing offset order so `ack` can binary-search.
    offset: i64,
    /// Outputs not yet acknowledged; the input is done when this reaches zero.
    outstanding: u32,
    /// Caller data handed back by `advance` when the input is popped.
    meta: M,
}

/// Tracking state of one assigned partition.
#[derive(Debug)]
struct PartitionTrack<M> {
    /// Generation of the current assignment; tickets carrying another one are stale.
    generation: u64,
    /// Inputs not yet popped, in offset order.
    slots: VecDeque<Slot<M>>,
    /// Last offset pushed in this generation, so offsets must keep increasing even after pops.
    last: Option<i64>,
}

/// Tracks in-flight inputs of every assigned partition and computes the offsets that are safe to store.
#[derive(Debug)]
pub struct OffsetTracker<M> {
    /// State per partition; a missing entry means not assigned (or revoked).
    parts: HashMap<i32, PartitionTrack<M>>,
    /// Next generation to hand out; global and increasing so a revoke+assign never reuses one.
    next_generation: u64,
    /// Total slots over all partitions, so `in_flight` is O(1).
    len: usize,
}

/// Handle for one pushed input; its outputs carry a copy and acknowledge through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// Input partition, to find the partition's queue.
    pub partition: i32,
    /// Input offset, to find the slot within the queue.
    pub offset: i64,
    /// Assignment generation the input was pushed under, to ignore acks arriving after a rebalance.
    generation: u64,
}

/// Why a `push` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackError {
    /// The offset did not strictly increase within the partition's generation; nothing was changed.
    OutOfOrder {
        /// Partition pushed to.
        partition: i32,
        /// Offset that was refused.
        offset: i64,
        /// Last offset accepted in this generation.
        last: i64,
    },
}

impl fmt::Display for TrackError {
    /// Human-readable message for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self::OutOfOrder { partition, offset, last } = self;
        write!(f, "partition {partition}: offset {offset} is not after {last}")
    }
}

impl std::error::Error for TrackError {}

impl<M> Default for OffsetTracker<M> {
    /// Same as [`OffsetTracker::new`], for containers and `#[derive(Default)]` users.
    fn default() -> Self {
        Self::new()
    }
}

impl<M> OffsetTracker<M> {
    /// Empty tracker with no partitions, created at startup before the first assignment.
    pub fn new() -> Self {
        Self { parts: HashMap::new(), next_generation: 0, len: 0 }
    }

    /// Partition (re)assigned: starts a new generation with an empty queue, so older tickets become stale.
    pub fn assign(&mut self, partition: i32) {
        self.revoke(partition);
        self.track(partition);
    }

    /// State of the partition, first assigning it under a new generation if it has none.
    fn track(&mut self, partition: i32) -> &mut PartitionTrack<M> {
        let next = &mut self.next_generation;
        self.parts.entry(partition).or_insert_with(|| {
            *next += 1;
            PartitionTrack { generation: *next, slots: VecDeque::new(), last: None }
        })
    }

    /// Partition revoked: forgets it and returns how many inputs were still in flight (abandoned).
    pub fn revoke(&mut self, partition: i32) -> usize {
        let abandoned = self.parts.remove(&partition).map_or(0, |t| t.slots.len());
        self.len -= abandoned;
        abandoned
    }

    /// Records an input read at `offset` that produced `outputs` records (0: done, but still behind earlier
    /// inputs). A partition never assigned is assigned implicitly. Offsets must strictly increase within a
    /// generation, else `OutOfOrder` and nothing changes.
    pub fn push(&mut self, partition: i32, offset: i64, outputs: u32, meta: M) -> Result<Ticket, TrackError> {
        let track = self.track(partition);
        if let Some(last) = track.last.filter(|&last| offset <= last) {
            return Err(TrackError::OutOfOrder { partition, offset, last });
        }
        track.slots.push_back(Slot { offset, outstanding: outputs, meta });
        track.last = Some(offset);
        let generation = track.generation;
        self.len += 1;
        Ok(Ticket { partition, offset, generation })
    }

    /// One output of the ticket's input was acknowledged. Returns false and changes nothing if the ticket is
    /// stale (older generation or revoked partition), unknown, or its input is already fully acknowledged.
    pub fn ack(&mut self, ticket: Ticket) -> bool {
        let track = self.parts.get_mut(&ticket.partition);
        let Some(track) = track.filter(|t| t.generation == ticket.generation) else {
            return false;
        };
        let found = track.slots.binary_search_by_key(&ticket.offset, |s| s.offset);
        let slot = found.ok().map(|i| &mut track.slots[i]);
        slot.filter(|s| s.outstanding > 0).map(|s| s.outstanding -= 1).is_some()
    }

    /// Pops the fully acknowledged inputs at the head of the partition's queue, calling `done` with each one's
    /// meta, and returns the next offset to store (last popped offset + 1), or None if nothing was popped.
    pub fn advance(&mut self, partition: i32, mut done: impl FnMut(M)) -> Option<i64> {
        let track = self.parts.get_mut(&partition)?;
        let mut next = None;
        while let Some(slot) = track.slots.pop_front_if(|s| s.outstanding == 0) {
            self.len -= 1;
            next = Some(slot.offset.saturating_add(1));
            done(slot.meta);
        }
        next
    }

    /// Whether `ticket` belongs to the partition's current assignment (else its input was
    /// abandoned to the partition's next owner).
    pub fn is_current(&self, ticket: Ticket) -> bool {
        self.parts.get(&ticket.partition).is_some_and(|t| t.generation == ticket.generation)
    }

    /// Inputs pushed and not yet popped over all partitions, for backpressure and shutdown draining.
    pub fn in_flight(&self) -> usize {
        self.len
    }

    /// Inputs pushed and not yet popped on one partition, e.g. to drain it before a revoke completes.
    pub fn in_flight_on(&self, partition: i32) -> usize {
        self.parts.get(&partition).map_or(0, |t| t.slots.len())
    }

    /// Partitions that currently have state (assigned explicitly or by a push, and not revoked since).
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.parts.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Advances `p`, returning the result and the metas (= offsets) handed to `done`.
    fn drain(t: &mut OffsetTracker<i64>, p: i32) -> (Option<i64>, Vec<i64>) {
        let mut done = Vec::new();
        (t.advance(p, |m| done.push(m)), done)
    }

    #[test]
    fn head_of_line_zero_outputs_and_out_of_order() {
        let mut t = OffsetTracker::new();
        let a = t.push(0, 10, 1, 10).unwrap();
        let b = t.push(0, 11, 1, 11).unwrap();
        t.push(0, 12, 0, 12).unwrap();
        assert!(t.ack(b) && !t.ack(b));
        assert_eq!((drain(&mut t, 0), t.in_flight_on(0)), ((None, vec![]), 3));
        assert!(t.ack(a));
        assert_eq!(drain(&mut t, 0), (Some(13), vec![10, 11, 12]));
        assert_eq!((t.in_flight(), drain(&mut t, 0)), (0, (None, vec![])));
        t.push(0, 13, 0, 13).unwrap();
        assert_eq!(drain(&mut t, 0), (Some(14), vec![13]));
        t.push(3, 8, 0, 8).unwrap(); // then out-of-order pushes: refused, nothing changes
        let err = t.push(3, 8, 1, 8).unwrap_err();
        assert_eq!(err.to_string(), "partition 3: offset 8 is not after 8");
        assert!(t.push(3, 2, 1, 2).is_err());
        assert_eq!((t.in_flight(), drain(&mut t, 3)), (1, (Some(9), vec![8])));
        assert!(t.push(3, 8, 0, 8).is_err()); // must increase even past popped inputs
    }

    #[test]
    fn stale_tickets_are_ignored_and_revoke_is_per_partition() {
        let mut t = OffsetTracker::new();
        let old = t.push(0, 5, 1, ()).unwrap();
        assert_eq!(t.revoke(0), 1);
        t.assign(0);
        let new = t.push(0, 5, 1, ()).unwrap();
        assert!(old != new && !t.ack(old) && t.advance(0, |_| {}).is_none());
        assert!(t.ack(new) && t.advance(0, |_| {}) == Some(6));
        let a = t.push(0, 7, 1, ()).unwrap();
        t.push(0, 8, 0, ()).unwrap();
        t.push(1, 7, 2, ()).unwrap();
        assert_eq!((t.revoke(1), t.revoke(1)), (1, 0));
        assert_eq!((t.in_flight(), t.in_flight_on(0)), (2, 2));
        assert_eq!(t.partitions().collect::<Vec<_>>(), vec![0]);
        assert!(t.ack(a) && t.advance(0, |_| {}) == Some(9));
        assert!(!t.is_current(old) && t.is_current(a));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Assign(i32),
        Revoke(i32),
        Push(i32, u32, bool),
        Ack(prop::sample::Index),
        Advance(i32),
    }

    /// Reference model of one partition's current generation: slots are (ticket, outstanding outputs).
    #[derive(Default)]
    struct Model {
        slots: VecDeque<(Ticket, u32)>,
        last_pushed: Option<i64>,
        last_returned: Option<i64>,
    }

    /// What `advance` should return for the model's state.
    fn predict(m: Option<&Model>) -> Option<i64> {
        m?.slots.iter().take_while(|s| s.1 == 0).last().map(|s| s.0.offset + 1)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0..3i32).prop_map(Op::Assign),
            1 => (0..3i32).prop_map(Op::Revoke),
            4 => (0..3i32, 0..3u32, prop::bool::weighted(0.2)).prop_map(|(p, n, skip)| Op::Push(p, n, skip)),
            5 => any::<prop::sample::Index>().prop_map(Op::Ack),
            3 => (0..3i32).prop_map(Op::Advance),
        ]
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let (mut t, mut model) = (OffsetTracker::<i64>::new(), HashMap::<i32, Model>::new());
        // Next offset to push per partition. A (re)assignment rewinds it to the last stored offset, as a
        // consumer resumes from its committed offset: a stale ticket can then carry the offset of a new input.
        let (mut next, mut stored, mut tickets) = ([0i64; 3], [0i64; 3], Vec::<Ticket>::new());
        for op in ops {
            let before: Vec<_> = (0..3).map(|p| (t.in_flight_on(p), predict(model.get(&p)))).collect();
            let touched = match op {
                Op::Assign(p) => {
                    t.assign(p);
                    model.insert(p, Model::default());
                    next[p as usize] = stored[p as usize];
                    p
                }
                Op::Revoke(p) => {
                    prop_assert_eq!(t.revoke(p), model.remove(&p).map_or(0, |m| m.slots.len()));
                    next[p as usize] = stored[p as usize];
                    p
                }
                Op::Push(p, outputs, skip) => {
                    let offset = next[p as usize] + if skip { 5 } else { 0 };
                    next[p as usize] = offset + 1;
                    let m = model.entry(p).or_default();
                    let tk = t.push(p, offset, outputs, offset)?;
                    m.slots.push_back((tk, outputs));
                    m.last_pushed = Some(offset);
                    tickets.push(tk);
                    p
                }
                Op::Ack(i) if tickets.is_empty() => i.index(3) as i32,
                Op::Ack(i) => {
                    let tk = tickets[i.index(tickets.len())];
                    let slot = model.get_mut(&tk.partition).and_then(|m| m.slots.iter_mut().find(|s| s.0 == tk));
                    prop_assert_eq!(t.ack(tk), slot.filter(|s| s.1 > 0).map(|s| s.1 -= 1).is_some());
                    tk.partition
                }
                Op::Advance(p) => {
                    let ((got, done), mut unassigned) = (drain(&mut t, p), Model::default());
                    let m = model.get_mut(&p).unwrap_or(&mut unassigned);
                    prop_assert_eq!(got, predict(Some(m)));
                    let k = m.slots.iter().take_while(|s| s.1 == 0).count();
                    prop_assert_eq!(done, m.slots.drain(..k).map(|s| s.0.offset).collect::<Vec<_>>());
                    if let Some(r) = got {
                        prop_assert!(m.slots.iter().all(|s| s.1 == 0 || r <= s.0.offset), "(a) {r} past unacked");
                        prop_assert!(Some(r) <= m.last_pushed.map(|l| l + 1), "(a) {r} past max pushed + 1");
                        prop_assert!(m.last_returned < Some(r), "(b) {r} after {:?}", m.last_returned);
                        m.last_returned = Some(r);
                        stored[p as usize] = r;
                    }
                    p
                }
            };
            for p in 0..3 {
                let m = model.get(&p);
                let now = (t.in_flight_on(p), predict(m));
                prop_assert_eq!(now.0, m.map_or(0, |m| m.slots.len()));
                prop_assert!(p == touched || before[p as usize] == now, "(c) {p} disturbed");
            }
            prop_assert_eq!(t.in_flight(), model.values().map(|m| m.slots.len()).sum::<usize>());
            prop_assert!(t.partitions().count() == model.len() && t.partitions().all(|p| model.contains_key(&p)));
        }
        for (&p, m) in model.iter_mut() {
            prop_assert!(m.slots.iter().all(|&(tk, n)| (0..n).all(|_| t.ack(tk)) && !t.ack(tk)));
            m.last_returned = t.advance(p, |_| {}).or(m.last_returned);
            let caught_up = m.last_pushed.is_none_or(|l| m.last_returned == Some(l + 1));
            prop_assert!(t.in_flight_on(p) == 0 && caught_up, "liveness on {p}");
        }
        prop_assert_eq!(t.in_flight(), 0);
        Ok(())
    }

    #[test]
    fn state_machine_matches_model() {
        proptest!(ProptestConfig::with_cases(1024), |(ops in prop::collection::vec(op(), 0..200))| run(ops)?);
    }
}
