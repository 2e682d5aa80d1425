//! One window's aggregate ([`WindowStats`]) and its row in the seed's columns.

use chrono::{DateTime, Utc};
use serde::ser::{SerializeMap, Serializer};

use super::row::RowMeta;
use crate::schema::event_time;

/// The aggregate of one window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowStats {
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Exclusive end.
    pub end: DateTime<Utc>,
    /// Alerts counted.
    pub rows: u64,
    /// Alerts per configured color, in [`WindowConfig::colors`](crate::window::WindowConfig::colors) order.
    pub colors: Vec<u64>,
    /// Largest speed.
    pub max_speed: f64,
    /// Largest gear.
    pub max_gear: i32,
    /// Largest rpm.
    pub max_rpm: i32,
}

impl WindowStats {
    /// A window of `size` from `start` with no alert in it (`colors` color columns).
    pub fn new(start: DateTime<Utc>, size: chrono::Duration, colors: usize) -> Self {
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
        self.row_json(colors, None, None)
    }

    /// The seed's row for one input partition's share of the window, plus `partition` and
    /// `input_offset` (the next offset of that partition not counted in it).
    pub fn to_partial_json(&self, colors: &[String], partition: i32, input_offset: i64) -> Vec<u8> {
        self.row_json(colors, Some((partition, input_offset)), None)
    }

    pub(super) fn row_json(&self, colors: &[String], partial: Option<(i32, i64)>, meta: Option<&RowMeta>) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        let mut ser = serde_json::Serializer::new(&mut out);
        self.serialize_row(colors, partial, meta, &mut ser).expect("serializing into a Vec cannot fail");
        out
    }

    /// Parses a row of [`WindowStats::to_json`] or [`WindowStats::to_partial_json`]; returns
    /// the partial's (partition, input_offset) when it has them.
    pub fn from_row(row: &[u8], colors: &[String]) -> Result<(Self, Option<(i32, i64)>), String> {
        let v: serde_json::Value = serde_json::from_slice(row).map_err(|e| format!("not JSON: {e}"))?;
        Self::from_value(&v, colors)
    }

    /// [`WindowStats::from_row`] of a row already parsed.
    pub(super) fn from_value(v: &serde_json::Value, colors: &[String]) -> Result<(Self, Option<(i32, i64)>), String> {
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
        meta: Option<&RowMeta>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(13 + colors.len()))?;
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
        // Added after the seed's columns (and the partial's), never instead of them: a reader
        // that knows only those keeps working.
        if let Some(meta) = meta {
            map.serialize_entry("revision", &meta.revision)?;
            map.serialize_entry("final", &meta.is_final)?;
            map.serialize_entry("watermark", &meta.watermark.as_ref().map(event_time::format))?;
            map.serialize_entry("late_alerts", &meta.late_alerts)?;
        }
        map.end()
    }
}

/// `num_of_<lowercase color>`.
pub fn color_column(color: &str) -> String {
    format!("num_of_{}", color.to_lowercase().replace(' ', "_"))
}
