//! (De)serializes `event_time`: written as RFC 3339 UTC with milliseconds and `Z`, read from
//! any RFC 3339 timestamp (or one without offset, taken as UTC).
//!
//! Writing is on every event's hot path, so the canonical form is formatted by hand into a
//! stack buffer; chrono formats what that form cannot hold (years outside 0..=9999, leap
//! seconds), so the bytes are chrono's in every case. Reading is also on the hot path: the
//! `Z` form events are written in is read by hand, anything else by chrono.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Timelike, Utc};
use serde::{Deserializer, Serializer, de};

/// Length of the canonical form `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const CANONICAL_LEN: usize = 24;

/// "00" to "99", back to back.
const DIGIT_PAIRS: &[u8; 200] = &{
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        // Each of `i / 10` and `i % 10` is a digit: the casts cannot truncate.
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Formats a timestamp the way every event carries it.
pub fn format(t: &DateTime<Utc>) -> String {
    match canonical(t) {
        // The canonical form is ASCII digits and separators.
        Some(bytes) => bytes.iter().map(|&b| char::from(b)).collect(),
        None => t.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// Appends [`format()`]'s text to `buf`, without allocating for the canonical form.
pub fn format_into(t: &DateTime<Utc>, buf: &mut Vec<u8>) {
    match canonical(t) {
        Some(bytes) => buf.extend_from_slice(&bytes),
        None => buf.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::Millis, true).as_bytes()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` as chrono writes it (milliseconds truncated), or None where
/// chrono writes something else: a year outside 0..=9999 (signed, longer) or a leap second.
fn canonical(t: &DateTime<Utc>) -> Option<[u8; CANONICAL_LEN]> {
    let (date, time) = (t.date_naive(), t.time());
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    // Two digits at a time from a table: a third of the divisions.
    let mut put2 = |at: usize, v: u32| {
        let i = 2 * (v as usize % 100);
        out[at..at + 2].copy_from_slice(&DIGIT_PAIRS[i..i + 2]);
    };
    put2(0, year / 100);
    put2(2, year);
    put2(5, date.month());
    put2(8, date.day());
    put2(11, time.hour());
    put2(14, time.minute());
    put2(17, time.second());
    let millis = nanos / 1_000_000;
    put2(21, millis);
    // `millis / 100` is a digit: the cast cannot truncate.
    out[20] = b'0' + (millis / 100) as u8;
    Some(out)
}

/// Parses an RFC 3339 timestamp with any offset and fraction; no offset means UTC.
pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
    if let Some(t) = parse_z(s.as_bytes()) {
        return Ok(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|t| t.and_utc())
        .map_err(|_| format!("`{s}` is not an RFC 3339 timestamp"))
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, the form events are written in, or None for anything else
/// (chrono's RFC 3339 parser then decides). What it reads, chrono reads as the same instant; a
/// leap second (`:60`) is left to chrono.
pub(super) fn parse_z(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 20 || b[b.len() - 1] != b'Z' || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    #[inline(always)]
    fn num(b: &[u8], at: usize, len: usize) -> Option<u32> {
        let mut v = 0u32;
        for &c in &b[at..at + len] {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + u32::from(d);
        }
        Some(v)
    }
    let nanos = match b.len() {
        20 => 0,
        n @ 22..=30 if b[19] == b'.' => num(b, 20, n - 21)? * 10u32.pow(u32::try_from(30 - n).ok()?),
        _ => return None,
    };
    // Four digits: at most 9999, which an i32 holds.
    let year = i32::try_from(num(b, 0, 4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, num(b, 5, 2)?, num(b, 8, 2)?)?;
    let time = NaiveTime::from_hms_nano_opt(num(b, 11, 2)?, num(b, 14, 2)?, num(b, 17, 2)?, nanos)?;
    Some(date.and_time(time).and_utc())
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::{Rng, SeedableRng};

    /// chrono's own formatting, which the hand-written one must equal.
    fn chrono_format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// The parser as it was: chrono's alone.
    fn chrono_parse(s: &str) -> Result<DateTime<Utc>, String> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(t.with_timezone(&Utc));
        }
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|t| t.and_utc())
            .map_err(|_| format!("`{s}` is not an RFC 3339 timestamp"))
    }

    #[test]
    fn z_form_is_read_as_chrono_reads_it() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let mut texts = vec![
            "2026-01-02T03:04:05Z".to_owned(),
            "2026-01-02T03:04:05.Z".to_owned(),
            "2016-12-31T23:59:60.5Z".to_owned(),
            "2024-02-29T23:59:59.999999999Z".to_owned(),
            "2023-02-29T00:00:00Z".to_owned(),
            "0000-01-01T00:00:00.000Z".to_owned(),
            "+2026-01-02T03:04:05Z".to_owned(),
            "2026-01-02T03:04:05.1234567890Z".to_owned(),
        ];
        for _ in 0..50_000 {
            let n =
                |hi: u32, width: usize, rng: &mut rand::rngs::StdRng| format!("{:0width$}", rng.random_range(0..=hi));
            let frac = match rng.random_range(0..12) {
                0 => String::new(),
                k => format!(".{}", n(999_999_999, 9, &mut rng).get(..k).unwrap_or("1234567890")),
            };
            texts.push(format!(
                "{}-{}-{}T{}:{}:{}{frac}Z",
                n(9999, 4, &mut rng),
                n(13, 2, &mut rng),
                n(32, 2, &mut rng),
                n(25, 2, &mut rng),
                n(61, 2, &mut rng),
                n(61, 2, &mut rng)
            ));
        }
        let mut fast = 0;
        for t in &texts {
            fast += usize::from(parse_z(t.as_bytes()).is_some());
            assert_eq!(parse(t), chrono_parse(t), "{t}");
        }
        assert!(fast > 10_000, "{fast} read by hand");
    }

    #[test]
    fn canonical_format_is_chronos() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut times: Vec<DateTime<Utc>> = (0..20_000)
            .map(|_| {
                let secs = rng.random_range(-62_200_000_000..=253_500_000_000_i64);
                DateTime::from_timestamp(secs, rng.random_range(0..1_000_000_000)).unwrap()
            })
            .collect();
        times.extend([
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + chrono::Duration::nanoseconds(999_999_999),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            // A leap second: chrono writes it as second 60.
            chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_milli_opt(23, 59, 59, 1_500)
                .unwrap()
                .and_utc(),
        ]);
        for t in &times {
            let mut buf = b"x".to_vec();
            format_into(t, &mut buf);
            assert_eq!(&buf[1..], chrono_format(t).as_bytes(), "{t:?}");
            assert_eq!(format(t), chrono_format(t), "{t:?}");
        }
    }
}
