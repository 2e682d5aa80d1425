//! Per-partition signals a scaler and an operator can trust, for the partitions this instance
//! owns now and no others.
//!
//! Fed by librdkafka's statistics (every 2 s with `--metrics-addr`: the broker's high
//! watermark and the loop's position per assigned partition) and by the loop (the newest event
//! time it processed per partition); rendered into `/metrics` as
//! - `pipeline_consumer_lag` (high watermark − position),
//! - `pipeline_partition_time_to_drain_seconds` (lag ÷ the position's advance over the last
//!   [`RATE_WINDOW`]; +Inf when it does not advance),
//! - `pipeline_partition_event_time_lag_seconds` (now − the newest event time processed),
//! - `pipeline_partition_stalled` (1 while the partition is assigned, its lag grew and nothing
//!   was consumed from it for [`STALL_AFTER`]; `/readyz` then says so, as a degraded check),
//!
//! each labelled `service`, `topic`, `partition`. The series of a revoked partition go at the
//! revocation: a gauge library keeps the last value of a series forever, which shows an old
//! owner still lagging after a rebalance (Vector 21134) and double-counts lag across instances.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A partition assigned, its lag growing, and nothing consumed from it this long: stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(60);
/// The span over which a partition's throughput is measured for its time to drain.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);

/// The partitions this instance owns, with what is known of each. Cloned into the consumer's
/// context, the loop and the metrics server.
#[derive(Debug, Clone, Default)]
pub struct PartitionHealth {
    /// Partition → its state; only partitions owned now.
    partitions: Arc<Mutex<BTreeMap<i32, Partition>>>,
}

/// One owned partition.
#[derive(Debug)]
struct Partition {
    /// `service="…",topic="…",partition="…"`, made once.
    labels: String,
    /// Statistics samples of the last [`RATE_WINDOW`] (and the one just before it).
    samples: VecDeque<Sample>,
    /// The newest event time processed, in ms since the epoch (None: none yet).
    newest_event_ms: Option<i64>,
    /// When the position last advanced (or the partition was first seen), and the high
    /// watermark then.
    moved: (Instant, i64),
}

/// What librdkafka's statistics said of a partition at one time.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// When.
    at: Instant,
    /// The broker's high watermark.
    high: i64,
    /// The loop's position (the next offset it will be handed).
    position: i64,
}

/// What a partition looks like now.
#[derive(Debug, Clone, Copy, PartialEq)]
struct View {
    /// High watermark − position.
    lag: i64,
    /// Lag ÷ records per second over the window (0 without lag, +Inf without progress).
    time_to_drain: f64,
    /// Assigned, lag grown, nothing consumed for [`STALL_AFTER`]: for how long.
    stalled_for: Option<Duration>,
}

impl Partition {
    fn view(&self, now: Instant) -> Option<View> {
        let last = self.samples.back()?;
        let lag = (last.high - last.position).max(0);
        let first = self.samples.front()?;
        let secs = last.at.saturating_duration_since(first.at).as_secs_f64();
        let rate = if secs > 0.0 { (last.position - first.position) as f64 / secs } else { 0.0 };
        let time_to_drain = match (lag, rate > 0.0) {
            (0, _) => 0.0,
            (_, true) => lag as f64 / rate,
            (_, false) => f64::INFINITY,
        };
        let still = now.saturating_duration_since(self.moved.0);
        let stalled_for = (lag > 0 && last.high > self.moved.1 && still >= STALL_AFTER).then_some(still);
        Some(View { lag, time_to_drain, stalled_for })
    }
}

impl PartitionHealth {
    /// A statistics sample of an assigned partition of `topic`.
    pub fn observe(&self, service: &str, topic: &str, partition: i32, high: i64, position: i64, now: Instant) {
        let mut partitions = pipeline_core::lock(&self.partitions);
        let p = partitions.entry(partition).or_insert_with(|| Partition {
            labels: format!("service=\"{service}\",topic=\"{topic}\",partition=\"{partition}\""),
            samples: VecDeque::new(),
            newest_event_ms: None,
            moved: (now, high),
        });
        if p.samples.back().is_some_and(|s| position > s.position) {
            p.moved = (now, high);
        }
        p.samples.push_back(Sample { at: now, high, position });
        // Keep one sample older than the window, so the window is always covered.
        while p.samples.len() > 2
            && p.samples.get(1).is_some_and(|s| now.saturating_duration_since(s.at) >= RATE_WINDOW)
        {
            p.samples.pop_front();
        }
    }

    /// The newest event time the loop processed of `partition` (ms since the epoch).
    pub fn event_time(&self, partition: i32, ms: i64) {
        if let Some(p) = pipeline_core::lock(&self.partitions).get_mut(&partition) {
            p.newest_event_ms = Some(p.newest_event_ms.map_or(ms, |newest| newest.max(ms)));
        }
    }

    /// The partitions were revoked: their series go now.
    pub fn forget(&self, partitions: &[i32]) {
        let mut owned = pipeline_core::lock(&self.partitions);
        partitions.iter().for_each(|p| drop(owned.remove(p)));
    }

    /// One line per stalled partition, for `/readyz` (empty when none is).
    pub fn stalled(&self, now: Instant) -> Vec<String> {
        pipeline_core::lock(&self.partitions)
            .iter()
            .filter_map(|(id, p)| {
                let view = p.view(now)?;
                view.stalled_for.map(|still| {
                    format!(
                        "partition {id} stalled: lag {} growing, nothing consumed for {} s",
                        view.lag,
                        still.as_secs()
                    )
                })
            })
            .collect()
    }

    /// The gauges in Prometheus's text format, `now_ms` being the wall clock in ms.
    pub fn render(&self, now: Instant, now_ms: i64) -> String {
        let partitions = pipeline_core::lock(&self.partitions);
        let views: Vec<(&Partition, View)> = partitions.values().filter_map(|p| Some((p, p.view(now)?))).collect();
        let mut out = String::new();
        let mut family = |name: &str, help: &str, value: &dyn Fn(&Partition, &View) -> Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (p, view) in &views {
                if let Some(v) = value(p, view) {
                    let v = if v.is_infinite() { "+Inf".to_owned() } else { v.to_string() };
                    let _ = writeln!(out, "{name}{{{}}} {v}", p.labels);
                }
            }
        };
        family("pipeline_consumer_lag", "High watermark minus the position, per owned partition.", &|_, v| {
            Some(v.lag as f64)
        });
        family(
            "pipeline_partition_time_to_drain_seconds",
            "Lag divided by the records per second consumed over the last 30 s (+Inf without progress).",
            &|_, v| Some(v.time_to_drain),
        );
        family(
            "pipeline_partition_event_time_lag_seconds",
            "Now minus the newest event time processed, per owned partition.",
            &|p, _| p.newest_event_ms.map(|ms| (now_ms - ms) as f64 / 1000.0),
        );
        family(
            "pipeline_partition_stalled",
            "1 while assigned, its lag grew and nothing was consumed for 60 s.",
            &|_, v| Some(f64::from(u8::from(v.stalled_for.is_some()))),
        );
        out
    }
}

#[cfg(test)]
mod tests;
