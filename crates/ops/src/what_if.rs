//! `ops what-if --rules FILE --from T1 --to T2`: what a candidate rules table would change,
//! before it is set. It reads the enriched topic's events of the event-time range (assigned,
//! no group, nothing committed, nothing produced: `audit::read`), judges each by the table in
//! use and by the candidate with the detector's own code (`ModelRules::for_model`,
//! `AlertRules::check_event`), and counts the windows of both alert sets with the counter's
//! own `Windows`. It reports per rule and per model the alerts of each and the events that
//! change side, and every window whose counts would change. Events are counted once per id (an
//! at-least-once duplicate is not a second event).

mod report;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use pipeline_core::defaults;
use pipeline_core::join::JoinIndex;
use pipeline_core::rules::AlertReasons;
use pipeline_core::rules::table::{ModelRules, RulesTable};
use pipeline_core::schema::{EnrichedEvent, JsonEvent};
use pipeline_core::window::{AlertPoint, WindowStats, Windows};
use pipeline_kafka::args::KafkaArgs;
use pipeline_s3::dims::load_tables;
use pipeline_s3::store::ObjectStore;

use crate::audit::read;
use crate::cli::{AuditFormat, WindowArgs, parse_time};
use crate::rules::RulesLocation;
use crate::rules::book::RulesBook;
use report::{ModelLine, RuleLine, WhatIf, WindowChange};

/// `ops what-if`.
#[derive(Debug, Args)]
pub struct WhatIfArgs {
    /// The Kafka cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Where the rules in use and the dims are.
    #[command(flatten)]
    pub at: RulesLocation,

    /// The candidate rules table (JSON), validated as `ops rules set` would.
    #[arg(long = "rules", env = "OPS_WHAT_IF_RULES")]
    pub candidate: PathBuf,

    /// Topic of the enriched events (the detector's input).
    #[arg(long, env = "ENRICHED_TOPIC", default_value = defaults::ENRICHED_TOPIC)]
    pub enriched_topic: String,

    /// Only events with an event_time at or after this (RFC 3339).
    #[arg(long, env = "OPS_WHAT_IF_FROM", value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,

    /// Only events with an event_time before this (RFC 3339).
    #[arg(long, env = "OPS_WHAT_IF_TO", value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,

    /// The counter's windows.
    #[command(flatten)]
    pub windows: WindowArgs,

    /// Records larger than this are skipped (the services dead-letter them).
    #[arg(long, env = "MAX_RECORD_BYTES", default_value_t = 1 << 20)]
    pub max_record_bytes: usize,

    /// Give up when the topic yields nothing for this long before its end.
    #[arg(long, env = "OPS_WHAT_IF_STALL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,

    /// Output: `text` (tables) or `json` (one document).
    #[arg(long, env = "OPS_WHAT_IF_FORMAT", value_enum, default_value_t)]
    pub format: AuditFormat,
}

/// Runs `ops what-if`.
pub async fn what_if(args: WhatIfArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if let (Some(from), Some(to)) = (args.from, args.to) {
        anyhow::ensure!(from < to, "--from must be before --to");
    }
    let bytes = std::fs::read(&args.candidate).with_context(|| format!("reading {}", args.candidate.display()))?;
    let store = ObjectStore::connect(&args.at.s3).await;
    let dims = load_tables(&store, &args.at.s3.dims_prefix).await.context("loading the dims")?;
    let base = args.at.thresholds.rules();
    let candidate = RulesTable::parse(&bytes)
        .and_then(|t| t.canonical(base, Some(&dims.models)))
        .with_context(|| format!("{} is not a valid rules table", args.candidate.display()))?;
    let book = RulesBook::load(&store, &args.at.rules.rules_prefix, base, &dims.models).await?;
    let in_use = book.rules(book.current()).clone();
    let versions = (book.version(book.current()).clone(), candidate.version.clone());
    let extent = read::extent(&args.kafka, &args.enriched_topic).await?;
    let format = args.format;
    let mut report = tokio::task::spawn_blocking(move || {
        let rules = [in_use, candidate.compile(&dims.models)];
        compare(&args, &extent, &JoinIndex::new(&dims), &rules)
    })
    .await
    .context("what-if task")??;
    (report.in_use, report.candidate) = (versions.0.to_string(), versions.1.to_string());
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    match format {
        AuditFormat::Text => report.write_text(&mut out),
        AuditFormat::Json => report.write_json(&mut out),
    }
    .context("writing the report")
}

/// Per model id (None: an unknown car): events, and alerts under each table.
type PerModel = BTreeMap<Option<i32>, ModelLine>;

/// Reads the range and judges every event by both tables (blocking).
fn compare(
    args: &WhatIfArgs,
    extent: &read::Extent,
    join: &JoinIndex,
    rules: &[ModelRules; 2],
) -> anyhow::Result<WhatIf> {
    let config = args.windows.config()?;
    let (size, colors) = (config.size, config.colors.clone());
    let mut windows = [Windows::new(config.clone()), Windows::new(config)];
    let (mut seen, mut models, mut by_rule) = (HashSet::<u128>::new(), PerModel::new(), [RuleLine::default(); 4]);
    let (mut events, mut duplicates, mut invalid, mut outside) = (0u64, 0u64, 0u64, 0u64);
    let now = Instant::now();
    read::read(&args.kafka, extent, args.stall_timeout, |_, _, value, _| {
        let Ok(e) = EnrichedEvent::decode(value.unwrap_or_default(), args.max_record_bytes) else {
            invalid += 1;
            return;
        };
        if args.from.is_some_and(|f| e.event_time < f) || args.to.is_some_and(|t| e.event_time >= t) {
            outside += 1;
            return;
        }
        if !seen.insert(e.event_id.as_u128()) {
            duplicates += 1;
            return;
        }
        events += 1;
        // A record from an enricher before `model_id` was written: the dims know the car's.
        let model = e.model_id.or_else(|| join.get(e.car_id).and_then(|c| c.model_id));
        let judged: [AlertReasons; 2] = [0, 1].map(|k| rules[k].for_model(model).check_event(&e));
        let line = models.entry(model).or_insert_with(|| ModelLine::new(model, &e));
        line.events += 1;
        for (k, reasons) in judged.iter().enumerate() {
            if reasons.is_empty() {
                continue;
            }
            line.alerts[k] += 1;
            windows[k].add(0, AlertPoint::from(&e), now);
            for (r, hit) in [true, reasons.speed, reasons.rpm, reasons.gear].into_iter().enumerate() {
                by_rule[r].alerts[k] += u64::from(hit);
            }
        }
        match (judged[0].is_empty(), judged[1].is_empty()) {
            (true, false) => line.added += 1,
            (false, true) => line.removed += 1,
            _ => {}
        }
    })?;
    let [before, after] = windows.map(|w| w.live().map(|s| (s.start, s.clone())).collect::<BTreeMap<_, _>>());
    let starts: std::collections::BTreeSet<_> = before.keys().chain(after.keys()).copied().collect();
    let empty = |start| WindowStats::new(start, size, colors.len());
    let changes: Vec<WindowChange> = starts
        .into_iter()
        .filter_map(|start| {
            let (a, b) = (
                before.get(&start).cloned().unwrap_or_else(|| empty(start)),
                after.get(&start).cloned().unwrap_or_else(|| empty(start)),
            );
            (a.rows != b.rows
                || a.colors != b.colors
                || a.max_speed != b.max_speed
                || a.max_gear != b.max_gear
                || a.max_rpm != b.max_rpm)
                .then(|| WindowChange::new(&a, &b, &colors))
        })
        .collect();
    Ok(WhatIf {
        topic: extent.topic.clone(),
        from: args.from.map(|t| pipeline_core::schema::event_time::format(&t)),
        to: args.to.map(|t| pipeline_core::schema::event_time::format(&t)),
        in_use: String::new(),
        candidate: String::new(),
        events,
        duplicates,
        invalid,
        outside_range: outside,
        rules: ["all", "speed", "rpm", "gear"]
            .into_iter()
            .zip(by_rule)
            .map(|(name, l)| RuleLine { name, ..l })
            .collect(),
        models: models.into_values().collect(),
        windows: before.len().max(after.len()) as u64,
        changed_windows: changes,
        elapsed_seconds: 0.0,
    })
}
