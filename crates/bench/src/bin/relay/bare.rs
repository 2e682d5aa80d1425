//! `relay bare-hop`: the physical floor of this client on this broker. A plain `BaseConsumer`
//! and `BaseProducer` on one thread, no futures, no parsing, the services' librdkafka settings
//! (`PRODUCER_DEFAULTS`, `CONSUMER_DEFAULTS`, auto-commit every second). Per batch:
//! 1. poll up to `--batch` records (the first poll waits up to 100 ms, the rest take only what
//!    the consumer has already fetched);
//! 2. produce each (same key and value; with `--only-alerts` the records ending with
//!    [`NOT_AN_ALERT`] are dropped) — a full local queue is served and retried;
//! 3. `flush` until every record of the batch is acknowledged (any delivery failure ends the
//!    hop with an error: the benchmark then fails, it never counts a loss as throughput);
//! 4. store the batch's offsets (the highest per partition + 1); librdkafka commits them every
//!    second.
//!
//! Offsets are therefore stored after each flush, never before the outputs are acknowledged:
//! the same at-least-once contract as `relay hop` and the services, with nothing in flight
//! across batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::{Announce, HopArgs, NOT_AN_ALERT, consumer_config};

#[derive(Debug, Args)]
pub struct BareHopArgs {
    #[command(flatten)]
    pub hop: HopArgs,
    /// Most records per batch (polled, produced, flushed, then their offsets stored); the
    /// services' default `--max-in-flight`.
    #[arg(long, default_value_t = 20_000)]
    pub batch: usize,
}

/// Counts failed deliveries and keeps the first error.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(|| error.to_string());
        }
    }
}

/// Runs the hop until `cancel`; blocking (call it on its own thread).
pub fn hop(args: &BareHopArgs, cancel: &CancellationToken) -> anyhow::Result<()> {
    let hop = &args.hop;
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let consumer: BaseConsumer<Announce> =
        consumer_config(&hop.kafka, &hop.group, true).create_with_context(Announce).context("consumer")?;
    consumer.subscribe(&[&hop.input]).context("subscribe")?;
    let producer: BaseProducer<Deliveries> = hop
        .kafka
        .client_config(pipeline_kafka::client::PRODUCER_DEFAULTS)
        .create_with_context(Deliveries::default())
        .context("producer")?;
    let (mut read, mut forwarded, mut batches) = (0u64, 0u64, 0u64);
    // Next offset to commit, per partition, of the current batch.
    let mut next: HashMap<i32, i64> = HashMap::new();
    while !cancel.is_cancelled() {
        next.clear();
        let mut wait = Duration::from_millis(100);
        for _ in 0..args.batch {
            let Some(message) = consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            let message = message.context("consume")?;
            read += 1;
            let slot = next.entry(message.partition()).or_insert(0);
            *slot = (*slot).max(message.offset() + 1);
            let payload = message.payload().unwrap_or_default();
            if hop.only_alerts && payload.last() == Some(&NOT_AN_ALERT) {
                continue;
            }
            let mut record = BaseRecord::<[u8], [u8]>::to(&hop.output).payload(payload);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        producer.poll(Duration::from_millis(5));
                        record = back;
                    }
                    Err((e, _)) => return Err(e).context("produce"),
                }
            }
            forwarded += 1;
        }
        if next.is_empty() {
            continue;
        }
        batches += 1;
        producer.flush(Duration::from_secs(120)).context("flush")?;
        let failed = producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = producer.context().first_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
            anyhow::bail!("{failed} records were not delivered: {}", first.unwrap_or_default());
        }
        let mut offsets = TopicPartitionList::with_capacity(next.len());
        for (&partition, &offset) in &next {
            offsets.add_partition_offset(&hop.input, partition, Offset::Offset(offset))?;
        }
        // Fails only for a partition no longer assigned (after a rebalance): its records are
        // then consumed again by the new owner, as in the services.
        let _ = consumer.store_offsets(&offsets);
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    println!("bare-hop: read {read}, forwarded {forwarded} in {batches} batches");
    Ok(())
}
