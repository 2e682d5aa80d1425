//! The figures of a run (printed by [`crate::render`], written as JSON with `--json`) and the
//! ones derived from them: CPU per event, the output rate, the ratios between systems.

use serde::{Deserialize, Serialize};

/// A paced system keeps up when its output rate is at least this share of the offered rate.
pub const KEEPS_UP: f64 = 0.99;

/// Latency figures, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// How many records were measured.
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `ms` (sorted in place).
    pub fn of(ms: &mut [f64]) -> Self {
        if ms.is_empty() {
            return Self::default();
        }
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Self { samples: ms.len() as u64, p50_ms: rank(0.50), p99_ms: rank(0.99), max_ms: ms[ms.len() - 1] }
    }
}

/// One process of a phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcReport {
    /// `generator`, `enricher`, … or `relay-source`, `relay-hop1`, …, `bare-hop1`, ….
    pub name: String,
    /// Peak resident set, MiB (`VmHWM`, last sample before it stopped).
    pub peak_rss_mib: f64,
    /// user + system CPU seconds over its whole life.
    pub cpu_s: f64,
    /// `cpu_s` ÷ the phase's events, µs.
    #[serde(default)]
    pub cpu_us_per_event: f64,
    /// Of `cpu_s`, the seconds used before the source started (start-up, group join, idle
    /// until ready); consuming stages only.
    #[serde(default)]
    pub cpu_before_source_s: Option<f64>,
    /// Process start → `/readyz` answered 200, ms (services only).
    pub start_to_ready_ms: Option<f64>,
    /// The group join: the `consuming` log line (subscribed) → `partitions assigned`, ms.
    pub group_join_ms: Option<f64>,
    /// start → ready minus the group join: the service's own start-up, ms.
    pub own_startup_ms: Option<f64>,
}

/// One phase: one system (pipeline, relay or bare) at one offered rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// `pipeline`, `relay` or `bare`.
    pub system: String,
    /// Offered events/s; 0 = full speed.
    pub rate: f64,
    /// Events produced.
    pub events: u64,
    /// Records the final stage had to count (the alerts).
    pub expected_final: u64,
    /// Records counted by the final stage (counter / sink) when stopped.
    pub counted_final: u64,
    /// Records in each of the three topics (sensors, enriched, alerts or A, B, C).
    pub topic_records: [u64; 3],
    /// Mean record value bytes in each of the three topics.
    pub topic_mean_bytes: [f64; 3],
    /// Every count exact (no loss, no duplicate).
    pub exact: bool,
    /// First produce → the final stage counted the last record, seconds.
    pub seconds: f64,
    /// events / seconds.
    pub events_per_s: f64,
    /// The source's own rate: (events − 1) ÷ (first → last CreateTime on the first topic).
    #[serde(default)]
    pub input_per_s: f64,
    /// The rate events came out of the last topic; see [`output_rate`].
    #[serde(default)]
    pub output_per_s: f64,
    /// Paced phases: output ≥ [`KEEPS_UP`] × offered.
    #[serde(default)]
    pub keeps_up: Option<bool>,
    /// CPU seconds of every process ÷ events, µs.
    #[serde(default)]
    pub cpu_us_per_event: f64,
    /// The same without the source (generator / relay source): the consuming stages only.
    #[serde(default)]
    pub cpu_us_per_event_without_source: f64,
    /// Event produce timestamp → its alert received from the last topic.
    pub latency: Latency,
    /// Event produce timestamp → its alert's own CreateTime (enqueued by the last hop's
    /// producer): the same path without the last hop's batching, broker write and fetch, and
    /// without any lag of the driver's consumer.
    pub latency_to_last_produce: Latency,
    /// Every process of the phase, the source first.
    pub processes: Vec<ProcReport>,
}

impl PhaseReport {
    /// Fills the CPU-per-event figures of the phase and of its processes.
    pub fn per_event_cpu(&mut self) {
        let n = self.events.max(1) as f64;
        for q in &mut self.processes {
            q.cpu_us_per_event = q.cpu_s * 1e6 / n;
        }
        self.cpu_us_per_event = self.processes.iter().map(|q| q.cpu_us_per_event).sum();
        self.cpu_us_per_event_without_source = self.processes.iter().skip(1).map(|q| q.cpu_us_per_event).sum();
    }
}

/// (input events/s, output events/s) of a phase from its first topic's CreateTimes
/// (`first_ms`, `last_ms`) and, per alert, (its event's CreateTime ms, latency ms).
///
/// The output rate is the input rate × (produce span ÷ arrival span) between the first and the
/// last tenth of the alerts: each tenth's median CreateTime, and that plus the tenth's median
/// latency for its arrival; at most the input rate. A system that keeps up has the same latency
/// at the end as at the start, so its output rate equals its input rate however long that
/// latency is; one that falls behind has its latency grow, and its output rate drops by as
/// much. A latency that shrinks (a phase short against the batching, whose records all arrive
/// in one or two batches) gives the input rate. (Throughput, events ÷ first produce → last
/// count, also counts one latency, so a short paced phase never reaches its offered rate
/// there.)
pub fn output_rate(events: u64, first_ms: i64, last_ms: i64, alerts: &mut [(i64, f64)]) -> (f64, f64) {
    if events < 2 || last_ms <= first_ms {
        return (0.0, 0.0);
    }
    let input = (events - 1) as f64 * 1000.0 / (last_ms - first_ms) as f64;
    let tenth = alerts.len() / 10;
    if tenth == 0 {
        return (input, 0.0);
    }
    alerts.sort_by_key(|a| a.0);
    let median = |part: &[(i64, f64)]| {
        let mut ts: Vec<i64> = part.iter().map(|a| a.0).collect();
        let mut ms: Vec<f64> = part.iter().map(|a| a.1).collect();
        ts.sort_unstable();
        (ts[ts.len() / 2] as f64, Latency::of(&mut ms).p50_ms)
    };
    let (t0, l0) = median(&alerts[..tenth]);
    let (t1, l1) = median(&alerts[alerts.len() - tenth..]);
    let produced = t1 - t0;
    let arrived = produced + l1 - l0;
    if produced <= 0.0 || arrived <= produced {
        return (input, input);
    }
    (input, input * produced / arrived)
}

/// Pipeline ÷ another system at the same offered rate. A ratio over a baseline that measured
/// zero (a tiny run on a busy machine can see a relay use no CPU tick at all) has no value: it
/// is NaN, written as null and read back as NaN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    /// Throughput (events ÷ first produce → last count).
    #[serde(with = "no_value_as_null")]
    pub throughput: f64,
    /// Output rate.
    #[serde(with = "no_value_as_null")]
    pub output: f64,
    /// p99 latency.
    #[serde(with = "no_value_as_null")]
    pub p99: f64,
    /// CPU µs per event, every process.
    #[serde(with = "no_value_as_null")]
    pub cpu: f64,
    /// CPU µs per event without the source: the services ÷ the hops and sink.
    #[serde(with = "no_value_as_null")]
    pub cpu_without_source: f64,
}

/// A ratio that is not a number (its baseline was zero) as JSON `null`, and back.
mod no_value_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() { s.serialize_f64(*v) } else { s.serialize_none() }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

impl Ratios {
    fn of(p: &PhaseReport, other: &PhaseReport) -> Self {
        Self {
            throughput: p.events_per_s / other.events_per_s,
            output: p.output_per_s / other.output_per_s,
            p99: p.latency.p99_ms / other.latency.p99_ms,
            cpu: p.cpu_us_per_event / other.cpu_us_per_event,
            cpu_without_source: p.cpu_us_per_event_without_source / other.cpu_us_per_event_without_source,
        }
        .finite()
    }

    /// Each ratio over a zero (or non-finite) baseline made NaN: no value, rather than inf.
    fn finite(self) -> Self {
        let f = |v: f64| if v.is_finite() { v } else { f64::NAN };
        Self {
            throughput: f(self.throughput),
            output: f(self.output),
            p99: f(self.p99),
            cpu: f(self.cpu),
            cpu_without_source: f(self.cpu_without_source),
        }
    }
}

/// The pipeline against both relays at one offered rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RateSummary {
    /// Offered events/s; 0 = full speed.
    pub rate: f64,
    /// Pipeline ÷ relay.
    pub vs_relay: Option<Ratios>,
    /// Pipeline ÷ bare relay.
    pub vs_bare: Option<Ratios>,
}

/// The whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Cores, CPU model and load averages before and after.
    pub machine: String,
    /// Partitions of every topic.
    pub partitions: i32,
    /// Every phase in run order.
    pub phases: Vec<PhaseReport>,
    /// Per offered rate, in run order: the pipeline against the relays ([`Report::summarize`]).
    #[serde(default)]
    pub rates: Vec<RateSummary>,
}

impl Report {
    /// The phase of `system` at `rate`.
    pub fn phase(&self, system: &str, rate: f64) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.system == system && p.rate == rate)
    }

    /// The full-speed phase of `system`.
    pub fn full_speed(&self, system: &str) -> Option<&PhaseReport> {
        self.phase(system, 0.0)
    }

    /// Pipeline throughput ÷ relay throughput, both at full speed in this run.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.full_speed("pipeline")?.events_per_s / self.full_speed("relay")?.events_per_s)
    }

    /// Offered rates in run order, each once.
    pub fn offered(&self) -> Vec<f64> {
        let mut rates: Vec<f64> = Vec::new();
        for p in &self.phases {
            if !rates.contains(&p.rate) {
                rates.push(p.rate);
            }
        }
        rates
    }

    /// Fills `rates` from the phases.
    pub fn summarize(&mut self) {
        self.rates = self
            .offered()
            .into_iter()
            .map(|rate| {
                let pipeline = self.phase("pipeline", rate);
                let vs = |other: &str| Some(Ratios::of(pipeline?, self.phase(other, rate)?));
                RateSummary { rate, vs_relay: vs("relay"), vs_bare: vs("bare") }
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_over_a_zero_baseline_is_null_and_reads_back() {
        let r = Ratios { throughput: 1.5, output: f64::INFINITY, p99: f64::NAN, cpu: 2.5, cpu_without_source: 4.0 }
            .finite();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"throughput":1.5,"output":null,"p99":null,"cpu":2.5,"cpu_without_source":4.0}"#);
        let back: Ratios = serde_json::from_str(&json).unwrap();
        assert!(back.output.is_nan() && back.p99.is_nan() && back.cpu == 2.5);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut ms: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let l = Latency::of(&mut ms);
        assert_eq!((l.samples, l.p50_ms, l.p99_ms, l.max_ms), (100, 50.0, 99.0, 100.0));
        assert_eq!(Latency::of(&mut []), Latency::default());
        assert_eq!(Latency::of(&mut [7.0]).p99_ms, 7.0);
    }

    #[test]
    fn output_rate_ignores_a_constant_latency_and_sees_a_growing_one() {
        // 1 001 events 1 ms apart (1 000/s), every one an alert.
        let steady = |latency: &dyn Fn(i64) -> f64| {
            let mut alerts: Vec<(i64, f64)> = (0..=1000).map(|t| (t, latency(t))).collect();
            output_rate(1001, 0, 1000, &mut alerts)
        };
        let (input, output) = steady(&|_| 2000.0);
        assert!((input - 1000.0).abs() < 1e-9 && (output - 1000.0).abs() < 1e-9, "{input} {output}");
        // Latency grows by 0.25 ms per ms: the system drains at 1000 / 1.25 = 800/s.
        let (_, output) = steady(&|t| 100.0 + 0.25 * t as f64);
        assert!((output - 800.0).abs() < 1.0, "{output}");
        // Everything arrives in one batch at 1 500 ms: never more than the input.
        let (_, output) = steady(&|t| 1500.0 - t as f64);
        assert!((output - 1000.0).abs() < 1e-9, "{output}");
        assert_eq!(output_rate(1, 0, 0, &mut []), (0.0, 0.0));
    }

    #[test]
    fn cpu_per_event_and_ratios() {
        let proc = |name: &str, cpu_s: f64| ProcReport { name: name.into(), cpu_s, ..ProcReport::default() };
        let phase = |system: &str, cpu: [f64; 2], p99_ms: f64| {
            let mut p = PhaseReport {
                system: system.into(),
                rate: 1000.0,
                events: 10_000,
                events_per_s: 1000.0,
                output_per_s: 1000.0,
                latency: Latency { p99_ms, ..Latency::default() },
                processes: vec![proc("source", cpu[0]), proc("hop", cpu[1])],
                ..PhaseReport::default()
            };
            p.per_event_cpu();
            p
        };
        let mut report = Report {
            phases: vec![phase("pipeline", [0.1, 0.4], 300.0), phase("bare", [0.1, 0.1], 100.0)],
            ..Report::default()
        };
        let pipeline = &report.phases[0];
        assert!((pipeline.processes[1].cpu_us_per_event - 40.0).abs() < 1e-9);
        assert!((pipeline.cpu_us_per_event - 50.0).abs() < 1e-9);
        assert!((pipeline.cpu_us_per_event_without_source - 40.0).abs() < 1e-9);
        report.summarize();
        let [summary] = report.rates[..] else { panic!("{:?}", report.rates) };
        assert_eq!(summary.vs_relay, None);
        let bare = summary.vs_bare.expect("bare");
        assert!((bare.cpu - 2.5).abs() < 1e-9 && (bare.cpu_without_source - 4.0).abs() < 1e-9);
        assert!((bare.p99 - 3.0).abs() < 1e-9 && (bare.throughput - 1.0).abs() < 1e-9);
    }
}
