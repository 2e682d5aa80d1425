//! Partial windows (one input partition's share each) merged into whole windows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::WindowStats;

/// Window values published per input partition, merged into whole windows.
///
/// Each partition's share of a window is a partial; of several values of one (window,
/// partition), the one covering the most input (largest `input_offset`) is kept, whatever order
/// they arrive in, so a replay after a crash or a stale value from a partition's previous owner
/// never takes a window back. Whole windows are then the partials added up: the numbers one
/// counter over every partition gives.
#[derive(Debug, Clone, Default)]
pub struct PartialMerge {
    /// (window start, partition) → (input offset covered, that partition's share).
    parts: BTreeMap<(DateTime<Utc>, i32), (i64, WindowStats)>,
}

impl PartialMerge {
    /// Records one partial; returns whether it replaced what was known.
    pub fn insert(&mut self, partition: i32, input_offset: i64, stats: WindowStats) -> bool {
        match self.parts.entry((stats.start, partition)) {
            std::collections::btree_map::Entry::Occupied(mut e) if e.get().0 <= input_offset => {
                e.insert((input_offset, stats));
                true
            }
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert((input_offset, stats));
                true
            }
        }
    }

    /// Whole windows, oldest first; `skip` leaves some partitions out (ones the caller counts
    /// itself).
    pub fn merged(&self, skip: impl Fn(i32) -> bool) -> Vec<WindowStats> {
        let mut out: BTreeMap<DateTime<Utc>, WindowStats> = BTreeMap::new();
        for ((start, partition), (_, stats)) in &self.parts {
            if skip(*partition) {
                continue;
            }
            match out.entry(*start) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(stats),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(stats.clone());
                }
            }
        }
        out.into_values().collect()
    }

    /// Forgets windows that end at or before `horizon`.
    pub fn forget_before(&mut self, horizon: DateTime<Utc>) {
        self.parts.retain(|_, (_, stats)| stats.end > horizon);
    }
}

/// Adds `more` windows into `into` (both oldest first), window by window.
pub fn merge_windows(into: Vec<WindowStats>, more: impl IntoIterator<Item = WindowStats>) -> Vec<WindowStats> {
    let mut all: BTreeMap<DateTime<Utc>, WindowStats> = into.into_iter().map(|w| (w.start, w)).collect();
    for w in more {
        match all.entry(w.start) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(&w),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(w);
            }
        }
    }
    all.into_values().collect()
}
