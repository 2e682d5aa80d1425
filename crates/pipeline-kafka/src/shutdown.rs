//! Graceful shutdown: SIGINT or SIGTERM cancels a token that every task watches.
//!
//! A consuming service's stop is bounded in every state: its loop drains under
//! `--drain-timeout` and closes its clients under a budget of their own (`runtime`), the tokio
//! runtime is shut down without waiting for a blocking task that never returns, and, as the
//! last line of defence against a call that ignores every deadline, a watchdog started by the
//! signal exits the process [`STOP_GRACE`] after the drain deadline, with one line saying so.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long past `--drain-timeout` a stop may run before the watchdog exits the process: the
/// consumer's close (1 s) and the floor of the final commit and checkpoint (0.25 s each), with
/// a little room, so a service always exits within the drain deadline + 2 s of the signal.
pub const STOP_GRACE: Duration = Duration::from_millis(1800);

/// How long the runtime's shutdown waits for tasks still running once the service returned.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(100);

/// A token cancelled on the first SIGINT (Ctrl-C) or SIGTERM. A second signal exits at once
/// (status 130), so a stuck drain can still be interrupted. With `stop_within`, the first
/// signal also starts a watchdog that exits the process (status 1) if it is still running
/// that long after.
pub fn on_signal(stop_within: Option<Duration>) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        cancel.cancel();
        if let Some(bound) = stop_within {
            start_watchdog(bound);
        }
        wait_for_signal().await;
        tracing::error!("second signal: exiting without finishing in-flight work");
        std::process::exit(130);
    });
    token
}

/// Exits the process `bound` from now unless it has exited by then (a thread, so neither a
/// blocked runtime worker nor a blocking task can hold it up).
fn start_watchdog(bound: Duration) {
    let started = std::thread::Builder::new().name("stop-watchdog".into()).spawn(move || {
        std::thread::sleep(bound);
        tracing::error!(
            ?bound,
            "the stop did not finish in time (a Kafka or S3 call did not return); exiting without waiting for it \
             (inputs not committed are read again on the next start)"
        );
        std::process::exit(1);
    });
    if let Err(e) = started {
        tracing::warn!(error = %e, "could not start the stop watchdog");
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// A binary's body: installs logging, turns SIGINT/SIGTERM into the token `run` receives, and
/// reports the outcome as the exit status (an error as one line on stderr, status 1).
pub async fn serve<F, Fut>(service: &str, log_format: crate::args::LogFormat, run: F) -> std::process::ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    serve_within(service, log_format, None, run).await
}

/// [`serve`], with the watchdog of [`on_signal`] when `stop_within` is set.
async fn serve_within<F, Fut>(
    service: &str,
    log_format: crate::args::LogFormat,
    stop_within: Option<Duration>,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init(log_format);
    let cancel = on_signal(stop_within);
    exit_code(service, run(cancel).await)
}

/// A consuming service's `main`: its own tokio runtime, [`serve`] with a stop bounded by
/// `drain_timeout` + [`STOP_GRACE`] from the signal, and a runtime shutdown that does not wait
/// for blocking work left behind (`#[tokio::main]` would: its runtime's drop waits for every
/// blocking task, and one stuck in librdkafka held a stopped service for good).
pub fn service_main<F, Fut>(
    service: &str,
    log_format: crate::args::LogFormat,
    drain_timeout: Duration,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return exit_code(service, Err(anyhow::Error::new(e).context("starting the tokio runtime"))),
    };
    let code = runtime.block_on(serve_within(service, log_format, Some(drain_timeout + STOP_GRACE), run));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

/// A binary's exit: success, or its error as one line on stderr and status 1.
pub fn exit_code(service: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{service}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
