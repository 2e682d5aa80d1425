//! Runs one hot path over the generator's events a given number of rounds, once, for an
//! instruction count that criterion's repetitions would blur:
//!
//! ```sh
//! cargo build --release -p pipeline-core --example hot_path_once
//! valgrind --tool=callgrind target/release/examples/hot_path_once all 1
//! valgrind --tool=callgrind target/release/examples/hot_path_once all 3
//! ```
//!
//! The setup (tables, 10 000 encoded events) is the same for any number of rounds, so the
//! difference of two runs divided by the extra events is the path's own cost per event.

#![allow(clippy::unwrap_used)] // the inputs are the generator's own valid events

use std::hint::black_box;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::{DimTables, JoinIndex};
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{AlertEvent, EnrichedEvent, JsonEvent, SensorEvent};
use pipeline_core::window::{AlertPoint, WindowConfig, Windows};

/// Distinct events per round (as the criterion bench).
const N: usize = 10_000;
const LIMIT: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map_or("all", String::as_str);
    let rounds: usize = args.get(2).map_or(1, |r| r.parse().unwrap());

    let tables = DimTables::seed(20, 1);
    let join = JoinIndex::new(&tables);
    let clock = EventClock::Synthetic {
        start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        step: chrono::Duration::milliseconds(100),
    };
    let mut g = EventGenerator::new(tables.cars.iter().map(|c| c.car_id).collect(), Some(1), clock);
    let sensors: Vec<SensorEvent> = (0..N).map(|_| g.next_event()).collect();
    let enriched: Vec<Vec<u8>> = sensors.iter().map(|e| join.enrich(e.clone()).0.encode()).collect();
    let sensors: Vec<Vec<u8>> = sensors.iter().map(JsonEvent::encode).collect();
    let rules = AlertRules::default();
    let mut windows = Windows::new(WindowConfig {
        size: chrono::Duration::minutes(15),
        watermark_delay: chrono::Duration::hours(48),
        idle_timeout: std::time::Duration::from_secs(30),
        colors: vec!["Black".into(), "White".into(), "Silver".into()],
    });
    let now = Instant::now();
    let mut buf = Vec::with_capacity(512);

    for _ in 0..rounds {
        match path {
            "enricher" => {
                for raw in &sensors {
                    let (e, _) = join.enrich(SensorEvent::decode(raw, LIMIT).unwrap());
                    buf.clear();
                    e.encode_into(&mut buf);
                    black_box(&buf);
                }
            }
            "detector" => {
                for raw in &enriched {
                    let e = EnrichedEvent::decode(raw, LIMIT).unwrap();
                    let reasons = rules.check_event(&e);
                    if !reasons.is_empty() {
                        buf.clear();
                        AlertEvent { event: &e, alert_reasons: reasons }.encode_into(&mut buf);
                    }
                    black_box(&buf);
                }
            }
            "counter" => {
                for (i, raw) in enriched.iter().enumerate() {
                    let e = EnrichedEvent::decode(raw, LIMIT).unwrap();
                    black_box(windows.add((i % 3) as i32, AlertPoint::from(&e), now));
                    black_box(windows.advance(now));
                }
            }
            "all" => {
                for raw in &sensors {
                    let (e, _) = join.enrich(SensorEvent::decode(raw, LIMIT).unwrap());
                    buf.clear();
                    e.encode_into(&mut buf);
                    let reasons = rules.check_event(&e);
                    if !reasons.is_empty() {
                        buf.clear();
                        AlertEvent { event: &e, alert_reasons: reasons }.encode_into(&mut buf);
                    }
                    black_box(&buf);
                }
            }
            other => panic!("unknown path `{other}`: enricher, detector, counter or all"),
        }
    }
}
