//! The seed's names and sizes, written once: every service's and `ops`'s flags default to these
//! (`default_value = defaults::ALERTS_TOPIC`), so a rename is one edit.

/// Raw sensor events (the generator's output, the enricher's input).
pub const SENSORS_TOPIC: &str = "sensors-sample";
/// Enriched events (the enricher's output, the detector's input).
pub const ENRICHED_TOPIC: &str = "samples-enriched";
/// Alerts (the detector's output, the counter's input).
pub const ALERTS_TOPIC: &str = "alert-data";
/// Per-window counts (the counter's output).
pub const COUNTS_TOPIC: &str = "alert-counts";
/// The counter's window size, as a flag spells it.
pub const WINDOW: &str = "15m";
