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
//!
//! The codec is on every record's path, so it avoids work per event: an event borrows its
//! strings from the record it was decoded from ([`EnrichedEvent`]'s lifetime), the layout the
//! pipeline writes is read by a small hand reader (`json_read`, serde_json decides everything
//! else), and encoding appends straight into the caller's buffer (`json_write`).

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use uuid::Uuid;

pub mod event_time;
mod json_read;
mod json_write;
#[cfg(test)]
mod tests;

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

/// A JSON event type with its validation, decoded from a record that lives for `'a` (so it may
/// borrow from it; an owned type implements it for every `'a`).
pub trait JsonEvent<'a>: Serialize + Deserialize<'a> {
    /// Short schema name used in error messages.
    const SCHEMA: &'static str;

    /// Checks what deserialization cannot (finite numbers).
    fn validate(&self) -> Result<(), DecodeError>;

    /// The event's time in ms since the epoch, for the event-time lag (None: it has none).
    fn event_time_ms(&self) -> Option<i64> {
        None
    }

    /// A faster reader for some inputs, tried before the UTF-8 check and serde_json: None
    /// leaves the input to them, so it must accept only valid UTF-8 that serde_json accepts,
    /// as the same value.
    fn decode_fast(_bytes: &'a [u8]) -> Option<Self> {
        None
    }

    /// Decodes and validates one record value of at most `limit` bytes.
    fn decode(bytes: &'a [u8], limit: usize) -> Result<Self, DecodeError> {
        if bytes.len() > limit {
            return Err(DecodeError::Oversized { size: bytes.len(), limit });
        }
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        let event = match Self::decode_fast(bytes) {
            Some(event) => event,
            None => {
                let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
                serde_json::from_str(text).map_err(|e| match e.classify() {
                    serde_json::error::Category::Data => {
                        DecodeError::Schema { schema: Self::SCHEMA, detail: e.to_string() }
                    }
                    _ => DecodeError::Syntax(e.to_string()),
                })?
            }
        };
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

impl JsonEvent<'_> for SensorEvent {
    const SCHEMA: &'static str = "sensor event";

    fn event_time_ms(&self) -> Option<i64> {
        Some(self.event_time.timestamp_millis())
    }

    fn validate(&self) -> Result<(), DecodeError> {
        finite_speed(self.speed)
    }

    fn decode_fast(bytes: &[u8]) -> Option<Self> {
        json_read::sensor(bytes)
    }

    fn encode_into(&self, buf: &mut Vec<u8>) {
        json_write::sensor(buf, self);
    }
}

/// A sensor event joined with the dimension tables, as the enricher produces it to
/// `samples-enriched`. The dimension fields are `null` when the join found no row (the seed's
/// joins are left joins).
///
/// The names borrow (`'a`) from the join's tables when enriched, or from the record when
/// decoded: no string is copied per event. `EnrichedEvent<'static>` owns them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedEvent<'a> {
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
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    pub brand_name: Option<Cow<'a, str>>,
    /// `car_models.car_model` of the car's model, null when car or model is unknown.
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    pub model_name: Option<Cow<'a, str>>,
    /// `car_colors.color_name` of the car, null when car or color is unknown.
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    pub color_name: Option<Cow<'a, str>>,
    /// The gear the speed calls for (`rules::expected_gear`).
    pub expected_gear: i32,
    /// `cars.model_id` of the car, null for an unknown car: the key the detector looks its
    /// thresholds up by (`rules::table::ModelRules`). Not in the seed's schema: added last, and
    /// a record without it reads as null.
    #[serde(default)]
    pub model_id: Option<i32>,
}

impl EnrichedEvent<'_> {
    /// The same event owning its strings (to keep it past its record).
    pub fn into_owned(self) -> EnrichedEvent<'static> {
        let own = |s: Option<Cow<'_, str>>| s.map(|s| Cow::Owned(s.into_owned()));
        EnrichedEvent {
            brand_name: own(self.brand_name),
            model_name: own(self.model_name),
            color_name: own(self.color_name),
            ..self
        }
    }
}

impl<'a> JsonEvent<'a> for EnrichedEvent<'a> {
    const SCHEMA: &'static str = "enriched event";

    fn event_time_ms(&self) -> Option<i64> {
        Some(self.event_time.timestamp_millis())
    }

    fn validate(&self) -> Result<(), DecodeError> {
        finite_speed(self.speed)
    }

    fn decode_fast(bytes: &'a [u8]) -> Option<Self> {
        json_read::enriched(bytes)
    }

    fn encode_into(&self, buf: &mut Vec<u8>) {
        json_write::enriched(buf, self);
    }
}

/// An optional string borrowed from the input when it has no escapes (serde's own `Option<Cow>`
/// always copies). Messages as `Option<String>`'s: "expected a string".
fn borrowed_str<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct Str;
    impl<'de> de::Visitor<'de> for Str {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    struct Opt;
    impl<'de> de::Visitor<'de> for Opt {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("option")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_string(Str).map(Some)
        }
    }
    d.deserialize_option(Opt)
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
/// the rules it broke (`"alert_reasons": ["speed", "rpm", "gear"]`, a subset in that order) and
/// the thresholds it was judged by (`"thresholds": {"max_speed": …, "max_rpm": …, "gear_rule":
/// …}`; the rules version is the record's `rules.version` header). Consumers that read it as an
/// [`EnrichedEvent`] ignore the extra fields.
#[derive(Debug, Serialize)]
pub struct AlertEvent<'a> {
    /// The enriched event that broke a rule.
    #[serde(flatten)]
    pub event: &'a EnrichedEvent<'a>,
    /// Which rules it broke.
    pub alert_reasons: AlertReasons,
    /// The thresholds of its model it was judged by.
    pub thresholds: crate::rules::AlertRules,
}

impl AlertEvent<'_> {
    /// Appends the JSON encoding to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        json_write::alert(buf, self);
    }
}
