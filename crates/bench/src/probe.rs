//! The driver's own consumers: the probe of the last topic (arrival times) and topic scans.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::ensure;
use pipeline_testkit as testkit;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use uuid::Uuid;

use crate::phase::unix_us;

/// Per event id: when its record of the last topic was received (µs) and that record's own
/// CreateTime (ms, stamped when the last hop's producer enqueued it).
pub type Arrivals = HashMap<Uuid, (i64, i64)>;

/// The driver's consumer of the last topic: the arrival time of every record, by event id.
#[derive(Debug)]
pub struct Probe {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    handle: JoinHandle<anyhow::Result<Arrivals>>,
}

#[derive(Debug, serde::Deserialize)]
pub struct EventId {
    pub event_id: Uuid,
}

impl Probe {
    pub fn start(topic: &str, expected: u64) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = testkit::kafka()
            .client_config(&[
                ("group.id", &testkit::unique("bench-probe")),
                ("enable.auto.commit", "false"),
                ("fetch.wait.max.ms", "10"),
                ("enable.partition.eof", "false"),
            ])
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (stop2, received2) = (stop.clone(), received.clone());
        let handle = std::thread::spawn(move || {
            let mut seen = HashMap::with_capacity(expected as usize);
            while !stop2.load(Ordering::Relaxed) && (seen.len() as u64) < expected {
                let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
                let at = unix_us();
                let message = message?;
                let id: EventId = serde_json::from_slice(message.payload().unwrap_or_default())?;
                let created = message.timestamp().to_millis().unwrap_or(0);
                seen.entry(id.event_id).or_insert((at, created));
                received2.store(seen.len() as u64, Ordering::Relaxed);
            }
            Ok(seen)
        });
        Ok(Self { stop, received, handle })
    }

    /// Waits (bounded) for `expected` records, then stops.
    pub fn finish(self, expected: u64, timeout: Duration) -> anyhow::Result<Arrivals> {
        let deadline = Instant::now() + timeout;
        while self.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().map_err(|_| anyhow::anyhow!("probe panicked"))?
    }
}

/// Every record of `topic` from the beginning to the high watermarks read now.
pub fn scan(topic: &str, mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>)) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = testkit::kafka()
        .client_config(&[("group.id", &testkit::unique("bench-scan")), ("enable.auto.commit", "false")])
        .create()?;
    let timeout = Duration::from_secs(30);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut remaining = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        if high > low {
            remaining.insert(p.id(), high);
        }
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut n = 0;
    let mut idle = Instant::now();
    while !remaining.is_empty() {
        ensure!(idle.elapsed() < timeout, "reading {topic} stalled; still waiting on {remaining:?}");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message?;
            idle = Instant::now();
            n += 1;
            each(&message);
            if remaining.get(&message.partition()).is_some_and(|&high| message.offset() + 1 >= high) {
                remaining.remove(&message.partition());
            }
        }
    }
    Ok(n)
}

/// Records in `topic` (sum of high − low watermarks).
pub fn count(topic: &str) -> u64 {
    testkit::wait_for_count(topic, i64::MAX, Duration::ZERO).max(0) as u64
}
