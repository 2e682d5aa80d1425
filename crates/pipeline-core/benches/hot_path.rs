//! Per-event CPU cost of each service's transform, on realistic events (the generator's own),
//! without Kafka: what one core can do before any I/O.
//!
//! `cargo bench -p pipeline-core --bench hot_path` prints, per path, the time for a batch of
//! 10 000 events and the events/s (criterion's "thrpt").

#![allow(clippy::unwrap_used)] // the inputs are the generator's own valid events

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pipeline_core::schema::{EnrichedEvent, JsonEvent};
use pipeline_core::window::AlertPoint;

mod common;

use common::{LIMIT, N, detect_into, enrich_into, inputs};

fn hot_path(c: &mut Criterion) {
    let (join, sensors, enriched) = inputs();
    let rules = common::rules(false);
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
        let mut windows = common::windows();
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
