//! The local broker's storage is durable: Nisshi on `s3://` keeps every acknowledged record and
//! every committed offset across a crash (SIGKILL) and restart.
//!
//! The test starts a broker of its own (the Nisshi build `scripts/test.sh` exports as
//! `NISSHI_BIN`) on a free port, with its data in a fresh bucket of the shared SeaweedFS, so the
//! shared broker other tests use is never disturbed.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use futures::future::join_all;
use pipeline_kafka::args::KafkaArgs;
use pipeline_kafka::client;
use pipeline_testkit as testkit;
use pipeline_testkit::OwnBroker;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

fn committed(kafka: &KafkaArgs, group: &str, topic: &str) -> Vec<(i32, Offset)> {
    let consumer: BaseConsumer = kafka.client_config(&[("group.id", group)]).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    tpl.add_partition(topic, 1);
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements().iter().map(|e| (e.partition(), e.offset())).collect()
}

#[tokio::test]
async fn records_and_committed_offsets_survive_a_broker_crash() {
    pipeline_testkit::needs_stack!(Kafka, S3, BrokerBuilds);
    const N: usize = 1_000;
    // Nisshi takes a whole bucket; this one is deleted at the end (SeaweedFS has a volume per
    // bucket and only so many of them).
    let bucket = testkit::unique("brokerdata");
    let store = pipeline_s3::store::ObjectStore::connect(&testkit::s3(&bucket)).await;
    store.ensure_bucket().await.expect("create the broker's bucket");
    let (port, storage, dir) = (testkit::free_port(), format!("s3://{bucket}/"), std::env::temp_dir());
    let broker = OwnBroker::start(port, &storage, &dir, &[]).await;
    let kafka = broker.kafka(&[]);
    client::check_cluster(&kafka, None).await.expect("own broker answers");
    let topic = testkit::unique("durable");
    client::create_topics(&kafka, &[&topic], 2, 1).await.unwrap();
    let producer = client::producer(&kafka).unwrap();
    let payloads: Vec<String> = (0..N).map(|i| format!("record-{i}")).collect();
    let deliveries = payloads.iter().enumerate().map(|(i, p)| {
        let record = FutureRecord::to(&topic).partition((i % 2) as i32).key("k").payload(p);
        producer.send(record, Duration::from_secs(10))
    });
    for result in join_all(deliveries).await {
        result.expect("acknowledged");
    }
    let group = testkit::unique("group");
    let consumer: BaseConsumer = kafka.client_config(&[("group.id", &group)]).create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, Offset::Offset(300)).unwrap();
    offsets.add_partition_offset(&topic, 1, Offset::Offset(123)).unwrap();
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
    drop(consumer);
    let expected_offsets = vec![(0, Offset::Offset(300)), (1, Offset::Offset(123))];
    assert_eq!(committed(&kafka, &group, &topic), expected_offsets);

    broker.kill();
    let _broker = OwnBroker::start(port, &storage, &dir, &[]).await;
    client::check_cluster(&kafka, Some(&topic)).await.expect("restarted broker answers");

    let (k, t) = (kafka.clone(), topic.clone());
    let records =
        tokio::task::spawn_blocking(move || testkit::read_all_from(&k, &t, Duration::from_secs(60))).await.unwrap();
    let mut got: Vec<String> =
        records.iter().map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap()).collect();
    got.sort_by_key(|s| s[7..].parse::<usize>().unwrap());
    assert_eq!(got, payloads, "every acknowledged record is back");
    assert_eq!(committed(&kafka, &group, &topic), expected_offsets, "committed offsets are back");
    drop(_broker);
    store.delete_bucket().await.expect("delete the broker's bucket");
}
