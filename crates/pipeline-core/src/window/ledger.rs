//! What one partition's windows need beyond their values to publish rows: each window's
//! revision, and the final windows kept for a while so that alerts arriving too late for them
//! can still be reported on their row (`late_alerts`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::WindowStats;

/// A window's publication state, checkpointed with it so that a restored partition continues
/// its revisions instead of starting them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    /// The window (its start).
    pub start: DateTime<Utc>,
    /// Revision of the last row published for it (0: none yet).
    pub revision: u64,
    /// Its value changed since that row: the next one published gets `revision + 1`.
    pub unpublished: bool,
}

/// A window the watermark has passed, kept after it left the live windows: a late alert for
/// it raises `late_alerts` and its row is published again as a correction.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FinalWindow {
    /// Its final values.
    pub stats: WindowStats,
    /// Alerts that came for it once it was final (sent to the late topic, not counted).
    pub late_alerts: u64,
}

/// Revisions of the live and final windows, and the final windows still kept.
#[derive(Debug, Clone, Default)]
pub(super) struct Ledger {
    /// Revision state by window start, for live and kept final windows alike.
    pub marks: BTreeMap<DateTime<Utc>, Mark>,
    /// Final windows kept for late-alert corrections, by start.
    pub finals: BTreeMap<DateTime<Utc>, FinalWindow>,
}

impl Ledger {
    /// The window's value changed (an alert, its closing, a late alert).
    pub fn touch(&mut self, start: DateTime<Utc>) {
        self.marks.entry(start).or_insert(Mark { start, revision: 0, unpublished: true }).unpublished = true;
    }

    /// The revision its current value has, or will have once published: the last published
    /// one, + 1 when it changed since.
    pub fn revision(&self, start: DateTime<Utc>) -> u64 {
        self.marks.get(&start).map_or(1, |m| m.revision + u64::from(m.unpublished))
    }

    /// Marks the current value published; returns its revision.
    pub fn publish(&mut self, start: DateTime<Utc>) -> u64 {
        let mark = self.marks.entry(start).or_insert(Mark { start, revision: 0, unpublished: true });
        if mark.unpublished {
            mark.revision += 1;
            mark.unpublished = false;
        }
        mark.revision
    }

    /// Whether the value changed since its last published row.
    pub fn unpublished(&self, start: DateTime<Utc>) -> bool {
        self.marks.get(&start).is_some_and(|m| m.unpublished)
    }

    /// A late alert for `start`: counted on its final row when it is still kept.
    pub fn late(&mut self, start: DateTime<Utc>) -> bool {
        let Some(f) = self.finals.get_mut(&start) else { return false };
        f.late_alerts += 1;
        self.touch(start);
        true
    }

    /// Forgets the final windows that end at or before `horizon`.
    pub fn forget_finals(&mut self, horizon: DateTime<Utc>) {
        while let Some(entry) = self.finals.first_entry() {
            if entry.get().stats.end > horizon {
                break;
            }
            self.marks.remove(entry.key());
            entry.remove();
        }
    }
}
