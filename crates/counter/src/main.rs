//! `counter`: counts the alerts of `alert-data` in event-time tumbling windows (15 minutes by
//! default) with a watermark (48 hours behind the largest event time, the seed's), and every
//! `--trigger` prints all live windows as the seed's table (complete mode) and publishes each
//! changed window as JSON to `alert-counts`, keyed by window start (latest value wins).
//!
//! State and restarts: the windows live in memory and the counter commits no offsets. At every
//! start it rebuilds them by replaying `alert-data` from the earliest retained offset, so no
//! alert is lost across a restart; the price is a replay proportional to the topic's retention
//! and re-published (identical or newer) window values. Durable checkpoints replace the replay
//! in a later version.
//!
//! With `--metrics-addr`, the same address serves a live dashboard at `/` (the window table and
//! a chart of alerts per window by color, refreshed every second; read-only) and its data at
//! `/api/windows`.
//!
//! Alerts for windows the watermark has already passed are late: counted, logged, and sent
//! unchanged to `--late-topic`. Poison records go to the dead-letter topic like in every
//! service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use pipeline_core::config::ServiceArgs;
use pipeline_core::dashboard::{self, WindowsView};
use pipeline_core::runtime::{self, InputMeta, Output, Processor};
use pipeline_core::schema::EnrichedEvent;
use pipeline_core::window::{AlertPoint, Placement, WindowConfig, WindowStats, Windows, render_table};
use tokio_util::sync::CancellationToken;

/// Counts alerts per event-time window. It commits no offsets: at every start it replays
/// alert-data from the earliest offset to rebuild its windows, so no alert is lost across a
/// restart.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Kafka and runtime settings.
    #[command(flatten)]
    service: ServiceArgs,

    /// Topic of the alerts.
    #[arg(long, env = "ALERTS_TOPIC", default_value = "alert-data")]
    input_topic: String,

    /// Topic the window values are published to (key = window start).
    #[arg(long, env = "COUNTS_TOPIC", default_value = "alert-counts")]
    counts_topic: String,

    /// Topic late alerts are sent to.
    #[arg(long, env = "LATE_TOPIC", default_value = "alert-data.late")]
    late_topic: String,

    /// Window length.
    #[arg(long, env = "COUNTER_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    window: Duration,

    /// How far the watermark trails the largest event time seen.
    #[arg(long, env = "COUNTER_WATERMARK_DELAY", default_value = "48h", value_parser = humantime::parse_duration)]
    watermark_delay: Duration,

    /// A partition silent this long no longer holds the watermark back.
    #[arg(long, env = "COUNTER_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,

    /// How often the table is printed and changed windows are published.
    #[arg(long, env = "COUNTER_TRIGGER", default_value = "60s", value_parser = humantime::parse_duration)]
    trigger: Duration,

    /// Colors counted per window (one num_of_<color> column each), comma separated.
    #[arg(long, env = "COUNTER_COLORS", value_delimiter = ',', default_value = "Black,White,Silver")]
    colors: Vec<String>,

    /// Don't print the table (publish only).
    #[arg(long, env = "COUNTER_QUIET")]
    quiet: bool,
}

/// The windows as a runtime processor.
struct Counter {
    /// Window state.
    windows: Windows,
    /// Where window values go.
    counts_topic: Arc<str>,
    /// Where late alerts go.
    late_topic: Arc<str>,
    /// Print the table on every trigger.
    print: bool,
    /// How often the table is printed and changed windows are published.
    trigger: Duration,
    /// When that last happened.
    last_trigger: Instant,
    /// Alerts counted since start (the dashboard's total).
    counted: u64,
    /// Where the dashboard's snapshot goes (refreshed on every tick, at most every second).
    view: tokio::sync::watch::Sender<Arc<WindowsView>>,
    /// Gauges of the window state.
    metrics: CounterMetrics,
}

/// The counter's own metrics (no-ops without --metrics-addr).
struct CounterMetrics {
    /// Current watermark, Unix seconds.
    watermark: metrics::Gauge,
    /// Live windows.
    open_windows: metrics::Gauge,
    /// Alerts that arrived for a final window.
    late: metrics::Counter,
}

impl CounterMetrics {
    fn new() -> Self {
        Self {
            watermark: metrics::gauge!("pipeline_watermark_timestamp_seconds", "service" => "counter"),
            open_windows: metrics::gauge!("pipeline_open_windows", "service" => "counter"),
            late: metrics::counter!("pipeline_late_alerts_total", "service" => "counter"),
        }
    }
}

impl Counter {
    fn publish(&self, w: &WindowStats, out: &mut Vec<Output>) {
        out.push(Output {
            topic: self.counts_topic.clone(),
            key: Some(pipeline_core::schema::event_time::format(&w.start).into_bytes()),
            payload: w.to_json(&self.windows.config().colors),
            headers: None,
        });
    }

    fn publish_changed(&mut self, out: &mut Vec<Output>) {
        for w in self.windows.take_changed() {
            self.publish(&w, out);
        }
    }

    /// Publishes the changed windows and prints the table.
    fn trigger_now(&mut self, out: &mut Vec<Output>) {
        self.last_trigger = Instant::now();
        self.publish_changed(out);
        if self.print {
            self.print_table();
        }
    }

    /// Hands the dashboard a fresh snapshot (when someone watches).
    fn refresh_view(&self) {
        if self.view.receiver_count() == 0 {
            return;
        }
        self.view.send_replace(Arc::new(WindowsView {
            colors: self.windows.config().colors.clone(),
            windows: self.windows.live().cloned().collect(),
            watermark: self.windows.watermark(),
            late: self.windows.late(),
            counted: self.counted,
            updated: Some(chrono::Utc::now()),
        }));
    }

    fn print_table(&self) {
        let live: Vec<&WindowStats> = self.windows.live().collect();
        let watermark = self
            .windows
            .watermark()
            .map_or_else(|| "none".to_owned(), |w| pipeline_core::schema::event_time::format(&w));
        println!(
            "{}\nwindows: {}  watermark: {}  late alerts: {}",
            render_table(&live, &self.windows.config().colors),
            live.len(),
            watermark,
            self.windows.late()
        );
    }
}

impl Processor for Counter {
    type Input = EnrichedEvent;

    fn process(&mut self, alert: EnrichedEvent, meta: InputMeta<'_>, out: &mut Vec<Output>) {
        let now = Instant::now();
        let placed = self.windows.add(meta.partition, AlertPoint::from(&alert), now);
        if let Placement::Counted(_) = placed {
            self.counted += 1;
        }
        if let Placement::Late(window) = placed {
            tracing::warn!(event_id = %alert.event_id, %window, "late alert: its window is final");
            self.metrics.late.increment(1);
            out.push(Output {
                topic: self.late_topic.clone(),
                key: meta.key.map(<[u8]>::to_vec),
                payload: meta.payload.to_vec(),
                headers: None,
            });
        }
        // Windows the watermark passes are final: publish their last changes before they go.
        for w in self.windows.advance(now) {
            tracing::info!(window = %w.start, rows = w.rows, "window final");
            self.publish(&w, out);
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Output>) {
        self.metrics.open_windows.set(self.windows.live().count() as f64);
        if let Some(w) = self.windows.watermark() {
            self.metrics.watermark.set(w.timestamp_millis() as f64 / 1000.0);
        }
        self.refresh_view();
        if self.last_trigger.elapsed() >= self.trigger {
            self.trigger_now(out);
        }
    }

    fn on_shutdown(&mut self, out: &mut Vec<Output>) {
        self.refresh_view();
        self.trigger_now(out);
    }
}

async fn run(cli: Cli, cancel: CancellationToken) -> anyhow::Result<()> {
    let chrono =
        |d: Duration, flag: &str| chrono::Duration::from_std(d).with_context(|| format!("--{flag} is too large"));
    anyhow::ensure!(!cli.window.is_zero(), "--window must be longer than zero");
    let config = WindowConfig {
        size: chrono(cli.window, "window")?,
        watermark_delay: chrono(cli.watermark_delay, "watermark-delay")?,
        idle_timeout: cli.idle_timeout,
        colors: cli.colors.iter().map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect(),
    };
    // Ticks drive the dashboard (every second at most) as well as the trigger.
    let tick = cli.trigger.min(Duration::from_secs(1));
    let runtime_config = cli.service.runtime("counter", &cli.input_topic, false, tick);
    let (view, view_rx) = tokio::sync::watch::channel(Arc::new(WindowsView::default()));
    cli.service.observe_with(&runtime_config.readiness, dashboard::routes(view_rx), &cancel).await?;
    let processor = Counter {
        windows: Windows::new(config),
        counts_topic: Arc::from(cli.counts_topic.as_str()),
        late_topic: Arc::from(cli.late_topic.as_str()),
        print: !cli.quiet,
        trigger: cli.trigger,
        last_trigger: Instant::now(),
        counted: 0,
        view,
        metrics: CounterMetrics::new(),
    };
    runtime::run(&runtime_config, processor, cancel).await.context("counter")?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pipeline_core::shutdown::serve("counter", cli.service.log_format, |cancel| run(cli, cancel)).await
}
