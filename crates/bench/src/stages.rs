//! Starting a phase's processes: the consuming stages of each system (until ready) and the
//! source; what the phase must count; the phase's topics.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::ensure;
use e2e::Pipeline;
use pipeline_core::generate::{EventClock, EventGenerator};
use pipeline_core::join::Car;
use pipeline_core::rules::AlertRules;
use pipeline_core::schema::{AlertEvent, JsonEvent};
use pipeline_s3::dims::load_table;
use pipeline_testkit as testkit;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

use crate::http_get;
use crate::options::System;
use crate::phase::{Bench, Expected, say, unix_us};
use crate::procs::Proc;

/// Synthetic event times: the generator's `--start-time` and `--time-step`.
const START_TIME: &str = "2026-04-01T08:00:00Z";
const TIME_STEP: &str = "1ms";

fn s(v: &str) -> String {
    v.to_owned()
}

impl Bench {
    /// Alerts and record sizes of the first `events` events, computed once per event count.
    pub(crate) fn expected(&mut self, p: &Pipeline, events: u64) -> anyhow::Result<Expected> {
        if let Some(e) = self.expected.get(&events) {
            return Ok(*e);
        }
        let cars: Vec<Car> = self.rt.block_on(load_table(&p.store, &p.s3.dims_prefix))?;
        let start = pipeline_core::schema::event_time::parse(START_TIME).map_err(anyhow::Error::msg)?;
        let clock = EventClock::Synthetic { start, step: chrono::Duration::milliseconds(1) };
        let mut g = EventGenerator::new(cars.iter().map(|c| c.car_id).collect(), Some(self.opts.seed), clock);
        let (join, rules) = (p.join(), AlertRules::default());
        let (mut alerts, mut bytes, mut alert_sensor) = (0u64, [0usize; 3], 0usize);
        let mut buf = Vec::with_capacity(512);
        for _ in 0..events {
            let sensor = g.next_event();
            buf.clear();
            sensor.encode_into(&mut buf);
            let sensor_len = buf.len();
            bytes[0] += sensor_len;
            let (enriched, _) = join.enrich(sensor);
            buf.clear();
            enriched.encode_into(&mut buf);
            bytes[1] += buf.len();
            let reasons = rules.check_event(&enriched);
            if !reasons.is_empty() {
                alerts += 1;
                alert_sensor += sensor_len;
                buf.clear();
                AlertEvent { event: &enriched, alert_reasons: reasons, thresholds: rules }.encode_into(&mut buf);
                bytes[2] += buf.len();
            }
        }
        let mean = |total: usize, n: u64| if n == 0 { 0.0 } else { total as f64 / n as f64 };
        let e = Expected {
            alerts,
            bytes: [mean(bytes[0], events), mean(bytes[1], events), mean(bytes[2], alerts)],
            // The relays' records are the sensor records, a space longer when not an alert.
            relay_bytes: [
                mean(bytes[0] + (events - alerts) as usize, events),
                mean(bytes[0] + (events - alerts) as usize, events),
                mean(alert_sensor, alerts),
            ],
        };
        self.expected.insert(events, e);
        Ok(e)
    }

    /// The consuming stages of `system`, started and ready (services: `/readyz` 200; relays:
    /// partitions assigned), with the instant each service was ready.
    pub(crate) fn start_stages(
        &self,
        p: &Pipeline,
        system: System,
        alerts: u64,
    ) -> anyhow::Result<(Vec<Proc>, Vec<Option<i64>>)> {
        let [_, hop1, hop2, sink] = system.process_names();
        if system != System::Pipeline {
            let role = if system == System::Bare { "bare-hop" } else { "hop" };
            let hop = |input: &str, output: &str, group: String, only_alerts: bool| {
                let mut a = vec![s(role), s("--input"), s(input), s("--output"), s(output), s("--group"), group];
                if only_alerts {
                    a.push(s("--only-alerts"));
                }
                a
            };
            let mut stages = vec![
                Proc::spawn(self, hop1, "relay", &hop(&p.sensors, &p.enriched, format!("{}-hop1", p.id), false), true)?,
                Proc::spawn(self, hop2, "relay", &hop(&p.enriched, &p.alerts, format!("{}-hop2", p.id), true), true)?,
            ];
            let args = [s("sink"), s("--input"), p.alerts.clone(), s("--group"), format!("{}-sink", p.id)];
            let mut args = args.to_vec();
            args.extend([s("--expect"), alerts.to_string()]);
            stages.push(Proc::spawn(self, sink, "relay", &args, true)?);
            for stage in &mut stages {
                stage.wait_line("assigned", Duration::from_secs(60))?;
            }
            let n = stages.len();
            return Ok((stages, vec![None; n]));
        }
        let common = |service: &str, addr: &str| {
            vec![
                s("--group-id"),
                format!("{}-{service}", p.id),
                s("--metrics-addr"),
                s(addr),
                s("--log-format"),
                s("json"),
            ]
        };
        let addr = free_addr()?;
        let mut args = common(hop1, &addr);
        args.extend([s("--s3-bucket"), p.s3.s3_bucket.clone(), s("--dims-prefix"), p.s3.dims_prefix.clone()]);
        args.extend([s("--input-topic"), p.sensors.clone(), s("--output-topic"), p.enriched.clone()]);
        let mut enricher = Proc::spawn(self, hop1, "enricher", &args, false)?;
        enricher.metrics_addr = Some(addr);
        let addr = free_addr()?;
        let mut args = common(hop2, &addr);
        args.extend([s("--s3-bucket"), p.s3.s3_bucket.clone(), s("--dims-prefix"), p.s3.dims_prefix.clone()]);
        args.extend([s("--rules-prefix"), p.rules_prefix()]);
        args.extend([s("--input-topic"), p.enriched.clone(), s("--output-topic"), p.alerts.clone()]);
        let mut detector = Proc::spawn(self, hop2, "detector", &args, false)?;
        detector.metrics_addr = Some(addr);
        let addr = free_addr()?;
        let mut args = common(sink, &addr);
        args.extend([s("--input-topic"), p.alerts.clone(), s("--counts-topic"), p.counts.clone()]);
        args.extend([s("--late-topic"), p.late.clone(), s("--trigger"), s("1s"), s("--quiet")]);
        let mut counter = Proc::spawn(self, sink, "counter", &args, false)?;
        counter.metrics_addr = Some(addr);
        let mut stages = vec![enricher, detector, counter];

        let mut ready_us: Vec<Option<i64>> = vec![None; stages.len()];
        let deadline = Instant::now() + Duration::from_secs(60);
        while ready_us.iter().any(Option::is_none) {
            for (stage, ready) in stages.iter_mut().zip(ready_us.iter_mut()).filter(|(_, r)| r.is_none()) {
                stage.check_running()?;
                let addr = stage.metrics_addr.as_deref().unwrap_or_default();
                if matches!(http_get(addr, "/readyz"), Ok((200, _))) {
                    *ready = Some(unix_us());
                }
            }
            ensure!(Instant::now() < deadline, "the services were not ready within 60 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((stages, ready_us))
    }

    /// The generator (pipeline) or `relay source` (both relays): the same records.
    pub(crate) fn start_source(&self, p: &Pipeline, system: System, rate: f64, events: u64) -> anyhow::Result<Proc> {
        let mut args = vec![s("--s3-bucket"), p.s3.s3_bucket.clone(), s("--dims-prefix"), p.s3.dims_prefix.clone()];
        args.extend([s("--topic"), p.sensors.clone(), s("--rate"), rate.to_string(), s("--count"), events.to_string()]);
        args.extend([s("--seed"), self.opts.seed.to_string(), s("--start-time"), s(START_TIME)]);
        args.extend([s("--time-step"), s(TIME_STEP)]);
        let name = system.process_names()[0];
        if system == System::Pipeline {
            args.insert(0, s("run"));
            Proc::spawn(self, name, "generator", &args, false)
        } else {
            args.insert(0, s("source"));
            Proc::spawn(self, name, "relay", &args, true)
        }
    }

    pub(crate) fn delete_topics(&self, p: &Pipeline) {
        if self.opts.keep_topics {
            return;
        }
        let mut topics: Vec<&str> = vec![&p.sensors, &p.enriched, &p.alerts, &p.counts, &p.late];
        topics.extend(p.dlq.values().map(String::as_str));
        let admin: Result<AdminClient<DefaultClientContext>, _> = testkit::kafka().client_config(&[]).create();
        if let Ok(admin) = admin
            && let Err(e) = self.rt.block_on(admin.delete_topics(&topics, &AdminOptions::new()))
        {
            say(format!("deleting the phase's topics failed: {e}"));
        }
    }
}

/// First `consuming` and `partitions assigned` log times (µs) of a service's JSON log.
pub(crate) fn join_times(log: &Path) -> (Option<i64>, Option<i64>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut found: [Option<i64>; 2] = [None, None];
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let message = v["fields"]["message"].as_str().unwrap_or_default();
        let slot = match message {
            "consuming" => 0,
            "partitions assigned" => 1,
            _ => continue,
        };
        let at = v["timestamp"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if found[slot].is_none() {
            found[slot] = at.map(|t| t.timestamp_micros());
        }
    }
    (found[0], found[1])
}

fn free_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}
