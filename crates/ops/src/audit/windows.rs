//! The windows stage: the windows the counter must publish, recomputed with the counter's own
//! `pipeline_core::window::Windows` from the expected alerts, against its partial rows merged as
//! every reader merges them (`PartialMerge`: per window and input partition the row covering
//! the most input, then added up over partitions).

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use pipeline_core::schema::event_time;
use pipeline_core::window::{AlertPoint, PartialMerge, WindowConfig, WindowStats, Windows};

use super::compare::{Ctx, Example, Inputs, StageReport};

/// The windows every expected alert falls in, as one counter over all partitions counts them
/// when none is late: each alert as often as the alerts topic holds it (`copies`, per input
/// event), for that is the counter's input: a duplicate the detector wrote (at-least-once) is
/// counted twice, and the alerts stage reports it where it arose; a missing alert is missing
/// there. So this stage judges the counter alone. No watermark is ever advanced, so nothing is
/// late; a run whose counter saw late alerts differs here, and that is worth a look.
pub fn expected(
    ctx: &Ctx<'_>,
    inputs: &Inputs,
    copies: &[u32],
    config: WindowConfig,
) -> BTreeMap<DateTime<Utc>, WindowStats> {
    let mut windows = Windows::new(config);
    let now = Instant::now();
    for (input, copies) in inputs.events.iter().zip(copies).filter(|(i, _)| i.alert) {
        let enriched = ctx.join.enrich(input.event.clone()).0;
        for _ in 0..*copies {
            windows.add(0, AlertPoint::from(&enriched), now);
        }
    }
    windows.live().map(|w| (w.start, w.clone())).collect()
}

/// The counts topic being read: partial rows merged.
#[derive(Debug)]
pub struct CountsStage {
    /// Colors the rows carry (`num_of_<color>` columns, the counter's --colors).
    colors: Vec<String>,
    /// The partials kept so far.
    merge: PartialMerge,
    /// The report being filled.
    report: StageReport,
}

impl CountsStage {
    /// A stage reading `topic`, rows with `colors`.
    pub fn new(topic: &str, colors: Vec<String>) -> Self {
        Self { colors, merge: PartialMerge::default(), report: StageReport::new("windows", topic) }
    }

    /// Takes in one row. Only the columns a window has are decoded (`WindowStats::from_row`
    /// ignores any other, such as a revision or a watermark).
    pub fn add(&mut self, ctx: &Ctx<'_>, (partition, offset): (i32, i64), value: Option<&[u8]>) {
        let r = &mut self.report;
        r.records += 1;
        let invalid = |detail: String| Example {
            kind: "invalid",
            event_id: None,
            window_start: None,
            at: Some(format!("{partition}/{offset}")),
            detail,
        };
        match WindowStats::from_row(value.unwrap_or_default(), &self.colors) {
            Ok((stats, Some((input_partition, input_offset)))) => {
                self.merge.insert(input_partition, input_offset, stats);
            }
            Ok((_, None)) => {
                r.invalid += 1;
                r.example(ctx.examples, invalid("a row without `partition` and `input_offset` (not a partial)".into()));
            }
            Err(e) => {
                r.invalid += 1;
                r.example(ctx.examples, invalid(format!("not a window row: {e}")));
            }
        }
    }

    /// Compares the merged windows with `expected`.
    pub fn finish(mut self, ctx: &Ctx<'_>, expected: &BTreeMap<DateTime<Utc>, WindowStats>) -> StageReport {
        let found: BTreeMap<DateTime<Utc>, WindowStats> =
            self.merge.merged(|_| false).into_iter().map(|w| (w.start, w)).collect();
        let r = &mut self.report;
        let colors = &self.colors;
        let row = |w: &WindowStats| String::from_utf8_lossy(&w.to_json(colors)).into_owned();
        let example = |kind, start: &DateTime<Utc>, detail| Example {
            kind,
            event_id: None,
            window_start: Some(event_time::format(start)),
            at: None,
            detail,
        };
        for (start, want) in expected {
            if !ctx.range.holds_window(want.start, want.end) {
                continue;
            }
            r.expected += 1;
            match found.get(start) {
                None => {
                    r.missing += 1;
                    r.example(ctx.examples, example("missing", start, format!("expected {}", row(want))));
                }
                Some(got) if !same(want, got) => {
                    r.different += 1;
                    r.example(
                        ctx.examples,
                        example("different", start, format!("expected {}, found {}", row(want), row(got))),
                    );
                }
                Some(_) => {}
            }
        }
        for (start, got) in &found {
            if !ctx.range.holds_window(got.start, got.end) {
                r.outside_range += 1;
                continue;
            }
            r.found += 1;
            if !expected.contains_key(start) {
                r.unexpected += 1;
                r.example(ctx.examples, example("unexpected", start, format!("found {}", row(got))));
            }
        }
        self.report
    }
}

/// Equal windows; the maximum speed within a relative 1e-12 (it went through a decimal text
/// and back, which serde_json may round one unit off).
fn same(a: &WindowStats, b: &WindowStats) -> bool {
    let close = (a.max_speed - b.max_speed).abs() <= 1e-12 * a.max_speed.abs().max(1.0);
    (a.start, a.end, a.rows, &a.colors, a.max_gear, a.max_rpm)
        == (b.start, b.end, b.rows, &b.colors, b.max_gear, b.max_rpm)
        && close
}
