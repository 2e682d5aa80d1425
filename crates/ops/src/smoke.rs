//! `ops smoke`: is the stack usable? S3 (list, put, get, delete of a probe object) and Kafka
//! (metadata, then create a temporary topic, produce a probe, read it back, delete the topic).
//! One line per check: PASS, FAIL with what to do, or SKIP when an earlier check already
//! failed. Nothing the checks create is left behind, and no credential is ever printed.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use pipeline_kafka::client;
use pipeline_s3::store::{ObjectStore, S3Error};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::cli::SmokeArgs;

/// The checks' outcomes so far.
#[derive(Debug, Default)]
struct Report {
    /// Checks that passed.
    passed: usize,
    /// Checks that failed.
    failed: usize,
    /// Checks not tried because an earlier one failed.
    skipped: usize,
}

impl Report {
    fn line(status: &str, check: &str, detail: &str) {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not hide the exit status: ignore write errors.
        let _ = writeln!(out, "{status:<4}  {check:<18}  {detail}");
        let _ = out.flush();
    }

    fn pass(&mut self, check: &str, detail: impl AsRef<str>) {
        self.passed += 1;
        Self::line("PASS", check, detail.as_ref());
    }

    fn fail(&mut self, check: &str, detail: impl AsRef<str>) {
        self.failed += 1;
        Self::line("FAIL", check, detail.as_ref());
    }

    fn skip(&mut self, checks: &[&str], because: &str) {
        for check in checks {
            self.skipped += 1;
            Self::line("SKIP", check, &format!("not tried: {because} failed"));
        }
    }
}

/// `ops smoke`; fails when any check fails.
pub async fn smoke(args: SmokeArgs) -> anyhow::Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut report = Report::default();
    s3_checks(&args, &id, &mut report).await;
    kafka_checks(&args, &id[..12], &mut report).await;
    let total = report.passed + report.failed + report.skipped;
    println!("smoke: {} passed, {} failed, {} skipped of {total} checks", report.passed, report.failed, report.skipped);
    if report.failed > 0 {
        bail!("{} of {total} smoke checks failed; each FAIL line above says what to do", report.failed);
    }
    Ok(())
}

async fn s3_checks(args: &SmokeArgs, id: &str, report: &mut Report) {
    let store = ObjectStore::connect(&args.s3).await;
    let endpoint = args.s3.endpoint_display();
    match store.list(&args.probe_prefix).await {
        Ok(keys) => report.pass(
            "s3 list",
            format!("{} at {endpoint}: {} object(s) under the prefix", store.url(&args.probe_prefix), keys.len()),
        ),
        Err(e) => {
            report.fail("s3 list", e.to_string());
            report.skip(&["s3 put", "s3 get", "s3 delete"], "s3 list");
            return;
        }
    }
    let key = format!("{}{id}", args.probe_prefix);
    let body = format!("ops smoke probe {id}\n");
    if let Err(e) = store.put(&key, body.clone().into_bytes()).await {
        report.fail("s3 put", e.to_string());
        report.skip(&["s3 get", "s3 delete"], "s3 put");
        return;
    }
    report.pass("s3 put", format!("{} ({} bytes)", store.url(&key), body.len()));
    match store.get(&key).await {
        Ok(bytes) if bytes == body.as_bytes() => {
            report.pass("s3 get", format!("read back the same {} bytes", bytes.len()))
        }
        Ok(bytes) => report.fail(
            "s3 get",
            format!(
                "read back {} bytes that differ from the {} written: check that --s3-endpoint / S3_ENDPOINT is \
                 the S3 itself, not a cache or proxy in front of another",
                bytes.len(),
                body.len()
            ),
        ),
        Err(e) => report.fail("s3 get", e.to_string()),
    }
    // Always clean up, whatever the read said.
    match store.delete(&key).await {
        Err(e) => report.fail("s3 delete", format!("{e}; delete {} by hand", store.url(&key))),
        Ok(()) => match store.get(&key).await {
            Err(S3Error::NoSuchKey { .. }) => report.pass("s3 delete", format!("{} deleted", store.url(&key))),
            Ok(_) => report.fail(
                "s3 delete",
                format!("{} is still readable after DeleteObject; delete it by hand", store.url(&key)),
            ),
            Err(e) => report.fail("s3 delete", format!("{e} (checking that the probe is gone)")),
        },
    }
}

async fn kafka_checks(args: &SmokeArgs, id: &str, report: &mut Report) {
    let kafka_args = &args.kafka;
    match client::check_cluster(kafka_args, None).await {
        Ok(metadata) => report.pass(
            "kafka metadata",
            format!(
                "{}: {} broker(s), {} topic(s)",
                kafka_args.bootstrap_servers,
                metadata.brokers().len(),
                metadata.topics().len()
            ),
        ),
        Err(e) => {
            report.fail("kafka metadata", e.to_string());
            report.skip(
                &["kafka create topic", "kafka produce", "kafka consume", "kafka delete topic"],
                "kafka metadata",
            );
            return;
        }
    }
    let topic = format!("{}-{id}", args.topic_prefix);
    if let Err(e) = client::create_topics(kafka_args, &[&topic], 1, 1).await {
        report.fail("kafka create topic", format!("{e}; check that these credentials may create topics"));
        report.skip(&["kafka produce", "kafka consume", "kafka delete topic"], "kafka create topic");
        return;
    }
    report.pass("kafka create topic", format!("{topic} (1 partition, temporary)"));

    let payload = format!("ops smoke probe {id}");
    match produce_probe(args, &topic, &payload).await {
        Ok((offset, took)) => {
            report.pass("kafka produce", format!("{topic}/0 offset {offset} acknowledged in {} ms", took.as_millis()));
            match consume_probe(args, &topic, offset, &payload).await {
                Ok(took) => report.pass(
                    "kafka consume",
                    format!("read the probe back from offset {offset} in {} ms", took.as_millis()),
                ),
                Err(e) => report.fail("kafka consume", e),
            }
        }
        Err(e) => {
            report.fail("kafka produce", e);
            report.skip(&["kafka consume"], "kafka produce");
        }
    }
    // Always remove the temporary topic.
    match client::delete_topics(kafka_args, &[&topic]).await {
        Ok(()) => report.pass("kafka delete topic", format!("{topic} deleted")),
        Err(e) => report.fail("kafka delete topic", format!("{e}; delete {topic} by hand")),
    }
}

/// Sends the probe; its offset and how long the acknowledgement took.
async fn produce_probe(args: &SmokeArgs, topic: &str, payload: &str) -> Result<(i64, Duration), String> {
    let hint = "check the broker's log (`scripts/stack.sh logs nisshi` on the local stack) and -X settings";
    let producer = client::producer(&args.kafka).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let delivery = client::enqueue(&producer, topic, Some(b"ops-smoke"), payload.as_bytes(), None)
        .await
        .map_err(|e| format!("the producer refused the probe: {e}; {hint}"))?;
    match tokio::time::timeout(args.timeout, delivery).await {
        Ok(Ok(Ok(d))) => Ok((d.offset, start.elapsed())),
        Ok(Ok(Err((e, _)))) => Err(format!("the broker did not take the probe: {e}; {hint}")),
        Ok(Err(_)) => Err(format!("the probe's delivery report was lost; {hint}")),
        Err(_) => Err(format!(
            "no acknowledgement within {}: the broker answers metadata but does not take writes; {hint}",
            humantime::format_duration(args.timeout)
        )),
    }
}

/// Reads partition 0 from `offset` until the probe comes back; how long that took.
async fn consume_probe(args: &SmokeArgs, topic: &str, offset: i64, payload: &str) -> Result<Duration, String> {
    let (kafka_args, topic, payload, timeout) =
        (args.kafka.clone(), topic.to_owned(), payload.to_owned(), args.timeout);
    tokio::task::spawn_blocking(move || {
        let consumer = crate::tail::reader(&kafka_args).map_err(|e| format!("{e:#}"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(offset)).map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| format!("assigning {topic}/0: {e}"))?;
        let start = Instant::now();
        let mut last_error = String::new();
        while start.elapsed() < timeout {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) if msg.payload() == Some(payload.as_bytes()) => return Ok(start.elapsed()),
                Some(Err(KafkaError::PartitionEOF(_))) | Some(Ok(_)) | None => {}
                Some(Err(e)) => last_error = format!(" (last error: {e})"),
            }
        }
        Err(format!(
            "the acknowledged probe was not read back within {}{last_error}: the broker takes writes but does \
             not serve them; check its log (`scripts/stack.sh logs nisshi` on the local stack)",
            humantime::format_duration(timeout)
        ))
    })
    .await
    .unwrap_or_else(|e| Err(format!("consume task: {e}")))
}
