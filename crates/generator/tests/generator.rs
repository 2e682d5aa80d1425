//! The generator against the real local stack (`scripts/stack.sh up`): dimension tables in
//! SeaweedFS, events in Nisshi. Every test uses its own bucket and topic.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::{HashMap, HashSet};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::{Car, CarColor, CarModel, DimTables};
use pipeline_core::schema::{JsonEvent, SensorEvent};
use pipeline_s3::S3Args;
use pipeline_s3::dims::{load_table, load_tables, table_dir, to_parquet};
use pipeline_testkit as testkit;
use rdkafka::Message;

const BIN: &str = env!("CARGO_BIN_EXE_generator");

fn generator(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run generator")
}

/// Runs `generator SUBCOMMAND` on the test's own bucket and prefix, with more arguments.
fn generator_at(s3: &S3Args, subcommand: &str, args: &[&str]) -> Output {
    let mut all = vec![subcommand, "--s3-bucket", &s3.s3_bucket, "--dims-prefix", &s3.dims_prefix];
    all.extend_from_slice(args);
    generator(&all)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "generator failed: {}\n{}", stderr(out), String::from_utf8_lossy(&out.stdout));
}

/// The generator's error line (the last line of stderr), asserting a failing exit.
fn error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected exit 1, stderr: {}", stderr(out));
    let err = stderr(out);
    let line = err.lines().last().unwrap_or_default().to_owned();
    assert!(line.starts_with("generator: error: "), "{err}");
    line
}

#[tokio::test]
async fn dims_round_trip_through_s3() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let (s3, store) = testkit::bucket("dims").await;
    let out = generator_at(&s3, "dims", &["--seed", "5", "--cars", "20"]);
    assert_ok(&out);
    let loaded = load_tables(&store, &s3.dims_prefix).await.unwrap();
    assert_eq!(loaded, DimTables::seed(20, 5));

    // --if-missing leaves complete tables alone; without it they are replaced (old parts gone).
    let out = generator_at(&s3, "dims", &["--seed", "6", "--if-missing"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already present"));
    assert_eq!(load_tables(&store, &s3.dims_prefix).await.unwrap(), DimTables::seed(20, 5));
    assert_ok(&generator_at(&s3, "dims", &["--seed", "6", "--cars", "7"]));
    assert_eq!(load_tables(&store, &s3.dims_prefix).await.unwrap(), DimTables::seed(7, 6));
    assert_eq!(store.list(&table_dir::<Car>(&s3.dims_prefix)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_spark_style_multi_part_directory_loads() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let (s3, store) = testkit::bucket("parts").await;
    let prefix = s3.dims_prefix.as_str();
    let tables = DimTables::seed(30, 3);
    let dir = table_dir::<Car>(prefix);
    for (i, part) in tables.cars.chunks(11).enumerate() {
        store.put(&format!("{dir}part-{i:05}-c0ffee.snappy.parquet"), to_parquet(part).unwrap()).await.unwrap();
        store.put(&format!("{dir}.part-{i:05}-c0ffee.snappy.parquet.crc"), &b"crc"[..]).await.unwrap();
    }
    store.put(&format!("{dir}_SUCCESS"), &b""[..]).await.unwrap();
    let cars: Vec<Car> = load_table(&store, prefix).await.unwrap();
    assert_eq!(cars, tables.cars);

    // A table that is absent, or an object that is not Parquet, is named in the error.
    let err = load_table::<CarModel>(&store, prefix).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "table `car_models` not found: no Parquet files under s3://{}/{prefix}/car_models/; run `generator dims` first",
            store.bucket()
        )
    );
    let bad = format!("{}part-0.parquet", table_dir::<CarColor>(prefix));
    store.put(&bad, &b"garbage"[..]).await.unwrap();
    let err = load_table::<CarColor>(&store, prefix).await.unwrap_err().to_string();
    assert!(err.starts_with(&format!("s3://{}/{bad} is not a readable Parquet file", store.bucket())), "{err}");
}

fn start() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

#[tokio::test]
async fn run_produces_exactly_the_seeded_events() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    const N: usize = 5_000;
    let (s3, store) = testkit::bucket("run").await;
    let topic = testkit::topic("sensors", 3).await;
    assert_ok(&generator_at(&s3, "dims", &["--seed", "11"]));
    let out = generator_at(
        &s3,
        "run",
        &[
            "--topic",
            &topic,
            "--count",
            &N.to_string(),
            "--rate",
            "0",
            "--seed",
            "42",
            "--start-time",
            "2026-03-01T10:00:00Z",
            "--time-step",
            "1s",
        ],
    );
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("sent {N} events to {topic} (0 failed)")), "{stdout}");

    let records =
        tokio::task::spawn_blocking(move || testkit::read_all(&topic, Duration::from_secs(60))).await.unwrap();
    assert_eq!(records.len(), N, "exactly N records");

    // The same seed regenerates the same events: the topic holds exactly this sequence.
    let cars: Vec<Car> = load_table(&store, &s3.dims_prefix).await.unwrap();
    let clock = EventClock::Synthetic { start: start(), step: chrono::Duration::seconds(1) };
    let mut expected_gen = EventGenerator::new(cars.iter().map(|c| c.car_id).collect(), Some(42), clock);
    let expected: HashMap<_, _> = (0..N).map(|_| expected_gen.next_event()).map(|e| (e.event_id, e)).collect();
    assert_eq!(expected.len(), N);

    let known_cars: HashSet<i64> = cars.iter().map(|c| c.car_id).collect();
    let mut partition_of_car: HashMap<i64, i32> = HashMap::new();
    let mut last_time: HashMap<i64, chrono::DateTime<Utc>> = HashMap::new();
    let mut seen = HashSet::new();
    for m in &records {
        let e = SensorEvent::decode(m.payload().unwrap(), 1 << 20).unwrap();
        assert_eq!(m.key().unwrap(), e.car_id.to_string().as_bytes(), "key = car_id");
        assert!(known_cars.contains(&e.car_id));
        assert!((0.0..180.0).contains(&e.speed) && (500..=7000).contains(&e.rpm) && (1..=6).contains(&e.gear));
        assert_eq!(expected.get(&e.event_id), Some(&e), "event matches the seeded sequence");
        assert!(seen.insert(e.event_id), "no duplicate");
        // One car, one partition, in event-time order.
        assert_eq!(*partition_of_car.entry(e.car_id).or_insert(m.partition()), m.partition());
        if let Some(prev) = last_time.insert(e.car_id, e.event_time) {
            assert!(prev < e.event_time, "car {} out of order", e.car_id);
        }
    }
    assert_eq!(seen.len(), N);
    let json = std::str::from_utf8(records[0].payload().unwrap()).unwrap();
    assert!(json.starts_with(r#"{"event_id":""#) && json.contains(r#"Z","car_id":"#), "{json}");
}

#[tokio::test]
async fn sigterm_flushes_everything_it_counted() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let (s3, _) = testkit::bucket("term").await;
    let topic = testkit::topic("term", 3).await;
    assert_ok(&generator_at(&s3, "dims", &["--seed", "1"]));
    let child = Command::new(BIN)
        .args([
            "run",
            "--s3-bucket",
            &s3.s3_bucket,
            "--dims-prefix",
            &s3.dims_prefix,
            "--topic",
            &topic,
            "--rate",
            "20000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let watched = topic.clone();
    tokio::task::spawn_blocking(move || testkit::wait_for_count(&watched, 1_000, Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sent: usize = stdout
        .split("sent ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    assert!(sent >= 1_000);
    let records =
        tokio::task::spawn_blocking(move || testkit::read_all(&topic, Duration::from_secs(60))).await.unwrap();
    assert_eq!(records.len(), sent, "every event it reported sent is in the topic");
}

#[tokio::test]
async fn error_paths_say_what_to_do() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    // S3 down.
    let out = generator(&["run", "--s3-endpoint", "http://127.0.0.1:9", "--count", "1"]);
    let line = error_line(&out);
    assert!(line.contains("cannot reach S3 at http://127.0.0.1:9") && line.contains("scripts/stack.sh up"), "{line}");
    let out = generator(&["dims", "--s3-endpoint", "http://127.0.0.1:9"]);
    assert!(error_line(&out).contains("cannot reach S3 at http://127.0.0.1:9"));

    // Wrong credentials: refused, named, and the secret never printed.
    let out = Command::new(BIN)
        .args(["dims", "--s3-bucket", "spark"])
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret-xyz")
        .output()
        .unwrap();
    let line = error_line(&out);
    assert!(line.contains("refused access to bucket `spark`") && line.contains("AWS_SECRET_ACCESS_KEY"), "{line}");
    assert!(!stderr(&out).contains("not-the-secret-xyz"));

    // No credentials at all.
    let out = Command::new(BIN)
        .args(["dims", "--s3-bucket", "spark"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .unwrap();
    let line = error_line(&out);
    assert!(line.contains("no S3 credentials for http://127.0.0.1:8333: set AWS_ACCESS_KEY_ID"), "{line}");

    // Table missing.
    let (s3, _) = testkit::bucket("empty").await;
    let line = error_line(&generator_at(&s3, "run", &["--count", "1"]));
    assert!(line.contains("table `cars` not found") && line.ends_with("run `generator dims` first"), "{line}");

    // Bucket missing.
    let line = error_line(&generator(&["run", "--s3-bucket", &testkit::unique("nobucket"), "--count", "1"]));
    assert!(line.contains("does not exist"), "{line}");

    // Broker down (bounded wait), and a topic that does not exist.
    assert_ok(&generator_at(&s3, "dims", &["--seed", "2"]));
    let line = error_line(&generator_at(
        &s3,
        "run",
        &["--count", "1", "--bootstrap-servers", "127.0.0.1:9", "--connect-timeout", "2s"],
    ));
    assert!(
        line.contains("cannot reach Kafka at 127.0.0.1:9 within 2s") && line.contains("scripts/stack.sh up"),
        "{line}"
    );
    let missing = testkit::unique("missing");
    let line = error_line(&generator_at(&s3, "run", &["--count", "1", "--topic", &missing]));
    assert!(line.contains(&format!("topic `{missing}` does not exist")), "{line}");

    // A bad flag is clap's usage error (exit 2) naming the problem.
    let out = generator(&["run", "--rate", "fast"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`fast` is not a rate"));
}
