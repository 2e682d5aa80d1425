//! The drill's measuring side: what each stage's output shows while the fleet changes.
//!
//! One reader thread per output topic, group-less (every partition assigned from the start,
//! nothing committed), so it takes no part in the rebalances it measures. Every topic has the
//! same partition count and every stage keys its records by car id with librdkafka's
//! partitioner, so partition N of a stage's output holds the output of partition N of its input:
//! a gap in an output partition is a pause of that input partition. Record timestamps are the
//! producing service's clock at produce time (the services set none). Per topic it keeps:
//! - per partition, the gaps longer than [`GAP_KEPT_MS`] between consecutive records (a counts
//!   row's partition is the input partition it names: that topic is keyed by window too);
//! - the timestamps of duplicates: an event id seen in the last 90-180 s (enriched, alerts), or
//!   a counts row covering no more input than one already seen for its window and partition (a
//!   replay);
//! - per [`BUCKET_MS`] of record time, the largest lag: the record's timestamp minus its
//!   event's time (the generator stamps wall-clock time), or for a counts row minus the time the
//!   newest alert it covers was written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pipeline_core::lock;
use pipeline_core::schema::{EnrichedEvent, JsonEvent};
use pipeline_kafka::args::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::check::LIMIT;

/// The resolution of the lag series.
pub const BUCKET_MS: i64 = 100;
/// Gaps shorter than this are not kept (at the drill's rates a partition's records are
/// milliseconds apart; a counts partition's one trigger apart).
pub const GAP_KEPT_MS: i64 = 200;
/// Alerts' write times are kept for every this many offsets of a partition (the counter's lag
/// is read off them: precise to that many records).
const SAMPLE_EVERY: i64 = 64;
/// Event ids are remembered this long (record time) to find duplicates: a duplicate follows its
/// original within a session timeout (45 s at most) and a replay. Bounded, so that the drill's
/// own memory and CPU stay flat however long it runs (a set of every id grew to hundreds of MB
/// and its rehashes competed with the services for the cores).
const REMEMBER_MS: i64 = 90_000;

/// The event ids written in the last [`REMEMBER_MS`] to [`REMEMBER_MS`] × 2: two generations,
/// the older dropped when the newer is [`REMEMBER_MS`] old.
#[derive(Debug, Default)]
struct RecentIds {
    /// Ids of the current generation.
    newer: HashSet<u128>,
    /// Ids of the one before.
    older: HashSet<u128>,
    /// When the current generation began (record time).
    since: i64,
}

impl RecentIds {
    /// Whether `id` was seen before (remembering it now), at record time `ts`.
    fn seen(&mut self, id: u128, ts: i64) -> bool {
        if ts - self.since >= REMEMBER_MS {
            self.older = std::mem::take(&mut self.newer);
            self.since = ts;
        }
        self.older.contains(&id) || !self.newer.insert(id)
    }
}

/// A stage's output topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The enricher's output.
    Enriched,
    /// The detector's output.
    Alerts,
    /// The counter's partial windows.
    Counts,
}

/// What one topic showed.
#[derive(Debug, Default, Clone)]
pub struct Series {
    /// Time zero of the lag buckets (ms since the epoch).
    pub origin_ms: i64,
    /// Per partition, the newest record's timestamp (ms since the epoch).
    pub last: Vec<Option<i64>>,
    /// Per partition, the newest record's lag, ms (None: unknown).
    pub last_lag: Vec<Option<i64>>,
    /// (partition, from, to) of every gap longer than [`GAP_KEPT_MS`].
    pub gaps: Vec<(i32, i64, i64)>,
    /// Timestamps of the duplicates.
    pub duplicates: Vec<i64>,
    /// The largest lag (ms) per bucket of record time from `origin_ms`; -1: none.
    pub lag: Vec<i64>,
    /// Records read.
    pub records: u64,
}

impl Series {
    fn new(partitions: i32, origin_ms: i64) -> Self {
        let n = usize::try_from(partitions).unwrap_or(0);
        Self { origin_ms, last: vec![None; n], last_lag: vec![None; n], ..Self::default() }
    }

    /// One record of `partition` written at `ts` with `lag` (None: unknown), a duplicate or not.
    fn record(&mut self, partition: i32, ts: i64, lag: Option<i64>, duplicate: bool) {
        self.records += 1;
        let Some(last) = usize::try_from(partition).ok().and_then(|p| self.last.get_mut(p)) else { return };
        if let Some(previous) = *last
            && ts - previous > GAP_KEPT_MS
        {
            self.gaps.push((partition, previous, ts));
        }
        *last = Some(last.map_or(ts, |l| l.max(ts)));
        if let Some(newest) = usize::try_from(partition).ok().and_then(|p| self.last_lag.get_mut(p)) {
            *newest = lag.or(*newest);
        }
        if duplicate {
            self.duplicates.push(ts);
        }
        if let (Some(lag), Ok(bucket)) = (lag, usize::try_from((ts - self.origin_ms) / BUCKET_MS)) {
            if bucket >= self.lag.len() {
                self.lag.resize(bucket + 1, -1);
            }
            self.lag[bucket] = self.lag[bucket].max(lag);
        }
    }
}

/// The reader threads and what they saw so far.
#[derive(Debug)]
pub struct Watch {
    /// Time zero of the lag buckets (ms since the epoch).
    pub origin_ms: i64,
    /// Per stage, what its topic showed so far.
    series: Arc<Mutex<BTreeMap<Stage, Series>>>,
    /// Tells the readers to stop.
    stop: Arc<AtomicBool>,
    /// The readers.
    threads: Vec<JoinHandle<()>>,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Watch {
    /// Starts reading `topics` (each stage's output topic, `partitions` each) on `kafka`.
    pub fn start(kafka: &KafkaArgs, topics: &[(Stage, String)], partitions: i32) -> Self {
        let origin_ms = now_ms();
        let series =
            Arc::new(Mutex::new(topics.iter().map(|(s, _)| (*s, Series::new(partitions, origin_ms))).collect()));
        let stop = Arc::new(AtomicBool::new(false));
        // Per alerts partition, the write times of every SAMPLE_EVERY-th offset (counts' lag).
        let alert_times: Arc<Mutex<Vec<Vec<i64>>>> =
            Arc::new(Mutex::new(vec![Vec::new(); usize::try_from(partitions).unwrap_or(0)]));
        let threads = topics
            .iter()
            .map(|(stage, topic)| {
                let reader = Reader {
                    stage: *stage,
                    series: series.clone(),
                    alert_times: alert_times.clone(),
                    stop: stop.clone(),
                };
                let (kafka, topic) = (kafka.clone(), topic.clone());
                std::thread::Builder::new()
                    .name(format!("watch-{stage:?}"))
                    .spawn(move || reader.run(&kafka, &topic, partitions))
                    .expect("start a reader")
            })
            .collect();
        Self { origin_ms, series, stop, threads }
    }

    /// A copy of what `stage`'s topic showed so far.
    pub fn series(&self, stage: Stage) -> Series {
        lock(&self.series).get(&stage).cloned().unwrap_or_default()
    }

    /// Whether `stage` is flowing and caught up at `now`: every partition wrote within the last
    /// `within` and its newest record is less than a second behind (a partition that just
    /// resumed with a backlog is not caught up), and no record of the last `within` (but the
    /// newest half second, which may still be arriving) lagged a second or more. Err says what
    /// is not so.
    pub fn caught_up(&self, stage: Stage, now: i64, within: Duration) -> Result<(), String> {
        let within = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        let series = lock(&self.series);
        let s = series.get(&stage).ok_or("not watched")?;
        for (partition, last) in s.last.iter().enumerate() {
            match last {
                Some(t) if now - t <= within => match s.last_lag.get(partition).copied().flatten() {
                    Some(lag) if lag >= 1000 => return Err(format!("partition {partition} {lag} ms behind")),
                    _ => {}
                },
                Some(t) => return Err(format!("partition {partition} silent for {} ms", now - t)),
                None => return Err(format!("partition {partition} wrote nothing yet")),
            }
        }
        let from = usize::try_from((now - within - self.origin_ms) / BUCKET_MS).unwrap_or(0);
        let to = usize::try_from((now - 500 - self.origin_ms) / BUCKET_MS).unwrap_or(0);
        match s.lag.get(from..to.max(from)).and_then(|b| b.iter().max()) {
            Some(lag) if *lag >= 1000 => Err(format!("lag {lag} ms")),
            Some(_) => Ok(()),
            None => Err("no record read lately".into()),
        }
    }

    /// Stops the readers and returns what every stage's topic showed.
    pub fn finish(mut self) -> BTreeMap<Stage, Series> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        std::mem::take(&mut *lock(&self.series))
    }
}

/// One topic's reader.
struct Reader {
    stage: Stage,
    series: Arc<Mutex<BTreeMap<Stage, Series>>>,
    alert_times: Arc<Mutex<Vec<Vec<i64>>>>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn run(self, kafka: &KafkaArgs, topic: &str, partitions: i32) {
        let consumer: BaseConsumer = kafka
            .client_config(&[
                ("group.id", "rescale-watch"),
                ("enable.auto.commit", "false"),
                ("fetch.wait.max.ms", "50"),
                ("enable.partition.eof", "false"),
            ])
            .create()
            .expect("a reader");
        let mut tpl = TopicPartitionList::new();
        for partition in 0..partitions {
            tpl.add_partition_offset(topic, partition, Offset::Beginning).expect("offset");
        }
        consumer.assign(&tpl).expect("assign");
        // Event stages: the ids seen lately. Counts: per (window, partition) the most input covered.
        let mut seen = RecentIds::default();
        let mut covered: HashMap<(String, i32), i64> = HashMap::new();
        while !self.stop.load(Ordering::SeqCst) {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
            let (mut partition, ts) = (message.partition(), message.timestamp().to_millis().unwrap_or(0));
            let payload = message.payload().unwrap_or_default();
            let (lag, duplicate) = match self.stage {
                Stage::Enriched | Stage::Alerts => {
                    let Ok(event) = EnrichedEvent::decode(payload, LIMIT) else { continue };
                    if self.stage == Stage::Alerts && message.offset() % SAMPLE_EVERY == 0 {
                        self.sample_alert(partition, message.offset(), ts);
                    }
                    (Some(ts - event.event_time.timestamp_millis()), seen.seen(event.event_id.as_u128(), ts))
                }
                Stage::Counts => {
                    // Keyed by window and partition: the row names its input partition.
                    let Some((window, input_partition, offset)) = counts_row(payload) else { continue };
                    partition = input_partition;
                    let replay = covered.get(&(window.clone(), partition)).is_some_and(|o| offset <= *o);
                    let newest = covered.entry((window, partition)).or_insert(offset);
                    *newest = (*newest).max(offset);
                    (self.written_at(partition, offset - 1).map(|at| ts - at), replay)
                }
            };
            if let Some(series) = lock(&self.series).get_mut(&self.stage) {
                series.record(partition, ts, lag, duplicate);
            }
        }
    }

    fn sample_alert(&self, partition: i32, offset: i64, ts: i64) {
        let mut times = lock(&self.alert_times);
        if let Some(samples) = usize::try_from(partition).ok().and_then(|p| times.get_mut(p)) {
            let index = usize::try_from(offset / SAMPLE_EVERY).unwrap_or(0);
            if samples.len() <= index {
                samples.resize(index + 1, 0);
            }
            samples[index] = ts;
        }
    }

    /// When the alert at (`partition`, `offset`) was written, to within [`SAMPLE_EVERY`] records.
    fn written_at(&self, partition: i32, offset: i64) -> Option<i64> {
        let times = lock(&self.alert_times);
        let samples = times.get(usize::try_from(partition).ok()?)?;
        let at = *samples.get(usize::try_from(offset / SAMPLE_EVERY).ok()?)?;
        (at > 0).then_some(at)
    }
}

/// A counts row's window start, input partition and the input offset it covers.
fn counts_row(payload: &[u8]) -> Option<(String, i32, i64)> {
    let row: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let partition = i32::try_from(row.get("partition")?.as_i64()?).ok()?;
    Some((row.get("window_start")?.as_str()?.to_owned(), partition, row.get("input_offset")?.as_i64()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_duplicates_and_the_lag_per_bucket() {
        let mut s = Series::new(2, 0);
        s.record(0, 10, Some(50), false);
        s.record(0, 20, Some(70), false);
        s.record(0, 1_520, Some(1_300), false);
        s.record(1, 1_530, Some(20), true);
        s.record(9, 1_540, None, false); // beyond the topic: counted, not kept
        assert_eq!(s.gaps, [(0, 20, 1_520)]);
        assert_eq!(s.duplicates, [1_530]);
        assert_eq!(s.lag[0], 70);
        assert_eq!(s.lag[15], 1_300);
        assert_eq!(s.lag[1], -1);
        assert_eq!(s.last, [Some(1_520), Some(1_530)]);
        assert_eq!(s.records, 5);
    }

    #[test]
    fn ids_are_remembered_for_one_to_two_horizons() {
        let mut ids = RecentIds::default();
        assert!(!ids.seen(1, 0));
        assert!(ids.seen(1, 10));
        assert!(!ids.seen(2, REMEMBER_MS)); // a new generation: 1 is in the older one
        assert!(ids.seen(1, REMEMBER_MS + 1));
        assert!(!ids.seen(3, 2 * REMEMBER_MS)); // 1's generation dropped
        assert!(!ids.seen(1, 2 * REMEMBER_MS + 1));
        assert!(ids.seen(2, 2 * REMEMBER_MS + 2), "2 is in the older generation still");
    }
}
