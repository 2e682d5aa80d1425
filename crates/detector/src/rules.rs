//! The detector's rules: the operator's table (`pipeline_s3::rules_store`) compiled against
//! the models the dims know, polled like the dims (a LIST of `rules.json` and of the tables
//! every `--rules-poll`, a read only when one changed), swapped in whole between two events.
//!
//! Every alert carries the version it was judged by in its `rules.version` header, and the
//! thresholds in its body. No table is the seed's rules under `--max-speed` / `--max-rpm`. An
//! invalid table (a negative limit, an unknown model, a duplicate row) keeps the version in use
//! with one line naming the row, and `/readyz` shows `rules_loaded degraded: <reason>` (still
//! 200: alerts keep flowing under the rules in use); at start, with no version in use, the
//! detector judges by the flags' rules meanwhile. S3 unreachable: the version in use stays and
//! the check fails (503) until S3 answers; S3 refusing for good (credentials, a missing bucket)
//! stops the detector with one line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pipeline_core::join::DimTables;
use pipeline_core::rules::AlertRules;
use pipeline_core::rules::table::{Canonical, ModelRules, RulesError, RulesTable, RulesVersion};
use pipeline_kafka::observe::Readiness;
use pipeline_s3::dims_watch::{self, DimsVersion, Listing, WatchError};
use pipeline_s3::rules_store;
use pipeline_s3::store::{ObjectStore, S3Error};
use pipeline_s3::version_watch::{Health, LoadError, Next, Watch};
use rdkafka::message::{Header, OwnedHeaders};
use tokio_util::sync::CancellationToken;

/// The readiness check the rules answer for.
pub const READY_CHECK: &str = "rules_loaded";

/// The header every alert carries: the rules version it was judged by.
pub const HEADER: &str = "rules.version";

/// One version of the rules as the hot path reads it; swapped whole.
#[derive(Debug)]
pub struct Rules {
    /// Thresholds per model (an array lookup per event).
    pub by_model: ModelRules,
    /// The version (logs, metrics).
    pub version: RulesVersion,
    /// The `rules.version` header, built once per version (each record gets a copy: librdkafka
    /// owns a record's headers).
    pub headers: OwnedHeaders,
}

impl Rules {
    fn new(canonical: &Canonical, dims: &DimTables) -> Self {
        let headers =
            OwnedHeaders::new_with_capacity(1).insert(Header { key: HEADER, value: Some(canonical.version.as_str()) });
        Self { by_model: canonical.compile(&dims.models), version: canonical.version.clone(), headers }
    }
}

/// Where the rules and the dims are, and what a table's missing defaults are.
#[derive(Debug, Clone)]
pub struct Source {
    /// The bucket.
    pub store: ObjectStore,
    /// The rules' prefix.
    pub rules_prefix: String,
    /// The dims' prefix (the models a row may name).
    pub dims_prefix: String,
    /// The flags' thresholds (a table's default falls back to them).
    pub base: AlertRules,
}

/// What one poll lists: the rules object's identity (None: no table) and the dims' version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    /// ETag (or size and time) of `rules.json`.
    rules: Option<String>,
    /// The dims' version.
    dims: DimsVersion,
}

/// Why a version could not be read or used.
#[derive(Debug, thiserror::Error)]
enum LoadFailure {
    /// Reading `rules.json` failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// Listing or reading the dims failed.
    #[error(transparent)]
    Dims(#[from] WatchError),
    /// The table is not valid: the row and the problem.
    #[error("invalid rules table: {0}")]
    Invalid(#[from] RulesError),
}

impl LoadError for LoadFailure {
    fn is_permanent(&self) -> bool {
        match self {
            Self::Invalid(_) => true,
            Self::Dims(e) => e.is_permanent(),
            Self::S3(_) => false,
        }
    }

    fn is_rewrite(&self) -> bool {
        matches!(self, Self::Dims(WatchError::Vanished { .. }))
    }
}

impl LoadFailure {
    /// S3 refused for a reason no retry fixes (see `WatchError::needs_operator`).
    fn needs_operator(&self) -> bool {
        match self {
            Self::S3(e) => !e.is_transient() && !matches!(e, S3Error::NoSuchKey { .. }),
            Self::Dims(e) => e.needs_operator(),
            Self::Invalid(_) => false,
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            Self::S3(e) => e.is_transient(),
            Self::Dims(e) => e.is_transient(),
            Self::Invalid(_) => false,
        }
    }
}

impl Source {
    /// The LISTs of a poll.
    async fn list(&self) -> Result<(Listed, Listing), LoadFailure> {
        let rules = rules_store::list_current(&self.store, &self.rules_prefix).await?;
        let listing = dims_watch::list(&self.store, &self.dims_prefix).await?;
        let identity = rules.map(|o| o.e_tag.unwrap_or_else(|| format!("{}@{:?}", o.size, o.last_modified)));
        Ok((Listed { rules: identity, dims: listing.version() }, listing))
    }

    /// Reads what `listing` names and the rules table; the table validated against the models.
    async fn load(&self, listing: &Listing) -> Result<(Canonical, DimTables), LoadFailure> {
        let dims = dims_watch::load(&self.store, listing).await?;
        let bytes = rules_store::read_current(&self.store, &self.rules_prefix).await?;
        let table = match bytes {
            Some(bytes) => RulesTable::parse(&bytes)?,
            None => RulesTable::default(),
        };
        Ok((table.canonical(self.base, Some(&dims.models))?, dims))
    }
}

/// The version label of the rules now in use; `previous`'s goes to 0.
fn record_loaded(rules: &Rules, previous: Option<&RulesVersion>) {
    if let Some(old) = previous.filter(|old| **old != rules.version) {
        metrics::gauge!("pipeline_rules_version", "version" => old.to_string()).set(0.0);
    }
    metrics::gauge!("pipeline_rules_version", "version" => rules.version.to_string()).set(1.0);
    metrics::gauge!("pipeline_rules_overridden_models").set(rules.by_model.overridden().len() as f64);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    metrics::gauge!("pipeline_rules_loaded_timestamp_seconds").set(now.as_secs_f64());
}

/// Polls the rules and swaps new versions in.
#[derive(Debug)]
pub struct Poller {
    /// Where everything is.
    source: Source,
    /// What is loaded and whether it is degraded.
    watch: Watch<Listed>,
    /// The version in use (the watch knows only what was listed).
    in_use: RulesVersion,
    /// The version the processor reads.
    current: Arc<ArcSwap<Rules>>,
    /// Where `rules_loaded` is reported.
    readiness: Readiness,
}

impl Poller {
    /// Loads the first version, retrying with backoff (1 s doubling to 30 s) while S3 or the
    /// dims are missing; an invalid table starts on the flags' rules, degraded. Ok(None) if
    /// `cancel` comes first; Err if S3 refuses for good.
    pub async fn start(
        source: Source,
        readiness: Readiness,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Option<Self>> {
        let mut backoff = Duration::from_secs(1);
        loop {
            let first = async {
                let (listed, listing) = source.list().await?;
                Ok::<_, LoadFailure>((listed, source.load(&listing).await))
            };
            let outcome = tokio::select! {
                outcome = first => outcome,
                () = cancel.cancelled() => return Ok(None),
            };
            let error = match outcome {
                Ok((listed, Ok((canonical, dims)))) => {
                    let rules = Rules::new(&canonical, &dims);
                    tracing::info!(version = %rules.version, overridden_models = rules.by_model.overridden().len(), "rules loaded");
                    return Ok(Some(Self::started(source, readiness, rules, |w| drop(w.loaded(listed)))));
                }
                Ok((listed, Err(invalid @ LoadFailure::Invalid(_)))) => {
                    let base = Canonical::of_base(source.base)?;
                    let rules = Rules::new(&base, &DimTables::default());
                    tracing::warn!(error = %invalid, version = %rules.version, "rules table refused: judging by the flags' thresholds meanwhile");
                    let reason = invalid.to_string();
                    let poller = Self::started(source, readiness, rules, |w| drop(w.load_failed(listed, &invalid)));
                    poller.readiness.degrade(READY_CHECK, &reason);
                    metrics::gauge!("pipeline_rules_degraded").set(1.0);
                    return Ok(Some(poller));
                }
                Ok((_, Err(e))) | Err(e) => e,
            };
            if error.needs_operator() {
                anyhow::bail!("reading the rules: {error}");
            }
            tracing::warn!(%error, retry_in = ?backoff, "rules not available yet");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => return Ok(None),
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    fn started(source: Source, readiness: Readiness, rules: Rules, first: impl FnOnce(&mut Watch<Listed>)) -> Self {
        record_loaded(&rules, None);
        metrics::gauge!("pipeline_rules_degraded").set(0.0);
        readiness.set(READY_CHECK, true);
        let mut watch = Watch::default();
        first(&mut watch);
        let in_use = rules.version.clone();
        Self { source, watch, in_use, current: Arc::new(ArcSwap::from_pointee(rules)), readiness }
    }

    /// The rules the processor reads.
    pub fn current(&self) -> Arc<ArcSwap<Rules>> {
        self.current.clone()
    }

    /// One poll: LIST; if the table or the dims changed, read, validate and swap in. Err when
    /// S3 refuses for good.
    async fn poll(&mut self) -> anyhow::Result<()> {
        let mut transient = false;
        let health = match self.source.list().await {
            Err(e) if e.needs_operator() => anyhow::bail!("listing the rules: {e}"),
            Err(e) => {
                transient = e.is_transient();
                self.watch.list_failed(e.to_string())
            }
            Ok((listed, listing)) => match self.watch.listed(&listed) {
                (Next::Keep, health) => health,
                (Next::Load, _) => match self.source.load(&listing).await {
                    Ok((canonical, dims)) => {
                        let rules = Rules::new(&canonical, &dims);
                        if rules.version != self.in_use {
                            tracing::info!(version = %rules.version, previous = %self.in_use, overridden_models = rules.by_model.overridden().len(), "rules changed");
                        }
                        record_loaded(&rules, Some(&self.in_use));
                        self.in_use = rules.version.clone();
                        self.current.store(Arc::new(rules));
                        self.watch.loaded(listed)
                    }
                    Err(e) if e.needs_operator() => anyhow::bail!("reading the rules: {e}"),
                    Err(e) => {
                        transient = e.is_transient();
                        self.watch.load_failed(listed, &e)
                    }
                },
            },
        };
        self.report(health, transient);
        Ok(())
    }

    /// Logs and exposes a health change once (see `enricher::dims`, which this mirrors).
    fn report(&self, health: Health, transient: bool) {
        let in_use = &self.in_use;
        let expose = |reason: &str| {
            if transient {
                self.readiness.fail(READY_CHECK, format!("{reason} (judging by rules {in_use} meanwhile)"));
            } else {
                self.readiness.degrade(READY_CHECK, reason);
            }
        };
        match health {
            Health::Same => {
                if let Some(reason) = self.watch.degraded() {
                    expose(reason);
                }
            }
            Health::Broke(reason) => {
                tracing::warn!(error = %reason, version = %in_use, "rules degraded: keeping the version in use");
                metrics::gauge!("pipeline_rules_degraded").set(1.0);
                expose(&reason);
            }
            Health::Recovered => {
                tracing::info!(version = %in_use, "rules readable again");
                metrics::gauge!("pipeline_rules_degraded").set(0.0);
                self.readiness.set(READY_CHECK, true);
            }
        }
    }

    /// Polls every `every` until `cancel`; when S3 refuses for good, cancels `cancel` itself
    /// (the service stops) and returns why.
    pub async fn run(mut self, every: Duration, cancel: CancellationToken) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = cancel.cancelled() => return Ok(()),
            }
            let started = Instant::now();
            let polled = tokio::select! {
                polled = self.poll() => polled,
                _ = cancel.cancelled() => return Ok(()),
            };
            metrics::histogram!("pipeline_rules_poll_seconds").record(started.elapsed().as_secs_f64());
            if let Err(e) = polled {
                cancel.cancel();
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn every_alert_of_a_version_carries_its_header_and_its_models_thresholds() {
        let dims = DimTables::seed(0, 1);
        let table = RulesTable::parse(br#"{"overrides": [{"brand": "Kia", "max_speed": 90}]}"#).unwrap();
        let canonical = table.canonical(AlertRules::default(), Some(&dims.models)).unwrap();
        let rules = Rules::new(&canonical, &dims);
        let h = rules.headers.clone();
        assert_eq!((h.count(), h.get(0).key), (1, HEADER));
        assert_eq!(h.get(0).value, Some(canonical.version.as_str().as_bytes()));
        assert_eq!(rules.by_model.for_model(Some(7)).max_speed, 90.0, "a Kia");
        assert_eq!(rules.by_model.for_model(Some(1)).max_speed, 120.0, "a Mazda");
    }
}
