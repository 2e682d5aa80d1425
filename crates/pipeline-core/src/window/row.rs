//! A published row: a window's values ([`WindowStats`]) with what a reader needs to know how
//! far along that window is ([`RowMeta`]): its revision, whether it is final, the watermark it
//! was computed at and the alerts that came too late for it.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use super::WindowStats;
use crate::schema::event_time;

/// Where a row stands in its window's life, published beside the seed's columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowMeta {
    /// For one (window, partition): 1 for the first value published, + 1 whenever a published
    /// value differs from the previous one in its counts, maxima, `final` or `late_alerts` (a
    /// value published again unchanged keeps it). For a whole window (partials merged): the sum
    /// of its partials' revisions, so it grows whenever any partial does, and every reader that
    /// holds the same partials computes the same one. 0: a row written before revisions existed.
    pub revision: u64,
    /// The watermark has passed the window's end: its counts never change again (only
    /// `late_alerts` may). For a whole window: every partial published so far is final.
    pub is_final: bool,
    /// The watermark when the row was computed (None: no watermark yet, or an old row). For a
    /// whole window: the smallest of its partials'. Informational: not part of the revision.
    pub watermark: Option<DateTime<Utc>>,
    /// Alerts for this window that arrived once it was final: not counted, sent to the late
    /// topic instead. For a whole window: the sum over its partials.
    pub late_alerts: u64,
}

impl RowMeta {
    /// Folds the meta of another partial of the same window into this one (see the fields).
    pub fn merge(&mut self, other: &RowMeta) {
        self.revision += other.revision;
        self.is_final &= other.is_final;
        self.watermark = match (self.watermark, other.watermark) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.late_alerts += other.late_alerts;
    }

    fn from_value(v: &serde_json::Value) -> Result<Self, String> {
        // Every field is optional: rows written before they existed read as revision 0, open,
        // without watermark or late alerts.
        let revision = match v.get("revision") {
            None | Some(serde_json::Value::Null) => 0,
            Some(r) => r.as_u64().ok_or("`revision` is not a revision")?,
        };
        let is_final = match v.get("final") {
            None | Some(serde_json::Value::Null) => false,
            Some(f) => f.as_bool().ok_or("`final` is not a boolean")?,
        };
        let watermark = match v.get("watermark") {
            None | Some(serde_json::Value::Null) => None,
            Some(w) => Some(
                w.as_str().ok_or("`watermark` is not a string").map_err(str::to_owned).and_then(event_time::parse)?,
            ),
        };
        let late_alerts = match v.get("late_alerts") {
            None | Some(serde_json::Value::Null) => 0,
            Some(n) => n.as_u64().ok_or("`late_alerts` is not a count")?,
        };
        Ok(Self { revision, is_final, watermark, late_alerts })
    }
}

/// One window's values and meta: what is published, printed and shown on the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The window's values (the seed's columns).
    pub stats: WindowStats,
    /// How far along the window is.
    pub meta: RowMeta,
}

impl Row {
    /// The seed's columns, then `revision`, `final`, `watermark`, `late_alerts`.
    pub fn to_json(&self, colors: &[String]) -> Vec<u8> {
        self.stats.row_json(colors, None, Some(&self.meta))
    }

    /// The partial row published to the counts topic: the seed's columns, `partition`,
    /// `input_offset`, then `revision`, `final`, `watermark`, `late_alerts`.
    pub fn to_partial_json(&self, colors: &[String], partition: i32, input_offset: i64) -> Vec<u8> {
        self.stats.row_json(colors, Some((partition, input_offset)), Some(&self.meta))
    }

    /// Parses any row the counter ever published (with or without the meta columns); returns
    /// the partial's (partition, input_offset) when it has them.
    pub fn from_json(row: &[u8], colors: &[String]) -> Result<(Self, Option<(i32, i64)>), String> {
        let v: serde_json::Value = serde_json::from_slice(row).map_err(|e| format!("not JSON: {e}"))?;
        let (stats, partial) = WindowStats::from_value(&v, colors)?;
        Ok((Self { stats, meta: RowMeta::from_value(&v)? }, partial))
    }

    /// Adds another partial of the same window (values and meta).
    pub fn merge(&mut self, other: &Row) {
        self.stats.merge(&other.stats);
        self.meta.merge(&other.meta);
    }

    /// Total order of two values of one (window, partition), for keeping one whatever order
    /// they arrive in: the one covering more input first (`input_offset`, given by the caller),
    /// then the later revision, then final over open, then the larger values, so that even two
    /// values that tie on all of those (two owners' after a crash) resolve the same way everywhere.
    pub fn supersedes(&self, offset: i64, other: &Row, other_offset: i64) -> bool {
        let key = |r: &Row, o: i64| (o, r.meta.revision, r.meta.is_final, r.meta.late_alerts, r.stats.rows);
        let ord = key(self, offset).cmp(&key(other, other_offset)).then_with(|| content_order(self, other));
        ord != Ordering::Less
    }
}

/// A total order on the values of one window (ties broken field by field; speeds by
/// `f64::total_cmp`), used only to make the merge independent of arrival order.
fn content_order(a: &Row, b: &Row) -> Ordering {
    let (x, y) = (&a.stats, &b.stats);
    x.colors
        .cmp(&y.colors)
        .then_with(|| x.max_speed.total_cmp(&y.max_speed))
        .then_with(|| x.max_gear.cmp(&y.max_gear))
        .then_with(|| x.max_rpm.cmp(&y.max_rpm))
        .then_with(|| a.meta.watermark.cmp(&b.meta.watermark))
}
