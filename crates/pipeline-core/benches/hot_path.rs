//! Per-event CPU cost of each service's transform, on realistic events (the generator's own),
//! without Kafka: what one core can do before any I/O.
//!
//! `cargo bench -p pipeline-core --bench hot_path` prints, per path, the time for a batch of
//! 10 000 events and the events/s (criterion's "thrpt").

#![allow(clippy::unwrap_used)] // the inputs are the generator's own valid events

use std::hint::black_box;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::{DimTables, JoinIndex};
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{AlertEvent, EnrichedEvent, JsonEvent, SensorEvent};
use pipeline_core::window::{AlertPoint, WindowConfig, Windows};

const N: usize = 10_000;
const LIMIT: usize = 1 << 20;

fn inputs() -> (JoinIndex, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let tables = DimTables::seed(20, 1);
    let join = JoinIndex::new(&tables);
    let clock = EventClock::Synthetic {
        start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        step: chrono::Duration::milliseconds(100),
    };
    let mut g = EventGenerator::new(tables.cars.iter().map(|c| c.car_id).collect(), Some(1), clock);
    let sensors: Vec<SensorEvent> = (0..N).map(|_| g.next_event()).collect();
    let enriched = sensors.iter().map(|e| join.enrich(e.clone()).0.encode()).collect();
    (join, sensors.iter().map(JsonEvent::encode).collect(), enriched)
}

/// The enricher's work on one record: decode, join, encode into `buf`.
fn enrich_into<'j>(join: &'j JoinIndex, raw: &[u8], buf: &mut Vec<u8>) -> EnrichedEvent<'j> {
    let (e, _) = join.enrich(SensorEvent::decode(raw, LIMIT).unwrap());
    buf.clear();
    e.encode_into(buf);
    e
}

/// The detector's work on one decoded event: check, and encode an alert into `buf` if any.
fn detect_into(rules: &AlertRules, e: &EnrichedEvent<'_>, buf: &mut Vec<u8>) {
    let reasons = rules.check_event(e);
    if !reasons.is_empty() {
        buf.clear();
        AlertEvent { event: e, alert_reasons: reasons }.encode_into(buf);
    }
}

fn hot_path(c: &mut Criterion) {
    let (join, sensors, enriched) = inputs();
    let rules = AlertRules::default();
    let mut group = c.benchmark_group("per_event");
    group.throughput(Throughput::Elements(N as u64));

    group.bench_function("enricher: decode sensor, join, encode", |b| {
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            for raw in &sensors {
                black_box(enrich_into(&join, raw, &mut buf));
            }
        })
    });

    group.bench_function("detector: decode enriched, check, encode alert", |b| {
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            for raw in &enriched {
                detect_into(&rules, &EnrichedEvent::decode(raw, LIMIT).unwrap(), &mut buf);
                black_box(&buf);
            }
        })
    });

    group.bench_function("counter: decode alert, window update", |b| {
        let config = WindowConfig {
            size: chrono::Duration::minutes(15),
            watermark_delay: chrono::Duration::hours(48),
            idle_timeout: std::time::Duration::from_secs(30),
            colors: vec!["Black".into(), "White".into(), "Silver".into()],
        };
        let mut windows = Windows::new(config);
        let now = Instant::now();
        b.iter(|| {
            for (i, raw) in enriched.iter().enumerate() {
                let e = EnrichedEvent::decode(raw, LIMIT).unwrap();
                black_box(windows.add((i % 3) as i32, AlertPoint::from(&e), now));
                black_box(windows.advance(now));
            }
        })
    });

    group.bench_function("all three, in one process", |b| {
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            for raw in &sensors {
                let e = enrich_into(&join, raw, &mut buf);
                detect_into(&rules, &e, &mut buf);
                black_box(&buf);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
