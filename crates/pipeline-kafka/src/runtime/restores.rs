//! Restoring newly assigned partitions off the loop: the processor's restores run as futures
//! the loop polls beside the consumer, and the partitions are assigned (at the offsets the
//! restored states name) once every restore of the waiting assignment is in.
//!
//! Why not await them in place: a restore reads S3, and while the loop awaited one it did not
//! poll the consumer; with S3 stalled past `max.poll.interval.ms` librdkafka left the group
//! (a rebalance, duplicates, and the next owner blocked the same way). librdkafka waits for the
//! assign call meanwhile and the loop's polls keep the membership alive; the partitions already
//! owned (cooperative rebalancing) keep flowing.

use std::future::poll_fn;
use std::task::Poll;

use super::error::ProcessorError;
use super::processor::Detached;

/// The waiting assignment's restores.
pub(super) struct Restores<R> {
    /// The waiting assignment's topic and protocol (cooperative: incremental assign); None
    /// while no assignment waits.
    waiting: Option<(String, bool)>,
    /// Restores still running, per partition.
    running: Vec<(i32, Detached<Result<R, ProcessorError>>)>,
    /// Restores finished, per partition, in the order they finished.
    done: Vec<(i32, R)>,
}

impl<R> Default for Restores<R> {
    fn default() -> Self {
        Self { waiting: None, running: Vec::new(), done: Vec::new() }
    }
}

/// A waiting assignment whose restores are all in: what to assign.
pub(super) struct Restored<R> {
    /// The topic.
    pub(super) topic: String,
    /// Whether to assign incrementally.
    pub(super) cooperative: bool,
    /// Each partition's restored state.
    pub(super) partitions: Vec<(i32, R)>,
}

impl<R> Restores<R> {
    /// Adds `partitions` of `topic` to the waiting assignment (a second cooperative assignment
    /// while one waits joins it), starting each one's restore.
    pub(super) fn start(
        &mut self,
        topic: String,
        cooperative: bool,
        partitions: impl IntoIterator<Item = (i32, Detached<Result<R, ProcessorError>>)>,
    ) {
        self.waiting = Some((topic, cooperative));
        for (partition, restore) in partitions {
            // Offered again while waiting: the newer restore wins.
            self.forget(&[partition]);
            self.running.push((partition, restore));
        }
    }

    /// Drops the restores of `revoked` partitions: they are not ours to assign any more. An
    /// eager revocation takes everything, waiting or not.
    pub(super) fn revoke(&mut self, revoked: &[i32], cooperative: bool) {
        if cooperative {
            self.forget(revoked);
        } else {
            *self = Self::default();
        }
    }

    fn forget(&mut self, partitions: &[i32]) {
        self.running.retain(|(p, _)| !partitions.contains(p));
        self.done.retain(|(p, _)| !partitions.contains(p));
    }

    /// Whether a restore is running (the loop polls [`Restores::next`] only then).
    pub(super) fn is_running(&self) -> bool {
        !self.running.is_empty()
    }

    /// The next restore to finish: Ok(Some) when it completes the waiting assignment, Ok(None)
    /// while others still run, Err when it failed (the service stops). Pending while none runs.
    pub(super) async fn next(&mut self) -> Result<Option<Restored<R>>, ProcessorError> {
        let (partition, restored) = poll_fn(|cx| {
            for i in 0..self.running.len() {
                if let Poll::Ready(result) = self.running[i].1.as_mut().poll(cx) {
                    let (partition, _) = self.running.swap_remove(i);
                    return Poll::Ready((partition, result));
                }
            }
            Poll::Pending
        })
        .await;
        self.done.push((partition, restored?));
        Ok(self.complete())
    }

    /// The waiting assignment, once no restore of it runs any more.
    pub(super) fn complete(&mut self) -> Option<Restored<R>> {
        if self.is_running() {
            return None;
        }
        let (topic, cooperative) = self.waiting.take()?;
        Some(Restored { topic, cooperative, partitions: std::mem::take(&mut self.done) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ready(value: u32) -> Detached<Result<u32, ProcessorError>> {
        Box::pin(std::future::ready(Ok(value)))
    }

    fn never() -> Detached<Result<u32, ProcessorError>> {
        Box::pin(std::future::pending())
    }

    #[tokio::test]
    async fn an_assignment_completes_once_every_restore_is_in() {
        let mut r = Restores::default();
        r.start("t".into(), false, [(0, ready(10)), (1, ready(11))]);
        assert!(r.next().await.unwrap().is_none(), "one of two");
        let done = r.next().await.unwrap().expect("both in");
        let mut parts = done.partitions;
        parts.sort_unstable();
        assert_eq!((done.topic.as_str(), done.cooperative, parts), ("t", false, vec![(0, 10), (1, 11)]));
        assert!(!r.is_running() && r.complete().is_none(), "nothing waits any more");
    }

    #[tokio::test]
    async fn a_cooperative_revocation_drops_only_the_revoked_restores() {
        let mut r = Restores::default();
        r.start("t".into(), true, [(0, never()), (1, ready(11))]);
        r.revoke(&[0], true);
        let done = r.next().await.unwrap().expect("the stalled one is no longer waited for");
        assert_eq!(done.partitions, vec![(1, 11)]);
    }

    #[tokio::test]
    async fn an_eager_revocation_drops_the_whole_waiting_assignment() {
        let mut r = Restores::default();
        r.start("t".into(), false, [(0, never()), (1, ready(11))]);
        r.revoke(&[], false);
        assert!(!r.is_running());
        assert!(r.complete().is_none(), "nothing to assign");
    }

    #[tokio::test]
    async fn a_second_cooperative_assignment_joins_the_waiting_one_and_a_failure_is_returned() {
        let mut r = Restores::default();
        r.start("t".into(), true, [(0, ready(10))]);
        r.start("t".into(), true, [(2, Box::pin(std::future::ready(Err("store refused".into()))) as Detached<_>)]);
        let mut outcomes = Vec::new();
        while r.is_running() {
            outcomes.push(r.next().await.map(|d| d.map(|d| d.partitions)).map_err(|e| e.to_string()));
        }
        assert!(outcomes.contains(&Err("store refused".to_owned())), "{outcomes:?}");
    }
}
