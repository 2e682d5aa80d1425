//! Graceful shutdown: SIGINT or SIGTERM cancels a token that every task watches.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT (Ctrl-C) or SIGTERM. A second signal exits at once
/// (status 130), so a stuck drain can still be interrupted.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        cancel.cancel();
        wait_for_signal().await;
        tracing::error!("second signal: exiting without finishing in-flight work");
        std::process::exit(130);
    });
    token
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
    crate::telemetry::init(log_format);
    let cancel = on_signal();
    exit_code(service, run(cancel).await)
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
