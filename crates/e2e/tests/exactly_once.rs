//! `--guarantee exactly-once` end to end on the local transactional broker (Tansu, started by
//! `scripts/stack.sh up --txn`): through clean restarts and rebalances, read-committed
//! readers see every event exactly once downstream of each service, and the counter's windows
//! are exact. And on a broker without transactions the mode refuses to start, with one line.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::check::*;
use e2e::{Pipeline, bin};
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{EnrichedEvent, JsonEvent};
use pipeline_core::window::{PartialMerge, WindowStats};
use pipeline_testkit as testkit;
use rdkafka::Message;
use serde_json::Value;
use uuid::Uuid;

/// Each event id once: panics on a duplicate.
fn once(records: &[rdkafka::message::OwnedMessage], topic: &str) -> HashMap<Uuid, EnrichedEvent<'static>> {
    let mut out = HashMap::new();
    for m in records {
        let e = EnrichedEvent::decode(m.payload().unwrap(), LIMIT).unwrap().into_owned();
        assert!(out.insert(e.event_id, e).is_none(), "a duplicate in {topic} for a read-committed reader");
    }
    out
}

#[tokio::test]
async fn every_event_exactly_once_through_restarts_and_rebalances() {
    pipeline_testkit::needs_stack!(Kafka, S3, TxnKafka);
    const N: usize = 4_000;
    let kafka = testkit::txn_kafka();
    let p = Pipeline::on(kafka.clone(), 3, 1301).await;
    let (e1, d1, d2) = (format!("{}-e1", p.id), format!("{}-d1", p.id), format!("{}-d2", p.id));
    let eos = |id: &str| ["--guarantee".to_owned(), "exactly-once".into(), "--transactional-id".into(), id.to_owned()];
    fn args(a: &[String; 4]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    let (eos_e1, eos_d1, eos_d2) = (eos(&e1), eos(&d1), eos(&d2));
    let mut enricher = p.enricher(&args(&eos_e1));
    let detector = p.detector(&args(&eos_d1));
    let counter = p.counter(&["--guarantee", "exactly-once", "--checkpoint-interval", "1s"]);

    // The stream flows while the enricher restarts and a second detector joins and leaves.
    let generator = Command::new(bin("generator"))
        .args(["run", "--s3-bucket", &p.s3.s3_bucket, "--dims-prefix", &p.s3.dims_prefix])
        .args(["--topic", &p.sensors, "--bootstrap-servers", &kafka.bootstrap_servers, "--rate", "1000"])
        .args([
            "--seed",
            "13",
            "--count",
            &N.to_string(),
            "--start-time",
            "2026-04-01T08:00:00Z",
            "--time-step",
            "500ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // (The transactional broker stalls a group join that a member leaves halfway, so each
    // disruption waits for the group to have settled.)
    p.await_log("enricher", "partitions assigned", 1);
    p.await_log("detector", "partitions assigned", 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(enricher.stop().status.success(), "the enricher commits its open transaction at SIGTERM");
    enricher = p.enricher(&args(&eos_e1));
    p.await_log("enricher", "partitions assigned", 2);
    let second = p.detector(&args(&eos_d2));
    p.await_log("detector", "partitions assigned", 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(second.terminate().status.success());
    let out = generator.wait_with_output().unwrap();
    assert!(out.status.success(), "generator: {}", String::from_utf8_lossy(&out.stderr));

    let join = p.join();
    let rules = AlertRules::default();
    let events = regenerate(&p, 13, N, 500).await;
    let expected: HashMap<Uuid, EnrichedEvent<'static>> =
        events.iter().map(|e| (e.event_id, join.enrich(e.clone()).0.into_owned())).collect();
    let alerts: Vec<&EnrichedEvent<'static>> = expected.values().filter(|e| !rules.check_event(e).is_empty()).collect();

    let read = |topic: String, n: usize| {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || testkit::read_committed_until(&kafka, &topic, n, Duration::from_secs(120)))
    };
    let enriched = read(p.enriched.clone(), N).await.unwrap();
    assert_eq!(enriched.len(), N, "samples-enriched holds each event once");
    assert_eq!(once(&enriched, "samples-enriched"), expected);
    let got_alerts = read(p.alerts.clone(), alerts.len()).await.unwrap();
    assert_eq!(got_alerts.len(), alerts.len(), "alert-data holds each alert once");
    let ids: HashSet<Uuid> = once(&got_alerts, "alert-data").into_keys().collect();
    assert_eq!(ids, alerts.iter().map(|a| a.event_id).collect::<HashSet<_>>());

    // The counter read committed alerts only; its merged partials are the exact windows.
    let want = expected_windows(&alerts);
    let colors: Vec<String> = COLORS.map(str::to_owned).to_vec();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (k, t) = (kafka.clone(), p.counts.clone());
        let records = tokio::task::spawn_blocking(move || {
            testkit::read_committed_quiet(&k, &t, Duration::from_millis(500), Duration::from_secs(30))
        })
        .await
        .unwrap();
        let mut merge = PartialMerge::default();
        for m in &records {
            let (stats, partial) = WindowStats::from_row(m.payload().unwrap(), &colors).unwrap();
            let (partition, offset) = partial.unwrap();
            merge.insert(partition, offset, stats);
        }
        let got: std::collections::BTreeMap<String, Value> = merge
            .merged(|_| false)
            .iter()
            .map(|w| {
                (
                    pipeline_core::schema::event_time::format(&w.start),
                    serde_json::from_slice(&w.to_json(&colors)).unwrap(),
                )
            })
            .collect();
        if got == want {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "counts never matched:\n got {got:#?}\nwant {want:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop_all(vec![enricher, detector, counter]);
}

#[tokio::test]
async fn exactly_once_on_a_broker_without_transactions_says_so_in_one_line() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(1, 1302).await;
    let enricher = p.enricher(&["--guarantee", "exactly-once"]);
    let out = enricher.wait();
    assert!(!out.status.success());
    let log = std::fs::read_to_string(p.log_path("enricher")).unwrap();
    let last = log.lines().last().unwrap();
    assert!(last.starts_with("enricher: error: Kafka at 127.0.0.1:9092 refused transactions"), "{last}");
    assert!(last.contains("scripts/stack.sh up --txn") && last.contains("--guarantee at-least-once"), "{last}");
}
