//! Kafka authentication through configuration: SASL/SCRAM-SHA-512 against a broker of the
//! test's own with authentication on (Nisshi needs `sqlite://` storage for it; users are made
//! while authentication is off, then the broker restarts with `--authentication`). The right
//! credentials produce and consume; a wrong password is refused with one line, nothing is
//! produced, and the password shows nowhere. The same over TLS (`SASL_SSL`, the broker's
//! self-signed certificate trusted through `ssl.ca.location`).

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::process::{Command, Output};
use std::time::Duration;

use e2e::bin;
use e2e::check::LIMIT;
use pipeline_core::join::DimTables;
use pipeline_core::schema::{JsonEvent, SensorEvent};
use pipeline_s3::dims::write_tables;
use pipeline_testkit::{self as testkit, OwnBroker};
use rdkafka::Message;

const USER: &str = "pipeline";
const PASSWORD: &str = "correct-horse-battery-staple";
const WRONG: &str = "Tr0ub4dor-and-3";

/// The `-X` settings for SCRAM-SHA-512 with `password` over `protocol` (plus `extra`).
fn scram_over(protocol: &str, password: &str, extra: &[String]) -> Vec<String> {
    [
        format!("security.protocol={protocol}"),
        "sasl.mechanisms=SCRAM-SHA-512".to_owned(),
        format!("sasl.username={USER}"),
        format!("sasl.password={password}"),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .flat_map(|p| ["-X".to_owned(), p])
    .collect()
}

fn scram(password: &str) -> Vec<String> {
    scram_over("SASL_PLAINTEXT", password, &[])
}

/// As pairs for [`OwnBroker::kafka`].
fn pairs(props: &[String]) -> Vec<(&str, &str)> {
    props.iter().filter(|p| *p != "-X").map(|p| p.split_once('=').unwrap()).collect()
}

/// A broker of the test's own with authentication on and user `USER` made, in `dir`, with
/// `extra` broker arguments.
async fn secured_broker(dir: &std::path::Path, extra: &[&str]) -> OwnBroker {
    let (port, storage) = (testkit::free_port(), "sqlite://auth.db");
    let open = OwnBroker::start(port, storage, dir, &[]).await;
    let made = Command::new(OwnBroker::bin())
        .args(["user", "create", "--broker", &open.url(), "--mechanism", "scram512", USER, PASSWORD])
        .output()
        .unwrap();
    assert!(made.status.success(), "nisshi user create: {}", String::from_utf8_lossy(&made.stderr));
    open.kill();
    let mut args = vec!["--authentication"];
    args.extend(extra);
    OwnBroker::start(port, storage, dir, &args).await
}

/// Every record of `topic` read with `props`.
async fn read_back(broker: &OwnBroker, topic: &str, props: &[String]) -> usize {
    let (k, t) = (broker.kafka(&pairs(props)), topic.to_owned());
    tokio::task::spawn_blocking(move || testkit::read_all_from(&k, &t, Duration::from_secs(30))).await.unwrap().len()
}

/// `generator run` of `count` events on `broker` with `-X` settings `props`.
fn generate(broker: &OwnBroker, s3: &pipeline_s3::S3Args, topic: &str, count: &str, props: &[String]) -> Output {
    Command::new(bin("generator"))
        .args(["run", "--s3-bucket", &s3.s3_bucket, "--dims-prefix", &s3.dims_prefix])
        .args(["--bootstrap-servers", &format!("127.0.0.1:{}", broker.port), "--connect-timeout", "10s"])
        .args(["--topic", topic, "--rate", "0", "--count", count, "--seed", "5"])
        .args(props)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap()
}

#[tokio::test]
async fn scram_credentials_work_and_a_wrong_password_is_refused() {
    pipeline_testkit::needs_stack!(Kafka, S3, BrokerBuilds);
    let dir = std::env::temp_dir().join(testkit::unique("nisshi-auth"));
    std::fs::create_dir_all(&dir).unwrap();
    let broker = secured_broker(&dir, &[]).await;

    let (s3, store) = testkit::bucket("sec").await;
    write_tables(&store, &s3.dims_prefix, &DimTables::seed(20, 5)).await.unwrap();
    let good = broker.kafka(&pairs(&scram(PASSWORD)));
    let topic = testkit::unique("secure");
    pipeline_kafka::client::create_topics(&good, &[&topic], 1, 1).await.expect("authenticated admin request");

    // The right credentials: every event produced, and readable with them.
    let ok = generate(&broker, &s3, &topic, "50", &scram(PASSWORD));
    assert!(ok.status.success(), "generator with the right password: {}", String::from_utf8_lossy(&ok.stderr));
    let (k, t) = (good, topic.clone());
    let records =
        tokio::task::spawn_blocking(move || testkit::read_all_from(&k, &t, Duration::from_secs(30))).await.unwrap();
    assert_eq!(records.len(), 50);
    for m in &records {
        SensorEvent::decode(m.payload().unwrap(), LIMIT).expect("a sensor event");
    }

    // A wrong password and no credentials at all: refused with one line, nothing produced.
    for (case, props) in [("wrong password", scram(WRONG)), ("no credentials", Vec::new())] {
        let refused = generate(&broker, &s3, &topic, "50", &props);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{case}: the generator must fail:\n{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("generator: "), "{case}: one closing line, got:\n{stderr}");
        let hint = if props.is_empty() { "-X security.protocol" } else { "refused the credentials" };
        assert!(last.contains(hint), "{case}: the line says what to do ({hint}):\n{last}");
        eprintln!("{case}: {last}");
        for secret in [PASSWORD, WRONG] {
            assert!(!stderr.contains(secret), "{case}: a password in the output:\n{stderr}");
        }
        assert_eq!(read_back(&broker, &topic, &scram(PASSWORD)).await, 50, "{case}: nothing produced");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn scram_over_tls_works_and_plaintext_is_refused() {
    pipeline_testkit::needs_stack!(Kafka, S3, BrokerBuilds);
    let dir = std::env::temp_dir().join(testkit::unique("nisshi-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(&dir)
        .output()
        .expect("openssl (Debian's openssl package) makes the test's certificate");
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let broker = secured_broker(&dir, &["--cert", "cert.pem", "--key", "key.pem"]).await;
    let ca = format!("ssl.ca.location={}", dir.join("cert.pem").display());
    let tls = scram_over("SASL_SSL", PASSWORD, &[ca]);

    let (s3, store) = testkit::bucket("tls").await;
    write_tables(&store, &s3.dims_prefix, &DimTables::seed(20, 6)).await.unwrap();
    let topic = testkit::unique("tls");
    pipeline_kafka::client::create_topics(&broker.kafka(&pairs(&tls)), &[&topic], 2, 1).await.expect("admin over TLS");
    let ok = generate(&broker, &s3, &topic, "40", &tls);
    assert!(ok.status.success(), "generator over TLS: {}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(read_back(&broker, &topic, &tls).await, 40);

    let plain = generate(&broker, &s3, &topic, "40", &scram(PASSWORD));
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success(), "a plaintext client must be refused:\n{stderr}");
    assert!(stderr.lines().last().unwrap_or_default().starts_with("generator: "), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert_eq!(read_back(&broker, &topic, &tls).await, 40, "nothing produced in plaintext");
    let _ = std::fs::remove_dir_all(&dir);
}
