//! The hand-written codec against the serde-derived one it replaced (kept here, verbatim in
//! behaviour, as the reference): the same bytes out for every event, and the same answer (value
//! or error text) for every record in.

#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::{Car, CarColor, CarModel, DimTables, JoinIndex};
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{AlertEvent, AlertReasons, DecodeError, EnrichedEvent, JsonEvent, SensorEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const LIMIT: usize = 1 << 20;

/// The codec as it was: serde-derived owned structs, chrono for `event_time`.
mod reference {
    use super::*;
    use serde::de::DeserializeOwned;

    #[derive(Debug, Serialize, Deserialize)]
    /// Named as the type it mirrors: serde_json's messages name the struct.
    pub struct SensorEvent {
        pub event_id: Uuid,
        #[serde(with = "time")]
        pub event_time: DateTime<Utc>,
        pub car_id: i64,
        pub speed: f64,
        pub rpm: i32,
        pub gear: i32,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub struct EnrichedEvent {
        pub event_id: Uuid,
        #[serde(with = "time")]
        pub event_time: DateTime<Utc>,
        pub car_id: i64,
        pub speed: f64,
        pub rpm: i32,
        pub gear: i32,
        #[serde(default)]
        pub driver_id: Option<i64>,
        #[serde(default)]
        pub brand_name: Option<String>,
        #[serde(default)]
        pub model_name: Option<String>,
        #[serde(default)]
        pub color_name: Option<String>,
        pub expected_gear: i32,
        #[serde(default)]
        pub model_id: Option<i32>,
    }

    pub struct Reasons(pub AlertReasons);

    impl Serialize for Reasons {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.names())
        }
    }

    #[derive(Serialize)]
    pub struct Alert<'a> {
        #[serde(flatten)]
        pub event: &'a EnrichedEvent,
        pub alert_reasons: Reasons,
        pub thresholds: AlertRules,
    }

    mod time {
        use super::*;
        pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = DateTime<Utc>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an RFC 3339 timestamp string")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
                        return Ok(t.with_timezone(&Utc));
                    }
                    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
                        .map(|t| t.and_utc())
                        .map_err(|_| E::custom(format!("`{v}` is not an RFC 3339 timestamp")))
                }
            }
            d.deserialize_str(V)
        }
    }

    pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    /// The old `JsonEvent::decode`.
    pub fn decode<T: DeserializeOwned>(
        bytes: &[u8],
        schema: &'static str,
        speed: fn(&T) -> f64,
    ) -> Result<T, DecodeError> {
        if bytes.len() > LIMIT {
            return Err(DecodeError::Oversized { size: bytes.len(), limit: LIMIT });
        }
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
        let event: T = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => DecodeError::Schema { schema, detail: e.to_string() },
            _ => DecodeError::Syntax(e.to_string()),
        })?;
        let s = speed(&event);
        if !s.is_finite() {
            return Err(DecodeError::Invalid { field: "speed", detail: format!("{s} is not a finite number") });
        }
        Ok(event)
    }
}

fn ref_sensor(e: &SensorEvent) -> reference::SensorEvent {
    reference::SensorEvent {
        event_id: e.event_id,
        event_time: e.event_time,
        car_id: e.car_id,
        speed: e.speed,
        rpm: e.rpm,
        gear: e.gear,
    }
}

fn ref_enriched(e: &EnrichedEvent<'_>) -> reference::EnrichedEvent {
    let s = |c: &Option<Cow<'_, str>>| c.as_deref().map(str::to_owned);
    reference::EnrichedEvent {
        event_id: e.event_id,
        event_time: e.event_time,
        car_id: e.car_id,
        speed: e.speed,
        rpm: e.rpm,
        gear: e.gear,
        driver_id: e.driver_id,
        brand_name: s(&e.brand_name),
        model_name: s(&e.model_name),
        color_name: s(&e.color_name),
        expected_gear: e.expected_gear,
        model_id: e.model_id,
    }
}

/// Tables whose names need escaping, with a model and a color no car row has and cars whose
/// model or color is unknown.
fn tricky_tables() -> DimTables {
    let mut t = DimTables::seed(40, 5);
    let names = [
        "Mazda \"Speed\"",
        "back\\slash",
        "tab\there\nnew\rline",
        "\u{1}\u{8}\u{c}\u{1f}\u{7f}",
        "Citroën 🚗",
        "",
        "/solidus/",
    ];
    t.models = names
        .iter()
        .zip(names.iter().rev())
        .zip(1..)
        .map(|((b, m), model_id)| CarModel { model_id, car_brand: (*b).into(), car_model: (*m).into() })
        .collect();
    t.colors = names.iter().zip(1..).map(|(c, color_id)| CarColor { color_id, color_name: (*c).into() }).collect();
    t.cars[0].model_id = 99;
    t.cars[1].color_id = 99;
    t.cars.push(Car { car_id: -7, driver_id: i64::MIN, model_id: 1, color_id: 2 });
    t.cars.push(Car { car_id: i64::MAX, driver_id: i64::MAX, model_id: 3, color_id: 4 });
    t
}

/// 100 000 generator events (some for unknown cars) and the boundary values.
fn events(tables: &DimTables) -> Vec<SensorEvent> {
    let clock = EventClock::Synthetic {
        start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        step: chrono::Duration::microseconds(123_457),
    };
    let mut cars: Vec<i64> = tables.cars.iter().map(|c| c.car_id).collect();
    cars.extend([0, -1, 1_000_000, i64::MIN]); // unknown: null dimensions
    let mut g = EventGenerator::new(cars, Some(11), clock);
    let mut out: Vec<SensorEvent> = (0..100_000).map(|_| g.next_event()).collect();
    let base = out[0].clone();
    let times = [
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::microseconds(67_891),
        Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + chrono::Duration::nanoseconds(999_999_999),
        Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(-5, 6, 7, 8, 9, 10).unwrap(),
        DateTime::<Utc>::UNIX_EPOCH,
    ];
    let speeds = [
        0.0,
        -0.0,
        119.99,
        120.0,
        120.01,
        179.99,
        180.0,
        29.99,
        30.0,
        -0.5,
        1e-7,
        1e15,
        1e16,
        1e21,
        0.1 + 0.2,
        f64::MAX,
        f64::MIN_POSITIVE,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        123_456_789.123,
    ];
    let (rpms, gears) = ([0, 6000, 6001, -1, i32::MIN, i32::MAX], [0, 7, -1, i32::MIN, i32::MAX]);
    for (i, t) in times.iter().enumerate() {
        out.push(SensorEvent { event_time: *t, car_id: tables.cars[i].car_id, ..base.clone() });
    }
    for (i, speed) in speeds.into_iter().enumerate() {
        out.push(SensorEvent { speed, car_id: tables.cars[i % tables.cars.len()].car_id, ..base.clone() });
    }
    for rpm in rpms {
        out.push(SensorEvent { rpm, ..base.clone() });
    }
    for gear in gears {
        out.push(SensorEvent { gear, ..base.clone() });
    }
    for car_id in [i64::MIN, i64::MAX, -7, 0] {
        out.push(SensorEvent { car_id, event_id: Uuid::nil(), ..base.clone() });
    }
    out
}

#[test]
fn encoders_write_the_reference_bytes() {
    let tables = tricky_tables();
    let join = JoinIndex::new(&tables);
    let rules = AlertRules::default();
    let mut buf = Vec::new();
    let (mut unknown, mut alerts) = (0, 0);
    for e in events(&tables) {
        buf.clear();
        e.encode_into(&mut buf);
        assert_eq!(buf, reference::encode(&ref_sensor(&e)), "{e:?}");

        let (enriched, known) = join.enrich(e.clone());
        unknown += usize::from(!known);
        let old = ref_enriched(&enriched);
        buf.clear();
        enriched.encode_into(&mut buf);
        assert_eq!(String::from_utf8_lossy(&buf), String::from_utf8_lossy(&reference::encode(&old)), "{e:?}");

        let enriched_bytes = enriched.encode();
        let checked = rules.check_event(&enriched);
        alerts += usize::from(!checked.is_empty());
        let every = (0..8).map(|b| AlertReasons { speed: b & 1 != 0, rpm: b & 2 != 0, gear: b & 4 != 0 });
        // Thresholds as an operator may set them: fractions, zero, the gear rule off.
        let odd = AlertRules {
            max_speed: f64::from(e.rpm % 300) / 7.0,
            max_rpm: e.gear.wrapping_mul(1000),
            gear_rule: e.rpm % 2 == 0,
        };
        for reasons in std::iter::once(checked).chain(every.filter(|_| !known)) {
            for thresholds in [rules, odd] {
                buf.clear();
                AlertEvent { event: &enriched, alert_reasons: reasons, thresholds }.encode_into(&mut buf);
                let want = reference::encode(&reference::Alert {
                    event: &old,
                    alert_reasons: reference::Reasons(reasons),
                    thresholds,
                });
                assert_eq!(String::from_utf8_lossy(&buf), String::from_utf8_lossy(&want), "{e:?} {reasons:?}");
                // And the enriched reader reads the alert as the enriched event (the counter's
                // input): the same value, or the same refusal (a time beyond 9999).
                match (EnrichedEvent::decode(&buf, LIMIT), EnrichedEvent::decode(&enriched_bytes, LIMIT)) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(reference::encode(&ref_enriched(&a)), reference::encode(&ref_enriched(&b)))
                    }
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => panic!("alert {a:?}, enriched {b:?}"),
                }
            }
        }
    }
    assert!(unknown > 1000 && alerts > 10_000, "unknown cars {unknown}, alerts {alerts}");
}

/// The old and the new decoders agree on `bytes`: the same event (compared by its reference
/// encoding, so -0.0 and 0.0 differ) or the same error text.
fn same_decoding(bytes: &[u8]) {
    let old = reference::decode::<reference::SensorEvent>(bytes, "sensor event", |e| e.speed);
    let new = SensorEvent::decode(bytes, LIMIT);
    match (&old, &new) {
        (Ok(a), Ok(b)) => assert_eq!(reference::encode(a), reference::encode(&ref_sensor(b))),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("{:?}: old {old:?}, new {new:?}", String::from_utf8_lossy(bytes)),
    }
    let old = reference::decode::<reference::EnrichedEvent>(bytes, "enriched event", |e| e.speed);
    let new = EnrichedEvent::decode(bytes, LIMIT);
    match (&old, &new) {
        (Ok(a), Ok(b)) => assert_eq!(reference::encode(a), reference::encode(&ref_enriched(b))),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("{:?}: old {old:?}, new {new:?}", String::from_utf8_lossy(bytes)),
    }
}

/// The records the pipeline writes, and the same with the whitespace and timestamps other
/// producers use.
fn records() -> Vec<Vec<u8>> {
    let tables = tricky_tables();
    let join = JoinIndex::new(&tables);
    let mut out = Vec::new();
    for (i, e) in events(&tables).into_iter().enumerate().filter(|(i, _)| i % 20 == 0 || *i >= 100_000) {
        out.push(e.encode());
        let (enriched, _) = join.enrich(e);
        out.push(enriched.encode());
        let reasons = AlertReasons { speed: i % 2 == 0, rpm: i % 3 == 0, gear: true };
        let mut alert = Vec::new();
        let thresholds = AlertRules { max_speed: f64::from(i as u32 % 200), max_rpm: 6000, gear_rule: i % 5 != 0 };
        AlertEvent { event: &enriched, alert_reasons: reasons, thresholds }.encode_into(&mut alert);
        if i % 7 == 0 {
            let value: serde_json::Value = serde_json::from_slice(&alert).unwrap();
            alert = serde_json::to_vec_pretty(&value).unwrap();
        }
        out.push(alert);
    }
    let times = [
        "2026-01-02T03:04:05.067123+00:00",
        "2026-01-02T05:04:05.067+02:00",
        "2026-01-02T03:04:05.5",
        "2026-01-02 03:04:05Z",
        "2026-01-02t03:04:05.123456789123z",
        "2026-02-30T00:00:00Z",
        "2016-12-31T23:59:60.5Z",
        "noon",
    ];
    for t in times {
        out.push(format!(r#"{{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"{t}","car_id":1,"speed":1,"rpm":900,"gear":1}}"#).into_bytes());
    }
    out
}

#[test]
fn decoders_agree_with_the_reference() {
    for r in records() {
        same_decoding(&r);
        // With surrounding and inner whitespace.
        let spaced = String::from_utf8(r.clone()).unwrap().replace(',', " ,\n\t").replace(':', ": ");
        same_decoding(format!(" \r\n{spaced}\n ").as_bytes());
    }
}

#[test]
fn decoders_agree_on_damaged_records() {
    const ALPHABET: &[u8] = b"{}[]\":,\\ -+.0123456789eEnulltrufaxu\t\n\x00\x1f\xc3\xa9\xff";
    let mut rng = StdRng::seed_from_u64(17);
    let records = records();
    for _ in 0..std::env::var("DAMAGED").map_or(60_000, |n| n.parse().unwrap()) {
        let mut r = records[rng.random_range(0..records.len())].clone();
        for _ in 0..rng.random_range(1..=3) {
            let at = rng.random_range(0..r.len());
            let b = ALPHABET[rng.random_range(0..ALPHABET.len())];
            match rng.random_range(0..4) {
                0 => r[at] = b,
                1 => r.insert(at, b),
                2 => {
                    r.remove(at);
                }
                _ => {
                    let end = (at + rng.random_range(1..12)).min(r.len());
                    let copy = r[at..end].to_vec();
                    r.splice(at..at, copy);
                }
            }
            if r.is_empty() {
                break;
            }
        }
        same_decoding(&r);
    }
}
