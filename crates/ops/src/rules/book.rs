//! Every rules version an alert may name, for judging it by its own: the versions the store
//! keeps, the table in use, and the flags' rules (what a detector without a table judges by).
//! A kept version's object is checked against its name (its canonical JSON digests to it), so
//! an edited copy cannot judge anything.

use anyhow::Context;
use pipeline_core::join::CarModel;
use pipeline_core::rules::AlertRules;
use pipeline_core::rules::table::{Canonical, ModelRules, RulesTable, RulesVersion};
use pipeline_s3::rules_store;
use pipeline_s3::store::ObjectStore;

/// The rules by version, compiled against the audit's dims; a version is also known by its
/// index here (a `u16` per event is what the audit keeps, not a string).
#[derive(Debug)]
pub struct RulesBook {
    /// (version, its thresholds per model), sorted by version.
    versions: Vec<(RulesVersion, ModelRules)>,
    /// The table in use (the flags' rules when there is none): what an alert without a
    /// `rules.version` header, or an event no alert tells about, is judged by.
    current: RulesVersion,
    /// Objects under `versions/` that are not the version their name says (skipped).
    pub mismatched: Vec<String>,
}

impl RulesBook {
    /// Only `rules` (tests, and a what-if's candidate).
    pub fn single(rules: &Canonical, models: &[CarModel]) -> Self {
        let versions = vec![(rules.version.clone(), rules.compile(models))];
        Self { versions, current: rules.version.clone(), mismatched: Vec::new() }
    }

    fn insert(&mut self, rules: &Canonical, models: &[CarModel]) {
        if let Err(at) = self.versions.binary_search_by(|(v, _)| v.cmp(&rules.version)) {
            self.versions.insert(at, (rules.version.clone(), rules.compile(models)));
        }
    }

    /// Reads the kept versions and the table in use under `prefix`.
    pub async fn load(
        store: &ObjectStore,
        prefix: &str,
        base: AlertRules,
        models: &[CarModel],
    ) -> anyhow::Result<Self> {
        let flags = Canonical::of_base(base).context("the --max-speed / --max-rpm thresholds")?;
        let mut book = Self::single(&flags, models);
        let dir = format!("{}/versions/", prefix.trim_end_matches('/'));
        for object in store.list_objects(&dir).await.context("listing the kept rules versions")? {
            let Some(name) = object.key.strip_prefix(&dir).and_then(|n| n.strip_suffix(".json")) else { continue };
            let bytes = store.get(&object.key).await.with_context(|| format!("reading {}", store.url(&object.key)))?;
            let canonical = RulesTable::parse(&bytes).and_then(|t| t.canonical(base, None));
            match canonical {
                Ok(c) if c.version.as_str() == name => book.insert(&c, models),
                _ => book.mismatched.push(store.url(&object.key)),
            }
        }
        if let Some(bytes) = rules_store::read_current(store, prefix).await.context("reading the rules table")? {
            let table = RulesTable::parse(&bytes).context("the rules table in use")?;
            let c = table.canonical(base, None).context("the rules table in use")?;
            book.current = c.version.clone();
            book.insert(&c, models);
        }
        Ok(book)
    }

    /// The index of `version`, if known.
    pub fn index(&self, version: &RulesVersion) -> Option<u16> {
        let i = self.versions.binary_search_by(|(v, _)| v.cmp(version)).ok()?;
        u16::try_from(i).ok()
    }

    /// The index of the table in use.
    pub fn current(&self) -> u16 {
        self.index(&self.current).expect("the table in use is in the book")
    }

    /// The thresholds of version `index`.
    pub fn rules(&self, index: u16) -> &ModelRules {
        &self.versions[usize::from(index)].1
    }

    /// Version `index`'s name.
    pub fn version(&self, index: u16) -> &RulesVersion {
        &self.versions[usize::from(index)].0
    }
}
