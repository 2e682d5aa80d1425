//! The vehicle-telemetry pipeline's domain, pure: no Kafka, no S3, no HTTP.
//!
//! The event schemas and their JSON wire form ([`schema`]), the alert rules, the operator's
//! rules table and `expected_gear` ([`rules`]), the seed's topic names and window ([`defaults`]), the dimension rows and the left join the enricher applies
//! ([`join`]), event-time windows with watermarks and the partial-merge readers use
//! ([`window`]), the seeded event generator ([`generate`]), and the bounds on log lines made
//! of input ([`log_limit`]). Every piece sits beside its
//! unit tests; the I/O lives in `pipeline-kafka` (the runtime) and `pipeline-s3` (object store,
//! Parquet tables), and each service owns its own state.

pub mod defaults;
pub mod generate;
pub mod join;
pub mod log_limit;
pub mod rules;
pub mod schema;
pub mod window;

/// Locks `m`, carrying on with the data if another thread panicked while holding it (every
/// mutex here guards plain state that stays consistent between statements).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
