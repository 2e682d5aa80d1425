//! The four services end to end on the real local stack, each test on its own bucket and
//! topics: exact outputs, poison input, clean restarts, and the seed's boundary cases.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use e2e::check::*;
use e2e::{Pipeline, produce_raw, read_all, wait_for_count};
use pipeline_core::rules::{AlertRules, expected_gear};
use pipeline_core::schema::{EnrichedEvent, JsonEvent, SensorEvent};
use pipeline_kafka::runtime::dlq_headers;
use pipeline_s3::dims::write_tables;
use rdkafka::Message;
use rdkafka::message::Headers;
use serde_json::{Value, json};
use uuid::Uuid;

/// A kind of poison record: the reason expected in its dead letter and how to make the i-th.
type PoisonKind = (&'static str, Box<dyn Fn(usize) -> Vec<u8>>);

#[tokio::test]
async fn ten_thousand_events_flow_exactly() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    const N: usize = 10_000;
    let p = Pipeline::new(3, 101).await;
    let services = vec![p.enricher(&[]), p.detector(&[]), p.counter(&[])];
    let started = Instant::now();
    // 10 000 events 300 ms apart span 50 minutes: four 15-minute windows.
    p.generate(&["--seed", "7", "--count", "10000", "--start-time", "2026-04-01T08:00:00Z", "--time-step", "300ms"]);
    let events = regenerate(&p, 7, N, 300).await;
    let (alerts, windows) = assert_exact(&p, &events).await;
    eprintln!("{N} events, {alerts} alerts, {windows} windows, all exact, in {:.1} s", started.elapsed().as_secs_f64());

    // A sample alert carries its reasons.
    let alert = read_all(&p.alerts).await.into_iter().next().expect("some alert");
    let v: Value = serde_json::from_slice(alert.payload().unwrap()).unwrap();
    let e = EnrichedEvent::decode(alert.payload().unwrap(), LIMIT).unwrap().into_owned();
    let reasons: Vec<&str> = AlertRules::default().check_event(&e).names().collect();
    assert_eq!(v["alert_reasons"], json!(reasons));
    stop_all(services);
}

#[tokio::test]
async fn poison_records_are_dead_lettered_and_good_ones_flow() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 202).await;
    let services = vec![p.enricher(&["--max-record-bytes", "4096"]), p.detector(&[]), p.counter(&[])];
    let good = regenerate(&p, 3, 2_000, 1000).await;
    let car = p.dims.cars[0].car_id;
    let valid = move |speed: &str| {
        format!(
            r#"{{"event_id":"{}","event_time":"2026-04-01T08:00:00Z","car_id":{car},"speed":{speed},"rpm":900,"gear":1}}"#,
            Uuid::new_v4()
        )
    };
    let kinds: Vec<PoisonKind> = vec![
        ("not UTF-8", Box::new(|i| [&[0xff, 0xfe][..], &i.to_be_bytes()].concat())),
        ("not valid JSON", Box::new(|i| format!("{{not json {i}").into_bytes())),
        (
            "missing field `speed`",
            Box::new(move |i| {
                format!(
                    r#"{{"event_id":"{}","event_time":"2026-04-01T08:00:00Z","car_id":{i},"rpm":1,"gear":1}}"#,
                    Uuid::new_v4()
                )
                .into_bytes()
            }),
        ),
        ("invalid type", Box::new(move |_| valid("\"fast\"").into_bytes())),
        ("out of range", Box::new(move |_| valid("1e999").into_bytes())),
        ("exceeds the 4096-byte limit", Box::new(|_| vec![b' '; 5000])),
    ];
    // Good and bad interleaved: 2 000 good events, 100 of each bad kind.
    let mut records = Vec::new();
    let mut bad: HashMap<Vec<u8>, &str> = HashMap::new();
    for (i, e) in good.iter().enumerate() {
        records.push((Some(e.car_id.to_string().into_bytes()), e.encode()));
        if i % 20 == 0 {
            for (reason, make) in &kinds {
                let mut payload = make(i);
                if *reason == "exceeds the 4096-byte limit" {
                    payload[..8].copy_from_slice(format!("{:08}", i).as_bytes());
                }
                bad.insert(payload.clone(), reason);
                records.push((Some(b"poison".to_vec()), payload));
            }
        }
    }
    assert_eq!(bad.len(), 600);
    produce_raw(&p.sensors, &records).await;

    assert_exact(&p, &good).await;
    let dlq = &p.dlq[&p.sensors];
    wait_for_count(dlq, 600, Duration::from_secs(60)).await;
    let letters = read_all(dlq).await;
    assert_eq!(letters.len(), 600, "each poison record dead-lettered once");
    let mut seen_offsets = HashSet::new();
    for m in &letters {
        let payload = m.payload().unwrap_or_default().to_vec();
        let reason = bad.get(&payload).unwrap_or_else(|| panic!("unexpected dead letter {payload:?}"));
        let headers: HashMap<&str, String> = m
            .headers()
            .unwrap()
            .iter()
            .map(|h| (h.key, String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
            .collect();
        assert!(headers[dlq_headers::ERROR].contains(reason), "{reason}: {}", headers[dlq_headers::ERROR]);
        assert_eq!(headers[dlq_headers::SOURCE_TOPIC], p.sensors);
        assert_eq!(headers[dlq_headers::SERVICE], "enricher");
        let source = (headers[dlq_headers::SOURCE_PARTITION].clone(), headers[dlq_headers::SOURCE_OFFSET].clone());
        assert!(seen_offsets.insert(source));
        assert_eq!(m.key(), Some(&b"poison"[..]));
    }
    let mut services = services;
    for s in &mut services {
        assert!(s.is_running(), "{} exited on poison input", s.name);
    }
    stop_all(services);
}

#[tokio::test]
async fn sigterm_and_restart_lose_nothing() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    const N: usize = 12_000;
    let p = Pipeline::new(3, 303).await;
    let (mut enricher, mut detector, mut counter) = (p.enricher(&[]), p.detector(&[]), p.counter(&[]));
    // Produce at a bounded rate in the background so the restarts happen mid-stream.
    let generator = std::process::Command::new(e2e::bin("generator"))
        .args(["run", "--s3-bucket", &p.s3.s3_bucket, "--dims-prefix", &p.s3.dims_prefix])
        .args(["--topic", &p.sensors, "--rate", "1500", "--seed", "9"])
        .args(["--count", "12000", "--start-time", "2026-04-01T08:00:00Z", "--time-step", "250ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Stop each service with SIGTERM (it drains and commits), then start a new one.
        for which in 0..3 {
            let slot = match which {
                0 => &mut enricher,
                1 => &mut detector,
                _ => &mut counter,
            };
            let out = slot.stop();
            assert!(out.status.success(), "round {round}: {} exit {:?}", slot.name, out.status);
            *slot = match which {
                0 => p.enricher(&[]),
                1 => p.detector(&[]),
                _ => p.counter(&[]),
            };
        }
    }
    let out = tokio::task::spawn_blocking(move || generator.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "generator: {}", String::from_utf8_lossy(&out.stderr));
    let events = regenerate(&p, 9, N, 250).await;
    assert_exact(&p, &events).await;
    stop_all(vec![enricher, detector, counter]);
}

#[tokio::test]
async fn boundary_events_match_the_seed() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(1, 404).await;
    let services = vec![p.enricher(&[]), p.detector(&[]), p.counter(&[])];
    let car = p.dims.cars[0].car_id;
    let t = |h: u32, m: u32, s: u32, ms: i64| {
        Utc.with_ymd_and_hms(2026, 4, 1, h, m, s).unwrap() + chrono::Duration::milliseconds(ms)
    };
    let ev = |at, car_id, speed: f64, rpm, gear| SensorEvent {
        event_id: Uuid::new_v4(),
        event_time: at,
        car_id,
        speed,
        rpm,
        gear,
    };
    let events = vec![
        ev(t(9, 0, 0, 0), car, 120.0, 3000, 5),    // speed exactly 120, in gear: no alert
        ev(t(9, 0, 1, 0), car, 120.01, 3000, 5),   // just over: alert (speed)
        ev(t(9, 5, 0, 0), car, 50.0, 6000, 2),     // rpm exactly 6000: no alert
        ev(t(9, 5, 1, 0), car, 50.0, 6001, 2),     // rpm 6001: alert
        ev(t(9, 14, 59, 999), car, 29.99, 800, 1), // last instant of 09:00-09:15, in gear
        ev(t(9, 14, 59, 999), car, 30.0, 800, 1),  // 30 wants gear 2: alert (gear), window 09:00
        ev(t(9, 15, 0, 0), car, 179.99, 6500, 6),  // first instant of 09:15-09:30: alert
        ev(t(9, 30, 0, 0), car, 180.0, 900, 6),    // 180 wants gear 7: alert (speed, gear)
        ev(t(9, 30, 0, 0), 1, 10.0, 900, 1),       // unknown car: flows on with nulls
        ev(t(9, 31, 0, 0), 2, 10.0, 6100, 1),      // unknown car alert: counted, no color
        ev(t(8, 59, 59, 999), car, -0.5, 700, 0),  // negative speed: expected gear 0
    ];
    let records: Vec<_> = events.iter().map(|e| (Some(e.car_id.to_string().into_bytes()), e.encode())).collect();
    produce_raw(&p.sensors, &records).await;
    assert_exact(&p, &events).await;

    let enriched = exactly_once::<EnrichedEvent<'static>>(&p.enriched, |e| e.event_id).await;
    let unknown = &enriched[&events[8].event_id];
    assert_eq!((unknown.driver_id, unknown.brand_name.as_deref(), unknown.color_name.as_deref()), (None, None, None));
    assert_eq!(enriched[&events[10].event_id].expected_gear, expected_gear(-0.5));
    assert_eq!(enriched[&events[10].event_id].expected_gear, 0);
    let alerts = exactly_once::<EnrichedEvent<'static>>(&p.alerts, |e| e.event_id).await;
    let alert_ids: HashSet<Uuid> = alerts.keys().copied().collect();
    let want: HashSet<Uuid> = [1, 3, 5, 6, 7, 9].iter().map(|&i| events[i].event_id).collect();
    assert_eq!(alert_ids, want);
    let counts = latest_counts(&p.counts).await;
    let rows: Vec<(&str, u64)> = counts.iter().map(|(k, v)| (k.as_str(), v["num_of_rows"].as_u64().unwrap())).collect();
    assert_eq!(
        rows,
        vec![("2026-04-01T09:00:00.000Z", 3), ("2026-04-01T09:15:00.000Z", 1), ("2026-04-01T09:30:00.000Z", 2)]
    );
    stop_all(services);
}

#[tokio::test]
async fn late_alerts_go_to_the_late_topic() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(1, 505).await;
    // No watermark delay: an alert behind the newest window's start is late.
    let counter = p.counter(&["--watermark-delay", "0s"]);
    let car = p.dims.cars[0].car_id;
    let join = p.join();
    let alert = |h, m| {
        let at = Utc.with_ymd_and_hms(2026, 4, 1, h, m, 0).unwrap();
        join.enrich(SensorEvent {
            event_id: Uuid::new_v4(),
            event_time: at,
            car_id: car,
            speed: 150.0,
            rpm: 3000,
            gear: 5,
        })
        .0
    };
    let (a, b, late) = (alert(10, 5), alert(10, 20), alert(10, 10));
    let records: Vec<_> = [&a, &b, &late].iter().map(|e| (Some(b"k".to_vec()), e.encode())).collect();
    produce_raw(&p.alerts, &records).await;
    wait_for_count(&p.late, 1, Duration::from_secs(60)).await;
    let late_records = read_all(&p.late).await;
    assert_eq!(late_records.len(), 1);
    assert_eq!(EnrichedEvent::decode(late_records[0].payload().unwrap(), LIMIT).unwrap(), late);
    await_counts(&p.counts, &expected_windows(&[&a, &b])).await;
    stop_all(vec![counter]);
}

#[tokio::test]
async fn the_enricher_waits_for_its_tables_and_picks_up_new_ones() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let (s3, store) = pipeline_testkit::bucket("late-dims").await;
    let topic_in = pipeline_testkit::topic("in", 1).await;
    let topic_out = pipeline_testkit::topic("out", 1).await;
    // The enricher checks its dead-letter topic at start, like its output.
    let dlq = format!("{topic_in}.dlq");
    pipeline_kafka::client::create_topics(&pipeline_testkit::kafka(), &[&dlq], 1, 1).await.unwrap();
    let group = pipeline_testkit::unique("enricher");
    let enricher = std::process::Command::new(e2e::bin("enricher"))
        .args(["--s3-bucket", &s3.s3_bucket, "--dims-prefix", &s3.dims_prefix])
        .args(["--input-topic", &topic_in, "--output-topic", &topic_out])
        .args(["--group-id", &group, "--dims-poll", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let enricher = e2e::Service::from_child(enricher, "enricher");

    // No tables yet: the enricher waits (with a log line) instead of exiting.
    let mut tables = pipeline_core::join::DimTables::seed(5, 77);
    let car = tables.cars[0].clone();
    let ev = |speed: f64| SensorEvent {
        event_id: Uuid::new_v4(),
        event_time: start(),
        car_id: car.car_id,
        speed,
        rpm: 900,
        gear: 1,
    };
    let first = ev(10.0);
    produce_raw(&topic_in, &[(None, first.encode())]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    write_tables(&store, &s3.dims_prefix, &tables).await.unwrap();
    wait_for_count(&topic_out, 1, Duration::from_secs(60)).await;
    let color = |t: &pipeline_core::join::DimTables, id: i32| {
        t.colors.iter().find(|c| c.color_id == id).unwrap().color_name.clone()
    };
    let got = exactly_once::<EnrichedEvent<'static>>(&topic_out, |e| e.event_id).await;
    assert_eq!(got[&first.event_id].color_name.as_deref(), Some(color(&tables, car.color_id).as_str()));

    // Repaint the car: after a refresh, new events carry the new color.
    let new_color = if car.color_id == 4 { 1 } else { 4 };
    tables.cars[0].color_id = new_color;
    write_tables(&store, &s3.dims_prefix, &tables).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = ev(20.0);
    produce_raw(&topic_in, &[(None, second.encode())]).await;
    wait_for_count(&topic_out, 2, Duration::from_secs(60)).await;
    let got = exactly_once::<EnrichedEvent<'static>>(&topic_out, |e| e.event_id).await;
    assert_eq!(got[&second.event_id].color_name.as_deref(), Some(color(&tables, new_color).as_str()));

    let out = enricher.terminate();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("dimension tables not available yet") && log.contains("run `generator dims` first"), "{log}");
    assert!(log.contains("dimension tables reloaded"), "{log}");
}

#[test]
fn services_fail_fast_with_one_line() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let missing = pipeline_testkit::unique("missing");
    for (name, args) in
        [("detector", vec!["--input-topic", missing.as_str()]), ("counter", vec!["--input-topic", missing.as_str()])]
    {
        let out = std::process::Command::new(e2e::bin(name)).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().last().unwrap();
        assert!(
            line.starts_with(&format!("{name}: error: "))
                && line.contains(&format!("topic `{missing}` does not exist")),
            "{line}"
        );
    }
    let out = std::process::Command::new(e2e::bin("detector"))
        .args(["--bootstrap-servers", "127.0.0.1:9", "--connect-timeout", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().last().unwrap().contains("cannot reach Kafka at 127.0.0.1:9 within 2s"), "{err}");
    // A zero interval is refused by the flag's parser (a usage error: exit 2), naming the flag.
    let out = std::process::Command::new(e2e::bin("counter")).args(["--window", "0s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value '0s' for '--window <WINDOW>': must be longer than zero"), "{err}");
}

#[tokio::test]
async fn a_second_instance_joining_and_leaving_loses_nothing() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    const N: usize = 12_000;
    let p = Pipeline::new(3, 606).await;
    let first = p.enricher(&[]);
    let generator = std::process::Command::new(e2e::bin("generator"))
        .args(["run", "--s3-bucket", &p.s3.s3_bucket, "--dims-prefix", &p.s3.dims_prefix])
        .args(["--topic", &p.sensors, "--rate", "2000", "--seed", "4", "--count", "12000"])
        .args(["--start-time", "2026-04-01T08:00:00Z", "--time-step", "100ms"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A second instance joins the group mid-stream (partitions are split), then is killed
    // without any chance to commit (its partitions go back to the first after the session
    // timeout): at-least-once means every event still arrives; duplicates are allowed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = p.enricher(&[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    second.kill();
    let out = tokio::task::spawn_blocking(move || generator.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "generator: {}", String::from_utf8_lossy(&out.stderr));

    let events = regenerate(&p, 4, N, 100).await;
    let join = p.join();
    let expected: HashMap<Uuid, EnrichedEvent<'static>> =
        events.iter().map(|e| (e.event_id, join.enrich(e.clone()).0.into_owned())).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (got, records) = loop {
        let records = read_all(&p.enriched).await;
        let mut got: HashMap<Uuid, EnrichedEvent<'static>> = HashMap::new();
        for m in &records {
            let e = EnrichedEvent::decode(m.payload().unwrap(), LIMIT).unwrap().into_owned();
            if let Some(previous) = got.insert(e.event_id, e.clone()) {
                assert_eq!(previous, e, "a duplicate is the same event");
            }
        }
        if got.len() == N || Instant::now() > deadline {
            break (got, records.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(got, expected, "every event enriched, none lost");
    eprintln!("rebalance with a killed member: {} records for {N} events ({} duplicates)", records, records - N);
    stop_all(vec![first]);
}

#[tokio::test]
async fn metrics_and_health_endpoints_report_exact_counts() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    const N: usize = 300;
    let p = Pipeline::new(3, 707).await;
    let (ep, dp) = (free_port(), free_port());
    let (e_addr, d_addr) = (format!("127.0.0.1:{ep}"), format!("127.0.0.1:{dp}"));
    let services = vec![p.enricher(&["--metrics-addr", &e_addr]), p.detector(&["--metrics-addr", &d_addr])];
    let events = regenerate(&p, 12, N, 1000).await;
    let records: Vec<_> = events.iter().map(|e| (Some(e.car_id.to_string().into_bytes()), e.encode())).collect();
    let mut poison = records.clone();
    poison.push((None, b"not json".to_vec()));
    produce_raw(&p.sensors, &poison).await;
    let join = p.join();
    let alerts =
        events.iter().filter(|e| !AlertRules::default().check_event(&join.enrich((*e).clone()).0).is_empty()).count();
    wait_for_count(&p.alerts, alerts as i64, Duration::from_secs(60)).await;

    // The counters are exact; wait for the last acknowledgements to be counted.
    let want = [
        (e_addr.as_str(), format!("pipeline_records_consumed_total{{service=\"enricher\"}} {}", N + 1)),
        (e_addr.as_str(), format!("pipeline_records_produced_total{{service=\"enricher\"}} {N}")),
        (e_addr.as_str(), "pipeline_records_dead_lettered_total{service=\"enricher\"} 1".to_owned()),
        (e_addr.as_str(), "pipeline_dims_rows{table=\"cars\"} 20".to_owned()),
        (d_addr.as_str(), format!("pipeline_records_consumed_total{{service=\"detector\"}} {N}")),
        (d_addr.as_str(), format!("pipeline_records_produced_total{{service=\"detector\"}} {alerts}")),
        (d_addr.as_str(), format!("pipeline_processing_seconds_count{{service=\"detector\"}} {N}")),
        (
            d_addr.as_str(),
            format!("pipeline_consumer_lag{{service=\"detector\",topic=\"{}\",partition=\"2\"}} 0", p.enriched),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    for (addr, line) in &want {
        loop {
            let (code, body) = http_get(&format!("http://{addr}/metrics"));
            if code == 200 && body.lines().any(|l| l == line) {
                break;
            }
            assert!(Instant::now() < deadline, "{addr}/metrics lacks `{line}`:\n{body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(http_get(&format!("http://{e_addr}/healthz")), (200, "ok\n".to_owned()));
    assert_eq!(
        http_get(&format!("http://{e_addr}/readyz")),
        (200, "broker ok\ndims_loaded ok\npartitions_assigned ok\n".to_owned())
    );
    assert_eq!(
        http_get(&format!("http://{d_addr}/readyz")),
        (200, "broker ok\npartitions_assigned ok\nrules_loaded ok\n".to_owned())
    );
    stop_all(services);
}

#[tokio::test]
async fn json_logs_never_show_a_kafka_password() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(1, 808).await;
    let enricher = p.enricher(&["-X", "sasl.password=hunter2-do-not-log", "--log-format", "json"]);
    let events = regenerate(&p, 5, 20, 1000).await;
    let records: Vec<_> = events.iter().map(|e| (None, e.encode())).collect();
    produce_raw(&p.sensors, &records).await;
    wait_for_count(&p.enriched, 20, Duration::from_secs(60)).await;
    let out = enricher.terminate();
    assert!(out.status.success());
    let log = std::fs::read_to_string(p.log_path("enricher")).unwrap();
    assert!(log.lines().count() >= 3, "{log}");
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(!log.contains("hunter2"), "the password leaked into the log");
}
