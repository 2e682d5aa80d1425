//! `ops audit`'s output: a table for people (default) or one JSON document for machines.

use std::io::Write;

use serde::Serialize;

use super::compare::{Range, StageReport};
use pipeline_core::schema::event_time;

/// What was audited and what was found: printed as text or serialized as the JSON output.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The input topic and what it held.
    pub input: InputReport,
    /// The audited event-time range (`null` ends are open).
    pub range: RangeReport,
    /// Rows of the dimension tables the recomputation joined with.
    pub dims: DimsReport,
    /// enriched, alerts, windows, in pipeline order.
    pub stages: Vec<StageReport>,
    /// Differences over all stages: 0 is a clean audit (exit 0), any other exits 1.
    pub differences: u64,
    /// Wall time of the whole audit, seconds.
    pub elapsed_seconds: f64,
}

/// The input side of the report.
#[derive(Debug, Serialize)]
pub struct InputReport {
    /// The topic read.
    pub topic: String,
    /// Records read (up to the high watermarks captured at start).
    pub records: u64,
    /// Distinct events in range: what the outputs are checked against.
    pub events: u64,
    /// Input records repeating an id (their outputs may repeat as often).
    pub duplicated: u64,
    /// Records that do not decode (the enricher dead-letters them; no output is expected).
    pub invalid: u64,
    /// Records outside the range, ignored.
    pub outside_range: u64,
}

/// The range, as RFC 3339 strings.
#[derive(Debug, Serialize)]
pub struct RangeReport {
    /// Inclusive start of event time.
    pub from: Option<String>,
    /// Exclusive end of event time.
    pub to: Option<String>,
}

impl From<Range> for RangeReport {
    fn from(r: Range) -> Self {
        Self { from: r.from.as_ref().map(event_time::format), to: r.to.as_ref().map(event_time::format) }
    }
}

/// The dims joined with.
#[derive(Debug, Serialize)]
pub struct DimsReport {
    /// `s3://bucket/prefix` they were read from.
    pub location: String,
    /// Rows of `cars`.
    pub cars: usize,
    /// Rows of `car_models`.
    pub models: usize,
    /// Rows of `car_colors`.
    pub colors: usize,
}

impl Report {
    /// The report as one JSON document (one line).
    pub fn write_json(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        writeln!(out)
    }

    /// The report as a table, then the examples, then one summary line.
    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        let i = &self.input;
        let bound = |b: &Option<String>| b.clone().unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "input {} records={} events={} duplicated={} invalid={} outside_range={} range=[{}, {})",
            i.topic,
            i.records,
            i.events,
            i.duplicated,
            i.invalid,
            i.outside_range,
            bound(&self.range.from),
            bound(&self.range.to)
        )?;
        let d = &self.dims;
        writeln!(out, "dims {} cars={} models={} colors={}", d.location, d.cars, d.models, d.colors)?;
        let width = self.stages.iter().map(|s| s.topic.len()).max().unwrap_or(0).max("TOPIC".len());
        writeln!(
            out,
            "{:<8}  {:<width$}  {:>9}  {:>9}  {:>7}  {:>10}  {:>9}  {:>10}  {:>7}",
            "STAGE", "TOPIC", "EXPECTED", "FOUND", "MISSING", "DUPLICATED", "DIFFERENT", "UNEXPECTED", "INVALID"
        )?;
        for s in &self.stages {
            writeln!(
                out,
                "{:<8}  {:<width$}  {:>9}  {:>9}  {:>7}  {:>10}  {:>9}  {:>10}  {:>7}",
                s.stage, s.topic, s.expected, s.found, s.missing, s.duplicated, s.different, s.unexpected, s.invalid
            )?;
        }
        for s in &self.stages {
            for e in &s.examples {
                let what = match (&e.event_id, &e.window_start) {
                    (Some(id), _) => format!(" event_id={id}"),
                    (None, Some(start)) => format!(" window_start={start}"),
                    (None, None) => String::new(),
                };
                let at = e.at.as_ref().map(|a| format!(" at={a}")).unwrap_or_default();
                writeln!(out, "{} {}{what}{at}: {}", s.stage, e.kind, e.detail)?;
            }
        }
        if let Some(alerts) = self.stages.iter().find(|s| s.stage == "alerts" && s.extra_copies > 0) {
            writeln!(
                out,
                "windows count the alerts as {} holds them: {} extra copies included (at-least-once duplicates)",
                alerts.topic, alerts.extra_copies
            )?;
        }
        let verdict =
            if self.differences == 0 { "clean".to_owned() } else { format!("{} difference(s)", self.differences) };
        writeln!(out, "audit: {verdict} ({} records read in {:.1}s)", self.records(), self.elapsed_seconds)
    }

    /// Records read over all topics.
    fn records(&self) -> u64 {
        self.input.records + self.stages.iter().map(|s| s.records).sum::<u64>()
    }
}
