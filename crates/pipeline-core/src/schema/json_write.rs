//! The events' JSON appended straight into a caller's buffer, without serde's machinery (its
//! per-key escaping and the `flatten` map of an alert cost more than the rest of the hot path).
//!
//! The bytes are exactly those serde_json writes for the derived structs: numbers go through
//! serde_json's own formatter, strings are escaped by the same table, a non-finite float is
//! `null`. `tests/encode_reference.rs` checks this against the serde-derived encoders.

use serde_json::ser::{CompactFormatter, Formatter};
use uuid::Uuid;

use super::{AlertEvent, EnrichedEvent, SensorEvent, event_time};

/// Appends a sensor event.
pub(super) fn sensor(buf: &mut Vec<u8>, e: &SensorEvent) {
    buf.reserve(160);
    reading(buf, e.event_id, &e.event_time, e.car_id, e.speed, e.rpm, e.gear);
    buf.push(b'}');
}

/// Appends an enriched event.
pub(super) fn enriched(buf: &mut Vec<u8>, e: &EnrichedEvent<'_>) {
    buf.reserve(288);
    enriched_fields(buf, e);
    buf.push(b'}');
}

/// Appends an alert: the enriched event's fields, then `alert_reasons` and `thresholds`.
pub(super) fn alert(buf: &mut Vec<u8>, a: &AlertEvent<'_>) {
    buf.reserve(384);
    enriched_fields(buf, a.event);
    buf.extend_from_slice(b",\"alert_reasons\":[");
    for (i, name) in a.alert_reasons.names().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        string(buf, name);
    }
    buf.extend_from_slice(b"],\"thresholds\":{\"max_speed\":");
    float(buf, a.thresholds.max_speed);
    buf.extend_from_slice(b",\"max_rpm\":");
    int(buf, a.thresholds.max_rpm.into());
    buf.extend_from_slice(if a.thresholds.gear_rule { b",\"gear_rule\":true}}" } else { b",\"gear_rule\":false}}" });
}

/// `{` and an enriched event's fields, without the closing brace (an alert adds one more).
fn enriched_fields(buf: &mut Vec<u8>, e: &EnrichedEvent<'_>) {
    reading(buf, e.event_id, &e.event_time, e.car_id, e.speed, e.rpm, e.gear);
    buf.extend_from_slice(b",\"driver_id\":");
    match e.driver_id {
        Some(id) => int(buf, id),
        None => buf.extend_from_slice(b"null"),
    }
    for (key, value) in [
        (&b",\"brand_name\":"[..], &e.brand_name),
        (b",\"model_name\":", &e.model_name),
        (b",\"color_name\":", &e.color_name),
    ] {
        buf.extend_from_slice(key);
        match value {
            Some(s) => string(buf, s),
            None => buf.extend_from_slice(b"null"),
        }
    }
    buf.extend_from_slice(b",\"expected_gear\":");
    int(buf, e.expected_gear.into());
    buf.extend_from_slice(b",\"model_id\":");
    match e.model_id {
        Some(id) => int(buf, id.into()),
        None => buf.extend_from_slice(b"null"),
    }
}

/// `{` and the six fields every event starts with.
fn reading(
    buf: &mut Vec<u8>,
    id: Uuid,
    time: &chrono::DateTime<chrono::Utc>,
    car: i64,
    speed: f64,
    rpm: i32,
    gear: i32,
) {
    buf.extend_from_slice(b"{\"event_id\":\"");
    buf.extend_from_slice(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
    buf.extend_from_slice(b"\",\"event_time\":\"");
    event_time::format_into(time, buf);
    buf.extend_from_slice(b"\",\"car_id\":");
    int(buf, car);
    buf.extend_from_slice(b",\"speed\":");
    float(buf, speed);
    buf.extend_from_slice(b",\"rpm\":");
    int(buf, rpm.into());
    buf.extend_from_slice(b",\"gear\":");
    int(buf, gear.into());
}

/// An integer, as serde_json writes it (`itoa`).
fn int(buf: &mut Vec<u8>, v: i64) {
    CompactFormatter.write_i64(buf, v).expect("writing to a Vec cannot fail");
}

/// A float as serde_json writes it: its shortest round-trip form, `null` when not finite.
fn float(buf: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        CompactFormatter.write_f64(buf, v).expect("writing to a Vec cannot fail");
    } else {
        buf.extend_from_slice(b"null");
    }
}

/// A JSON string, escaped as serde_json does: `"` and `\` with a backslash, the control
/// characters U+0000..=U+001F as `\b \t \n \f \r` or `\u00XX` (lowercase hex), nothing else.
fn string(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    buf.push(b'"');
    // Names rarely need escaping: then the text goes as it is.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0A => b'n',
            0x0C => b'f',
            0x0D => b'r',
            0x00..=0x1F => b'u',
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if escape == b'u' {
            buf.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xF)]]);
        } else {
            buf.extend_from_slice(&[b'\\', escape]);
        }
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}
