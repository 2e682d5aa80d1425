//! Reads the counts topic back: every instance's partial windows, so that each counter's table
//! and dashboard show whole windows even when the partitions are split between instances.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_core::window::{PartialMerge, Row};
use pipeline_kafka::args::KafkaArgs;
use pipeline_kafka::runtime::{CLOSE_BUDGET, off_runtime};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::metadata::Metadata;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// Follows `topic` from its beginning (assigned, no group offsets) into `merge` until `cancel`.
/// A stop is obeyed at once in every state, and the consumer is closed off the runtime within
/// [`CLOSE_BUDGET`]: with the cluster gone its close waits for a broker, and a close on a
/// runtime worker held the counter's exit past its deadline.
pub async fn follow(
    kafka: KafkaArgs,
    topic: String,
    colors: Vec<String>,
    merge: Arc<Mutex<PartialMerge>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let metadata = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        metadata = pipeline_kafka::client::check_cluster(&kafka, Some(&topic)) => metadata?,
    };
    let group = format!("counter-peers-{}", uuid::Uuid::new_v4().simple());
    let consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("fetch.wait.max.ms", "100"),
        ])
        .create()?;
    let outcome = read(&consumer, &topic, &metadata, &colors, &merge, &cancel).await;
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
    colors: &[String],
    merge: &Mutex<PartialMerge>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    loop {
        tokio::select! {
            // A stop first: with the cluster gone `recv` is always ready with an error.
            biased;
            _ = cancel.cancelled() => return Ok(()),
            message = consumer.recv() => match message {
                Ok(m) => match Row::from_json(m.payload().unwrap_or_default(), colors) {
                    Ok((row, Some((partition, offset)))) => {
                        pipeline_core::lock(merge).insert_row(partition, offset, row);
                    }
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
