//! The rules table in S3, beside the dims: `<rules prefix>/rules.json` is the table in use, and
//! `<rules prefix>/versions/<version>.json` keeps each version written (its canonical JSON, so
//! `ops audit` can judge an alert by the version its header names, and `ops rules show
//! --rules-version` can print it). The last `--rules-keep` versions are kept, the one in use always.
//!
//! One small JSON object rather than Parquet like the dims: a handful of rows an operator
//! reads and edits, replaced by one PUT (a reader sees the old or the new table, never a mix
//! of files), its version the digest of its content (`pipeline_core::rules::table`). Writers
//! (`ops rules set`, `generator dims`) validate before writing; the detector validates again,
//! since anyone with the bucket's credentials can PUT the object.

use bytes::Bytes;
use clap::Args;
use pipeline_core::rules::table::{Canonical, RulesVersion};
use pipeline_core::rules::{AlertRules, SEED_MAX_RPM, SEED_MAX_SPEED};

use crate::store::{ObjectInfo, ObjectStore, S3Error};

/// The table in use, below the prefix.
const CURRENT: &str = "rules.json";

/// Where the rules are and how many versions are kept.
#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    /// Key prefix of the rules table (`<prefix>/rules.json`, versions in `<prefix>/versions/`),
    /// in the dims' bucket.
    #[arg(long, env = "RULES_PREFIX", default_value = "data/rules")]
    pub rules_prefix: String,

    /// Versions kept in `<prefix>/versions/` when a new one is written (the one in use is kept
    /// whatever its age): the audit can judge alerts of these versions only.
    #[arg(long, env = "RULES_KEEP", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub rules_keep: u32,
}

/// The thresholds a rules table's default row falls back to, and all there is without one: the
/// detector's, and `ops`'s to judge by the same (the same variables configure both).
#[derive(Debug, Clone, Copy, Args)]
pub struct ThresholdArgs {
    /// A speed strictly above this (km/h) is an alert, unless the rules table says otherwise.
    #[arg(long, env = "ALERT_MAX_SPEED", default_value_t = SEED_MAX_SPEED)]
    pub max_speed: f64,

    /// An rpm strictly above this is an alert, unless the rules table says otherwise.
    #[arg(long, env = "ALERT_MAX_RPM", default_value_t = SEED_MAX_RPM)]
    pub max_rpm: i32,
}

impl ThresholdArgs {
    /// As rules (the gear rule on, as the seed's).
    pub fn rules(&self) -> AlertRules {
        AlertRules { max_speed: self.max_speed, max_rpm: self.max_rpm, gear_rule: true }
    }
}

/// The key of the table in use.
pub fn current_key(prefix: &str) -> String {
    format!("{}/{CURRENT}", prefix.trim_end_matches('/'))
}

/// The key of a kept version.
pub fn version_key(prefix: &str, version: &RulesVersion) -> String {
    format!("{}/versions/{version}.json", prefix.trim_end_matches('/'))
}

/// The table in use as a LIST shows it (no GET); None when there is none.
pub async fn list_current(store: &ObjectStore, prefix: &str) -> Result<Option<ObjectInfo>, S3Error> {
    let key = current_key(prefix);
    Ok(store.list_objects(&key).await?.into_iter().find(|o| o.key == key))
}

/// The bytes of the table in use; None when there is none.
pub async fn read_current(store: &ObjectStore, prefix: &str) -> Result<Option<Bytes>, S3Error> {
    match store.get(&current_key(prefix)).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(S3Error::NoSuchKey { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The bytes of a kept version; None when it is not kept (pruned, or never written by a tool
/// that keeps versions).
pub async fn read_version(store: &ObjectStore, prefix: &str, version: &RulesVersion) -> Result<Option<Bytes>, S3Error> {
    match store.get(&version_key(prefix, version)).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(S3Error::NoSuchKey { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What [`write()`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The version now in use.
    pub version: RulesVersion,
    /// Versions deleted, being beyond the newest `keep`.
    pub pruned: Vec<String>,
}

/// Makes `rules` the table in use: its version object first (so an alert stamped with it can
/// always be judged), then `rules.json`; then keeps the newest `keep` versions.
pub async fn write(store: &ObjectStore, prefix: &str, rules: &Canonical, keep: u32) -> Result<Written, S3Error> {
    store.put(&version_key(prefix, &rules.version), rules.json.clone()).await?;
    store.put(&current_key(prefix), rules.json.clone()).await?;
    let pruned = prune(store, prefix, &rules.version, keep).await?;
    Ok(Written { version: rules.version.clone(), pruned })
}

/// Deletes the versions beyond the newest `keep` (by last-modified time, then key), never
/// `current`.
async fn prune(store: &ObjectStore, prefix: &str, current: &RulesVersion, keep: u32) -> Result<Vec<String>, S3Error> {
    let dir = format!("{}/versions/", prefix.trim_end_matches('/'));
    let mut versions = store.list_objects(&dir).await?;
    let current = version_key(prefix, current);
    versions.sort_by(|a, b| b.last_modified.cmp(&a.last_modified).then_with(|| b.key.cmp(&a.key)));
    let mut pruned = Vec::new();
    let mut kept = 0;
    for o in versions {
        if o.key == current || kept < keep.saturating_sub(1) {
            kept += u32::from(o.key != current);
            continue;
        }
        store.delete(&o.key).await?;
        pruned.push(o.key);
    }
    Ok(pruned)
}
