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
//! Rows ([`Row`]): every value a window publishes carries a [`RowMeta`]: its revision per
//! window (1, 2, … each time a published value differs from the previous one), whether it is
//! final, the watermark it was computed at, and its late alerts. The watermark delay is this
//! operator's allowed lateness: a window is final exactly when it closes, so its counts never
//! change afterwards; what a late alert can still change is the final row's `late_alerts`. For
//! that, final windows are kept (with their revision) until the watermark is one more delay
//! past their end; a late alert for one of them makes its row unpublished again (a correction).
//!
//! Windows that keep apart (one [`Windows`] per input partition, as the counter does) can still
//! share idleness: [`frontier`] of all their [`Windows::progress`] is the event time no active
//! partition is behind, and [`Windows::advance_to`] it closes the windows of those that went
//! idle, without any new record.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

#[cfg(test)]
mod emit_tests;
mod ledger;
mod merge;
mod row;
mod stats;
#[cfg(test)]
mod tests;

use ledger::Ledger;
pub use ledger::{FinalWindow, Mark};
pub use merge::{PartialMerge, merge_rows, merge_windows};
pub use row::{Row, RowMeta};
pub use stats::{WindowStats, color_column};

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

/// Most windows one input partition may keep ([`WindowConfig::windows_kept`]): a window much
/// shorter than the watermark delay would make the state (and every checkpoint) grow by the
/// ratio; the seed's 15 min and 48 h keep 386.
pub const MAX_WINDOWS_KEPT: u64 = 10_000;

impl WindowConfig {
    /// How many windows of `size` a partition can hold at once with `watermark_delay`: the live
    /// ones the delay spans plus the final ones kept one more delay for corrections.
    pub fn windows_kept(size: Duration, watermark_delay: Duration) -> u64 {
        let per_delay = watermark_delay.as_nanos() / size.as_nanos().max(1) + 1;
        u64::try_from(2 * per_delay).unwrap_or(u64::MAX)
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
    /// Final windows still kept for late-alert corrections, oldest first. Absent from
    /// checkpoints written before emit modes: none kept.
    #[serde(default)]
    pub finals: Vec<FinalWindow>,
    /// Revisions of the windows in `windows` and `finals`. Absent from checkpoints written
    /// before emit modes: every window then starts unpublished at revision 0, so its next row
    /// is revision 1.
    #[serde(default)]
    pub marks: Vec<Mark>,
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
    /// Revisions, and final windows kept for corrections.
    ledger: Ledger,
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
            ledger: Ledger::default(),
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
            self.ledger.late(start);
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
        self.ledger.touch(start);
        Placement::Counted(start)
    }

    /// Recomputes the watermark at processing time `now` and removes the windows it passed.
    /// Returns them (final values), oldest first.
    pub fn advance(&mut self, now: Instant) -> Vec<WindowStats> {
        self.advance_rows(now).into_iter().map(|r| r.stats).collect()
    }

    /// [`Windows::advance`], as the final rows published for the windows it closed (each a new
    /// revision, `final`).
    pub fn advance_rows(&mut self, now: Instant) -> Vec<Row> {
        let frontier = frontier(self.progress(now));
        self.advance_to_rows(frontier)
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
        self.advance_to_rows(frontier).into_iter().map(|r| r.stats).collect()
    }

    /// [`Windows::advance_to`], as the final rows published for the windows it closed (each a
    /// new revision, `final`). Closing is published at once in every emit mode: it is the one
    /// moment a final mode reader waits for.
    pub fn advance_to_rows(&mut self, frontier: Option<DateTime<Utc>>) -> Vec<Row> {
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
            let start = *entry.key();
            self.changed.remove(&start);
            self.ledger.finals.insert(start, FinalWindow { stats: entry.remove(), late_alerts: 0 });
            self.ledger.touch(start);
            done.extend(self.publish_row(start));
        }
        // Kept one more delay: a final window's row can then still report alerts late by up to
        // twice the delay; later ones only reach the late topic and the total.
        self.ledger.forget_finals(candidate - self.config.watermark_delay);
        done
    }

    /// The row of window `start` as it stands (live or kept final), with the revision it has or
    /// will have once published; None for a window it does not hold.
    pub fn row(&self, start: DateTime<Utc>) -> Option<Row> {
        let (stats, is_final, late_alerts) = match (self.live.get(&start), self.ledger.finals.get(&start)) {
            (Some(w), _) => (w.clone(), false, 0),
            (None, Some(f)) => (f.stats.clone(), true, f.late_alerts),
            (None, None) => return None,
        };
        let meta = RowMeta { revision: self.ledger.revision(start), is_final, watermark: self.watermark, late_alerts };
        Some(Row { stats, meta })
    }

    /// Rows of the live windows, oldest first (not published by this).
    pub fn live_rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.live.keys().filter_map(|s| self.row(*s))
    }

    /// Rows of the final windows still kept, oldest first (not published by this).
    pub fn final_rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.ledger.finals.keys().filter_map(|s| self.row(*s))
    }

    fn publish_row(&mut self, start: DateTime<Utc>) -> Option<Row> {
        self.ledger.publish(start);
        self.row(start)
    }

    /// The rows a trigger publishes, oldest first, each marked published: corrections of final
    /// windows (their `late_alerts` changed), and with `open` the live windows changed since the
    /// last trigger or restored since (a value published again unchanged keeps its revision).
    /// Resets [`Windows::take_changed`].
    pub fn publish(&mut self, open: bool) -> Vec<Row> {
        let changed = std::mem::take(&mut self.changed);
        let mut starts: std::collections::BTreeSet<DateTime<Utc>> =
            self.ledger.finals.keys().copied().filter(|s| self.ledger.unpublished(*s)).collect();
        if open {
            starts.extend(changed);
            starts.extend(self.live.keys().copied().filter(|s| self.ledger.unpublished(*s)));
        }
        starts.into_iter().filter_map(|s| self.publish_row(s)).collect()
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
            finals: self.ledger.finals.values().cloned().collect(),
            marks: self.ledger.marks.values().copied().collect(),
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
        w.ledger.finals = state.finals.into_iter().map(|f| (f.stats.start, f)).collect();
        w.ledger.marks = state.marks.into_iter().map(|m| (m.start, m)).collect();
        // A checkpoint without revisions (older format): its windows were published without
        // them; their next row is revision 1.
        for start in w.live.keys().chain(w.ledger.finals.keys()) {
            if !w.ledger.marks.contains_key(start) {
                w.ledger.marks.insert(*start, Mark { start: *start, revision: 0, unpublished: true });
            }
        }
        w
    }

    /// Forgets a partition's clock (it was revoked or its input ended).
    pub fn forget_partition(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}
