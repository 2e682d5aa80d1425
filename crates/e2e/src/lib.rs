//! Harness for the end-to-end tests: a private copy of the pipeline's topics and bucket on the
//! real local stack, and the four service binaries run as child processes against it.

pub mod check;
pub mod rescale;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use pipeline_core::join::{DimTables, JoinIndex};
use pipeline_kafka::args::KafkaArgs;
use pipeline_s3::S3Args;
use pipeline_s3::dims::write_tables;
use pipeline_s3::store::ObjectStore;
use pipeline_testkit as testkit;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureRecord;

/// A built service binary (`scripts/test.sh` builds them all before the tests): next to the
/// running executable, or one level up from a test in `deps/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let here = exe.parent().expect("executable dir");
    let dir = if here.ends_with("deps") { here.parent().expect("target dir") } else { here };
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build the binaries first (cargo build --bins)", path.display());
    path
}

/// A running service.
#[derive(Debug)]
pub struct Service {
    /// Its process.
    child: Option<Child>,
    /// Name, for messages.
    pub name: &'static str,
}

impl Service {
    /// Wraps a process started by the caller.
    pub fn from_child(child: Child, name: &'static str) -> Self {
        Self { child: Some(child), name }
    }

    /// SIGTERM, then waits for it to exit; returns its output.
    pub fn terminate(mut self) -> Output {
        self.stop()
    }

    /// [`Service::terminate`] in place (the value is then spent).
    pub fn stop(&mut self) -> Output {
        let child = self.child.take().expect("running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        child.wait_with_output().expect("wait")
    }

    /// SIGTERM, without waiting (several instances asked to stop at once, as a scale-down does).
    pub fn ask_to_stop(&self) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then waits at most `limit` for it to exit: how long it took (None: still
    /// running at `limit`, then SIGKILLed) and its exit status.
    pub fn stop_timed(mut self, limit: Duration) -> (Option<Duration>, std::process::ExitStatus) {
        let mut child = self.child.take().expect("running");
        let asked = std::time::Instant::now();
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (Some(asked.elapsed()), status);
            }
            if asked.elapsed() >= limit {
                let _ = child.kill();
                return (None, child.wait().expect("reap"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for it to exit by itself; returns its output.
    pub fn wait(mut self) -> Output {
        self.child.take().expect("running").wait_with_output().expect("wait")
    }

    /// SIGKILL, no clean-up.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits at most `limit` for it to exit by itself: its status, None if still running.
    pub fn exits_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A private pipeline: its own bucket with dims and its own topics.
#[derive(Debug)]
pub struct Pipeline {
    /// S3 settings with the private bucket.
    pub s3: S3Args,
    /// The bucket.
    pub store: ObjectStore,
    /// The dims written to it.
    pub dims: DimTables,
    /// `sensors-sample`'s stand-in.
    pub sensors: String,
    /// `samples-enriched`'s stand-in.
    pub enriched: String,
    /// `alert-data`'s stand-in.
    pub alerts: String,
    /// `alert-counts`'s stand-in.
    pub counts: String,
    /// The late topic.
    pub late: String,
    /// Dead-letter topics by input topic.
    pub dlq: HashMap<String, String>,
    /// Unique suffix for group ids.
    pub id: String,
    /// The cluster its topics are on (the local Nisshi, or the transactional broker).
    pub kafka: KafkaArgs,
}

impl Pipeline {
    /// Creates the bucket (with the seed's dims for `seed`) and the topics on the local broker.
    pub async fn new(partitions: i32, seed: u64) -> Self {
        Self::on(testkit::kafka(), partitions, seed).await
    }

    /// [`Pipeline::new`] on the cluster `kafka`.
    pub async fn on(kafka: KafkaArgs, partitions: i32, seed: u64) -> Self {
        Self::with_cars(kafka, partitions, seed, 20).await
    }

    /// [`Pipeline::on`] with `cars` cars in the dims (the seed's 20 spread over few partitions).
    pub async fn with_cars(kafka: KafkaArgs, partitions: i32, seed: u64, cars: usize) -> Self {
        let (s3, store) = testkit::bucket("e2e").await;
        let dims = DimTables::seed(cars, seed);
        write_tables(&store, &s3.dims_prefix, &dims).await.expect("write dims");
        let id = testkit::unique("p");
        let name = |t: &str| format!("{id}-{t}");
        let (sensors, enriched, alerts, counts, late) =
            (name("sensors"), name("enriched"), name("alerts"), name("counts"), name("late"));
        let dlq: HashMap<String, String> =
            [&sensors, &enriched, &alerts].into_iter().map(|t| (t.clone(), format!("{t}.dlq"))).collect();
        let mut all: Vec<&str> = vec![&sensors, &enriched, &alerts, &counts, &late];
        all.extend(dlq.values().map(String::as_str));
        pipeline_kafka::client::create_topics(&kafka, &all, partitions, 1).await.expect("create topics");
        Self { s3, store, dims, sensors, enriched, alerts, counts, late, dlq, id, kafka }
    }

    /// The join the enricher must compute.
    pub fn join(&self) -> JoinIndex {
        JoinIndex::new(&self.dims)
    }

    /// Waits until `service`'s log holds `n` lines containing `needle`; returns the log.
    pub fn await_log(&self, service: &str, needle: &str, n: usize) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let log = std::fs::read_to_string(self.log_path(service)).unwrap_or_default();
            if log.lines().filter(|l| l.contains(needle)).count() >= n {
                return log;
            }
            assert!(std::time::Instant::now() < deadline, "{service} never logged {n}× `{needle}`:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where a service's stderr (its log) goes.
    pub fn log_path(&self, name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("{}-{name}.log", self.id))
    }

    /// Starts the binary `name` with `args`, its stderr appended to [`Pipeline::log_path`]`(log)`.
    fn spawn_logged(&self, name: &'static str, log: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
        let log = self.log_path(log);
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = Command::new(bin(name))
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Service { child: Some(child), name }
    }

    fn common<'a>(&'a self, group: &'a str) -> Vec<&'a str> {
        vec!["--group-id", group, "--bootstrap-servers", &self.kafka.bootstrap_servers]
    }

    /// Starts an enricher on the private topics.
    pub fn enricher(&self, extra: &[&str]) -> Service {
        self.service("enricher", "enricher", extra)
    }

    /// Starts a detector on the private topics.
    pub fn detector(&self, extra: &[&str]) -> Service {
        self.service("detector", "detector", extra)
    }

    /// Starts a counter on the private topics (1 s trigger unless `extra` sets one, no table),
    /// its checkpoints in the private prefix.
    pub fn counter(&self, extra: &[&str]) -> Service {
        self.service("counter", "counter", extra)
    }

    /// Starts `name` (enricher, detector or counter) on the private topics in its usual group,
    /// its log in [`Pipeline::log_path`]`(log)`: a second instance of a service logs apart.
    pub fn service(&self, name: &'static str, log: &str, extra: &[&str]) -> Service {
        self.service_env(name, log, extra, &[])
    }

    /// [`Pipeline::service`] with `env` added to its environment (credentials, say).
    pub fn service_env(&self, name: &'static str, log: &str, extra: &[&str], env: &[(&str, &str)]) -> Service {
        let group = format!("{}-{name}", self.id);
        let (checkpoints, rules) = (self.checkpoint_prefix(), self.rules_prefix());
        let mut args = self.common(&group);
        match name {
            "enricher" => {
                args.extend(["--s3-bucket", &self.s3.s3_bucket, "--dims-prefix", &self.s3.dims_prefix]);
                args.extend(["--input-topic", &self.sensors, "--output-topic", &self.enriched]);
            }
            "detector" => {
                args.extend(["--s3-bucket", &self.s3.s3_bucket, "--dims-prefix", &self.s3.dims_prefix]);
                args.extend(["--rules-prefix", &rules]);
                args.extend(["--input-topic", &self.enriched, "--output-topic", &self.alerts]);
            }
            "counter" => {
                args.extend(["--s3-bucket", &self.s3.s3_bucket, "--checkpoint-prefix", &checkpoints]);
                args.extend(["--input-topic", &self.alerts, "--counts-topic", &self.counts]);
                args.extend(["--late-topic", &self.late, "--quiet"]);
                if !extra.contains(&"--trigger") {
                    args.extend(["--trigger", "1s"]);
                }
            }
            other => panic!("no service `{other}`"),
        }
        args.extend(extra);
        self.spawn_logged(name, log, &args, env)
    }

    /// Where this pipeline's counters keep their checkpoints (in [`Pipeline::s3`]'s bucket).
    pub fn checkpoint_prefix(&self) -> String {
        format!("{}/checkpoints", self.s3.dims_prefix.trim_end_matches("/data/dims"))
    }

    /// Where this pipeline's rules table is (beside its dims, in [`Pipeline::s3`]'s bucket).
    pub fn rules_prefix(&self) -> String {
        format!("{}/rules", self.s3.dims_prefix.trim_end_matches("/dims"))
    }

    /// Runs the generator to completion on the private bucket and sensors topic.
    pub fn generate(&self, args: &[&str]) -> Output {
        let out = Command::new(bin("generator"))
            .args(["run", "--s3-bucket", &self.s3.s3_bucket, "--dims-prefix", &self.s3.dims_prefix])
            .args(["--topic", &self.sensors, "--rate", "0", "--bootstrap-servers", &self.kafka.bootstrap_servers])
            .args(args)
            .output()
            .expect("run generator");
        assert!(out.status.success(), "generator: {}", String::from_utf8_lossy(&out.stderr));
        out
    }
}

/// Produces raw records (key, value) to `topic` and waits for every acknowledgement.
pub async fn produce_raw(topic: &str, records: &[(Option<Vec<u8>>, Vec<u8>)]) {
    produce_raw_to(&testkit::kafka(), topic, records).await;
}

/// [`produce_raw`] on the cluster `kafka` (a broker of the test's own, or extra `-X` settings).
pub async fn produce_raw_to(kafka: &KafkaArgs, topic: &str, records: &[(Option<Vec<u8>>, Vec<u8>)]) {
    let producer = pipeline_kafka::client::producer(kafka).expect("producer");
    let sends = records.iter().map(|(key, value)| {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer.send(record, Duration::from_secs(60))
    });
    for result in futures::future::join_all(sends).await {
        result.expect("acknowledged");
    }
}

/// Produces one record with `headers` to `topic` on the local broker (a doctored copy, say).
pub async fn produce_with_headers(topic: &str, key: &str, value: &[u8], headers: &[(&str, &str)]) {
    let producer = pipeline_kafka::client::producer(&testkit::kafka()).expect("producer");
    let headers = headers.iter().fold(rdkafka::message::OwnedHeaders::new(), |h, (k, v)| {
        h.insert(rdkafka::message::Header { key: k, value: Some(*v) })
    });
    let record = FutureRecord::<str, [u8]>::to(topic).key(key).payload(value).headers(headers);
    producer.send(record, Duration::from_secs(60)).await.expect("acknowledged");
}

/// Every record of `topic` (blocking read, off the async runtime).
pub async fn read_all(topic: &str) -> Vec<OwnedMessage> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || testkit::read_all(&topic, Duration::from_secs(120))).await.expect("reader")
}

/// Waits until `topic` holds `n` records; panics with the count seen after `timeout`.
pub async fn wait_for_count(topic: &str, n: i64, timeout: Duration) {
    let t = topic.to_owned();
    let got = tokio::task::spawn_blocking(move || testkit::wait_for_count(&t, n, timeout)).await.expect("waiter");
    assert!(got >= n, "{topic}: {got} records after {timeout:?}, expected {n}");
}

/// Produces raw values to one `partition` of `topic` and waits for every acknowledgement (a
/// test that needs an alert on a given partition, whatever its key hashes to).
pub async fn produce_to_partition(topic: &str, partition: i32, values: &[Vec<u8>]) {
    let producer = pipeline_kafka::client::producer(&testkit::kafka()).expect("producer");
    for value in values {
        let record = FutureRecord::<[u8], [u8]>::to(topic).partition(partition).payload(value);
        producer.send(record, Duration::from_secs(60)).await.expect("acknowledged");
    }
}
