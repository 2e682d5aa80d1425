//! The at-least-once loop off the happy path, against librdkafka's mock cluster (in-process
//! brokers whose failures a test controls): a broker down longer than `message.timeout.ms`,
//! a stop request while deliveries fail, and records the producer refuses. Each test checks
//! exact outcomes: every input's output delivered (or dead-lettered), offsets committed only
//! past acknowledged inputs.
//!
//! Two brokers: the input topic and the dead-letter topic lead on broker 1 (with the group
//! coordinator), the output topic on broker 2, so broker 2 can fail while the input keeps
//! flowing. One test runs the exactly-once loop: a transaction that aborts at a cooperative
//! revocation must leave the partitions kept rewound, not skipped.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::schema::{JsonEvent, SensorEvent};
use pipeline_kafka::args::{KafkaArgs, ServiceArgs};
use pipeline_kafka::observe::Readiness;
use pipeline_kafka::runtime::{self, InputMeta, Output, Processor, RunStats, dlq_headers};
use pipeline_kafka::runtime::{Guarantee, RuntimeConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const INPUT: &str = "in";
const OUTPUT: &str = "out";
const DLQ: &str = "in.dlq";
const GROUP: &str = "loop-faults";

/// Echoes each event to [`OUTPUT`] (one output per input) and counts what it saw.
struct Echo {
    /// Inputs processed.
    processed: Arc<AtomicU64>,
    /// Ticks seen: proof the loop's timers run.
    ticks: Arc<AtomicU64>,
    /// An event with this speed gets an output too large for the producer.
    oversize_speed: f64,
    /// When non-zero, every output's value is padded to this many bytes.
    pad_to: usize,
}

impl Processor for Echo {
    type Restored = ();
    type Input<'a> = SensorEvent;

    fn process(&mut self, event: SensorEvent, _: InputMeta<'_>, out: &mut Vec<Output>) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        let mut payload = event.encode();
        if event.speed == self.oversize_speed {
            payload.resize(1_500_000, b' ');
        } else if self.pad_to > 0 {
            payload.resize(self.pad_to, b' ');
        }
        out.push(Output {
            topic: Arc::from(OUTPUT),
            key: Some(event.event_id.to_string().into_bytes()),
            payload,
            headers: None,
        });
    }

    fn on_tick(&mut self, _: &mut Vec<Output>) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

/// A mock cluster laid out as the module header says.
fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(2).unwrap();
    for (topic, leader) in [(INPUT, 1), (DLQ, 1), (OUTPUT, 2)] {
        mock.create_topic(topic, 2, 1).unwrap();
        for p in 0..2 {
            mock.partition_leader(topic, p, Some(leader)).unwrap();
        }
    }
    mock.coordinator(MockCoordinator::Group(GROUP.into()), 1).unwrap();
    mock
}

fn kafka(mock: &MockCluster<'static, DefaultProducerContext>, properties: &[(&str, &str)]) -> KafkaArgs {
    KafkaArgs {
        bootstrap_servers: mock.bootstrap_servers(),
        properties: Vec::new(),
        connect_timeout: Duration::from_secs(10),
    }
    .with_properties(properties)
}

/// The settings the echo service would parse from its command line.
fn service_args(kafka: KafkaArgs, drain: Duration) -> ServiceArgs {
    ServiceArgs {
        kafka,
        group_id: Some(GROUP.into()),
        group_instance_id: None,
        dlq_topic: Some(DLQ.into()),
        max_in_flight: 20_000,
        max_in_flight_bytes: 16 << 20,
        max_record_bytes: 2 << 20,
        drain_timeout: drain,
        log_format: Default::default(),
        metrics_addr: None,
        guarantee: Guarantee::AtLeastOnce,
        transactional_id: Some("echo".into()),
        transaction_interval: Duration::from_millis(100),
    }
}

/// The echo loop's configuration, made as a service makes it.
fn config_from(args: &ServiceArgs) -> RuntimeConfig {
    let tick = Duration::from_millis(100);
    let mut config = RuntimeConfig::new(args, "echo", INPUT, runtime::OffsetCommits::Acknowledged, tick).unwrap();
    config.output_topics = vec![OUTPUT.into()];
    config
}

fn config(kafka: KafkaArgs, drain: Duration) -> RuntimeConfig {
    config_from(&service_args(kafka, drain))
}

/// Produces `n` events (and any `extra` raw values) to [`INPUT`]; returns the events' ids.
fn fill(
    mock: &MockCluster<'static, DefaultProducerContext>,
    seed: u64,
    n: usize,
    extra: &[Vec<u8>],
) -> HashSet<String> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let mut generator = EventGenerator::new(vec![1, 2, 3], Some(seed), EventClock::Wall);
    let mut ids = HashSet::new();
    for i in 0..n {
        let mut event = generator.next_event();
        event.speed = (i % 170) as f64; // never the oversize marker unless asked
        ids.insert(event.event_id.to_string());
        let value = event.encode();
        producer.send(BaseRecord::<[u8], [u8]>::to(INPUT).payload(&value[..]).partition((i % 2) as i32)).unwrap();
    }
    for (i, value) in extra.iter().enumerate() {
        producer.send(BaseRecord::<[u8], [u8]>::to(INPUT).payload(&value[..]).partition((i % 2) as i32)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    ids
}

/// Every record of `topic` (the mock's high watermarks are right).
fn read(mock: &MockCluster<'static, DefaultProducerContext>, topic: &str) -> Vec<OwnedMessage> {
    pipeline_testkit::read_all_from(&kafka(mock, &[]), topic, Duration::from_secs(30))
}

/// The group's committed offset per input partition.
fn committed(mock: &MockCluster<'static, DefaultProducerContext>) -> HashMap<i32, i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", mock.bootstrap_servers()).set("group.id", GROUP).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition(INPUT, p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements().iter().map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { 0 })).collect()
}

/// The event id of an input or output record.
fn id(m: &OwnedMessage) -> String {
    SensorEvent::decode(m.payload().unwrap(), usize::MAX).map(|e| e.event_id.to_string()).unwrap_or_default()
}

/// Waits until the output holds exactly the events `ids` and the group has committed every input.
async fn every_output_delivered_and_committed(
    mock: &MockCluster<'static, DefaultProducerContext>,
    ids: &HashSet<String>,
) {
    wait_for("every output", Duration::from_secs(60), || {
        read(mock, OUTPUT).iter().map(id).collect::<HashSet<_>>() == *ids
    })
    .await;
    wait_for("offsets committed to the end", Duration::from_secs(10), || {
        committed(mock).values().sum::<i64>() == ids.len() as i64
    })
    .await;
}

struct Running {
    task: tokio::task::JoinHandle<Result<RunStats, runtime::RuntimeError>>,
    cancel: CancellationToken,
    processed: Arc<AtomicU64>,
    ticks: Arc<AtomicU64>,
    /// The instance's readiness (partitions assigned or not).
    readiness: Readiness,
}

fn start(config: RuntimeConfig, oversize_speed: f64) -> Running {
    start_padded(config, oversize_speed, 0)
}

fn start_padded(config: RuntimeConfig, oversize_speed: f64, pad_to: usize) -> Running {
    // The loop's own log lines, shown for a failing test.
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    let (processed, ticks) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let echo = Echo { processed: processed.clone(), ticks: ticks.clone(), oversize_speed, pad_to };
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let readiness = config.readiness.clone();
    let task = tokio::spawn(async move { runtime::run(&config, echo, stop).await });
    Running { task, cancel, processed, ticks, readiness }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Broker 2 (the output's leader) is down for 6 s, four times `message.timeout.ms`: deliveries
/// fail and are resent with backoff while the timers keep running and the loop keeps reading;
/// once it is back, every event reaches the output and the committed offsets reach the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_broker_down_longer_than_the_delivery_timeout_loses_nothing_and_blocks_nothing() {
    let mock = cluster();
    let n = 4000;
    let ids = fill(&mock, 1, n, &[]);
    mock.broker_down(2).unwrap();
    let run = start(config(kafka(&mock, &[("message.timeout.ms", "1500")]), Duration::from_secs(5)), -1.0);
    // The outage: the loop reads everything (max_in_flight is larger), its deliveries time out
    // and are resent with backoff; the timers keep firing.
    wait_for("every input read", Duration::from_secs(30), || run.processed.load(Ordering::Relaxed) == n as u64).await;
    let ticks = run.ticks.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(run.ticks.load(Ordering::Relaxed) >= ticks + 10, "ticks stalled during the outage");
    assert_eq!(committed(&mock).values().sum::<i64>(), 0, "nothing is committed before it is delivered");
    mock.broker_up(2).unwrap();
    every_output_delivered_and_committed(&mock, &ids).await;
    run.cancel.cancel();
    let stats = run.task.await.unwrap().unwrap();
    assert_eq!(stats.consumed, n as u64);
    assert!(stats.retried > 0, "the outage made deliveries fail: {stats:?}");
    assert!(stats.produced >= n as u64, "{stats:?}");
}

/// The bytes awaiting acknowledgement bound reading as the count does: with the output's
/// broker down, the loop reads exactly as many inputs as fit under `max_in_flight_bytes`
/// (each output 1 000 value bytes + a 36-byte key), far fewer than `max_in_flight`; once the
/// broker is back, everything flows and is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_awaiting_acknowledgement_are_bounded_by_bytes_too() {
    let mock = cluster();
    let n = 200;
    let ids = fill(&mock, 1, n, &[]);
    mock.broker_down(2).unwrap();
    let mut config = config(kafka(&mock, &[("message.timeout.ms", "1000")]), Duration::from_secs(5));
    config.max_in_flight_bytes = 10 * 1036;
    let run = start_padded(config, -1.0, 1000);
    wait_for("the first inputs", Duration::from_secs(30), || run.processed.load(Ordering::Relaxed) > 0).await;
    // Deliveries time out and are retried meanwhile; the bound holds through the retries.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(run.processed.load(Ordering::Relaxed), 10, "reading stops once 10 outputs' bytes are in flight");
    mock.broker_up(2).unwrap();
    every_output_delivered_and_committed(&mock, &ids).await;
    run.cancel.cancel();
    assert_eq!(run.task.await.unwrap().unwrap().consumed, n as u64);
}

/// A stop request while the output's broker is down: the loop stops within its drain deadline
/// (plus the commit), and what it committed covers only acknowledged inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_request_while_deliveries_fail_stops_within_the_drain_deadline() {
    let mock = cluster();
    let n = 1000;
    fill(&mock, 1, n, &[]);
    let drain = Duration::from_secs(3);
    let run = start(config(kafka(&mock, &[("message.timeout.ms", "1000")]), drain), -1.0);
    wait_for("the first outputs", Duration::from_secs(30), || read(&mock, OUTPUT).len() == n).await;
    // More input while the output's broker is down: read, never delivered.
    mock.broker_down(2).unwrap();
    fill(&mock, 2, n, &[]);
    wait_for("the new inputs read", Duration::from_secs(30), || run.processed.load(Ordering::Relaxed) == 2 * n as u64)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await; // their deliveries time out and wait for resends
    let asked = Instant::now();
    run.cancel.cancel();
    let stats = run.task.await.unwrap().unwrap();
    let took = asked.elapsed();
    // The bound is the drain deadline plus the final commit and unsubscribe; the old loop kept
    // retrying for minutes here.
    assert!(took < drain + Duration::from_secs(5), "stopping took {took:?}");
    mock.broker_up(2).unwrap();
    let delivered: HashSet<String> = read(&mock, OUTPUT).iter().map(id).collect();
    let inputs = read(&mock, INPUT);
    for (partition, next) in committed(&mock) {
        for m in inputs.iter().filter(|m| m.partition() == partition && m.offset() < next) {
            assert!(delivered.contains(&id(m)), "offset {} of p{partition} committed but not delivered", m.offset());
        }
    }
    assert_eq!(stats.consumed, 2 * n as u64);
    assert!(stats.retried > 0, "deliveries failed before the stop: {stats:?}");
    assert_eq!(committed(&mock).values().sum::<i64>(), n as i64, "exactly the delivered first batch is committed");
}

/// An output over the producer's `message.max.bytes` and an oversized poison input: both are
/// dead-lettered (cut to fit, with their original size and SHA-256), nothing stops, every
/// other event is delivered and every offset committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_producer_refuses_are_dead_lettered_and_the_loop_goes_on() {
    let mock = cluster();
    let n = 500;
    // The poison: valid JSON without `speed`, 1.01 MB (under --max-record-bytes).
    let poison = format!(
        "{{\"event_id\":\"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab\",\"event_time\":\"2026-01-02T03:04:05Z\",\
         \"car_id\":1,\"rpm\":3100,\"gear\":3,\"pad\":\"{}\"}}",
        "p".repeat(1_010_000)
    )
    .into_bytes();
    let mut marker = EventGenerator::new(vec![9], Some(1), EventClock::Wall).next_event();
    marker.speed = 179.5; // its output is padded past message.max.bytes
    let ids = fill(&mock, 3, n, &[poison.clone(), marker.encode()]);
    let run = start(config(kafka(&mock, &[]), Duration::from_secs(5)), 179.5);
    wait_for("every output", Duration::from_secs(60), || {
        read(&mock, OUTPUT).iter().map(id).collect::<HashSet<_>>() == ids
    })
    .await;
    wait_for("two dead letters", Duration::from_secs(30), || read(&mock, DLQ).len() == 2).await;
    wait_for("offsets committed to the end", Duration::from_secs(10), || {
        committed(&mock).values().sum::<i64>() == n as i64 + 2
    })
    .await;
    run.cancel.cancel();
    let stats = run.task.await.unwrap().unwrap();
    assert_eq!(stats.dead_lettered, 2, "{stats:?}");
    let letters = read(&mock, DLQ);
    let header = |m: &OwnedMessage, key: &str| {
        m.headers()
            .and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let refused_output = letters.iter().find(|m| header(m, dlq_headers::OUTPUT_TOPIC).is_some()).unwrap();
    assert_eq!(header(refused_output, dlq_headers::OUTPUT_TOPIC).as_deref(), Some(OUTPUT));
    assert_eq!(header(refused_output, dlq_headers::TRUNCATED).as_deref(), Some("true"));
    assert_eq!(header(refused_output, dlq_headers::ORIGINAL_SIZE).as_deref(), Some("1500000"));
    let poisoned = letters.iter().find(|m| header(m, dlq_headers::OUTPUT_TOPIC).is_none()).unwrap();
    assert_eq!(header(poisoned, dlq_headers::ORIGINAL_SIZE), Some(poison.len().to_string()));
    assert!(poison.starts_with(poisoned.payload().unwrap()));
    assert!(
        header(poisoned, dlq_headers::ERROR).unwrap().contains("speed"),
        "{:?}",
        header(poisoned, dlq_headers::ERROR)
    );
}

/// A missing output topic stops the service at start, naming the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_output_topic_is_named_at_start() {
    let mock = cluster();
    let mut config = config(kafka(&mock, &[]), Duration::from_secs(1));
    config.output_topics = vec!["nowhere".into()];
    let run = start(config, -1.0);
    let err = run.task.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("output topic `nowhere` does not exist"), "{err}");
}

/// A second instance joins mid-stream with cooperative-sticky rebalancing, then leaves: the
/// partitions move incrementally (the first instance keeps the one it is not asked to give up,
/// with its in-flight state), and every event reaches the output with all offsets committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalancing_mid_stream_loses_nothing() {
    let mock = cluster();
    let cooperative = [("partition.assignment.strategy", "cooperative-sticky")];
    let mut ids = fill(&mock, 4, 2000, &[]);
    let first = start(config(kafka(&mock, &cooperative), Duration::from_secs(5)), -1.0);
    wait_for("the first batch", Duration::from_secs(30), || first.processed.load(Ordering::Relaxed) == 2000).await;
    let second = start(config(kafka(&mock, &cooperative), Duration::from_secs(5)), -1.0);
    // Input keeps arriving through the rebalance (the mock group takes some seconds to settle).
    let mut seed = 5;
    while !second.readiness.is_ready() || second.processed.load(Ordering::Relaxed) == 0 {
        ids.extend(fill(&mock, seed, 200, &[]));
        seed += 1;
        assert!(seed < 300, "the second instance never took a partition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(first.readiness.is_ready(), "the first instance kept a partition (incremental, not eager)");
    // The transactional loop beats too, between its transactions (`/healthz`).
    let beat = first.readiness.heartbeat.last().expect("the loop has turned");
    wait_for("a heartbeat", Duration::from_secs(30), || first.readiness.heartbeat.last() > Some(beat)).await;
    second.cancel.cancel();
    let second_stats = second.task.await.unwrap().unwrap();
    ids.extend(fill(&mock, 1000, 1000, &[]));
    let total = ids.len() as i64;
    wait_for("every output", Duration::from_secs(60), || {
        read(&mock, OUTPUT).iter().map(id).collect::<HashSet<_>>() == ids
    })
    .await;
    wait_for("offsets committed to the end", Duration::from_secs(20), || {
        committed(&mock).values().sum::<i64>() == total
    })
    .await;
    first.cancel.cancel();
    let first_stats = first.task.await.unwrap().unwrap();
    assert!(first_stats.consumed + second_stats.consumed >= total as u64, "{first_stats:?} {second_stats:?}");
}

/// Exactly-once with cooperative-sticky rebalancing: a second instance joins while the first
/// holds an open transaction with inputs of both partitions, and the commit before the
/// revocation fails (the group refuses the transaction's offsets), so it aborts. The partition the first
/// instance keeps must be read again from the aborted inputs (its position is past them and no
/// one else reads them); the revoked one goes to the second instance from the committed offset.
/// Every input id then reaches the output, read committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_at_a_cooperative_revocation_rewinds_the_kept_partitions() {
    let mock = cluster();
    let cooperative = [("partition.assignment.strategy", "cooperative-sticky")];
    let txn_config = |id: &str, interval: Duration| {
        mock.coordinator(MockCoordinator::Transaction(id.into()), 1).unwrap();
        config_from(&ServiceArgs {
            guarantee: Guarantee::ExactlyOnce,
            transactional_id: Some(id.into()),
            transaction_interval: interval,
            ..service_args(kafka(&mock, &cooperative), Duration::from_secs(5))
        })
    };
    let mut ids = fill(&mock, 6, 2000, &[]);
    // A transaction far longer than the test: the only commits are the revocation's and the stop's.
    let first = start(txn_config("echo-first", Duration::from_secs(600)), -1.0);
    wait_for("the first batch", Duration::from_secs(30), || first.processed.load(Ordering::Relaxed) == 2000).await;
    // The revocation's commit sends the transaction's input offsets: refused, so it aborts.
    let refusals = [rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 3];
    mock.request_errors(rdkafka::types::RDKafkaApiKey::TxnOffsetCommit, &refusals);
    let second = start(txn_config("echo-second", Duration::from_millis(200)), -1.0);
    wait_for("the second instance's partition", Duration::from_secs(60), || second.readiness.is_ready()).await;
    assert!(first.readiness.is_ready(), "the first instance kept a partition (incremental, not eager)");
    // The transactional loop beats too, between its transactions (`/healthz`).
    let beat = first.readiness.heartbeat.last().expect("the loop has turned");
    wait_for("a heartbeat", Duration::from_secs(30), || first.readiness.heartbeat.last() > Some(beat)).await;
    // The revocation (and its abort) came before the second instance's assignment.
    mock.clear_request_errors(rdkafka::types::RDKafkaApiKey::TxnOffsetCommit);
    ids.extend(fill(&mock, 7, 200, &[]));
    // 1 100 inputs per partition now. The second instance reads its partition from the
    // committed offset (none: the start); the first reads its kept partition again from the
    // aborted transaction's first input: 2 000 before the abort, then all 1 100 of its
    // partition, not only the 100 new ones (without the rewind: 2 100).
    wait_for("both partitions read to the end", Duration::from_secs(60), || {
        first.processed.load(Ordering::Relaxed) >= 3100 && second.processed.load(Ordering::Relaxed) >= 1100
    })
    .await;
    second.cancel.cancel();
    second.task.await.unwrap().unwrap();
    first.cancel.cancel();
    first.task.await.unwrap().unwrap();
    let committed = kafka(&mock, &[("isolation.level", "read_committed")]);
    let out: Vec<String> =
        pipeline_testkit::read_all_from(&committed, OUTPUT, Duration::from_secs(30)).iter().map(id).collect();
    let got: HashSet<String> = out.iter().cloned().collect();
    let missing = ids.difference(&got).count();
    assert_eq!(missing, 0, "{missing} of {} inputs never reached the output", ids.len());
    assert_eq!(got, ids, "the output holds exactly the inputs");
}

/// A stop request with the whole cluster gone (both brokers down, the group coordinator too):
/// the loop still stops within its drain deadline plus a few seconds for the client's close.
/// Meanwhile it keeps turning: its heartbeat (`/healthz`) goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_request_with_the_cluster_gone_stops_within_the_drain_deadline() {
    let mock = cluster();
    fill(&mock, 11, 500, &[]);
    let drain = Duration::from_secs(3);
    let run = start(config(kafka(&mock, &[("message.timeout.ms", "1000")]), drain), -1.0);
    wait_for("every input read", Duration::from_secs(30), || run.processed.load(Ordering::Relaxed) == 500).await;
    mock.broker_down(2).unwrap();
    fill(&mock, 12, 500, &[]);
    wait_for("the new inputs read", Duration::from_secs(30), || run.processed.load(Ordering::Relaxed) == 1000).await;
    mock.broker_down(1).unwrap();
    let at_outage = run.readiness.heartbeat.last().expect("the loop has turned");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The loop kept turning with the cluster gone: /healthz stays 200 (no restart storm).
    assert!(run.readiness.heartbeat.last().unwrap() > at_outage, "no heartbeat during the outage");
    assert!(run.readiness.heartbeat.health().0);
    let asked = Instant::now();
    run.cancel.cancel();
    let stats = run.task.await.unwrap().unwrap();
    let took = asked.elapsed();
    assert!(took < drain + Duration::from_secs(5), "stopping took {took:?}");
    assert_eq!(stats.consumed, 1000);
}

/// The output topic starts refusing every record (authorization revoked): no dead letter can
/// fix that, so the loop stops with one line naming the topic, `/readyz` says why first, and
/// nothing past the last acknowledged input is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_topic_that_refuses_everything_stops_the_service_with_one_line() {
    let mock = cluster();
    let ids = fill(&mock, 13, 300, &[]);
    let first = start(config(kafka(&mock, &[]), Duration::from_secs(3)), -1.0);
    wait_for("every output", Duration::from_secs(30), || {
        read(&mock, OUTPUT).iter().map(id).collect::<HashSet<_>>() == ids
    })
    .await;
    first.cancel.cancel();
    first.task.await.unwrap().unwrap();
    assert_eq!(committed(&mock).values().sum::<i64>(), 300);
    // More input, then every produce request is refused (the mock's errors apply to any client,
    // so the input is written first) and the service starts again.
    fill(&mock, 14, 100, &[]);
    mock.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50],
    );
    let run = start(config(kafka(&mock, &[]), Duration::from_secs(3)), -1.0);
    let err = tokio::time::timeout(Duration::from_secs(60), run.task).await.unwrap().unwrap().unwrap_err().to_string();
    assert!(err.contains("topic `out` refused") && err.contains("uthorization"), "{err}");
    assert!(run.readiness.report().contains("outputs failed: topic `out` refused"), "{}", run.readiness.report());
    assert_eq!(committed(&mock).values().sum::<i64>(), 300, "nothing past the acknowledged inputs");
}

/// Regression (a hang seen on cold, loaded machines): the consumer's close serves the
/// revocation librdkafka queues for it, and the rebalance callback used to ask librdkafka for
/// the assignment right after unassigning — a request the closing group can destroy unanswered,
/// so the close, the blocking task it ran in and the runtime's drop waited forever. Each round
/// stops a loop (alternately with the cluster up and with every broker down, with deliveries
/// still in flight) and then drops the runtime, as a binary's `main` does; every round must end.
#[test]
fn stopping_with_a_revocation_pending_in_the_close_never_hangs_the_runtime() {
    const ROUNDS: u64 = 6;
    let mock = cluster();
    for round in 0..ROUNDS {
        let gone = round % 2 == 1;
        fill(&mock, 40 + round, 300, &[]);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let asked = runtime.block_on(async {
            let run = start(config(kafka(&mock, &[("message.timeout.ms", "1000")]), Duration::from_secs(2)), -1.0);
            wait_for("the first inputs", Duration::from_secs(60), || run.processed.load(Ordering::Relaxed) > 0).await;
            if gone {
                mock.broker_down(2).unwrap();
                fill(&mock, 80 + round, 100, &[]);
                mock.broker_down(1).unwrap();
            }
            let asked = Instant::now();
            run.cancel.cancel();
            let stopped = tokio::time::timeout(Duration::from_secs(30), run.task).await;
            assert!(stopped.is_ok(), "round {round} (cluster gone: {gone}): the loop did not stop");
            asked
        });
        // What hung: the runtime's drop, waiting for the close.
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(runtime);
            let _ = done.send(());
        });
        assert!(
            wait.recv_timeout(Duration::from_secs(20)).is_ok(),
            "round {round} (cluster gone: {gone}): the runtime did not shut down: the consumer's close hung"
        );
        let took = asked.elapsed();
        // drain 2 s + the final steps' floor + the close's 1 s budget, and room for a loaded machine.
        assert!(took < Duration::from_secs(8), "round {round} (cluster gone: {gone}): the stop took {took:?}");
        if gone {
            mock.broker_up(1).unwrap();
            mock.broker_up(2).unwrap();
        }
    }
}
