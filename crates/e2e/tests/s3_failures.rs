//! S3 failing under the running services, on the real stack, each failure classified once
//! (`pipeline_s3::store`):
//! - Stalled (a TCP proxy in front of S3 stops moving bytes) well past `max.poll.interval.ms`
//!   under the counter, while it counts and again while it restores: the consumer keeps polling
//!   (the checkpoint write and the restore run beside it), so the stall costs no revocation;
//!   `/readyz` says the store is failing meanwhile, every window is exact after, and `ops audit`
//!   is clean. (Before: the loop awaited S3 inline, librdkafka left the group.)
//! - Refused for good — credentials that do not open the bucket at start, the bucket deleted
//!   while running: the enricher and the counter each stop with one line naming the bucket and
//!   the fix, exit non-zero, and never print the secret. (Before: the enricher waited forever at
//!   start and ran on degraded tables after; the counter only warned.)

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::check::{assert_exact, http_get, regenerate, stop_all};
use e2e::{Pipeline, Service, bin};
use pipeline_s3::dims::write_tables;
use pipeline_s3::store::ObjectStore;
use pipeline_testkit::{self as testkit, StallProxy};

/// The counter's poll interval in these tests: librdkafka leaves the group when the loop does
/// not poll for this long.
const POLL_INTERVAL: &str = "max.poll.interval.ms=10000";

/// How long S3 stays stalled: well past [`POLL_INTERVAL`].
const STALL: Duration = Duration::from_secs(25);

fn log(p: &Pipeline, name: &str) -> String {
    std::fs::read_to_string(p.log_path(name)).unwrap_or_default()
}

/// What a consumer thrown out of its group logs: librdkafka's poll-interval error, then the
/// revocation.
fn assert_stayed_in_group(p: &Pipeline, name: &str) {
    let log = log(p, name);
    let lower = log.to_lowercase();
    assert!(!lower.contains("poll interval") && !lower.contains("maxpollexceeded"), "{name} left its group:\n{log}");
    assert!(!log.contains("partitions revoked"), "{name} lost its partitions:\n{log}");
}

/// `/readyz` of a service listening on `addr`, until `want` holds (at most a minute).
fn await_ready(addr: &str, want: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(&format!("http://{addr}/readyz"));
        if want(status, &body) {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "/readyz never became what was waited for: {status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stalled_past_the_poll_interval_under_the_counter_costs_no_revocation_and_every_window_is_exact() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 2221).await;
    let proxy = StallProxy::s3().await;
    let (endpoint, addr) = (proxy.endpoint(), format!("127.0.0.1:{}", testkit::free_port()));
    let flags = |addr: &str| -> Vec<String> {
        let mut f = vec!["--s3-endpoint", endpoint.as_str(), "--checkpoint-interval", "1s", "--s3-timeout", "2s"];
        f.extend(["-X", POLL_INTERVAL, "--metrics-addr", addr]);
        f.into_iter().map(str::to_owned).collect()
    };
    let counting = flags(&addr);
    let counting: Vec<&str> = counting.iter().map(String::as_str).collect();
    let mut services = vec![p.enricher(&[]), p.detector(&[])];
    let mut counter = p.counter(&counting);
    await_ready(&addr, |status, _| status == 200);

    // Counting with S3 stalled: every checkpoint write stalls and is given up after
    // --s3-timeout; the alerts are still counted.
    proxy.stall();
    p.generate(&["--seed", "22", "--count", "3000", "--start-time", "2026-04-01T08:00:00Z", "--time-step", "600ms"]);
    let stalled = Instant::now();
    let (_, body) = await_ready(&addr, |status, body| status == 503 && body.contains("checkpoint_store"));
    assert!(body.contains("got no answer within 2s"), "the reason is the stall: {body}");
    std::thread::sleep(STALL.saturating_sub(stalled.elapsed()));
    assert!(counter.is_running(), "the counter is still up:\n{}", log(&p, "counter"));
    proxy.resume();
    await_ready(&addr, |status, _| status == 200);
    let events = regenerate(&p, 22, 3000, 600).await;
    let (alerts, windows) = assert_exact(&p, &events).await;
    p.await_log("counter", "checkpointed", 1);
    // librdkafka notices a missed poll interval at the next poll: after the stall.
    assert_stayed_in_group(&p, "counter");
    counter.stop();

    // Restoring with S3 stalled: the new counter's restore waits, its consumer keeps polling.
    proxy.stall();
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let restoring = flags(&addr);
    let restoring: Vec<&str> = restoring.iter().map(String::as_str).collect();
    let mut counter = p.service("counter", "counter-restoring", &restoring);
    p.await_log("counter-restoring", "checkpoint store not answering", 1);
    std::thread::sleep(STALL);
    assert!(counter.is_running(), "the restoring counter is still up:\n{}", log(&p, "counter-restoring"));
    proxy.resume();
    p.await_log("counter-restoring", "restored from checkpoint", 3);
    await_ready(&addr, |status, _| status == 200);
    assert_stayed_in_group(&p, "counter-restoring");
    services.push(counter);
    stop_all(services);

    let out = Command::new(bin("ops"))
        .args(["audit", "--s3-bucket", &p.s3.s3_bucket, "--dims-prefix", &p.s3.dims_prefix])
        .args(["--input-topic", &p.sensors, "--enriched-topic", &p.enriched, "--alerts-topic", &p.alerts])
        .args(["--counts-topic", &p.counts])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "audit failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().last().unwrap_or_default().starts_with("audit: clean ("), "{stdout}");
    eprintln!("s3-stall: {alerts} alerts in {windows} windows exact; S3 stalled {STALL:?} twice, no revocation");
}

/// Waits for `service` to exit by itself; asserts a failure status and exactly one error line
/// holding `needle`, and returns the log.
fn assert_stops_with_one_line(p: &Pipeline, mut service: Service, log_name: &str, needle: &str) -> String {
    let name = service.name;
    let status = service.exits_within(Duration::from_secs(90));
    let log = log(p, log_name);
    let status = status.unwrap_or_else(|| panic!("{name} still running 90 s after S3 refused it:\n{log}"));
    assert!(!status.success(), "{name} exited {status} after S3 refused it:\n{log}");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "{name}: one line naming the bucket and the fix:\n{log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_s3_refuses_stop_the_enricher_and_the_counter_at_start_with_one_line_and_no_secret() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(1, 2222).await;
    let secret = "not-the-secret-2222/with+symbols";
    let env = [("AWS_SECRET_ACCESS_KEY", secret)];
    for name in ["enricher", "counter"] {
        let log_name = format!("{name}-denied");
        let service = p.service_env(name, &log_name, &[], &env);
        let needle = format!("refused access to bucket `{}`", p.s3.s3_bucket);
        let log = assert_stops_with_one_line(&p, service, &log_name, &needle);
        assert!(log.contains("check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"), "the fix is named:\n{log}");
        assert!(!log.contains(secret) && !log.contains("not-the-secret"), "{name} printed the secret:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_deleted_under_the_running_enricher_and_counter_stops_each_with_one_line() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let mut p = Pipeline::new(1, 2223).await;
    // A bucket of their own (the shared test bucket must stay).
    let bucket = testkit::unique("gone");
    let store = ObjectStore::connect_bucket(&p.s3, &bucket).await;
    store.ensure_bucket().await.unwrap();
    write_tables(&store, &p.s3.dims_prefix, &p.dims).await.unwrap();
    p.s3.s3_bucket.clone_from(&bucket);
    let enricher = p.enricher(&["--dims-poll", "1s"]);
    let detector = p.detector(&[]);
    let counter = p.counter(&["--checkpoint-interval", "1s"]);
    p.generate(&["--seed", "23", "--count", "400"]);
    p.await_log("counter", "checkpointed", 1);
    p.await_log("enricher", "dimension tables loaded", 1);
    store.delete_bucket().await.unwrap();
    // New alerts make the counter's state dirty: its next checkpoint meets the missing bucket.
    // (The generator reads the cars from the shared bucket's copy of the tables.)
    p.s3.s3_bucket = testkit::TEST_BUCKET.to_owned();
    p.generate(&["--seed", "24", "--count", "400"]);
    let needle = format!("bucket `{bucket}` does not exist");
    assert_stops_with_one_line(&p, enricher, "enricher", &needle);
    assert_stops_with_one_line(&p, counter, "counter", &needle);
    stop_all(vec![detector]);
}
