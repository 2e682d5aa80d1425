//! The loop's heartbeat, behind `/healthz`: alive while the loop keeps turning, whatever the
//! broker or S3 does.
//!
//! A liveness probe that failed while Kafka is away would turn an outage into a restart storm
//! (every instance restarted, every restart a rebalance, nothing gained: the loop rides the
//! outage out by itself). What a restart does cure is a loop that stopped turning (a deadlock,
//! a call that never returns). So `/healthz` answers 200 before the loop starts (start-up waits
//! are bounded and retried by the services themselves) and while the loop's timers fire —
//! they fire with the broker gone — and 503 once no turn has come for [`STALL_LIMIT`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How long the loop may go without a turn before `/healthz` fails. Above the longest wait a
/// healthy loop makes in one turn: an exactly-once commit (90 s budget).
pub const STALL_LIMIT: Duration = Duration::from_secs(120);

/// When the loop last turned (None: not started yet). Cloned into the loop and the server.
#[derive(Debug, Clone, Default)]
pub struct LoopHeartbeat {
    /// The last turn.
    last: Arc<Mutex<Option<Instant>>>,
}

impl LoopHeartbeat {
    /// The loop turned.
    pub fn beat(&self) {
        *pipeline_core::lock(&self.last) = Some(Instant::now());
    }

    /// The last turn (None: not started yet).
    pub fn last(&self) -> Option<Instant> {
        *pipeline_core::lock(&self.last)
    }

    /// How long since the last turn, when it is more than [`STALL_LIMIT`].
    pub fn stalled_for(&self) -> Option<Duration> {
        let last = self.last()?;
        Some(last.elapsed()).filter(|age| *age > STALL_LIMIT)
    }

    /// `/healthz`'s answer: whether alive, and the line saying so.
    pub fn health(&self) -> (bool, String) {
        match self.stalled_for() {
            None => (true, "ok\n".to_owned()),
            Some(age) => (false, format!("loop stalled: no turn for {} s\n", age.as_secs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn alive_before_the_loop_starts_and_while_it_turns_stalled_after_the_limit() {
        let heartbeat = LoopHeartbeat::default();
        tokio::time::advance(STALL_LIMIT * 3).await;
        assert_eq!(heartbeat.health(), (true, "ok\n".to_owned()), "not started: start-up waits are bounded elsewhere");
        heartbeat.beat();
        tokio::time::advance(STALL_LIMIT).await;
        assert!(heartbeat.health().0, "exactly the limit is still alive");
        heartbeat.clone().beat();
        tokio::time::advance(STALL_LIMIT + Duration::from_secs(1)).await;
        assert_eq!(heartbeat.health(), (false, "loop stalled: no turn for 121 s\n".to_owned()));
        heartbeat.beat();
        assert!(heartbeat.health().0, "a turn makes it alive again");
    }
}
