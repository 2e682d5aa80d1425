//! What `ops what-if` prints: per rule and per model the alerts of the table in use against the
//! candidate's, and the windows that would change (text for people, JSON for scripts).

use std::io::Write;

use pipeline_core::schema::{EnrichedEvent, event_time};
use pipeline_core::window::WindowStats;
use serde::Serialize;

/// The comparison.
#[derive(Debug, Serialize)]
pub struct WhatIf {
    /// The enriched topic read.
    pub topic: String,
    /// The range's start (event time), if bounded.
    pub from: Option<String>,
    /// The range's end (event time), if bounded.
    pub to: Option<String>,
    /// The rules version in use.
    pub in_use: String,
    /// The candidate's version.
    pub candidate: String,
    /// Distinct events in the range.
    pub events: u64,
    /// Records whose event id was read before (at-least-once copies, counted once).
    pub duplicates: u64,
    /// Records that do not decode (skipped).
    pub invalid: u64,
    /// Records outside the range.
    pub outside_range: u64,
    /// Alerts per rule (`all` first).
    pub rules: Vec<RuleLine>,
    /// Per model (an unknown car's events under `model_id: null`).
    pub models: Vec<ModelLine>,
    /// Windows with an alert under either table.
    pub windows: u64,
    /// The windows whose counts differ.
    pub changed_windows: Vec<WindowChange>,
    /// Wall time of the whole run.
    pub elapsed_seconds: f64,
}

/// Alerts that broke one rule, under each table.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RuleLine {
    /// `all`, `speed`, `rpm` or `gear`.
    pub name: &'static str,
    /// [in use, candidate].
    pub alerts: [u64; 2],
}

/// One model's events and alerts.
#[derive(Debug, Clone, Serialize)]
pub struct ModelLine {
    /// `model_id` (None: an unknown car).
    pub model_id: Option<i32>,
    /// Its brand, as the enricher joined it.
    pub brand: Option<String>,
    /// Its model name.
    pub model: Option<String>,
    /// Events of this model.
    pub events: u64,
    /// Alerts [in use, candidate].
    pub alerts: [u64; 2],
    /// Events the candidate makes alerts that the table in use does not.
    pub added: u64,
    /// Events the table in use makes alerts that the candidate does not.
    pub removed: u64,
}

impl ModelLine {
    /// A line for `model_id`, named from its first event.
    pub fn new(model_id: Option<i32>, e: &EnrichedEvent<'_>) -> Self {
        let name = |s: &Option<std::borrow::Cow<'_, str>>| s.as_deref().map(str::to_owned);
        Self {
            model_id,
            brand: name(&e.brand_name),
            model: name(&e.model_name),
            events: 0,
            alerts: [0; 2],
            added: 0,
            removed: 0,
        }
    }
}

/// A window's counts under each table.
#[derive(Debug, Clone, Serialize)]
pub struct WindowChange {
    /// Its start.
    pub window_start: String,
    /// [in use, candidate].
    pub num_of_rows: [u64; 2],
    /// Per counted color: (color, [in use, candidate]).
    pub colors: Vec<(String, [u64; 2])>,
    /// Largest speed [in use, candidate] (null: no alert).
    pub maximum_speed: [Option<f64>; 2],
}

impl WindowChange {
    /// The change from `a` (in use) to `b` (candidate).
    pub fn new(a: &WindowStats, b: &WindowStats, colors: &[String]) -> Self {
        let speed = |w: &WindowStats| (w.rows > 0).then_some(w.max_speed);
        Self {
            window_start: event_time::format(&a.start),
            num_of_rows: [a.rows, b.rows],
            colors: colors.iter().enumerate().map(|(i, c)| (c.clone(), [a.colors[i], b.colors[i]])).collect(),
            maximum_speed: [speed(a), speed(b)],
        }
    }
}

fn change(pair: [u64; 2]) -> String {
    let d = i128::from(pair[1]) - i128::from(pair[0]);
    if d == 0 { "=".into() } else { format!("{d:+}") }
}

impl WhatIf {
    /// For people: the totals per rule, per model, then the windows that change.
    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        let range = format!("[{}, {})", self.from.as_deref().unwrap_or("start"), self.to.as_deref().unwrap_or("end"));
        writeln!(
            out,
            "what-if: {} events of {} with event_time in {range} ({} duplicates counted once, {} invalid skipped)",
            self.events, self.topic, self.duplicates, self.invalid
        )?;
        writeln!(out, "rules in use: {}   candidate: {}", self.in_use, self.candidate)?;
        writeln!(out)?;
        writeln!(out, "{:<8} {:>10} {:>10} {:>9}", "alerts", "in use", "candidate", "change")?;
        for r in &self.rules {
            writeln!(out, "{:<8} {:>10} {:>10} {:>9}", r.name, r.alerts[0], r.alerts[1], change(r.alerts))?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:>8}  {:<10} {:<10} {:>8} {:>10} {:>10} {:>7} {:>8}",
            "model_id", "brand", "model", "events", "in use", "candidate", "added", "removed"
        )?;
        for m in &self.models {
            let id = m.model_id.map_or_else(|| "-".to_owned(), |i| i.to_string());
            let (brand, model) = (m.brand.as_deref().unwrap_or("-"), m.model.as_deref().unwrap_or("-"));
            writeln!(
                out,
                "{id:>8}  {brand:<10} {model:<10} {:>8} {:>10} {:>10} {:>7} {:>8}",
                m.events, m.alerts[0], m.alerts[1], m.added, m.removed
            )?;
        }
        writeln!(out)?;
        writeln!(out, "windows that change: {} of {}", self.changed_windows.len(), self.windows)?;
        for w in &self.changed_windows {
            let colors: Vec<String> = w.colors.iter().map(|(c, n)| format!("{c} {} -> {}", n[0], n[1])).collect();
            writeln!(
                out,
                "  {}  rows {} -> {}  {}",
                w.window_start,
                w.num_of_rows[0],
                w.num_of_rows[1],
                colors.join("  ")
            )?;
        }
        writeln!(out, "read in {:.2} s", self.elapsed_seconds)
    }

    /// One JSON document.
    pub fn write_json(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }
}
