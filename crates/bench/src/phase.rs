//! One phase: one system at one offered rate on fresh topics. Start the consuming stages, wait
//! until they are ready, start the source, wait until the final stage has counted the last
//! alert, stop everything, then check every count and measure the records.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use e2e::Pipeline;
use pipeline_testkit as testkit;
use rdkafka::Message;

use crate::options::{Options, System};
use crate::probe::{EventId, Probe, count, scan};
use crate::procs::{Monitor, Proc};
use crate::report::{KEEPS_UP, Latency, PhaseReport, output_rate};
use crate::{http_get, metric};

/// The counter's consumed-records series on `/metrics`.
const COUNTER_SERIES: &str = "pipeline_records_consumed_total{service=\"counter\"}";

/// Microseconds since the Unix epoch.
pub fn unix_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// A progress line on stderr.
pub fn say(msg: impl AsRef<str>) {
    eprintln!("bench-e2e: {}", msg.as_ref());
}

/// What the regenerated events say each phase must produce.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub alerts: u64,
    /// Mean value bytes of sensor, enriched and alert records.
    pub bytes: [f64; 3],
    /// Mean value bytes of the relays' three topics.
    pub relay_bytes: [f64; 3],
}

/// Settings and state every phase shares.
#[derive(Debug)]
pub struct Bench {
    pub opts: Options,
    pub(crate) bin_dir: PathBuf,
    /// The run's log directory.
    run_dir: PathBuf,
    /// The current phase's (a directory of the run's).
    pub(crate) log_dir: PathBuf,
    pub(crate) ticks: f64,
    pub(crate) rt: tokio::runtime::Runtime,
    /// Phases started so far.
    phases: usize,
    pub(crate) expected: HashMap<u64, Expected>,
}

impl Bench {
    /// Logs go to `log_dir` (one directory per phase).
    pub fn new(opts: Options, bin_dir: PathBuf, log_dir: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            opts,
            bin_dir,
            run_dir: log_dir.clone(),
            log_dir,
            ticks: crate::procstat::clock_ticks(),
            rt: tokio::runtime::Runtime::new()?,
            phases: 0,
            expected: HashMap::new(),
        })
    }

    /// One phase of `system` at `rate` (0 = full speed) with `events` events, on fresh topics
    /// (deleted afterwards unless --keep-topics).
    pub fn phase(&mut self, system: System, rate: f64, events: u64) -> anyhow::Result<PhaseReport> {
        let name = system.name();
        let offered = if rate == 0.0 { "full speed".to_owned() } else { format!("{rate:.0}/s") };
        let phase_dir = format!("{}-{name}-{}", self.phases + 1, offered.replace([' ', '/'], "-"));
        self.phases += 1;
        self.log_dir = self.run_dir.join(phase_dir);
        std::fs::create_dir_all(&self.log_dir)?;
        let p = self.rt.block_on(Pipeline::new(self.opts.partitions, self.opts.seed));
        let expected = self.expected(&p, events)?;
        say(format!("{name} at {offered}: {events} events, {} alerts expected; topics {}-*", expected.alerts, p.id));
        let result = self.run_phase(&p, system, rate, events, expected);
        self.delete_topics(&p);
        let mut report = result?;
        report.system = name.to_owned();
        say(format!(
            "{name} at {offered}: {:.0} events/s (out {:.0}/s), p99 {:.1} ms, {:.1} CPU µs/event, exact: {}",
            report.events_per_s, report.output_per_s, report.latency.p99_ms, report.cpu_us_per_event, report.exact
        ));
        Ok(report)
    }

    fn run_phase(
        &mut self,
        p: &Pipeline,
        system: System,
        rate: f64,
        events: u64,
        expected: Expected,
    ) -> anyhow::Result<PhaseReport> {
        let relay = system != System::Pipeline;
        // 1. The consuming stages, ready before the first record; their CPU so far.
        let (mut stages, ready_us) = self.start_stages(p, system, expected.alerts)?;
        let cpu_before: Vec<Option<f64>> =
            stages.iter().map(|s| crate::procstat::sample(s.pid(), self.ticks).map(|s| s.cpu_s)).collect();

        // 2. The driver's consumer of the last topic, then the source.
        let probe = Probe::start(&p.alerts, expected.alerts)?;
        let source = self.start_source(p, system, rate, events)?;
        let monitor = Monitor::start(source.pid(), self.ticks);

        // 3. Until the final stage has counted the last record.
        let (source, end_us) = self.wait_end(&mut stages, source, &monitor, relay, expected.alerts)?;

        // 4. The source's figures, the probe's arrivals, then stop the stages.
        let source_log = source.log.clone();
        // Reaped already or not: finish() joins the monitor and waits (the status is kept).
        let (status, source_report, _) = monitor.finish(source)?;
        ensure!(status.success(), "the source failed ({status}); see {}", source_log.display());
        let arrivals = probe.finish(expected.alerts, Duration::from_secs(60))?;
        let counted_live = if relay {
            None
        } else {
            let addr = stages.last().and_then(|c| c.metrics_addr.clone()).unwrap_or_default();
            // Let a duplicate, if any, be counted before reading the final count.
            std::thread::sleep(Duration::from_millis(500));
            http_get(&addr, "/metrics").ok().and_then(|(_, b)| metric(&b, COUNTER_SERIES))
        };
        if relay {
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut processes = vec![source_report];
        let mut counted_final = counted_live.map_or(0, |c| c as u64);
        for ((stage, ready), before) in stages.into_iter().zip(ready_us).zip(cpu_before) {
            let (start_us, log) = (stage.start_us, stage.log.clone());
            let (status, mut report, lines) = stage.stop(self.ticks)?;
            ensure!(status.success(), "{} did not stop cleanly ({status}); see {}", report.name, log.display());
            if let Some(n) = lines.iter().find_map(|l| l.strip_prefix("final ")) {
                counted_final = n.trim().parse().unwrap_or(0);
            }
            report.cpu_before_source_s = before;
            if let Some(ready) = ready {
                let (consuming, assigned) = crate::stages::join_times(&log);
                let to_ready = (ready - start_us) as f64 / 1000.0;
                let join = consuming.zip(assigned).map(|(c, a)| (a - c) as f64 / 1000.0);
                report.start_to_ready_ms = Some(to_ready);
                report.group_join_ms = join;
                report.own_startup_ms = join.map(|j| to_ready - j);
            }
            processes.push(report);
        }

        // 5. Counts, first produce and latencies from the first topic's records.
        let topic_records = [count(&p.sensors), count(&p.enriched), count(&p.alerts)];
        let (mut first_ms, mut last_ms) = (i64::MAX, i64::MIN);
        let mut latencies = Vec::with_capacity(arrivals.len());
        let mut to_last_produce = Vec::with_capacity(arrivals.len());
        let mut alerts = Vec::with_capacity(arrivals.len());
        scan(&p.sensors, |m| {
            if let Some(ts) = m.timestamp().to_millis() {
                first_ms = first_ms.min(ts);
                last_ms = last_ms.max(ts);
                if let Ok(id) = serde_json::from_slice::<EventId>(m.payload().unwrap_or_default())
                    && let Some(&(at, created)) = arrivals.get(&id.event_id)
                {
                    let latency = at as f64 / 1000.0 - ts as f64;
                    latencies.push(latency);
                    alerts.push((ts, latency));
                    to_last_produce.push((created - ts) as f64);
                }
            }
        })?;
        let mut exact = topic_records == [events, events, expected.alerts]
            && counted_final == expected.alerts
            && arrivals.len() as u64 == expected.alerts
            && latencies.len() as u64 == expected.alerts;
        if !relay {
            exact &= self.windows_add_up(p, expected.alerts)?;
        }
        if !exact {
            say(format!(
                "counts: topics {topic_records:?} (want [{events}, {events}, {}]), final stage {counted_final}, \
                 probe {}, matched {}",
                expected.alerts,
                arrivals.len(),
                latencies.len()
            ));
        }
        let seconds = (end_us - first_ms * 1000) as f64 / 1e6;
        let (input_per_s, output_per_s) = output_rate(events, first_ms, last_ms, &mut alerts);
        let mut report = PhaseReport {
            system: system.name().to_owned(),
            rate,
            events,
            expected_final: expected.alerts,
            counted_final,
            topic_records,
            topic_mean_bytes: if relay { expected.relay_bytes } else { expected.bytes },
            exact,
            seconds,
            events_per_s: events as f64 / seconds,
            input_per_s,
            output_per_s,
            keeps_up: (rate > 0.0).then_some(output_per_s >= KEEPS_UP * rate),
            latency: Latency::of(&mut latencies),
            latency_to_last_produce: Latency::of(&mut to_last_produce),
            processes,
            ..PhaseReport::default()
        };
        report.per_event_cpu();
        Ok(report)
    }

    /// Waits until the final stage has counted `alerts` (the relays' sink prints the instant,
    /// the counter's `/metrics` is polled every 25 ms): (the source, the end in µs).
    fn wait_end(
        &self,
        stages: &mut [Proc],
        source: Proc,
        monitor: &Monitor,
        relay: bool,
        alerts: u64,
    ) -> anyhow::Result<(Proc, i64)> {
        let deadline = Instant::now() + self.opts.timeout;
        let mut reaped = false;
        let mut source = source;
        // A source that has exited must have succeeded (reaped once; finish() keeps the status).
        let mut check_source = |source: &mut Proc| -> anyhow::Result<()> {
            if monitor.exited() && !reaped {
                let status = source.child.wait()?;
                ensure!(status.success(), "{} failed ({status}); see {}", source.name, source.log.display());
                reaped = true;
            }
            Ok(())
        };
        // Any stage that exits early (a hop's fatal error) fails the phase at once.
        let check_stages = |stages: &mut [Proc]| stages.iter_mut().try_for_each(Proc::check_running);
        let end_us = if alerts == 0 {
            while !monitor.exited() {
                std::thread::sleep(Duration::from_millis(20));
            }
            unix_us()
        } else if relay {
            loop {
                check_source(&mut source)?;
                check_stages(stages)?;
                let last = stages.last_mut().context("final stage")?;
                match last.wait_line("reached", Duration::from_millis(200)) {
                    Ok((_, line)) => {
                        break line.split_whitespace().nth(2).and_then(|t| t.parse::<i64>().ok()).unwrap_or(0) * 1000;
                    }
                    Err(e) if Instant::now() > deadline => return Err(e.context("the sink never counted them all")),
                    Err(_) => {}
                }
            }
        } else {
            let addr = stages.last().and_then(|c| c.metrics_addr.clone()).unwrap_or_default();
            loop {
                check_source(&mut source)?;
                check_stages(stages)?;
                let got = http_get(&addr, "/metrics").ok().and_then(|(_, b)| metric(&b, COUNTER_SERIES)).unwrap_or(0.0);
                if got as u64 >= alerts {
                    break unix_us();
                }
                if Instant::now() >= deadline {
                    bail!("the counter counted {got} of {alerts} alerts in {:?}", self.opts.timeout);
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        };
        Ok((source, end_us))
    }

    /// The counter's windows published to alert-counts add up to every alert.
    fn windows_add_up(&self, p: &Pipeline, alerts: u64) -> anyhow::Result<bool> {
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        for m in testkit::read_all(&p.counts, Duration::from_secs(60)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
            latest.insert(m.key().unwrap_or_default().to_vec(), v["num_of_rows"].as_u64().unwrap_or(0));
        }
        let windowed: u64 = latest.values().sum();
        if windowed != alerts {
            say(format!("alert-counts adds up to {windowed}, expected {alerts}"));
        }
        Ok(windowed == alerts)
    }
}
