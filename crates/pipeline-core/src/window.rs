//! Event-time tumbling windows with a watermark: the counter's aggregation.
//!
//! Each alert counts in the window `[floor(event_time / size) * size, + size)`. The watermark is
//! the smallest, over the input partitions that are not idle, of the largest event time seen on
//! that partition, minus the allowed delay; it never goes back. A partition that has received
//! nothing for `idle_timeout` (processing time) is left out so it cannot hold the watermark
//! back; when every partition is idle the largest event time of all is used. A window whose end
//! is at or behind the watermark is final: it leaves the state, and an alert that would fall in
//! it later is late (not counted, reported to the caller).
//!
//! Windows that keep apart (one [`Windows`] per input partition, as the counter does) can still
//! share idleness: [`frontier`] of all their [`Windows::progress`] is the event time no active
//! partition is behind, and [`Windows::advance_to`] it closes the windows of those that went
//! idle, without any new record.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::ser::{SerializeMap, Serializer};

use crate::schema::event_time;

mod merge;
#[cfg(test)]
mod tests;

pub use merge::{PartialMerge, merge_windows};

/// Window parameters.
#[derive(Debug, Clone)]
pub struct WindowConfig {
    /// Window length (the seed's 15 minutes).
    pub size: chrono::Duration,
    /// How far behind the largest event time the watermark trails (the seed's 48 hours).
    pub watermark_delay: chrono::Duration,
    /// A partition silent for this long no longer holds the watermark back.
    pub idle_timeout: Duration,
    /// Colors counted per window (`num_of_<lowercase name>`), matched case-insensitively.
    pub colors: Vec<String>,
}

/// The aggregate of one window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowStats {
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Exclusive end.
    pub end: DateTime<Utc>,
    /// Alerts counted.
    pub rows: u64,
    /// Alerts per configured color, in [`WindowConfig::colors`] order.
    pub colors: Vec<u64>,
    /// Largest speed.
    pub max_speed: f64,
    /// Largest gear.
    pub max_gear: i32,
    /// Largest rpm.
    pub max_rpm: i32,
}

impl WindowStats {
    fn new(start: DateTime<Utc>, size: chrono::Duration, colors: usize) -> Self {
        Self {
            start,
            end: start + size,
            rows: 0,
            colors: vec![0; colors],
            max_speed: f64::NEG_INFINITY,
            max_gear: i32::MIN,
            max_rpm: i32::MIN,
        }
    }

    /// The seed's row: `window_start, window_end, num_of_rows, num_of_<color>…, maximum_speed,
    /// maximum_gear, maximum_rpm`, as JSON.
    pub fn to_json(&self, colors: &[String]) -> Vec<u8> {
        self.row_json(colors, None)
    }

    /// The seed's row for one input partition's share of the window, plus `partition` and
    /// `input_offset` (the next offset of that partition not counted in it).
    pub fn to_partial_json(&self, colors: &[String], partition: i32, input_offset: i64) -> Vec<u8> {
        self.row_json(colors, Some((partition, input_offset)))
    }

    fn row_json(&self, colors: &[String], partial: Option<(i32, i64)>) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut ser = serde_json::Serializer::new(&mut out);
        self.serialize_row(colors, partial, &mut ser).expect("serializing into a Vec cannot fail");
        out
    }

    /// Parses a row of [`WindowStats::to_json`] or [`WindowStats::to_partial_json`]; returns
    /// the partial's (partition, input_offset) when it has them.
    pub fn from_row(row: &[u8], colors: &[String]) -> Result<(Self, Option<(i32, i64)>), String> {
        let v: serde_json::Value = serde_json::from_slice(row).map_err(|e| format!("not JSON: {e}"))?;
        let field = |name: &str| v.get(name).ok_or_else(|| format!("no `{name}`"));
        let time = |name: &str| {
            field(name)?.as_str().ok_or_else(|| format!("`{name}` is not a string")).and_then(event_time::parse)
        };
        let int = |name: &str| field(name)?.as_i64().ok_or_else(|| format!("`{name}` is not an integer"));
        let stats = Self {
            start: time("window_start")?,
            end: time("window_end")?,
            rows: u64::try_from(int("num_of_rows")?).map_err(|e| e.to_string())?,
            colors: colors
                .iter()
                .map(|c| int(&color_column(c)).and_then(|n| u64::try_from(n).map_err(|e| e.to_string())))
                .collect::<Result<_, _>>()?,
            max_speed: field("maximum_speed")?.as_f64().ok_or("`maximum_speed` is not a number")?,
            max_gear: i32::try_from(int("maximum_gear")?).map_err(|e| e.to_string())?,
            max_rpm: i32::try_from(int("maximum_rpm")?).map_err(|e| e.to_string())?,
        };
        let partial = match (v.get("partition"), v.get("input_offset")) {
            (Some(p), Some(o)) => Some((
                p.as_i64().and_then(|p| i32::try_from(p).ok()).ok_or("`partition` is not a partition")?,
                o.as_i64().ok_or("`input_offset` is not an offset")?,
            )),
            _ => None,
        };
        Ok((stats, partial))
    }

    /// Adds `other` (the same window, other alerts) into this one: counts add, maxima take
    /// the larger.
    pub fn merge(&mut self, other: &WindowStats) {
        self.rows += other.rows;
        for (mine, theirs) in self.colors.iter_mut().zip(&other.colors) {
            *mine += theirs;
        }
        self.max_speed = self.max_speed.max(other.max_speed);
        self.max_gear = self.max_gear.max(other.max_gear);
        self.max_rpm = self.max_rpm.max(other.max_rpm);
    }

    fn serialize_row<S: Serializer>(
        &self,
        colors: &[String],
        partial: Option<(i32, i64)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(9 + colors.len()))?;
        map.serialize_entry("window_start", &event_time::format(&self.start))?;
        map.serialize_entry("window_end", &event_time::format(&self.end))?;
        map.serialize_entry("num_of_rows", &self.rows)?;
        for (name, count) in colors.iter().zip(&self.colors) {
            map.serialize_entry(&color_column(name), count)?;
        }
        map.serialize_entry("maximum_speed", &self.max_speed)?;
        map.serialize_entry("maximum_gear", &self.max_gear)?;
        map.serialize_entry("maximum_rpm", &self.max_rpm)?;
        if let Some((partition, input_offset)) = partial {
            map.serialize_entry("partition", &partition)?;
            map.serialize_entry("input_offset", &input_offset)?;
        }
        map.end()
    }
}

/// The durable part of [`Windows`] (a checkpoint's content).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowsState {
    /// Largest event time seen.
    pub max_event_time: Option<DateTime<Utc>>,
    /// The watermark.
    pub watermark: Option<DateTime<Utc>>,
    /// Late alerts seen.
    pub late: u64,
    /// Live windows, oldest first.
    pub windows: Vec<WindowStats>,
}

/// `num_of_<lowercase color>`.
pub fn color_column(color: &str) -> String {
    format!("num_of_{}", color.to_lowercase().replace(' ', "_"))
}

/// What the windows need of one alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertPoint<'a> {
    /// Event time: picks the window.
    pub at: DateTime<Utc>,
    /// Speed, for the maximum.
    pub speed: f64,
    /// Gear, for the maximum.
    pub gear: i32,
    /// Rpm, for the maximum.
    pub rpm: i32,
    /// Color name, for the color counts (None: unknown car).
    pub color: Option<&'a str>,
}

impl<'a> From<&'a crate::schema::EnrichedEvent<'_>> for AlertPoint<'a> {
    fn from(e: &'a crate::schema::EnrichedEvent<'_>) -> Self {
        Self { at: e.event_time, speed: e.speed, gear: e.gear, rpm: e.rpm, color: e.color_name.as_deref() }
    }
}

/// What happened to one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Counted in the window starting here.
    Counted(DateTime<Utc>),
    /// Its window was already final: not counted.
    Late(DateTime<Utc>),
}

/// Event-time progress of one input partition.
#[derive(Debug, Clone, Copy)]
struct PartitionClock {
    max_event_time: DateTime<Utc>,
    last_seen: Instant,
}

/// One input partition's event-time progress seen at a processing instant: what a watermark is
/// computed from, exposed so that windows kept apart can share one (see [`frontier`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Largest event time read from the partition: it holds the watermark back to this.
    pub max_event_time: DateTime<Utc>,
    /// Nothing read from it for [`WindowConfig::idle_timeout`]: it no longer holds the watermark
    /// back (until its next record).
    pub idle: bool,
}

/// The event time the watermark trails, over partitions' `progress`: the smallest largest event
/// time of those that are not idle or, when every one is idle, the largest of all; None without
/// any partition.
pub fn frontier(progress: impl IntoIterator<Item = Progress>) -> Option<DateTime<Utc>> {
    let (mut active, mut all) = (None::<DateTime<Utc>>, None::<DateTime<Utc>>);
    for p in progress {
        all = all.max(Some(p.max_event_time));
        if !p.idle {
            active = Some(active.map_or(p.max_event_time, |a| a.min(p.max_event_time)));
        }
    }
    active.or(all)
}

/// The live windows and the watermark.
#[derive(Debug)]
pub struct Windows {
    config: WindowConfig,
    /// Live windows by start.
    live: BTreeMap<DateTime<Utc>, WindowStats>,
    /// Windows changed since the last [`Windows::take_changed`].
    changed: std::collections::BTreeSet<DateTime<Utc>>,
    /// Per-partition event-time progress.
    partitions: HashMap<i32, PartitionClock>,
    /// Current watermark (None until the first alert).
    watermark: Option<DateTime<Utc>>,
    /// Alerts that arrived for final windows.
    late: u64,
}

impl Windows {
    /// Empty state.
    pub fn new(config: WindowConfig) -> Self {
        Self {
            config,
            live: BTreeMap::new(),
            changed: Default::default(),
            partitions: HashMap::new(),
            watermark: None,
            late: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    /// Start of the window holding `t`.
    pub fn window_start(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let size = self.config.size.num_milliseconds();
        let ms = t.timestamp_millis();
        DateTime::from_timestamp_millis(ms - ms.rem_euclid(size)).expect("window start is in range")
    }

    /// Counts one alert read from `partition` at processing time `now`.
    pub fn add(&mut self, partition: i32, alert: AlertPoint<'_>, now: Instant) -> Placement {
        let AlertPoint { at, speed, gear, rpm, color } = alert;
        let clock = self.partitions.entry(partition).or_insert(PartitionClock { max_event_time: at, last_seen: now });
        clock.max_event_time = clock.max_event_time.max(at);
        clock.last_seen = now;

        let start = self.window_start(at);
        if self.watermark.is_some_and(|wm| start + self.config.size <= wm) {
            self.late += 1;
            return Placement::Late(start);
        }
        let (size, n) = (self.config.size, self.config.colors.len());
        let w = self.live.entry(start).or_insert_with(|| WindowStats::new(start, size, n));
        w.rows += 1;
        if let Some(color) = color {
            for (i, name) in self.config.colors.iter().enumerate() {
                if name.eq_ignore_ascii_case(color) {
                    w.colors[i] += 1;
                }
            }
        }
        w.max_speed = w.max_speed.max(speed);
        w.max_gear = w.max_gear.max(gear);
        w.max_rpm = w.max_rpm.max(rpm);
        self.changed.insert(start);
        Placement::Counted(start)
    }

    /// Recomputes the watermark at processing time `now` and removes the windows it passed.
    /// Returns them (final values), oldest first.
    pub fn advance(&mut self, now: Instant) -> Vec<WindowStats> {
        let frontier = frontier(self.progress(now));
        self.advance_to(frontier)
    }

    /// Its partitions' progress at processing time `now`.
    pub fn progress(&self, now: Instant) -> impl Iterator<Item = Progress> + '_ {
        let idle_timeout = self.config.idle_timeout;
        self.partitions.values().map(move |c| Progress {
            max_event_time: c.max_event_time,
            idle: now.saturating_duration_since(c.last_seen) >= idle_timeout,
        })
    }

    /// Moves the watermark to `frontier` minus the delay unless it is there already (it never
    /// goes back) and removes the windows it passed; returns them (final values), oldest first.
    /// [`Windows::advance`] passes its own [`frontier`]; windows kept apart that share idleness
    /// pass the [`frontier`] of all their partitions.
    pub fn advance_to(&mut self, frontier: Option<DateTime<Utc>>) -> Vec<WindowStats> {
        let Some(frontier) = frontier else { return Vec::new() };
        let candidate = frontier - self.config.watermark_delay;
        if self.watermark.is_some_and(|wm| wm >= candidate) {
            return Vec::new();
        }
        self.watermark = Some(candidate);
        let mut done = Vec::new();
        while let Some(entry) = self.live.first_entry() {
            if entry.get().end > candidate {
                break;
            }
            self.changed.remove(entry.key());
            done.push(entry.remove());
        }
        done
    }

    /// Windows changed since the last call, oldest first.
    pub fn take_changed(&mut self) -> Vec<WindowStats> {
        std::mem::take(&mut self.changed).into_iter().filter_map(|s| self.live.get(&s).cloned()).collect()
    }

    /// Every live window, oldest first.
    pub fn live(&self) -> impl Iterator<Item = &WindowStats> {
        self.live.values()
    }

    /// The current watermark.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    /// How many late alerts were seen.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The state to checkpoint.
    pub fn state(&self) -> WindowsState {
        WindowsState {
            max_event_time: self.partitions.values().map(|c| c.max_event_time).max(),
            watermark: self.watermark,
            late: self.late,
            windows: self.live.values().cloned().collect(),
        }
    }

    /// Windows of one input `partition` rebuilt from a checkpoint's `state`; every live window
    /// counts as changed (so it is published again).
    pub fn restore(config: WindowConfig, partition: i32, state: WindowsState, now: Instant) -> Self {
        let mut w = Self::new(config);
        if let Some(max_event_time) = state.max_event_time {
            w.partitions.insert(partition, PartitionClock { max_event_time, last_seen: now });
        }
        w.watermark = state.watermark;
        w.late = state.late;
        w.live = state.windows.into_iter().map(|s| (s.start, s)).collect();
        w.changed = w.live.keys().copied().collect();
        w
    }

    /// Forgets a partition's clock (it was revoked or its input ended).
    pub fn forget_partition(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}
