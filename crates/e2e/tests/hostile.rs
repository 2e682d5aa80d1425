//! Hostile input end to end, with the service binaries on the real stack: records from producers
//! nobody controls must not stop, poison or crash-loop a service, and every other event is
//! accounted for exactly.
//! - A key of a megabyte (over the producer's `message.max.bytes` by itself): its dead letter
//!   keeps the key's head with its original size and SHA-256, so the dead letter is accepted and
//!   the service goes on (it used to exit with `MessageSizeTooLarge` on every restart). In the
//!   enricher (a poison input) and in the detector (a valid event whose alert copies the key and
//!   is refused by the broker).
//! - A flood of big malformed records (200 of them, each with 200 kB of text where `car_id`
//!   belongs) between good events: every one dead-lettered, every good event out exactly, and
//!   the enricher's log stays small (each error cut to 1 KiB, one line per 10 s and a summary;
//!   it used to grow by the whole field per record, 40 MB for this flood).
//! - Device clocks years off: alerts stamped days and years ahead and at the calendar's edges,
//!   between ordinary alerts of the same car, leave every ordinary alert counted in its window;
//!   the ones ahead are dead-lettered by the counter saying how far ahead, the past ones late.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use e2e::check::{assert_exact, exactly_once, regenerate};
use e2e::{Pipeline, read_all, wait_for_count};
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{EnrichedEvent, JsonEvent};
use pipeline_kafka::args::KafkaArgs;
use pipeline_kafka::runtime::dlq_headers;
use pipeline_testkit as testkit;
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A key over `message.max.bytes` (1 000 000) by itself, under the brokers' input limit.
const KEY_SIZE: usize = 1_020_000;

/// A dead letter's headers as strings.
fn headers(m: &OwnedMessage) -> HashMap<String, String> {
    m.headers().map_or_else(HashMap::new, |h| {
        h.iter()
            .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
            .collect()
    })
}

/// Asserts `dlq` holds exactly one dead letter, from `service`, whose key is a head of `key`
/// with the key's truncation headers.
async fn assert_one_cut_key_letter(dlq: &str, service: &str, key: &[u8]) {
    wait_for_count(dlq, 1, Duration::from_secs(60)).await;
    let letters = read_all(dlq).await;
    assert_eq!(letters.len(), 1, "{service}: one dead letter in {dlq}");
    let h = headers(&letters[0]);
    assert_eq!(h[dlq_headers::SERVICE], service);
    assert_eq!(h.get(dlq_headers::KEY_TRUNCATED).map(String::as_str), Some("true"), "{service}: key cut");
    assert_eq!(h[dlq_headers::ORIGINAL_KEY_SIZE], KEY_SIZE.to_string());
    let sha: String = Sha256::digest(key).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(h[dlq_headers::ORIGINAL_KEY_SHA256], sha);
    let cut = letters[0].key().unwrap();
    assert!(cut.len() < KEY_SIZE && key.starts_with(cut), "{service}: a head of the key ({} bytes)", cut.len());
}

/// A producer that may write records of up to 2 MB (the test's hostile one).
fn big_producer() -> KafkaArgs {
    testkit::kafka().with_properties(&[("message.max.bytes", "2000000")])
}

/// A key that alone exceeds the services' producer limit, every prefix distinct.
fn megabyte_key() -> Vec<u8> {
    (0..KEY_SIZE as u32).map(|i| b'a' + (i % 26) as u8).collect()
}

#[tokio::test]
async fn a_megabyte_key_on_a_poison_input_is_cut_in_its_dead_letter_and_every_other_event_flows() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 2201).await;
    let mut services = vec![p.enricher(&[]), p.detector(&[]), p.counter(&[])];
    let good = regenerate(&p, 41, 500, 1_000).await;
    let key = megabyte_key();
    // A poison value under a megabyte key, in the middle of the good events.
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> =
        good.iter().map(|e| (Some(e.car_id.to_string().into_bytes()), e.encode())).collect();
    records.insert(records.len() / 2, (Some(key.clone()), b"{\"not\":\"an event\"}".to_vec()));
    e2e::produce_raw_to(&big_producer(), &p.sensors, &records).await;

    assert_one_cut_key_letter(&p.dlq[&p.sensors], "enricher", &key).await;
    let (alerts, windows) = assert_exact(&p, &good).await;
    eprintln!("{} good events, {alerts} alerts, {windows} windows: exact", good.len());
    for s in &mut services {
        assert!(s.is_running(), "{} exited", s.name);
    }
}

#[tokio::test]
async fn a_flood_of_big_malformed_records_is_all_dead_lettered_and_the_log_stays_small() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    const FLOOD: usize = 200;
    const FIELD: usize = 200_000;
    let p = Pipeline::new(3, 2204).await;
    let mut services = vec![p.enricher(&[]), p.detector(&[]), p.counter(&[])];
    p.await_log("enricher", "partitions assigned", 1);
    let logged_before = std::fs::metadata(p.log_path("enricher")).unwrap().len();
    let good = regenerate(&p, 44, 400, 1_000).await;
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> = Vec::new();
    for (i, e) in good.iter().enumerate() {
        records.push((Some(e.car_id.to_string().into_bytes()), e.encode()));
        if i % 2 == 0 && records.len() < 3 * FLOOD {
            // The same event with 200 kB of text (and a forged log line) where the number belongs.
            let mut bad: serde_json::Value = serde_json::from_slice(&e.encode()).unwrap();
            bad["car_id"] = serde_json::Value::String(format!("{}\nERROR forged", "7".repeat(FIELD)));
            records.push((None, serde_json::to_vec(&bad).unwrap()));
        }
    }
    let flooded = records.iter().filter(|(k, _)| k.is_none()).count();
    assert_eq!(flooded, FLOOD);
    e2e::produce_raw(&p.sensors, &records).await;

    wait_for_count(&p.dlq[&p.sensors], FLOOD as i64, Duration::from_secs(120)).await;
    let letters = read_all(&p.dlq[&p.sensors]).await;
    assert_eq!(letters.len(), FLOOD, "every malformed record dead-lettered once");
    let (alerts, windows) = assert_exact(&p, &good).await;
    let grew = std::fs::metadata(p.log_path("enricher")).unwrap().len() - logged_before;
    let log = std::fs::read_to_string(p.log_path("enricher")).unwrap();
    assert!(grew < 64 * 1024, "the enricher's log grew {grew} bytes for {FLOOD} bad records");
    assert!(!log.lines().any(|l| l.starts_with("ERROR forged")), "a field forged a log line");
    eprintln!(
        "flood: {FLOOD} records of {FIELD} B dead-lettered, {} good events ({alerts} alerts, {windows} windows) exact; \
         the enricher's log grew {grew} B",
        good.len()
    );
    for s in &mut services {
        assert!(s.is_running(), "{} exited", s.name);
    }
}

#[tokio::test]
async fn an_alert_copying_a_megabyte_key_is_dead_lettered_cut_and_the_detector_keeps_going() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 2202).await;
    let good = regenerate(&p, 42, 500, 1_000).await;
    let join = p.join();
    let rules = AlertRules::default();
    let key = megabyte_key();
    // Valid enriched events written to the detector's input by someone else; one over the speed
    // limit under a megabyte key: its alert copies the key, so the broker refuses the alert.
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> = Vec::new();
    let mut want: HashSet<Uuid> = HashSet::new();
    for e in &good {
        let enriched = join.enrich(e.clone()).0;
        if !rules.check_event(&enriched).is_empty() {
            want.insert(enriched.event_id);
        }
        records.push((Some(e.car_id.to_string().into_bytes()), enriched.encode()));
    }
    let mut speeding = good[0].clone();
    speeding.event_id = Uuid::new_v4();
    speeding.speed = 200.0;
    records.insert(records.len() / 2, (Some(key.clone()), join.enrich(speeding).0.encode()));
    e2e::produce_raw_to(&big_producer(), &p.enriched, &records).await;

    let mut detector = p.detector(&[]);
    assert_one_cut_key_letter(&p.dlq[&p.enriched], "detector", &key).await;
    wait_for_count(&p.alerts, want.len() as i64, Duration::from_secs(120)).await;
    let got = exactly_once::<EnrichedEvent<'static>>(&p.alerts, |e| e.event_id).await;
    assert_eq!(got.keys().copied().collect::<HashSet<_>>(), want, "every other alert exactly once");
    assert!(detector.is_running(), "the detector exited");
    eprintln!("{} events, {} alerts exact, the megabyte-key alert dead-lettered", good.len(), want.len());
}

#[tokio::test]
async fn alerts_stamped_years_ahead_or_at_the_calendar_edges_leave_every_ordinary_alert_counted() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 2203).await;
    let mut services = vec![p.enricher(&[]), p.detector(&[]), p.counter(&[])];
    // Ordinary events of one car over the last few minutes of this machine's clock (so of the
    // counter's), one partition; every one breaks a rule, so every one is an alert.
    let now = chrono::Utc::now();
    let mut ordinary = regenerate(&p, 43, 120, 1_000).await;
    let car = ordinary[0].car_id;
    for (i, e) in ordinary.iter_mut().enumerate() {
        e.car_id = car;
        e.speed = 130.0;
        e.event_time = now - chrono::Duration::minutes(5) + chrono::Duration::seconds(i as i64);
    }
    let stamped = |at: chrono::DateTime<chrono::Utc>| {
        let mut e = ordinary[0].clone();
        e.event_id = Uuid::new_v4();
        e.event_time = at;
        e
    };
    let ymd = |y, m, d| chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, y, m, d, 0, 0, 0).unwrap();
    let ahead = [now + chrono::Duration::days(3), ymd(2036, 2, 7), ymd(9999, 12, 31)];
    let past = [ymd(1970, 1, 1), ymd(1, 1, 1)];
    let hostile: Vec<_> = ahead.iter().chain(&past).map(|t| stamped(*t)).collect();
    // The first record is ordinary (the partition's watermark then exists), the hostile ones
    // spread between the rest.
    let mut records: Vec<_> = ordinary.iter().map(|e| (Some(car.to_string().into_bytes()), e.encode())).collect();
    for (i, e) in hostile.iter().enumerate() {
        records.insert(1 + i * 20, (Some(car.to_string().into_bytes()), e.encode()));
    }
    e2e::produce_raw(&p.sensors, &records).await;

    // The windows are those of the ordinary alerts, exactly.
    let join = p.join();
    let enriched: Vec<EnrichedEvent<'static>> =
        ordinary.iter().map(|e| join.enrich(e.clone()).0.into_owned()).collect();
    let windows = e2e::check::expected_windows(&enriched.iter().collect::<Vec<_>>());
    e2e::check::await_counts(&p.counts, &windows).await;
    // The ones ahead: dead-lettered by the counter, each saying how far ahead it was.
    let dlq = &p.dlq[&p.alerts];
    wait_for_count(dlq, ahead.len() as i64, Duration::from_secs(60)).await;
    let letters = read_all(dlq).await;
    assert_eq!(letters.len(), ahead.len(), "one dead letter per alert stamped ahead");
    for letter in &letters {
        let h = headers(letter);
        assert_eq!(h[dlq_headers::SERVICE], "counter");
        assert!(h[dlq_headers::ERROR].contains("ahead of this counter's clock"), "{}", h[dlq_headers::ERROR]);
    }
    // The past ones: late, in the late topic.
    wait_for_count(&p.late, past.len() as i64, Duration::from_secs(60)).await;
    let late: HashSet<Uuid> =
        exactly_once::<EnrichedEvent<'static>>(&p.late, |e| e.event_id).await.into_keys().collect();
    assert_eq!(late, hostile[ahead.len()..].iter().map(|e| e.event_id).collect(), "the past ones are late");
    for s in &mut services {
        assert!(s.is_running(), "{} exited", s.name);
    }
    eprintln!(
        "{} ordinary alerts in {} windows: exact; {} ahead dead-lettered, {} late",
        ordinary.len(),
        windows.len(),
        ahead.len(),
        past.len()
    );
}

#[test]
fn dangerous_settings_are_refused_at_start_with_one_line_naming_them_and_no_secret() {
    // (service, arguments, what the line must name); each pasted as an operator might.
    let cases: &[(&str, &[&str], &str)] = &[
        ("enricher", &["-X", "enable.auto.offset.store=true"], "-X enable.auto.offset.store is refused"),
        ("detector", &["-X", "enable.auto.commit=false"], "-X enable.auto.commit is refused"),
        ("detector", &["-X", "acks=1"], "-X acks is refused"),
        ("enricher", &["--guarantee", "exactly-once", "-X", "isolation.level=read_uncommitted"], "-X isolation.level"),
        ("counter", &["--trigger", "0s"], "--trigger"),
        ("enricher", &["--dims-poll", "0s"], "--dims-poll"),
        (
            "detector",
            &["--drain-timeout", "12s"],
            "--drain-timeout 12s must be below the consumer's session.timeout.ms",
        ),
        ("counter", &["--window", "1s"], "--window 1s with --watermark-delay 2days keeps up to 345602 windows"),
        (
            "detector",
            &["-X", "sasl.password=hunter;2secret"],
            "entry 2 of an -X / KAFKA_PROPERTIES value is not key=value",
        ),
        ("detector", &["-X", "linger.ms=s3cr3t"], "-X linger.ms: librdkafka refused the value of `linger.ms`"),
    ];
    for (service, args, names) in cases {
        // Nothing listens there: a refusal must come before any connection.
        let out = std::process::Command::new(e2e::bin(service))
            .args(["--bootstrap-servers", "127.0.0.1:9", "--connect-timeout", "1s"])
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // (clap adds its hint line to a refused flag)
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("For more information, try '--help'"))
            .collect();
        assert!(!out.status.success(), "{service} {args:?} started");
        assert_eq!(lines.len(), 1, "{service} {args:?}: one line, got {stderr}");
        assert!(lines[0].contains(names), "{service} {args:?}: {stderr}");
        assert!(!stderr.contains("2secret") && !stderr.contains("s3cr3t"), "a secret fragment printed: {stderr}");
        eprintln!("{service} {}: {}", args.join(" "), lines[0]);
    }
}
