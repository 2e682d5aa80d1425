//! Pieces of the end-to-end benchmark (`bench-e2e`): process figures from `/proc`, a tiny HTTP
//! client for the services' `/metrics` and `/readyz`, percentiles, and the report (a table on
//! stdout and the same figures as JSON).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What `/proc` says about a running (or exited, not yet reaped) process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// Process state letter (`R`, `S`, `Z`…).
    pub state: char,
    /// user + system CPU seconds of the whole process (every thread).
    pub cpu_s: f64,
    /// Peak resident set (`VmHWM`), KiB; None once the process has exited (a zombie has no memory).
    pub peak_rss_kib: Option<u64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; None when the process is gone (reaped).
pub fn sample(pid: u32, ticks: f64) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, cpu_s) = parse_stat(&stat, ticks)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Some(ProcSample { state, cpu_s, peak_rss_kib: parse_vm_hwm(&status) })
}

/// State and utime + stime (seconds) from the text of `/proc/<pid>/stat`.
pub fn parse_stat(stat: &str, ticks: f64) -> Option<(char, f64)> {
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 on: state is field 3, utime 14, stime 15.
    let state = fields.first()?.chars().next()?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((state, (utime + stime) / ticks))
}

/// `VmHWM` (KiB) from the text of `/proc/<pid>/status`.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// GET `path` from a server on `addr` (plain HTTP/1.1, loopback): (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let sock = addr.parse().map_err(|_| std::io::Error::other(format!("bad address {addr}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

/// The value of the Prometheus sample whose name and labels are exactly `series`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

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
    /// `generator`, `enricher`, … or `relay-source`, `relay-hop1`, ….
    pub name: String,
    /// Peak resident set, MiB (`VmHWM`, last sample before it stopped).
    pub peak_rss_mib: f64,
    /// user + system CPU seconds over its whole life.
    pub cpu_s: f64,
    /// Process start → `/readyz` answered 200, ms (services only).
    pub start_to_ready_ms: Option<f64>,
    /// The group join: the `consuming` log line (subscribed) → `partitions assigned`, ms.
    pub group_join_ms: Option<f64>,
    /// start → ready minus the group join: the service's own start-up, ms.
    pub own_startup_ms: Option<f64>,
}

/// One phase: one system (pipeline or relay) at one offered rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// `pipeline` or `relay`.
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
    /// Event produce timestamp → its alert received from the last topic.
    pub latency: Latency,
    /// Event produce timestamp → its alert's own CreateTime (enqueued by the last hop's
    /// producer): the same path without the last hop's batching, broker write and fetch, and
    /// without any lag of the driver's consumer.
    pub latency_to_last_produce: Latency,
    /// Every process of the phase.
    pub processes: Vec<ProcReport>,
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
}

impl Report {
    /// The full-speed phase of `system`.
    pub fn full_speed(&self, system: &str) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.system == system && p.rate == 0.0)
    }

    /// Pipeline throughput ÷ relay throughput, both at full speed in this run.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.full_speed("pipeline")?.events_per_s / self.full_speed("relay")?.events_per_s)
    }

    /// The table and the summary line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let rate = |r: f64| if r == 0.0 { "full speed".to_owned() } else { format!("{r:.0}/s") };
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        s.push_str(&format!("machine: {}\n", self.machine));
        s.push_str(
            "hops: generator -> sensors -> enricher -> enriched -> detector -> alerts -> counter\n\
             relay: source -> A -> hop -> B -> hop (drops non-alerts by their last byte) -> C -> sink\n\n",
        );
        s.push_str(&format!(
            "{:<9} {:<10} {:>8} {:>7} {:>6} {:>8} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8}\n",
            "system",
            "offered",
            "events",
            "final",
            "exact",
            "seconds",
            "events/s",
            "ratio",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p99' ms"
        ));
        for p in &self.phases {
            let relay = self.phases.iter().find(|r| r.system == "relay" && r.rate == p.rate);
            let ratio = match (p.system.as_str(), relay) {
                ("pipeline", Some(r)) => format!("{:.2}", p.events_per_s / r.events_per_s),
                _ => "-".to_owned(),
            };
            s.push_str(&format!(
                "{:<9} {:<10} {:>8} {:>7} {:>6} {:>8.2} {:>9.0} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1}\n",
                p.system,
                rate(p.rate),
                p.events,
                p.counted_final,
                if p.exact { "yes" } else { "NO" },
                p.seconds,
                p.events_per_s,
                ratio,
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.latency.max_ms,
                p.latency_to_last_produce.p99_ms
            ));
        }
        s.push_str(
            "throughput: events / (first produce -> the counter (relay: sink) counted the last alert)\n\
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
        let sizes: Vec<String> = ["pipeline", "relay"].iter().filter_map(|s| bytes(s)).collect();
        s.push_str(&format!("mean record bytes per topic: {}\n", sizes.join("; ")));
        s.push_str(&format!(
            "\n{:<9} {:<10} {:<13} {:>9} {:>7} {:>9} {:>8} {:>8}\n",
            "system", "offered", "process", "peak MiB", "CPU s", "ready ms", "join ms", "own ms"
        ));
        for p in &self.phases {
            for q in &p.processes {
                s.push_str(&format!(
                    "{:<9} {:<10} {:<13} {:>9.1} {:>7.2} {:>9} {:>8} {:>8}\n",
                    p.system,
                    rate(p.rate),
                    q.name,
                    q.peak_rss_mib,
                    q.cpu_s,
                    opt(q.start_to_ready_ms),
                    opt(q.group_join_ms),
                    opt(q.own_startup_ms)
                ));
            }
        }
        s.push_str(&format!("\n{}\n", self.summary()));
        s
    }

    /// One line: ratio, p99 at the paced rate, largest RSS, slowest start-up.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        match (self.full_speed("pipeline"), self.full_speed("relay")) {
            (Some(p), Some(r)) => parts.push(format!(
                "throughput {:.2} of the relay ({:.0} vs {:.0} events/s)",
                p.events_per_s / r.events_per_s,
                p.events_per_s,
                r.events_per_s
            )),
            (Some(p), None) => parts.push(format!("throughput {:.0} events/s (no relay)", p.events_per_s)),
            _ => {}
        }
        for p in self.phases.iter().filter(|p| p.system == "pipeline" && p.rate > 0.0) {
            let relay = self.phases.iter().find(|r| r.system == "relay" && r.rate == p.rate);
            let floor = relay.map_or_else(String::new, |r| format!(" (relay {:.1})", r.latency.p99_ms));
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
        let exact = self.phases.iter().all(|p| p.exact);
        parts.push(if exact { "counts exact".to_owned() } else { "COUNTS NOT EXACT".to_owned() });
        format!("summary: {}", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parse() {
        let stat = "1234 (tokio (rt) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_stat(stat, 100.0), Some(('S', 3.0)));
        assert_eq!(parse_vm_hwm("Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t 1 kB\n"), Some(20480));
        let me = sample(std::process::id(), clock_ticks()).expect("own process");
        assert!(me.peak_rss_kib.is_some_and(|k| k > 0) && me.state != 'Z');
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
    fn metric_lines() {
        let text = "# TYPE x counter\nx{service=\"counter\"} 42\nx{service=\"counter\",a=\"b\"} 1\n";
        assert_eq!(metric(text, "x{service=\"counter\"}"), Some(42.0));
        assert_eq!(metric(text, "y"), None);
    }
}
