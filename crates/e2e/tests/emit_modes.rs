//! The counter's emit modes on the real stack: each mode with an idle partition and late
//! alerts, checked row by row (revision, `final`, counts, late alerts) in the counts topic.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use e2e::check::stop_all;
use e2e::{Pipeline, produce_to_partition, read_all};
use pipeline_core::schema::{JsonEvent, SensorEvent};
use rdkafka::Message;
use serde_json::Value;
use uuid::Uuid;

/// An alert (speed 150) at 2026-04-01 `h:m`, encoded as the detector writes it.
fn alert(p: &Pipeline, h: u32, m: u32) -> Vec<u8> {
    let at = Utc.with_ymd_and_hms(2026, 4, 1, h, m, 0).unwrap();
    let car_id = p.dims.cars[0].car_id;
    let e = SensorEvent { event_id: Uuid::new_v4(), event_time: at, car_id, speed: 150.0, rpm: 3000, gear: 5 };
    p.join().enrich(e).0.encode()
}

/// Per key (`HH:MM/partition`), the rows published, in order: `r<revision> final|open n=<rows>
/// late=<late_alerts> wm=<HH:MM>`.
async fn published(p: &Pipeline) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut records = read_all(&p.counts).await;
    records.sort_by_key(|m| (m.partition(), m.offset()));
    for m in records {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let key = format!("{}/{}", &v["window_start"].as_str().unwrap()[11..16], v["partition"]);
        let row = format!(
            "r{} {} n={} late={} wm={}",
            v["revision"],
            if v["final"].as_bool().unwrap() { "final" } else { "open" },
            v["num_of_rows"],
            v["late_alerts"],
            &v["watermark"].as_str().unwrap()[11..16]
        );
        out.entry(key).or_default().push(row);
    }
    out
}

/// Waits until the counts topic holds `n` rows.
async fn await_rows(p: &Pipeline, n: usize) -> BTreeMap<String, Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = published(p).await;
        if got.values().map(Vec::len).sum::<usize>() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "never {n} rows: {got:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs one mode through: partition 0 and 1 count in 10:00; partition 0 jumps to 10:50 (its
/// watermark, 30 min behind, closes its 10:00 share) while partition 1 is idle (a tick closes its
/// share by partition 0's progress); then one late alert per partition for 10:00.
async fn run(mode: &str, seed: u64, rows_before_late: usize) -> BTreeMap<String, Vec<String>> {
    let p = Pipeline::new(2, seed).await;
    let counter =
        p.counter(&["--emit", mode, "--watermark-delay", "30m", "--idle-timeout", "3s", "--checkpoint-interval", "0s"]);
    p.await_log("counter", "partitions assigned", 1);
    produce_to_partition(&p.alerts, 0, &[alert(&p, 10, 1)]).await;
    produce_to_partition(&p.alerts, 1, &[alert(&p, 10, 2)]).await;
    if mode != "final" {
        await_rows(&p, 2).await;
    }
    // Partition 1 goes quiet for longer than the idle timeout; partition 0 moves on.
    tokio::time::sleep(Duration::from_secs(4)).await;
    produce_to_partition(&p.alerts, 0, &[alert(&p, 10, 50)]).await;
    await_rows(&p, rows_before_late).await;
    produce_to_partition(&p.alerts, 0, &[alert(&p, 10, 5)]).await;
    produce_to_partition(&p.alerts, 1, &[alert(&p, 10, 6)]).await;
    let got = await_rows(&p, rows_before_late + 2).await;
    stop_all(vec![counter]);
    assert_eq!(read_all(&p.late).await.len(), 2, "{mode}: both late alerts in the late topic");
    assert_eq!(published(&p).await, got, "{mode}: nothing more at shutdown");
    got
}

fn want(rows: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    rows.iter().map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect())).collect()
}

#[tokio::test]
async fn complete_and_updates_publish_changes_finals_and_corrections() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    for (mode, seed) in [("complete", 1301), ("updates", 1302)] {
        let got = run(mode, seed, 5).await;
        let expected = want(&[
            (
                "10:00/0",
                &["r1 open n=1 late=0 wm=09:31", "r2 final n=1 late=0 wm=10:20", "r3 final n=1 late=1 wm=10:20"],
            ),
            (
                "10:00/1",
                &["r1 open n=1 late=0 wm=09:32", "r2 final n=1 late=0 wm=10:20", "r3 final n=1 late=1 wm=10:20"],
            ),
            ("10:45/0", &["r1 open n=1 late=0 wm=10:20"]),
        ]);
        assert_eq!(got, expected, "{mode}");
    }
}

#[tokio::test]
async fn final_publishes_each_window_once_then_corrections() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let got = run("final", 1303, 2).await;
    let expected = want(&[
        ("10:00/0", &["r1 final n=1 late=0 wm=10:20", "r2 final n=1 late=1 wm=10:20"]),
        ("10:00/1", &["r1 final n=1 late=0 wm=10:20", "r2 final n=1 late=1 wm=10:20"]),
    ]);
    assert_eq!(got, expected);
}
