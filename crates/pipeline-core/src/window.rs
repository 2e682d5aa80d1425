//! Event-time tumbling windows with a watermark: the counter's aggregation.
//!
//! Each alert counts in the window `[floor(event_time / size) * size, + size)`. The watermark is
//! the smallest, over the input partitions that are not idle, of the largest event time seen on
//! that partition, minus the allowed delay; it never goes back. A partition that has received
//! nothing for `idle_timeout` (processing time) is left out so it cannot hold the watermark
//! back; when every partition is idle the largest event time of all is used. A window whose end
//! is at or behind the watermark is final: it leaves the state, and an alert that would fall in
//! it later is late (not counted, reported to the caller).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::ser::{SerializeMap, Serializer};

use crate::schema::event_time;

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

/// Window values published per input partition, merged into whole windows.
///
/// Each partition's share of a window is a partial; of several values of one (window,
/// partition), the one covering the most input (largest `input_offset`) is kept, whatever order
/// they arrive in, so a replay after a crash or a stale value from a partition's previous owner
/// never takes a window back. Whole windows are then the partials added up: the numbers one
/// counter over every partition gives.
#[derive(Debug, Clone, Default)]
pub struct PartialMerge {
    /// (window start, partition) → (input offset covered, that partition's share).
    parts: BTreeMap<(DateTime<Utc>, i32), (i64, WindowStats)>,
}

impl PartialMerge {
    /// Records one partial; returns whether it replaced what was known.
    pub fn insert(&mut self, partition: i32, input_offset: i64, stats: WindowStats) -> bool {
        match self.parts.entry((stats.start, partition)) {
            std::collections::btree_map::Entry::Occupied(mut e) if e.get().0 <= input_offset => {
                e.insert((input_offset, stats));
                true
            }
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert((input_offset, stats));
                true
            }
        }
    }

    /// Whole windows, oldest first; `skip` leaves some partitions out (ones the caller counts
    /// itself).
    pub fn merged(&self, skip: impl Fn(i32) -> bool) -> Vec<WindowStats> {
        let mut out: BTreeMap<DateTime<Utc>, WindowStats> = BTreeMap::new();
        for ((start, partition), (_, stats)) in &self.parts {
            if skip(*partition) {
                continue;
            }
            match out.entry(*start) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(stats),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(stats.clone());
                }
            }
        }
        out.into_values().collect()
    }

    /// Forgets windows that end at or before `horizon`.
    pub fn forget_before(&mut self, horizon: DateTime<Utc>) {
        self.parts.retain(|_, (_, stats)| stats.end > horizon);
    }
}

/// Adds `more` windows into `into` (both oldest first), window by window.
pub fn merge_windows(into: Vec<WindowStats>, more: impl IntoIterator<Item = WindowStats>) -> Vec<WindowStats> {
    let mut all: BTreeMap<DateTime<Utc>, WindowStats> = into.into_iter().map(|w| (w.start, w)).collect();
    for w in more {
        match all.entry(w.start) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(&w),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(w);
            }
        }
    }
    all.into_values().collect()
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

impl<'a> From<&'a crate::schema::EnrichedEvent> for AlertPoint<'a> {
    fn from(e: &'a crate::schema::EnrichedEvent) -> Self {
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
        let active = self.partitions.values().filter(|c| now.duration_since(c.last_seen) < self.config.idle_timeout);
        let frontier =
            active.map(|c| c.max_event_time).min().or_else(|| self.partitions.values().map(|c| c.max_event_time).max());
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn config(delay_min: i64) -> WindowConfig {
        WindowConfig {
            size: chrono::Duration::minutes(15),
            watermark_delay: chrono::Duration::minutes(delay_min),
            idle_timeout: Duration::from_secs(30),
            colors: vec!["Black".into(), "White".into(), "Silver".into()],
        }
    }

    fn pt(at: DateTime<Utc>, speed: f64, gear: i32, rpm: i32, color: Option<&str>) -> AlertPoint<'_> {
        AlertPoint { at, speed, gear, rpm, color }
    }

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, h, m, s).unwrap()
    }

    #[test]
    fn edges_belong_to_the_window_they_start() {
        let mut w = Windows::new(config(48 * 60));
        let now = Instant::now();
        assert_eq!(w.add(0, pt(t(10, 0, 0), 1.0, 1, 1, None), now), Placement::Counted(t(10, 0, 0)));
        assert_eq!(w.add(0, pt(t(10, 14, 59), 1.0, 1, 1, None), now), Placement::Counted(t(10, 0, 0)));
        assert_eq!(w.add(0, pt(t(10, 15, 0), 1.0, 1, 1, None), now), Placement::Counted(t(10, 15, 0)));
        let before = t(10, 0, 0) - chrono::Duration::milliseconds(1);
        assert_eq!(w.add(0, pt(before, 1.0, 1, 1, None), now), Placement::Counted(t(9, 45, 0)));
        let rows: Vec<_> = w.live().map(|s| (s.start, s.end, s.rows)).collect();
        assert_eq!(
            rows,
            vec![(t(9, 45, 0), t(10, 0, 0), 1), (t(10, 0, 0), t(10, 15, 0), 2), (t(10, 15, 0), t(10, 30, 0), 1)]
        );
    }

    #[test]
    fn aggregates_count_colors_and_take_maxima() {
        let mut w = Windows::new(config(60));
        let now = Instant::now();
        w.add(0, pt(t(10, 1, 0), 130.5, 3, 2000, Some("Black")), now);
        w.add(1, pt(t(10, 2, 0), 90.0, 6, 6500, Some("white")), now);
        w.add(2, pt(t(10, 3, 0), 100.0, 2, 1000, Some("Red")), now);
        w.add(0, pt(t(10, 4, 0), 10.0, 1, 700, None), now);
        let s = w.live().next().unwrap();
        assert_eq!((s.rows, s.colors.clone(), s.max_speed, s.max_gear, s.max_rpm), (4, vec![1, 1, 0], 130.5, 6, 6500));
        let json = String::from_utf8(s.to_json(&w.config().colors)).unwrap();
        assert_eq!(
            json,
            r#"{"window_start":"2026-05-01T10:00:00.000Z","window_end":"2026-05-01T10:15:00.000Z","num_of_rows":4,"num_of_black":1,"num_of_white":1,"num_of_silver":0,"maximum_speed":130.5,"maximum_gear":6,"maximum_rpm":6500}"#
        );
    }

    #[test]
    fn the_watermark_finalizes_windows_and_makes_later_alerts_late() {
        let mut w = Windows::new(config(0));
        let now = Instant::now();
        w.add(0, pt(t(10, 5, 0), 1.0, 1, 1, None), now);
        assert!(w.advance(now).is_empty(), "watermark 10:05 is inside the first window");
        w.add(0, pt(t(10, 15, 0), 1.0, 1, 1, None), now);
        let done = w.advance(now);
        assert_eq!(done.iter().map(|s| (s.start, s.rows)).collect::<Vec<_>>(), vec![(t(10, 0, 0), 1)]);
        assert_eq!(w.watermark(), Some(t(10, 15, 0)));
        assert_eq!(w.add(0, pt(t(10, 14, 59), 1.0, 1, 1, None), now), Placement::Late(t(10, 0, 0)));
        assert_eq!(w.add(0, pt(t(10, 15, 0), 1.0, 1, 1, None), now), Placement::Counted(t(10, 15, 0)));
        assert_eq!(w.late(), 1);
        assert_eq!(w.live().map(|s| s.rows).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn the_slowest_active_partition_holds_the_watermark_until_it_idles() {
        let mut w = Windows::new(config(0));
        let start = Instant::now();
        w.add(0, pt(t(10, 1, 0), 1.0, 1, 1, None), start);
        w.add(1, pt(t(11, 0, 0), 1.0, 1, 1, None), start);
        assert!(w.advance(start).is_empty());
        assert_eq!(w.watermark(), Some(t(10, 1, 0)), "partition 0 holds it back");
        // Partition 0 goes quiet; partition 1 keeps going.
        let later = start + Duration::from_secs(31);
        w.add(1, pt(t(11, 1, 0), 1.0, 1, 1, None), later);
        let done = w.advance(later);
        assert_eq!(w.watermark(), Some(t(11, 1, 0)));
        assert_eq!(done.iter().map(|s| s.start).collect::<Vec<_>>(), vec![t(10, 0, 0)]);
        // The watermark never goes back when partition 0 wakes up behind it.
        w.add(0, pt(t(10, 30, 0), 1.0, 1, 1, None), later);
        assert!(w.advance(later).is_empty());
        assert_eq!(w.watermark(), Some(t(11, 1, 0)));
    }

    #[test]
    fn changed_windows_are_reported_once() {
        let mut w = Windows::new(config(60));
        let now = Instant::now();
        w.add(0, pt(t(10, 1, 0), 1.0, 1, 1, None), now);
        w.add(0, pt(t(10, 20, 0), 1.0, 1, 1, None), now);
        assert_eq!(w.take_changed().len(), 2);
        assert!(w.take_changed().is_empty());
        w.add(0, pt(t(10, 21, 0), 1.0, 1, 1, None), now);
        assert_eq!(w.take_changed().iter().map(|s| s.rows).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn partials_merge_into_what_one_counter_counts() {
        let (mut whole, mut p0, mut p1) =
            (Windows::new(config(60)), Windows::new(config(60)), Windows::new(config(60)));
        let now = Instant::now();
        let alerts = [
            (0, pt(t(10, 1, 0), 130.5, 3, 2000, Some("Black"))),
            (1, pt(t(10, 2, 0), 90.0, 6, 6500, Some("White"))),
            (1, pt(t(10, 20, 0), 150.0, 2, 1000, Some("Black"))),
            (0, pt(t(10, 4, 0), 10.0, 1, 700, None)),
        ];
        for (partition, a) in alerts {
            whole.add(partition, a, now);
            if partition == 0 { &mut p0 } else { &mut p1 }.add(partition, a, now);
        }
        let colors = whole.config().colors.clone();
        let mut merge = PartialMerge::default();
        // Published out of order: an older value of partition 0's window arrives last.
        let mut stale = p0.live().next().unwrap().clone();
        stale.rows = 1;
        for (partition, offset, w) in p0.live().map(|w| (0, 2, w)).chain(p1.live().map(|w| (1, 2, w))) {
            let (parsed, partial) =
                WindowStats::from_row(&w.to_partial_json(&colors, partition, offset), &colors).unwrap();
            assert_eq!((&parsed, partial), (w, Some((partition, offset))), "a partial row round-trips");
            assert!(merge.insert(partition, offset, parsed));
        }
        assert!(!merge.insert(0, 1, stale), "a value covering less input never wins");
        assert_eq!(merge.merged(|_| false), whole.live().cloned().collect::<Vec<_>>());
        let own = p1.live().cloned();
        assert_eq!(merge_windows(merge.merged(|p| p == 1), own), whole.live().cloned().collect::<Vec<_>>());
        merge.forget_before(t(10, 15, 0));
        assert_eq!(merge.merged(|_| false).iter().map(|w| w.start).collect::<Vec<_>>(), vec![t(10, 15, 0)]);
    }

    #[test]
    fn a_restored_partition_continues_exactly() {
        let now = Instant::now();
        let (mut straight, mut before) = (Windows::new(config(30)), Windows::new(config(30)));
        let alerts: Vec<_> = (0..40)
            .map(|i| pt(t(10, 0, 0) + chrono::Duration::minutes(i * 3), 100.0 + i as f64, 2, 6100, Some("Black")))
            .collect();
        let mut late_one = alerts[2];
        late_one.at = t(10, 1, 0);
        let mut finals = (Vec::new(), Vec::new());
        for (i, a) in alerts.iter().chain([&late_one]).enumerate() {
            straight.add(0, *a, now);
            finals.0.extend(straight.advance(now));
            if i < 20 {
                before.add(0, *a, now);
                finals.1.extend(before.advance(now));
            }
        }
        let state = before.state();
        let json = serde_json::to_vec(&state).unwrap();
        let mut after = Windows::restore(config(30), 0, serde_json::from_slice(&json).unwrap(), now);
        assert_eq!(after.take_changed().len(), state.windows.len(), "restored windows are published again");
        for a in alerts[20..].iter().chain([&late_one]) {
            after.add(0, *a, now);
            finals.1.extend(after.advance(now));
        }
        assert_eq!(after.state(), straight.state());
        assert_eq!(finals.0, finals.1);
        assert_eq!(after.late(), 1);
    }
}
