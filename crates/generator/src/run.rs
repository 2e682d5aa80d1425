//! `generator run`: random telemetry for the cars in S3, produced to Kafka.
//!
//! Delivery: at-least-once from the producer's side. Records are enqueued without waiting
//! (librdkafka batches them) and every delivery report is collected; the run ends only when
//! every enqueued record is acknowledged or has failed, and the summary counts both. A failed
//! delivery is reported, not retried by hand (librdkafka already retried it until
//! `message.timeout.ms`), and makes the exit status non-zero.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::Car;
use pipeline_core::schema::JsonEvent;
use pipeline_kafka::client;
use pipeline_s3::dims::load_table;
use pipeline_s3::store::ObjectStore;
use rdkafka::producer::{DeliveryFuture, Producer};
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;

/// Most records awaiting a delivery report at once; beyond it the loop waits for reports.
const MAX_IN_FLIGHT: usize = 200_000;

/// Counts of delivery reports.
#[derive(Debug, Default)]
struct Deliveries {
    /// Acknowledged by the broker.
    sent: u64,
    /// Failed after librdkafka's retries.
    failed: u64,
}

impl Deliveries {
    fn record(&mut self, report: <DeliveryFuture as std::future::Future>::Output) {
        match report {
            Ok(Ok(_)) => self.sent += 1,
            Ok(Err((e, _))) => {
                self.failed += 1;
                if self.failed <= 10 {
                    tracing::warn!(error = %e, "delivery failed");
                }
            }
            Err(_canceled) => {
                self.failed += 1;
                tracing::warn!("delivery report lost: the producer was dropped");
            }
        }
    }
}

/// Shows progress: a bar on a terminal, a log line every 10 s otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    last_log: Instant,
}

impl Progress {
    fn new(count: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = count.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
            let template = if count.is_some() {
                "{bar:40} {pos}/{len} events {per_sec} eta {eta}"
            } else {
                "{spinner} {pos} events {per_sec}"
            };
            bar.set_style(ProgressStyle::with_template(template).expect("static template"));
            bar
        });
        Self { bar, last_log: Instant::now() }
    }

    fn update(&mut self, sent: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(sent),
            None if self.last_log.elapsed() >= Duration::from_secs(10) => {
                self.last_log = Instant::now();
                tracing::info!(sent, "producing");
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Loads the cars, then produces events until `--count` is reached or `cancel` fires, and
/// waits for every delivery report.
pub async fn run(args: RunArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let store = ObjectStore::connect(&args.s3).await;
    let cars: Vec<Car> = load_table(&store, &args.s3.dims_prefix).await?;
    let car_ids: Vec<i64> = cars.iter().map(|c| c.car_id).collect();
    tracing::info!(cars = car_ids.len(), table = %store.url(&args.s3.dims_prefix), "loaded cars");

    client::check_cluster(&args.kafka, Some(&args.topic)).await?;
    let producer = client::producer(&args.kafka)?;

    let clock = match args.start_time {
        Some(start) => EventClock::Synthetic {
            start,
            step: chrono::Duration::from_std(args.time_step).context("--time-step is too large")?,
        },
        None => EventClock::Wall,
    };
    let mut generator = EventGenerator::new(car_ids, args.seed, clock);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));

    let mut progress = Progress::new(args.count);
    let mut deliveries = Deliveries::default();
    let mut in_flight = FuturesUnordered::new();
    let mut payload = Vec::with_capacity(256);
    let started = tokio::time::Instant::now();

    while args.count.is_none_or(|n| generator.generated() < n) && !cancel.is_cancelled() {
        if let Some(interval) = interval {
            // Due times are computed from the start, so pacing never drifts.
            let due = started + interval.mul_f64(generator.generated() as f64);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = cancel.cancelled() => break,
            }
        }
        let event = generator.next_event();
        payload.clear();
        event.encode_into(&mut payload);
        let key = event.car_id.to_string();
        let delivery = client::enqueue(&producer, &args.topic, Some(key.as_bytes()), &payload, None)
            .await
            .context("enqueueing a record")?;
        in_flight.push(delivery);
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(report) = in_flight.next().await {
                deliveries.record(report);
            }
        }
        while let Some(Some(report)) = in_flight.next().now_or_never() {
            deliveries.record(report);
        }
        progress.update(deliveries.sent);
    }

    // Drain: every enqueued record gets its report (bounded by message.timeout.ms).
    while let Some(report) = in_flight.next().await {
        deliveries.record(report);
        progress.update(deliveries.sent);
    }
    producer.flush(Duration::from_secs(10)).context("flushing the producer")?;
    progress.finish();

    let secs = started.elapsed().as_secs_f64();
    println!(
        "generator: sent {} events to {} ({} failed) in {:.2} s, {:.0} events/s",
        deliveries.sent,
        args.topic,
        deliveries.failed,
        secs,
        deliveries.sent as f64 / secs.max(1e-9)
    );
    anyhow::ensure!(deliveries.failed == 0, "{} events were not delivered to {}", deliveries.failed, args.topic);
    Ok(())
}
