//! `ops rules show|set|validate`: the detector's rules table as an operator edits it. Every
//! command validates against the dims the enricher joins with (a model or brand they do not
//! know is refused by row), `set` only a valid table, and each prints the version (the
//! `rules.version` header the detector stamps on alerts judged by it).

pub mod book;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use pipeline_core::join::{CarModel, DimTables};
use pipeline_core::rules::table::{Canonical, RulesTable, RulesVersion};
use pipeline_s3::S3Args;
use pipeline_s3::dims::load_tables;
use pipeline_s3::rules_store::{self, RulesArgs, ThresholdArgs};
use pipeline_s3::store::ObjectStore;

/// `ops rules`.
#[derive(Debug, Args)]
pub struct RulesCmd {
    /// What to do.
    #[command(subcommand)]
    pub command: RulesCommand,
}

/// The rules subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Print the table in use (or a kept version) and the thresholds it gives every model.
    Show(ShowArgs),
    /// Validate FILE and make it the table in use (the detectors follow within --rules-poll);
    /// prints the new version.
    Set(FileArgs),
    /// Validate FILE; prints the version it would have. Writes nothing.
    Validate(FileArgs),
}

/// Where the rules and the dims are, and the flags' thresholds (a table's default falls back
/// to them, as the detector's does: the same variables configure both).
#[derive(Debug, Args)]
pub struct RulesLocation {
    /// The bucket and the dims.
    #[command(flatten)]
    pub s3: S3Args,
    /// The rules' prefix and the versions kept.
    #[command(flatten)]
    pub rules: RulesArgs,
    /// The default row's fallback.
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

/// `ops rules show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Where.
    #[command(flatten)]
    pub at: RulesLocation,
    /// A kept version instead of the table in use.
    #[arg(long = "rules-version", env = "OPS_RULES_VERSION", value_parser = parse_version)]
    pub rules_version: Option<RulesVersion>,
}

/// `ops rules set` / `validate`.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Where.
    #[command(flatten)]
    pub at: RulesLocation,
    /// The table (JSON; `-` for standard input).
    pub file: PathBuf,
}

fn parse_version(s: &str) -> Result<RulesVersion, String> {
    RulesVersion::parse(s).ok_or_else(|| format!("`{s}` is not a rules version (12 lowercase hex digits)"))
}

/// Runs one rules command.
pub async fn rules(cmd: RulesCmd) -> anyhow::Result<()> {
    match cmd.command {
        RulesCommand::Show(args) => show(args).await,
        RulesCommand::Set(args) => set(args, true).await,
        RulesCommand::Validate(args) => set(args, false).await,
    }
}

/// The store and the dims' models.
async fn open(at: &RulesLocation) -> anyhow::Result<(ObjectStore, DimTables)> {
    let store = ObjectStore::connect(&at.s3).await;
    let dims = load_tables(&store, &at.s3.dims_prefix).await.with_context(|| {
        format!("loading the dims from {} (a rule may name their models)", store.url(&at.s3.dims_prefix))
    })?;
    Ok((store, dims))
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let (store, dims) = open(&args.at).await?;
    let prefix = &args.at.rules.rules_prefix;
    let base = args.at.thresholds.rules();
    let (bytes, key) = match &args.rules_version {
        Some(v) => (rules_store::read_version(&store, prefix, v).await?, rules_store::version_key(prefix, v)),
        None => (rules_store::read_current(&store, prefix).await?, rules_store::current_key(prefix)),
    };
    let canonical = match bytes {
        Some(bytes) => RulesTable::parse(&bytes)?.canonical(base, Some(&dims.models))?,
        None if args.rules_version.is_some() => bail!("{} is not kept", store.url(&key)),
        None => {
            println!("no rules table at {}: the detectors judge by their flags", store.url(&key));
            Canonical::of_base(base)?
        }
    };
    println!("rules version {} ({})", canonical.version, store.url(&key));
    println!("{}", serde_json::to_string_pretty(&canonical.table)?);
    print_models(&canonical, &dims.models);
    Ok(())
}

/// The thresholds every model gets.
fn print_models(canonical: &Canonical, models: &[CarModel]) {
    let rules = canonical.compile(models);
    println!("{:>8}  {:<12} {:<12} {:>9} {:>7}  gear rule", "model_id", "brand", "model", "max_speed", "max_rpm");
    for m in models {
        let r = rules.for_model(Some(m.model_id));
        let gear = if r.gear_rule { "on" } else { "off" };
        println!(
            "{:>8}  {:<12} {:<12} {:>9} {:>7}  {gear}",
            m.model_id, m.car_brand, m.car_model, r.max_speed, r.max_rpm
        );
    }
}

async fn set(args: FileArgs, write: bool) -> anyhow::Result<()> {
    let bytes = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading standard input")?;
        buf
    } else {
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?
    };
    let (store, dims) = open(&args.at).await?;
    let file = args.file.display();
    let canonical = RulesTable::parse(&bytes)
        .and_then(|t| t.canonical(args.at.thresholds.rules(), Some(&dims.models)))
        .with_context(|| format!("{file} is not a valid rules table"))?;
    let prefix = &args.at.rules.rules_prefix;
    if !write {
        println!("{file}: valid, version {}", canonical.version);
        print_models(&canonical, &dims.models);
        return Ok(());
    }
    let previous = match rules_store::read_current(&store, prefix).await? {
        Some(b) => {
            RulesTable::parse(&b).and_then(|t| t.canonical(args.at.thresholds.rules(), None)).ok().map(|c| c.version)
        }
        None => None,
    };
    if previous.as_ref() == Some(&canonical.version) {
        println!("rules version {} is already in use: nothing written", canonical.version);
        return Ok(());
    }
    let written = rules_store::write(&store, prefix, &canonical, args.at.rules.rules_keep).await?;
    let was = previous.map_or_else(|| "none".to_owned(), |v| v.to_string());
    println!(
        "rules version {} in use (was {was}) at {}; the detectors follow within their --rules-poll",
        written.version,
        store.url(&rules_store::current_key(prefix))
    );
    for key in written.pruned {
        println!("pruned {} (beyond the newest {} versions)", store.url(&key), args.at.rules.rules_keep);
    }
    print_models(&canonical, &dims.models);
    Ok(())
}
