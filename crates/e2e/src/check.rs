//! What the tests expect, computed independently of the services, and how they wait for it.

#![allow(clippy::unwrap_used)] // test harness: a broken expectation panics with its message

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::Car;
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{EnrichedEvent, JsonEvent, SensorEvent, event_time};
use pipeline_core::window::WindowStats;
use pipeline_s3::dims::load_table;
use rdkafka::Message;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Pipeline, Service, read_all, wait_for_count};

/// Largest record the tests decode.
pub const LIMIT: usize = 1 << 20;

/// One window's running aggregate: rows, black, white, silver, max speed, max gear, max rpm.
pub type Row = (u64, u64, u64, u64, f64, i32, i32);

/// The synthetic clock's first event time in the tests.
pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 8, 0, 0).unwrap()
}

/// The events `generator run --seed seed --start-time start() --time-step step_ms` produces.
pub async fn regenerate(p: &Pipeline, seed: u64, n: usize, step_ms: i64) -> Vec<SensorEvent> {
    let cars: Vec<Car> = load_table(&p.store, &p.s3.dims_prefix).await.unwrap();
    let clock = EventClock::Synthetic { start: start(), step: chrono::Duration::milliseconds(step_ms) };
    let mut g = EventGenerator::new(cars.iter().map(|c| c.car_id).collect(), Some(seed), clock);
    (0..n).map(|_| g.next_event()).collect()
}

/// The seed's window table computed directly from the alerts: window start → row.
pub fn expected_windows(alerts: &[&EnrichedEvent<'_>]) -> BTreeMap<String, Value> {
    let mut rows: BTreeMap<i64, Row> = BTreeMap::new();
    for a in alerts {
        let ms = a.event_time.timestamp_millis();
        let r = rows.entry(ms - ms.rem_euclid(15 * 60 * 1000)).or_insert((0, 0, 0, 0, f64::MIN, i32::MIN, i32::MIN));
        let color = a.color_name.as_deref().unwrap_or("").to_lowercase();
        r.0 += 1;
        r.1 += u64::from(color == "black");
        r.2 += u64::from(color == "white");
        r.3 += u64::from(color == "silver");
        r.4 = r.4.max(a.speed);
        r.5 = r.5.max(a.gear);
        r.6 = r.6.max(a.rpm);
    }
    rows.into_iter()
        .map(|(start, (n, black, white, silver, speed, gear, rpm))| {
            let s = DateTime::from_timestamp_millis(start).unwrap();
            let key = event_time::format(&s);
            let row = json!({
                "window_start": key, "window_end": event_time::format(&(s + chrono::Duration::minutes(15))),
                "num_of_rows": n, "num_of_black": black, "num_of_white": white, "num_of_silver": silver,
                "maximum_speed": speed, "maximum_gear": gear, "maximum_rpm": rpm,
            });
            (key, row)
        })
        .collect()
}

/// The seed's counted colors, the e2e counters' default.
pub const COLORS: [&str; 3] = ["Black", "White", "Silver"];

/// The whole windows the counts topic holds: its partials merged (per window and partition the
/// value covering the most input, then added up over partitions), as the seed's rows by window
/// start.
pub async fn latest_counts(topic: &str) -> BTreeMap<String, Value> {
    let colors: Vec<String> = COLORS.map(str::to_owned).to_vec();
    let mut merge = pipeline_core::window::PartialMerge::default();
    for m in read_all(topic).await {
        let (stats, partial) = WindowStats::from_row(m.payload().unwrap(), &colors).unwrap();
        let (partition, offset) = partial.expect("counts are published as partials");
        merge.insert(partition, offset, stats);
    }
    merge
        .merged(|_| false)
        .into_iter()
        .map(|w| (event_time::format(&w.start), serde_json::from_slice(&w.to_json(&colors)).unwrap()))
        .collect()
}

/// Waits until the counter has published exactly `expected`.
pub async fn await_counts(topic: &str, expected: &BTreeMap<String, Value>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = latest_counts(topic).await;
        if &got == expected {
            return;
        }
        assert!(Instant::now() < deadline, "alert-counts never matched:\n got {got:#?}\nwant {expected:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An event type decoded to be kept past its record (an [`EnrichedEvent`] borrows from it).
pub trait DecodeOwned: Sized {
    /// Decodes a valid record, owning every field.
    fn decode_owned(bytes: &[u8]) -> Self;
}

impl DecodeOwned for SensorEvent {
    fn decode_owned(bytes: &[u8]) -> Self {
        SensorEvent::decode(bytes, LIMIT).unwrap()
    }
}

impl DecodeOwned for EnrichedEvent<'static> {
    fn decode_owned(bytes: &[u8]) -> Self {
        EnrichedEvent::decode(bytes, LIMIT).unwrap().into_owned()
    }
}

/// Decoded records of a topic, asserting each event id appears once.
pub async fn exactly_once<T: DecodeOwned>(topic: &str, id: impl Fn(&T) -> Uuid) -> HashMap<Uuid, T> {
    let mut out = HashMap::new();
    for m in read_all(topic).await {
        let e = T::decode_owned(m.payload().unwrap());
        assert!(out.insert(id(&e), e).is_none(), "duplicate in {topic}");
    }
    out
}

/// SIGTERM to each service, asserting each exits 0.
pub fn stop_all(services: Vec<Service>) {
    for s in services {
        let name = s.name;
        let out = s.terminate();
        assert!(out.status.success(), "{name} did not exit 0 on SIGTERM: {:?}", out.status);
    }
}

/// Checks enriched, alerts and counts against the events the test computed itself; returns
/// the number of alerts and of windows.
pub async fn assert_exact(p: &Pipeline, events: &[SensorEvent]) -> (usize, usize) {
    let join = p.join();
    let rules = AlertRules::default();
    let expected: HashMap<Uuid, EnrichedEvent<'static>> =
        events.iter().map(|e| (e.event_id, join.enrich(e.clone()).0.into_owned())).collect();
    let alerts: Vec<&EnrichedEvent<'static>> = expected.values().filter(|e| !rules.check_event(e).is_empty()).collect();

    wait_for_count(&p.enriched, events.len() as i64, Duration::from_secs(120)).await;
    let enriched = exactly_once::<EnrichedEvent<'static>>(&p.enriched, |e| e.event_id).await;
    assert_eq!(enriched.len(), events.len(), "every event id exactly once in samples-enriched");
    assert_eq!(enriched, expected, "enriched fields equal the test's own join");

    wait_for_count(&p.alerts, alerts.len() as i64, Duration::from_secs(120)).await;
    let got_alerts = exactly_once::<EnrichedEvent<'static>>(&p.alerts, |e| e.event_id).await;
    let want: HashSet<Uuid> = alerts.iter().map(|e| e.event_id).collect();
    assert_eq!(got_alerts.keys().copied().collect::<HashSet<_>>(), want, "alerts are exactly the rule breakers");

    let windows = expected_windows(&alerts);
    await_counts(&p.counts, &windows).await;
    (alerts.len(), windows.len())
}

/// GET `url` with curl: (status, body).
pub fn http_get(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl").args(["-s", "-w", "\n%{http_code}", url]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap_or(0), body.to_owned())
}

pub use pipeline_testkit::free_port;
