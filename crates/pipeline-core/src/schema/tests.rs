//! The codec's unit tests (the byte-for-byte comparison with the serde-derived encoders is
//! `tests/encode_reference.rs`).

use super::*;
use chrono::TimeZone;

const LIMIT: usize = 1 << 20;

fn sample() -> SensorEvent {
    SensorEvent {
        event_id: Uuid::parse_str("5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab").unwrap(),
        event_time: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(67),
        car_id: 1234567,
        speed: 88.25,
        rpm: 3100,
        gear: 3,
    }
}

#[test]
fn sensor_event_json_has_the_seed_fields_in_order() {
    let json = String::from_utf8(sample().encode()).unwrap();
    assert_eq!(
        json,
        r#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05.067Z","car_id":1234567,"speed":88.25,"rpm":3100,"gear":3}"#
    );
    assert_eq!(SensorEvent::decode(json.as_bytes(), LIMIT).unwrap(), sample());
}

#[test]
fn event_time_accepts_python_offsets_and_microseconds() {
    let t = event_time::parse("2026-01-02T03:04:05.067123+00:00").unwrap();
    assert_eq!(t.timestamp_micros() % 1_000_000, 67_123);
    let t2 = event_time::parse("2026-01-02T05:04:05.067+02:00").unwrap();
    assert_eq!(event_time::format(&t2), "2026-01-02T03:04:05.067Z");
    let naive = event_time::parse("2026-01-02T03:04:05.5").unwrap();
    assert_eq!(event_time::format(&naive), "2026-01-02T03:04:05.500Z");
    assert!(event_time::parse("yesterday").is_err());
}

#[test]
fn enriched_event_nulls_round_trip_and_may_be_absent() {
    let json = r#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":1,"speed":1.0,"rpm":900,"gear":1,"expected_gear":1}"#;
    let e = EnrichedEvent::decode(json.as_bytes(), LIMIT).unwrap();
    assert_eq!((e.driver_id, e.color_name.as_deref()), (None, None));
    let out = String::from_utf8(e.encode()).unwrap();
    assert!(
        out.contains(
            r#""gear":1,"driver_id":null,"brand_name":null,"model_name":null,"color_name":null,"expected_gear":1,"model_id":null}"#
        ),
        "{out}"
    );
}

#[test]
fn model_id_is_read_from_new_records_and_null_in_old_ones() {
    let old = r#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":1,"speed":1.0,"rpm":900,"gear":1,"driver_id":null,"brand_name":null,"model_name":null,"color_name":null,"expected_gear":1}"#;
    assert_eq!(EnrichedEvent::decode(old.as_bytes(), LIMIT).unwrap().model_id, None);
    let new = old.replace(r#""expected_gear":1}"#, r#""expected_gear":1,"model_id":7}"#);
    assert_eq!(EnrichedEvent::decode(new.as_bytes(), LIMIT).unwrap().model_id, Some(7));
    // An alert of either age, with reasons and thresholds after: read as the enriched event.
    for alert in [
        new.replace(
            '}',
            r#","alert_reasons":["speed"],"thresholds":{"max_speed":90.5,"max_rpm":5500,"gear_rule":false}}"#,
        ),
        old.replace(r#""expected_gear":1}"#, r#""expected_gear":1,"alert_reasons":[]}"#),
    ] {
        let e = EnrichedEvent::decode(alert.as_bytes(), LIMIT).unwrap();
        assert_eq!(e.speed, 1.0, "{alert}");
    }
}

#[test]
fn poison_records_are_rejected_with_a_reason() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "no value"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{\"event_id\":", "not valid JSON"),
        (b"[1,2,3]", "does not match"),
        (br#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":1,"rpm":900,"gear":1}"#, "missing field `speed`"),
        (br#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":"x","speed":1,"rpm":900,"gear":1}"#, "invalid type"),
        (br#"{"event_id":"not-a-uuid","event_time":"2026-01-02T03:04:05Z","car_id":1,"speed":1,"rpm":900,"gear":1}"#, "does not match"),
        (br#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"noon","car_id":1,"speed":1,"rpm":900,"gear":1}"#, "not an RFC 3339"),
        (br#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":1,"speed":NaN,"rpm":900,"gear":1}"#, "not valid JSON"),
        (br#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":1,"speed":1e999,"rpm":900,"gear":1}"#, "out of range"),
        // What the hand reader sees first and must still refuse.
        (br#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":-0,"speed":1,"rpm":900,"gear":1}"#, "invalid type: floating point"),
        (br#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":01,"speed":1,"rpm":900,"gear":1}"#, "not valid JSON"),
        (br#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":1,"speed":1.,"rpm":900,"gear":1}"#, "not valid JSON"),
        (br#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":1,"speed":1,"rpm":3000000000,"gear":1}"#, "expected i32"),
        (br#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05Z","car_id":1,"speed":1,"rpm":900,"gear":1}x"#, "trailing characters"),
        (b"{\"event_id\":\"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab\",\"event_time\":\"2026-01-02T03:04:05\nZ\",\"car_id\":1,\"speed\":1,\"rpm\":900,\"gear\":1}", "control character"),
        (b"{\"event_id\":\"5f0c1d3e-8b1a-4c3d-9e2f-0123456789a\xff\",\"event_time\":\"2026-01-02T03:04:05Z\",\"car_id\":1,\"speed\":1,\"rpm\":900,\"gear\":1}", "not UTF-8"),
    ];
    for (bytes, reason) in cases {
        let err = SensorEvent::decode(bytes, LIMIT).unwrap_err().to_string();
        assert!(err.contains(reason), "{:?}: `{err}` lacks `{reason}`", String::from_utf8_lossy(bytes));
    }
    let big = vec![b' '; 2048];
    assert_eq!(SensorEvent::decode(&big, 1024).unwrap_err(), DecodeError::Oversized { size: 2048, limit: 1024 });
}

#[test]
fn non_finite_speed_is_rejected_by_validation() {
    for speed in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let e = SensorEvent { speed, ..sample() };
        let err = e.validate().unwrap_err().to_string();
        assert!(err.starts_with("invalid speed:"), "{err}");
    }
}

#[test]
fn enriched_names_borrow_from_the_record_unless_escaped() {
    let json = r#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05.067Z","car_id":1,"speed":1.5,"rpm":900,"gear":1,"driver_id":7,"brand_name":"Kia","model_name":"R\u00edo \"x\"","color_name":null,"expected_gear":1}"#;
    let e = EnrichedEvent::decode(json.as_bytes(), LIMIT).unwrap();
    assert!(matches!(e.brand_name, Some(Cow::Borrowed("Kia"))), "{e:?}");
    assert_eq!(e.model_name.as_deref(), Some("Río \"x\""));
    assert_eq!((e.driver_id, e.color_name.as_deref()), (Some(7), None));
    // Written back with serde_json's escapes (only `"` here: `í` is written as is).
    let out = String::from_utf8(e.encode()).unwrap();
    assert!(out.contains(r#""model_name":"Río \"x\"","#), "{out}");
    assert_eq!(e.clone().into_owned(), e);
}
