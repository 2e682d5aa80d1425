//! The at-least-once runtime under failures that used to block or stop it, end to end with the
//! service binaries on the real stack, every event id accounted for:
//! - an oversized poison record whose dead letter exceeds the producer's `message.max.bytes`
//!   (the enricher used to exit with `MessageSizeTooLarge`): it is dead-lettered cut to fit, with
//!   its original size and SHA-256, and everything around it flows;
//! - a broker paused (SIGSTOP) longer than `message.timeout.ms` but shorter than the consumers'
//!   session timeout while enricher and detector work through a backlog: deliveries fail and are
//!   resent, every event and alert arrives, neither group rebalances, duplicates stay within the
//!   in-flight window;
//! - a counter catching up on a backlog still checkpoints and prints its table on time (its
//!   timers used to wait behind the consumer).

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::check::*;
use e2e::{Pipeline, Service, read_all, wait_for_count};
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{EnrichedEvent, JsonEvent, SensorEvent};
use pipeline_kafka::args::KafkaArgs;
use pipeline_kafka::runtime::dlq_headers;
use pipeline_testkit::{self as testkit, OwnBroker};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Lowercase hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").unwrap();
        s
    })
}

/// A record's headers as strings.
fn headers(m: &OwnedMessage) -> HashMap<String, String> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Lines of a service's log that contain `needle`.
fn log_lines(p: &Pipeline, service: &str, needle: &str) -> Vec<String> {
    let log = std::fs::read_to_string(p.log_path(service)).unwrap_or_default();
    log.lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
}

/// Prints a service's warnings and errors (at most `max` of them, and how many there were).
fn print_warnings(p: &Pipeline, service: &str, max: usize) {
    let lines: Vec<String> =
        [" WARN ", " ERROR "].iter().flat_map(|level| log_lines(p, service, level)).collect::<Vec<_>>();
    eprintln!("{service}: {} warning/error lines", lines.len());
    for l in lines.iter().take(max) {
        eprintln!("  {l}");
    }
}

// --- 1. An oversized poison record ----------------------------------------------------------------

#[tokio::test]
async fn an_oversized_poison_record_is_dead_lettered_cut_to_fit_and_the_enricher_keeps_going() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    const SIZE: usize = 1_010_000; // under --max-record-bytes (1 MiB), over message.max.bytes (1 000 000)
    let p = Pipeline::new(3, 2101).await;
    let mut services = vec![p.enricher(&[]), p.detector(&[]), p.counter(&[])];
    let good = regenerate(&p, 31, 2_000, 1_000).await;

    // Valid JSON, a valid sensor event but for its missing `speed`, padded to SIZE bytes with
    // a pattern that makes any prefix unique.
    let car = p.dims.cars[0].car_id;
    let head = format!(
        r#"{{"event_id":"{}","event_time":"2026-04-01T08:30:00Z","car_id":{car},"rpm":1500,"gear":2,"padding":""#,
        Uuid::new_v4()
    );
    let mut poison = head.into_bytes();
    let mut i = 0u64;
    while poison.len() < SIZE - 2 {
        poison.extend(format!("{i:08x}").bytes());
        i += 1;
    }
    poison.truncate(SIZE - 2);
    poison.extend(b"\"}");
    assert_eq!(poison.len(), SIZE);
    serde_json::from_slice::<serde_json::Value>(&poison).expect("the poison is valid JSON");
    let err = SensorEvent::decode(&poison, 1 << 20).unwrap_err().to_string();
    assert!(err.contains("speed"), "the poison is refused for its missing speed: {err}");

    // The poison in the middle of the good events.
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> = Vec::new();
    for (n, e) in good.iter().enumerate() {
        if n == good.len() / 2 {
            records.push((Some(b"poison".to_vec()), poison.clone()));
        }
        records.push((Some(e.car_id.to_string().into_bytes()), e.encode()));
    }
    let kafka = testkit::kafka().with_properties(&[("message.max.bytes", "2000000")]);
    e2e::produce_raw_to(&kafka, &p.sensors, &records).await;

    // Every good event enriched exactly (and the alerts and windows after it).
    let (alerts, windows) = assert_exact(&p, &good).await;
    eprintln!("{} good events, {alerts} alerts, {windows} windows: exact", good.len());

    // Exactly one dead letter: the poison's head, with the truncation headers.
    let dlq = &p.dlq[&p.sensors];
    wait_for_count(dlq, 1, Duration::from_secs(60)).await;
    let letters = read_all(dlq).await;
    assert_eq!(letters.len(), 1, "one dead letter");
    let letter = &letters[0];
    let h = headers(letter);
    eprintln!(
        "dead letter: {} bytes of {SIZE}, headers {:?}",
        letter.payload().map_or(0, <[u8]>::len),
        h.iter()
            .map(|(k, v)| (k.as_str(), if v.len() > 120 { &v[..120] } else { v.as_str() }))
            .collect::<BTreeMap<_, _>>()
    );
    assert_eq!(h.get(dlq_headers::TRUNCATED).map(String::as_str), Some("true"));
    assert_eq!(h.get(dlq_headers::ORIGINAL_SIZE), Some(&SIZE.to_string()));
    assert_eq!(h.get(dlq_headers::ORIGINAL_SHA256), Some(&sha256_hex(&poison)));
    assert!(h[dlq_headers::ERROR].contains("speed"), "dlq.error: {}", h[dlq_headers::ERROR]);
    assert_eq!(h[dlq_headers::SOURCE_TOPIC], p.sensors);
    assert_eq!(h[dlq_headers::SERVICE], "enricher");
    assert_eq!(letter.key(), Some(&b"poison"[..]));
    let value = letter.payload().unwrap();
    assert!(!value.is_empty() && value.len() < SIZE, "a cut value: {} bytes", value.len());
    assert!(poison.starts_with(value), "the dead letter's value is a prefix of the original");

    for s in &mut services {
        assert!(s.is_running(), "{} exited:\n{}", s.name, log_lines(&p, s.name, "").join("\n"));
    }
    let exits = log_lines(&p, "enricher", "MessageSizeTooLarge");
    assert!(exits.is_empty(), "the enricher hit MessageSizeTooLarge:\n{}", exits.join("\n"));
    for l in log_lines(&p, "enricher", "dead-lettering") {
        eprintln!("enricher: {}", if l.len() > 400 { &l[..400] } else { &l });
    }
    print_warnings(&p, "enricher", 5);
    stop_all(services);
}

// --- 2. A broker paused longer than message.timeout.ms ------------------------------------------

/// Sum of the high watermarks of `topic`'s partitions.
fn high_watermarks(consumer: &BaseConsumer, topic: &str, partitions: i32) -> i64 {
    (0..partitions).map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1).sum()
}

/// The records of a topic, decoded.
struct Read {
    /// Records read.
    records: usize,
    /// Each event by id.
    events: HashMap<Uuid, EnrichedEvent<'static>>,
    /// How many records each id has.
    copies: HashMap<Uuid, usize>,
}

impl Read {
    /// "ids with 1 copy: n, 2 copies: m, …".
    fn histogram(&self) -> String {
        let mut h: BTreeMap<usize, usize> = BTreeMap::new();
        for &c in self.copies.values() {
            *h.entry(c).or_default() += 1;
        }
        h.iter().map(|(c, n)| format!("{n}×{c}")).collect::<Vec<_>>().join(" ")
    }
}

/// Every record of `topic` on `kafka`, decoded. Copies of an event must be equal.
async fn read_events(kafka: &KafkaArgs, topic: &str) -> Read {
    let (k, t) = (kafka.clone(), topic.to_owned());
    let records =
        tokio::task::spawn_blocking(move || testkit::read_all_from(&k, &t, Duration::from_secs(120))).await.unwrap();
    let mut events: HashMap<Uuid, EnrichedEvent<'static>> = HashMap::new();
    let mut copies: HashMap<Uuid, usize> = HashMap::new();
    for m in &records {
        let e = EnrichedEvent::decode(m.payload().unwrap(), LIMIT).unwrap().into_owned();
        *copies.entry(e.event_id).or_default() += 1;
        if let Some(previous) = events.insert(e.event_id, e.clone()) {
            assert_eq!(previous, e, "{topic}: a duplicate is the same event");
        }
    }
    Read { records: records.len(), events, copies }
}

/// The inputs the consumer's group has committed on `topic` (partitions 0..3; none: 0).
fn committed(consumer: &BaseConsumer, topic: &str) -> i64 {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for partition in 0..3 {
        tpl.add_partition(topic, partition);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).sum()
}

/// Deletes the broker's bucket when dropped (SeaweedFS has a volume per bucket and only so
/// many of them), on a thread of its own: the test's runtime may be unwinding.
/// (A client of its own there: the test's may hold connections of the test's runtime.)
struct DeleteOnDrop(String);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let bucket = std::mem::take(&mut self.0);
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                pipeline_s3::store::ObjectStore::connect(&testkit::s3(&bucket)).await.delete_bucket().await
            })
        })
        .join();
        if let Ok(Err(e)) = deleted {
            eprintln!("deleting the broker's bucket failed: {e}");
        }
    }
}

fn signal(broker: &OwnBroker, signal: &str) {
    let pid = broker.pid().to_string();
    assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success(), "kill {signal} {pid}");
}

/// Lines of a service's log that contain `needle` and follow its first `partitions assigned`.
fn log_lines_after_assignment(p: &Pipeline, service: &str, needle: &str) -> Vec<String> {
    let log = std::fs::read_to_string(p.log_path(service)).unwrap_or_default();
    log.lines()
        .skip_while(|l| !l.contains("partitions assigned"))
        .skip(1)
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The broker is paused (SIGSTOP) for 8 s while enricher and detector work through a backlog,
/// both with `message.timeout.ms` = 3 s: their deliveries time out and are resent with backoff,
/// and once the broker is back every event id arrives in samples-enriched with the test's own
/// join, exactly the expected alerts in alert-data, neither service's group rebalances (no
/// `partitions revoked` after the initial assignment), and each topic holds at most the
/// in-flight window (`--max-in-flight`, 20 000) of duplicates.
///
/// The pause is well within the consumers' session timeout (20 s here) on purpose: this test is about
/// the loop riding out failed deliveries. A longer pause loses the group session by Kafka's
/// protocol (librdkafka: `SESSTMOUT … revoking assignment`; the commit on revoke then fails with
/// `AssignmentLost`): a rebalance follows, and every input since the last commit is read again,
/// so duplicates are no longer bounded by the in-flight window. That is documented at-least-once
/// behaviour, not a failure of the loop.
#[tokio::test]
async fn a_broker_paused_past_the_message_timeout_mid_backlog_loses_nothing() {
    pipeline_testkit::needs_stack!(Kafka, S3, BrokerBuilds);
    // The enricher works through ~20 000 events a second here: 100 000 leave it mid-backlog
    // when both services have made their first commit.
    const N: usize = 100_000;
    // Longer than MESSAGE_TIMEOUT_MS, well within SESSION_TIMEOUT_MS: the session counts from the
    // last answered heartbeat (up to 1 s before the pause), and a resumed broker works through
    // its queue before it answers again, longer on a busy machine. With the services' default 10 s
    // that left a second or two, and a loaded run rebalanced; the outage's bound under test is
    // the message timeout, not the session's.
    const PAUSE: Duration = Duration::from_secs(8);
    const MESSAGE_TIMEOUT_MS: u64 = 3000;
    const SESSION_TIMEOUT_MS: u64 = 20_000;
    const MAX_DUPLICATES: usize = 20_000; // the in-flight window (--max-in-flight)
    let started = Instant::now();
    // A broker of the test's own, its data in a fresh bucket (deleted at the end).
    let bucket = testkit::unique("pausebroker");
    let bucket_store = pipeline_s3::store::ObjectStore::connect(&testkit::s3(&bucket)).await;
    bucket_store.ensure_bucket().await.expect("create the broker's bucket");
    // Declared before the broker, so dropped after it, also when the test fails.
    let _bucket = DeleteOnDrop(bucket.clone());
    let port = testkit::free_port();
    let broker = OwnBroker::start(port, &format!("s3://{bucket}/"), &std::env::temp_dir(), &[]).await;
    let kafka = broker.kafka(&[]);
    pipeline_kafka::client::check_cluster(&kafka, None).await.expect("own broker answers");
    let p = Pipeline::on(kafka.clone(), 3, 2202).await;

    // The backlog: N events in the sensors topic before any service starts.
    p.generate(&[
        "--seed",
        "23",
        "--count",
        &N.to_string(),
        "--start-time",
        "2026-04-01T08:00:00Z",
        "--time-step",
        "1s",
    ]);
    let generated = started.elapsed();
    let events = regenerate(&p, 23, N, 1000).await;
    let join = p.join();
    let rules = AlertRules::default();
    let expected: HashMap<Uuid, EnrichedEvent<'static>> =
        events.iter().map(|e| (e.event_id, join.enrich(e.clone()).0.into_owned())).collect();
    let want_alerts: HashMap<Uuid, EnrichedEvent<'static>> =
        expected.iter().filter(|(_, e)| !rules.check_event(e).is_empty()).map(|(k, v)| (*k, v.clone())).collect();
    eprintln!("{N} events pre-filled in {:.1} s; {} alerts expected", generated.as_secs_f64(), want_alerts.len());

    let message_timeout = format!("message.timeout.ms={MESSAGE_TIMEOUT_MS}");
    let session_timeout = format!("session.timeout.ms={SESSION_TIMEOUT_MS}");
    let timeout = ["-X", message_timeout.as_str(), "-X", session_timeout.as_str()];
    // Their metrics and readiness, shown if the test fails (what the loops hold in flight).
    let addrs = [0, 1].map(|_| format!("127.0.0.1:{}", testkit::free_port()));
    let args: Vec<Vec<&str>> =
        addrs.iter().map(|addr| timeout.iter().copied().chain(["--metrics-addr", addr.as_str()]).collect()).collect();
    let mut services = vec![p.enricher(&args[0]), p.detector(&args[1])];
    let loop_state = || {
        let mut out = String::new();
        for (name, addr) in ["enricher", "detector"].iter().zip(&addrs) {
            let (_, ready) = e2e::check::http_get(&format!("http://{addr}/readyz"));
            let (_, metrics) = e2e::check::http_get(&format!("http://{addr}/metrics"));
            let lines: Vec<&str> = metrics
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter(|l| {
                    ["in_flight", "records_consumed", "consumer_lag", "partition_stalled"].iter().any(|k| l.contains(k))
                })
                .collect();
            out.push_str(&format!("{name} /readyz: {}\n{name} /metrics: {}\n", ready.trim(), lines.join("; ")));
        }
        out
    };
    let watch: BaseConsumer = kafka.client_config(&[]).create().unwrap();

    // Mid-backlog, once both services have joined their groups and committed offsets (steady
    // state: the pause hits the loop mid-stream, not the start-up).
    let group = |service: &str| -> BaseConsumer {
        kafka.client_config(&[("group.id", &format!("{}-{service}", p.id))]).create().unwrap()
    };
    let (enricher_group, detector_group) = (group("enricher"), group("detector"));
    let deadline = Instant::now() + Duration::from_secs(90);
    let (committed_before, enriched_before, alerts_before) = loop {
        let c = (committed(&enricher_group, &p.sensors), committed(&detector_group, &p.enriched));
        if c.0 > 0 && c.1 > 0 {
            break (c, high_watermarks(&watch, &p.enriched, 3), high_watermarks(&watch, &p.alerts, 3));
        }
        assert!(Instant::now() < deadline, "no commits: {c:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    signal(&broker, "-STOP");
    let stopped_at = started.elapsed();
    eprintln!(
        "broker paused at {:.1} s with {enriched_before} enriched and {alerts_before} alerts out, committed \
         inputs: enricher {}, detector {}",
        stopped_at.as_secs_f64(),
        committed_before.0,
        committed_before.1
    );
    assert!(enriched_before < N as i64 * 3 / 4, "the pause must come mid-backlog: {enriched_before} of {N} enriched");
    tokio::time::sleep(PAUSE).await;
    signal(&broker, "-CONT");
    let resumed = Instant::now();

    // Until every event and every alert is out and nothing more arrives for a while; the time of
    // the last change of either topic is when the last output arrived.
    let quiet = Duration::from_secs(5);
    let deadline = resumed + Duration::from_secs(240);
    let mut last = (0, 0);
    let mut last_change = resumed;
    let (enriched, alerts) = loop {
        let now = (high_watermarks(&watch, &p.enriched, 3), high_watermarks(&watch, &p.alerts, 3));
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        let complete = now.0 >= N as i64 && now.1 >= want_alerts.len() as i64;
        if complete && last_change.elapsed() >= quiet {
            let enriched = read_events(&kafka, &p.enriched).await;
            let alerts = read_events(&kafka, &p.alerts).await;
            if enriched.events.len() == N && alerts.events.len() == want_alerts.len() {
                break (enriched, alerts);
            }
            eprintln!(
                "watermarks complete but ids missing: {} of {N}, {} alerts",
                enriched.events.len(),
                alerts.events.len()
            );
        }
        if Instant::now() > deadline {
            let (e, a) = (read_events(&kafka, &p.enriched).await, read_events(&kafka, &p.alerts).await);
            print_warnings(&p, "enricher", 20);
            print_warnings(&p, "detector", 20);
            eprintln!("{}", loop_state());
            panic!(
                "not complete 240 s after the pause: {} of {N} events enriched ({} records), {} of {} alerts ({} records)",
                e.events.len(),
                e.records,
                a.events.len(),
                want_alerts.len(),
                a.records
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let caught_up = last_change.duration_since(resumed);

    // The detector turns every copy of an alert-worthy enriched event into an alert: the
    // duplicates it adds itself are those beyond the copies it was given.
    let dup_enriched = enriched.records - N;
    let dup_alerts = alerts.records - want_alerts.len();
    let alert_inputs: usize = want_alerts.keys().map(|id| enriched.copies[id]).sum();
    let dup_detector = alerts.records.saturating_sub(alert_inputs);
    eprintln!(
        "broker pause of {} s past message.timeout.ms={MESSAGE_TIMEOUT_MS}: last output {:.1} s after the broker's \
         return; samples-enriched {} records for {N} events ({dup_enriched} duplicates; copies per id: {}), \
         alert-data {} records for {} alerts ({dup_alerts} duplicates, {} of them from duplicated inputs, \
         {dup_detector} added by the detector; copies per id: {}); whole test {:.1} s",
        PAUSE.as_secs(),
        caught_up.as_secs_f64(),
        enriched.records,
        enriched.histogram(),
        alerts.records,
        want_alerts.len(),
        alert_inputs - want_alerts.len(),
        alerts.histogram(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(enriched.events, expected, "every event enriched exactly as the test's own join");
    assert_eq!(
        alerts.events.keys().copied().collect::<HashSet<_>>(),
        want_alerts.keys().copied().collect::<HashSet<_>>(),
        "alerts are exactly the rule breakers"
    );
    assert_eq!(alerts.events, want_alerts, "alerts carry the enriched events");

    // Read while the services run: a service stopping logs `partitions revoked` too.
    let mut rebalances = Vec::new();
    for name in ["enricher", "detector"] {
        let revoked = log_lines_after_assignment(&p, name, "partitions revoked");
        if revoked.is_empty() {
            eprintln!("{name}: no rebalance (no `partitions revoked` after the initial assignment)");
        }
        for l in &revoked {
            eprintln!("{name} rebalanced: {l}");
        }
        rebalances.extend(revoked.into_iter().map(|l| format!("{name}: {l}")));
        for l in log_lines(&p, name, "partitions assigned") {
            eprintln!("{name}: {l}");
        }
        print_warnings(&p, name, 12);
        eprintln!("{name}: {} `deliveries recovered` lines", log_lines(&p, name, "deliveries recovered").len());
    }
    for s in &mut services {
        assert!(s.is_running(), "{} exited:\n{}", s.name, log_lines(&p, s.name, "").join("\n"));
    }
    stop_all(services);
    drop((watch, enricher_group, detector_group));
    drop(broker);

    // A pause shorter than the session timeout keeps both groups' sessions: no rebalance.
    assert!(
        rebalances.is_empty(),
        "a {} s pause (well below the {SESSION_TIMEOUT_MS} ms session timeout) rebalanced a group:\n{}",
        PAUSE.as_secs(),
        rebalances.join("\n")
    );
    // Each topic holds at most the in-flight window of duplicates: with no rebalance, a service
    // repeats only outputs whose delivery failed while in flight.
    let committed_behind = enriched_before - committed_before.0;
    assert!(
        dup_enriched <= MAX_DUPLICATES && dup_alerts <= MAX_DUPLICATES,
        "duplicates beyond the in-flight window ({MAX_DUPLICATES}): samples-enriched {dup_enriched} (at the pause \
         the enricher had up to {committed_behind} acknowledged inputs past its last commit, plus its in-flight ones), \
         alert-data {dup_alerts} ({dup_detector} added by the detector)"
    );
}

// --- 3. A counter catching up on a backlog -------------------------------------------------------

/// The alerts of `n` seeded events (about 90 % of them break a rule), as the detector writes
/// them. 200 ms apart, so that the whole stream spans far less than the 48 h watermark delay
/// (no window closes, no alert is late).
async fn alerts_of(p: &Pipeline, seed: u64, n: usize) -> Vec<EnrichedEvent<'static>> {
    let join = p.join();
    let rules = AlertRules::default();
    let events = regenerate(p, seed, n, 200).await;
    events.into_iter().map(|e| join.enrich(e).0.into_owned()).filter(|e| !rules.check_event(e).is_empty()).collect()
}

/// Tables printed so far in the counter's stdout: the sum of their `num_of_rows` column each.
fn printed_rows(stdout: &str) -> Vec<u64> {
    let mut tables = Vec::new();
    let mut rows = 0;
    for line in stdout.lines() {
        if line.starts_with("windows: ") {
            tables.push(rows);
            rows = 0;
        } else if line.starts_with("| 20") {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            rows += cells[3].parse::<u64>().unwrap_or_else(|_| panic!("a table row: {line}"));
        }
    }
    tables
}

/// The counter's `pipeline_records_consumed_total` at `addr` (None while it does not answer).
fn consumed(addr: &str) -> Option<u64> {
    let (code, body) = http_get(&format!("http://{addr}/metrics"));
    if code != 200 {
        return None;
    }
    body.lines()
        .find(|l| l.starts_with("pipeline_records_consumed_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[tokio::test]
async fn a_counter_catching_up_on_a_backlog_checkpoints_and_prints_on_time() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let started = Instant::now();
    let p = Pipeline::new(3, 2303).await;
    let alerts = alerts_of(&p, 29, 660_000).await;
    let total = alerts.len();
    // In chunks: the producer's queue never holds the whole backlog at once.
    for chunk in alerts.chunks(50_000) {
        let records: Vec<_> = chunk.iter().map(|a| (Some(a.car_id.to_string().into_bytes()), a.encode())).collect();
        e2e::produce_raw(&p.alerts, &records).await;
    }
    eprintln!("{total} alerts pre-filled in {:.1} s", started.elapsed().as_secs_f64());
    let watch: BaseConsumer = testkit::kafka().client_config(&[]).create().unwrap();
    let highs: Vec<i64> =
        (0..3).map(|part| watch.fetch_watermarks(&p.alerts, part, Duration::from_secs(10)).unwrap().1).collect();
    assert_eq!(highs.iter().sum::<i64>(), total as i64);

    // The counter, started on the backlog, printing its table to a file every second and
    // checkpointing every 2 s.
    let stdout_path = std::env::temp_dir().join(format!("{}-counter.stdout", p.id));
    let stdout = std::fs::File::create(&stdout_path).unwrap();
    let stderr = std::fs::File::create(p.log_path("counter")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let group = format!("{}-counter", p.id);
    let child = Command::new(e2e::bin("counter"))
        .args(["--group-id", &group, "--bootstrap-servers", &p.kafka.bootstrap_servers])
        .args(["--s3-bucket", &p.s3.s3_bucket, "--checkpoint-prefix", &p.checkpoint_prefix()])
        .args(["--input-topic", &p.alerts, "--counts-topic", &p.counts, "--late-topic", &p.late])
        .args(["--trigger", "1s", "--checkpoint-interval", "2s", "--metrics-addr", &addr])
        .env("RUST_LOG", "info")
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut counter = Service::from_child(child, "counter");
    let counter_started = Instant::now();

    // While it is behind: each checkpoint object seen, and whether a checkpoint and a table with
    // counted rows were seen before the consumed count reached the total (artifact first, then
    // the count: the count only grows).
    let dir = format!("{}/{group}/{}/", p.checkpoint_prefix(), p.alerts);
    let mut checkpoints: BTreeMap<String, f64> = BTreeMap::new();
    let (mut checkpoint_while_behind, mut table_while_behind) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(150);
    let caught_up = loop {
        let keys = p.store.list(&dir).await.unwrap();
        let tables = printed_rows(&std::fs::read_to_string(&stdout_path).unwrap_or_default());
        let now = counter_started.elapsed().as_secs_f64();
        let n = consumed(&addr);
        let mut fresh_checkpoint = false;
        for k in keys.into_iter().filter(|k| k.contains("/ckpt-")) {
            fresh_checkpoint = true;
            checkpoints.entry(k).or_insert(now);
        }
        let counted_table = tables.iter().any(|&rows| rows > 0);
        if let Some(n) = n.filter(|&n| (n as usize) < total) {
            if fresh_checkpoint && checkpoint_while_behind.is_none() {
                checkpoint_while_behind = Some((now, n));
            }
            if counted_table && table_while_behind.is_none() {
                table_while_behind = Some((now, n));
            }
        }
        if n.is_some_and(|n| n as usize >= total) {
            break now;
        }
        assert!(counter.is_running(), "the counter exited:\n{}", log_lines(&p, "counter", "").join("\n"));
        assert!(Instant::now() < deadline, "the counter consumed {n:?} of {total} in 150 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("counter consumed all {total} alerts {caught_up:.1} s after its start");

    // What the artifacts say by themselves: a checkpoint covering less than its partition holds
    // and a table counting fewer rows than the total were written during the catch-up.
    let mut partial_checkpoints = Vec::new();
    for (key, seen) in &checkpoints {
        let partition: usize = key.split("/p").last().unwrap().split('/').next().unwrap().parse().unwrap();
        let next: i64 = key.rsplit("ckpt-").next().unwrap().trim_end_matches(".json").parse().unwrap();
        eprintln!("checkpoint seen at {seen:.1} s: p{partition} next_offset={next} of {}", highs[partition]);
        if next < highs[partition] {
            partial_checkpoints.push(key.clone());
        }
    }
    let tables = printed_rows(&std::fs::read_to_string(&stdout_path).unwrap());
    let during: Vec<u64> = tables.iter().copied().filter(|&rows| rows > 0 && (rows as usize) < total).collect();
    eprintln!(
        "tables printed: {} in all, {} during the catch-up (rows counted: {during:?}); first checkpoint while behind: \
         {checkpoint_while_behind:?}, first counted table while behind: {table_while_behind:?} ((s after start, consumed))",
        tables.len(),
        during.len()
    );
    assert!(checkpoint_while_behind.is_some(), "no checkpoint appeared while the counter was behind");
    assert!(table_while_behind.is_some(), "no table was printed while the counter was behind");
    assert!(!partial_checkpoints.is_empty(), "no checkpoint covers only part of a partition: {checkpoints:?}");
    assert!(!during.is_empty(), "no printed table counts part of the backlog: {tables:?}");

    // At the end: the exact windows.
    let windows = expected_windows(&alerts.iter().collect::<Vec<_>>());
    await_counts(&p.counts, &windows).await;
    eprintln!("{} windows exact; whole test {:.1} s", windows.len(), started.elapsed().as_secs_f64());
    print_warnings(&p, "counter", 10);
    stop_all(vec![counter]);
    let _ = std::fs::remove_file(&stdout_path);
}
