//! `relay`: the bare rdkafka baseline the end-to-end benchmark compares the pipeline with.
//!
//! Three roles, each run as its own process like the services:
//! - `relay source`: the generator's counterpart. It produces exactly the generator's records
//!   (same cars from S3, same seed, same synthetic clock, same JSON bytes and keys) with the same
//!   pacing loop and producer settings. Its delivery accounting is the runtime-equivalent
//!   design (a delivery future per record, at most [`SOURCE_MAX_IN_FLIGHT`] awaiting a report),
//!   not the generator's (reports counted on the producer's thread, 100 000 records and 16 MiB),
//!   so compare the systems' CPU without the source. The records whose event will *not* become an alert end
//!   with one extra space (still the same JSON; decided before the clock starts), so a hop can
//!   drop them by looking at one byte: no parsing, no headers.
//! - `relay hop`: consume → produce the same key, value and headers, no parsing; an input's offset
//!   is stored only after its output is acknowledged, in offset order per partition, and
//!   librdkafka commits stored offsets every second (the services' settings). With
//!   `--only-alerts` it drops the records that end with that space, so each topic of the relay
//!   holds as many records as the pipeline's (N, N, alerts).
//! - `relay bare-hop`: the same hop at the physical floor of this client (see [`bare`]): a
//!   `BaseConsumer` and a `BaseProducer`, no futures; per batch poll, produce, flush, then store
//!   the batch's offsets.
//! - `relay sink`: the counter's counterpart: counts records (no parsing, commits nothing) and
//!   prints `reached <count> <unix ms>` on stdout when the count reaches `--expect`, then
//!   `final <count>` when stopped.
//!
//! Hops and the sink print `assigned <partitions>` once their group join has given them
//! partitions. SIGINT/SIGTERM stop every role.

mod bare;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::Car;
use pipeline_core::rules::{AlertRules, expected_gear};
use pipeline_core::schema::JsonEvent;
use pipeline_kafka::args::KafkaArgs;
use pipeline_kafka::client;
use pipeline_s3::S3Args;
use pipeline_s3::dims::load_table;
use pipeline_s3::store::ObjectStore;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::{DeliveryFuture, Producer};
use rdkafka::{ClientContext, Message};
use tokio_util::sync::CancellationToken;

/// The byte appended to the records whose event does not become an alert in the pipeline.
const NOT_AN_ALERT: u8 = b' ';

/// The source's bound on records awaiting a delivery report (the generator's before it counted
/// reports on the producer's thread; kept so the relay figures stay comparable across runs).
const SOURCE_MAX_IN_FLIGHT: usize = 200_000;

/// The services' default `--max-in-flight`.
const HOP_MAX_IN_FLIGHT: usize = 20_000;

/// Bare rdkafka relay: the baseline of the end-to-end benchmark.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Produce the generator's records.
    Source(SourceArgs),
    /// Consume one topic and produce the same bytes to another.
    Hop(HopArgs),
    /// The same hop with a plain BaseConsumer and BaseProducer: poll a batch, produce it, flush,
    /// then store its offsets.
    BareHop(bare::BareHopArgs),
    /// Count the records of a topic.
    Sink(SinkArgs),
}

#[derive(Debug, Args)]
struct SourceArgs {
    #[command(flatten)]
    s3: S3Args,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Topic the records go to.
    #[arg(long)]
    topic: String,
    /// How many records.
    #[arg(long)]
    count: u64,
    /// Records per second; 0 = as fast as the producer takes them.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seed of the events (the generator's --seed).
    #[arg(long)]
    seed: u64,
    /// First synthetic event time (the generator's --start-time).
    #[arg(long, value_parser = pipeline_core::schema::event_time::parse)]
    start_time: chrono::DateTime<chrono::Utc>,
    /// Event-time step (the generator's --time-step).
    #[arg(long, value_parser = humantime::parse_duration)]
    time_step: Duration,
}

#[derive(Debug, Args)]
struct HopArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Topic consumed.
    #[arg(long)]
    input: String,
    /// Topic produced to.
    #[arg(long)]
    output: String,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Forward only the records of future alerts (drop those ending with a space).
    #[arg(long)]
    only_alerts: bool,
}

#[derive(Debug, Args)]
struct SinkArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Topic consumed.
    #[arg(long)]
    input: String,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Print `reached` when this many records were counted.
    #[arg(long)]
    expect: u64,
}

/// Prints `assigned …` on the first assignment.
struct Announce;

impl ClientContext for Announce {}

impl ConsumerContext for Announce {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && tpl.count() > 0
        {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            println!("assigned {parts:?}");
        }
    }
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The services' consumer settings: `CONSUMER_DEFAULTS` (offsets stored by the program) and,
/// with `commit`, librdkafka committing the stored offsets every second.
fn consumer_config(kafka: &KafkaArgs, group: &str, commit: bool) -> rdkafka::ClientConfig {
    let mut config = kafka.client_config(pipeline_kafka::runtime::CONSUMER_DEFAULTS);
    config
        .set("group.id", group)
        .set("client.id", "relay")
        .set("enable.auto.commit", if commit { "true" } else { "false" })
        .set("auto.commit.interval.ms", "1000");
    config
}

fn consumer(kafka: &KafkaArgs, group: &str, commit: bool, topic: &str) -> anyhow::Result<StreamConsumer<Announce>> {
    let config = consumer_config(kafka, group, commit);
    let consumer: StreamConsumer<Announce> = config.create_with_context(Announce).context("consumer")?;
    consumer.subscribe(&[topic]).context("subscribe")?;
    Ok(consumer)
}

/// The generator's loop (`generator run`), producing to `topic`; a space ends the records of
/// events that will not become alerts.
async fn source(args: SourceArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let store = ObjectStore::connect(&args.s3).await;
    let cars: Vec<Car> = load_table(&store, &args.s3.dims_prefix).await?;
    let car_ids: Vec<i64> = cars.iter().map(|c| c.car_id).collect();
    let clock = EventClock::Synthetic { start: args.start_time, step: chrono::Duration::from_std(args.time_step)? };
    // Which events become alerts, decided before the clock starts.
    let rules = AlertRules::default();
    let mut marks = EventGenerator::new(car_ids.clone(), Some(args.seed), clock);
    let marks: Vec<bool> = (0..args.count)
        .map(|_| {
            let e = marks.next_event();
            !rules.check(e.speed, e.rpm, e.gear, expected_gear(e.speed)).is_empty()
        })
        .collect();

    client::check_cluster(&args.kafka, Some(&args.topic)).await?;
    let producer = client::producer(&args.kafka)?;
    let mut generator = EventGenerator::new(car_ids, Some(args.seed), clock);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut in_flight = FuturesUnordered::new();
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut record = |report: <DeliveryFuture as std::future::Future>::Output| {
        if matches!(report, Ok(Ok(_))) {
            sent += 1;
        } else {
            failed += 1;
        }
    };
    let mut payload = Vec::with_capacity(256);
    let started = tokio::time::Instant::now();
    while generator.generated() < args.count && !cancel.is_cancelled() {
        if let Some(interval) = interval {
            let due = started + interval.mul_f64(generator.generated() as f64);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = cancel.cancelled() => break,
            }
        }
        let alert = marks[generator.generated() as usize];
        let event = generator.next_event();
        payload.clear();
        event.encode_into(&mut payload);
        if !alert {
            payload.push(NOT_AN_ALERT);
        }
        let key = event.car_id.to_string();
        let delivery = client::enqueue(&producer, &args.topic, Some(key.as_bytes()), &payload, None).await?;
        in_flight.push(delivery);
        while in_flight.len() >= SOURCE_MAX_IN_FLIGHT {
            if let Some(report) = in_flight.next().await {
                record(report);
            }
        }
        while let Some(Some(report)) = in_flight.next().now_or_never() {
            record(report);
        }
    }
    while let Some(report) = in_flight.next().await {
        record(report);
    }
    producer.flush(Duration::from_secs(10)).context("flush")?;
    println!("source: sent {sent} records to {} ({failed} failed)", args.topic);
    anyhow::ensure!(failed == 0, "{failed} records were not delivered");
    Ok(())
}

/// Inputs awaiting their output's acknowledgement, per partition in offset order.
#[derive(Debug, Default)]
struct Pending {
    partitions: HashMap<i32, VecDeque<(i64, bool)>>,
    len: usize,
}

impl Pending {
    fn push(&mut self, partition: i32, offset: i64, done: bool) {
        self.partitions.entry(partition).or_default().push_back((offset, done));
        self.len += 1;
    }

    fn ack(&mut self, partition: i32, offset: i64) {
        if let Some(q) = self.partitions.get_mut(&partition)
            && let Ok(i) = q.binary_search_by_key(&offset, |s| s.0)
        {
            q[i].1 = true;
        }
    }

    /// Pops the acknowledged head of `partition`; the last offset popped may be stored.
    fn advance(&mut self, partition: i32) -> Option<i64> {
        let q = self.partitions.get_mut(&partition)?;
        let mut last = None;
        while let Some(&(offset, true)) = q.front() {
            last = Some(offset);
            q.pop_front();
            self.len -= 1;
        }
        last
    }
}

async fn hop(args: HopArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    client::check_cluster(&args.kafka, Some(&args.input)).await?;
    let consumer = consumer(&args.kafka, &args.group, true, &args.input)?;
    let producer = client::producer(&args.kafka)?;
    let mut pending = Pending::default();
    let mut in_flight = FuturesUnordered::new();
    let (mut read, mut forwarded) = (0u64, 0u64);
    let store = |consumer: &StreamConsumer<Announce>, pending: &mut Pending, partition: i32| {
        if let Some(offset) = pending.advance(partition) {
            let _ = consumer.store_offset(&args.input, partition, offset);
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some((partition, offset, report)) = in_flight.next(), if !in_flight.is_empty() => {
                let report: <DeliveryFuture as std::future::Future>::Output = report;
                report.context("producer gone")?.map_err(|(e, _)| e).context("delivery")?;
                pending.ack(partition, offset);
                store(&consumer, &mut pending, partition);
            }
            message = consumer.recv(), if pending.len < HOP_MAX_IN_FLIGHT => {
                let message = message.context("consume")?;
                read += 1;
                let (partition, offset) = (message.partition(), message.offset());
                let payload = message.payload().unwrap_or_default();
                if !args.only_alerts || payload.last() != Some(&NOT_AN_ALERT) {
                    let delivery = client::enqueue(&producer, &args.output, message.key(), payload, None).await?;
                    forwarded += 1;
                    pending.push(partition, offset, false);
                    in_flight.push(delivery.map(move |r| (partition, offset, r)));
                } else {
                    pending.push(partition, offset, true);
                    store(&consumer, &mut pending, partition);
                }
            }
        }
    }
    // Drain (bounded), commit, stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while let Ok(Some((partition, offset, Ok(Ok(_))))) = tokio::time::timeout_at(deadline, in_flight.next()).await {
        pending.ack(partition, offset);
        store(&consumer, &mut pending, partition);
    }
    let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
    let _ = producer.flush(Duration::from_secs(2));
    println!("hop: read {read}, forwarded {forwarded}");
    Ok(())
}

async fn sink(args: SinkArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    client::check_cluster(&args.kafka, Some(&args.input)).await?;
    let consumer = consumer(&args.kafka, &args.group, false, &args.input)?;
    let mut count = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            message = consumer.recv() => {
                message.context("consume")?;
                count += 1;
                if count == args.expect {
                    println!("reached {count} {}", unix_ms());
                }
            }
        }
    }
    println!("final {count}");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pipeline_kafka::shutdown::serve("relay", pipeline_kafka::args::LogFormat::Text, |cancel| async move {
        match cli.role {
            Role::Source(args) => source(args, cancel).await,
            Role::Hop(args) => hop(args, cancel).await,
            Role::BareHop(args) => {
                client::check_cluster(&args.hop.kafka, Some(&args.hop.input)).await?;
                tokio::task::spawn_blocking(move || bare::hop(&args, &cancel)).await.context("bare hop panicked")?
            }
            Role::Sink(args) => sink(args, cancel).await,
        }
    })
    .await
}
