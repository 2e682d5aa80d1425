//! What the loops count: totals returned at shutdown and the Prometheus handles behind them.

/// Counts of what the loop did, returned at shutdown.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    /// Input records read.
    pub consumed: u64,
    /// Output records acknowledged (dead letters excluded).
    pub produced: u64,
    /// Inputs sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Deliveries that failed and were sent again.
    pub retried: u64,
}

/// The loop's metric handles, registered once (a no-op without `--metrics-addr`).
pub(super) struct LoopMetrics {
    pub(super) consumed: metrics::Counter,
    pub(super) produced: metrics::Counter,
    pub(super) dead_lettered: metrics::Counter,
    pub(super) retried: metrics::Counter,
    /// Read → last output acknowledged, per input.
    pub(super) latency: metrics::Histogram,
    /// Records that arrived below their partition's checkpoint (`super::BelowCheckpoint`).
    pub(super) below_checkpoint: metrics::Counter,
    /// Inputs read and not yet done (outputs unacknowledged, or behind one that is): reading
    /// pauses at `--max-in-flight`, so this at the limit with nothing consumed is backpressure.
    pub(super) inputs_in_flight: metrics::Gauge,
    /// Outputs handed to the producer and not yet acknowledged (resends waiting included).
    pub(super) outputs_in_flight: metrics::Gauge,
}

impl LoopMetrics {
    pub(super) fn new(service: &str) -> Self {
        let label = || [("service", service.to_owned())];
        Self {
            consumed: metrics::counter!("pipeline_records_consumed_total", &label()),
            produced: metrics::counter!("pipeline_records_produced_total", &label()),
            dead_lettered: metrics::counter!("pipeline_records_dead_lettered_total", &label()),
            retried: metrics::counter!("pipeline_produce_retries_total", &label()),
            latency: metrics::histogram!("pipeline_processing_seconds", &label()),
            below_checkpoint: metrics::counter!("pipeline_offsets_below_checkpoint_total", &label()),
            inputs_in_flight: metrics::gauge!("pipeline_inputs_in_flight", &label()),
            outputs_in_flight: metrics::gauge!("pipeline_outputs_in_flight", &label()),
        }
    }
}
