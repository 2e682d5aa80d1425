//! Topic administration against the local broker (`scripts/stack.sh up`): describe reports
//! partitions, leaders, replicas and watermarks; delete removes a topic and is idempotent.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use pipeline_kafka::client::{self, KafkaSetupError};
use pipeline_testkit as testkit;
use rdkafka::producer::FutureRecord;

#[tokio::test]
async fn describe_then_delete_a_topic() {
    pipeline_testkit::needs_stack!(Kafka);
    let args = testkit::kafka();
    let topic = testkit::topic("admin", 2).await;

    let producer = client::producer(&args).unwrap();
    for i in 0..3 {
        let payload = format!("record {i}");
        let record = FutureRecord::<str, str>::to(&topic).partition(1).payload(&payload);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    }

    let described = client::describe_topics(&args, &[&topic]).await.unwrap();
    assert_eq!(described.len(), 1);
    let info = &described[0];
    assert_eq!(info.name, topic);
    let ids: Vec<i32> = info.partitions.iter().map(|p| p.id).collect();
    assert_eq!(ids, [0, 1]);
    let watermarks: Vec<(i64, i64)> = info.partitions.iter().map(|p| (p.low, p.high)).collect();
    assert_eq!(watermarks, [(0, 0), (0, 3)]);
    for p in &info.partitions {
        assert!(p.leader >= 0, "{p:?}");
        assert!(p.replicas.contains(&p.leader), "{p:?}");
    }

    let missing = testkit::unique("admin-missing");
    match client::describe_topics(&args, &[&topic, &missing]).await {
        Err(KafkaSetupError::NoSuchTopic { topic: t, .. }) => assert_eq!(t, missing),
        other => panic!("expected NoSuchTopic, got {other:?}"),
    }

    client::delete_topics(&args, &[&topic]).await.unwrap();
    // The broker may take a moment to drop the topic from its metadata.
    let mut gone = false;
    for _ in 0..50 {
        if matches!(client::describe_topics(&args, &[&topic]).await, Err(KafkaSetupError::NoSuchTopic { .. })) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "{topic} still described after delete");
    // Deleting what is not there is not an error.
    client::delete_topics(&args, &[&topic, &missing]).await.unwrap();
}
