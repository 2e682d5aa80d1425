//! `ops tail`: prints a topic's records from a chosen position. It reads with `assign()` (no
//! consumer group, nothing committed), so it never disturbs the services' groups.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use pipeline_kafka::args::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::cli::{StartAt, TailArgs, TailFormat};

/// A consumer that only reads what it is assigned: no group membership, no commits, and an
/// end-of-partition event so a bounded read knows when it is done.
pub fn reader(args: &KafkaArgs) -> anyhow::Result<BaseConsumer> {
    // librdkafka refuses assign() without a group id ("Unknown group"); a fresh one per reader
    // is never joined (no subscribe) and never committed to.
    let group = format!("ops-reader-{}", uuid::Uuid::new_v4().simple());
    args.client_config(&[
        ("group.id", &group),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "true"),
        ("auto.offset.reset", "earliest"),
    ])
    .create()
    .context("invalid Kafka client configuration")
}

/// `ops tail`.
pub async fn tail(args: TailArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let metadata = crate::topics::must_exist(&args.kafka, &args.topic).await?;
    let mut all: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == args.topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    all.sort_unstable();
    let partitions = if args.partition.is_empty() {
        all
    } else {
        if let Some(p) = args.partition.iter().find(|p| !all.contains(p)) {
            bail!("topic `{}` has no partition {p}; its partitions are {all:?}", args.topic);
        }
        args.partition.clone()
    };
    tokio::task::spawn_blocking(move || read(&args, &partitions, &cancel)).await.context("tail task")?
}

/// Per partition: where to start and (for a bounded read) the high watermark to stop at.
fn positions(consumer: &BaseConsumer, args: &TailArgs, partitions: &[i32]) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let timeout = args.kafka.connect_timeout;
    let mut marks = Vec::with_capacity(partitions.len());
    for &p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&args.topic, p, timeout)
            .with_context(|| format!("reading the watermarks of {}/{p}", args.topic))?;
        marks.push((p, low, high));
    }
    let by_time = match args.from {
        StartAt::Time(t) => {
            let mut tpl = TopicPartitionList::new();
            for &p in partitions {
                tpl.add_partition_offset(&args.topic, p, Offset::Offset(t.timestamp_millis()))?;
            }
            let found = consumer
                .offsets_for_times(tpl, timeout)
                .with_context(|| format!("looking up the offsets of {} at {t}", args.topic))?;
            found.elements().iter().map(|e| (e.partition(), e.offset())).collect()
        }
        _ => HashMap::new(),
    };
    Ok(marks
        .into_iter()
        .map(|(p, low, high)| {
            let start = match args.from {
                StartAt::Earliest => low,
                StartAt::Latest => high,
                StartAt::Offset(o) => o.clamp(low, high),
                // No record at or after the time: start at the end.
                StartAt::Time(_) => match by_time.get(&p) {
                    Some(Offset::Offset(o)) => (*o).clamp(low, high),
                    _ => high,
                },
            };
            (p, start, high)
        })
        .collect())
}

fn read(args: &TailArgs, partitions: &[i32], cancel: &CancellationToken) -> anyhow::Result<()> {
    let consumer = reader(&args.kafka)?;
    let positions = positions(&consumer, args, partitions)?;
    // Partitions still to read up to their high watermark (a bounded read ends when it is empty).
    let mut remaining: HashMap<i32, i64> =
        positions.iter().filter(|(_, start, high)| start < high).map(|&(p, _, high)| (p, high)).collect();
    if !args.follow && remaining.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for &(p, start, _) in &positions {
        tpl.add_partition_offset(&args.topic, p, Offset::Offset(start))?;
    }
    consumer.assign(&tpl).context("assigning the partitions")?;

    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    while !cancel.is_cancelled() && args.max.is_none_or(|max| printed < max) {
        if !args.follow && remaining.is_empty() {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading {}", args.topic),
            Some(Ok(msg)) => {
                let (p, offset) = (msg.partition(), msg.offset());
                if !args.follow {
                    match remaining.get(&p) {
                        Some(&high) if offset < high => {
                            if offset + 1 >= high {
                                remaining.remove(&p);
                            }
                        }
                        // Written after the command started: a bounded read leaves it.
                        _ => continue,
                    }
                }
                let text = match args.format {
                    TailFormat::Pretty => pretty(&msg),
                    TailFormat::Json => json_line(&msg),
                };
                match writeln!(out, "{text}").and_then(|()| out.flush()) {
                    Ok(()) => printed += 1,
                    // `ops tail … | head`: the reader left, so stop quietly.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => return Err(e).context("writing to stdout"),
                }
            }
        }
    }
    Ok(())
}

fn timestamp(msg: &BorrowedMessage<'_>) -> Option<String> {
    let millis = match msg.timestamp() {
        Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => ms,
        Timestamp::NotAvailable => return None,
    };
    DateTime::<Utc>::from_timestamp_millis(millis).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn headers(msg: &BorrowedMessage<'_>) -> Vec<(String, Option<String>)> {
    msg.headers()
        .map(|h| {
            h.iter().map(|h| (h.key.to_owned(), h.value.map(|v| String::from_utf8_lossy(v).into_owned()))).collect()
        })
        .unwrap_or_default()
}

/// A JSON string literal, or `null`.
fn quoted(text: Option<&str>) -> String {
    text.map_or_else(|| "null".to_owned(), |t| serde_json::Value::from(t).to_string())
}

/// One record for people:
///
/// ```text
/// key="17" partition=1 offset=42 timestamp=2026-01-02T03:04:05.067Z
/// header dlq.error="value is not valid JSON: …"
/// {
///   "event_id": "…",
///   …
/// }
/// ```
///
/// The value is indented when it is JSON (key order kept), else shown as text (invalid UTF-8
/// replaced); a missing value is `(no value)`. A blank line separates records.
fn pretty(msg: &BorrowedMessage<'_>) -> String {
    let key = msg.key().map(String::from_utf8_lossy);
    let mut text = format!(
        "key={} partition={} offset={} timestamp={}\n",
        quoted(key.as_deref()),
        msg.partition(),
        msg.offset(),
        timestamp(msg).as_deref().unwrap_or("null"),
    );
    for (k, v) in headers(msg) {
        text.push_str(&format!("header {k}={}\n", quoted(v.as_deref())));
    }
    match msg.payload() {
        None => text.push_str("(no value)\n"),
        Some(value) => match crate::json::pretty(value) {
            Some(json) => text.push_str(&json),
            None => text.push_str(&String::from_utf8_lossy(value)),
        },
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// One record as one JSON object: `{"topic","partition","offset","timestamp","key","headers":
/// [{"key","value"}],"value"}`; the value is embedded as JSON when it is JSON (key order kept),
/// else as a string.
fn json_line(msg: &BorrowedMessage<'_>) -> String {
    let key = msg.key().map(String::from_utf8_lossy);
    let headers: Vec<String> = headers(msg)
        .into_iter()
        .map(|(k, v)| format!("{{\"key\":{},\"value\":{}}}", quoted(Some(&k)), quoted(v.as_deref())))
        .collect();
    let value = match msg.payload() {
        None => "null".to_owned(),
        Some(bytes) => crate::json::compact(bytes).unwrap_or_else(|| quoted(Some(&String::from_utf8_lossy(bytes)))),
    };
    format!(
        "{{\"topic\":{},\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":{},\"headers\":[{}],\"value\":{value}}}",
        quoted(Some(msg.topic())),
        msg.partition(),
        msg.offset(),
        quoted(timestamp(msg).as_deref()),
        quoted(key.as_deref()),
        headers.join(","),
    )
}
