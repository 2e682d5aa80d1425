//! Calls into librdkafka that may wait for a broker that never answers, bounded.
//!
//! A blocking call run with `spawn_blocking` cannot be abandoned: the runtime's shutdown waits
//! for every blocking task, so a consumer's close stuck on a gone coordinator (or on a
//! callback's request to the client's own queue) held the whole process — and a test's runtime
//! — until it was killed. These calls run on a thread of their own instead; the loop waits for
//! them at most a budget, and past it goes on with one warning line while the thread is left
//! to finish (or to end with the process).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;

use super::rebalance::LoopConsumer;

/// Runs `f` on a named thread of its own and waits at most `budget` for its result. None when
/// the budget passed (the thread goes on, detached) or the thread could not start.
pub async fn off_runtime<T: Send + 'static>(
    name: &str,
    budget: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let _ = tx.send(f());
    });
    if let Err(e) = spawned {
        tracing::warn!(thread = name, error = %e, "could not start a thread");
        return None;
    }
    tokio::time::timeout(budget, rx).await.ok().and_then(Result::ok)
}

/// How long the consumer's close may take: it leaves the group (librdkafka waits for the
/// coordinator); with the cluster gone, the group notices by its session timeout instead.
pub const CLOSE_BUDGET: Duration = Duration::from_secs(1);

/// Closes the consumer off the runtime, waiting at most [`CLOSE_BUDGET`]. An assignment that
/// the loop never applied (the stop came while the processor was restoring its state) is
/// answered first with an empty one, so librdkafka's close does not wait for it.
pub(super) async fn close(consumer: Arc<LoopConsumer>, service: &str, assignment_pending: bool) {
    let closing = off_runtime("consumer-close", CLOSE_BUDGET, move || {
        if assignment_pending {
            let _ = consumer.unassign();
        }
        drop(consumer);
    });
    if closing.await.is_none() {
        tracing::warn!(
            %service, budget = ?CLOSE_BUDGET,
            "the consumer did not close in time (is the broker gone?); not waiting for it"
        );
    }
}

/// Runs a blocking call into librdkafka without stalling the async runtime's other tasks.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_never_returns_is_abandoned_after_its_budget() {
        let (_hold, wait) = std::sync::mpsc::channel::<()>();
        let started = std::time::Instant::now();
        let got = off_runtime("stuck", Duration::from_millis(100), move || wait.recv().is_ok()).await;
        assert_eq!(got, None);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(off_runtime("quick", Duration::from_secs(30), || 7).await, Some(7));
    }
}
