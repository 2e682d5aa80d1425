//! The vehicle-telemetry pipeline's shared library.
//!
//! Pure logic (schemas, rules, joins, windows) sits beside its unit tests; the I/O pieces
//! (S3 object store, Parquet dimension tables, Kafka clients) return errors that name what
//! failed and what to do next. The four services (`generator`, `enricher`, `detector`,
//! `counter`) are thin binaries over this crate.

pub mod checkpoint;
pub mod config;
pub mod dashboard;
pub mod dims;
pub mod generate;
pub mod kafka;
pub mod observe;
pub mod rules;
pub mod runtime;
pub mod s3;
pub mod schema;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod window;

/// Locks `m`, carrying on with the data if another thread panicked while holding it (every
/// mutex here guards plain state that stays consistent between statements).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
