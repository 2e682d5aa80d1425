//! Reads the counts topic back: every instance's partial windows, so that each counter's table
//! and dashboard show whole windows even when the partitions are split between instances.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_core::window::{PartialMerge, Row};
use pipeline_kafka::args::KafkaArgs;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// Follows `topic` from its beginning (assigned, no group offsets) into `merge` until `cancel`.
pub async fn follow(
    kafka: KafkaArgs,
    topic: String,
    colors: Vec<String>,
    merge: Arc<Mutex<PartialMerge>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let group = format!("counter-peers-{}", uuid::Uuid::new_v4().simple());
    let consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("fetch.wait.max.ms", "100"),
        ])
        .create()?;
    let metadata = pipeline_kafka::client::check_cluster(&kafka, Some(&topic)).await?;
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            message = consumer.recv() => match message {
                Ok(m) => match Row::from_json(m.payload().unwrap_or_default(), &colors) {
                    Ok((row, Some((partition, offset)))) => {
                        pipeline_core::lock(&merge).insert_row(partition, offset, row);
                    }
                    Ok((_, None)) => {}
                    Err(e) => tracing::debug!(error = %e, offset = m.offset(), "not a partial window row"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "reading the counts topic back");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
