//! Partial windows (one input partition's share each) merged into whole windows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::{Row, RowMeta, WindowStats};

/// Window values published per input partition, merged into whole windows.
///
/// Each partition's share of a window is a partial; of several values of one (window,
/// partition), the one covering the most input (largest `input_offset`) is kept, whatever order
/// they arrive in, so a replay after a crash or a stale value from a partition's previous owner
/// never takes a window back. Ties (the same input, e.g. a window closed by an idle tick) go to
/// the later revision, then to final, then to the larger values ([`Row::supersedes`]): the kept
/// partials, and so the merged rows, depend on the set of partials read, never on their order.
/// Whole windows are then the partials added up: the numbers one counter over every partition
/// gives, with the revisions summed ([`RowMeta::merge`]).
#[derive(Debug, Clone, Default)]
pub struct PartialMerge {
    /// (window start, partition) → (input offset covered, that partition's share).
    parts: BTreeMap<(DateTime<Utc>, i32), (i64, Row)>,
    /// (window, partition) whose kept partial changed since the last
    /// [`PartialMerge::take_touched`]: what an `updates` table shows of other counters' work.
    touched: BTreeSet<(DateTime<Utc>, i32)>,
}

impl PartialMerge {
    /// Records one partial without meta (a row of the seed's columns); returns whether it
    /// replaced what was known.
    pub fn insert(&mut self, partition: i32, input_offset: i64, stats: WindowStats) -> bool {
        self.insert_row(partition, input_offset, Row { stats, meta: RowMeta::default() })
    }

    /// Records one partial row; returns whether it replaced what was known.
    pub fn insert_row(&mut self, partition: i32, input_offset: i64, row: Row) -> bool {
        let start = row.stats.start;
        match self.parts.entry((start, partition)) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let (offset, known) = e.get();
                if !row.supersedes(input_offset, known, *offset) {
                    return false;
                }
                if known != &row {
                    self.touched.insert((start, partition));
                }
                e.insert((input_offset, row));
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                self.touched.insert((start, partition));
                e.insert((input_offset, row));
            }
        }
        true
    }

    /// Whole windows, oldest first; `skip` leaves some partitions out (ones the caller counts
    /// itself).
    pub fn merged(&self, skip: impl Fn(i32) -> bool) -> Vec<WindowStats> {
        self.merged_rows(skip).into_iter().map(|r| r.stats).collect()
    }

    /// [`PartialMerge::merged`] with the merged meta of each window.
    pub fn merged_rows(&self, skip: impl Fn(i32) -> bool) -> Vec<Row> {
        let kept = self.parts.iter().filter(|((_, p), _)| !skip(*p)).map(|(_, (_, row))| row.clone());
        merge_rows(Vec::new(), kept)
    }

    /// Windows whose kept partial of a partition not `skip`ped changed since the last call.
    pub fn take_touched(&mut self, skip: impl Fn(i32) -> bool) -> BTreeSet<DateTime<Utc>> {
        std::mem::take(&mut self.touched).into_iter().filter(|(_, p)| !skip(*p)).map(|(s, _)| s).collect()
    }

    /// Forgets windows that end at or before `horizon`.
    pub fn forget_before(&mut self, horizon: DateTime<Utc>) {
        self.parts.retain(|_, (_, row)| row.stats.end > horizon);
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

/// [`merge_windows`] of rows: values and meta ([`Row::merge`]).
pub fn merge_rows(into: Vec<Row>, more: impl IntoIterator<Item = Row>) -> Vec<Row> {
    let mut all: BTreeMap<DateTime<Utc>, Row> = into.into_iter().map(|r| (r.stats.start, r)).collect();
    for r in more {
        match all.entry(r.stats.start) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(&r),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(r);
            }
        }
    }
    all.into_values().collect()
}
