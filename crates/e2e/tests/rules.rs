//! The detector's rules table, live, on the real stack: an operator's per-brand override
//! (`ops rules set`) changes exactly the alerts it should mid-stream with no restart, each alert
//! stamped with the version that judged it and carrying its thresholds; an invalid table keeps
//! the version in use with one line naming the row; `ops audit` stays clean across a change and
//! fails on a doctored alert; `ops what-if` reports exactly the alert and window differences
//! this test computes by hand.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::check::{http_get, regenerate, start, stop_all};
use e2e::{Pipeline, bin, produce_raw};
use pipeline_core::rules::AlertRules;
use pipeline_core::rules::table::Canonical;
use pipeline_core::schema::{EnrichedEvent, JsonEvent, SensorEvent, event_time};
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use serde_json::Value;
use uuid::Uuid;

/// The operator's change: the Kias limited to 60 km/h, their gear not judged.
const KIA_SLOW: &str = r#"{"overrides": [{"brand": "Kia", "max_speed": 60, "gear_rule": false}]}"#;

/// What the test expects a rule set to do to `e`, written out by hand (not the library's
/// lookup): the reasons and the thresholds.
fn judge(e: &EnrichedEvent<'_>, kia_slow: bool) -> (Vec<&'static str>, AlertRules) {
    let kia = e.brand_name.as_deref() == Some("Kia");
    let t = if kia_slow && kia {
        AlertRules { max_speed: 60.0, max_rpm: 6000, gear_rule: false }
    } else {
        AlertRules::default()
    };
    let mut reasons = Vec::new();
    if e.speed > t.max_speed {
        reasons.push("speed");
    }
    if e.rpm > t.max_rpm {
        reasons.push("rpm");
    }
    if t.gear_rule && e.gear != e.expected_gear {
        reasons.push("gear");
    }
    (reasons, t)
}

/// `ops` with the pipeline's S3 locations and broker, then `args`.
fn ops(p: &Pipeline, args: &[&str]) -> Output {
    let (rules, bootstrap) = (p.rules_prefix(), p.kafka.bootstrap_servers.clone());
    let mut cmd = Command::new(bin("ops"));
    cmd.args(args);
    cmd.args(["--s3-bucket", &p.s3.s3_bucket, "--dims-prefix", &p.s3.dims_prefix, "--rules-prefix", &rules]);
    if args[0] != "rules" {
        cmd.args(["--bootstrap-servers", &bootstrap]);
    }
    cmd.output().unwrap()
}

/// Writes `json` to a file of its own; returns the path.
fn rules_file(json: &str) -> String {
    let path = std::env::temp_dir().join(format!("{}.json", pipeline_testkit::unique("rules")));
    std::fs::write(&path, json).unwrap();
    path.display().to_string()
}

/// `ops rules set` of `json`; the version it prints.
fn set_rules(p: &Pipeline, json: &str) -> String {
    let out = ops(p, &["rules", "set", &rules_file(json)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ops rules set: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("rules version ")).unwrap();
    line.split(' ').nth(2).unwrap().to_owned()
}

/// Waits until the detector behind `port` judges by `version`.
fn await_version(port: u16, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = format!("pipeline_rules_version{{version=\"{version}\"}} 1");
    loop {
        let (_, body) = http_get(&format!("http://127.0.0.1:{port}/metrics"));
        if body.lines().any(|l| l == want) {
            return;
        }
        assert!(Instant::now() < deadline, "the detector never took rules {version}:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn produce_sensors(p: &Pipeline, events: &[SensorEvent]) {
    let records: Vec<_> = events.iter().map(|e| (Some(e.car_id.to_string().into_bytes()), e.encode())).collect();
    produce_raw(&p.sensors, &records).await;
}

/// Every alert once, by event id: (reasons, thresholds, rules.version header).
async fn alerts(p: &Pipeline, n: usize) -> HashMap<Uuid, (Vec<String>, AlertRules, String)> {
    pipeline_testkit::wait_for_count(&p.alerts, n as i64, Duration::from_secs(120));
    let mut out = HashMap::new();
    for m in e2e::read_all(&p.alerts).await {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let id: Uuid = v["event_id"].as_str().unwrap().parse().unwrap();
        let reasons = v["alert_reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
        let thresholds: AlertRules = serde_json::from_value(v["thresholds"].clone()).unwrap();
        let version = header(&m, "rules.version");
        assert!(out.insert(id, (reasons, thresholds, version)).is_none(), "alert {id} twice");
    }
    assert_eq!(out.len(), n, "exactly the expected number of alerts");
    out
}

fn header(m: &OwnedMessage, key: &str) -> String {
    let h = m.headers().unwrap();
    let v = h.iter().find(|h| h.key == key).unwrap_or_else(|| panic!("no {key} header"));
    String::from_utf8(v.value.unwrap().to_vec()).unwrap()
}

/// The events of `seed` (at 1 s steps from `offset_s` after [`start`]), enriched by the test's
/// own join.
async fn batch(p: &Pipeline, seed: u64, n: usize, offset_s: i64) -> Vec<SensorEvent> {
    let mut events = regenerate(p, seed, n, 1000).await;
    for e in &mut events {
        e.event_time += chrono::Duration::seconds(offset_s);
    }
    events
}

#[tokio::test]
async fn a_brand_override_changes_exactly_its_alerts_mid_stream_without_a_restart() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 2001).await;
    let join = p.join();
    assert!(
        p.dims.cars.iter().any(|c| p.dims.models[(c.model_id - 1) as usize].car_brand == "Kia"),
        "a Kia in the fleet"
    );
    let port = pipeline_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut detector = p.detector(&["--rules-poll", "200ms", "--metrics-addr", &addr]);
    let enricher = p.enricher(&[]);
    let seed = Canonical::of_base(AlertRules::default()).unwrap().version.to_string();
    await_version(port, &seed);
    let pid = detector.pid();

    let before = batch(&p, 21, 400, 0).await;
    let want_before: HashMap<Uuid, _> = before
        .iter()
        .map(|e| (e.event_id, judge(&join.enrich(e.clone()).0, false)))
        .filter(|(_, (r, _))| !r.is_empty())
        .collect();
    produce_sensors(&p, &before).await;
    alerts(&p, want_before.len()).await;

    let changed = set_rules(&p, KIA_SLOW);
    assert_ne!(changed, seed);
    await_version(port, &changed);
    let after = batch(&p, 22, 400, 400).await;
    let want_after: HashMap<Uuid, _> = after
        .iter()
        .map(|e| (e.event_id, judge(&join.enrich(e.clone()).0, true)))
        .filter(|(_, (r, _))| !r.is_empty())
        .collect();
    // The change must matter both ways: Kias alerting below 120, Kias in the wrong gear not.
    let kia = |e: &SensorEvent| join.enrich(e.clone()).0.brand_name.as_deref() == Some("Kia");
    let (newly, spared) = after.iter().filter(|e| kia(e)).fold((0, 0), |(n, s), e| {
        let enriched = join.enrich(e.clone()).0;
        let (old, new) = (judge(&enriched, false).0.is_empty(), judge(&enriched, true).0.is_empty());
        (n + usize::from(old && !new), s + usize::from(!old && new))
    });
    assert!(newly > 10 && spared > 10, "the override changes alerts: {newly} new, {spared} spared");
    produce_sensors(&p, &after).await;

    let got = alerts(&p, want_before.len() + want_after.len()).await;
    for (wants, version) in [(&want_before, &seed), (&want_after, &changed)] {
        for (id, (reasons, thresholds)) in wants {
            let (got_reasons, got_thresholds, got_version) = &got[id];
            assert_eq!(
                (got_reasons, got_thresholds, got_version),
                (&reasons.iter().map(|r| (*r).to_owned()).collect(), thresholds, version),
                "{id}"
            );
        }
    }
    assert_eq!(
        got.keys().copied().collect::<HashSet<_>>(),
        want_before.keys().chain(want_after.keys()).copied().collect()
    );
    assert!(detector.is_running() && detector.pid() == pid, "no restart");
    stop_all(vec![detector, enricher]);
}

#[tokio::test]
async fn an_invalid_table_keeps_the_version_in_use_with_one_line() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 2002).await;
    let join = p.join();
    let port = pipeline_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let detector = p.detector(&["--rules-poll", "200ms", "--metrics-addr", &addr]);
    let enricher = p.enricher(&[]);
    let good = set_rules(&p, KIA_SLOW);
    await_version(port, &good);

    // Pasted over by hand (ops refuses it): a second row for the same brand.
    let bad = r#"{"overrides": [{"brand": "Kia", "max_speed": 60}, {"brand": "Kia", "max_rpm": 100}]}"#;
    p.store.put(&pipeline_s3::rules_store::current_key(&p.rules_prefix()), bad.as_bytes().to_vec()).await.unwrap();
    let log = p.await_log("detector", "rules degraded", 1);
    let line = log.lines().find(|l| l.contains("rules degraded")).unwrap();
    assert!(
        line.contains(r#"overrides[1] (brand "Kia"): a second row for brand "Kia""#) && line.contains(&good),
        "{line}"
    );
    let (code, body) = http_get(&format!("http://127.0.0.1:{port}/readyz"));
    assert_eq!(code, 200, "degraded, still ready: {body}");
    assert!(body.contains("rules_loaded degraded"), "{body}");

    // Alerts keep flowing, judged by the version in use.
    let events = batch(&p, 23, 200, 0).await;
    let want: HashSet<Uuid> =
        events.iter().filter(|e| !judge(&join.enrich((*e).clone()).0, true).0.is_empty()).map(|e| e.event_id).collect();
    produce_sensors(&p, &events).await;
    let got = alerts(&p, want.len()).await;
    assert_eq!(got.keys().copied().collect::<HashSet<_>>(), want);
    assert!(got.values().all(|(_, _, v)| *v == good), "every alert judged by {good}");
    // Many polls later, still the one line.
    std::thread::sleep(Duration::from_secs(2));
    let log = std::fs::read_to_string(p.log_path("detector")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("rules degraded")).count(), 1, "{log}");

    // The operator's tool says the same of the same file, and writes nothing.
    let out = ops(&p, &["rules", "validate", &rules_file(bad)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(r#"overrides[1] (brand "Kia"): a second row for brand "Kia" (the first is overrides[0])"#),
        "{err}"
    );
    let out = ops(&p, &["rules", "validate", &rules_file(r#"{"overrides": [{"model_id": 99, "max_rpm": 5000}]}"#)]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("overrides[0] (model_id 99): no such model_id in car_models")
    );

    // Fixed: the detector follows and says so once.
    let fixed = set_rules(&p, r#"{"overrides": [{"brand": "Kia", "max_speed": 70}]}"#);
    await_version(port, &fixed);
    p.await_log("detector", "rules readable again", 1);
    stop_all(vec![detector, enricher]);
}

#[tokio::test]
async fn the_audit_holds_across_a_rules_change_and_fails_on_a_doctored_alert() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 2003).await;
    let join = p.join();
    let port = pipeline_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let services =
        vec![p.enricher(&[]), p.detector(&["--rules-poll", "200ms", "--metrics-addr", &addr]), p.counter(&[])];
    let before = batch(&p, 24, 300, 0).await;
    let n_before = before.iter().filter(|e| !judge(&join.enrich((*e).clone()).0, false).0.is_empty()).count();
    produce_sensors(&p, &before).await;
    alerts(&p, n_before).await;
    let changed = set_rules(&p, KIA_SLOW);
    await_version(port, &changed);
    let after = batch(&p, 25, 300, 300).await;
    let n_after = after.iter().filter(|e| !judge(&join.enrich((*e).clone()).0, true).0.is_empty()).count();
    produce_sensors(&p, &after).await;
    let all = alerts(&p, n_before + n_after).await;
    // The counter has counted them all (its windows are compared by the audit).
    let started = Instant::now();
    while e2e::check::latest_counts(&p.counts).await.values().map(|w| w["num_of_rows"].as_u64().unwrap()).sum::<u64>()
        < (n_before + n_after) as u64
    {
        assert!(started.elapsed() < Duration::from_secs(90), "the counter never counted every alert");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop_all(services);

    let audit = |p: &Pipeline| {
        let (sensors, enriched, alerts, counts) = (&p.sensors, &p.enriched, &p.alerts, &p.counts);
        let args = ["audit", "--format", "json", "--input-topic", sensors, "--enriched-topic", enriched];
        let mut args = args.to_vec();
        args.extend(["--alerts-topic", alerts, "--counts-topic", counts]);
        ops(p, &args)
    };
    let out = audit(&p);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "clean across the change: {report:#}");
    assert_eq!(report["stages"][1]["found"], (n_before + n_after) as u64);

    // A Kia at 90 km/h in gear raises an alert only under the new rules: stamped with the old
    // version, the audit calls it unexpected.
    let spared = after
        .iter()
        .map(|e| join.enrich(e.clone()).0)
        .find(|e| judge(e, false).0.is_empty() && !judge(e, true).0.is_empty())
        .expect("an event only the new rules flag");
    let id = spared.event_id;
    let (reasons, thresholds, _) = &all[&id];
    let mut doctored: Value = serde_json::from_slice(&spared.encode()).unwrap();
    doctored["alert_reasons"] = serde_json::json!(reasons);
    doctored["thresholds"] = serde_json::to_value(thresholds).unwrap();
    let seed = Canonical::of_base(AlertRules::default()).unwrap().version.to_string();
    e2e::produce_with_headers(
        &p.alerts,
        &spared.car_id.to_string(),
        &serde_json::to_vec(&doctored).unwrap(),
        &[("rules.version", &seed)],
    )
    .await;
    let out = audit(&p);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["stages"][1]["unexpected"], 1, "{report:#}");
    assert_eq!(
        report["stages"][1]["examples"][0]["detail"],
        format!("rules version {seed} raise no alert for this event")
    );
}

#[tokio::test]
async fn what_if_reports_exactly_the_alert_and_window_differences() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 2004).await;
    let join = p.join();
    // 2400 enriched events 1 s apart (40 minutes: windows 08:00, 08:15, 08:30); the range
    // takes 08:05 to 08:35, cutting the first and last window.
    let events: Vec<EnrichedEvent<'static>> =
        batch(&p, 26, 2400, 0).await.into_iter().map(|e| join.enrich(e).0.into_owned()).collect();
    let records: Vec<_> = events.iter().map(|e| (Some(e.car_id.to_string().into_bytes()), e.encode())).collect();
    produce_raw(&p.enriched, &records).await;
    // Duplicates (at-least-once copies) count once.
    produce_raw(&p.enriched, &records[..100]).await;
    let (from, to) = (start() + chrono::Duration::minutes(5), start() + chrono::Duration::minutes(35));
    let in_range: Vec<&EnrichedEvent<'_>> =
        events.iter().filter(|e| e.event_time >= from && e.event_time < to).collect();

    // By hand: per model (in use, candidate, added, removed); per window (rows, black, white).
    let mut models: BTreeMap<Option<i32>, [u64; 5]> = BTreeMap::new();
    let mut windows: BTreeMap<String, [[u64; 3]; 2]> = BTreeMap::new();
    let mut rules = [[0u64; 2]; 4];
    for e in &in_range {
        let judged = [judge(e, false).0, judge(e, true).0];
        let m = models.entry(e.model_id).or_default();
        m[0] += 1;
        let ms = e.event_time.timestamp_millis();
        let key = event_time::format(&chrono::DateTime::from_timestamp_millis(ms - ms.rem_euclid(900_000)).unwrap());
        for (k, reasons) in judged.iter().enumerate() {
            if reasons.is_empty() {
                continue;
            }
            m[1 + k] += 1;
            let w = &mut windows.entry(key.clone()).or_default()[k];
            w[0] += 1;
            w[1] += u64::from(e.color_name.as_deref() == Some("Black"));
            w[2] += u64::from(e.color_name.as_deref() == Some("White"));
            rules[0][k] += 1;
            for (r, name) in ["speed", "rpm", "gear"].into_iter().enumerate() {
                rules[1 + r][k] += u64::from(reasons.contains(&name));
            }
        }
        m[3] += u64::from(judged[0].is_empty() && !judged[1].is_empty());
        m[4] += u64::from(!judged[0].is_empty() && judged[1].is_empty());
    }
    let changed: Vec<&String> = windows.iter().filter(|(_, [a, b])| a != b).map(|(k, _)| k).collect();
    assert!(!changed.is_empty());

    let (from_s, to_s) = (event_time::format(&from), event_time::format(&to));
    let file = rules_file(KIA_SLOW);
    let args = [
        "what-if",
        "--rules",
        &file,
        "--enriched-topic",
        &p.enriched,
        "--from",
        &from_s,
        "--to",
        &to_s,
        "--format",
        "json",
    ];
    let out = ops(&p, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["events"], in_range.len() as u64);
    assert_eq!(
        got["duplicates"],
        in_range.iter().filter(|e| events[..100].iter().any(|d| d.event_id == e.event_id)).count() as u64
    );
    for (i, name) in ["all", "speed", "rpm", "gear"].into_iter().enumerate() {
        assert_eq!(got["rules"][i]["name"], name);
        assert_eq!(got["rules"][i]["alerts"], serde_json::json!(rules[i]), "{name}");
    }
    let got_models: BTreeMap<Option<i32>, [u64; 5]> = got["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let n = |k: &str| m[k].as_u64().unwrap();
            (
                m["model_id"].as_i64().map(|i| i as i32),
                [
                    n("events"),
                    m["alerts"][0].as_u64().unwrap(),
                    m["alerts"][1].as_u64().unwrap(),
                    n("added"),
                    n("removed"),
                ],
            )
        })
        .collect();
    assert_eq!(got_models, models);
    // (window start, rows, black, white), each [in use, candidate].
    type WindowLine = (String, [u64; 2], [u64; 2], [u64; 2]);
    let got_windows: Vec<WindowLine> = got["changed_windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let pair = |v: &Value| [v[0].as_u64().unwrap(), v[1].as_u64().unwrap()];
            let color = |c: &str| pair(&w["colors"].as_array().unwrap().iter().find(|x| x[0] == c).unwrap()[1]);
            (w["window_start"].as_str().unwrap().to_owned(), pair(&w["num_of_rows"]), color("Black"), color("White"))
        })
        .collect();
    let want_windows: Vec<_> = changed
        .iter()
        .map(|k| {
            let [a, b] = windows[*k];
            ((*k).clone(), [a[0], b[0]], [a[1], b[1]], [a[2], b[2]])
        })
        .collect();
    assert_eq!(got_windows, want_windows);
}
