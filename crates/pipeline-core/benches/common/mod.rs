//! What the criterion bench (`benches/hot_path.rs`) and the instruction-count example
//! (`examples/hot_path_once.rs`) share: the same inputs and the same per-record work, so their
//! figures measure the same thing.

#![allow(clippy::unwrap_used, dead_code)] // the inputs are the generator's own valid events

use chrono::{TimeZone, Utc};
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::{DimTables, JoinIndex};
use pipeline_core::rules::AlertRules;
use pipeline_core::rules::table::{ModelRules, RulesTable};
use pipeline_core::schema::{AlertEvent, EnrichedEvent, JsonEvent, SensorEvent};
use pipeline_core::window::{WindowConfig, Windows};

/// Distinct events per round.
pub const N: usize = 10_000;
/// The services' default record-size limit.
pub const LIMIT: usize = 1 << 20;

/// The seed's tables joined, and N of the generator's events encoded as the enricher reads them
/// (sensor JSON) and as the detector and counter read them (enriched JSON).
pub fn inputs() -> (JoinIndex, Vec<Vec<u8>>, Vec<Vec<u8>>) {
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
pub fn enrich_into<'j>(join: &'j JoinIndex, raw: &[u8], buf: &mut Vec<u8>) -> EnrichedEvent<'j> {
    let (e, _) = join.enrich(SensorEvent::decode(raw, LIMIT).unwrap());
    buf.clear();
    e.encode_into(buf);
    e
}

/// The rules an operator might run: the Kias' red line lower, a model slower and without the
/// gear rule (three of the seed's seven models overridden); or, `uniform`, the seed's for every
/// model (the same alerts as before the rules went per model: the lookup's cost alone).
pub fn rules(uniform: bool) -> ModelRules {
    if uniform {
        return ModelRules::uniform(AlertRules::default());
    }
    let table =
        br#"{"overrides": [{"brand": "Kia", "max_rpm": 5500}, {"model_id": 7, "max_speed": 90, "gear_rule": false}]}"#;
    let tables = DimTables::seed(0, 1);
    RulesTable::parse(table)
        .unwrap()
        .canonical(AlertRules::default(), Some(&tables.models))
        .unwrap()
        .compile(&tables.models)
}

/// The detector's work on one decoded event: its model's thresholds, the check, and the alert
/// (with the thresholds) encoded into `buf` if any.
pub fn detect_into(rules: &ModelRules, e: &EnrichedEvent<'_>, buf: &mut Vec<u8>) {
    let thresholds = *rules.for_model(e.model_id);
    let reasons = thresholds.check_event(e);
    if !reasons.is_empty() {
        buf.clear();
        AlertEvent { event: e, alert_reasons: reasons, thresholds }.encode_into(buf);
    }
}

/// The counter's window state with the services' defaults.
pub fn windows() -> Windows {
    Windows::new(WindowConfig {
        size: chrono::Duration::minutes(15),
        watermark_delay: chrono::Duration::hours(48),
        idle_timeout: std::time::Duration::from_secs(30),
        colors: vec!["Black".into(), "White".into(), "Silver".into()],
    })
}
