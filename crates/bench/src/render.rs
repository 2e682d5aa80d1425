//! The report as text: the phase table, the process table, the summary line and one line per
//! offered rate.

use std::fmt::Write as _;

use crate::report::{KEEPS_UP, PhaseReport, Report};

const SYSTEMS: [&str; 3] = ["pipeline", "relay", "bare"];

fn offered(rate: f64) -> String {
    if rate == 0.0 { "full speed".to_owned() } else { format!("{rate:.0}/s") }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

impl Report {
    /// The tables, the summary line and the per-rate lines.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "machine: {}", self.machine);
        s.push_str(
            "hops: generator -> sensors -> enricher -> enriched -> detector -> alerts -> counter\n\
             relay: source -> A -> hop -> B -> hop (drops non-alerts by their last byte) -> C -> sink\n\
             bare: the relay with bare hops (BaseConsumer + BaseProducer: poll a batch, produce, flush, store offsets)\n\n",
        );
        let _ = writeln!(
            s,
            "{:<9} {:<10} {:>8} {:>7} {:>6} {:>8} {:>9} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8}",
            "system",
            "offered",
            "events",
            "final",
            "exact",
            "seconds",
            "events/s",
            "in/s",
            "out/s",
            "÷relay",
            "÷bare",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p99' ms"
        );
        for p in &self.phases {
            let ratio = |other: &str| match (p.system.as_str(), self.phase(other, p.rate)) {
                ("pipeline", Some(o)) => format!("{:.2}", p.events_per_s / o.events_per_s),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                s,
                "{:<9} {:<10} {:>8} {:>7} {:>6} {:>8.2} {:>9.0} {:>7.0} {:>7.0} {:>6} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                p.system,
                offered(p.rate),
                p.events,
                p.counted_final,
                if p.exact { "yes" } else { "NO" },
                p.seconds,
                p.events_per_s,
                p.input_per_s,
                p.output_per_s,
                ratio("relay"),
                ratio("bare"),
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.latency.max_ms,
                p.latency_to_last_produce.p99_ms
            );
        }
        s.push_str(
            "throughput (events/s): events / (first produce -> the counter (relays: sink) counted the last alert); \
             ÷relay, ÷bare: the pipeline's over theirs\n\
             in/s: the source's own rate (first -> last CreateTime); out/s: in/s x produce span / arrival span \
             between the first and the last tenth of the alerts, at most in/s (= in/s when the latency does not grow)\n\
             latency: event produced (CreateTime on the first topic) -> its alert received from the last topic by \
             the driver's consumer;\n  p99': to the alert's own CreateTime instead (enqueued by the last hop, before \
             its batching and broker write)\n",
        );
        let bytes = |system: &str| {
            self.phases.iter().find(|p| p.system == system).map(|p| {
                let [a, b, c] = p.topic_mean_bytes;
                format!("{system} {a:.0} / {b:.0} / {c:.0}")
            })
        };
        let sizes: Vec<String> = SYSTEMS.iter().filter_map(|s| bytes(s)).collect();
        let _ = writeln!(s, "mean record bytes per topic: {}", sizes.join("; "));
        let _ = writeln!(
            s,
            "\n{:<9} {:<10} {:<13} {:>9} {:>7} {:>9} {:>8} {:>9} {:>8} {:>8}",
            "system",
            "offered",
            "process",
            "peak MiB",
            "CPU s",
            "start CPU",
            "µs/event",
            "ready ms",
            "join ms",
            "own ms"
        );
        for p in &self.phases {
            for q in &p.processes {
                let _ = writeln!(
                    s,
                    "{:<9} {:<10} {:<13} {:>9.1} {:>7.2} {:>9} {:>8.1} {:>9} {:>8} {:>8}",
                    p.system,
                    offered(p.rate),
                    q.name,
                    q.peak_rss_mib,
                    q.cpu_s,
                    opt(q.cpu_before_source_s, 2),
                    q.cpu_us_per_event,
                    opt(q.start_to_ready_ms, 0),
                    opt(q.group_join_ms, 0),
                    opt(q.own_startup_ms, 0)
                );
            }
        }
        s.push_str(
            "CPU s: utime + stime over the process's life; start CPU: of which before the source started; \
             µs/event: CPU s / the phase's events\n",
        );
        let _ = writeln!(s, "\n{}", self.summary());
        s.push_str(
            "per offered rate: CPU µs/event of every process (in parentheses: without the source, i.e. the services \
             / the hops and sink); keeps up = out/s >= 99 % of offered\n",
        );
        for rate in self.offered() {
            let _ = writeln!(s, "  {}", self.rate_line(rate));
        }
        s
    }

    /// One line for one offered rate: rates, CPU per event and the pipeline's ratios.
    pub fn rate_line(&self, rate: f64) -> String {
        let phases: Vec<&PhaseReport> = SYSTEMS.iter().filter_map(|system| self.phase(system, rate)).collect();
        let list = |f: &dyn Fn(&PhaseReport) -> String| {
            phases.iter().map(|p| format!("{} {}", p.system, f(p))).collect::<Vec<_>>().join(", ")
        };
        let mut parts = Vec::new();
        if rate == 0.0 {
            parts.push(format!("events/s {}", list(&|p| format!("{:.0}", p.events_per_s))));
        } else {
            parts.push(format!(
                "out/s {}",
                list(&|p| {
                    let keeps = if p.keeps_up == Some(true) { "keeps up" } else { "BEHIND" };
                    format!("{:.0} ({:.1} %, {keeps})", p.output_per_s, 100.0 * p.output_per_s / rate)
                })
            ));
        }
        parts.push(format!(
            "CPU µs/event {}",
            list(&|p| format!("{:.1} ({:.1})", p.cpu_us_per_event, p.cpu_us_per_event_without_source))
        ));
        let summary = self.rates.iter().find(|r| r.rate == rate);
        for (name, ratios) in [("bare", summary.and_then(|r| r.vs_bare)), ("relay", summary.and_then(|r| r.vs_relay))] {
            let Some(r) = ratios else { continue };
            let speed = if rate == 0.0 {
                format!("throughput {:.2}, ", r.throughput)
            } else {
                format!("out/s {:.2}, ", r.output)
            };
            parts.push(format!(
                "pipeline ÷ {name}: {speed}CPU {:.2} ({:.2}), p99 {:.2}",
                r.cpu, r.cpu_without_source, r.p99
            ));
        }
        format!("{}: {}", offered(rate), parts.join("; "))
    }

    /// One line: the full-speed ratios, p99 at the paced rates, largest RSS, slowest start-up.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.full_speed("pipeline") {
            let of: Vec<String> = [("relay", "the relay"), ("bare", "the bare relay")]
                .iter()
                .filter_map(|(system, label)| {
                    let r = self.full_speed(system)?;
                    Some(format!(
                        "{:.2} of {label} ({:.0} vs {:.0} events/s)",
                        p.events_per_s / r.events_per_s,
                        p.events_per_s,
                        r.events_per_s
                    ))
                })
                .collect();
            if of.is_empty() {
                parts.push(format!("throughput {:.0} events/s (no relay)", p.events_per_s));
            } else {
                parts.push(format!("throughput {}", of.join(", ")));
            }
        }
        for p in self.phases.iter().filter(|p| p.system == "pipeline" && p.rate > 0.0) {
            let floors: Vec<String> = ["relay", "bare"]
                .iter()
                .filter_map(|system| Some(format!("{system} {:.1}", self.phase(system, p.rate)?.latency.p99_ms)))
                .collect();
            let floor = if floors.is_empty() { String::new() } else { format!(" ({})", floors.join(", ")) };
            parts.push(format!("p99 {:.1} ms{floor} at {:.0}/s", p.latency.p99_ms, p.rate));
        }
        let services = || {
            self.phases
                .iter()
                .filter(|p| p.system == "pipeline")
                .flat_map(|p| p.processes.iter().filter(|q| q.name != "generator"))
        };
        if let Some(q) = services().max_by(|a, b| a.peak_rss_mib.total_cmp(&b.peak_rss_mib)) {
            parts.push(format!("max service RSS {:.1} MiB ({})", q.peak_rss_mib, q.name));
        }
        if let Some(q) = services()
            .filter(|q| q.own_startup_ms.is_some())
            .max_by(|a, b| a.own_startup_ms.unwrap_or(0.0).total_cmp(&b.own_startup_ms.unwrap_or(0.0)))
        {
            parts.push(format!(
                "slowest ready {:.0} ms after the group join ({})",
                q.own_startup_ms.unwrap_or(0.0),
                q.name
            ));
        }
        let behind: Vec<String> = self
            .phases
            .iter()
            .filter(|p| p.keeps_up == Some(false))
            .map(|p| format!("{} at {}", p.system, offered(p.rate)))
            .collect();
        if !behind.is_empty() {
            parts.push(format!("below {:.0} % of offered: {}", KEEPS_UP * 100.0, behind.join(", ")));
        }
        let exact = self.phases.iter().all(|p| p.exact);
        parts.push(if exact { "counts exact".to_owned() } else { "COUNTS NOT EXACT".to_owned() });
        format!("summary: {}", parts.join("; "))
    }
}
