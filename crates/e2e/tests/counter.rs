//! The counter's durability and scale-out, end to end: it restores its S3 checkpoints after a
//! crash (and replays only what follows them), falls back to an older checkpoint or a full
//! replay when told, refuses a damaged one with a line naming it, and two instances in one
//! group split the partitions yet publish partials that merge into the exact windows.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::check::*;
use e2e::{Pipeline, Service, produce_raw};
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{EnrichedEvent, JsonEvent};
use serde_json::Value;

/// `n` alerts of the seeded stream, as the detector would have written them (keyed by car).
async fn alerts(p: &Pipeline, seed: u64, n: usize) -> Vec<EnrichedEvent<'static>> {
    let join = p.join();
    let rules = AlertRules::default();
    let events = regenerate(p, seed, n * 2, 1_500).await;
    let all: Vec<EnrichedEvent<'static>> = events.into_iter().map(|e| join.enrich(e).0.into_owned()).collect();
    all.into_iter().filter(|e| !rules.check_event(e).is_empty()).take(n).collect()
}

async fn produce_alerts(p: &Pipeline, alerts: &[EnrichedEvent<'static>]) {
    let records: Vec<_> = alerts.iter().map(|a| (Some(a.car_id.to_string().into_bytes()), a.encode())).collect();
    produce_raw(&p.alerts, &records).await;
}

fn expected(alerts: &[EnrichedEvent<'static>]) -> BTreeMap<String, Value> {
    expected_windows(&alerts.iter().collect::<Vec<_>>())
}

/// The group's committed offsets per partition of the alerts topic.
fn committed(p: &Pipeline) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let group = format!("{}-counter", p.id);
    let consumer: BaseConsumer = pipeline_testkit::kafka().client_config(&[("group.id", &group)]).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for partition in 0..3 {
        tpl.add_partition(&p.alerts, partition);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1)).collect()
}

fn high_watermarks(p: &Pipeline) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = pipeline_testkit::kafka().client_config(&[]).create().unwrap();
    (0..3)
        .map(|partition| consumer.fetch_watermarks(&p.alerts, partition, Duration::from_secs(10)).unwrap().1)
        .collect()
}

#[tokio::test]
async fn a_crashed_counter_restores_its_checkpoints_and_counts_exactly() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 1101).await;
    let all = alerts(&p, 41, 900).await;
    let (first, second) = all.split_at(600);

    let counter = p.counter(&["--checkpoint-interval", "1s"]);
    produce_alerts(&p, first).await;
    await_counts(&p.counts, &expected(first)).await;
    // The checkpoints cover everything once the group's offsets reach the end: they follow them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&p) != high_watermarks(&p) {
        assert!(Instant::now() < deadline, "committed {:?} never reached {:?}", committed(&p), high_watermarks(&p));
        std::thread::sleep(Duration::from_millis(200));
    }
    let covered = committed(&p);
    counter.kill();

    produce_alerts(&p, second).await;
    std::fs::remove_file(p.log_path("counter")).unwrap(); // the restarted counter's log alone
    let counter = p.counter(&["--checkpoint-interval", "1s"]);
    await_counts(&p.counts, &expected(&all)).await;
    let log = p.await_log("counter", "restored from checkpoint", 3);
    for (partition, next) in covered.iter().enumerate() {
        let line = format!("partition={partition} next_offset={next}");
        assert!(log.lines().any(|l| l.contains("restored from checkpoint") && l.contains(&line)), "{line}:\n{log}");
    }
    assert!(!log.contains("no checkpoint: replaying"), "a restored counter does not replay from the start:\n{log}");
    let out = counter.terminate();
    assert!(out.status.success());

    // Damage partition 0's newest checkpoint: the next start refuses it with one line naming it.
    let dir = format!("{}/{}-counter/{}/p0/", p.checkpoint_prefix(), p.id, p.alerts);
    let mut keys = p.store.list(&dir).await.unwrap();
    keys.retain(|k| k.contains("/ckpt-"));
    keys.sort();
    let newest = keys.last().unwrap().clone();
    p.store.put(&newest, b"not a checkpoint".to_vec()).await.unwrap();
    let on_p0: Vec<_> = all.iter().filter(|a| partition_of(&p, a) == 0).take(1).cloned().collect();
    assert_eq!(on_p0.len(), 1);
    let counter = p.counter(&["--checkpoint-interval", "1s"]);
    produce_alerts(&p, &on_p0).await;
    let status = wait_exit(counter, Duration::from_secs(60));
    assert!(!status.success());
    let log = std::fs::read_to_string(p.log_path("counter")).unwrap();
    let last = log.lines().last().unwrap();
    let url = format!("s3://{}/{newest}", p.s3.s3_bucket);
    assert!(
        last.starts_with("counter: ") && last.contains(&url) && last.contains("--checkpoint-recovery previous"),
        "{last}"
    );

    // `previous` restores the one before it; `replay` rebuilds from the earliest offset. Both
    // count the extra alert once.
    let with_extra: Vec<EnrichedEvent<'static>> = all.iter().chain(&on_p0).cloned().collect();
    for recovery in ["previous", "replay"] {
        let counter = p.counter(&["--checkpoint-interval", "1s", "--checkpoint-recovery", recovery]);
        await_counts(&p.counts, &expected(&with_extra)).await;
        stop_all(vec![counter]);
    }
}

/// The partition an alert landed on (read back from the topic).
#[tokio::test]
async fn an_alerts_topic_recreated_below_the_checkpoint_stops_the_counter_or_is_counted_afresh() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(1, 1103).await;
    let old = alerts(&p, 43, 300).await;
    // The recreated topic's alerts, an hour later: windows of their own.
    let new: Vec<EnrichedEvent<'static>> = alerts(&p, 44, 100)
        .await
        .into_iter()
        .map(|mut a| {
            a.event_time += chrono::Duration::hours(1);
            a
        })
        .collect();
    let counter = p.counter(&["--checkpoint-interval", "1s"]);
    produce_alerts(&p, &old).await;
    await_counts(&p.counts, &expected(&old)).await;
    p.await_log("counter", "durable=[(0, 300)]", 1);
    stop_all(vec![counter]);
    // Deleted and made again: its offsets start at 0 again, below the checkpoint's 300.
    pipeline_kafka::client::delete_topics(&p.kafka, &[&p.alerts]).await.unwrap();
    pipeline_kafka::client::create_topics(&p.kafka, &[&p.alerts], 1, 1).await.unwrap();
    produce_alerts(&p, &new).await;

    let stopping = p.service("counter", "counter-stop", &["--below-checkpoint", "stop"]);
    assert!(!wait_exit(stopping, Duration::from_secs(60)).success(), "--below-checkpoint stop exits non-zero");
    let log = std::fs::read_to_string(p.log_path("counter-stop")).unwrap();
    let line = format!("partition 0 of `{}` is at offset 100, below the offset 300", p.alerts);
    assert_eq!(log.lines().filter(|l| l.contains(&line)).count(), 1, "one line:\n{log}");

    let addr = format!("127.0.0.1:{}", e2e::check::free_port());
    let replaying = p.service("counter", "counter-replay", &["--checkpoint-interval", "1s", "--metrics-addr", &addr]);
    let mut want = expected(&old);
    want.extend(expected(&new));
    await_counts(&p.counts, &want).await;
    let log = p.await_log("counter-replay", "log is behind its checkpoint", 1);
    assert_eq!(log.lines().filter(|l| l.contains("log is behind its checkpoint")).count(), 1, "{log}");
    let (_, metrics) = http_get(&format!("http://{addr}/metrics"));
    let below = metrics.lines().find(|l| l.starts_with("pipeline_offsets_below_checkpoint_total")).unwrap_or_default();
    assert!(below.ends_with(" 1"), "one record met below the checkpoint: {below}");
    stop_all(vec![replaying]);
}

fn partition_of(p: &Pipeline, alert: &EnrichedEvent<'static>) -> i32 {
    let records = pipeline_testkit::read_all(&p.alerts, Duration::from_secs(60));
    records
        .iter()
        .find(|m| {
            use rdkafka::Message;
            EnrichedEvent::decode(m.payload().unwrap(), LIMIT).unwrap().event_id == alert.event_id
        })
        .map(rdkafka::Message::partition)
        .unwrap()
}

/// Waits for a service to exit by itself.
fn wait_exit(mut service: Service, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    while service.is_running() {
        assert!(Instant::now() < deadline, "{} did not exit", service.name);
        std::thread::sleep(Duration::from_millis(100));
    }
    service.wait().status
}

#[tokio::test]
async fn two_counters_split_the_partitions_and_their_partials_merge_exactly() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 1202).await;
    let all = alerts(&p, 43, 900).await;
    let (first, second) = all.split_at(500);
    let addr = format!("127.0.0.1:{}", free_port());
    let a = p.counter(&["--checkpoint-interval", "1s", "--metrics-addr", &addr]);
    let b = p.counter(&["--checkpoint-interval", "1s"]);
    // Both in the group, each owning part of the partitions.
    p.await_log("counter", "partitions assigned", 2);
    produce_alerts(&p, first).await;
    await_counts(&p.counts, &expected(first)).await;
    // A's dashboard shows whole windows: its own partitions plus B's partials.
    await_dashboard(&addr, &latest_counts(&p.counts).await).await;

    // B dies; A takes its partitions over, restores their checkpoints, and counts on.
    b.kill();
    produce_alerts(&p, second).await;
    await_counts(&p.counts, &expected(&all)).await;
    await_dashboard(&addr, &latest_counts(&p.counts).await).await;
    stop_all(vec![a]);
}

/// Waits until `/api/windows` at `addr` lists exactly `want`'s rows.
async fn await_dashboard(addr: &str, want: &BTreeMap<String, Value>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(&format!("http://{addr}/api/windows"));
        if code == 200 {
            let view: Value = serde_json::from_str(&body).unwrap();
            let got: BTreeMap<String, Value> = view["windows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| (w["window_start"].as_str().unwrap().to_owned(), w.clone()))
                .collect();
            if &got == want {
                return;
            }
            assert!(Instant::now() < deadline, "dashboard never showed the merged windows:\n{got:#?}\nwant {want:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `name`'s value in the Prometheus text at `addr`'s `/metrics` (0 when the series is absent).
fn metric(addr: &str, name: &str) -> f64 {
    let (_, body) = http_get(&format!("http://{addr}/metrics"));
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A partition given up at a rebalance is handed over, not replayed: the old owner writes its
/// windows to S3 before letting it go, so the new owner restores them at the exact offset the
/// old one had reached and reads none of its records again — with no periodic checkpoint ever
/// written (`--checkpoint-interval 1h`; before the hand-off the new owner replayed the whole
/// partition). For eager and for cooperative rebalancing; the windows stay exact.
#[tokio::test]
async fn a_revoked_partition_is_handed_over_at_its_offset_and_none_of_it_is_read_again() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    for (seed, strategy) in [(1204, "range,roundrobin"), (1205, "cooperative-sticky")] {
        let p = Pipeline::new(3, seed).await;
        let all = alerts(&p, 45, 900).await;
        let (first, second) = all.split_at(600);
        let strategy = format!("partition.assignment.strategy={strategy}");
        let (a_addr, b_addr) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
        let common = ["--checkpoint-interval", "1h", "-X", &strategy, "--metrics-addr"];
        let a = p.service("counter", "counter-a", &[&common[..], &[&a_addr]].concat());
        produce_alerts(&p, first).await;
        await_counts(&p.counts, &expected(first)).await;
        let ends = high_watermarks(&p);
        assert_eq!(metric(&a_addr, "pipeline_records_consumed_total"), 600.0);

        // B joins: A hands over what moves; whatever each owns now is restored at the end of
        // its log, and nothing is read twice.
        let b = p.service("counter", "counter-b", &[&common[..], &[&b_addr]].concat());
        let moved = p.await_log("counter-b", "restored from checkpoint", 1);
        let mut restored = Vec::new();
        for (log, first_start) in [("counter-a", 3), ("counter-b", 0)] {
            let log = std::fs::read_to_string(p.log_path(log)).unwrap();
            let replays = log.lines().filter(|l| l.contains("no checkpoint: replaying")).count();
            assert_eq!(replays, first_start, "nothing replayed but at A's first start:\n{log}");
            for line in log.lines().filter(|l| l.contains("restored from checkpoint")) {
                let field = |name: &str| -> i64 {
                    let value = line.split(&format!("{name}=")).nth(1).unwrap().split(' ').next().unwrap();
                    value.parse().unwrap()
                };
                restored.push((field("partition"), field("next_offset")));
            }
        }
        for (partition, next) in &restored {
            assert_eq!(*next, ends[usize::try_from(*partition).unwrap()], "{strategy}: {restored:?}\n{moved}");
        }
        assert_eq!(metric(&b_addr, "pipeline_records_consumed_total"), 0.0, "{strategy}: B read nothing again");
        assert_eq!(metric(&a_addr, "pipeline_records_consumed_total"), 600.0, "{strategy}: nor did A");

        produce_alerts(&p, second).await;
        await_counts(&p.counts, &expected(&all)).await;
        let total =
            metric(&a_addr, "pipeline_records_consumed_total") + metric(&b_addr, "pipeline_records_consumed_total");
        assert_eq!(total, 900.0, "{strategy}: every alert read once");
        stop_all(vec![a, b]);
    }
}
