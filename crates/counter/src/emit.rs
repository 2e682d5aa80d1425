//! Emit modes: which window rows a trigger publishes to the counts topic and prints, and which
//! the dashboard shows.
//!
//! In every mode a window's row is published the moment the watermark passes its end (`final`,
//! a new revision), and a kept final window whose `late_alerts` changed is published again at
//! the next trigger (a correction). The modes differ in the open windows:
//!
//! - `complete` (the seed's): each trigger publishes the open windows that changed and prints
//!   every live window; the dashboard shows every live window.
//! - `updates`: publishes the same rows; prints only the windows whose row changed since the
//!   last trigger (here or, read back, at another counter).
//! - `final`: open windows are never published; each trigger prints the windows that became
//!   final (or were corrected) since the last one; the dashboard shows the final windows.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use pipeline_core::window::Row;

/// What a trigger emits (`--emit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EmitMode {
    /// Every trigger every live window (the seed's output); changed ones are published.
    #[default]
    Complete,
    /// Only windows that changed since the last trigger.
    Updates,
    /// A window once when the watermark passes its end, again only as a correction.
    Final,
}

impl EmitMode {
    /// Whether open (not yet final) windows are published at a trigger.
    pub fn publishes_open(self) -> bool {
        self != Self::Final
    }

    /// The rows a trigger prints: `complete` every live window of `live` (the whole windows
    /// without this counter's kept finals, as the seed's table); otherwise those of `all` (with
    /// them) `touched` since the last trigger, in `final` mode only final ones.
    pub fn table(
        self,
        live: impl FnOnce() -> Vec<Row>,
        all: impl FnOnce() -> Vec<Row>,
        touched: &BTreeSet<DateTime<Utc>>,
    ) -> Vec<Row> {
        match self {
            Self::Complete => live(),
            Self::Updates => all().into_iter().filter(|r| touched.contains(&r.stats.start)).collect(),
            Self::Final => all().into_iter().filter(|r| r.meta.is_final && touched.contains(&r.stats.start)).collect(),
        }
    }

    /// The rows the dashboard shows: the live ones (as the seed's table) but in `final` mode,
    /// where it shows the final windows (all of `all` that are final).
    pub fn dashboard(self, live: impl FnOnce() -> Vec<Row>, all: impl FnOnce() -> Vec<Row>) -> Vec<Row> {
        match self {
            Self::Complete | Self::Updates => live(),
            Self::Final => all().into_iter().filter(|r| r.meta.is_final).collect(),
        }
    }
}
