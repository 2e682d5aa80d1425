//! Helpers for integration tests against the real local stack (a dev-dependency only).
//!
//! The stack's address comes from the same environment variables the services read
//! (`scripts/test.sh` exports `config/local.env`). Every test makes its own topics and buckets
//! with [`unique`] names, so tests run in parallel without seeing each other's records. A test
//! that needs the stack starts with [`needs_stack!`](crate::needs_stack!): without a stack it is skipped with one line
//! per test binary; under `scripts/test.sh` it fails.

mod stack;
mod stall_proxy;

pub use stack::{Part, REQUIRE_STACK, stack_has};
pub use stall_proxy::StallProxy;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use pipeline_kafka::args::KafkaArgs;
use pipeline_s3::S3Args;
use pipeline_s3::store::ObjectStore;

/// `prefix-<12 random hex>`: a topic, bucket or group name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Kafka settings of the local stack.
pub fn kafka() -> KafkaArgs {
    KafkaArgs {
        bootstrap_servers: std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        properties: Vec::new(),
        connect_timeout: Duration::from_secs(15),
    }
}

/// The bucket every test shares. SeaweedFS gives each bucket a volume of its own (75 on this
/// disk), so tests isolate themselves by key prefix, not by bucket.
pub const TEST_BUCKET: &str = "pipeline-tests";

/// S3 settings of the local stack, with `bucket` and the default dims prefix.
pub fn s3(bucket: &str) -> S3Args {
    S3Args {
        s3_endpoint: Some(std::env::var("S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8333".into())),
        s3_region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        s3_bucket: bucket.to_owned(),
        dims_prefix: "data/dims".into(),
        s3_path_style: Some(true),
        s3_timeout: std::time::Duration::from_secs(30),
    }
}

/// A private place for one test's tables: the shared test bucket with a unique
/// `<prefix>-<id>/data/dims` prefix.
pub async fn bucket(prefix: &str) -> (S3Args, ObjectStore) {
    let args = S3Args { dims_prefix: format!("{}/data/dims", unique(prefix)), ..s3(TEST_BUCKET) };
    let store = ObjectStore::connect(&args).await;
    store.ensure_bucket().await.expect("create the test bucket (is the local stack up?)");
    (args, store)
}

/// A new topic with a unique name and `partitions` partitions, created.
pub async fn topic(prefix: &str, partitions: i32) -> String {
    let name = unique(prefix);
    pipeline_kafka::client::create_topics(&kafka(), &[&name], partitions, 1)
        .await
        .expect("create test topic (is the local stack up?)");
    name
}

/// Every record of `topic` on the local broker, from the beginning up to the high watermarks
/// read when called; panics if they are not all read within `timeout`. Records are in offset
/// order per partition.
pub fn read_all(topic: &str, timeout: Duration) -> Vec<OwnedMessage> {
    read_all_from(&kafka(), topic, timeout)
}

/// [`read_all`] on the cluster `kafka`.
pub fn read_all_from(kafka: &KafkaArgs, topic: &str, timeout: Duration) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = kafka
        .client_config(&[("group.id", &unique("reader")), ("enable.auto.commit", "false")])
        .create()
        .expect("reader consumer");
    let metadata = consumer.fetch_metadata(Some(topic), timeout).expect("topic metadata");
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout).expect("watermarks");
        if high > low {
            remaining.insert(p, high);
        }
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !remaining.is_empty() {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic}: still waiting on {remaining:?}, read {}",
            out.len()
        );
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg.expect("consume");
            let (p, next) = (msg.partition(), msg.offset() + 1);
            if remaining.get(&p).is_some_and(|&high| next >= high) {
                remaining.remove(&p);
            }
            out.push(msg.detach());
        }
    }
    out
}

/// Waits until `topic` holds at least `n` records (sum of high watermarks) or `timeout` passes;
/// returns the count seen last.
pub fn wait_for_count(topic: &str, n: i64, timeout: Duration) -> i64 {
    let consumer: BaseConsumer = kafka().client_config(&[]).create().expect("consumer");
    let deadline = Instant::now() + timeout;
    loop {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).expect("metadata");
        let count: i64 = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5)).map_or(0, |(lo, hi)| hi - lo))
            .sum();
        if count >= n || Instant::now() >= deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

/// A Kafka broker of a test's own (the Nisshi build `scripts/test.sh` exports as `NISSHI_BIN`),
/// on its own port, so the shared broker other tests use is never disturbed.
#[derive(Debug)]
pub struct OwnBroker {
    /// The broker process.
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl OwnBroker {
    /// The Nisshi binary.
    pub fn bin() -> std::path::PathBuf {
        std::env::var_os("NISSHI_BIN").expect("NISSHI_BIN: run the tests with scripts/test.sh").into()
    }

    /// Starts a broker on `port` with `storage` (`s3://bucket/` on the local S3, or
    /// `sqlite://FILE` relative to `dir`, its working directory) and `extra` arguments; returns
    /// once it answers metadata requests.
    pub async fn start(port: u16, storage: &str, dir: &std::path::Path, extra: &[&str]) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = std::process::Command::new(Self::bin());
        command
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", storage, "--group-initial-rebalance-delay", "0s"])
            .args(extra)
            .current_dir(dir)
            .env("AWS_ENDPOINT", s3(TEST_BUCKET).s3_endpoint.unwrap_or_default())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_DEFAULT_REGION", "us-east-1");
        Self::spawn(command, port).await
    }

    /// A transactional broker of the test's own: the prebuilt Tansu `scripts/test.sh` exports
    /// as `TANSU_BIN` (memory storage: it forgets everything when it stops).
    pub async fn tansu(port: u16) -> Self {
        let bin = std::env::var_os("TANSU_BIN").expect("TANSU_BIN: run the tests with scripts/test.sh");
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = std::process::Command::new(bin);
        command
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("SCHEMA_REGISTRY");
        Self::spawn(command, port).await
    }

    async fn spawn(mut command: std::process::Command, port: u16) -> Self {
        let child =
            command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap_or_else(
                |e| {
                    // Name the binary: an unset or stale NISSHI_BIN/TANSU_BIN is the usual cause.
                    panic!(
                        "start the broker {:?}: {e} (scripts/test.sh exports NISSHI_BIN and TANSU_BIN)",
                        command.get_program()
                    )
                },
            );
        let broker = Self { child, port };
        // A plain TCP connect tells the listener is up, with or without authentication.
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "own broker did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        broker
    }

    /// Its process id (to pause it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `tcp://127.0.0.1:<port>`, for the nisshi CLI.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Kafka settings to reach it, with `properties` (`-X` pairs) added.
    pub fn kafka(&self, properties: &[(&str, &str)]) -> KafkaArgs {
        KafkaArgs { bootstrap_servers: format!("127.0.0.1:{}", self.port), ..kafka() }.with_properties(properties)
    }

    /// SIGKILL, and reap it.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the broker");
        self.child.wait().expect("reap the broker");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- The transactional broker (Tansu, `scripts/stack.sh up --txn`) ----------------------------
//
// Tansu answers ListOffsets "latest" with the last batch's base offset + 1, so the readers
// above, which stop at the high watermarks, stop early there. The readers below never ask for
// watermarks: they read from offset 0 until the expected records are in and a quiet period
// brings no more (so a duplicate still shows), or just until a quiet period.

/// Kafka settings of the local stack's transactional broker: `TXN_KAFKA_BOOTSTRAP_SERVERS`
/// (`config/local.env`; Tansu on 127.0.0.1:9094, started by `scripts/stack.sh up --txn` and by
/// `scripts/test.sh`).
pub fn txn_kafka() -> KafkaArgs {
    KafkaArgs {
        bootstrap_servers: std::env::var("TXN_KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9094".into()),
        ..kafka()
    }
}

/// A new topic with a unique name and `partitions` partitions, created on the cluster `kafka`
/// (e.g. [`txn_kafka`]).
pub async fn topic_on(kafka: &KafkaArgs, prefix: &str, partitions: i32) -> String {
    let name = unique(prefix);
    pipeline_kafka::client::create_topics(kafka, &[&name], partitions, 1).await.unwrap_or_else(|e| {
        panic!("create test topic on {} (is the stack up, with --txn for Tansu?): {e}", kafka.bootstrap_servers)
    });
    name
}

/// How long [`read_committed_until`] keeps reading after the expected count is in, so that
/// extra records (duplicates) are still caught.
pub const READ_QUIET: Duration = Duration::from_secs(1);

/// The records of `topic` a `read_committed` consumer sees, from the beginning, without
/// relying on high watermarks: reads until `expected` records are in, then for [`READ_QUIET`]
/// more with nothing new. Returns every record read (more than `expected` when there are
/// more); panics if fewer than `expected` arrive within `timeout`. Records are in offset order
/// per partition.
pub fn read_committed_until(kafka: &KafkaArgs, topic: &str, expected: usize, timeout: Duration) -> Vec<OwnedMessage> {
    read_without_watermarks(kafka, topic, "read_committed", expected, READ_QUIET, timeout)
}

/// The records of `topic` a `read_committed` consumer sees, from the beginning, read until
/// `quiet` passes with nothing new (an empty topic, or one whose only records are aborted or
/// in an open transaction, returns after `quiet`); panics if the topic does not go quiet within
/// `timeout`.
pub fn read_committed_quiet(kafka: &KafkaArgs, topic: &str, quiet: Duration, timeout: Duration) -> Vec<OwnedMessage> {
    read_without_watermarks(kafka, topic, "read_committed", 0, quiet, timeout)
}

/// [`read_committed_quiet`] with `isolation.level=read_uncommitted`: also the records of open
/// and aborted transactions.
pub fn read_uncommitted_quiet(kafka: &KafkaArgs, topic: &str, quiet: Duration, timeout: Duration) -> Vec<OwnedMessage> {
    read_without_watermarks(kafka, topic, "read_uncommitted", 0, quiet, timeout)
}

/// Reads `topic` (every partition, from offset 0) with `isolation` until at least `expected`
/// records are in and `quiet` passes without a new one.
fn read_without_watermarks(
    kafka: &KafkaArgs,
    topic: &str,
    isolation: &str,
    expected: usize,
    quiet: Duration,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = kafka
        .client_config(&[
            ("group.id", &unique("reader")),
            ("enable.auto.commit", "false"),
            ("isolation.level", isolation),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "50"),
            ("enable.partition.eof", "false"),
        ])
        .create()
        .expect("reader consumer");
    let deadline = Instant::now() + timeout;
    // The metadata answer also means the connection is up, so the quiet period below measures
    // the broker's silence, not the client's start-up.
    let metadata = consumer.fetch_metadata(Some(topic), timeout).expect("topic metadata");
    let partitions = metadata.topics()[0].partitions();
    assert!(!partitions.is_empty(), "{topic} has no partitions on {}", kafka.bootstrap_servers);
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        // Offset 0, not "beginning": one ListOffsets round trip less (a topic whose start was
        // deleted falls back to the earliest offset through auto.offset.reset).
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(0)).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut last_news = Instant::now();
    loop {
        let now = Instant::now();
        if out.len() >= expected && now.duration_since(last_news) >= quiet {
            return out;
        }
        if now >= deadline {
            assert!(
                out.len() >= expected,
                "timed out reading {topic} ({isolation}) on {}: read {} of {expected}",
                kafka.bootstrap_servers,
                out.len()
            );
            panic!("{topic} ({isolation}) did not go quiet for {quiet:?} within {timeout:?}: read {}", out.len());
        }
        if let Some(msg) = consumer.poll(Duration::from_millis(50)) {
            out.push(msg.expect("consume").detach());
            last_news = Instant::now();
        }
    }
}
