//! A fast reader for the layout the pipeline itself writes: the fields in the schema's order,
//! strings without escapes, plain numbers (whitespace between tokens is allowed, as Python's
//! `json.dumps` puts it there).
//!
//! It answers None for anything else, and the caller then decodes with serde_json, which gives
//! the answer (value or error) for every other input. So this reader may only accept what
//! serde_json accepts (valid UTF-8 included), with the same value: each step says why it does.
//! It reads bytes: every byte it accepts is an ASCII byte it expected, or inside a string it
//! checks as UTF-8, and it accepts only when it has read them all.

use std::borrow::Cow;

use uuid::Uuid;

use super::{EnrichedEvent, SensorEvent, event_time};

/// `,"name":` (the literal the reader expects next).
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":").as_bytes()
    };
}

/// Reads a sensor event in the canonical layout.
pub(super) fn sensor(bytes: &[u8]) -> Option<SensorEvent> {
    let mut c = Cursor { b: bytes, pos: 0 };
    let e = reading(&mut c)?;
    c.end()?;
    Some(e)
}

/// Reads an enriched event in the canonical layout, or an alert (an enriched event followed by
/// `alert_reasons`, a field the enriched schema ignores).
pub(super) fn enriched(bytes: &[u8]) -> Option<EnrichedEvent<'_>> {
    let mut c = Cursor { b: bytes, pos: 0 };
    let r = reading(&mut c)?;
    c.key(key!("driver_id"))?;
    let driver_id = c.nullable(Cursor::int)?;
    c.key(key!("brand_name"))?;
    let brand_name = c.nullable(Cursor::str)?;
    c.key(key!("model_name"))?;
    let model_name = c.nullable(Cursor::str)?;
    c.key(key!("color_name"))?;
    let color_name = c.nullable(Cursor::str)?;
    c.key(key!("expected_gear"))?;
    let expected_gear = c.i32()?;
    // Added after the seed's fields: a record written before it has none (null, as serde's
    // default), and only the compact spelling is read here (any other goes to serde_json).
    let model_id = if c.b[c.pos..].starts_with(key!("model_id")) {
        c.pos += key!("model_id").len();
        c.nullable(Cursor::i32)?
    } else {
        None
    };
    c.ws();
    if c.peek() == b',' {
        // An alert's reasons and thresholds: serde_json checks an ignored value's syntax, so
        // do we (exactly the detector's layout; anything else is serde_json's to read).
        c.key(key!("alert_reasons"))?;
        c.byte(b'[')?;
        c.ws();
        if c.peek() != b']' {
            c.str()?;
            while c.ws_peek() == b',' {
                c.pos += 1;
                c.str()?;
            }
        }
        c.byte(b']')?;
        if c.ws_peek() == b',' {
            c.key(key!("thresholds"))?;
            c.key(b"{\"max_speed\":")?;
            c.float()?;
            c.key(key!("max_rpm"))?;
            c.int()?;
            c.key(key!("gear_rule"))?;
            c.bool()?;
            c.byte(b'}')?;
        }
    }
    c.end()?;
    Some(EnrichedEvent {
        event_id: r.event_id,
        event_time: r.event_time,
        car_id: r.car_id,
        speed: r.speed,
        rpm: r.rpm,
        gear: r.gear,
        driver_id,
        brand_name: brand_name.map(Cow::Borrowed),
        model_name: model_name.map(Cow::Borrowed),
        color_name: color_name.map(Cow::Borrowed),
        expected_gear,
        model_id,
    })
}

/// `{` and the six fields every event starts with.
fn reading(c: &mut Cursor<'_>) -> Option<SensorEvent> {
    c.key(b"{\"event_id\":")?;
    // The very parser of `Uuid`'s `Deserialize` (`FromStr`). What it accepts is 36 hex digits
    // and hyphens: no quote, escape or non-ASCII byte inside.
    let event_id = Uuid::try_parse_ascii(c.quoted(36)?).ok()?;
    c.pos += 38;
    c.key(key!("event_time"))?;
    // The `Z` form is read in place (it accepts digits and separators only); any other text
    // as a string, by the full parser.
    let event_time = match c.quoted(24).and_then(event_time::parse_z) {
        Some(t) => {
            c.pos += 26;
            t
        }
        None => event_time::parse(c.str()?).ok()?,
    };
    c.key(key!("car_id"))?;
    let car_id = c.int()?;
    c.key(key!("speed"))?;
    let speed = c.float()?;
    c.key(key!("rpm"))?;
    let rpm = c.i32()?;
    c.key(key!("gear"))?;
    let gear = c.i32()?;
    Some(SensorEvent { event_id, event_time, car_id, speed, rpm, gear })
}

/// `10^i` for i in 0..=15, the exact powers serde_json divides by.
const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// The bytes that end the plain run of a JSON string: its closing quote, an escape, or a control
/// character (an error). One table look-up per byte instead of three comparisons.
static STOPS_STRING: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A position in a record's bytes.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The next byte, 0 at the end (0 is nothing the reader accepts).
    #[inline]
    fn peek(&self) -> u8 {
        self.b.get(self.pos).copied().unwrap_or(0)
    }

    /// Skips JSON's whitespace (space, tab, newline, carriage return), as serde_json does
    /// between any two tokens.
    #[inline]
    fn ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    #[inline]
    fn ws_peek(&mut self) -> u8 {
        self.ws();
        self.peek()
    }

    /// Whitespace, then `b`.
    #[inline]
    fn byte(&mut self, b: u8) -> Option<()> {
        if self.peek() != b && self.ws_peek() != b {
            return None;
        }
        self.pos += 1;
        Some(())
    }

    /// `lit`: a separator (`{` or `,`), a quoted key and `:`. Compact input (the pipeline's
    /// own) is one comparison; the key's text must be the name itself (a key spelled with
    /// escapes, or another key, is left to serde_json).
    #[inline(always)]
    fn key(&mut self, lit: &[u8]) -> Option<()> {
        if self.b[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            return Some(());
        }
        self.key_spaced(lit)
    }

    /// [`Cursor::key`] with whitespace between the tokens.
    #[cold]
    fn key_spaced(&mut self, lit: &[u8]) -> Option<()> {
        let (sep, name) = (lit[0], &lit[1..lit.len() - 1]);
        self.byte(sep)?;
        self.ws();
        self.b[self.pos..].starts_with(name).then(|| self.pos += name.len())?;
        self.byte(b':')
    }

    /// The closing `}`, then only whitespace (serde_json's trailing-characters rule).
    #[inline]
    fn end(&mut self) -> Option<()> {
        self.byte(b'}')?;
        self.ws();
        (self.pos == self.b.len()).then_some(())
    }

    /// A string without escapes or control characters (both handled, or refused, by
    /// serde_json): its content is the text between the quotes, if UTF-8.
    #[inline]
    fn str(&mut self) -> Option<&'a str> {
        self.byte(b'"')?;
        let start = self.pos;
        let len = self.b[start..].iter().position(|&b| STOPS_STRING[usize::from(b)])?;
        self.pos = start + len;
        // The quote itself, not after whitespace: a raw newline inside a string is an error.
        (self.peek() == b'"').then(|| self.pos += 1)?;
        std::str::from_utf8(&self.b[start..start + len]).ok()
    }

    /// The `len` bytes after a quote here when another quote follows them, not consumed
    /// (the caller checks them, then skips `len + 2`); no whitespace before.
    #[inline]
    fn quoted(&self, len: usize) -> Option<&'a [u8]> {
        let (open, close) = (self.pos, self.pos + 1 + len);
        (self.b.get(open) == Some(&b'"') && self.b.get(close) == Some(&b'"')).then(|| &self.b[open + 1..close])
    }

    /// `null` (None) or a value read by `f`.
    #[inline]
    fn nullable<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.ws_peek() == b'n' {
            self.b[self.pos..].starts_with(b"null").then(|| self.pos += 4)?;
            return Some(None);
        }
        f(self).map(Some)
    }

    /// Optional `-`, then up to 15 digits without a leading zero (unless alone): serde_json's
    /// integer grammar, in a range that cannot overflow. Returns (negative, digits, count).
    #[inline]
    fn digits(&mut self) -> Option<(bool, u64, usize)> {
        let negative = self.ws_peek() == b'-';
        self.pos += usize::from(negative);
        let start = self.pos;
        let mut value = 0u64;
        loop {
            let d = self.peek().wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            value = value * 10 + u64::from(d);
            self.pos += 1;
            if self.pos - start > 15 {
                return None;
            }
        }
        let count = self.pos - start;
        let leading_zero = count > 1 && self.b[start] == b'0';
        (count > 0 && !leading_zero).then_some((negative, value, count))
    }

    /// An integer that a following `.`, `e` or digit does not make a float: the next token's
    /// check (`,` or `}`) refuses those. `-0` is a float to serde_json (an i64 field refuses
    /// it), so it is left to serde_json.
    #[inline]
    fn int(&mut self) -> Option<i64> {
        let (negative, value, _) = self.digits()?;
        let value = i64::try_from(value).ok()?;
        match (negative, value) {
            (true, 0) => None,
            (true, v) => Some(-v),
            (false, v) => Some(v),
        }
    }

    /// `true` or `false`.
    #[inline]
    fn bool(&mut self) -> Option<bool> {
        self.ws();
        for (lit, value) in [(&b"true"[..], true), (b"false", false)] {
            if self.b[self.pos..].starts_with(lit) {
                self.pos += lit.len();
                return Some(value);
            }
        }
        None
    }

    #[inline]
    fn i32(&mut self) -> Option<i32> {
        i32::try_from(self.int()?).ok()
    }

    /// A number `-?int(.frac)?` of at most 15 digits in all, no exponent. serde_json computes
    /// it as (digits as f64) / 10^(fraction digits), negated for `-`: both operands are exact
    /// here (below 2^53, powers up to 10^15), so the one rounded division gives its result, and
    /// the correctly rounded one of its `float_roundtrip` mode as well.
    #[inline]
    fn float(&mut self) -> Option<f64> {
        let (negative, int, int_digits) = self.digits()?;
        let (mut value, mut frac_digits) = (int, 0);
        if self.peek() == b'.' {
            self.pos += 1;
            loop {
                let d = self.peek().wrapping_sub(b'0');
                if d > 9 {
                    break;
                }
                value = value * 10 + u64::from(d);
                frac_digits += 1;
                self.pos += 1;
                if int_digits + frac_digits > 15 {
                    return None;
                }
            }
            if frac_digits == 0 {
                return None;
            }
        }
        // At most 15 digits: below 2^53, so the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let f = value as f64 / POW10[frac_digits];
        Some(if negative { -f } else { f })
    }
}
