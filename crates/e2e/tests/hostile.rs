//! Hostile input end to end, with the service binaries on the real stack: records from producers
//! nobody controls must not stop, poison or crash-loop a service, and every other event is
//! accounted for exactly.
//! - A key of a megabyte (over the producer's `message.max.bytes` by itself): its dead letter
//!   keeps the key's head with its original size and SHA-256, so the dead letter is accepted and
//!   the service goes on (it used to exit with `MessageSizeTooLarge` on every restart). In the
//!   enricher (a poison input) and in the detector (a valid event whose alert copies the key and
//!   is refused by the broker).

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use e2e::check::{assert_exact, exactly_once, regenerate};
use e2e::{Pipeline, read_all, wait_for_count};
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{EnrichedEvent, JsonEvent};
use pipeline_kafka::args::KafkaArgs;
use pipeline_kafka::runtime::dlq_headers;
use pipeline_testkit as testkit;
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A key over `message.max.bytes` (1 000 000) by itself, under the brokers' input limit.
const KEY_SIZE: usize = 1_020_000;

/// A dead letter's headers as strings.
fn headers(m: &OwnedMessage) -> HashMap<String, String> {
    m.headers().map_or_else(HashMap::new, |h| {
        h.iter()
            .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
            .collect()
    })
}

/// Asserts `dlq` holds exactly one dead letter, from `service`, whose key is a head of `key`
/// with the key's truncation headers.
async fn assert_one_cut_key_letter(dlq: &str, service: &str, key: &[u8]) {
    wait_for_count(dlq, 1, Duration::from_secs(60)).await;
    let letters = read_all(dlq).await;
    assert_eq!(letters.len(), 1, "{service}: one dead letter in {dlq}");
    let h = headers(&letters[0]);
    assert_eq!(h[dlq_headers::SERVICE], service);
    assert_eq!(h.get(dlq_headers::KEY_TRUNCATED).map(String::as_str), Some("true"), "{service}: key cut");
    assert_eq!(h[dlq_headers::ORIGINAL_KEY_SIZE], KEY_SIZE.to_string());
    let sha: String = Sha256::digest(key).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(h[dlq_headers::ORIGINAL_KEY_SHA256], sha);
    let cut = letters[0].key().unwrap();
    assert!(cut.len() < KEY_SIZE && key.starts_with(cut), "{service}: a head of the key ({} bytes)", cut.len());
}

/// A producer that may write records of up to 2 MB (the test's hostile one).
fn big_producer() -> KafkaArgs {
    KafkaArgs { properties: vec![("message.max.bytes".to_owned(), "2000000".to_owned())], ..testkit::kafka() }
}

/// A key that alone exceeds the services' producer limit, every prefix distinct.
fn megabyte_key() -> Vec<u8> {
    (0..KEY_SIZE as u32).map(|i| b'a' + (i % 26) as u8).collect()
}

#[tokio::test]
async fn a_megabyte_key_on_a_poison_input_is_cut_in_its_dead_letter_and_every_other_event_flows() {
    let p = Pipeline::new(3, 2201).await;
    let mut services = vec![p.enricher(&[]), p.detector(&[]), p.counter(&[])];
    let good = regenerate(&p, 41, 500, 1_000).await;
    let key = megabyte_key();
    // A poison value under a megabyte key, in the middle of the good events.
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> =
        good.iter().map(|e| (Some(e.car_id.to_string().into_bytes()), e.encode())).collect();
    records.insert(records.len() / 2, (Some(key.clone()), b"{\"not\":\"an event\"}".to_vec()));
    e2e::produce_raw_to(&big_producer(), &p.sensors, &records).await;

    assert_one_cut_key_letter(&p.dlq[&p.sensors], "enricher", &key).await;
    let (alerts, windows) = assert_exact(&p, &good).await;
    eprintln!("{} good events, {alerts} alerts, {windows} windows: exact", good.len());
    for s in &mut services {
        assert!(s.is_running(), "{} exited", s.name);
    }
}

#[tokio::test]
async fn an_alert_copying_a_megabyte_key_is_dead_lettered_cut_and_the_detector_keeps_going() {
    let p = Pipeline::new(3, 2202).await;
    let good = regenerate(&p, 42, 500, 1_000).await;
    let join = p.join();
    let rules = AlertRules::default();
    let key = megabyte_key();
    // Valid enriched events written to the detector's input by someone else; one over the speed
    // limit under a megabyte key: its alert copies the key, so the broker refuses the alert.
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> = Vec::new();
    let mut want: HashSet<Uuid> = HashSet::new();
    for e in &good {
        let enriched = join.enrich(e.clone()).0;
        if !rules.check_event(&enriched).is_empty() {
            want.insert(enriched.event_id);
        }
        records.push((Some(e.car_id.to_string().into_bytes()), enriched.encode()));
    }
    let mut speeding = good[0].clone();
    speeding.event_id = Uuid::new_v4();
    speeding.speed = 200.0;
    records.insert(records.len() / 2, (Some(key.clone()), join.enrich(speeding).0.encode()));
    e2e::produce_raw_to(&big_producer(), &p.enriched, &records).await;

    let mut detector = p.detector(&[]);
    assert_one_cut_key_letter(&p.dlq[&p.enriched], "detector", &key).await;
    wait_for_count(&p.alerts, want.len() as i64, Duration::from_secs(120)).await;
    let got = exactly_once::<EnrichedEvent<'static>>(&p.alerts, |e| e.event_id).await;
    assert_eq!(got.keys().copied().collect::<HashSet<_>>(), want, "every other alert exactly once");
    assert!(detector.is_running(), "the detector exited");
    eprintln!("{} events, {} alerts exact, the megabyte-key alert dead-lettered", good.len(), want.len());
}
