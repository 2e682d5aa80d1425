//! The enricher's dimension tables: the version in use, its first load, and the poll that
//! notices a change (a LIST per table every `--dims-poll`, see `pipeline_s3::dims_watch`),
//! loads only then and swaps the new version in atomically between two events.
//!
//! A table that disappears or becomes unreadable leaves the version in use; the enricher logs
//! one line when that starts and one when it ends, and `/readyz` shows
//! `dims_loaded degraded: <reason>` meanwhile (still 200: the events keep flowing, joined with
//! the last good tables). While S3 itself is unreachable, stalled or busy (a transient error)
//! the check fails instead (503, the reason shown), the events still joined with the version in
//! use. S3 refusing for good (credentials, a missing bucket) stops the enricher with one line,
//! at the first load as on any later poll: it could never refresh the tables again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pipeline_core::join::{DimTables, JoinIndex};
use pipeline_kafka::observe::Readiness;
use pipeline_s3::dims_watch::{self, DimsVersion, HEADER, Health, Next, Watch, WatchError};
use pipeline_s3::store::ObjectStore;
use rdkafka::message::{Header, OwnedHeaders};
use tokio_util::sync::CancellationToken;

/// The readiness check the tables answer for.
pub const READY_CHECK: &str = "dims_loaded";

/// One version of the tables, as the hot path uses it; swapped whole.
#[derive(Debug)]
pub struct Dims {
    /// The join.
    pub index: JoinIndex,
    /// Which version this is (logs).
    pub version: DimsVersion,
    /// The `dims.version` header, built once per version. librdkafka takes ownership of each
    /// record's headers, so every record needs its own copy: cloning this one
    /// (`rd_kafka_headers_copy`) is that copy and nothing more — no formatting, no Rust-side
    /// allocation (see the `header_clone_cost` measurement below).
    pub headers: OwnedHeaders,
}

impl Dims {
    /// The join and header of `version`.
    pub fn new(tables: &DimTables, version: DimsVersion) -> Self {
        let headers = version_headers(&version);
        Self { index: JoinIndex::new(tables), version, headers }
    }
}

/// The headers every record of `version` carries: just `dims.version`.
fn version_headers(version: &DimsVersion) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header { key: HEADER, value: Some(version.as_str()) })
}

/// Row counts, load time and the version label of the tables now in use; `previous`'s label
/// goes to 0 (the metrics facade cannot remove a series).
fn record_loaded(tables: &DimTables, version: &DimsVersion, previous: Option<&DimsVersion>, took: Duration) {
    for (table, rows) in
        [("cars", tables.cars.len()), ("car_models", tables.models.len()), ("car_colors", tables.colors.len())]
    {
        metrics::gauge!("pipeline_dims_rows", "table" => table).set(rows as f64);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    metrics::gauge!("pipeline_dims_loaded_timestamp_seconds").set(now.as_secs_f64());
    metrics::histogram!("pipeline_dims_load_seconds").record(took.as_secs_f64());
    if let Some(old) = previous.filter(|old| *old != version) {
        metrics::gauge!("pipeline_dims_version", "version" => old.to_string()).set(0.0);
    }
    metrics::gauge!("pipeline_dims_version", "version" => version.to_string()).set(1.0);
}

/// Lists and loads one version (the objects listed, nothing else).
async fn fetch(store: &ObjectStore, prefix: &str) -> Result<(DimsVersion, DimTables, Duration), WatchError> {
    let listing = dims_watch::list(store, prefix).await?;
    let started = Instant::now();
    let tables = dims_watch::load(store, &listing).await?;
    Ok((listing.version(), tables, started.elapsed()))
}

/// Polls the tables and swaps new versions in.
#[derive(Debug)]
pub struct Poller {
    /// Where the tables are.
    store: ObjectStore,
    /// Their prefix.
    prefix: String,
    /// What is loaded and whether it is degraded.
    watch: Watch<DimsVersion>,
    /// The version the processor reads, swapped whole.
    current: Arc<ArcSwap<Dims>>,
    /// Where `dims_loaded` is reported.
    readiness: Readiness,
}

impl Poller {
    /// Loads the first version, retrying with backoff (1 s doubling to 30 s) while S3 or a
    /// table is missing; Ok(None) if `cancel` comes first, Err if S3 refuses for good.
    pub async fn start(
        store: ObjectStore,
        prefix: String,
        readiness: Readiness,
        cancel: &CancellationToken,
    ) -> Result<Option<Self>, WatchError> {
        let mut backoff = Duration::from_secs(1);
        loop {
            // A stop does not wait for a read S3 is slow to answer (nothing is loaded yet).
            let fetched = tokio::select! {
                fetched = fetch(&store, &prefix) => fetched,
                () = cancel.cancelled() => return Ok(None),
            };
            match fetched {
                Ok((version, tables, took)) => {
                    record_loaded(&tables, &version, None, took);
                    metrics::gauge!("pipeline_dims_degraded").set(0.0);
                    tracing::info!(
                        %version,
                        cars = tables.cars.len(),
                        models = tables.models.len(),
                        colors = tables.colors.len(),
                        "dimension tables loaded"
                    );
                    let mut watch = Watch::default();
                    watch.loaded(version.clone());
                    let current = Arc::new(ArcSwap::from_pointee(Dims::new(&tables, version)));
                    readiness.set(READY_CHECK, true);
                    return Ok(Some(Self { store, prefix, watch, current, readiness }));
                }
                Err(error) if error.needs_operator() => return Err(error),
                Err(error) => tracing::warn!(%error, retry_in = ?backoff, "dimension tables not available yet"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => return Ok(None),
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// The tables the processor reads.
    pub fn current(&self) -> Arc<ArcSwap<Dims>> {
        self.current.clone()
    }

    /// One poll: LIST; if the version changed, load it and swap it in. Err when S3 refuses
    /// for good ([`WatchError::needs_operator`]).
    pub async fn poll(&mut self) -> Result<(), WatchError> {
        let mut transient = false;
        let health = match dims_watch::list(&self.store, &self.prefix).await {
            Err(e) if e.needs_operator() => return Err(e),
            Err(e) => {
                transient = e.is_transient();
                self.watch.list_failed(e.to_string())
            }
            Ok(listing) => {
                let version = listing.version();
                match self.watch.listed(&version) {
                    (Next::Keep, health) => health,
                    (Next::Load, _) => {
                        let started = Instant::now();
                        match dims_watch::load(&self.store, &listing).await {
                            Ok(tables) => {
                                let previous = self.watch.version().cloned();
                                record_loaded(&tables, &version, previous.as_ref(), started.elapsed());
                                self.current.store(Arc::new(Dims::new(&tables, version.clone())));
                                tracing::info!(
                                    %version,
                                    previous = %previous.as_ref().map_or("none", DimsVersion::as_str),
                                    cars = tables.cars.len(),
                                    models = tables.models.len(),
                                    colors = tables.colors.len(),
                                    "dimension tables reloaded"
                                );
                                self.watch.loaded(version)
                            }
                            Err(e) if e.needs_operator() => return Err(e),
                            Err(e) => {
                                // Logged once below if it degrades the tables; a rewrite in
                                // progress (an object gone mid-read) is retried silently.
                                tracing::debug!(error = %e, %version, "reading the changed tables failed");
                                transient = e.is_transient();
                                self.watch.load_failed(version, &e)
                            }
                        }
                    }
                }
            }
        };
        self.report(health, transient);
        Ok(())
    }

    /// Logs and exposes a health change, once per change; while S3 itself is failing
    /// (`transient`) the check fails rather than only degrades.
    fn report(&self, health: Health, transient: bool) {
        let in_use = self.watch.version().map(DimsVersion::as_str).unwrap_or_default();
        let expose = |reason: &str| {
            if transient {
                self.readiness.fail(READY_CHECK, format!("{reason} (joining with version {in_use} meanwhile)"));
            } else {
                self.readiness.degrade(READY_CHECK, reason);
            }
        };
        match health {
            Health::Same => {
                // A degraded state's reason may have changed (another table, S3 down): keep
                // `/readyz` current without another log line.
                if let Some(reason) = self.watch.degraded() {
                    expose(reason);
                }
            }
            Health::Broke(reason) => {
                tracing::warn!(error = %reason, version = %in_use, "dimension tables degraded: keeping the ones in use");
                metrics::gauge!("pipeline_dims_degraded").set(1.0);
                expose(&reason);
            }
            Health::Recovered => {
                tracing::info!(version = %in_use, "dimension tables readable again");
                metrics::gauge!("pipeline_dims_degraded").set(0.0);
                self.readiness.set(READY_CHECK, true);
            }
        }
    }

    /// Polls every `every` until `cancel`; when S3 refuses for good, cancels `cancel` itself
    /// (the service stops) and returns why.
    pub async fn run(mut self, every: Duration, cancel: CancellationToken) -> Result<(), WatchError> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = cancel.cancelled() => return Ok(()),
            }
            let polled = tokio::select! {
                polled = self.poll() => polled,
                _ = cancel.cancelled() => return Ok(()),
            };
            if let Err(e) = polled {
                cancel.cancel();
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pipeline_s3::dims_watch::{Listing, TableListing};
    use rdkafka::message::Headers;

    use super::*;

    fn version(etag: &str) -> DimsVersion {
        let t = |table| TableListing { table, objects: vec![(format!("d/{table}/p0"), etag.to_owned())] };
        Listing { tables: [t("cars"), t("car_models"), t("car_colors")] }.version()
    }

    #[test]
    fn every_record_of_a_version_carries_its_header() {
        let v = version("e1");
        let dims = Dims::new(&DimTables::seed(3, 1), v.clone());
        let copy = dims.headers.clone();
        assert_eq!(copy.count(), 1);
        let h = copy.get(0);
        assert_eq!((h.key, h.value), (HEADER, Some(v.as_str().as_bytes())));
    }

    /// Per-record cost of the header: a clone of the prepared headers against building them
    /// for each record. `cargo test -p enricher --release -- --ignored --nocapture header_clone_cost`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn header_clone_cost() {
        const N: u32 = 1_000_000;
        let v = version("e1");
        let prepared = version_headers(&v);
        let started = Instant::now();
        for _ in 0..N {
            std::hint::black_box(prepared.clone());
        }
        let clone = started.elapsed() / N;
        let started = Instant::now();
        for _ in 0..N {
            std::hint::black_box(version_headers(std::hint::black_box(&v)));
        }
        let build = started.elapsed() / N;
        let started = Instant::now();
        for _ in 0..N {
            std::hint::black_box(
                OwnedHeaders::new().insert(Header { key: HEADER, value: Some(v.to_string().as_str()) }),
            );
        }
        let naive = started.elapsed() / N;
        eprintln!("dims.version header per record: clone {clone:?}, build {build:?}, naive build {naive:?}");
    }
}
