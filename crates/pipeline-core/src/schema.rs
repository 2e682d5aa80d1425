//! The events that travel through the pipeline, and their JSON codec.
//!
//! Field names and order are the seed's: a consumer written against the original Spark jobs
//! reads ours unchanged. `event_time` is written as RFC 3339 UTC with milliseconds and `Z`
//! (`2026-01-01T12:00:00.000Z`); it is read from any RFC 3339 offset and fraction (Python's
//! `isoformat()` with `+00:00` and microseconds included), and a timestamp without an offset is
//! taken as UTC, as the seed's producers write UTC.
//!
//! Decoding validates what the JSON grammar cannot: a non-finite speed is rejected with a reason,
//! so a poison record is dead-lettered instead of reaching the rules or the windows.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

/// Why a record could not be decoded. The text is what lands in the dead-letter header, so it
/// names the problem precisely (serde_json's messages carry the field and column).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The record is larger than the configured limit; it is not even parsed.
    #[error("record of {size} bytes exceeds the {limit}-byte limit")]
    Oversized { size: usize, limit: usize },
    /// The record has no value (a tombstone or an empty payload).
    #[error("record has no value")]
    Empty,
    /// The bytes are not UTF-8, so they cannot be JSON.
    #[error("value is not UTF-8: {0}")]
    NotUtf8(String),
    /// The bytes are not well-formed JSON.
    #[error("value is not valid JSON: {0}")]
    Syntax(String),
    /// Well-formed JSON that does not match the schema: a missing or wrongly typed field.
    #[error("value does not match the {schema} schema: {detail}")]
    Schema { schema: &'static str, detail: String },
    /// Schema-correct JSON with a value no event can have (NaN or infinite speed).
    #[error("invalid {field}: {detail}")]
    Invalid { field: &'static str, detail: String },
}

/// A JSON event type with its validation.
pub trait JsonEvent: Serialize + DeserializeOwned {
    /// Short schema name used in error messages.
    const SCHEMA: &'static str;

    /// Checks what deserialization cannot (finite numbers).
    fn validate(&self) -> Result<(), DecodeError>;

    /// Decodes and validates one record value of at most `limit` bytes.
    fn decode(bytes: &[u8], limit: usize) -> Result<Self, DecodeError> {
        if bytes.len() > limit {
            return Err(DecodeError::Oversized { size: bytes.len(), limit });
        }
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
        let event: Self = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => DecodeError::Schema { schema: Self::SCHEMA, detail: e.to_string() },
            _ => DecodeError::Syntax(e.to_string()),
        })?;
        event.validate()?;
        Ok(event)
    }

    /// Appends the JSON encoding to `buf` (reused across records by the callers).
    fn encode_into(&self, buf: &mut Vec<u8>) {
        // Serializing these plain structs into a Vec cannot fail: no maps with non-string
        // keys, and the only floats are validated finite (serde_json writes non-finite as null).
        serde_json::to_writer(&mut *buf, self).expect("event serialization is infallible");
    }

    /// The JSON encoding as a new buffer.
    fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(256);
        self.encode_into(&mut buf);
        buf
    }
}

fn finite_speed(speed: f64) -> Result<(), DecodeError> {
    if speed.is_finite() {
        Ok(())
    } else {
        Err(DecodeError::Invalid { field: "speed", detail: format!("{speed} is not a finite number") })
    }
}

/// One telemetry reading, as the generator produces it to `sensors-sample`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorEvent {
    /// Unique id of the reading; lets every stage be checked for loss and duplicates.
    pub event_id: Uuid,
    /// When the reading was taken (event time, drives the counter's windows).
    #[serde(with = "event_time")]
    pub event_time: DateTime<Utc>,
    /// The car that sent it; the join key into the `cars` dimension and the Kafka key.
    pub car_id: i64,
    /// Speed in km/h.
    pub speed: f64,
    /// Engine revolutions per minute.
    pub rpm: i32,
    /// Gear engaged (1..6 from the generator).
    pub gear: i32,
}

impl JsonEvent for SensorEvent {
    const SCHEMA: &'static str = "sensor event";

    fn validate(&self) -> Result<(), DecodeError> {
        finite_speed(self.speed)
    }
}

/// A sensor event joined with the dimension tables, as the enricher produces it to
/// `samples-enriched`. The dimension fields are `null` when the join found no row (the seed's
/// joins are left joins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedEvent {
    /// Copied from the sensor event.
    pub event_id: Uuid,
    /// Copied from the sensor event.
    #[serde(with = "event_time")]
    pub event_time: DateTime<Utc>,
    /// Copied from the sensor event.
    pub car_id: i64,
    /// Copied from the sensor event.
    pub speed: f64,
    /// Copied from the sensor event.
    pub rpm: i32,
    /// Copied from the sensor event.
    pub gear: i32,
    /// The car's driver (`cars.driver_id`), null for an unknown car.
    #[serde(default)]
    pub driver_id: Option<i64>,
    /// `car_models.car_brand` of the car's model, null when car or model is unknown.
    #[serde(default)]
    pub brand_name: Option<String>,
    /// `car_models.car_model` of the car's model, null when car or model is unknown.
    #[serde(default)]
    pub model_name: Option<String>,
    /// `car_colors.color_name` of the car, null when car or color is unknown.
    #[serde(default)]
    pub color_name: Option<String>,
    /// The gear the speed calls for (`rules::expected_gear`).
    pub expected_gear: i32,
}

impl JsonEvent for EnrichedEvent {
    const SCHEMA: &'static str = "enriched event";

    fn validate(&self) -> Result<(), DecodeError> {
        finite_speed(self.speed)
    }
}

/// Which rules an event broke. Serialized as the list of names, in this order:
/// `["speed", "rpm", "gear"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertReasons {
    /// Speed above the speed limit (`rules::AlertRules::max_speed`).
    pub speed: bool,
    /// Rpm above the rpm limit (`rules::AlertRules::max_rpm`).
    pub rpm: bool,
    /// Gear different from `expected_gear`.
    pub gear: bool,
}

impl AlertReasons {
    /// True when no rule was broken (the event is not an alert).
    pub fn is_empty(&self) -> bool {
        !(self.speed || self.rpm || self.gear)
    }

    /// The names of the broken rules.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        [(self.speed, "speed"), (self.rpm, "rpm"), (self.gear, "gear")]
            .into_iter()
            .filter_map(|(hit, name)| hit.then_some(name))
    }
}

impl Serialize for AlertReasons {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

/// An alert as the detector produces it to `alert-data`: the enriched event's fields followed by
/// the rules it broke (`"alert_reasons": ["speed", "rpm", "gear"]`, a subset in that order).
/// Consumers that read it as an [`EnrichedEvent`] ignore the extra field.
#[derive(Debug, Serialize)]
pub struct AlertEvent<'a> {
    /// The enriched event that broke a rule.
    #[serde(flatten)]
    pub event: &'a EnrichedEvent,
    /// Which rules it broke.
    pub alert_reasons: AlertReasons,
}

impl AlertEvent<'_> {
    /// Appends the JSON encoding to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        serde_json::to_writer(&mut *buf, self).expect("alert serialization is infallible");
    }
}

/// (De)serializes `event_time`: written as RFC 3339 UTC with milliseconds and `Z`, read from
/// any RFC 3339 timestamp (or one without offset, taken as UTC).
pub mod event_time {
    use super::*;
    use serde::{Deserializer, Serializer, de};

    /// Formats a timestamp the way every event carries it.
    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Parses an RFC 3339 timestamp with any offset and fraction; no offset means UTC.
    pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(t.with_timezone(&Utc));
        }
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|t| t.and_utc())
            .map_err(|_| format!("`{s}` is not an RFC 3339 timestamp"))
    }

    /// serde `serialize_with`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    /// serde `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = DateTime<Utc>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
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
                r#""gear":1,"driver_id":null,"brand_name":null,"model_name":null,"color_name":null,"expected_gear":1}"#
            ),
            "{out}"
        );
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
}
