//! Metrics (Prometheus text format) and health endpoints of a service.
//!
//! With `--metrics-addr` set, a service serves `GET /metrics`, `GET /healthz` (the loop keeps
//! turning, or has not started: [`crate::liveness`]) and `GET /readyz` (200 once every readiness check passed — broker reachable,
//! partitions assigned, dims loaded for the enricher — else 503 naming what is missing; a
//! degraded check still passes, its line saying why: `dims_loaded degraded: <reason>`).
//! Without it, the metric calls are no-ops and nothing listens.
//!
//! Metric names follow Prometheus conventions (`_total` counters, `_seconds` units), each
//! labelled with `service`; the per-partition gauges (`pipeline_consumer_lag`, time to drain,
//! event-time lag, stalled) are [`crate::partition_health`]'s, for owned partitions only;
//! `pipeline_kafka_requests_total` and `pipeline_kafka_broker_wakeups_total` (per client) come
//! from librdkafka's statistics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::liveness::LoopHeartbeat;
use crate::partition_health::PartitionHealth;

/// Observability set-up errors.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr} for metrics ({source}); choose another --metrics-addr / METRICS_ADDR")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// Another metrics recorder is already installed in this process.
    #[error("installing the metrics recorder failed: {0}")]
    Recorder(String),
}

/// Named readiness checks; ready when there is at least one and all pass (a degraded check
/// passes). It carries the loop's heartbeat too: the one handle a service passes to its loop
/// and to the server answers both `/readyz` and `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// Check name → its state.
    checks: Arc<Mutex<BTreeMap<&'static str, Check>>>,
    /// When the loop last turned (`/healthz`).
    pub heartbeat: LoopHeartbeat,
    /// The owned partitions' lag, time to drain, event-time lag and stalls (`/metrics`).
    pub partitions: PartitionHealth,
}

/// The state of one readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// Passing.
    Ok,
    /// Not passing yet (starting, or waiting for something that comes back by itself).
    Waiting,
    /// Failed for good, with the reason an operator reads on `/readyz` (the service is stopping).
    Failed(String),
    /// Passing, but running on something stale (the enricher's last good tables while the new
    /// ones cannot be read): ready, so traffic keeps flowing, with the reason on `/readyz`.
    Degraded(String),
}

impl Readiness {
    /// Registers a check as not passing yet.
    pub fn require(&self, check: &'static str) {
        self.lock().entry(check).or_insert(Check::Waiting);
    }

    /// Records the state of a check.
    pub fn set(&self, check: &'static str, passing: bool) {
        self.lock().insert(check, if passing { Check::Ok } else { Check::Waiting });
    }

    /// Marks a check failed for good, with the reason `/readyz` shows.
    pub fn fail(&self, check: &'static str, reason: impl Into<String>) {
        self.lock().insert(check, Check::Failed(reason.into()));
    }

    /// Marks a check degraded: it still passes (`/readyz` stays 200) and shows `reason`;
    /// [`Readiness::set`] with `true` clears it.
    pub fn degrade(&self, check: &'static str, reason: impl Into<String>) {
        self.lock().insert(check, Check::Degraded(reason.into()));
    }

    /// Removes a check (one that shows only while something is wrong).
    pub fn clear(&self, check: &'static str) {
        self.lock().remove(check);
    }

    /// Whether every check passes (degraded ones included).
    pub fn is_ready(&self) -> bool {
        let checks = self.lock();
        !checks.is_empty() && checks.values().all(|c| matches!(c, Check::Ok | Check::Degraded(_)))
    }

    /// One line per check: `name ok`, `name waiting`, `name degraded: reason` or
    /// `name failed: reason`.
    pub fn report(&self) -> String {
        self.lock()
            .iter()
            .map(|(name, check)| match check {
                Check::Ok => format!("{name} ok\n"),
                Check::Waiting => format!("{name} waiting\n"),
                Check::Failed(reason) => format!("{name} failed: {reason}\n"),
                Check::Degraded(reason) => format!("{name} degraded: {reason}\n"),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Check>> {
        pipeline_core::lock(&self.checks)
    }
}

/// Exports librdkafka's own counters from one client's statistics, summed over its brokers:
/// `pipeline_kafka_requests_total{service, client, request}` (requests sent, by type) and
/// `pipeline_kafka_broker_wakeups_total{service, client}` (broker-thread wake-ups). Wake-ups
/// climbing while requests stay flat is a broker thread polling without work, the cost
/// `PRODUCER_DEFAULTS` documents.
pub fn record_client_statistics(service: &str, client: &'static str, statistics: &rdkafka::Statistics) {
    let mut requests: BTreeMap<&str, i64> = BTreeMap::new();
    let mut wakeups = 0;
    for broker in statistics.brokers.values() {
        wakeups += broker.wakeups.unwrap_or(0);
        for (request, sent) in &broker.req {
            *requests.entry(request).or_default() += sent;
        }
    }
    let labels = [("service", service.to_owned()), ("client", client.to_owned())];
    metrics::counter!("pipeline_kafka_broker_wakeups_total", &labels).absolute(wakeups);
    for (request, sent) in requests.into_iter().filter(|(_, sent)| *sent > 0) {
        let labels = [("service", service.to_owned()), ("client", client.to_owned()), ("request", request.to_owned())];
        metrics::counter!("pipeline_kafka_requests_total", &labels).absolute(sent as u64);
    }
}

/// Processing-latency buckets (seconds): 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

fn recorder() -> Result<PrometheusHandle, ObserveError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .map_err(|e| ObserveError::Recorder(e.to_string()))?
        .install_recorder()
        .map_err(|e| ObserveError::Recorder(e.to_string()))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Installs the Prometheus recorder and serves the endpoints, plus the service's own `routes`
/// (the counter's dashboard), on `addr` until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    routes: Router,
    cancel: CancellationToken,
) -> Result<(), ObserveError> {
    let handle = recorder()?;
    let heartbeat = readiness.heartbeat.clone();
    let partitions = readiness.partitions.clone();
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ObserveError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                let mut body = handle.render();
                body.push_str(&partitions.render(tokio::time::Instant::now(), now_ms));
                std::future::ready(body)
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let (alive, line) = heartbeat.health();
                std::future::ready((if alive { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, line))
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let status = if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                std::future::ready((status, readiness.report()))
            }),
        )
        .merge(routes);
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes() {
        let r = Readiness::default();
        assert!(!r.is_ready(), "no checks: not ready");
        r.require("broker");
        r.require("partitions_assigned");
        r.set("broker", true);
        assert!(!r.is_ready());
        assert_eq!(r.report(), "broker ok\npartitions_assigned waiting\n");
        r.set("partitions_assigned", true);
        assert!(r.is_ready());
        r.fail("outputs", "topic `out` refused the records: authorization failed");
        assert!(!r.is_ready());
        assert_eq!(
            r.report(),
            "broker ok\noutputs failed: topic `out` refused the records: authorization failed\npartitions_assigned ok\n"
        );
    }

    #[test]
    fn a_degraded_check_stays_ready_and_says_why_until_cleared() {
        let r = Readiness::default();
        r.require("broker");
        r.require("dims_loaded");
        r.set("broker", true);
        r.set("dims_loaded", true);
        assert!(r.is_ready());
        r.degrade("dims_loaded", "table `cars` not found");
        assert!(r.is_ready(), "degraded is still ready");
        assert_eq!(r.report(), "broker ok\ndims_loaded degraded: table `cars` not found\n");
        r.set("dims_loaded", true);
        assert!(r.is_ready());
        assert_eq!(r.report(), "broker ok\ndims_loaded ok\n");
        r.degrade("dims_loaded", "again");
        r.fail("outputs", "refused");
        assert!(!r.is_ready(), "a failed check wins over a degraded one");
        r.set("broker", false);
        assert_eq!(r.report(), "broker waiting\ndims_loaded degraded: again\noutputs failed: refused\n");
    }
}
