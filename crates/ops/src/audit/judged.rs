//! Which rules judged each event, when the rules changed during the audited range.
//!
//! An alert names its version (`rules.version` header) and is judged by it. An event with no
//! alert names nothing: it was judged by the version in use when the detector read it, which
//! the alerts around it tell. The detector reads an enriched partition in order and its alerts
//! keep the enriched key, so the alerts nearest before and after the event in its enriched
//! partition carry the versions in use just before and just after it. The event should have
//! been an alert if every one of those versions raises it (both, where they differ: the change
//! fell between them, and either is right); with no alert around it, the table in use now
//! judges.

use pipeline_core::rules::AlertRules;
use pipeline_core::rules::table::RulesVersion;
use rdkafka::message::{BorrowedHeaders, Headers};

/// The header naming an alert's rules version (the detector's `rules::HEADER`).
pub const HEADER: &str = "rules.version";

/// The version an alert record names: Ok(None) when it names none (a detector from before
/// versioned rules), Err with the text when it is not a version.
pub fn version(headers: Option<&BorrowedHeaders>) -> Result<Option<RulesVersion>, String> {
    let Some(value) = headers.and_then(|h| h.iter().find(|h| h.key == HEADER)).map(|h| h.value) else {
        return Ok(None);
    };
    let text = value.and_then(|v| std::str::from_utf8(v).ok()).unwrap_or_default();
    RulesVersion::parse(text).map(Some).ok_or_else(|| format!("{HEADER} header {text:?} is not a rules version"))
}

/// The tail of an alert record: its `alert_reasons` and the `thresholds` it was judged by
/// (None from a detector before they were written). Read from the canonical layout's tail
/// without a second parse of the event, by serde_json otherwise.
pub fn tail(value: &[u8]) -> Result<(Vec<&str>, Option<AlertRules>), String> {
    const KEY: &[u8] = b",\"alert_reasons\":[";
    let from = value.len().saturating_sub(192);
    if let Some(pos) = value[from..].windows(KEY.len()).position(|w| w == KEY) {
        let rest = &value[from + pos + KEY.len()..];
        if let Some(end) = rest.iter().position(|&b| b == b']')
            && let Ok(list) = std::str::from_utf8(&rest[..end])
            && !list.contains(['\\', ' '])
        {
            let after = &rest[end + 1..];
            let thresholds = match after {
                b"}" => Some(None),
                _ => after
                    .strip_prefix(b",\"thresholds\":")
                    .and_then(|t| t.strip_suffix(b"}"))
                    .and_then(|t| serde_json::from_slice::<AlertRules>(t).ok())
                    .map(Some),
            };
            if let Some(thresholds) = thresholds {
                let reasons = if list.is_empty() {
                    Vec::new()
                } else {
                    list.split(',')
                        .map(|s| s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s))
                        .collect()
                };
                return Ok((reasons, thresholds));
            }
        }
    }
    #[derive(serde::Deserialize)]
    struct Tail<'a> {
        #[serde(borrow)]
        alert_reasons: Vec<&'a str>,
        #[serde(default)]
        thresholds: Option<AlertRules>,
    }
    serde_json::from_slice::<Tail<'_>>(value).map(|t| (t.alert_reasons, t.thresholds)).map_err(|e| e.to_string())
}

/// The versions that may have judged each event, from where its enriched record is and which
/// versions the alerts around it name. `at[i]`: event i's first enriched (partition, offset);
/// `alert_version[i]`: the version index its first alert names. Returns per event the indexes
/// of the candidate versions: those of the nearest alerts before and after it in its enriched
/// partition, or `current` when there are none (or it has no enriched record).
pub fn candidates(at: &[Option<(i32, i64)>], alert_version: &[Option<u16>], current: u16) -> Vec<[u16; 2]> {
    let mut out = vec![[current, current]; at.len()];
    let mut order: Vec<(i32, i64, usize)> =
        at.iter().enumerate().filter_map(|(i, a)| a.map(|(p, o)| (p, o, i))).collect();
    order.sort_unstable();
    for part in order.chunk_by(|a, b| a.0 == b.0) {
        let mut before: Option<u16> = None;
        let mut befores = Vec::with_capacity(part.len());
        for &(_, _, i) in part {
            before = alert_version[i].or(before);
            befores.push(before);
        }
        let mut after: Option<u16> = None;
        for (k, &(_, _, i)) in part.iter().enumerate().rev() {
            after = alert_version[i].or(after);
            let (b, a) = (befores[k], after);
            out[i] = match (b, a) {
                (Some(b), Some(a)) => [b, a],
                (Some(v), None) | (None, Some(v)) => [v, v],
                (None, None) => [current, current],
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_reads_reasons_and_thresholds_fast_and_slow() {
        let new = br#"{"a":1,"alert_reasons":["speed","gear"],"thresholds":{"max_speed":90.0,"max_rpm":5500,"gear_rule":true}}"#;
        let (reasons, t) = tail(new).unwrap();
        assert_eq!(reasons, ["speed", "gear"]);
        assert_eq!(t, Some(AlertRules { max_speed: 90.0, max_rpm: 5500, gear_rule: true }));
        assert_eq!(tail(br#"{"a":1,"alert_reasons":[]}"#).unwrap(), (vec![], None));
        assert_eq!(tail(br#"{"alert_reasons": ["rpm"], "a": 1}"#).unwrap(), (vec!["rpm"], None));
        let spaced = br#"{"alert_reasons": ["rpm"], "thresholds": {"gear_rule": false, "max_rpm": 1, "max_speed": 2}}"#;
        assert_eq!(tail(spaced).unwrap().1, Some(AlertRules { max_speed: 2.0, max_rpm: 1, gear_rule: false }));
        assert!(tail(br#"{"a":1}"#).unwrap_err().contains("missing field"));
    }

    #[test]
    fn an_event_is_judged_by_the_versions_of_the_alerts_around_it() {
        // One partition, offsets 0..6: alerts at 1 (v0) and 4 (v1); the change fell between.
        let at: Vec<_> = (0..6).map(|o| Some((0, o))).collect();
        let versions = [None, Some(0), None, None, Some(1), None];
        let c = candidates(&at, &versions, 9);
        assert_eq!(c, [[0, 0], [0, 0], [0, 1], [0, 1], [1, 1], [1, 1]]);
        // Another partition without alerts, and an event never enriched: the table in use.
        let c = candidates(&[Some((1, 0)), None], &[None, None], 9);
        assert_eq!(c, [[9, 9], [9, 9]]);
    }
}
