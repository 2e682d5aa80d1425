//! `faults`: the fault-injection suite. Streams events through generator → enricher → detector
//! → counter on a broker of its own while it kills services with SIGKILL (restarting each),
//! pauses the broker with SIGSTOP, restarts it (at-least-once mode: Nisshi keeps its data in
//! S3), and cuts the enricher off S3 at its start and during a dims refresh (through a TCP
//! proxy it controls). Then it reads every topic back and checks: no event missing downstream
//! of any service, duplicates counted, enriched values right, and the counter's final windows
//! equal to windows computed here from the alerts it read. One summary line per mode.
//!
//! Everything runs on 127.0.0.1: its own broker on a free port (Nisshi with storage in a fresh
//! bucket of the local S3, or the transactional Tansu in memory), the shared local S3 for dims
//! and checkpoints.

#![allow(clippy::unwrap_used)] // a verification tool: a broken expectation stops it loudly

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use e2e::check::{COLORS, LIMIT, expected_windows, regenerate};
use e2e::{Pipeline, Service, bin};
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{EnrichedEvent, JsonEvent, event_time};
use pipeline_core::window::{PartialMerge, WindowStats};
use pipeline_kafka::args::KafkaArgs;
use pipeline_testkit::{self as testkit, OwnBroker};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use uuid::Uuid;

/// Runs the stream under injected faults and verifies what came out.
#[derive(Debug, Parser)]
struct Cli {
    /// Events in the stream.
    #[arg(long, env = "FAULTS_EVENTS", default_value_t = 100_000)]
    events: usize,
    /// Offered rate, events/s (the stream lasts events / rate seconds; the faults fall in it).
    #[arg(long, env = "FAULTS_RATE", default_value_t = 1_000)]
    rate: u32,
    /// SIGKILLs of a random service (each restarted).
    #[arg(long, env = "FAULTS_KILLS", default_value_t = 20)]
    kills: usize,
    /// Of those, at least this many hit the counter.
    #[arg(long, env = "FAULTS_COUNTER_KILLS", default_value_t = 5)]
    counter_kills: usize,
    /// How long the broker is paused (SIGSTOP).
    #[arg(long, env = "FAULTS_PAUSE", default_value = "10s", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// How long S3 is cut off during the enricher's dims refresh.
    #[arg(long, env = "FAULTS_S3_OUTAGE", default_value = "6s", value_parser = humantime::parse_duration)]
    s3_outage: Duration,
    /// Which delivery guarantee(s) to run.
    #[arg(long, env = "FAULTS_MODE", value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// Seed of the events and of the fault schedule.
    #[arg(long, env = "FAULTS_SEED", default_value_t = 1)]
    seed: u64,
    /// Partitions per topic.
    #[arg(long, env = "FAULTS_PARTITIONS", default_value_t = 3)]
    partitions: i32,
}

/// Which guarantee the services run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `--guarantee at-least-once`, on an own Nisshi (pause and restart).
    AtLeastOnce,
    /// `--guarantee exactly-once`, on an own Tansu (pause only: it keeps memory only).
    ExactlyOnce,
    /// One run of each.
    Both,
}

/// What one run counted.
#[derive(Debug, Default)]
struct Summary {
    kills: BTreeMap<&'static str, usize>,
    /// Services that exited by themselves (and were restarted).
    exits: usize,
    broker_pauses: usize,
    broker_restarts: usize,
    s3_outages: usize,
    lost_enriched: usize,
    lost_alerts: usize,
    dup_enriched: usize,
    dup_alerts: usize,
    wrong: usize,
    window_mismatches: usize,
    windows: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let modes = match cli.mode {
        Mode::Both => vec![Mode::AtLeastOnce, Mode::ExactlyOnce],
        one => vec![one],
    };
    let mut ok = true;
    for mode in modes {
        let started = Instant::now();
        let s = run(&cli, mode).await;
        let kills: usize = s.kills.values().sum();
        let by: Vec<String> = s.kills.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        println!(
            "faults mode={} events={} kills={kills} ({}) exits={} broker_pauses={} broker_restarts={} s3_outages={} \
             lost={} duplicated={} (enriched {}, alerts {}) wrong={} windows={} window_mismatches={} elapsed={}s",
            mode.to_possible_value().unwrap().get_name(),
            cli.events,
            by.join(" "),
            s.exits,
            s.broker_pauses,
            s.broker_restarts,
            s.s3_outages,
            s.lost_enriched + s.lost_alerts,
            s.dup_enriched + s.dup_alerts,
            s.dup_enriched,
            s.dup_alerts,
            s.wrong,
            s.windows,
            s.window_mismatches,
            started.elapsed().as_secs()
        );
        ok &= s.lost_enriched + s.lost_alerts + s.wrong + s.window_mismatches == 0;
    }
    if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

/// A TCP proxy to the local S3 that can be cut off: a stand-in for an S3 outage that touches
/// no other user of the shared S3.
struct S3Proxy {
    port: u16,
    up: Arc<AtomicBool>,
}

impl S3Proxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        tokio::spawn(async move {
            let mut open: Vec<tokio::task::JoinHandle<()>> = Vec::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                open.retain(|h| !h.is_finished());
                if !flag.load(Ordering::SeqCst) {
                    drop(client); // refused: connection closed at once
                    for h in open.drain(..) {
                        h.abort();
                    }
                    continue;
                }
                let (target, flag) = (target.clone(), flag.clone());
                open.push(tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                    // Forward until either side closes or the proxy is cut.
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let cut = async {
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = cut => {} }
                }));
            }
        });
        Self { port, up }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// Which service a kill hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Enricher,
    Detector,
    Counter,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Enricher => "enricher",
            Role::Detector => "detector",
            Role::Counter => "counter",
        }
    }
}

/// The running services and how to start each again.
struct Services<'a> {
    p: &'a Pipeline,
    mode: Mode,
    proxy: &'a S3Proxy,
    running: HashMap<Role, Service>,
}

impl Services<'_> {
    fn start(&mut self, role: Role) {
        let eos = self.mode == Mode::ExactlyOnce;
        let guarantee = if eos { "exactly-once" } else { "at-least-once" };
        // One transactional id per role: a restarted instance fences its killed predecessor.
        let txn_id = format!("{}-{}", self.p.id, role.name());
        let mut args = vec!["--guarantee", guarantee, "--transactional-id", &txn_id];
        let endpoint = self.proxy.endpoint();
        let service = match role {
            Role::Enricher => {
                args.extend(["--s3-endpoint", &endpoint, "--dims-poll", "2s"]);
                self.p.enricher(&args)
            }
            Role::Detector => self.p.detector(&args),
            Role::Counter => {
                args.extend(["--checkpoint-interval", "2s"]);
                self.p.counter(&args)
            }
        };
        self.running.insert(role, service);
    }

    /// Restarts the services that exited by themselves (as a supervisor such as compose's
    /// `restart: unless-stopped` would); returns how many.
    fn supervise(&mut self) -> usize {
        let exited: Vec<Role> =
            self.running.iter_mut().filter_map(|(role, s)| (!s.is_running()).then_some(*role)).collect();
        for role in &exited {
            let (name, log) = (role.name(), std::fs::read_to_string(self.p.log_path(role.name())).unwrap_or_default());
            eprintln!("faults: {name} exited by itself ({}); restarting it", log.lines().last().unwrap_or("no log"));
            self.running.remove(role);
            self.start(*role);
        }
        exited.len()
    }

    /// Sleeps `d`, supervising meanwhile.
    async fn sleep(&mut self, d: Duration, exits: &mut usize) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250).min(until - Instant::now())).await;
            *exits += self.supervise();
        }
    }

    fn kill(&mut self, role: Role) {
        if let Some(s) = self.running.remove(&role) {
            s.kill();
        }
    }
}

/// The broker of one run.
enum Broker {
    Nisshi { broker: OwnBroker, storage: String, dir: std::path::PathBuf },
    Tansu(OwnBroker),
}

impl Broker {
    fn own(&self) -> &OwnBroker {
        match self {
            Broker::Nisshi { broker, .. } | Broker::Tansu(broker) => broker,
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.own().pid().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }
}

async fn run(cli: &Cli, mode: Mode) -> Summary {
    let mut summary = Summary::default();
    let mut rng = StdRng::seed_from_u64(cli.seed);
    let port = testkit::free_port();
    let mut bucket_store = None;
    let mut broker = match mode {
        Mode::ExactlyOnce => Broker::Tansu(OwnBroker::tansu(port).await),
        _ => {
            // Nisshi takes a bucket of its own (deleted at the end).
            let bucket = testkit::unique("faultbroker");
            let store = pipeline_s3::store::ObjectStore::connect(&testkit::s3(&bucket)).await;
            store.ensure_bucket().await.unwrap();
            bucket_store = Some(store);
            let (storage, dir) = (format!("s3://{bucket}/"), std::env::temp_dir());
            Broker::Nisshi { broker: OwnBroker::start(port, &storage, &dir, &[]).await, storage, dir }
        }
    };
    let kafka = broker.own().kafka(&[]);
    pipeline_kafka::client::check_cluster(&kafka, None).await.unwrap();
    let p = Pipeline::on(kafka.clone(), cli.partitions, cli.seed).await;
    let proxy = S3Proxy::start(p.s3.s3_endpoint.clone().unwrap().trim_start_matches("http://").to_owned()).await;
    let mut services = Services { p: &p, mode, proxy: &proxy, running: HashMap::new() };

    // S3 down while the enricher starts: it must wait, then proceed.
    proxy.set(false);
    services.start(Role::Enricher);
    p.await_log("enricher", "dimension tables not available yet", 1);
    proxy.set(true);
    p.await_log("enricher", "dimension tables loaded", 1);
    summary.s3_outages += 1;
    services.start(Role::Detector);
    services.start(Role::Counter);

    let step_ms = 250;
    let generator = Command::new(bin("generator"))
        .args(["run", "--s3-bucket", &p.s3.s3_bucket, "--dims-prefix", &p.s3.dims_prefix])
        .args(["--topic", &p.sensors, "--bootstrap-servers", &kafka.bootstrap_servers])
        .args(["--rate", &cli.rate.to_string(), "--count", &cli.events.to_string(), "--seed", &cli.seed.to_string()])
        .args(["--start-time", "2026-04-01T08:00:00Z", "--time-step", &format!("{step_ms}ms")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The fault schedule over the stream's expected length.
    let span = Duration::from_secs_f64(cli.events as f64 / f64::from(cli.rate.max(1))).max(Duration::from_secs(5));
    let mut plan: Vec<(Duration, Fault)> = (0..cli.kills)
        .map(|i| {
            let role = if i < cli.counter_kills {
                Role::Counter
            } else {
                [Role::Enricher, Role::Detector, Role::Counter][rng.random_range(0..3)]
            };
            (span.mul_f64(rng.random_range(0.05..0.95)), Fault::Kill(role))
        })
        .collect();
    plan.push((span.mul_f64(0.3), Fault::PauseBroker));
    plan.push((span.mul_f64(0.5), Fault::S3Outage));
    if mode == Mode::AtLeastOnce {
        plan.push((span.mul_f64(0.7), Fault::RestartBroker));
    }
    plan.sort_by_key(|(at, _)| *at);
    let t0 = Instant::now();
    for (at, fault) in plan {
        services.sleep(at.saturating_sub(t0.elapsed()), &mut summary.exits).await;
        match fault {
            Fault::Kill(role) => {
                services.kill(role);
                services.sleep(Duration::from_millis(rng.random_range(0..800)), &mut summary.exits).await;
                services.start(role);
                *summary.kills.entry(role.name()).or_default() += 1;
            }
            Fault::PauseBroker => {
                broker.signal("-STOP");
                services.sleep(cli.pause, &mut summary.exits).await;
                broker.signal("-CONT");
                summary.broker_pauses += 1;
            }
            Fault::RestartBroker => {
                if let Broker::Nisshi { broker: own, storage, dir } = broker {
                    own.kill();
                    broker = Broker::Nisshi { broker: OwnBroker::start(port, &storage, &dir, &[]).await, storage, dir };
                    summary.broker_restarts += 1;
                }
            }
            Fault::S3Outage => {
                // During a dims refresh (every 2 s): the enricher keeps the tables it has (or, if
                // a kill restarted it meanwhile, waits for them). The outage lasts until it has
                // noticed: a refresh that started just before may take the S3 client's retries.
                let noticed = || {
                    count_lines(&p, "enricher", "keeping the ones in use")
                        + count_lines(&p, "enricher", "dimension tables not available yet")
                };
                let before = noticed();
                proxy.set(false);
                services.sleep(cli.s3_outage, &mut summary.exits).await;
                let deadline = Instant::now() + Duration::from_secs(60);
                while noticed() == before && Instant::now() < deadline {
                    services.sleep(Duration::from_millis(500), &mut summary.exits).await;
                }
                proxy.set(true);
                assert!(noticed() > before, "the enricher never noticed the S3 outage during its refresh");
                summary.s3_outages += 1;
            }
        }
    }
    let mut generator = generator;
    while generator.try_wait().unwrap().is_none() {
        services.sleep(Duration::from_millis(500), &mut summary.exits).await;
    }
    let out = generator.wait_with_output().unwrap();
    assert!(out.status.success(), "generator: {}", String::from_utf8_lossy(&out.stderr));

    verify(&p, &kafka, mode, cli, step_ms, &mut services, &mut summary).await;
    for (_, s) in services.running.drain() {
        s.kill();
    }
    drop(broker);
    if let Some(store) = bucket_store {
        let _ = store.delete_bucket().await;
    }
    summary
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(Role),
    PauseBroker,
    RestartBroker,
    S3Outage,
}

fn count_lines(p: &Pipeline, service: &str, needle: &str) -> usize {
    std::fs::read_to_string(p.log_path(service)).unwrap_or_default().lines().filter(|l| l.contains(needle)).count()
}

/// Every record of `topic` (read committed in exactly-once mode), reading until nothing new
/// arrives for a while.
async fn read(kafka: &KafkaArgs, topic: &str, mode: Mode) -> Vec<OwnedMessage> {
    let (k, t) = (kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let quiet = Duration::from_secs(3);
        if mode == Mode::ExactlyOnce {
            testkit::read_committed_quiet(&k, &t, quiet, Duration::from_secs(600))
        } else {
            testkit::read_uncommitted_quiet(&k, &t, quiet, Duration::from_secs(600))
        }
    })
    .await
    .unwrap()
}

/// Waits for the pipeline to drain, then compares every topic with what the events imply.
async fn verify(
    p: &Pipeline,
    kafka: &KafkaArgs,
    mode: Mode,
    cli: &Cli,
    step_ms: i64,
    services: &mut Services<'_>,
    s: &mut Summary,
) {
    let join = p.join();
    let rules = AlertRules::default();
    let events = regenerate(p, cli.seed, cli.events, step_ms).await;
    let expected: HashMap<Uuid, EnrichedEvent<'static>> =
        events.iter().map(|e| (e.event_id, join.enrich(e.clone()).0.into_owned())).collect();
    let want_alerts: HashSet<Uuid> =
        expected.values().filter(|e| !rules.check_event(e).is_empty()).map(|e| e.event_id).collect();

    // Drained: every expected id downstream, or no progress for a minute.
    let deadline = Instant::now() + Duration::from_secs(900);
    let (mut enriched, mut alerts);
    let mut last = (0, 0, Instant::now());
    loop {
        enriched = read(kafka, &p.enriched, mode).await;
        alerts = read(kafka, &p.alerts, mode).await;
        let ids = |records: &[OwnedMessage]| -> HashSet<Uuid> {
            records.iter().map(|m| EnrichedEvent::decode(m.payload().unwrap(), LIMIT).unwrap().event_id).collect()
        };
        let (e, a) = (ids(&enriched), ids(&alerts));
        if e.len() == expected.len() && a.len() == want_alerts.len() {
            break;
        }
        if (e.len(), a.len()) != (last.0, last.1) {
            last = (e.len(), a.len(), Instant::now());
        }
        if last.2.elapsed() > Duration::from_secs(60) || Instant::now() > deadline {
            break;
        }
        services.sleep(Duration::from_secs(2), &mut s.exits).await;
    }

    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    for m in &enriched {
        let e = EnrichedEvent::decode(m.payload().unwrap(), LIMIT).unwrap().into_owned();
        *seen.entry(e.event_id).or_default() += 1;
        if expected.get(&e.event_id) != Some(&e) {
            s.wrong += 1;
        }
    }
    s.lost_enriched = expected.keys().filter(|id| !seen.contains_key(id)).count();
    s.dup_enriched = enriched.len() - seen.len();
    let mut seen_alerts: HashMap<Uuid, usize> = HashMap::new();
    let mut points = Vec::new();
    for m in &alerts {
        let a = EnrichedEvent::decode(m.payload().unwrap(), LIMIT).unwrap().into_owned();
        *seen_alerts.entry(a.event_id).or_default() += 1;
        if !want_alerts.contains(&a.event_id) {
            s.wrong += 1;
        }
        points.push((m.partition(), a));
    }
    s.lost_alerts = want_alerts.iter().filter(|id| !seen_alerts.contains_key(id)).count();
    s.dup_alerts = alerts.len() - seen_alerts.len();

    // The counter's windows against windows computed here, directly, from the very alerts it
    // read (duplicates included: the counter counts its input; a duplicate alert is the
    // detector's, already counted above).
    let colors: Vec<String> = COLORS.map(str::to_owned).to_vec();
    let want = expected_windows(&points.iter().map(|(_, a)| a).collect::<Vec<_>>());
    s.windows = want.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut merge = PartialMerge::default();
        for m in read(kafka, &p.counts, mode).await {
            let (stats, partial) = WindowStats::from_row(m.payload().unwrap(), &colors).unwrap();
            let (partition, offset) = partial.unwrap();
            merge.insert(partition, offset, stats);
        }
        let got: BTreeMap<String, serde_json::Value> = merge
            .merged(|_| false)
            .into_iter()
            .map(|w| (event_time::format(&w.start), serde_json::from_slice(&w.to_json(&colors)).unwrap()))
            .collect();
        let keys: HashSet<&String> = want.keys().chain(got.keys()).collect();
        s.window_mismatches = keys.into_iter().filter(|k| want.get(*k) != got.get(*k)).count();
        if s.window_mismatches == 0 || Instant::now() > deadline {
            break;
        }
        services.sleep(Duration::from_secs(2), &mut s.exits).await;
    }
}
