//! Logging set-up shared by the binaries.

use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

/// The filter without `RUST_LOG`. librdkafka's own lines (target `librdkafka`) pass at debug
/// level: it writes them only for the contexts named by `-X debug=…`, so they cost nothing
/// otherwise and `-X debug=broker,protocol` shows without touching `RUST_LOG`.
const DEFAULT_FILTER: &str = "info,rdkafka=warn,aws=warn,librdkafka=debug";

/// Installs the global tracing subscriber: `RUST_LOG` filters (default `DEFAULT_FILTER`), to
/// stderr so stdout stays free for a service's own output (the counter's table).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colors only on a terminal: log files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    // A second init (tests calling several mains in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether to write one per-record `kind` line now under `limit`, after writing the summary of
/// the lines `limit` left out in a period that has ended.
pub fn admit_line(limit: &mut pipeline_core::log_limit::LogLimit, kind: &str) -> bool {
    let admission = limit.admit(std::time::Instant::now());
    summarize(limit, kind, admission.suppressed);
    admission.log
}

/// Writes the summary of the `kind` lines `limit` left out in a period that has ended (call it
/// on a timer, so a flood that stopped still gets its line).
pub fn flush_lines(limit: &mut pipeline_core::log_limit::LogLimit, kind: &str) {
    let suppressed = limit.flush(std::time::Instant::now());
    summarize(limit, kind, suppressed);
}

fn summarize(limit: &pipeline_core::log_limit::LogLimit, kind: &str, suppressed: u64) {
    if suppressed > 0 {
        let period = humantime::format_duration(limit.period);
        tracing::warn!(
            suppressed,
            "… and {suppressed} more {kind} lines like it in the last {period} (not logged; counted in the metrics)"
        );
    }
}
