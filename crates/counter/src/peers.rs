//! Reads the counts topic back: every instance's partial windows, so that each counter's table
//! and dashboard show whole windows even when the partitions are split between instances.
//!
//! Anyone can write to the counts topic, so a row read back is checked before it is merged
//! ([`RowBounds`]): its partition must be one of the input topic's, its window one of this
//! counter's windows (aligned, of `--window`'s length), and not ahead of this machine's clock by
//! more than `--max-clock-skew`. Others are ignored and counted
//! (`pipeline_counts_rows_ignored_total`): one far-future row would otherwise make every real
//! window look old enough to forget, and rows of made-up partitions would grow memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pipeline_core::log_limit::LogLimit;
use pipeline_core::window::{PartialMerge, Row};
use pipeline_kafka::args::KafkaArgs;
use pipeline_kafka::runtime::{CLOSE_BUDGET, off_runtime};
use pipeline_kafka::telemetry::admit_line;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::metadata::Metadata;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// What a row read back must be to be merged.
#[derive(Debug, Clone)]
pub struct RowBounds {
    /// The input topic's partitions: a partial's partition is below it.
    pub partitions: i32,
    /// The window length: a row's window is aligned to it and this long.
    pub window: chrono::Duration,
    /// How far ahead of this machine's clock a window may start.
    pub max_clock_skew: chrono::Duration,
}

impl RowBounds {
    /// Why `row`, the share of `partition`, is not merged (None: it is), with the clock at `wall`.
    pub fn refuse(&self, row: &Row, partition: i32, wall: DateTime<Utc>) -> Option<&'static str> {
        let (start, size) = (row.stats.start, self.window.num_milliseconds().max(1));
        if !(0..self.partitions).contains(&partition) {
            Some("a partition the input topic does not have")
        } else if start.timestamp_millis().rem_euclid(size) != 0 || row.stats.end - start != self.window {
            Some("a window that is not one of --window's")
        } else if start.signed_duration_since(wall) > self.max_clock_skew {
            Some("a window ahead of this machine's clock by more than --max-clock-skew")
        } else {
            None
        }
    }
}

/// Follows `topic` from its beginning (assigned, no group offsets) into `merge` until `cancel`;
/// rows outside `bounds` (read from `input_topic`'s metadata for the partitions) are ignored.
/// A stop is obeyed at once in every state, and the consumer is closed off the runtime within
/// [`CLOSE_BUDGET`]: with the cluster gone its close waits for a broker, and a close on a
/// runtime worker held the counter's exit past its deadline.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    kafka: KafkaArgs,
    topic: String,
    input_topic: String,
    window: chrono::Duration,
    max_clock_skew: chrono::Duration,
    colors: Vec<String>,
    merge: Arc<Mutex<PartialMerge>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (metadata, input) = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        both = async {
            let counts = pipeline_kafka::client::check_cluster(&kafka, Some(&topic)).await?;
            let input = pipeline_kafka::client::check_cluster(&kafka, Some(&input_topic)).await?;
            anyhow::Ok((counts, input))
        } => both?,
    };
    let partitions = input.topics().iter().map(|t| t.partitions().len()).sum::<usize>();
    let bounds = RowBounds { partitions: i32::try_from(partitions).unwrap_or(i32::MAX), window, max_clock_skew };
    let group = format!("counter-peers-{}", uuid::Uuid::new_v4().simple());
    let consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("fetch.wait.max.ms", "100"),
        ])
        .create()?;
    let outcome = read(&consumer, &topic, &metadata, &bounds, &colors, &merge, &cancel).await;
    if off_runtime("peers-close", CLOSE_BUDGET, move || drop(consumer)).await.is_none() {
        tracing::warn!(budget = ?CLOSE_BUDGET, "the counts reader did not close in time; not waiting for it");
    }
    outcome
}

/// Reads the counts topic into `merge` until `cancel`.
async fn read(
    consumer: &StreamConsumer,
    topic: &str,
    metadata: &Metadata,
    bounds: &RowBounds,
    colors: &[String],
    merge: &Mutex<PartialMerge>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let ignored = metrics::counter!("pipeline_counts_rows_ignored_total", "service" => "counter");
    let mut ignored_log = LogLimit::default();
    loop {
        tokio::select! {
            // A stop first: with the cluster gone `recv` is always ready with an error.
            biased;
            _ = cancel.cancelled() => return Ok(()),
            message = consumer.recv() => match message {
                Ok(m) => match Row::from_json(m.payload().unwrap_or_default(), colors) {
                    Ok((row, Some((partition, offset)))) => match bounds.refuse(&row, partition, Utc::now()) {
                        None => {
                            pipeline_core::lock(merge).insert_row(partition, offset, row);
                        }
                        Some(why) => {
                            ignored.increment(1);
                            if admit_line(&mut ignored_log, "ignored-counts-row") {
                                tracing::warn!(partition, offset = m.offset(), window = %row.stats.start, "a counts row ignored: {why}");
                            }
                        }
                    },
                    Ok((_, None)) => {}
                    Err(e) => tracing::debug!(error = %e, offset = m.offset(), "not a partial window row"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "reading the counts topic back");
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::TimeZone;
    use pipeline_core::window::{RowMeta, WindowStats};

    use super::*;

    fn row(start: DateTime<Utc>, minutes: i64) -> Row {
        let end = start + chrono::Duration::minutes(minutes);
        let stats = WindowStats { start, end, rows: 1, colors: vec![1], max_speed: 130.0, max_gear: 3, max_rpm: 6100 };
        Row { stats, meta: RowMeta::default() }
    }

    #[test]
    fn a_row_read_back_is_merged_only_within_the_topics_partitions_windows_and_clock() {
        let bounds = RowBounds {
            partitions: 3,
            window: chrono::Duration::minutes(15),
            max_clock_skew: chrono::Duration::minutes(10),
        };
        let wall = Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap();
        let at = |h, m| Utc.with_ymd_and_hms(2026, 12, 3, h, m, 0).unwrap();
        assert_eq!(bounds.refuse(&row(at(11, 45), 15), 2, wall), None);
        assert_eq!(bounds.refuse(&row(at(12, 0), 15), 0, wall), None, "the current window");
        assert_eq!(bounds.refuse(&row(at(11, 45), 15), 3, wall), Some("a partition the input topic does not have"));
        assert_eq!(bounds.refuse(&row(at(11, 45), 15), -1, wall), Some("a partition the input topic does not have"));
        assert_eq!(bounds.refuse(&row(at(11, 40), 15), 0, wall), Some("a window that is not one of --window's"));
        assert_eq!(bounds.refuse(&row(at(11, 45), 60), 0, wall), Some("a window that is not one of --window's"));
        let future = Utc.with_ymd_and_hms(2036, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            bounds.refuse(&row(future, 15), 0, wall),
            Some("a window ahead of this machine's clock by more than --max-clock-skew")
        );
    }
}
