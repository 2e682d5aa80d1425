//! `generator run`: random telemetry for the cars in S3, produced to Kafka.
//!
//! Delivery: at-least-once from the producer's side. Records are enqueued without waiting
//! (librdkafka batches them; at most [`MAX_IN_FLIGHT`] records and [`MAX_IN_FLIGHT_BYTES`]
//! await a report) and every delivery report is counted on the producer's thread; the run ends
//! only when every enqueued record is acknowledged or has failed, and the summary counts both. A failed
//! delivery is reported, not retried by hand (librdkafka already retried it until
//! `message.timeout.ms`), and makes the exit status non-zero.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::Car;
use pipeline_core::schema::JsonEvent;
use pipeline_kafka::client;
use pipeline_s3::dims::load_table;
use pipeline_s3::store::ObjectStore;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;

/// Most records awaiting a delivery report at once; beyond it the loop waits for reports.
const MAX_IN_FLIGHT: u64 = 100_000;

/// Most record bytes (values and keys) awaiting a delivery report at once: with the count
/// bound, what keeps the generator's memory small at full speed.
const MAX_IN_FLIGHT_BYTES: u64 = 16 << 20;

/// Delivery reports, counted on the producer's own thread: no future per record.
#[derive(Debug, Default)]
struct Deliveries {
    /// Acknowledged by the broker.
    sent: AtomicU64,
    /// Failed after librdkafka's retries.
    failed: AtomicU64,
    /// Key and value bytes of the reported records (sent or failed).
    bytes: AtomicU64,
    /// Woken on every report: the loop waits on it while the bounds are reached.
    reported: tokio::sync::Notify,
}

impl Deliveries {
    /// Records reported so far, sent or failed.
    fn reported(&self) -> u64 {
        self.sent.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// The producer's context: counts each delivery report into [`Deliveries`].
struct CountingContext(Arc<Deliveries>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let d = &self.0;
        let message = match result {
            Ok(message) => {
                d.sent.fetch_add(1, Ordering::Relaxed);
                message
            }
            Err((e, message)) => {
                if d.failed.fetch_add(1, Ordering::Relaxed) < 10 {
                    tracing::warn!(error = %e, "delivery failed");
                }
                message
            }
        };
        let size = message.payload_len() + message.key_len();
        d.bytes.fetch_add(size as u64, Ordering::Relaxed);
        d.reported.notify_one();
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
    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<CountingContext> = args
        .kafka
        .client_config(client::PRODUCER_DEFAULTS)
        .create_with_context(CountingContext(deliveries.clone()))
        .map_err(client::KafkaSetupError::Config)?;

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
    let (mut enqueued, mut enqueued_bytes) = (0u64, 0u64);
    let mut payload = Vec::with_capacity(256);
    let mut key = String::with_capacity(16);
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
        key.clear();
        std::fmt::Write::write_fmt(&mut key, format_args!("{}", event.car_id)).expect("writing to a String");
        let mut record = BaseRecord::to(&args.topic).key(key.as_bytes()).payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                // librdkafka's own queue is full: wait for reports to make room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    let _ = tokio::time::timeout(Duration::from_millis(5), deliveries.reported.notified()).await;
                }
                Err((e, _)) => return Err(e).context("enqueueing a record"),
            }
        }
        enqueued += 1;
        enqueued_bytes += (payload.len() + key.len()) as u64;
        // Bounded by count and bytes: wait for reports (each wakes this loop).
        while enqueued - deliveries.reported() >= MAX_IN_FLIGHT
            || enqueued_bytes - deliveries.bytes.load(Ordering::Relaxed) >= MAX_IN_FLIGHT_BYTES
        {
            let _ = tokio::time::timeout(Duration::from_millis(100), deliveries.reported.notified()).await;
        }
        progress.update(deliveries.sent.load(Ordering::Relaxed));
    }

    // Drain: every enqueued record gets its report (bounded by message.timeout.ms).
    while deliveries.reported() < enqueued {
        let _ = tokio::time::timeout(Duration::from_millis(100), deliveries.reported.notified()).await;
        progress.update(deliveries.sent.load(Ordering::Relaxed));
    }
    producer.flush(Duration::from_secs(10)).context("flushing the producer")?;
    progress.finish();
    let (sent, failed) = (deliveries.sent.load(Ordering::Relaxed), deliveries.failed.load(Ordering::Relaxed));

    let secs = started.elapsed().as_secs_f64();
    println!(
        "generator: sent {} events to {} ({} failed) in {:.2} s, {:.0} events/s",
        sent,
        args.topic,
        failed,
        secs,
        sent as f64 / secs.max(1e-9)
    );
    anyhow::ensure!(failed == 0, "{failed} events were not delivered to {}", args.topic);
    Ok(())
}
