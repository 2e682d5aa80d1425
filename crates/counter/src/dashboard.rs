//! The counter's live dashboard: a read-only web page of the live windows.
//!
//! `GET /` serves one self-contained HTML page (no build step, no external scripts, works
//! offline) that polls `GET /api/windows` every second and redraws a table of the windows and
//! a stacked bar chart of alerts per window split by color, with the maxima. The JSON rows are
//! the same objects the counter publishes to `alert-counts`, so what the page shows can be
//! checked against the topic. Only `GET` routes exist: nothing on the page changes state.
//!
//! `windows` keeps the seed's columns only (what readers of the seed's rows compare); `rows`
//! holds the same windows with the emit columns (`revision`, `final`, `watermark`,
//! `late_alerts`), which the page shows beside each window.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::ser::{SerializeMap, Serializer};
use tokio::sync::watch;

use pipeline_core::schema::event_time;
use pipeline_core::window::{Row, RowMeta, WindowStats, color_column};

/// The page, served as is.
const PAGE: &str = include_str!("dashboard.html");

/// What the dashboard shows: a snapshot the counter replaces as its windows change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowsView {
    /// Counted colors, in column order.
    pub colors: Vec<String>,
    /// Live windows, oldest first.
    pub windows: Vec<WindowStats>,
    /// Each window's row meta, in the same order (missing ones read as revision 0, open).
    pub emit: Vec<RowMeta>,
    /// The counter's watermark (None before the first alert).
    pub watermark: Option<DateTime<Utc>>,
    /// Late alerts seen so far.
    pub late: u64,
    /// Alerts counted so far (all windows, including final ones).
    pub counted: u64,
    /// When the snapshot was taken.
    pub updated: Option<DateTime<Utc>>,
}

impl WindowsView {
    /// `{"updated_at", "watermark", "late_alerts", "counted_alerts", "colors": [...],
    /// "windows": [<alert-counts row, the seed's columns>...], "rows": [<the same with revision,
    /// final, watermark, late_alerts>...]}`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.windows.len() * 256);
        let mut ser = serde_json::Serializer::new(&mut out);
        self.serialize(&mut ser).expect("serializing into a Vec cannot fail");
        out
    }

    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(7))?;
        map.serialize_entry("updated_at", &self.updated.as_ref().map(event_time::format))?;
        map.serialize_entry("watermark", &self.watermark.as_ref().map(event_time::format))?;
        map.serialize_entry("late_alerts", &self.late)?;
        map.serialize_entry("counted_alerts", &self.counted)?;
        let columns: Vec<(String, String)> = self.colors.iter().map(|c| (c.clone(), color_column(c))).collect();
        map.serialize_entry("colors", &columns)?;
        let rows: Vec<serde_json::Value> = self
            .windows
            .iter()
            .map(|w| serde_json::from_slice(&w.to_json(&self.colors)).expect("a window row is JSON"))
            .collect();
        map.serialize_entry("windows", &rows)?;
        let rows: Vec<serde_json::Value> = self
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let row = Row { stats: w.clone(), meta: self.emit.get(i).copied().unwrap_or_default() };
                serde_json::from_slice(&row.to_json(&self.colors)).expect("a window row is JSON")
            })
            .collect();
        map.serialize_entry("rows", &rows)?;
        map.end()
    }
}

/// The dashboard's routes over the views `view` receives.
pub fn routes(view: watch::Receiver<Arc<WindowsView>>) -> Router {
    Router::new()
        .route("/", get(|| std::future::ready(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE))))
        .route(
            "/api/windows",
            get(move || {
                let body = view.borrow().to_json();
                std::future::ready(
                    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body)
                        .into_response(),
                )
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_are_the_alert_counts_rows() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T10:15:00Z").unwrap().to_utc();
        let w = WindowStats {
            start,
            end: start + chrono::Duration::minutes(15),
            rows: 3,
            colors: vec![1, 2],
            max_speed: 150.5,
            max_gear: 6,
            max_rpm: 6500,
        };
        let view = WindowsView {
            colors: vec!["Black".into(), "White".into()],
            windows: vec![w.clone()],
            emit: Vec::new(),
            watermark: None,
            late: 4,
            counted: 3,
            updated: Some(start),
        };
        let json: serde_json::Value = serde_json::from_slice(&view.to_json()).unwrap();
        let row: serde_json::Value = serde_json::from_slice(&w.to_json(&view.colors)).unwrap();
        assert_eq!(json["windows"][0], row);
        assert_eq!(json["late_alerts"], 4);
        assert_eq!(json["watermark"], serde_json::Value::Null);
        assert_eq!(json["colors"][1], serde_json::json!(["White", "num_of_white"]));
        assert_eq!(json["updated_at"], "2026-01-01T10:15:00.000Z");
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(
            PAGE.contains("fetch(\"api/windows\""),
            "the page polls its data (relative URL: works behind a prefix)"
        );
        for external in ["<script src", "<link", "url(", "@import"] {
            assert!(!PAGE.contains(external), "the page loads nothing from elsewhere ({external})");
        }
    }
}
