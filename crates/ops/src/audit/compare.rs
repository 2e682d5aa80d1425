//! What the reconciliation works on: the input events indexed by id, the audited range, what
//! the stages share (`Ctx`) and what each reports (`StageReport`); the event stages themselves
//! are `event_stage`, the windows `windows`.
//!
//! Events are compared by id (the uuid as a `u128`, never a string) and by decoded value, not
//! by bytes: a stage that adds a field or a header later stays comparable, and only the fields
//! the pipeline defines are checked.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use chrono::{DateTime, Utc};
use pipeline_core::join::JoinIndex;
use pipeline_core::schema::{JsonEvent, SensorEvent};
use serde::Serialize;
use uuid::Uuid;

use crate::rules::book::RulesBook;

/// Hashes a random (v4) uuid by folding its halves: the bits are random already, so SipHash's
/// cost per lookup (millions of them) buys nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for other key types; FNV-1a keeps it correct.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
    }
}

/// Event id → index into [`Inputs::events`].
type IdMap = HashMap<u128, u32, BuildHasherDefault<IdHasher>>;

/// The event-time range audited: `[from, to)`, each end optional. Event time, not record time:
/// it is copied unchanged through every stage, so an event is in or out of the range in all of
/// them alike, and it is what the windows are cut by.
#[derive(Debug, Clone, Copy, Default)]
pub struct Range {
    /// Inclusive start.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive end.
    pub to: Option<DateTime<Utc>>,
}

impl Range {
    /// Whether an event at `t` is audited.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e)
    }

    /// Whether a window lies wholly inside (a window cut by a bound is not compared: part of
    /// its alerts are outside the audited events).
    pub fn holds_window(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| start >= f) && self.to.is_none_or(|e| end <= e)
    }
}

/// One difference shown as an example (the counts cover all of them).
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// missing, duplicated, different, unexpected or invalid.
    pub kind: &'static str,
    /// The event concerned (event stages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// The window concerned (the windows stage), its start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_start: Option<String>,
    /// Where the record is: `partition/offset` (found records only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// What differs, in words.
    pub detail: String,
}

/// The reconciliation of one stage: counts by kind of difference and a few examples.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// enriched, alerts or windows.
    pub stage: &'static str,
    /// The topic read.
    pub topic: String,
    /// Records read from it (up to the high watermarks captured at start).
    pub records: u64,
    /// Events (windows) the recomputation expects in the range.
    pub expected: u64,
    /// Events (windows) found in the range, duplicates included.
    pub found: u64,
    /// Expected but not found.
    pub missing: u64,
    /// Event ids found more often than the input holds them (not counted for windows: a
    /// repeated partial is harmless by design).
    pub duplicated: u64,
    /// The copies beyond the expected ones, over all duplicated ids.
    pub extra_copies: u64,
    /// Found with another value than expected (counted once per id or window).
    pub different: u64,
    /// Found but not expected: an id absent from the input, an alert the rules do not raise.
    pub unexpected: u64,
    /// Records that do not decode (not counted in `found`).
    pub invalid: u64,
    /// Records (windows) outside the audited range, ignored.
    pub outside_range: u64,
    /// The first differences, up to --examples.
    pub examples: Vec<Example>,
}

impl StageReport {
    pub(super) fn new(stage: &'static str, topic: &str) -> Self {
        Self {
            stage,
            topic: topic.to_owned(),
            records: 0,
            expected: 0,
            found: 0,
            missing: 0,
            duplicated: 0,
            extra_copies: 0,
            different: 0,
            unexpected: 0,
            invalid: 0,
            outside_range: 0,
            examples: Vec::new(),
        }
    }

    /// Every difference of this stage.
    pub fn differences(&self) -> u64 {
        self.missing + self.duplicated + self.different + self.unexpected + self.invalid
    }

    pub(super) fn example(&mut self, limit: usize, e: Example) {
        if self.examples.len() < limit {
            self.examples.push(e);
        }
    }
}

/// One distinct input event.
#[derive(Debug, Clone)]
pub struct Input {
    /// The event (first copy).
    pub event: SensorEvent,
    /// How many records of the input carry its id: the faithful output repeats it as often.
    pub copies: u32,
    /// Whether the rules that judged it make it an alert: set by [`EventStage::judge`](super::event_stage::EventStage::judge) once the
    /// enriched events and the alerts are read (which version judged it is known only then).
    pub alert: bool,
}

/// What the comparisons share: the library code's configuration.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The dims, pre-joined (the enricher's own join).
    pub join: &'a JoinIndex,
    /// The rules versions alerts may name.
    pub rules: &'a RulesBook,
    /// The audited event times.
    pub range: Range,
    /// Largest record decoded.
    pub limit: usize,
    /// Examples kept per stage.
    pub examples: usize,
}

/// The input events in range, by id.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Distinct events in arrival order.
    pub events: Vec<Input>,
    /// Their index.
    index: IdMap,
    /// Records read.
    pub records: u64,
    /// Records that do not decode (the enricher dead-letters them: no output expected).
    pub invalid: u64,
    /// Records whose id was seen before.
    pub duplicated: u64,
    /// Records outside the range.
    pub outside_range: u64,
}

impl Inputs {
    /// Sized for `records` input records.
    pub fn with_capacity(records: usize) -> Self {
        Self {
            events: Vec::with_capacity(records),
            index: IdMap::with_capacity_and_hasher(records, Default::default()),
            ..Default::default()
        }
    }

    /// Takes in one input record.
    pub fn add(&mut self, ctx: &Ctx<'_>, value: Option<&[u8]>) {
        self.records += 1;
        let Ok(event) = SensorEvent::decode(value.unwrap_or_default(), ctx.limit) else {
            self.invalid += 1;
            return;
        };
        if !ctx.range.contains(event.event_time) {
            self.outside_range += 1;
            return;
        }
        let next = u32::try_from(self.events.len()).expect("fewer than 4 billion events");
        match self.index.entry(event.event_id.as_u128()) {
            std::collections::hash_map::Entry::Occupied(e) => {
                self.duplicated += 1;
                self.events[*e.get() as usize].copies += 1;
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(next);
                self.events.push(Input { event, copies: 1, alert: false });
            }
        }
    }

    /// The index of event `id`, if the input has it.
    pub(super) fn get(&self, id: Uuid) -> Option<usize> {
        self.index.get(&id.as_u128()).map(|&i| i as usize)
    }
}

#[cfg(test)]
mod tests {
    use pipeline_core::schema::event_time;

    use super::*;

    #[test]
    fn ranges_are_half_open() {
        let t = |s| event_time::parse(s).unwrap();
        let r = Range { from: Some(t("2026-01-01T00:00:00Z")), to: Some(t("2026-01-01T01:00:00Z")) };
        assert!(r.contains(t("2026-01-01T00:00:00Z")) && !r.contains(t("2026-01-01T01:00:00Z")));
        assert!(r.holds_window(t("2026-01-01T00:45:00Z"), t("2026-01-01T01:00:00Z")));
        assert!(!r.holds_window(t("2026-01-01T00:50:00Z"), t("2026-01-01T01:05:00Z")));
        assert!(Range::default().contains(t("1999-01-01T00:00:00Z")));
    }
}
