//! `ops audit` against the real local stack (`scripts/stack.sh up`): the real enricher,
//! detector and counter run over a private pipeline (e2e's harness: own bucket with dims, own
//! topics); the audit of their outputs is clean, and the audit of a doctored copy of the
//! outputs reports exactly the injected faults.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use e2e::Pipeline;
use e2e::check::{assert_exact, regenerate, stop_all};
use pipeline_core::schema::{EnrichedEvent, JsonEvent};
use pipeline_core::window::WindowStats;
use pipeline_testkit as testkit;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use tokio::sync::OnceCell;

const BIN: &str = env!("CARGO_BIN_EXE_ops");
const EVENTS: usize = 3000;

/// The pipeline both tests audit, run once: its topics hold the services' complete outputs.
#[derive(Debug)]
struct Run {
    /// The private pipeline.
    p: Pipeline,
    /// Alerts the test itself computed (join and rules over the regenerated events).
    alerts: usize,
    /// Windows it computed.
    windows: usize,
}

static RUN: OnceCell<Run> = OnceCell::const_new();

/// Generates the events, runs the services until their outputs are exactly what the test
/// computes itself (e2e's `assert_exact`), and stops them.
async fn run() -> &'static Run {
    RUN.get_or_init(|| async {
        let p = Pipeline::new(3, 131).await;
        let services = vec![p.enricher(&[]), p.detector(&[]), p.counter(&[])];
        // 3000 events 600 ms apart: 30 minutes, three 15-minute windows.
        p.generate(&[
            "--seed",
            "13",
            "--count",
            "3000",
            "--start-time",
            "2026-04-01T08:00:00Z",
            "--time-step",
            "600ms",
        ]);
        let events = regenerate(&p, 13, EVENTS, 600).await;
        let (alerts, windows) = assert_exact(&p, &events).await;
        stop_all(services);
        Run { p, alerts, windows }
    })
    .await
}

/// `ops audit` over the pipeline's bucket and input, with these output topics.
fn audit(p: &Pipeline, enriched: &str, alerts: &str, counts: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["audit", "--s3-bucket", &p.s3.s3_bucket, "--dims-prefix", &p.s3.dims_prefix])
        .args(["--input-topic", &p.sensors, "--enriched-topic", enriched, "--alerts-topic", alerts])
        .args(["--counts-topic", counts])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The table rows of the text output: stage → its numbers (expected, found, missing,
/// duplicated, different, unexpected, invalid).
fn rows(out: &Output) -> Vec<(String, Vec<u64>)> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("STAGE"))
        .skip(1)
        .take(3)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_owned(), cols[2..].iter().map(|c| c.parse().unwrap()).collect())
        })
        .collect()
}

#[tokio::test]
async fn audit_of_a_correct_run_is_clean_with_exact_counts() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let r = run().await;
    let p = &r.p;
    let out = audit(p, &p.enriched, &p.alerts, &p.counts, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (e, a, w) = (EVENTS as u64, r.alerts as u64, r.windows as u64);
    assert_eq!(
        rows(&out),
        [
            ("enriched".to_owned(), vec![e, e, 0, 0, 0, 0, 0]),
            ("alerts".to_owned(), vec![a, a, 0, 0, 0, 0, 0]),
            ("windows".to_owned(), vec![w, w, 0, 0, 0, 0, 0]),
        ],
        "{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("input {} records={e} events={e} duplicated=0 invalid=0", p.sensors)),
        "{stdout}"
    );
    assert!(stdout.lines().last().unwrap().starts_with("audit: clean ("), "{stdout}");

    // An event-time range: the first window only (08:00–08:15 holds 1500 events 600 ms apart).
    let out = audit(p, &p.enriched, &p.alerts, &p.counts, &["--to", "2026-04-01T08:15:00Z", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["input"]["events"].as_u64(), v["input"]["outside_range"].as_u64()), (Some(1500), Some(1500)), "{v}");
    assert_eq!(v["stages"][2]["expected"].as_u64(), Some(1), "{v}");
    assert_eq!(v["stages"][2]["outside_range"].as_u64(), Some(w - 1), "{v}");
}

/// Copies `records` to `topic`, each to its own partition with its key and value.
async fn copy(topic: &str, records: &[OwnedMessage]) {
    let producer = pipeline_kafka::client::producer(&testkit::kafka()).unwrap();
    let sends = records.iter().map(|m| {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).partition(m.partition()).payload(m.payload().unwrap());
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        producer.send(record, Duration::from_secs(60))
    });
    for result in futures::future::join_all(sends).await {
        result.unwrap();
    }
}

#[tokio::test]
async fn audit_of_a_doctored_copy_reports_exactly_the_faults() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let r = run().await;
    let p = &r.p;
    let read = |t: &str| testkit::read_all(t, Duration::from_secs(60));
    let (mut enriched, mut alerts, mut counts) = (read(&p.enriched), read(&p.alerts), read(&p.counts));

    // One enriched event dropped, one alert duplicated (as at-least-once may).
    let dropped = enriched.remove(0);
    let dup = alerts[0].clone();
    alerts.push(dup.clone());

    // The row readers keep for one (window, partition) — the last one with the largest input
    // offset — gets one more alert: in the duplicate's window, as a counter counting what its
    // topic holds would (not a difference); in another window, tampered (a difference).
    let colors: Vec<String> = ["Black", "White", "Silver"].map(str::to_owned).to_vec();
    let parsed: Vec<(WindowStats, (i32, i64))> = counts
        .iter()
        .map(|m| {
            let (w, partial) = WindowStats::from_row(m.payload().unwrap(), &colors).unwrap();
            (w, partial.unwrap())
        })
        .collect();
    let dup_time = EnrichedEvent::decode(dup.payload().unwrap(), 1 << 20).unwrap().event_time;
    let dup_window = parsed.iter().map(|(w, _)| w).find(|w| w.start <= dup_time && dup_time < w.end).unwrap().start;
    let first_start = parsed.iter().map(|(w, _)| w.start).find(|s| *s != dup_window).expect("two windows at least");
    // The duplicate counted once more, as a counter counts it: its row, and its color's column
    // if the counter counts that color (which alert is first varies with the read order).
    let dup_color = EnrichedEvent::decode(dup.payload().unwrap(), 1 << 20).unwrap().color_name.map(|c| c.into_owned());
    let mut add_one = |start, color: Option<&str>| {
        let partition = parsed.iter().find(|(w, _)| w.start == start).unwrap().1.0;
        let kept = (0..parsed.len())
            .filter(|&i| parsed[i].0.start == start && parsed[i].1.0 == partition)
            .max_by_key(|&i| (parsed[i].1.1, i))
            .unwrap();
        let mut row: Value = serde_json::from_slice(counts[kept].payload().unwrap()).unwrap();
        row["num_of_rows"] = Value::from(row["num_of_rows"].as_u64().unwrap() + 1);
        if let Some(column) = color.map(|c| format!("num_of_{}", c.to_lowercase())).filter(|k| row.get(k).is_some()) {
            row[&column] = Value::from(row[&column].as_u64().unwrap() + 1);
        }
        let old = &counts[kept];
        counts[kept] = OwnedMessage::new(
            Some(serde_json::to_vec(&row).unwrap()),
            old.key().map(<[u8]>::to_vec),
            old.topic().to_owned(),
            old.timestamp(),
            old.partition(),
            old.offset(),
            None,
        );
    };
    add_one(dup_window, dup_color.as_deref());
    add_one(first_start, None);

    let (e2, a2, c2) = (
        testkit::topic("audit-enriched", 3).await,
        testkit::topic("audit-alerts", 3).await,
        testkit::topic("audit-counts", 3).await,
    );
    copy(&e2, &enriched).await;
    copy(&a2, &alerts).await;
    copy(&c2, &counts).await;

    let out = audit(p, &e2, &a2, &c2, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let counts_of = |stage: &Value| -> Vec<u64> {
        ["expected", "found", "missing", "duplicated", "extra_copies", "different", "unexpected", "invalid"]
            .iter()
            .map(|k| stage[k].as_u64().unwrap())
            .collect()
    };
    let (n, a, w) = (EVENTS as u64, r.alerts as u64, r.windows as u64);
    assert_eq!(v["stages"][0]["stage"], "enriched");
    assert_eq!(counts_of(&v["stages"][0]), [n, n - 1, 1, 0, 0, 0, 0, 0], "{v}");
    assert_eq!(counts_of(&v["stages"][1]), [a, a + 1, 0, 1, 1, 0, 0, 0], "{v}");
    assert_eq!(counts_of(&v["stages"][2]), [w, w, 0, 0, 0, 1, 0, 0], "{v}");
    assert_eq!(v["differences"].as_u64(), Some(3), "{v}");

    // The examples name the faults.
    let tampered_id = pipeline_core::schema::event_time::format(&first_start);
    let example = |i: usize| v["stages"][i]["examples"][0].clone();
    let missing = example(0);
    assert_eq!(missing["kind"], "missing");
    let id = |m: &OwnedMessage| serde_json::from_slice::<Value>(m.payload().unwrap()).unwrap()["event_id"].clone();
    assert_eq!(missing["event_id"], id(&dropped), "{v}");
    assert_eq!((example(1)["kind"].clone(), example(1)["event_id"].clone()), ("duplicated".into(), id(&dup)), "{v}");
    assert_eq!(
        (example(2)["kind"].as_str(), example(2)["window_start"].as_str()),
        (Some("different"), Some(tampered_id.as_str()))
    );

    // The same as text: the table and the verdict.
    let out = audit(p, &e2, &a2, &c2, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        rows(&out),
        [
            ("enriched".to_owned(), vec![n, n - 1, 1, 0, 0, 0, 0]),
            ("alerts".to_owned(), vec![a, a + 1, 0, 1, 0, 0, 0]),
            ("windows".to_owned(), vec![w, w, 0, 0, 1, 0, 0]),
        ],
        "{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().last().unwrap().starts_with("audit: 3 difference(s) ("), "{stdout}");
    assert!(
        stdout.contains(&format!("windows count the alerts as {a2} holds them: 1 extra copies included")),
        "{stdout}"
    );
}

#[tokio::test]
async fn audit_that_cannot_run_says_why_and_exits_2() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(1, 5).await;
    let missing = testkit::unique("audit-missing");
    let out = audit(&p, &missing, &p.alerts, &p.counts, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap();
    assert!(line.starts_with(&format!("ops: error: topic `{missing}` does not exist at ")), "{err}");
    assert!(out.stdout.is_empty());

    let out = Command::new(BIN)
        .args(["audit", "--bootstrap-servers", "127.0.0.1:1", "--connect-timeout", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().last().unwrap().starts_with("ops: error: cannot reach Kafka at 127.0.0.1:1"), "{err}");
}
