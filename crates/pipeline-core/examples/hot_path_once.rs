//! Runs one hot path over the generator's events a given number of rounds, once, for an
//! instruction count that criterion's repetitions would blur:
//!
//! ```sh
//! cargo build --release -p pipeline-core --example hot_path_once
//! valgrind --tool=callgrind target/release/examples/hot_path_once all 1
//! valgrind --tool=callgrind target/release/examples/hot_path_once all 3
//! valgrind --tool=callgrind target/release/examples/hot_path_once detector 3 uniform
//! ```
//!
//! The detector judges by per-model rules with three models overridden; `uniform` gives every
//! model the seed's rules (the alerts the seed raises: the lookup's cost alone).
//!
//! The setup (tables, 10 000 encoded events) is the same for any number of rounds, so the
//! difference of two runs divided by the extra events is the path's own cost per event.

#![allow(clippy::unwrap_used)] // the inputs are the generator's own valid events

use std::hint::black_box;
use std::time::Instant;

use pipeline_core::schema::{EnrichedEvent, JsonEvent};
use pipeline_core::window::AlertPoint;

#[path = "../benches/common/mod.rs"]
mod common;

use common::{LIMIT, detect_into, enrich_into, inputs};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map_or("all", String::as_str);
    let rounds: usize = args.get(2).map_or(1, |r| r.parse().unwrap());

    let (join, sensors, enriched) = inputs();
    // A third argument `uniform`: the seed's rules for every model (no override).
    let rules = common::rules(args.get(3).is_some_and(|a| a == "uniform"));
    let mut windows = common::windows();
    let now = Instant::now();
    let mut buf = Vec::with_capacity(512);

    for _ in 0..rounds {
        match path {
            "enricher" => {
                for raw in &sensors {
                    black_box(enrich_into(&join, raw, &mut buf));
                }
            }
            "detector" => {
                for raw in &enriched {
                    detect_into(&rules, &EnrichedEvent::decode(raw, LIMIT).unwrap(), &mut buf);
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
                    let e = enrich_into(&join, raw, &mut buf);
                    detect_into(&rules, &e, &mut buf);
                    black_box(&buf);
                }
            }
            other => panic!("unknown path `{other}`: enricher, detector, counter or all"),
        }
    }
}
