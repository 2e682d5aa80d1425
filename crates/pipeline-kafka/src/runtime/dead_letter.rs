//! Dead letters: a poison input's bytes, key and headers plus `dlq.*` headers saying where it
//! came from and why it was refused.

use std::sync::Arc;

use pipeline_core::schema::DecodeError;
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};

use super::processor::Output;

/// Header names carried by dead letters.
pub mod dlq_headers {
    /// Topic the poison record was read from.
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    /// Its partition (decimal).
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    /// Its offset (decimal).
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    /// The service that rejected it.
    pub const SERVICE: &str = "dlq.service";
    /// Why it was rejected.
    pub const ERROR: &str = "dlq.error";
}

/// The dead letter of `message`: its bytes, key and headers, plus the `dlq.*` headers.
pub(super) fn dead_letter(
    dlq_topic: &Arc<str>,
    service: &str,
    message: &BorrowedMessage<'_>,
    error: &DecodeError,
) -> Output {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for h in original.iter() {
            headers = headers.insert(Header { key: h.key, value: h.value });
        }
    }
    let (partition, offset, reason) =
        (message.partition().to_string(), message.offset().to_string(), error.to_string());
    for (key, value) in [
        (dlq_headers::SOURCE_TOPIC, message.topic()),
        (dlq_headers::SOURCE_PARTITION, &partition),
        (dlq_headers::SOURCE_OFFSET, &offset),
        (dlq_headers::SERVICE, service),
        (dlq_headers::ERROR, &reason),
    ] {
        headers = headers.insert(Header { key, value: Some(value) });
    }
    Output {
        topic: dlq_topic.clone(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers: Some(headers),
    }
}
