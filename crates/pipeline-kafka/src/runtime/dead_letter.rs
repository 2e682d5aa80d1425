//! Dead letters: a refused record's bytes, key and headers plus `dlq.*` headers saying where it
//! came from and why it was refused.
//!
//! Two kinds: a poison input (it does not decode), and an output the broker refused for good
//! (too large, invalid), which then stands for its input. Either way the dead letter must itself
//! be accepted, or one bad record would stop the service on every restart: a value that does
//! not fit under the producer's `message.max.bytes` keeps its head, and the headers say it was
//! truncated, its original size and the SHA-256 of the whole original value.

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
    // What truncation adds: the flag, the size (at most 20 digits) and 64 hex digits.
    let truncation_headers = dlq_headers::TRUNCATED.len()
        + 4
        + dlq_headers::ORIGINAL_SIZE.len()
        + 20
        + dlq_headers::ORIGINAL_SHA256.len()
        + 64;
    let fixed = FRAMING_BYTES + source.key.map_or(0, <[u8]>::len) + header_bytes(&ours) + truncation_headers;
    // The original headers go along unless they alone crowd out the value.
    let keep_headers = copied <= max_bytes.saturating_sub(fixed) / 2;
    let budget = max_bytes.saturating_sub(fixed + if keep_headers { copied } else { 0 });
    let payload = source.payload;
    let value = if payload.len() <= budget {
        payload.to_vec()
    } else {
        ours.push((dlq_headers::TRUNCATED, "true".to_owned()));
        ours.push((dlq_headers::ORIGINAL_SIZE, payload.len().to_string()));
        ours.push((dlq_headers::ORIGINAL_SHA256, sha256_hex(payload)));
        payload[..budget].to_vec()
    };
    let mut headers = OwnedHeaders::new();
    if let Some(original) = source.headers.filter(|_| keep_headers) {
        for h in original.iter() {
            headers = headers.insert(Header { key: h.key, value: h.value });
        }
    }
    for (key, value) in &ours {
        headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
    }
    Output { topic: dlq_topic.clone(), key: source.key.map(<[u8]>::to_vec), payload: value, headers: Some(headers) }
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
    fn a_refused_output_names_its_topic() {
        let dlq: Arc<str> = Arc::from("in.dlq");
        let src = Source { output_topic: Some("out"), ..source(b"{}", None) };
        let o = dead_letter(&dlq, "enricher", src, &"Message size too large", 1_000_000);
        assert_eq!(header(o.headers.as_ref().unwrap(), dlq_headers::OUTPUT_TOPIC), Some("out"));
    }
}
