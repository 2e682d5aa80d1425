//! A stop never hangs: each consuming service, run as its binary, exits within
//! `--drain-timeout` + 2 s of SIGTERM in every state a stop can meet — at full speed with the
//! broker up; with the broker paused (SIGSTOP); with the whole cluster gone; with its output
//! topics deleted (every produce refused); during a rebalance; with S3 stalled during the
//! enricher's first dims load and the counter's restore and checkpoint; and in exactly-once
//! mode with a transaction open.
//!
//! Each stop prints one `stop-bound:` line (state, service, seconds, exit status): the table
//! in the note is made of them (`cargo nextest run -E 'binary(stop_bound)' --no-capture`).
//! The bound and a clean exit (status 0, not the watchdog's) are the services' contract
//! (`pipeline_kafka::shutdown`), so they are asserted; every other figure is only printed.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::time::{Duration, Instant};

use e2e::check::{http_get, regenerate};
use e2e::{Pipeline, Service};
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::JsonEvent;
use pipeline_testkit::{self as testkit, OwnBroker, StallProxy};

/// Every service's `--drain-timeout` here.
const DRAIN: Duration = Duration::from_secs(3);
/// The contract: exit within the drain deadline + 2 s of SIGTERM.
const BOUND: Duration = Duration::from_secs(DRAIN.as_secs() + 2);
/// How long a test waits for a stop before it calls it a hang (and SIGKILLs).
const HANG: Duration = Duration::from_secs(60);

/// A service under test: its process and its metrics port (to see it make progress).
struct Running {
    /// The process.
    service: Service,
    /// Its `--metrics-addr` port.
    port: u16,
}

/// Starts `name` on `p` with a 3 s drain deadline, metrics on a port of its own, and `extra`.
fn start(p: &Pipeline, name: &'static str, log: &str, extra: &[&str]) -> Running {
    let port = testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let drain = format!("{}s", DRAIN.as_secs());
    let mut args = vec!["--drain-timeout", &drain, "--metrics-addr", &addr];
    args.extend(extra);
    Running { service: p.service(name, log, &args), port }
}

/// Inputs the service has consumed so far (0 before its metrics answer).
fn consumed(r: &Running) -> u64 {
    let (code, body) = http_get(&format!("http://127.0.0.1:{}/metrics", r.port));
    if code != 200 {
        return 0;
    }
    body.lines()
        .filter(|l| l.starts_with("pipeline_records_consumed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until every one of `running` has consumed at least `n` inputs.
fn await_progress(running: &mut [&mut Running], n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for r in running.iter_mut() {
        while consumed(r) < n {
            assert!(r.service.is_running(), "{} exited before consuming {n} inputs", r.service.name);
            assert!(Instant::now() < deadline, "{} consumed {} of {n} inputs in 120 s", r.service.name, consumed(r));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// SIGTERMs every service at once, prints a line each and asserts each exited within
/// [`BOUND`].
fn stop_all(state: &str, running: Vec<Running>) {
    let stops: Vec<_> = running
        .into_iter()
        .map(|r| {
            let name = r.service.name;
            (name, std::thread::spawn(move || r.service.stop_timed(HANG)))
        })
        .collect();
    let mut late = Vec::new();
    for (name, stop) in stops {
        let (took, status) = stop.join().unwrap();
        let seconds = took.map_or("hung".to_owned(), |t| format!("{:.2}", t.as_secs_f64()));
        eprintln!("stop-bound: state={state} service={name} seconds={seconds} status={status}");
        // Exit 0: the stop finished its own work; the watchdog's exit (1) is the safety net.
        if took.is_none_or(|t| t > BOUND) || !status.success() {
            late.push(format!("{name}: {seconds} s ({status})"));
        }
    }
    assert!(late.is_empty(), "{state}: not stopped cleanly within {BOUND:?} of SIGTERM: {late:?}");
}

/// A pipeline on a broker of the test's own (its data in a fresh bucket of the local S3), so
/// the broker can be paused or killed without disturbing other tests.
async fn own_broker() -> (OwnBroker, Pipeline) {
    let bucket = testkit::unique("stopbroker");
    let store = pipeline_s3::store::ObjectStore::connect(&testkit::s3(&bucket)).await;
    store.ensure_bucket().await.expect("create the broker's bucket");
    let broker = OwnBroker::start(testkit::free_port(), &format!("s3://{bucket}/"), &std::env::temp_dir(), &[]).await;
    let kafka = broker.kafka(&[]);
    pipeline_kafka::client::check_cluster(&kafka, None).await.expect("own broker answers");
    let p = Pipeline::on(kafka, 3, 1707).await;
    (broker, p)
}

/// `n` generated events in the sensors topic, the same events enriched (by the test's own
/// join) in the enriched topic, and the rule breakers among them in the alerts topic, so every
/// service has a backlog of its own from the start (the counter's does not depend on how far
/// a detector got before its stop).
async fn backlog(p: &Pipeline, n: usize) {
    let count = n.to_string();
    p.generate(&["--seed", "17", "--count", &count, "--start-time", "2026-04-01T08:00:00Z", "--time-step", "1s"]);
    let join = p.join();
    let rules = AlertRules::default();
    let (mut enriched, mut alerts) = (Vec::with_capacity(n), Vec::new());
    for e in regenerate(p, 17, n, 1000).await {
        let key = e.car_id.to_string().into_bytes();
        let event = join.enrich(e).0;
        let record = (Some(key), event.encode());
        if !rules.check_event(&event).is_empty() {
            alerts.push(record.clone());
        }
        enriched.push(record);
    }
    e2e::produce_raw_to(&p.kafka, &p.enriched, &enriched).await;
    e2e::produce_raw_to(&p.kafka, &p.alerts, &alerts).await;
}

/// The three services working through their backlogs on `p`, each past its first inputs.
fn all_three(p: &Pipeline, extra: &[&str]) -> Vec<Running> {
    let mut running: Vec<Running> =
        ["enricher", "detector", "counter"].into_iter().map(|name| start(p, name, name, extra)).collect();
    await_progress(&mut running.iter_mut().collect::<Vec<_>>(), 1);
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_stops_in_time_at_full_speed_with_the_broker_up() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 1701).await;
    backlog(&p, 150_000).await;
    // One at a time, each mid-backlog (tens of thousands of inputs each) after 2 000 inputs:
    // all three at once would share two cores.
    for name in ["enricher", "detector", "counter"] {
        let mut r = start(&p, name, name, &[]);
        await_progress(&mut [&mut r], 2_000);
        stop_all("broker up, full speed", vec![r]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_stops_in_time_with_the_broker_paused() {
    pipeline_testkit::needs_stack!(Kafka, S3, BrokerBuilds);
    let (broker, p) = own_broker().await;
    backlog(&p, 60_000).await;
    let running = all_three(&p, &[]);
    let pid = broker.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_secs(1));
    stop_all("broker paused (SIGSTOP)", running);
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_stops_in_time_with_the_cluster_gone() {
    pipeline_testkit::needs_stack!(Kafka, S3, BrokerBuilds);
    let (broker, p) = own_broker().await;
    backlog(&p, 60_000).await;
    let running = all_three(&p, &[]);
    broker.kill();
    std::thread::sleep(Duration::from_secs(1));
    stop_all("cluster gone (broker SIGKILLed)", running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_stops_in_time_with_its_output_topics_deleted() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 1703).await;
    backlog(&p, 60_000).await;
    let running = all_three(&p, &[]);
    // Every produce is refused from now on (the broker creates no topic by itself).
    let outputs = [p.enriched.as_str(), p.alerts.as_str(), p.counts.as_str(), p.late.as_str()];
    pipeline_kafka::client::delete_topics(&p.kafka, &outputs).await.unwrap();
    std::thread::sleep(Duration::from_secs(2));
    stop_all("output topics deleted (every produce refused)", running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_stops_in_time_during_a_rebalance() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 1704).await;
    backlog(&p, 150_000).await;
    let mut first = all_three(&p, &[]);
    // A second instance of each joins; the first one is told to stop as soon as it has been
    // asked to give partitions up, while the group is still rebalancing.
    let second: Vec<Running> = ["enricher", "detector", "counter"]
        .into_iter()
        .map(|name| start(&p, name, &format!("{name}-second"), &[]))
        .collect();
    for r in first.drain(..) {
        let log = p.log_path(r.service.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("partitions revoked") {
            assert!(Instant::now() < deadline, "{}: no revocation 60 s after a second instance joined", r.service.name);
            std::thread::sleep(Duration::from_millis(10));
        }
        stop_all("during a rebalance", vec![r]);
    }
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enricher_and_the_counter_stop_in_time_while_s3_is_stalled() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 1705).await;
    backlog(&p, 60_000).await;
    let proxy = StallProxy::s3().await;
    let endpoint = proxy.endpoint();
    let s3 = ["--s3-endpoint", endpoint.as_str()];
    // The counter checkpoints every second through the proxy; S3 stalls after its first one,
    // so the next one hangs.
    let checkpointing: Vec<&str> = s3.iter().copied().chain(["--checkpoint-interval", "1s"]).collect();
    let mut counter = start(&p, "counter", "counter", &checkpointing);
    await_progress(&mut [&mut counter], 1);
    p.await_log("counter", "checkpointed", 1);
    proxy.stall();
    std::thread::sleep(Duration::from_secs(2));
    stop_all("S3 stalled during a checkpoint", vec![counter]);

    // With S3 still stalled: the enricher's first dims load hangs, and a counter's restore.
    let enricher = start(&p, "enricher", "enricher-stalled", &s3);
    let counter = start(&p, "counter", "counter-restoring", &s3);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(consumed(&enricher), 0, "no dims can have loaded");
    stop_all("S3 stalled during the first dims load / the restore", vec![enricher, counter]);
    proxy.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exactly_once_services_stop_in_time_with_a_transaction_open() {
    pipeline_testkit::needs_stack!(Kafka, S3, BrokerBuilds);
    let broker = OwnBroker::tansu(testkit::free_port()).await;
    let p = Pipeline::on(broker.kafka(&[]), 3, 1706).await;
    backlog(&p, 20_000).await;
    // A transaction collects inputs for a minute: at the stop, one is open with inputs in it.
    let eos = ["--guarantee", "exactly-once", "--transaction-interval", "60s", "--max-in-flight", "1000000"];
    let mut running: Vec<Running> =
        ["enricher", "detector"].into_iter().map(|name| start(&p, name, name, &eos)).collect();
    await_progress(&mut running.iter_mut().collect::<Vec<_>>(), 1000);
    stop_all("exactly-once, a transaction open", running);
    drop(broker);
}
