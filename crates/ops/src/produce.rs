//! `ops produce`: sends JSON events to a topic (the seed's `write_to_kafka`), each validated
//! against the topic's schema before any is sent.

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use pipeline_core::schema::{DecodeError, EnrichedEvent, JsonEvent, SensorEvent};
use pipeline_kafka::client;
use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};

use crate::cli::{ProduceArgs, SchemaChoice, TopicNames};

/// An alert as the detector writes it to `alert-data`: the enriched event's fields followed by
/// the rules it broke. (`pipeline_core::schema::AlertEvent` only serializes, borrowing the
/// event; this is its owned, decodable mirror.)
#[derive(Debug, Serialize, Deserialize)]
struct Alert<'a> {
    /// The enriched event that broke a rule (its names borrowed from the record).
    #[serde(flatten, borrow)]
    event: EnrichedEvent<'a>,
    /// Which rules it broke, at least one.
    alert_reasons: Vec<Reason>,
}

/// A rule an alert broke, named as `AlertReasons` serializes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reason {
    /// Speed above the threshold.
    Speed,
    /// Rpm above the threshold.
    Rpm,
    /// Gear different from expected_gear.
    Gear,
}

impl<'a> JsonEvent<'a> for Alert<'a> {
    const SCHEMA: &'static str = "alert";

    fn validate(&self) -> Result<(), DecodeError> {
        self.event.validate()?;
        if self.alert_reasons.is_empty() {
            return Err(DecodeError::Invalid {
                field: "alert_reasons",
                detail: "it is empty: an alert breaks at least one of speed, rpm, gear".into(),
            });
        }
        Ok(())
    }
}

/// Any JSON value (`--schema none`): decoding checks size, UTF-8 and syntax only.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
struct AnyJson(serde_json::Value);

impl JsonEvent<'_> for AnyJson {
    const SCHEMA: &'static str = "JSON";

    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// Just the `car_id` of an event, to key a record sent with `--raw`.
#[derive(Debug, Deserialize)]
struct CarId {
    /// The event's car.
    car_id: i64,
}

/// The schema a topic carries, from its name; unknown topics (`.dlq`, `alert-counts`, …) take
/// any JSON.
pub fn schema_for(topic: &str, names: &TopicNames) -> SchemaChoice {
    if topic == names.sensors_topic {
        SchemaChoice::Sensor
    } else if topic == names.enriched_topic {
        SchemaChoice::Enriched
    } else if topic == names.alerts_topic {
        SchemaChoice::Alert
    } else {
        SchemaChoice::None
    }
}

/// One record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    /// Where it came from, for messages (`line 3 of events.ndjson`).
    origin: String,
    /// The value, as given.
    value: Vec<u8>,
    /// The key: --key, else the event's car_id for event schemas.
    key: Option<String>,
}

/// The records of a file or stdin: the whole input when it is one JSON document (pretty-printed
/// over several lines, say), otherwise one per non-blank line (NDJSON). Line numbers are 1-based.
fn split_records(input: &[u8]) -> Vec<(usize, &[u8])> {
    let trimmed = input.trim_ascii();
    if trimmed.is_empty() {
        return Vec::new();
    }
    if crate::json::is_json(trimmed) {
        let start = input.len() - input.trim_ascii_start().len();
        let line = 1 + input[..start].iter().filter(|&&b| b == b'\n').count();
        return vec![(line, trimmed)];
    }
    input
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim_ascii()))
        .filter(|(_, line)| !line.is_empty())
        .collect()
}

/// Validates `value` against `schema`; returns the event's car_id when it has one.
fn validate(schema: SchemaChoice, value: &[u8], limit: usize) -> Result<Option<i64>, DecodeError> {
    Ok(match schema {
        SchemaChoice::Sensor => Some(SensorEvent::decode(value, limit)?.car_id),
        SchemaChoice::Enriched => Some(EnrichedEvent::decode(value, limit)?.car_id),
        SchemaChoice::Alert => Some(Alert::decode(value, limit)?.event.car_id),
        SchemaChoice::None => {
            AnyJson::decode(value, limit)?;
            None
        }
    })
}

/// Reads the input (`--value`, `--file`, or stdin) and turns it into validated, keyed records;
/// refuses the lot if any record is invalid.
fn records(args: &ProduceArgs) -> anyhow::Result<Vec<Record>> {
    let (source, input): (String, Vec<u8>) = match (&args.value, &args.file) {
        (Some(value), _) => ("--value".into(), value.clone().into_bytes()),
        (None, Some(path)) if path.as_os_str() != "-" => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            (path.display().to_string(), bytes)
        }
        (None, _) => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading records from stdin, one JSON event per line (Ctrl-D to end)");
            }
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).context("reading stdin")?;
            ("stdin".into(), bytes)
        }
    };
    let split: Vec<(usize, &[u8])> =
        if args.value.is_some() { vec![(1, input.as_slice())] } else { split_records(&input) };
    if split.is_empty() || (args.value.is_some() && input.is_empty()) {
        bail!("no record in {source}: give --value JSON, --file PATH, or one JSON event per line on stdin");
    }
    let schema =
        if args.raw { None } else { Some(args.schema.unwrap_or_else(|| schema_for(&args.topic, &args.topics))) };
    let event_schema = !matches!(schema_for(&args.topic, &args.topics), SchemaChoice::None);
    let origin = |line: usize| if args.value.is_some() { source.clone() } else { format!("line {line} of {source}") };

    let mut out = Vec::with_capacity(split.len());
    let mut refused: Vec<(String, DecodeError)> = Vec::new();
    for (line, value) in split {
        let car_id = match schema {
            Some(schema) => match validate(schema, value, args.max_record_bytes) {
                Ok(car_id) => car_id,
                Err(e) => {
                    refused.push((origin(line), e));
                    continue;
                }
            },
            // Unchecked: key by car_id only when the topic carries events and one is there.
            None if event_schema => serde_json::from_slice::<CarId>(value).ok().map(|c| c.car_id),
            None => None,
        };
        let key = args.key.clone().or_else(|| car_id.map(|id| id.to_string()));
        out.push(Record { origin: origin(line), value: value.to_vec(), key });
    }
    if let Some((origin, first)) = refused.first() {
        let total = out.len() + refused.len();
        let name = match schema {
            Some(SchemaChoice::Sensor) => "sensor",
            Some(SchemaChoice::Enriched) => "enriched",
            Some(SchemaChoice::Alert) => "alert",
            _ => "none",
        };
        let checked = if args.schema.is_some() {
            format!("checked as --schema {name}")
        } else {
            format!("checked as --schema {name}, from the topic name")
        };
        bail!(
            "{} of {total} record(s) refused, nothing was sent; {origin}: {first} ({checked}; fix the input, \
             choose another --schema, or send it unchecked with --raw)",
            refused.len()
        );
    }
    Ok(out)
}

/// `ops produce`.
pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let records = records(&args)?;
    crate::topics::must_exist(&args.kafka, &args.topic).await?;
    let producer = client::producer(&args.kafka)?;
    let headers = (!args.headers.is_empty()).then(|| {
        args.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(v) }))
    });
    let mut deliveries = Vec::with_capacity(records.len());
    for record in &records {
        let delivery = client::enqueue(
            &producer,
            &args.topic,
            record.key.as_deref().map(str::as_bytes),
            &record.value,
            headers.clone(),
        )
        .await
        .with_context(|| format!("sending {} to {}", record.origin, args.topic))?;
        deliveries.push(delivery);
    }
    let (mut sent, mut failed) = (0usize, 0usize);
    for (record, delivery) in records.iter().zip(deliveries) {
        let key = record.key.as_deref().map_or_else(|| "null".to_owned(), |k| format!("{k:?}"));
        match delivery.await {
            Ok(Ok(d)) => {
                sent += 1;
                println!("produced topic={} partition={} offset={} key={key}", args.topic, d.partition, d.offset);
            }
            Ok(Err((e, _))) => {
                failed += 1;
                eprintln!("ops: {} was not acknowledged by {}: {e}", record.origin, args.topic);
            }
            Err(_) => {
                failed += 1;
                eprintln!("ops: the delivery report of {} was lost (producer closed)", record.origin);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} record(s) not acknowledged ({sent} were); see the lines above", records.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> TopicNames {
        TopicNames {
            sensors_topic: "sensors-sample".into(),
            enriched_topic: "samples-enriched".into(),
            alerts_topic: "alert-data".into(),
        }
    }

    const SENSOR: &str = r#"{"event_id":"5f0c1d3e-8b1a-4c3d-9e2f-0123456789ab","event_time":"2026-01-02T03:04:05.067Z","car_id":17,"speed":88.25,"rpm":3100,"gear":3}"#;

    #[test]
    fn topic_names_pick_the_schema() {
        assert_eq!(schema_for("sensors-sample", &names()), SchemaChoice::Sensor);
        assert_eq!(schema_for("samples-enriched", &names()), SchemaChoice::Enriched);
        assert_eq!(schema_for("alert-data", &names()), SchemaChoice::Alert);
        assert_eq!(schema_for("sensors-sample.dlq", &names()), SchemaChoice::None);
        assert_eq!(schema_for("alert-counts", &names()), SchemaChoice::None);
    }

    #[test]
    fn one_document_or_one_record_per_line() {
        let pretty = b"\n\n{\n  \"a\": 1,\n  \"b\": [2]\n}\n";
        assert_eq!(split_records(pretty), vec![(3, &pretty[2..pretty.len() - 1])]);
        let ndjson = b"{\"a\":1}\r\n\n  {\"a\":2}  \nnot json\n";
        assert_eq!(split_records(ndjson), vec![(1, &b"{\"a\":1}"[..]), (3, b"{\"a\":2}"), (4, b"not json")]);
        assert!(split_records(b" \n\t\n").is_empty());
    }

    #[test]
    fn events_validate_and_give_their_car() {
        assert_eq!(validate(SchemaChoice::Sensor, SENSOR.as_bytes(), 1 << 20), Ok(Some(17)));
        let enriched = SENSOR.replace(r#""gear":3}"#, r#""gear":3,"expected_gear":3}"#);
        assert_eq!(validate(SchemaChoice::Enriched, enriched.as_bytes(), 1 << 20), Ok(Some(17)));
        let err = validate(SchemaChoice::Alert, enriched.as_bytes(), 1 << 20).unwrap_err().to_string();
        assert!(err.contains("missing field `alert_reasons`"), "{err}");
        let alert = enriched.replace('}', r#","alert_reasons":["speed","gear"]}"#);
        assert_eq!(validate(SchemaChoice::Alert, alert.as_bytes(), 1 << 20), Ok(Some(17)));
        let empty = enriched.replace('}', r#","alert_reasons":[]}"#);
        let err = validate(SchemaChoice::Alert, empty.as_bytes(), 1 << 20).unwrap_err().to_string();
        assert!(err.starts_with("invalid alert_reasons"), "{err}");
        let bad_reason = enriched.replace('}', r#","alert_reasons":["fuel"]}"#);
        assert!(validate(SchemaChoice::Alert, bad_reason.as_bytes(), 1 << 20).is_err());
    }

    #[test]
    fn schema_none_still_wants_json() {
        assert_eq!(validate(SchemaChoice::None, b"[1,2]", 1 << 20), Ok(None));
        let err = validate(SchemaChoice::None, b"{oops", 1 << 20).unwrap_err().to_string();
        assert!(err.starts_with("value is not valid JSON"), "{err}");
        let err = validate(SchemaChoice::Sensor, SENSOR.as_bytes(), 10).unwrap_err().to_string();
        assert!(err.contains("exceeds the 10-byte limit"), "{err}");
    }
}
