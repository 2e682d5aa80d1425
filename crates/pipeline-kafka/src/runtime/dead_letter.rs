//! Dead letters: a refused record's bytes, key and headers plus `dlq.*` headers saying where it
//! came from and why it was refused.
//!
//! Two kinds: a poison input (it does not decode), and an output the broker refused for good
//! (too large, invalid), which then stands for its input. Either way the dead letter must itself
//! be accepted, or one bad record would stop the service on every restart: a value or a key that
//! does not fit under the producer's `message.max.bytes` keeps its head, and the headers say it
//! was truncated, its original size and the SHA-256 of the whole original.

use std::fmt::Write as _;
use std::sync::Arc;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use sha2::{Digest, Sha256};

use super::processor::Output;

/// Header names carried by dead letters.
pub mod dlq_headers {
    /// Topic the refused input was read from.
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    /// Its partition (decimal).
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    /// Its offset (decimal).
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    /// The service that rejected it.
    pub const SERVICE: &str = "dlq.service";
    /// Why it was rejected.
    pub const ERROR: &str = "dlq.error";
    /// For an output the broker refused: the topic it was meant for (the value is that output).
    pub const OUTPUT_TOPIC: &str = "dlq.output.topic";
    /// `true` when the value is only the head of the original.
    pub const TRUNCATED: &str = "dlq.truncated";
    /// The original value's size in bytes (decimal), set when truncated.
    pub const ORIGINAL_SIZE: &str = "dlq.original.size";
    /// The original value's SHA-256 (lowercase hex), set when truncated.
    pub const ORIGINAL_SHA256: &str = "dlq.original.sha256";
    /// `true` when the key is only the head of the original (a key alone can exceed the limit).
    pub const KEY_TRUNCATED: &str = "dlq.key.truncated";
    /// The original key's size in bytes (decimal), set when the key is truncated.
    pub const ORIGINAL_KEY_SIZE: &str = "dlq.original.key.size";
    /// The original key's SHA-256 (lowercase hex), set when the key is truncated.
    pub const ORIGINAL_KEY_SHA256: &str = "dlq.original.key.sha256";
}

/// Room left for a record's framing (batch and record headers, varints) beyond its key, value
/// and header bytes, so a dead letter sized to the limit is never refused for a few bytes.
const FRAMING_BYTES: usize = 1024;

/// The longest `dlq.error` kept (a decode error can quote much of the input).
const MAX_ERROR_BYTES: usize = 1024;

/// Where a dead letter's record came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Source<'a, H> {
    /// Input topic.
    pub(super) topic: &'a str,
    /// Input partition.
    pub(super) partition: i32,
    /// Input offset.
    pub(super) offset: i64,
    /// The refused record's key.
    pub(super) key: Option<&'a [u8]>,
    /// The refused record's value.
    pub(super) payload: &'a [u8],
    /// The refused record's headers, copied first.
    pub(super) headers: Option<&'a H>,
    /// For a refused output, the topic it was meant for.
    pub(super) output_topic: Option<&'a str>,
}

/// The dead letter of `source`: its bytes (cut to fit `max_bytes` in all), key and headers,
/// plus the `dlq.*` headers.
pub(super) fn dead_letter<H: Headers>(
    dlq_topic: &Arc<str>,
    service: &str,
    source: Source<'_, H>,
    error: &dyn std::fmt::Display,
    max_bytes: usize,
) -> Output {
    let mut reason = error.to_string();
    if reason.len() > MAX_ERROR_BYTES {
        let cut = (0..=MAX_ERROR_BYTES).rev().find(|i| reason.is_char_boundary(*i)).unwrap_or(0);
        reason.truncate(cut);
        reason.push('…');
    }
    let (partition, offset) = (source.partition.to_string(), source.offset.to_string());
    let mut ours: Vec<(&str, String)> = vec![
        (dlq_headers::SOURCE_TOPIC, source.topic.to_owned()),
        (dlq_headers::SOURCE_PARTITION, partition),
        (dlq_headers::SOURCE_OFFSET, offset),
        (dlq_headers::SERVICE, service.to_owned()),
        (dlq_headers::ERROR, reason),
    ];
    if let Some(topic) = source.output_topic {
        ours.push((dlq_headers::OUTPUT_TOPIC, topic.to_owned()));
    }
    let header_bytes = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let copied: usize =
        source.headers.map_or(0, |h| h.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)).sum());
    // What truncating the key and the value adds: per part a flag, a size (at most 20 digits)
    // and 64 hex digits.
    let truncation_headers = dlq_headers::TRUNCATED.len()
        + dlq_headers::ORIGINAL_SIZE.len()
        + dlq_headers::ORIGINAL_SHA256.len()
        + dlq_headers::KEY_TRUNCATED.len()
        + dlq_headers::ORIGINAL_KEY_SIZE.len()
        + dlq_headers::ORIGINAL_KEY_SHA256.len()
        + 2 * (4 + 20 + 64);
    let fixed = FRAMING_BYTES + header_bytes(&ours) + truncation_headers;
    let room = max_bytes.saturating_sub(fixed);
    // The original headers go along unless they alone crowd out the key and value.
    let keep_headers = copied <= room / 2;
    let room = room - if keep_headers { copied } else { 0 };
    // The key goes whole unless it crowds out the value: then it keeps its head, half the room
    // at most (a key alone can exceed the limit and would make the dead letter refused too).
    let key_len = source.key.map_or(0, <[u8]>::len);
    let key_budget = if key_len + source.payload.len() <= room { key_len } else { key_len.min(room / 2) };
    let key = source.key.map(|key| {
        cut_to(
            key,
            key_budget,
            &mut ours,
            [dlq_headers::KEY_TRUNCATED, dlq_headers::ORIGINAL_KEY_SIZE, dlq_headers::ORIGINAL_KEY_SHA256],
        )
    });
    let value = cut_to(
        source.payload,
        room - key_budget,
        &mut ours,
        [dlq_headers::TRUNCATED, dlq_headers::ORIGINAL_SIZE, dlq_headers::ORIGINAL_SHA256],
    );
    let mut headers = OwnedHeaders::new();
    if let Some(original) = source.headers.filter(|_| keep_headers) {
        for h in original.iter() {
            headers = headers.insert(Header { key: h.key, value: h.value });
        }
    }
    for (key, value) in &ours {
        headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
    }
    Output { topic: dlq_topic.clone(), key, payload: value, headers: Some(headers) }
}

/// `bytes`, or its first `budget` bytes with the three `names` headers (flag, original size,
/// original SHA-256) added to `ours` saying what was cut.
fn cut_to<'h>(bytes: &[u8], budget: usize, ours: &mut Vec<(&'h str, String)>, names: [&'h str; 3]) -> Vec<u8> {
    if bytes.len() <= budget {
        return bytes.to_vec();
    }
    let [flag, size, sha256] = names;
    ours.push((flag, "true".to_owned()));
    ours.push((size, bytes.len().to_string()));
    ours.push((sha256, sha256_hex(bytes)));
    bytes[..budget].to_vec()
}

/// Lowercase hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header<'a>(h: &'a OwnedHeaders, key: &str) -> Option<&'a str> {
        h.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| std::str::from_utf8(v).unwrap())
    }

    fn source<'a>(payload: &'a [u8], headers: Option<&'a OwnedHeaders>) -> Source<'a, OwnedHeaders> {
        Source { topic: "in", partition: 2, offset: 41, key: Some(b"car-1"), payload, headers, output_topic: None }
    }

    /// The size librdkafka checks against `message.max.bytes`: key, value and headers.
    fn record_bytes(o: &Output) -> usize {
        let headers: usize =
            o.headers.as_ref().map_or(0, |h| h.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)).sum());
        o.key.as_ref().map_or(0, Vec::len) + o.payload.len() + headers
    }

    #[test]
    fn a_small_record_goes_whole_with_its_origin() {
        let original = OwnedHeaders::new().insert(Header { key: "trace", value: Some("t-1") });
        let dlq: Arc<str> = Arc::from("in.dlq");
        let o = dead_letter(&dlq, "enricher", source(b"{\"bad\":", Some(&original)), &"syntax error", 1_000_000);
        assert_eq!(o.payload, b"{\"bad\":");
        assert_eq!(o.key.as_deref(), Some(&b"car-1"[..]));
        let h = o.headers.as_ref().unwrap();
        assert_eq!(header(h, "trace"), Some("t-1"));
        assert_eq!(header(h, dlq_headers::SOURCE_PARTITION), Some("2"));
        assert_eq!(header(h, dlq_headers::SOURCE_OFFSET), Some("41"));
        assert_eq!(header(h, dlq_headers::ERROR), Some("syntax error"));
        assert_eq!(header(h, dlq_headers::TRUNCATED), None);
    }

    #[test]
    fn an_oversized_record_keeps_its_head_and_says_what_it_was() {
        // The 1.01 MB poison record seen in the field: under the input limit, over the producer's.
        let payload: Vec<u8> = (0..1_010_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let dlq: Arc<str> = Arc::from("in.dlq");
        let o = dead_letter(&dlq, "enricher", source(&payload, None), &"missing field `speed`", 1_000_000);
        assert!(record_bytes(&o) + FRAMING_BYTES <= 1_000_000, "{} bytes", record_bytes(&o));
        assert!(payload.starts_with(&o.payload) && o.payload.len() > 990_000);
        let h = o.headers.as_ref().unwrap();
        assert_eq!(header(h, dlq_headers::TRUNCATED), Some("true"));
        assert_eq!(header(h, dlq_headers::ORIGINAL_SIZE), Some("1010000"));
        assert_eq!(header(h, dlq_headers::ORIGINAL_SHA256), Some(sha256_hex(&payload).as_str()));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn huge_original_headers_are_dropped_and_a_long_error_is_cut() {
        let big = "x".repeat(600_000);
        let original = OwnedHeaders::new().insert(Header { key: "blob", value: Some(big.as_str()) });
        let error = "é".repeat(2000);
        let dlq: Arc<str> = Arc::from("in.dlq");
        let o = dead_letter(&dlq, "detector", source(b"{}", Some(&original)), &error, 1_000_000);
        let h = o.headers.as_ref().unwrap();
        assert_eq!(header(h, "blob"), None);
        assert!(header(h, dlq_headers::ERROR).unwrap().len() <= MAX_ERROR_BYTES + '…'.len_utf8());
        assert!(record_bytes(&o) + FRAMING_BYTES <= 1_000_000);
    }

    #[test]
    fn a_key_too_large_to_fit_is_cut_and_says_what_it_was() {
        // The record seen crash-looping the enricher: a 1 020 000-byte key, a bad value.
        let key: Vec<u8> = (0..1_020_000u32).map(|i| b'k' + (i % 7) as u8).collect();
        let dlq: Arc<str> = Arc::from("in.dlq");
        let mut s = source(b"{\"bad\":", None);
        s.key = Some(&key);
        let o = dead_letter(&dlq, "enricher", s, &"syntax error", 1_000_000);
        assert!(record_bytes(&o) + FRAMING_BYTES <= 1_000_000, "{} bytes", record_bytes(&o));
        let cut = o.key.as_deref().unwrap();
        assert!(key.starts_with(cut) && cut.len() > 100_000, "a head of {} bytes", cut.len());
        assert_eq!(o.payload, b"{\"bad\":", "the value is small: it goes whole");
        let h = o.headers.as_ref().unwrap();
        assert_eq!(header(h, dlq_headers::KEY_TRUNCATED), Some("true"));
        assert_eq!(header(h, dlq_headers::ORIGINAL_KEY_SIZE), Some("1020000"));
        assert_eq!(header(h, dlq_headers::ORIGINAL_KEY_SHA256), Some(sha256_hex(&key).as_str()));
        assert_eq!(header(h, dlq_headers::TRUNCATED), None);
    }

    #[test]
    fn a_huge_key_and_a_huge_value_both_fit_cut() {
        let key = vec![b'k'; 900_000];
        let payload = vec![b'v'; 900_000];
        let dlq: Arc<str> = Arc::from("in.dlq");
        let mut s = source(&payload, None);
        s.key = Some(&key);
        let o = dead_letter(&dlq, "detector", s, &"bad", 1_000_000);
        assert!(record_bytes(&o) + FRAMING_BYTES <= 1_000_000, "{} bytes", record_bytes(&o));
        let h = o.headers.as_ref().unwrap();
        assert_eq!(header(h, dlq_headers::KEY_TRUNCATED), Some("true"));
        assert_eq!(header(h, dlq_headers::TRUNCATED), Some("true"));
    }

    #[test]
    fn a_refused_output_names_its_topic() {
        let dlq: Arc<str> = Arc::from("in.dlq");
        let src = Source { output_topic: Some("out"), ..source(b"{}", None) };
        let o = dead_letter(&dlq, "enricher", src, &"Message size too large", 1_000_000);
        assert_eq!(header(o.headers.as_ref().unwrap(), dlq_headers::OUTPUT_TOPIC), Some("out"));
    }
}
