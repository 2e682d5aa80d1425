//! The at-least-once loop's delivery-failure log: while deliveries fail, one summary line per
//! [`FAILURE_REPORT`] (not one per record), and one line when they recover.

use std::time::{Duration, Instant};

/// While deliveries fail, how often a summary line is logged.
const FAILURE_REPORT: Duration = Duration::from_secs(10);

/// A line [`FailureReport::observe`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailureLine {
    /// Deliveries failed since the last line: this many.
    Failing { failures: u64 },
    /// No failure for [`FAILURE_REPORT`], nothing waits for a resend, and deliveries succeed.
    Recovered,
}

/// Rate-limits the delivery-failure log: at most one line per [`FAILURE_REPORT`] while
/// failing, one when recovered, nothing while healthy.
#[derive(Debug)]
pub(super) struct FailureReport {
    /// Failures counted at the last "failing" line.
    reported: u64,
    /// When that line was logged (None: never).
    reported_at: Option<Instant>,
    /// Failures at the last look, and when they last grew.
    seen: (u64, Instant),
    /// Acknowledged outputs when the failures last grew (recovery needs new ones).
    produced_then: u64,
    /// Between a "failing" and a "recovered" line.
    failing: bool,
}

impl FailureReport {
    /// A report that has seen nothing yet, at `now`.
    pub(super) fn new(now: Instant) -> Self {
        Self { reported: 0, reported_at: None, seen: (0, now), produced_then: 0, failing: false }
    }

    /// Looks at the totals at `now`; returns the line to log, if any.
    pub(super) fn observe(
        &mut self,
        failures: u64,
        produced: u64,
        none_waiting: bool,
        now: Instant,
    ) -> Option<FailureLine> {
        if failures > self.seen.0 {
            self.seen = (failures, now);
            self.produced_then = produced;
        }
        let due = self.reported_at.is_none_or(|at| now.duration_since(at) >= FAILURE_REPORT);
        if failures > self.reported && due {
            let line = FailureLine::Failing { failures: failures - self.reported };
            (self.reported, self.reported_at, self.failing) = (failures, Some(now), true);
            return Some(line);
        }
        let quiet = now.duration_since(self.seen.1) >= FAILURE_REPORT;
        if self.failing && quiet && none_waiting && produced > self.produced_then {
            self.failing = false;
            self.reported = failures;
            return Some(FailureLine::Recovered);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reported_once_per_interval_and_recovery_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = FailureReport::new(t0);
        assert_eq!(r.observe(0, 10, true, at(50)), None, "healthy: silent");
        assert_eq!(r.observe(5, 10, false, at(100)), Some(FailureLine::Failing { failures: 5 }));
        assert_eq!(r.observe(900, 10, false, at(150)), None, "within the interval: silent");
        assert_eq!(r.observe(1200, 10, false, at(10_100)), Some(FailureLine::Failing { failures: 1195 }));
        // The broker is still away: nothing waits for a resend (all in flight), nothing delivered.
        for ms in (10_150..30_000).step_by(50) {
            assert_eq!(r.observe(1200, 10, true, at(ms)), None, "not recovered while nothing is delivered");
        }
        assert_eq!(r.observe(1200, 500, true, at(30_050)), Some(FailureLine::Recovered));
        for ms in (30_100..60_000).step_by(50) {
            assert_eq!(r.observe(1200, 900, true, at(ms)), None, "recovered once, then silent");
        }
        assert_eq!(r.observe(1201, 900, false, at(60_050)), Some(FailureLine::Failing { failures: 1 }));
    }
}
