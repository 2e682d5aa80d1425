//! The `ops` binary run as a process against the real local stack (`scripts/stack.sh up`).
//! Every test makes its own topics (unique names), so they run in parallel.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use pipeline_core::schema::{JsonEvent, SensorEvent};
use pipeline_kafka::client::{self, KafkaSetupError};
use pipeline_testkit as testkit;
use rdkafka::Message;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ops");

fn ops(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run ops")
}

fn ops_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) -> String {
    assert!(out.status.success(), "ops failed: {}\nstdout: {}", stderr(out), stdout(out));
    stdout(out)
}

/// The error line (the last line of stderr), asserting exit status 1.
fn error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {}\nstdout: {}", stderr(out), stdout(out));
    let err = stderr(out);
    let line = err.lines().last().unwrap_or_default().to_owned();
    assert!(line.starts_with("ops: error: "), "{err}");
    line
}

/// A sensor event of `car_id` as the generator writes it.
fn sensor(car_id: i64, n: u32) -> String {
    let event = SensorEvent {
        event_id: uuid::Uuid::new_v4(),
        event_time: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, n % 60).unwrap(),
        car_id,
        speed: 88.25,
        rpm: 3100,
        gear: 3,
    };
    String::from_utf8(event.encode()).unwrap()
}

/// Sum of the high watermarks of `topic` (no record was ever deleted in a test topic).
async fn record_count(topic: &str) -> i64 {
    let info = client::describe_topics(&testkit::kafka(), &[topic]).await.unwrap();
    info[0].partitions.iter().map(|p| p.high).sum()
}

/// `produced topic=T partition=P offset=O key=K` lines as (partition, offset, key).
fn produced(out: &str, topic: &str) -> Vec<(i32, i64, String)> {
    out.lines()
        .map(|line| {
            let rest =
                line.strip_prefix(&format!("produced topic={topic} partition=")).unwrap_or_else(|| panic!("{line}"));
            let (partition, rest) = rest.split_once(" offset=").unwrap();
            let (offset, key) = rest.split_once(" key=").unwrap();
            (partition.parse().unwrap(), offset.parse().unwrap(), key.to_owned())
        })
        .collect()
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ops did not exit within {timeout:?}: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The status and check name of each of smoke's check lines.
fn checks(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| !l.starts_with("smoke: "))
        .map(|l| (l[..4].to_owned(), l[6..24].trim_end().to_owned()))
        .collect()
}

const CHECKS: [&str; 9] = [
    "s3 list",
    "s3 put",
    "s3 get",
    "s3 delete",
    "kafka metadata",
    "kafka create topic",
    "kafka produce",
    "kafka consume",
    "kafka delete topic",
];

fn expected(statuses: [&str; 9]) -> Vec<(String, String)> {
    statuses.iter().zip(CHECKS).map(|(s, c)| ((*s).to_owned(), c.to_owned())).collect()
}

#[tokio::test]
async fn smoke_passes_against_the_stack_and_leaves_nothing_behind() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let (s3, store) = testkit::bucket("ops-smoke").await;
    let prefix = format!("{}/", testkit::unique("ops-smoke"));
    let out = ops(&["smoke", "--s3-bucket", &s3.s3_bucket, "--probe-prefix", &prefix]);
    let text = assert_ok(&out);
    assert_eq!(checks(&text), expected(["PASS"; 9]), "{text}");
    assert_eq!(text.lines().last(), Some("smoke: 9 passed, 0 failed, 0 skipped of 9 checks"));

    // The probe object and the temporary topic are gone.
    assert_eq!(store.list(&prefix).await.unwrap(), Vec::<String>::new());
    let line = text.lines().find(|l| l.contains("kafka delete topic")).unwrap();
    let topic = line.split_whitespace().nth(4).unwrap();
    assert!(topic.starts_with("ops-smoke-"), "{line}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client::check_cluster(&testkit::kafka(), Some(topic)).await {
            Err(KafkaSetupError::NoSuchTopic { .. }) => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("{topic} still there: {other:?}"),
        }
    }
}

#[test]
fn smoke_against_a_dead_kafka_says_what_to_do_and_prints_no_secret() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let out = ops(&[
        "smoke",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--connect-timeout",
        "2s",
        "-X",
        "sasl.password=ops-test-not-to-be-printed",
    ]);
    let err = error_line(&out);
    let text = stdout(&out);
    assert_eq!(
        checks(&text),
        expected(["PASS", "PASS", "PASS", "PASS", "FAIL", "SKIP", "SKIP", "SKIP", "SKIP"]),
        "{text}"
    );
    let fail = text.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(fail.starts_with("FAIL  kafka metadata      cannot reach Kafka at 127.0.0.1:1 within 2s ("), "{fail}");
    assert!(
        fail.ends_with(
            "; start the local stack with `scripts/stack.sh up` or set --bootstrap-servers / KAFKA_BOOTSTRAP_SERVERS \
             (a broker that requires TLS or authentication also needs -X security.protocol=… and the sasl.* / ssl.* \
             settings)"
        ),
        "{fail}"
    );
    assert!(text.contains("SKIP  kafka produce       not tried: kafka metadata failed"), "{text}");
    assert_eq!(text.lines().last(), Some("smoke: 4 passed, 1 failed, 4 skipped of 9 checks"));
    assert_eq!(err, "ops: error: 1 of 9 smoke checks failed; each FAIL line above says what to do");

    let everything = format!("{text}{}", stderr(&out));
    assert!(!everything.contains("ops-test-not-to-be-printed"), "{everything}");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    assert!(!everything.contains(&secret), "{everything}");
}

#[test]
fn smoke_against_a_dead_s3_says_what_to_do() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = ops(&["smoke", "--s3-endpoint", &endpoint]);
    error_line(&out);
    let text = stdout(&out);
    assert_eq!(
        checks(&text),
        expected(["FAIL", "SKIP", "SKIP", "SKIP", "PASS", "PASS", "PASS", "PASS", "PASS"]),
        "{text}"
    );
    let fail = text.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(fail.starts_with(&format!("FAIL  s3 list             cannot reach S3 at {endpoint} (")), "{fail}");
    assert!(
        fail.ends_with(
            "; start the local stack with `scripts/stack.sh up` or point --s3-endpoint / S3_ENDPOINT at a running S3"
        ),
        "{fail}"
    );
}

#[tokio::test]
async fn produce_then_tail_shows_exactly_that_record() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let topic = testkit::topic("ops-produce", 3).await;
    let event = sensor(4242, 1);
    let out = ops(&["produce", &topic, "--schema", "sensor", "--value", &event]);
    let produced = produced(&assert_ok(&out), &topic);
    assert_eq!(produced.len(), 1);
    let (partition, offset, key) = produced[0].clone();
    assert_eq!((offset, key.as_str()), (0, "\"4242\""));

    // On the broker: exactly those bytes, with the car as key.
    let records = testkit::read_all(&topic, Duration::from_secs(10));
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].partition(), records[0].offset()), (partition, 0));
    assert_eq!(records[0].key(), Some(&b"4242"[..]));
    assert_eq!(records[0].payload(), Some(event.as_bytes()));

    // tail --format json: one line, that record.
    let lines = json_lines(&assert_ok(&ops(&["tail", &topic, "--format", "json"])));
    assert_eq!(lines.len(), 1);
    let record = &lines[0];
    let timestamp = record["timestamp"].as_str().unwrap().to_owned();
    let age = Utc::now() - DateTime::parse_from_rfc3339(&timestamp).unwrap().with_timezone(&Utc);
    assert!(age >= chrono::Duration::zero() && age < chrono::Duration::minutes(5), "{timestamp}");
    let value: Value = serde_json::from_str(&event).unwrap();
    assert_eq!(
        *record,
        serde_json::json!({
            "topic": topic, "partition": partition, "offset": 0, "timestamp": timestamp,
            "key": "4242", "headers": [], "value": value,
        })
    );

    // tail (pretty): key, partition, offset, timestamp, then the value indented, fields in order.
    let e = SensorEvent::decode(event.as_bytes(), 1 << 20).unwrap();
    let pretty = assert_ok(&ops(&["tail", &topic]));
    assert_eq!(
        pretty,
        format!(
            "key=\"4242\" partition={partition} offset=0 timestamp={timestamp}\n{{\n  \"event_id\": \"{}\",\n  \
             \"event_time\": \"2026-01-02T03:04:01.000Z\",\n  \"car_id\": 4242,\n  \"speed\": 88.25,\n  \
             \"rpm\": 3100,\n  \"gear\": 3\n}}\n\n",
            e.event_id
        )
    );
}

#[tokio::test]
async fn ndjson_on_stdin_then_tail_from_offsets_times_and_partitions() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let topic = testkit::topic("ops-ndjson", 1).await;
    let events: Vec<String> = (1..=3).map(|car| sensor(car, car as u32)).collect();
    let input = format!("{}\n\n{}\r\n{}\n", events[0], events[1], events[2]);
    let out = ops_with_stdin(&["produce", &topic, "--schema", "sensor"], input.as_bytes());
    let produced = produced(&assert_ok(&out), &topic);
    let expected: Vec<(i32, i64, String)> = (1..=3).map(|car| (0, car - 1, format!("\"{car}\""))).collect();
    assert_eq!(produced, expected);

    let offsets = |args: &[&str]| -> Vec<i64> {
        let mut all = vec!["tail", &topic, "--format", "json"];
        all.extend_from_slice(args);
        json_lines(&assert_ok(&ops(&all))).iter().map(|r| r["offset"].as_i64().unwrap()).collect()
    };
    assert_eq!(offsets(&[]), [0, 1, 2]);
    assert_eq!(offsets(&["--from", "1"]), [1, 2]);
    assert_eq!(offsets(&["--from", "99"]), Vec::<i64>::new());
    assert_eq!(offsets(&["--max", "2"]), [0, 1]);
    assert_eq!(offsets(&["--from", "latest"]), Vec::<i64>::new());
    assert_eq!(offsets(&["--partition", "0", "--from", "earliest"]), [0, 1, 2]);
    assert_eq!(offsets(&["--from", "2020-01-01T00:00:00Z"]), [0, 1, 2]);
    assert_eq!(offsets(&["--from", "2999-01-01T00:00:00Z"]), Vec::<i64>::new());

    // A time between two records starts at the later one (record timestamps are creation times).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let between = Utc::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ok(&ops(&["produce", &topic, "--schema", "sensor", "--value", &sensor(4, 4)]));
    assert_eq!(offsets(&["--from", &between]), [3]);

    let err = error_line(&ops(&["tail", &topic, "--partition", "5"]));
    assert_eq!(err, format!("ops: error: topic `{topic}` has no partition 5; its partitions are [0]"));
}

#[tokio::test]
async fn invalid_records_are_refused_and_nothing_is_sent() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let topic = testkit::topic("ops-refuse", 2).await;
    let good = sensor(7, 7);
    let refused = |args: &[&str], stdin: Option<&str>| -> String {
        let mut all = vec!["produce", &topic];
        all.extend_from_slice(args);
        let out = match stdin {
            Some(input) => ops_with_stdin(&all, input.as_bytes()),
            None => ops(&all),
        };
        assert_eq!(stdout(&out), "", "nothing is reported as produced");
        error_line(&out)
    };

    let err = refused(&["--schema", "sensor", "--value", "{\"event_id\":"], None);
    assert_eq!(
        err,
        "ops: error: 1 of 1 record(s) refused, nothing was sent; --value: value is not valid JSON: EOF while \
         parsing a value at line 1 column 12 (checked as --schema sensor; fix the input, choose another --schema, \
         or send it unchecked with --raw)"
    );
    let no_speed = good.replace(",\"speed\":88.25", "");
    let err = refused(&["--schema", "sensor", "--value", &no_speed], None);
    assert!(err.contains("--value: value does not match the sensor event schema: missing field `speed`"), "{err}");

    // NDJSON: the good first line is not sent either.
    let err = refused(&["--schema", "sensor"], Some(&format!("{good}\n{no_speed}\n")));
    assert!(err.starts_with("ops: error: 1 of 2 record(s) refused, nothing was sent; line 2 of stdin: value does not match the sensor event schema: missing field `speed`"), "{err}");

    // The topic name picks the schema (here: this topic stands in for sensors-sample / alert-data).
    let err = refused(&["--sensors-topic", &topic, "--value", "{\"car_id\":7}"], None);
    assert!(err.contains("missing field `event_id`"), "{err}");
    assert!(err.contains("(checked as --schema sensor, from the topic name;"), "{err}");
    let err = refused(&["--alerts-topic", &topic, "--value", &good], None);
    assert!(err.contains("(checked as --schema alert, from the topic name;"), "{err}");
    let err = refused(&["--value", "not json"], None);
    assert!(err.contains("value is not valid JSON: expected ident"), "{err}");
    assert!(err.contains("(checked as --schema none, from the topic name;"), "{err}");
    let err = refused(&[], Some("\n \n"));
    assert_eq!(
        err,
        "ops: error: no record in stdin: give --value JSON, --file PATH, or one JSON event per line on stdin"
    );

    assert_eq!(record_count(&topic).await, 0, "a refused record reached the topic");
    let describe = assert_ok(&ops(&["topics", "describe", &topic]));
    assert!(describe.starts_with(&format!("topic {topic} partitions=2 records=0\n")), "{describe}");

    // --raw sends what it is given, headers included: how to reproduce a dead letter.
    let out = ops(&["produce", &topic, "--raw", "--key", "k", "--header", "dlq.error=boom", "--value", "not json"]);
    let (partition, offset, key) = produced(&assert_ok(&out), &topic).remove(0);
    assert_eq!((offset, key.as_str()), (0, "\"k\""));
    let tail = assert_ok(&ops(&["tail", &topic]));
    let head = tail.lines().next().unwrap();
    assert!(head.starts_with(&format!("key=\"k\" partition={partition} offset=0 timestamp=")), "{tail}");
    assert_eq!(tail.lines().skip(1).collect::<Vec<_>>(), ["header dlq.error=\"boom\"", "not json", ""]);
}

#[tokio::test]
async fn a_file_with_one_pretty_alert_is_one_record() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let topic = testkit::topic("ops-file", 1).await;
    let alert = r#"{
  "event_id": "5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab",
  "event_time": "2026-01-02T03:04:05.067Z",
  "car_id": 99, "speed": 130.5, "rpm": 3100, "gear": 3,
  "driver_id": null, "brand_name": "Mazda", "model_name": "3", "color_name": "Black",
  "expected_gear": 5,
  "alert_reasons": ["speed", "gear"]
}
"#;
    let path = std::env::temp_dir().join(format!("{topic}.json"));
    std::fs::write(&path, alert).unwrap();
    let out = ops(&["produce", &topic, "--alerts-topic", &topic, "--file", path.to_str().unwrap()]);
    assert_eq!(produced(&assert_ok(&out), &topic), [(0, 0, "\"99\"".to_owned())]);
    let records = testkit::read_all(&topic, Duration::from_secs(10));
    assert_eq!(records[0].payload(), Some(alert.trim().as_bytes()));
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn topics_create_list_describe_round_trip() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let (a, b) = (testkit::unique("ops-topic-a"), testkit::unique("ops-topic-b"));
    let out = assert_ok(&ops(&["topics", "create", &a, &b, "--partitions", "2", "--replication", "1"]));
    assert_eq!(out, format!("created {a} partitions=2 replication=1\ncreated {b} partitions=2 replication=1\n"));
    let out = assert_ok(&ops(&["topics", "create", &a, "--partitions", "5"]));
    assert_eq!(out, format!("exists  {a} partitions=2 (left as it is)\n"));

    let list = assert_ok(&ops(&["topics", "list"]));
    let rows: Vec<(&str, &str)> =
        list.lines().skip(1).map(|l| l.split_once(' ').map(|(n, c)| (n, c.trim())).unwrap()).collect();
    assert!(list.starts_with("TOPIC "), "{list}");
    assert!(rows.contains(&(a.as_str(), "2")) && rows.contains(&(b.as_str(), "2")), "{list}");
    assert!(rows.iter().all(|(name, _)| !name.starts_with("__")), "{list}");
    let mut sorted = rows.clone();
    sorted.sort_unstable();
    assert_eq!(rows, sorted);
    let all = assert_ok(&ops(&["topics", "list", "--all"]));
    assert!(all.lines().count() >= list.lines().count());

    assert_ok(&ops(&["produce", &b, "--key", "x", "--value", "{\"n\":1}"]));
    let out = assert_ok(&ops(&["topics", "describe", &a, &b]));
    let sections: Vec<&str> = out.split("\n\n").collect();
    assert_eq!(sections.len(), 2, "{out}");
    let info = client::describe_topics(&testkit::kafka(), &[&a, &b]).await.unwrap();
    for (section, topic) in sections.iter().zip(&info) {
        let records: i64 = topic.partitions.iter().map(|p| p.high).sum();
        let mut expected = format!("topic {} partitions=2 records={records}\n", topic.name);
        expected.push_str("PARTITION  LEADER  REPLICAS       ISR         LOW        HIGH\n");
        for p in &topic.partitions {
            let leader = p.leader;
            expected.push_str(&format!(
                "{:>9}  {leader:>6}  {:>8}  {:>8}  {:>10}  {:>10}\n",
                p.id, leader, leader, p.low, p.high
            ));
            assert_eq!((p.replicas.as_slice(), p.isr.as_slice()), ([leader].as_slice(), [leader].as_slice()));
        }
        assert_eq!(format!("{}\n", section.trim_end()), expected);
    }
    assert_eq!(info.iter().map(|t| t.partitions.iter().map(|p| p.high).sum::<i64>()).collect::<Vec<_>>(), [0, 1]);

    let missing = testkit::unique("ops-topic-missing");
    let err = error_line(&ops(&["topics", "describe", &missing]));
    assert!(err.starts_with(&format!("ops: error: topic `{missing}` does not exist at ")), "{err}");
}

#[tokio::test]
async fn tail_follow_prints_new_records_until_max_or_a_signal() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let topic = testkit::topic("ops-follow", 2).await;
    let follower = spawn(&["tail", &topic, "--follow", "--max", "1", "--format", "json"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_ok(&ops(&["produce", &topic, "--key", "f", "--value", "{\"n\":1}"]));
    let out = wait_with_timeout(follower, Duration::from_secs(20));
    let lines = json_lines(&assert_ok(&out));
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0]["key"].as_str(), &lines[0]["value"]), (Some("f"), &serde_json::json!({"n": 1})));

    // Without --max it runs until SIGTERM, then exits cleanly.
    let follower = spawn(&["tail", &topic, "--follow", "--from", "latest"]);
    std::thread::sleep(Duration::from_millis(1000));
    let status = Command::new("kill").args(["-TERM", &follower.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = wait_with_timeout(follower, Duration::from_secs(10));
    assert_eq!(assert_ok(&out), "");
}
