//! The counter's processor: per input partition, event-time windows restored from and saved to
//! S3 checkpoints, published as partial windows keyed by (window, partition).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::checkpoint::{CheckpointError, CheckpointStore, Recovery, ReplayReason, Restore};
use crate::dashboard::WindowsView;
use crate::emit::EmitMode;
use crate::table::render_rows;
use pipeline_core::lock;
use pipeline_core::log_limit::LogLimit;
use pipeline_core::schema::{EnrichedEvent, event_time};
use pipeline_core::window::{
    AlertPoint, PartialMerge, Placement, Progress, Row, WindowConfig, Windows, frontier, merge_rows,
};
use pipeline_kafka::observe::Readiness;
use pipeline_kafka::runtime::{CheckpointWrite, Detached, InputMeta, Output, Processor, ProcessorError, Resume};
use pipeline_kafka::telemetry::{admit_line, flush_lines};

/// One input partition's windows.
#[derive(Debug)]
struct PartitionWindows {
    /// Its windows (each partition has its own watermark, so its state depends on its records
    /// alone and a replay from a checkpoint rebuilds exactly the same values).
    windows: Windows,
    /// The next offset: the windows cover every record before it.
    next_offset: i64,
    /// Alerts counted in it so far.
    counted: u64,
    /// Changed since its last checkpoint.
    dirty: bool,
}

/// Where checkpoints go and which one a start uses.
#[derive(Debug)]
pub struct Checkpoints {
    /// The store.
    pub store: CheckpointStore,
    /// The operator's choice for this start (`latest` once a partition was restored).
    pub recovery: Recovery,
    /// Where [`STORE_CHECK`] is reported: failing while the store answers with a transient
    /// error (the service keeps running and retrying), passing again once it answers.
    pub readiness: Readiness,
}

/// The readiness check the checkpoint store answers for.
pub const STORE_CHECK: &str = "checkpoint_store";

/// What a counter is made with (the flags that shape it; the rest have defaults and `with_*`).
#[derive(Debug)]
pub struct CounterSettings {
    /// Window parameters.
    pub config: WindowConfig,
    /// Input topic (named in checkpoints).
    pub input_topic: String,
    /// Checkpointing (None: `--checkpoint-interval 0`, replay the whole topic at every start).
    pub checkpoints: Option<Checkpoints>,
    /// Where window values go.
    pub counts_topic: String,
    /// Where late alerts go.
    pub late_topic: String,
    /// Print the table on every trigger.
    pub print: bool,
    /// How often the table is printed and changed windows are published.
    pub trigger: Duration,
    /// Where the dashboard's snapshot goes.
    pub view: tokio::sync::watch::Sender<Arc<WindowsView>>,
}

/// The windows as a runtime processor.
#[derive(Debug)]
pub struct Counter {
    /// Window parameters.
    pub config: WindowConfig,
    /// Input topic (named in checkpoints).
    pub input_topic: String,
    /// The partitions this instance owns.
    parts: BTreeMap<i32, PartitionWindows>,
    /// Checkpointing (None: `--checkpoint-interval 0`, replay the whole topic at every start).
    checkpoints: Option<Checkpoints>,
    /// Partitions restored once already (the recovery choice applies to the first time only).
    restored: HashSet<i32>,
    /// Partitions in the checkpoint being written (their `dirty` was cleared at its snapshot;
    /// one it does not make durable is dirty again).
    writing: Vec<i32>,
    /// Partials of every partition read back from the counts topic (other instances' shares).
    pub peers: Arc<Mutex<PartialMerge>>,
    /// Where window values go.
    pub counts_topic: Arc<str>,
    /// Where late alerts go.
    pub late_topic: Arc<str>,
    /// Print the table on every trigger.
    pub print: bool,
    /// How often the table is printed and changed windows are published.
    pub trigger: Duration,
    /// When that last happened.
    last_trigger: Instant,
    /// Which rows a trigger publishes and prints (`--emit`).
    pub emit: EmitMode,
    /// Windows this counter published a row of since the last trigger (what an `updates` or
    /// `final` table prints).
    touched: BTreeSet<chrono::DateTime<chrono::Utc>>,
    /// Where the dashboard's snapshot goes (refreshed on every tick, at most every second).
    pub view: tokio::sync::watch::Sender<Arc<WindowsView>>,
    /// Gauges of the window state.
    metrics: CounterMetrics,
    /// How far ahead of this machine's clock an alert's event time may be (`--max-clock-skew`):
    /// one beyond it would move its partition's watermark past every real alert.
    pub max_clock_skew: chrono::Duration,
    /// Late-alert lines written: a flood of late alerts gives one line per period and a
    /// summary (each is in the late topic and `pipeline_late_alerts_total`).
    late_log: LogLimit,
}

/// The counter's own metrics (no-ops without --metrics-addr).
#[derive(Debug)]
struct CounterMetrics {
    /// Smallest watermark of the owned partitions, Unix seconds.
    watermark: metrics::Gauge,
    /// Windows in the merged table.
    open_windows: metrics::Gauge,
    /// Alerts that arrived for a final window.
    late: metrics::Counter,
    /// Alerts dead-lettered for an event time beyond `--max-clock-skew` ahead.
    skewed: metrics::Counter,
    /// Unix time of the last checkpoint written.
    checkpoint: metrics::Gauge,
}

impl Counter {
    /// A counter owning no partition yet.
    pub fn new(settings: CounterSettings) -> Self {
        let CounterSettings { config, input_topic, checkpoints, counts_topic, late_topic, print, trigger, view } =
            settings;
        Self {
            config,
            input_topic,
            parts: BTreeMap::new(),
            checkpoints,
            restored: HashSet::new(),
            writing: Vec::new(),
            peers: Arc::default(),
            counts_topic: Arc::from(counts_topic.as_str()),
            late_topic: Arc::from(late_topic.as_str()),
            print,
            trigger,
            last_trigger: Instant::now(),
            emit: EmitMode::default(),
            touched: BTreeSet::new(),
            view,
            late_log: LogLimit::default(),
            max_clock_skew: chrono::Duration::minutes(10),
            metrics: CounterMetrics {
                watermark: metrics::gauge!("pipeline_watermark_timestamp_seconds", "service" => "counter"),
                open_windows: metrics::gauge!("pipeline_open_windows", "service" => "counter"),
                late: metrics::counter!("pipeline_late_alerts_total", "service" => "counter"),
                skewed: metrics::counter!("pipeline_clock_skew_alerts_total", "service" => "counter"),
                checkpoint: metrics::gauge!("pipeline_checkpoint_timestamp_seconds", "service" => "counter"),
            },
        }
    }

    /// With alerts more than `skew` ahead of this machine's clock dead-lettered (default 10 min).
    pub fn with_max_clock_skew(mut self, skew: chrono::Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    /// [`Processor::admit`] with this machine's clock at `wall`: an alert stamped more than
    /// `--max-clock-skew` ahead is refused (dead-lettered with how far ahead it was), so no
    /// watermark ever moves to a device's broken clock.
    fn admit_at(&mut self, alert: &EnrichedEvent<'_>, wall: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
        let ahead = alert.event_time.signed_duration_since(wall);
        if ahead <= self.max_clock_skew {
            return Ok(());
        }
        self.metrics.skewed.increment(1);
        let whole =
            |d: chrono::Duration| humantime::format_duration(Duration::from_secs(d.num_seconds().unsigned_abs()));
        Err(format!(
            "event_time {} is {} ahead of this counter's clock ({}), more than --max-clock-skew {}: counting it would \
             move its partition's watermark past every real alert",
            event_time::format(&alert.event_time),
            whole(ahead),
            event_time::format(&wall),
            whole(self.max_clock_skew),
        ))
    }

    /// With emit mode `mode` (the default is the seed's `complete`).
    pub fn with_emit(mut self, mode: EmitMode) -> Self {
        self.emit = mode;
        self
    }

    /// The counts topic's record of one partition's row of a window.
    fn partial(&mut self, row: &Row, partition: i32, next_offset: i64) -> Output {
        self.touched.insert(row.stats.start);
        Output {
            topic: self.counts_topic.clone(),
            key: Some(format!("{}/{partition}", event_time::format(&row.stats.start)).into_bytes()),
            payload: row.to_partial_json(&self.config.colors, partition, next_offset),
            headers: None,
        }
    }

    /// The whole windows: the owned partitions' fresh state (live windows, plus with `finals`
    /// the final ones still kept) plus the other partitions' latest published partials.
    pub fn merged(&self, finals: bool) -> Vec<Row> {
        let mut own = Vec::new();
        for part in self.parts.values() {
            own.extend(part.windows.live_rows());
            if finals {
                own.extend(part.windows.final_rows());
            }
        }
        let peers = lock(&self.peers).merged_rows(|p| self.parts.contains_key(&p));
        merge_rows(peers, own)
    }

    /// Smallest watermark of the owned partitions.
    fn watermark(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.parts.values().filter_map(|p| p.windows.watermark()).min()
    }

    fn late(&self) -> u64 {
        self.parts.values().map(|p| p.windows.late()).sum()
    }

    /// Publishes what the emit mode publishes at a trigger and prints its table.
    fn trigger_now(&mut self, out: &mut Vec<Output>) {
        self.last_trigger = Instant::now();
        let mut rows = Vec::new();
        for (partition, part) in &mut self.parts {
            let published = part.windows.publish(self.emit.publishes_open());
            // Their revisions moved: the next checkpoint must carry them.
            part.dirty |= !published.is_empty();
            rows.extend(published.into_iter().map(|r| (r, *partition, part.next_offset)));
        }
        for (row, partition, next_offset) in rows {
            let record = self.partial(&row, partition, next_offset);
            out.push(record);
        }
        let own = |p: i32| self.parts.contains_key(&p);
        let mut touched = lock(&self.peers).take_touched(own);
        touched.append(&mut self.touched);
        if self.print {
            let merged = self.emit.table(|| self.merged(false), || self.merged(true), &touched);
            let watermark = self.watermark().map_or_else(|| "none".to_owned(), |w| event_time::format(&w));
            println!(
                "{}\nwindows: {}  watermark: {}  late alerts: {}  partitions: {:?}",
                render_rows(&merged, &self.config.colors),
                merged.len(),
                watermark,
                self.late(),
                self.parts.keys().collect::<Vec<_>>()
            );
        }
    }

    /// Refreshes the dashboard and the gauges; forgets peer windows past every watermark.
    fn refresh_view(&self) {
        let merged = self.merged(false);
        self.metrics.open_windows.set(merged.len() as f64);
        let watermark = self.watermark();
        if let Some(w) = watermark {
            self.metrics.watermark.set(w.timestamp_millis() as f64 / 1000.0);
        }
        if let Some(newest) = merged.last() {
            // Two delays: peers keep their final windows for corrections one delay longer.
            let horizon = newest.stats.start - self.config.watermark_delay * 2 - self.config.size;
            lock(&self.peers).forget_before(horizon);
        }
        if self.view.receiver_count() == 0 {
            return;
        }
        let shown = self.emit.dashboard(|| merged, || self.merged(true));
        self.view.send_replace(Arc::new(WindowsView {
            colors: self.config.colors.clone(),
            emit: shown.iter().map(|r| r.meta).collect(),
            windows: shown.into_iter().map(|r| r.stats).collect(),
            watermark,
            late: self.late(),
            counted: self.parts.values().map(|p| p.counted).sum(),
            updated: Some(chrono::Utc::now()),
        }));
    }

    /// [`Processor::process`] at processing time `now`.
    fn process_at(&mut self, alert: EnrichedEvent<'_>, meta: InputMeta<'_>, now: Instant, out: &mut Vec<Output>) {
        let Some(part) = self.parts.get_mut(&meta.partition) else {
            tracing::error!(partition = meta.partition, "a record of a partition that was never resumed");
            return;
        };
        part.next_offset = meta.offset + 1;
        part.dirty = true;
        match part.windows.add(meta.partition, AlertPoint::from(&alert), now) {
            Placement::Counted(_) => part.counted += 1,
            Placement::Late(window) => {
                if admit_line(&mut self.late_log, "late-alert") {
                    tracing::warn!(event_id = %alert.event_id, %window, "late alert: its window is final");
                }
                self.metrics.late.increment(1);
                out.push(Output {
                    topic: self.late_topic.clone(),
                    key: meta.key.map(<[u8]>::to_vec),
                    payload: meta.payload.to_vec(),
                    headers: None,
                });
            }
        }
        // Windows the watermark passes are final: publish their last values before they go.
        let (next_offset, done) = (part.next_offset, part.windows.advance_rows(now));
        for row in done {
            tracing::info!(window = %row.stats.start, partition = meta.partition, rows = row.stats.rows, "window final");
            let record = self.partial(&row, meta.partition, next_offset);
            out.push(record);
        }
    }

    /// [`Processor::on_tick`] at processing time `now`.
    fn tick_at(&mut self, now: Instant, out: &mut Vec<Output>) {
        flush_lines(&mut self.late_log, "late-alert");
        self.close_idle(now, out);
        if now.duration_since(self.last_trigger) >= self.trigger {
            self.trigger_now(out);
        }
        self.refresh_view();
    }

    /// Lets partitions that went idle (nothing read for `--idle-timeout`) stop holding the
    /// watermark back: the windows of every owned partition advance to the shared frontier (the
    /// slowest active partition's largest event time), which closes the idle ones' windows
    /// without a new record of theirs. An active partition is never behind its own watermark, so
    /// only idle ones move: their finals depend on wall time, the active ones' on their records.
    /// With every partition idle nothing moves (as a Flink operator whose inputs are all idle):
    /// that is as likely a stalled reader (a checkpoint awaiting acknowledgements, a paused
    /// broker) as a quiet topic, and closing windows then would make the next records late.
    fn close_idle(&mut self, now: Instant, out: &mut Vec<Output>) {
        let progress: Vec<Progress> = self.parts.values().flat_map(|p| p.windows.progress(now)).collect();
        if progress.iter().all(|p| p.idle) {
            return;
        }
        let shared = frontier(progress);
        let mut closed = Vec::new();
        for (partition, part) in &mut self.parts {
            let done = part.windows.advance_to_rows(shared);
            // Final windows leave the state: the next checkpoint must not bring them back.
            part.dirty |= !done.is_empty();
            closed.extend(done.into_iter().map(|w| (w, *partition, part.next_offset)));
        }
        for (row, partition, next_offset) in closed {
            tracing::info!(window = %row.stats.start, partition, rows = row.stats.rows, "window final (the partition is idle)");
            let record = self.partial(&row, partition, next_offset);
            out.push(record);
        }
    }

    /// The checkpoint of the changed partitions `of` selects, as the write that makes it
    /// durable (None: none changed, or no checkpoints).
    fn snapshot(&mut self, of: impl Fn(i32) -> bool) -> Option<CheckpointWrite> {
        let checkpoints = self.checkpoints.as_ref()?;
        // A write that never reported (a stop or a deadline cut it short) made nothing durable.
        for partition in std::mem::take(&mut self.writing) {
            if let Some(part) = self.parts.get_mut(&partition) {
                part.dirty = true;
            }
        }
        let mut snapshot = Vec::new();
        for (partition, part) in self.parts.iter_mut().filter(|(p, part)| part.dirty && of(**p)) {
            part.dirty = false;
            self.writing.push(*partition);
            snapshot.push(CheckpointStore::checkpoint(
                &self.input_topic,
                *partition,
                part.next_offset,
                &self.config,
                part.counted,
                part.windows.state(),
            ));
        }
        if snapshot.is_empty() {
            return None;
        }
        let (store, readiness) = (checkpoints.store.clone(), checkpoints.readiness.clone());
        Some(Box::pin(write_checkpoints(store, snapshot, readiness)))
    }

    fn fresh(&self) -> PartitionWindows {
        PartitionWindows { windows: Windows::new(self.config.clone()), next_offset: 0, counted: 0, dirty: false }
    }
}

/// Loads a checkpoint, waiting (with backoff) while the store answers with a transient error
/// (unreachable, stalled, busy), with [`STORE_CHECK`] failing meanwhile; any other error is
/// final (the service stops with it: a refused credential or a damaged checkpoint needs an
/// operator, and waiting would hide it).
async fn load_patiently(
    store: CheckpointStore,
    partition: i32,
    recovery: Recovery,
    config: WindowConfig,
    readiness: Readiness,
) -> Result<Restore, CheckpointError> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match store.load(partition, recovery, &config).await {
            Err(e) if e.is_transient() => {
                tracing::warn!(partition, error = %e, retry_in = ?backoff, "checkpoint store not answering; waiting");
                readiness.fail(STORE_CHECK, e.to_string());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            other => {
                if other.is_ok() {
                    readiness.set(STORE_CHECK, true);
                }
                return other;
            }
        }
    }
}

/// Writes `snapshot` (one checkpoint per partition): the (partition, next offset) pairs made
/// durable. A transient error skips that partition (the next checkpoint retries it) with
/// [`STORE_CHECK`] failing until a write succeeds; any other error is final.
async fn write_checkpoints(
    store: CheckpointStore,
    snapshot: Vec<crate::checkpoint::Checkpoint>,
    readiness: Readiness,
) -> Result<Vec<(i32, i64)>, ProcessorError> {
    let mut durable = Vec::with_capacity(snapshot.len());
    let mut failed = None;
    for checkpoint in &snapshot {
        match store.save(checkpoint).await {
            Ok(()) => durable.push((checkpoint.partition, checkpoint.next_offset)),
            Err(e) if e.is_transient() => failed = Some((checkpoint.partition, e)),
            Err(e) => return Err(e.into()),
        }
    }
    match failed {
        Some((partition, e)) => {
            tracing::warn!(partition, error = %e, "checkpoint failed; the next one retries");
            readiness.fail(STORE_CHECK, e.to_string());
        }
        None => readiness.set(STORE_CHECK, true),
    }
    if !durable.is_empty() {
        tracing::info!(?durable, url = %store.url(durable[0].0), "checkpointed");
    }
    Ok(durable)
}

impl Processor for Counter {
    /// None without checkpointing (`--checkpoint-interval 0`): the partition is replayed.
    type Restored = Option<Restore>;
    type Input<'a> = EnrichedEvent<'a>;

    fn admit(&mut self, alert: &EnrichedEvent<'_>) -> Result<(), String> {
        self.admit_at(alert, chrono::Utc::now())
    }

    fn process(&mut self, alert: EnrichedEvent<'_>, meta: InputMeta<'_>, out: &mut Vec<Output>) {
        self.process_at(alert, meta, Instant::now(), out);
    }

    fn on_dead_letter(&mut self, partition: i32, offset: i64) {
        // The checkpoint covers the poison record: its commit moves past it, and a restore
        // does not read (and dead-letter) it again.
        let Some(part) = self.parts.get_mut(&partition) else {
            tracing::error!(partition, offset, "a dead letter of a partition that was never resumed");
            return;
        };
        if offset >= part.next_offset {
            part.next_offset = offset + 1;
            part.dirty = true;
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Output>) {
        self.tick_at(Instant::now(), out);
    }

    fn on_shutdown(&mut self, out: &mut Vec<Output>) {
        self.trigger_now(out);
        self.refresh_view();
    }

    fn restore(&mut self, partition: i32) -> Detached<Result<Self::Restored, ProcessorError>> {
        let first = self.restored.insert(partition);
        let Some(checkpoints) = &self.checkpoints else { return Box::pin(std::future::ready(Ok(None))) };
        let recovery = if first { checkpoints.recovery } else { Recovery::Latest };
        let (store, readiness) = (checkpoints.store.clone(), checkpoints.readiness.clone());
        let loading = load_patiently(store, partition, recovery, self.config.clone(), readiness);
        Box::pin(async move { Ok(Some(loading.await?)) })
    }

    fn resumed(&mut self, partition: i32, restored: Option<Restore>) -> Resume {
        match restored {
            None => {
                self.parts.insert(partition, self.fresh());
                Resume::At(0)
            }
            Some(Restore::From(c)) => {
                tracing::info!(
                    partition, next_offset = c.next_offset, windows = c.state.windows.len(), counted = c.counted,
                    written_at = %c.written_at, "restored from checkpoint"
                );
                let windows = Windows::restore(self.config.clone(), partition, c.state, Instant::now());
                let part = PartitionWindows { windows, next_offset: c.next_offset, counted: c.counted, dirty: false };
                self.parts.insert(partition, part);
                Resume::At(c.next_offset)
            }
            Some(Restore::Replay(reason)) => {
                if matches!(reason, ReplayReason::NoPrevious { .. }) {
                    tracing::warn!(partition, "{reason}");
                } else {
                    tracing::info!(partition, "{reason}");
                }
                self.parts.insert(partition, self.fresh());
                Resume::At(0)
            }
        }
    }

    fn replay(&mut self, partition: i32) {
        // The restored windows counted records the log no longer holds.
        self.parts.insert(partition, PartitionWindows { dirty: true, ..self.fresh() });
    }

    fn on_revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            if self.parts.remove(p).is_some() {
                tracing::info!(partition = p, "partition revoked: its windows are the next owner's now");
            }
        }
    }

    fn checkpoint(&mut self) -> Option<CheckpointWrite> {
        self.snapshot(|_| true)
    }

    fn hand_off(&mut self, partitions: &[i32]) -> Option<CheckpointWrite> {
        self.snapshot(|p| partitions.contains(&p))
    }

    fn checkpointed(&mut self, durable: &[(i32, i64)]) {
        for partition in std::mem::take(&mut self.writing) {
            if durable.iter().any(|(p, _)| *p == partition) {
                continue;
            }
            if let Some(part) = self.parts.get_mut(&partition) {
                part.dirty = true;
            }
        }
        if !durable.is_empty() {
            self.metrics.checkpoint.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
    }
}

#[cfg(test)]
mod emit_tests;
#[cfg(test)]
mod tests;
