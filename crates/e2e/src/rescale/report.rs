//! The drill's figures: per event what its service's output showed, the audit's verdict, and
//! the table BENCHMARKS.md carries.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::process::Command;
use std::time::Duration;

use super::fleet::Role;
use super::watch::{BUCKET_MS, Series, Stage};
use crate::{Pipeline, bin};

/// What one stretch of a stage's output showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figures {
    /// The longest gap of any partition ending in the stretch, ms, and that partition.
    pub longest_pause: (i64, Option<i32>),
    /// Duplicates written in the stretch.
    pub duplicates: usize,
    /// From the stretch's start until the lag was under a second for good, ms (0: never over).
    pub lag_over_for: i64,
    /// The largest lag in the stretch, ms.
    pub max_lag: i64,
}

/// One event and what it did.
#[derive(Debug, Clone)]
pub struct EventReport {
    /// The service acted on.
    pub role: Role,
    /// What was done.
    pub what: String,
    /// Whether its output caught up before the next event.
    pub settled: bool,
    /// Its service's output from the event to the next.
    pub figures: Figures,
}

/// What `ops audit` found per stage.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// The whole JSON report (or why there is none).
    pub json: String,
    /// Per stage: missing + different + unexpected + invalid (must be 0).
    pub wrong: BTreeMap<String, u64>,
    /// Per stage: the extra copies of duplicated events (reported, allowed).
    pub extra_copies: BTreeMap<String, u64>,
    /// Windows expected and found (the windows stage).
    pub windows: (u64, u64),
    /// Input events audited.
    pub events: u64,
}

impl Audit {
    /// No event missing, different or unexpected in any stage, and the windows exact.
    pub fn clean(&self) -> bool {
        !self.wrong.is_empty() && self.wrong.values().all(|w| *w == 0)
    }
}

/// The drill's result.
#[derive(Debug)]
pub struct Outcome {
    /// Every event in order.
    pub events: Vec<EventReport>,
    /// Each service's output over the quiet stretch before the first event.
    pub baseline: BTreeMap<Role, Figures>,
    /// The reconciliation after the stream drained.
    pub audit: Audit,
    /// Stage partitions that stopped writing before the stream's end (none may).
    pub stalled: Vec<String>,
    /// Instances that exited by themselves during the drill (none may).
    pub exited: Vec<String>,
    /// Exit codes of the final stop (all 0; None: killed after 30 s).
    pub stop_codes: Vec<Option<i32>>,
    /// Per stage, the largest lag of every 10 s of the drill, ms (-1: nothing written).
    pub timeline: BTreeMap<Stage, Vec<i64>>,
    /// Wall time of the drill.
    pub elapsed: Duration,
    /// CPU time of the drill's own process (its readers, mostly): what measuring cost.
    pub own_cpu: Duration,
}

/// This process's CPU time so far (user + system, from `/proc/self/stat`; zero elsewhere).
pub fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name's closing parenthesis: fields 3…; utime and stime are 14 and 15.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

impl Outcome {
    /// Audit clean, nothing stalled, nothing exited by itself, every stop clean, every event settled.
    pub fn sound(&self) -> bool {
        self.audit.clean()
            && self.stalled.is_empty()
            && self.exited.is_empty()
            && self.stop_codes.iter().all(|c| *c == Some(0))
            && self.events.iter().all(|e| e.settled)
    }

    /// The head of the events' Markdown table.
    pub const HEADER: &str = "| service | event | longest pause (partition) | duplicates (s of input) | lag ≥ 1 s for | max lag |\n|---|---|---|---|---|---|";

    /// The events as a Markdown table; `rate` (events/s) puts duplicates in seconds of input.
    pub fn table(&self, rate: u32) -> String {
        format!("{}\n{}", Self::HEADER, self.rows_of(rate, None))
    }

    /// The table's rows of `role`'s baseline and events, without the head.
    pub fn rows(&self, rate: u32, role: Role) -> String {
        self.rows_of(rate, Some(role))
    }

    fn rows_of(&self, rate: u32, only: Option<Role>) -> String {
        let mut out = String::new();
        let row = |out: &mut String, role: Role, what: &str, f: &Figures| {
            let partition = f.longest_pause.1.map_or_else(|| "-".to_owned(), |p| p.to_string());
            let seconds = f.duplicates as f64 / f64::from(rate.max(1));
            let _ = writeln!(
                out,
                "| {} | {what} | {:.2} s ({partition}) | {} ({seconds:.2}) | {:.1} s | {:.2} s |",
                role.name(),
                f.longest_pause.0 as f64 / 1000.0,
                f.duplicates,
                f.lag_over_for as f64 / 1000.0,
                f.max_lag as f64 / 1000.0,
            );
        };
        for (role, f) in self.baseline.iter().filter(|(r, _)| only.is_none_or(|o| o == **r)) {
            row(&mut out, *role, "steady (before the first event)", f);
        }
        for e in self.events.iter().filter(|e| only.is_none_or(|o| o == e.role)) {
            let what = if e.settled { e.what.clone() } else { format!("{} (not settled)", e.what) };
            row(&mut out, e.role, &what, &e.figures);
        }
        out
    }
}

/// The largest lag of every 10 s of `series`, ms (-1: nothing written).
pub fn timeline(series: &Series) -> Vec<i64> {
    let per = usize::try_from(10_000 / BUCKET_MS).unwrap_or(1);
    series.lag.chunks(per).map(|c| c.iter().copied().max().unwrap_or(-1)).collect()
}

/// What `series` shows from `from` until `until` (ms since the epoch).
pub fn measure(series: &Series, from: i64, until: i64) -> Figures {
    let in_stretch = |t: i64| t >= from && t < until;
    let longest_pause = series
        .gaps
        .iter()
        .filter(|(_, _, to)| in_stretch(*to))
        .map(|(p, start, to)| (to - start.max(&from), Some(*p)))
        .max()
        .unwrap_or((0, None));
    let duplicates = series.duplicates.iter().filter(|t| in_stretch(**t)).count();
    let origin = series.origin_ms;
    let bucket_start = |b: usize| origin + i64::try_from(b).unwrap_or(i64::MAX) * BUCKET_MS;
    let (mut lag_over_for, mut max_lag) = (0, 0);
    for (b, lag) in series.lag.iter().enumerate().filter(|(b, _)| in_stretch(bucket_start(*b))) {
        max_lag = max_lag.max(*lag);
        if *lag >= 1000 {
            lag_over_for = bucket_start(b) + BUCKET_MS - from;
        }
    }
    Figures { longest_pause, duplicates, lag_over_for, max_lag }
}

/// Each event's figures, from its mark to the next (the last to `stream_end`).
pub fn events(
    marks: &[(Role, String, i64, bool)],
    stream_end: i64,
    series: &BTreeMap<Stage, Series>,
    stage: impl Fn(Role) -> Stage,
) -> Vec<EventReport> {
    marks
        .iter()
        .enumerate()
        .map(|(i, (role, what, at, settled))| {
            let until = marks.get(i + 1).map_or(stream_end, |m| m.2);
            let figures = series.get(&stage(*role)).map(|s| measure(s, *at, until)).unwrap_or_default();
            EventReport { role: *role, what: what.clone(), settled: *settled, figures }
        })
        .collect()
}

/// `ops audit --format json` of `p`'s topics.
pub async fn audit(p: &Pipeline) -> Audit {
    let out = Command::new(bin("ops"))
        .args(["audit", "--format", "json", "--bootstrap-servers", &p.kafka.bootstrap_servers])
        .args(["--s3-bucket", &p.s3.s3_bucket, "--dims-prefix", &p.s3.dims_prefix])
        .args(["--input-topic", &p.sensors, "--enriched-topic", &p.enriched])
        .args(["--alerts-topic", &p.alerts, "--counts-topic", &p.counts])
        .output()
        .expect("run ops audit");
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let Ok(report) = serde_json::from_str::<serde_json::Value>(&json) else {
        return Audit { json: format!("{json}{}", String::from_utf8_lossy(&out.stderr)), ..Audit::default() };
    };
    let mut audit = Audit { json, events: report["input"]["events"].as_u64().unwrap_or(0), ..Audit::default() };
    for stage in report["stages"].as_array().into_iter().flatten() {
        let n = |k: &str| stage[k].as_u64().unwrap_or(0);
        let name = stage["stage"].as_str().unwrap_or("?").to_owned();
        audit.wrong.insert(name.clone(), n("missing") + n("different") + n("unexpected") + n("invalid"));
        audit.extra_copies.insert(name.clone(), n("extra_copies"));
        if name == "windows" {
            audit.windows = (n("expected"), n("found"));
        }
    }
    audit
}
