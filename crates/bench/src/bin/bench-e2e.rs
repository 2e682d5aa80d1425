//! `bench-e2e`: the pipeline end to end on the local stack, against a bare rdkafka relay through
//! the same hops, in one run (`scripts/bench.sh` builds and runs it).
//!
//! For every offered rate (`--rate`, default full speed and 5 000 events/s) it runs two phases,
//! each on fresh topics:
//! - **pipeline**: enricher, detector and counter started and ready (`/readyz`), then the
//!   generator produces the events (`--seed`, synthetic event times 1 ms apart);
//! - **relay**: `relay hop` A→B, `relay hop --only-marked` B→C and `relay sink` on C, then
//!   `relay source` produces the generator's very records to A (see `relay`'s docs).
//!
//! Figures: throughput = events ÷ (first produce → the final stage has counted the last record);
//! latency = an event's produce timestamp (CreateTime of its record on the first topic, stamped
//! by the producer's librdkafka when the record was enqueued) → its alert received from the last
//! topic by this driver's own consumer (assigned to every partition, fetch.wait.max.ms 10);
//! peak RSS (`VmHWM`) and CPU seconds (utime + stime) from `/proc`, sampled just before each
//! process is stopped (the generator and the relay source just after they exit, before they are
//! reaped); readiness from `/readyz` and the services' JSON log lines.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use bench::{Latency, PhaseReport, ProcReport, Report, http_get, metric, sample};
use clap::Parser;
use e2e::Pipeline;
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::Car;
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{AlertEvent, JsonEvent};
use pipeline_s3::dims::load_table;
use pipeline_testkit as testkit;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use uuid::Uuid;

/// Synthetic event times: the generator's `--start-time` and `--time-step`.
const START_TIME: &str = "2026-04-01T08:00:00Z";
const TIME_STEP: &str = "1ms";

/// End-to-end benchmark: the four services on the local stack against a bare rdkafka relay
/// through the same hops, same broker, same records. Prints a table and a summary line.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Events of each full-speed phase.
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 1_000_000)]
    events: u64,

    /// Offered rates in events/s, comma separated; 0 = full speed. Each rate runs the pipeline,
    /// then the relay.
    #[arg(long = "rate", env = "BENCH_RATES", value_delimiter = ',', default_values_t = [0.0, 5000.0])]
    rates: Vec<f64>,

    /// Events of each paced phase (rate > 0); at most --events.
    #[arg(long, env = "BENCH_PACED_EVENTS", default_value_t = 50_000)]
    paced_events: u64,

    /// Partitions of every topic.
    #[arg(long, env = "BENCH_PARTITIONS", default_value_t = 3)]
    partitions: i32,

    /// Run the pipeline phases only.
    #[arg(long, env = "BENCH_SKIP_RELAY")]
    skip_relay: bool,

    /// Seed of the dimension tables and of the events.
    #[arg(long, env = "BENCH_SEED", default_value_t = 1)]
    seed: u64,

    /// Directory of the generator, enricher, detector, counter and relay binaries (default: the
    /// directory of this binary).
    #[arg(long, env = "BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,

    /// librdkafka property given to every service, the generator and the relay (-X linger.ms=5).
    #[arg(short = 'X', long = "kafka-property", value_name = "KEY=VALUE")]
    properties: Vec<String>,

    /// Longest a phase may take from the first produce to the last count.
    #[arg(long, env = "BENCH_TIMEOUT", default_value = "15m", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Also write the figures as JSON to this file.
    #[arg(long, env = "BENCH_JSON")]
    json: Option<PathBuf>,

    /// Keep each phase's topics (default: deleted after the phase).
    #[arg(long)]
    keep_topics: bool,

    /// Directory for the processes' logs (default: a new one under the temporary directory).
    #[arg(long, env = "BENCH_LOG_DIR")]
    log_dir: Option<PathBuf>,
}

/// Settings every phase shares.
struct Ctx {
    cli: Cli,
    bin_dir: PathBuf,
    /// The run's log directory.
    run_dir: PathBuf,
    /// The current phase's (a directory of the run's).
    log_dir: PathBuf,
    ticks: f64,
    rt: tokio::runtime::Runtime,
    /// Phases started so far.
    phases: usize,
    expected: HashMap<u64, Expected>,
}

/// What the regenerated events say each phase must produce.
#[derive(Debug, Clone, Copy)]
struct Expected {
    alerts: u64,
    /// Mean value bytes of sensor, enriched and alert records.
    bytes: [f64; 3],
    /// Mean value bytes of the relay's three topics.
    relay_bytes: [f64; 3],
}

fn unix_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn say(msg: impl AsRef<str>) {
    eprintln!("bench-e2e: {}", msg.as_ref());
}

/// A child process with its log and, optionally, its stdout lines (with their arrival time).
struct Proc {
    name: &'static str,
    child: Child,
    start_us: i64,
    log: PathBuf,
    lines: Option<mpsc::Receiver<(i64, String)>>,
    metrics_addr: Option<String>,
}

impl Proc {
    fn spawn(ctx: &Ctx, name: &'static str, bin: &str, args: &[String], capture: bool) -> anyhow::Result<Self> {
        let log = ctx.log_dir.join(format!("{name}.log"));
        let open = || std::fs::OpenOptions::new().create(true).append(true).open(&log);
        let stdout = if capture { Stdio::piped() } else { Stdio::from(open()?) };
        let mut props = Vec::new();
        for p in &ctx.cli.properties {
            props.extend(["-X".to_owned(), p.clone()]);
        }
        let start_us = unix_us();
        let mut child = Command::new(ctx.bin_dir.join(bin))
            .args(args)
            .args(props)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(open()?)
            .spawn()
            .with_context(|| format!("starting {}", ctx.bin_dir.join(bin).display()))?;
        let lines = child.stdout.take().map(|out| {
            let (tx, rx) = mpsc::channel();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).ok();
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(f) = file.as_mut() {
                        use std::io::Write;
                        let _ = writeln!(f, "{line}");
                    }
                    if tx.send((unix_us(), line)).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        Ok(Self { name, child, start_us, log, lines, metrics_addr: None })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status}); see {}", self.name, self.log.display());
        }
        Ok(())
    }

    /// Waits for a stdout line starting with `prefix`: (arrival µs, line).
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<(i64, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines.as_ref().context("stdout not captured")?;
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok((at, line)) if line.starts_with(prefix) => return Ok((at, line)),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("{} closed its output before `{prefix}`; see {}", self.name, self.log.display())
                }
            }
            self.check_running()?;
            ensure!(Instant::now() < deadline, "{}: no `{prefix}` line within {timeout:?}", self.name);
        }
    }

    /// Samples `/proc`, then SIGTERM and waits (20 s, then SIGKILL): (exit status, report).
    fn stop(mut self, ticks: f64) -> anyhow::Result<(ExitStatus, ProcReport, Vec<String>)> {
        let s = sample(self.pid(), ticks).with_context(|| format!("{} is gone", self.name))?;
        Command::new("kill").args(["-TERM", &self.pid().to_string()]).status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines = self.lines.take().map(|rx| rx.iter().map(|(_, l)| l).collect()).unwrap_or_default();
        let report = ProcReport {
            name: self.name.to_owned(),
            peak_rss_mib: s.peak_rss_kib.unwrap_or(0) as f64 / 1024.0,
            cpu_s: s.cpu_s,
            ..ProcReport::default()
        };
        Ok((status, report, lines))
    }
}

/// Follows a process that ends by itself: its peak RSS while it runs and its CPU seconds once
/// it has exited (read from the zombie, before it is reaped).
struct Monitor {
    handle: JoinHandle<(u64, f64)>,
}

impl Monitor {
    fn start(pid: u32, ticks: f64) -> Self {
        let handle = std::thread::spawn(move || {
            let (mut hwm, mut cpu) = (0u64, 0.0);
            while let Some(s) = sample(pid, ticks) {
                cpu = s.cpu_s;
                hwm = hwm.max(s.peak_rss_kib.unwrap_or(0));
                if s.state == 'Z' || s.state == 'X' {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (hwm, cpu)
        });
        Self { handle }
    }

    fn exited(&self) -> bool {
        self.handle.is_finished()
    }

    /// Joins the monitor, then reaps the process.
    fn finish(self, mut proc: Proc) -> anyhow::Result<(ExitStatus, ProcReport, Vec<String>)> {
        let (hwm, cpu) = self.handle.join().map_err(|_| anyhow::anyhow!("monitor panicked"))?;
        let status = proc.child.wait()?;
        let lines = proc.lines.take().map(|rx| rx.iter().map(|(_, l)| l).collect()).unwrap_or_default();
        let report = ProcReport {
            name: proc.name.to_owned(),
            peak_rss_mib: hwm as f64 / 1024.0,
            cpu_s: cpu,
            ..ProcReport::default()
        };
        Ok((status, report, lines))
    }
}

/// Per event id: when its record of the last topic was received (µs) and that record's own
/// CreateTime (ms, stamped when the last hop's producer enqueued it).
type Arrivals = HashMap<Uuid, (i64, i64)>;

/// The driver's consumer of the last topic: the arrival time of every record, by event id.
struct Probe {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    handle: JoinHandle<anyhow::Result<Arrivals>>,
}

#[derive(serde::Deserialize)]
struct EventId {
    event_id: Uuid,
}

impl Probe {
    fn start(topic: &str, expected: u64) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = testkit::kafka()
            .client_config(&[
                ("group.id", &testkit::unique("bench-probe")),
                ("enable.auto.commit", "false"),
                ("fetch.wait.max.ms", "10"),
                ("enable.partition.eof", "false"),
            ])
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (stop2, received2) = (stop.clone(), received.clone());
        let handle = std::thread::spawn(move || {
            let mut seen = HashMap::with_capacity(expected as usize);
            while !stop2.load(Ordering::Relaxed) && (seen.len() as u64) < expected {
                let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
                let at = unix_us();
                let message = message?;
                let id: EventId = serde_json::from_slice(message.payload().unwrap_or_default())?;
                let created = message.timestamp().to_millis().unwrap_or(0);
                seen.entry(id.event_id).or_insert((at, created));
                received2.store(seen.len() as u64, Ordering::Relaxed);
            }
            Ok(seen)
        });
        Ok(Self { stop, received, handle })
    }

    /// Waits (bounded) for `expected` records, then stops.
    fn finish(self, expected: u64, timeout: Duration) -> anyhow::Result<Arrivals> {
        let deadline = Instant::now() + timeout;
        while self.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().map_err(|_| anyhow::anyhow!("probe panicked"))?
    }
}

/// Every record of `topic` from the beginning to the high watermarks read now.
fn scan(topic: &str, mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>)) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = testkit::kafka()
        .client_config(&[("group.id", &testkit::unique("bench-scan")), ("enable.auto.commit", "false")])
        .create()?;
    let timeout = Duration::from_secs(30);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut remaining = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        if high > low {
            remaining.insert(p.id(), high);
        }
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut n = 0;
    let mut idle = Instant::now();
    while !remaining.is_empty() {
        ensure!(idle.elapsed() < timeout, "reading {topic} stalled; still waiting on {remaining:?}");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message?;
            idle = Instant::now();
            n += 1;
            each(&message);
            if remaining.get(&message.partition()).is_some_and(|&high| message.offset() + 1 >= high) {
                remaining.remove(&message.partition());
            }
        }
    }
    Ok(n)
}

/// Records in `topic` (sum of high − low watermarks).
fn count(topic: &str) -> u64 {
    testkit::wait_for_count(topic, i64::MAX, Duration::ZERO).max(0) as u64
}

/// First `consuming` and `partitions assigned` log times (µs) of a service's JSON log.
fn join_times(log: &Path) -> (Option<i64>, Option<i64>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut found: [Option<i64>; 2] = [None, None];
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let message = v["fields"]["message"].as_str().unwrap_or_default();
        let slot = match message {
            "consuming" => 0,
            "partitions assigned" => 1,
            _ => continue,
        };
        let at = v["timestamp"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if found[slot].is_none() {
            found[slot] = at.map(|t| t.timestamp_micros());
        }
    }
    (found[0], found[1])
}

fn free_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

impl Ctx {
    /// Alerts and record sizes of the first `events` events, computed once per event count.
    fn expected(&mut self, p: &Pipeline, events: u64) -> anyhow::Result<Expected> {
        if let Some(e) = self.expected.get(&events) {
            return Ok(*e);
        }
        let cars: Vec<Car> = self.rt.block_on(load_table(&p.store, &p.s3.dims_prefix))?;
        let start = pipeline_core::schema::event_time::parse(START_TIME).map_err(anyhow::Error::msg)?;
        let clock = EventClock::Synthetic { start, step: chrono::Duration::milliseconds(1) };
        let mut g = EventGenerator::new(cars.iter().map(|c| c.car_id).collect(), Some(self.cli.seed), clock);
        let (join, rules) = (p.join(), AlertRules::default());
        let (mut alerts, mut bytes, mut alert_sensor) = (0u64, [0usize; 3], 0usize);
        let mut buf = Vec::with_capacity(512);
        for _ in 0..events {
            let sensor = g.next_event();
            buf.clear();
            sensor.encode_into(&mut buf);
            let sensor_len = buf.len();
            bytes[0] += sensor_len;
            let (enriched, _) = join.enrich(sensor);
            buf.clear();
            enriched.encode_into(&mut buf);
            bytes[1] += buf.len();
            let reasons = rules.check_event(&enriched);
            if !reasons.is_empty() {
                alerts += 1;
                alert_sensor += sensor_len;
                buf.clear();
                AlertEvent { event: &enriched, alert_reasons: reasons }.encode_into(&mut buf);
                bytes[2] += buf.len();
            }
        }
        let mean = |total: usize, n: u64| if n == 0 { 0.0 } else { total as f64 / n as f64 };
        let e = Expected {
            alerts,
            bytes: [mean(bytes[0], events), mean(bytes[1], events), mean(bytes[2], alerts)],
            // The relay's records are the sensor records, a space longer when not an alert.
            relay_bytes: [
                mean(bytes[0] + (events - alerts) as usize, events),
                mean(bytes[0] + (events - alerts) as usize, events),
                mean(alert_sensor, alerts),
            ],
        };
        self.expected.insert(events, e);
        Ok(e)
    }

    fn source_args(&self, p: &Pipeline, rate: f64, events: u64) -> Vec<String> {
        let mut args: Vec<String> = ["--s3-bucket", &p.s3.s3_bucket, "--dims-prefix", &p.s3.dims_prefix]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend([
            "--topic".into(),
            p.sensors.clone(),
            "--rate".into(),
            rate.to_string(),
            "--count".into(),
            events.to_string(),
            "--seed".into(),
            self.cli.seed.to_string(),
            "--start-time".into(),
            START_TIME.into(),
            "--time-step".into(),
            TIME_STEP.into(),
        ]);
        args
    }

    fn delete_topics(&self, p: &Pipeline) {
        if self.cli.keep_topics {
            return;
        }
        let mut topics: Vec<&str> = vec![&p.sensors, &p.enriched, &p.alerts, &p.counts, &p.late];
        topics.extend(p.dlq.values().map(String::as_str));
        let admin: Result<AdminClient<DefaultClientContext>, _> = testkit::kafka().client_config(&[]).create();
        if let Ok(admin) = admin
            && let Err(e) = self.rt.block_on(admin.delete_topics(&topics, &AdminOptions::new()))
        {
            say(format!("deleting the phase's topics failed: {e}"));
        }
    }

    /// One phase: start the consumers, wait until ready, produce, wait for the last count.
    fn phase(&mut self, relay: bool, rate: f64, events: u64) -> anyhow::Result<PhaseReport> {
        let system = if relay { "relay" } else { "pipeline" };
        let offered = if rate == 0.0 { "full speed".to_owned() } else { format!("{rate:.0}/s") };
        let phase_dir = format!("{}-{system}-{}", self.phases + 1, offered.replace([' ', '/'], "-"));
        self.phases += 1;
        self.log_dir = self.run_dir.join(phase_dir);
        std::fs::create_dir_all(&self.log_dir)?;
        let p = self.rt.block_on(Pipeline::new(self.cli.partitions, self.cli.seed));
        let expected = self.expected(&p, events)?;
        say(format!("{system} at {offered}: {events} events, {} alerts expected; topics {}-*", expected.alerts, p.id));
        let result = self.run_phase(&p, relay, rate, events, expected);
        self.delete_topics(&p);
        let mut report = result?;
        report.system = system.to_owned();
        say(format!(
            "{system} at {offered}: {:.0} events/s, p99 {:.1} ms, exact: {}",
            report.events_per_s, report.latency.p99_ms, report.exact
        ));
        Ok(report)
    }

    fn run_phase(
        &mut self,
        p: &Pipeline,
        relay: bool,
        rate: f64,
        events: u64,
        expected: Expected,
    ) -> anyhow::Result<PhaseReport> {
        let s = |v: &str| v.to_owned();
        // 1. The consuming stages, ready before the first record.
        let mut stages: Vec<Proc> = Vec::new();
        if relay {
            let hop = |input: &str, output: &str, group: String, marked: bool| {
                let mut a = vec![s("hop"), s("--input"), s(input), s("--output"), s(output), s("--group"), group];
                if marked {
                    a.push(s("--only-alerts"));
                }
                a
            };
            stages.push(Proc::spawn(
                self,
                "relay-hop1",
                "relay",
                &hop(&p.sensors, &p.enriched, format!("{}-hop1", p.id), false),
                true,
            )?);
            stages.push(Proc::spawn(
                self,
                "relay-hop2",
                "relay",
                &hop(&p.enriched, &p.alerts, format!("{}-hop2", p.id), true),
                true,
            )?);
            let sink = vec![
                s("sink"),
                s("--input"),
                p.alerts.clone(),
                s("--group"),
                format!("{}-sink", p.id),
                s("--expect"),
                expected.alerts.to_string(),
            ];
            stages.push(Proc::spawn(self, "relay-sink", "relay", &sink, true)?);
            for stage in &mut stages {
                stage.wait_line("assigned", Duration::from_secs(60))?;
            }
        } else {
            let common = |service: &str, addr: &str| {
                vec![
                    s("--group-id"),
                    format!("{}-{service}", p.id),
                    s("--metrics-addr"),
                    s(addr),
                    s("--log-format"),
                    s("json"),
                ]
            };
            let addr = free_addr()?;
            let mut args = common("enricher", &addr);
            args.extend([s("--s3-bucket"), p.s3.s3_bucket.clone(), s("--dims-prefix"), p.s3.dims_prefix.clone()]);
            args.extend([s("--input-topic"), p.sensors.clone(), s("--output-topic"), p.enriched.clone()]);
            let mut enricher = Proc::spawn(self, "enricher", "enricher", &args, false)?;
            enricher.metrics_addr = Some(addr);
            let addr = free_addr()?;
            let mut args = common("detector", &addr);
            args.extend([s("--input-topic"), p.enriched.clone(), s("--output-topic"), p.alerts.clone()]);
            let mut detector = Proc::spawn(self, "detector", "detector", &args, false)?;
            detector.metrics_addr = Some(addr);
            let addr = free_addr()?;
            let mut args = common("counter", &addr);
            args.extend([s("--input-topic"), p.alerts.clone(), s("--counts-topic"), p.counts.clone()]);
            args.extend([s("--late-topic"), p.late.clone(), s("--trigger"), s("1s"), s("--quiet")]);
            let mut counter = Proc::spawn(self, "counter", "counter", &args, false)?;
            counter.metrics_addr = Some(addr);
            stages = vec![enricher, detector, counter];
        }
        let mut ready_us: Vec<Option<i64>> = vec![None; stages.len()];
        if !relay {
            let deadline = Instant::now() + Duration::from_secs(60);
            while ready_us.iter().any(Option::is_none) {
                for (stage, ready) in stages.iter_mut().zip(ready_us.iter_mut()).filter(|(_, r)| r.is_none()) {
                    stage.check_running()?;
                    let addr = stage.metrics_addr.as_deref().unwrap_or_default();
                    if matches!(http_get(addr, "/readyz"), Ok((200, _))) {
                        *ready = Some(unix_us());
                    }
                }
                ensure!(Instant::now() < deadline, "the services were not ready within 60 s");
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        // 2. The driver's consumer of the last topic, then the source.
        let probe = Probe::start(&p.alerts, expected.alerts)?;
        let mut source_args = self.source_args(p, rate, events);
        let source = if relay {
            source_args.insert(0, s("source"));
            Proc::spawn(self, "relay-source", "relay", &source_args, true)?
        } else {
            source_args.insert(0, s("run"));
            Proc::spawn(self, "generator", "generator", &source_args, false)?
        };
        let monitor = Monitor::start(source.pid(), self.ticks);

        // 3. Until the final stage has counted the last record.
        let deadline = Instant::now() + self.cli.timeout;
        let mut source_slot = Some(source);
        let mut source_done = None;
        let mut check_source = |source_slot: &mut Option<Proc>, monitor: &Monitor| -> anyhow::Result<()> {
            if monitor.exited() && source_done.is_none() {
                let mut proc = source_slot.take().context("source")?;
                let status = proc.child.wait()?;
                ensure!(status.success(), "{} failed ({status}); see {}", proc.name, proc.log.display());
                source_done = Some(proc);
            }
            Ok(())
        };
        let end_us = if expected.alerts == 0 {
            while !monitor.exited() {
                std::thread::sleep(Duration::from_millis(20));
            }
            unix_us()
        } else if relay {
            let sink = stages.last_mut().context("sink")?;
            loop {
                check_source(&mut source_slot, &monitor)?;
                sink.check_running()?;
                match sink.wait_line("reached", Duration::from_millis(200)) {
                    Ok((_, line)) => {
                        break line.split_whitespace().nth(2).and_then(|t| t.parse::<i64>().ok()).unwrap_or(0) * 1000;
                    }
                    Err(e) if Instant::now() > deadline => return Err(e.context("the sink never counted them all")),
                    Err(_) => {}
                }
            }
        } else {
            let counter = stages.last_mut().context("counter")?;
            let addr = counter.metrics_addr.clone().unwrap_or_default();
            let series = "pipeline_records_consumed_total{service=\"counter\"}";
            loop {
                check_source(&mut source_slot, &monitor)?;
                counter.check_running()?;
                let got = http_get(&addr, "/metrics").ok().and_then(|(_, body)| metric(&body, series)).unwrap_or(0.0);
                if got as u64 >= expected.alerts {
                    break unix_us();
                }
                ensure!(
                    Instant::now() < deadline,
                    "the counter counted {got} of {} alerts in {:?}",
                    expected.alerts,
                    self.cli.timeout
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        };

        // 4. The source's figures, the probe's arrivals, then stop the stages.
        let source = match (source_slot, source_done) {
            (Some(proc), _) | (None, Some(proc)) => proc,
            (None, None) => bail!("source lost"),
        };
        let source_log = source.log.clone();
        // Reaped above or not: finish() joins the monitor and waits (the status is kept).
        let (status, source_report, _) = monitor.finish(source)?;
        ensure!(status.success(), "the source failed ({status}); see {}", source_log.display());
        let arrivals = probe.finish(expected.alerts, Duration::from_secs(60))?;
        let counted_live = if relay {
            None
        } else {
            let addr = stages.last().and_then(|c| c.metrics_addr.clone()).unwrap_or_default();
            // Let a duplicate, if any, be counted before reading the final count.
            std::thread::sleep(Duration::from_millis(500));
            http_get(&addr, "/metrics")
                .ok()
                .and_then(|(_, b)| metric(&b, "pipeline_records_consumed_total{service=\"counter\"}"))
        };
        if relay {
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut processes = vec![source_report];
        let mut counted_final = counted_live.map_or(0, |c| c as u64);
        for (stage, ready) in stages.into_iter().zip(ready_us) {
            let (start_us, log) = (stage.start_us, stage.log.clone());
            let (status, mut report, lines) = stage.stop(self.ticks)?;
            ensure!(status.success(), "{} did not stop cleanly ({status}); see {}", report.name, log.display());
            if let Some(n) = lines.iter().find_map(|l| l.strip_prefix("final ")) {
                counted_final = n.trim().parse().unwrap_or(0);
            }
            if let Some(ready) = ready {
                let (consuming, assigned) = join_times(&log);
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
        let mut first_ms = i64::MAX;
        let mut latencies = Vec::with_capacity(arrivals.len());
        let mut to_last_produce = Vec::with_capacity(arrivals.len());
        scan(&p.sensors, |m| {
            if let Some(ts) = m.timestamp().to_millis() {
                first_ms = first_ms.min(ts);
                if let Ok(id) = serde_json::from_slice::<EventId>(m.payload().unwrap_or_default())
                    && let Some(&(at, created)) = arrivals.get(&id.event_id)
                {
                    latencies.push(at as f64 / 1000.0 - ts as f64);
                    to_last_produce.push((created - ts) as f64);
                }
            }
        })?;
        let mut exact = topic_records == [events, events, expected.alerts]
            && counted_final == expected.alerts
            && arrivals.len() as u64 == expected.alerts
            && latencies.len() as u64 == expected.alerts;
        if !relay {
            // The counter's published windows add up to every alert.
            let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
            for m in testkit::read_all(&p.counts, Duration::from_secs(60)) {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
                latest.insert(m.key().unwrap_or_default().to_vec(), v["num_of_rows"].as_u64().unwrap_or(0));
            }
            let windowed: u64 = latest.values().sum();
            if windowed != expected.alerts {
                say(format!("alert-counts adds up to {windowed}, expected {}", expected.alerts));
                exact = false;
            }
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
        let topic_mean_bytes = if relay { expected.relay_bytes } else { expected.bytes };
        Ok(PhaseReport {
            system: String::new(),
            rate,
            events,
            expected_final: expected.alerts,
            counted_final,
            topic_records,
            topic_mean_bytes,
            exact,
            seconds,
            events_per_s: events as f64 / seconds,
            latency: Latency::of(&mut latencies),
            latency_to_last_produce: Latency::of(&mut to_last_produce),
            processes,
        })
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores ({model}), load {}", loadavg())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(cli: Cli) -> anyhow::Result<Report> {
    ensure!(cli.events > 0, "--events must be at least 1");
    ensure!(cli.rates.iter().all(|r| r.is_finite() && *r >= 0.0), "--rate takes events/s >= 0 (0 = full speed)");
    let bin_dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?.parent().context("binary directory")?.to_path_buf(),
    };
    let mut needed = vec!["generator", "enricher", "detector", "counter"];
    if !cli.skip_relay {
        needed.push("relay");
    }
    for bin in needed {
        ensure!(
            bin_dir.join(bin).exists(),
            "{} is missing: build the binaries first (scripts/bench.sh does)",
            bin_dir.join(bin).display()
        );
    }
    let log_dir = match &cli.log_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(testkit::unique("bench-e2e")),
    };
    std::fs::create_dir_all(&log_dir)?;
    say(format!("binaries from {}; logs in {}", bin_dir.display(), log_dir.display()));
    let rt = tokio::runtime::Runtime::new()?;
    let mut ctx = Ctx {
        cli,
        bin_dir,
        run_dir: log_dir.clone(),
        log_dir,
        ticks: bench::clock_ticks(),
        rt,
        phases: 0,
        expected: HashMap::new(),
    };
    let mut report = Report { machine: machine(), partitions: ctx.cli.partitions, phases: Vec::new() };
    for rate in ctx.cli.rates.clone() {
        let events = if rate == 0.0 { ctx.cli.events } else { ctx.cli.paced_events.min(ctx.cli.events) };
        report.phases.push(ctx.phase(false, rate, events)?);
        if !ctx.cli.skip_relay {
            report.phases.push(ctx.phase(true, rate, events)?);
        }
    }
    report.machine = format!("{}; load after {}", report.machine, loadavg());
    if let Some(path) = &ctx.cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(report)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(report) => {
            print!("{}", report.render());
            if report.phases.iter().all(|p| p.exact) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("bench-e2e: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
