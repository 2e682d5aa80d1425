//! Versioned dimension tables on the real local stack: the enricher notices a change of the
//! tables in S3 by polling their listing, swaps the new version in without a restart and stamps
//! every record with the `dims.version` it was joined with; a table that disappears leaves the
//! old version in use, `/readyz` degraded (still 200), until it comes back.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::check::{LIMIT, http_get, start};
use e2e::{Pipeline, Service, produce_raw, read_all, wait_for_count};
use pipeline_core::join::{Car, CarColor, DimTables};
use pipeline_core::schema::{EnrichedEvent, JsonEvent, SensorEvent};
use pipeline_s3::dims::{table_dir, write_table};
use pipeline_s3::dims_watch::{self, DimsVersion, HEADER};
use pipeline_testkit::free_port;
use rdkafka::Message;
use rdkafka::message::Headers;
use uuid::Uuid;

/// The poll interval the tests run the enricher with.
const POLL: &str = "500ms";

/// An enricher polling every [`POLL`], with its metrics address.
fn enricher(p: &Pipeline) -> (Service, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    (p.enricher(&["--dims-poll", POLL, "--metrics-addr", &addr]), addr)
}

/// The version the tables of `p` have right now, computed the way the enricher does.
async fn version_now(p: &Pipeline) -> DimsVersion {
    dims_watch::list(&p.store, &p.s3.dims_prefix).await.unwrap().version()
}

/// Waits (up to 60 s) until `GET url` answers with a body for which `ok` holds; returns it.
async fn await_http(url: &str, what: &str, ok: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = http_get(url);
        if ok(code, &body) {
            return (code, body);
        }
        assert!(Instant::now() < deadline, "{url} never showed {what}: {code}\n{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the enricher's `/metrics` has the line `line`.
async fn await_metric(addr: &str, line: &str) {
    await_http(&format!("http://{addr}/metrics"), line, |code, body| code == 200 && body.lines().any(|l| l == line))
        .await;
}

/// `n` events of `car_id` (known or not), one partition's worth.
fn events(car_id: i64, n: usize) -> Vec<SensorEvent> {
    (0..n)
        .map(|i| SensorEvent {
            event_id: Uuid::new_v4(),
            event_time: start() + chrono::Duration::seconds(i as i64),
            car_id,
            speed: 40.0 + i as f64,
            rpm: 2000,
            gear: 2,
        })
        .collect()
}

async fn produce(p: &Pipeline, events: &[SensorEvent]) {
    let records: Vec<_> = events.iter().map(|e| (Some(e.car_id.to_string().into_bytes()), e.encode())).collect();
    produce_raw(&p.sensors, &records).await;
}

/// Every enriched record so far, in offset order (one partition): (event, its `dims.version`).
async fn enriched(p: &Pipeline, n: usize) -> Vec<(EnrichedEvent<'static>, String)> {
    wait_for_count(&p.enriched, n as i64, Duration::from_secs(60)).await;
    let records = read_all(&p.enriched).await;
    assert_eq!(records.len(), n, "each event enriched once");
    records
        .iter()
        .map(|m| {
            let event = EnrichedEvent::decode(m.payload().unwrap(), LIMIT).unwrap().into_owned();
            let headers = m.headers().expect("enriched records have headers");
            let versions: Vec<String> = headers
                .iter()
                .filter(|h| h.key == HEADER)
                .map(|h| String::from_utf8(h.value.unwrap().to_vec()).unwrap())
                .collect();
            assert_eq!(versions.len(), 1, "one {HEADER} header per record");
            (event, versions.into_iter().next().unwrap())
        })
        .collect()
}

/// Asserts every event of `sent` came out joined with `tables` and stamped `version`.
fn assert_joined(
    got: &HashMap<Uuid, (EnrichedEvent<'static>, String)>,
    sent: &[SensorEvent],
    tables: &DimTables,
    version: &DimsVersion,
) {
    let join = pipeline_core::join::JoinIndex::new(tables);
    for e in sent {
        let (event, v) = &got[&e.event_id];
        assert_eq!(v, version.as_str(), "{} stamped with the wrong version", e.event_id);
        assert_eq!(event, &join.enrich(e.clone()).0.into_owned(), "joined with version {version}");
    }
}

fn by_id(records: Vec<(EnrichedEvent<'static>, String)>) -> HashMap<Uuid, (EnrichedEvent<'static>, String)> {
    records.into_iter().map(|(e, v)| (e.event_id, (e, v))).collect()
}

#[tokio::test]
async fn a_dims_change_mid_stream_is_joined_and_stamped_without_a_restart() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(1, 911).await;
    let (service, addr) = enricher(&p);
    let v1 = version_now(&p).await;
    let car = p.dims.cars[0].clone();
    let before = events(car.car_id, 30);
    produce(&p, &before).await;
    let got = by_id(enriched(&p, before.len()).await);
    assert_joined(&got, &before, &p.dims, &v1);
    await_metric(&addr, &format!("pipeline_dims_version{{version=\"{v1}\"}} 1")).await;

    // Repaint the car and move it to another model: only `cars` is rewritten (a new part,
    // then the old one deleted), so a new version appears while the stream goes on.
    let mut tables = p.dims.clone();
    tables.cars[0].color_id = if car.color_id == 4 { 1 } else { 4 };
    tables.cars[0].model_id = if car.model_id == 2 { 3 } else { 2 };
    write_table::<Car>(&p.store, &p.s3.dims_prefix, &tables.cars).await.unwrap();
    let v2 = version_now(&p).await;
    assert_ne!(v1, v2);
    // Events keep flowing while the enricher notices (they carry one version or the other).
    let during = events(car.car_id, 20);
    produce(&p, &during).await;
    await_metric(&addr, &format!("pipeline_dims_version{{version=\"{v2}\"}} 1")).await;
    await_metric(&addr, &format!("pipeline_dims_version{{version=\"{v1}\"}} 0")).await;

    // Everything produced now is joined with the new tables, no restart in between.
    let unknown = events(-42, 5);
    let after = events(car.car_id, 30);
    produce(&p, &[&after[..15], &unknown[..], &after[15..]].concat()).await;
    let total = before.len() + during.len() + after.len() + unknown.len();
    let records = enriched(&p, total).await;
    // One partition, in offset order: once a record carries v2, none after it carries v1.
    let first_v2 = records.iter().position(|(_, v)| v == v2.as_str()).unwrap();
    assert!(records[first_v2..].iter().all(|(_, v)| v == v2.as_str()), "a version never goes back");
    let got = by_id(records);
    assert_joined(&got, &before, &p.dims, &v1);
    assert_joined(&got, &after, &tables, &v2);
    assert_joined(&got, &unknown, &tables, &v2);
    for e in &during {
        let (event, v) = &got[&e.event_id];
        if v == v1.as_str() {
            assert_eq!(event, &pipeline_core::join::JoinIndex::new(&p.dims).enrich(e.clone()).0.into_owned());
        } else if v == v2.as_str() {
            assert_eq!(event, &pipeline_core::join::JoinIndex::new(&tables).enrich(e.clone()).0.into_owned());
        }
    }
    let new_color = tables.colors.iter().find(|c| c.color_id == tables.cars[0].color_id).unwrap();
    assert_eq!(got[&after[0].event_id].0.color_name.as_deref(), Some(new_color.color_name.as_str()));
    await_metric(&addr, "pipeline_unknown_car_events_total 5").await;
    await_metric(&addr, "pipeline_dims_rows{table=\"cars\"} 20").await;
    let (_, metrics) = http_get(&format!("http://{addr}/metrics"));
    assert!(metrics.lines().any(|l| l.starts_with("pipeline_dims_load_seconds_count ")), "{metrics}");

    let out = service.terminate();
    assert!(out.status.success());
    let log = std::fs::read_to_string(p.log_path("enricher")).unwrap();
    assert!(log.contains("dimension tables reloaded") && log.contains(v2.as_str()), "{log}");
    assert!(!log.contains("degraded"), "a clean change is not a degradation:\n{log}");
}

#[tokio::test]
async fn a_deleted_table_keeps_the_old_version_degraded_until_it_is_restored() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(1, 912).await;
    let (service, addr) = enricher(&p);
    let v1 = version_now(&p).await;
    let car = p.dims.cars[0].clone();
    let first = events(car.car_id, 10);
    produce(&p, &first).await;
    assert_joined(&by_id(enriched(&p, first.len()).await), &first, &p.dims, &v1);
    let readyz = format!("http://{addr}/readyz");
    await_http(&readyz, "ready", |code, body| code == 200 && body.contains("dims_loaded ok")).await;

    // Delete `car_colors` (keeping its bytes to put them back).
    let dir = table_dir::<CarColor>(&p.s3.dims_prefix);
    let keys: Vec<String> = p.store.list(&dir).await.unwrap();
    assert!(!keys.is_empty());
    let mut saved = Vec::new();
    for key in &keys {
        saved.push((key.clone(), p.store.get(key).await.unwrap()));
        p.store.delete(key).await.unwrap();
    }
    let (code, body) =
        await_http(&readyz, "degraded", |code, body| code == 200 && body.contains("dims_loaded degraded: ")).await;
    assert_eq!(code, 200, "degraded is not down");
    assert!(body.contains("table `car_colors` not found"), "{body}");
    assert!(body.contains("broker ok") && body.contains("partitions_assigned ok"), "{body}");
    await_metric(&addr, "pipeline_dims_degraded 1").await;

    // Meanwhile the old version stays in use: same joined values, same header.
    let second = events(car.car_id, 10);
    produce(&p, &second).await;
    assert_joined(&by_id(enriched(&p, first.len() + second.len()).await), &second, &p.dims, &v1);
    // Let more polls find it still missing: each stays silent (counted at the end).
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The same objects come back: the same version, recovered without a reload.
    for (key, bytes) in saved {
        p.store.put(&key, bytes).await.unwrap();
    }
    assert_eq!(version_now(&p).await, v1, "the same objects make the same version");
    await_http(&readyz, "recovered", |code, body| {
        code == 200 && body == "broker ok\ndims_loaded ok\npartitions_assigned ok\n"
    })
    .await;
    await_metric(&addr, "pipeline_dims_degraded 0").await;
    let third = events(car.car_id, 10);
    produce(&p, &third).await;
    assert_joined(&by_id(enriched(&p, first.len() + second.len() + third.len()).await), &third, &p.dims, &v1);
    await_metric(&addr, &format!("pipeline_dims_version{{version=\"{v1}\"}} 1")).await;

    let out = service.terminate();
    assert!(out.status.success());
    let log = std::fs::read_to_string(p.log_path("enricher")).unwrap();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("dimension tables degraded"), 1, "one line when it breaks:\n{log}");
    assert_eq!(count("dimension tables readable again"), 1, "one line when it recovers:\n{log}");
    assert_eq!(count("dimension tables reloaded"), 0, "the same version is not read again:\n{log}");
}
