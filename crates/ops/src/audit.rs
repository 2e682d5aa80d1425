//! `ops audit`: reconciles the pipeline's outputs with its input, as a batch.
//!
//! It reads the input topic, the dims from S3 and the three output topics, each up to the high
//! watermarks captured when it starts; recomputes what every stage must hold with the
//! services' own library code (`JoinIndex::enrich`, `AlertRules::check_event`, `Windows`,
//! `PartialMerge`); and reports per stage the events (windows) missing, duplicated, different
//! and unexpected. Each event stage is judged against the input; the windows against the
//! alerts as their topic holds them (the counter's input, duplicates included). Exit 0: clean;
//! 1: differences; 2: the audit could not run.
//!
//! - `read`: bounded, group-less reads with large fetches.
//! - `compare`: the input index, the range, the report types.
//! - `event_stage`: the event stages (enriched, alerts).
//! - `judged`: which rules version judged each event (the audit holds across a rules change).
//! - `windows`: the windows stage.
//! - `report`: text and JSON output.

use std::time::Instant;

use anyhow::{Context, ensure};
use pipeline_core::join::{DimTables, JoinIndex};
use pipeline_s3::dims::load_tables;
use pipeline_s3::store::ObjectStore;

use crate::cli::{AuditArgs, AuditFormat};
use crate::rules::book::RulesBook;

mod compare;
mod event_stage;
mod judged;
pub mod read;
mod report;
mod windows;

use compare::{Ctx, Inputs, Range};
use event_stage::{EventStage, Kind};
use read::Extent;
use report::{DimsReport, InputReport, Report};

/// How an audit that ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every stage holds exactly what it should (exit 0).
    Clean,
    /// At least one difference (exit 1).
    Differences,
}

/// `ops audit`: an error is a "cannot run" (exit 2).
pub async fn audit(args: AuditArgs) -> anyhow::Result<Verdict> {
    let started = Instant::now();
    if let (Some(from), Some(to)) = (args.from, args.to) {
        ensure!(from < to, "--from must be before --to");
    }
    let range = Range { from: args.from, to: args.to };
    // Every topic's watermarks first: the audit covers what they held at this moment.
    let mut extents = Vec::with_capacity(4);
    for topic in [&args.input_topic, &args.enriched_topic, &args.alerts_topic, &args.counts_topic] {
        extents.push(read::extent(&args.kafka, topic).await?);
    }
    let location = format!("s3://{}/{}", args.s3.s3_bucket, args.s3.dims_prefix);
    let store = ObjectStore::connect(&args.s3).await;
    let dims = load_tables(&store, &args.s3.dims_prefix)
        .await
        .with_context(|| format!("cannot load the dims from {location}"))?;
    let dims_report =
        DimsReport { location, cars: dims.cars.len(), models: dims.models.len(), colors: dims.colors.len() };
    let book = RulesBook::load(&store, &args.rules.rules_prefix, args.thresholds.rules(), &dims.models)
        .await
        .context("cannot read the rules versions")?;
    for url in &book.mismatched {
        tracing::warn!(%url, "a kept rules version is not the version its name says: not used");
    }

    let format = args.format;
    let report = tokio::task::spawn_blocking(move || run(&args, range, &extents, &dims, &book, dims_report, started))
        .await
        .context("audit task")??;
    let mut out = std::io::stdout().lock();
    match format {
        AuditFormat::Text => report.write_text(&mut out),
        AuditFormat::Json => report.write_json(&mut out),
    }
    .context("writing the report")?;
    Ok(if report.differences == 0 { Verdict::Clean } else { Verdict::Differences })
}

/// The reads and comparisons (blocking): the input first, then the three outputs in parallel
/// (one thread each, every one with its own consumer) against the input's read-only index.
fn run(
    args: &AuditArgs,
    range: Range,
    extents: &[Extent],
    dims: &DimTables,
    book: &RulesBook,
    dims_report: DimsReport,
    started: Instant,
) -> anyhow::Result<Report> {
    let [input, enriched, alerts, counts] = extents else { unreachable!("four topics") };
    let join = JoinIndex::new(dims);
    let ctx = Ctx { join: &join, rules: book, range, limit: args.max_record_bytes, examples: args.examples };
    let stall = args.stall_timeout;
    let mut inputs = Inputs::with_capacity(usize::try_from(input.records()).unwrap_or(0));
    read::read(&args.kafka, input, stall, |_, _, value, _| inputs.add(&ctx, value))?;
    let config = args.windows.config()?;

    let (enriched, alerts, counts) = std::thread::scope(|s| -> anyhow::Result<_> {
        let (ctx, inputs) = (&ctx, &inputs);
        let events = |kind: Kind, extent: &'_ Extent| {
            let mut stage = EventStage::new(kind, &extent.topic, inputs);
            read::read(&args.kafka, extent, stall, |p, o, v, h| stage.add(ctx, inputs, (p, o), v, h))?;
            anyhow::Ok(stage)
        };
        let enriched = s.spawn(move || events(Kind::Enriched, enriched));
        let alerts = s.spawn(move || events(Kind::Alerts, alerts));
        let mut stage = windows::CountsStage::new(&counts.topic, config.colors.clone());
        read::read(&args.kafka, counts, stall, |p, o, v, _| stage.add(ctx, (p, o), v))?;
        let join = |h: std::thread::ScopedJoinHandle<'_, anyhow::Result<_>>| h.join().expect("reader does not panic");
        Ok((join(enriched)?, join(alerts)?, stage))
    })?;
    // Which rules judged an event without an alert is known only now (the alerts around it).
    EventStage::judge(&mut inputs, &ctx, &enriched, &alerts);
    let (enriched, _) = enriched.finish(&ctx, &inputs);
    let (alerts, alert_copies) = alerts.finish(&ctx, &inputs);
    let expected = windows::expected(&ctx, &inputs, &alert_copies, config);
    let stages = vec![enriched, alerts, counts.finish(&ctx, &expected)];

    let differences = stages.iter().map(compare::StageReport::differences).sum();
    Ok(Report {
        input: InputReport {
            topic: input.topic.clone(),
            records: inputs.records,
            events: inputs.events.len() as u64,
            duplicated: inputs.duplicated,
            invalid: inputs.invalid,
            outside_range: inputs.outside_range,
        },
        range: range.into(),
        dims: dims_report,
        stages,
        differences,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}
