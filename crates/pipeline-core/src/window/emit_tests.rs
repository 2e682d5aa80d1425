//! Rows of the windows: revisions, final flags, late-alert corrections, the checkpointed
//! bookkeeping, and a merge that does not depend on the order partials arrive in.

use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn config(delay_min: i64) -> WindowConfig {
    WindowConfig {
        size: chrono::Duration::minutes(15),
        watermark_delay: chrono::Duration::minutes(delay_min),
        idle_timeout: Duration::from_secs(30),
        colors: vec!["Black".into()],
    }
}

fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, h, m, 0).unwrap()
}

fn at(m: DateTime<Utc>) -> AlertPoint<'static> {
    AlertPoint { at: m, speed: 100.0, gear: 3, rpm: 6100, color: Some("Black") }
}

/// (start, rows, revision, final, watermark, late_alerts) of a row.
type Shown = (DateTime<Utc>, u64, u64, bool, Option<DateTime<Utc>>, u64);

fn shown(rows: &[Row]) -> Vec<Shown> {
    rows.iter()
        .map(|r| (r.stats.start, r.stats.rows, r.meta.revision, r.meta.is_final, r.meta.watermark, r.meta.late_alerts))
        .collect()
}

#[test]
fn revisions_count_published_values_and_the_close_is_final() {
    let mut w = Windows::new(config(30));
    let now = Instant::now();
    w.add(0, at(t(10, 1)), now);
    w.advance(now);
    assert_eq!(shown(&w.publish(true)), vec![(t(10, 0), 1, 1, false, Some(t(9, 31)), 0)]);
    assert!(w.publish(true).is_empty(), "nothing changed: nothing to publish");
    w.add(0, at(t(10, 2)), now);
    w.add(0, at(t(10, 3)), now);
    assert_eq!(shown(&w.publish(true)), vec![(t(10, 0), 3, 2, false, Some(t(9, 31)), 0)], "two alerts, one revision");
    // 10:45 moves the watermark to 10:15: the window closes, published at once as revision 3.
    w.add(0, at(t(10, 45)), now);
    assert_eq!(shown(&w.advance_rows(now)), vec![(t(10, 0), 3, 3, true, Some(t(10, 15)), 0)]);
    assert_eq!(shown(&w.publish(true)), vec![(t(10, 45), 1, 1, false, Some(t(10, 15)), 0)]);
    // A late alert: not counted, but the kept final row reports it (a correction, revision 4).
    assert_eq!(w.add(0, at(t(10, 14)), now), Placement::Late(t(10, 0)));
    assert_eq!(shown(&w.publish(false)), vec![(t(10, 0), 3, 4, true, Some(t(10, 15)), 1)]);
    assert!(w.publish(false).is_empty());
    // One more delay past its end (10:15 + 30 min), the final window is forgotten: a later
    // alert for it only counts as late.
    w.add(0, at(t(11, 30)), now);
    assert_eq!(shown(&w.advance_rows(now)), vec![(t(10, 45), 1, 2, true, Some(t(11, 0)), 0)]);
    assert_eq!(w.final_rows().map(|r| r.stats.start).collect::<Vec<_>>(), vec![t(10, 45)]);
    assert_eq!(w.add(0, at(t(10, 5)), now), Placement::Late(t(10, 0)));
    assert!(w.publish(false).is_empty());
    assert_eq!(w.late(), 2);
}

#[test]
fn final_mode_publishes_a_window_once_then_only_corrections() {
    let mut w = Windows::new(config(15));
    let now = Instant::now();
    for m in [1, 2, 20] {
        w.add(0, at(t(10, m)), now);
        w.advance(now);
    }
    assert!(w.publish(false).is_empty(), "open windows are not published");
    w.add(0, at(t(10, 31)), now);
    // Never published before: the final row is revision 1.
    assert_eq!(shown(&w.advance_rows(now)), vec![(t(10, 0), 2, 1, true, Some(t(10, 16)), 0)]);
    w.add(0, at(t(10, 3)), now);
    w.add(0, at(t(10, 4)), now);
    assert_eq!(shown(&w.publish(false)), vec![(t(10, 0), 2, 2, true, Some(t(10, 16)), 2)], "one correction");
    // A delay of 0 keeps nothing: the seed's behaviour, a late alert changes no row.
    let mut w = Windows::new(config(0));
    w.add(0, at(t(10, 1)), now);
    assert_eq!(shown(&w.advance_rows(now)), Vec::new());
    w.add(0, at(t(10, 20)), now);
    assert_eq!(shown(&w.advance_rows(now)), vec![(t(10, 0), 1, 1, true, Some(t(10, 20)), 0)]);
    w.add(0, at(t(10, 2)), now);
    assert!(w.publish(false).is_empty() && w.final_rows().next().is_none());
}

#[test]
fn a_restore_continues_the_revisions_and_republishes_unchanged_rows_at_theirs() {
    let now = Instant::now();
    let mut w = Windows::new(config(30));
    w.add(0, at(t(10, 1)), now);
    w.advance(now);
    w.publish(true);
    w.add(0, at(t(10, 50)), now); // closes 10:00 (revision 2), opens 10:45
    w.advance(now);
    w.add(0, at(t(10, 51)), now); // unpublished change of 10:45
    let json = serde_json::to_vec(&w.state()).unwrap();
    let mut r = Windows::restore(config(30), 0, serde_json::from_slice(&json).unwrap(), now);
    assert_eq!(r.state(), w.state());
    assert_eq!(shown(&r.publish(true)), vec![(t(10, 45), 2, 1, false, Some(t(10, 20)), 0)]);
    // Another restore of an already published window republishes it at the same revision.
    let mut again = Windows::restore(config(30), 0, r.state(), now);
    assert_eq!(shown(&again.publish(true)), vec![(t(10, 45), 2, 1, false, Some(t(10, 20)), 0)]);
    assert_eq!(again.add(0, at(t(10, 10)), now), Placement::Late(t(10, 0)));
    assert_eq!(shown(&again.publish(true)), vec![(t(10, 0), 1, 3, true, Some(t(10, 20)), 1)]);
}

#[test]
fn rows_serialize_after_the_seeds_columns_and_read_back() {
    let mut w = Windows::new(config(0));
    let now = Instant::now();
    w.add(0, at(t(10, 1)), now);
    w.add(0, at(t(10, 15)), now);
    let row = w.advance_rows(now).remove(0);
    let colors = w.config().colors.clone();
    let json = String::from_utf8(row.to_partial_json(&colors, 2, 7)).unwrap();
    assert_eq!(
        json,
        r#"{"window_start":"2026-05-01T10:00:00.000Z","window_end":"2026-05-01T10:15:00.000Z","num_of_rows":1,"num_of_black":1,"maximum_speed":100.0,"maximum_gear":3,"maximum_rpm":6100,"partition":2,"input_offset":7,"revision":1,"final":true,"watermark":"2026-05-01T10:15:00.000Z","late_alerts":0}"#
    );
    assert_eq!(Row::from_json(json.as_bytes(), &colors).unwrap(), (row.clone(), Some((2, 7))));
    // The seed's reader still reads it; a seed-only row reads as revision 0, open.
    assert_eq!(WindowStats::from_row(json.as_bytes(), &colors).unwrap(), (row.stats.clone(), Some((2, 7))));
    let old = row.stats.to_partial_json(&colors, 2, 7);
    assert_eq!(Row::from_json(&old, &colors).unwrap().0.meta, RowMeta::default());
}

fn row(start: DateTime<Utc>, rows: u64, revision: u64, is_final: bool, wm: DateTime<Utc>, late: u64) -> Row {
    let mut stats = WindowStats::new(start, chrono::Duration::minutes(15), 1);
    (stats.rows, stats.colors[0], stats.max_speed, stats.max_gear, stats.max_rpm) = (rows, rows, 100.0, 3, 6100);
    Row { stats, meta: RowMeta { revision, is_final, watermark: Some(wm), late_alerts: late } }
}

#[test]
fn whole_windows_sum_revisions_and_are_final_when_every_partial_is() {
    let mut m = PartialMerge::default();
    assert!(m.insert_row(0, 5, row(t(10, 0), 2, 2, true, t(10, 20), 1)));
    assert!(m.insert_row(1, 9, row(t(10, 0), 3, 1, false, t(10, 5), 0)));
    let merged = m.merged_rows(|_| false);
    assert_eq!(shown(&merged), vec![(t(10, 0), 5, 3, false, Some(t(10, 5)), 1)]);
    // Partition 1 closes on an idle tick: same input offset, a later revision wins.
    assert!(m.insert_row(1, 9, row(t(10, 0), 3, 2, true, t(10, 30), 0)));
    assert!(!m.insert_row(1, 9, row(t(10, 0), 3, 1, false, t(10, 5), 0)), "the earlier revision arrives late");
    assert_eq!(shown(&m.merged_rows(|_| false)), vec![(t(10, 0), 5, 4, true, Some(t(10, 20)), 1)]);
    assert_eq!(m.take_touched(|p| p == 0), [t(10, 0)].into());
    assert!(m.take_touched(|_| false).is_empty());
}

proptest! {
    /// Whatever order the partials (repeats and stale ones included) arrive in, the merged
    /// rows are the same.
    #[test]
    fn the_merge_does_not_depend_on_arrival_order(
        partials in proptest::collection::vec((0..3i32, 0..4i64, 1..4u64, any::<bool>(), 0..3u64, 0..2u32), 1..12),
        seed in any::<u64>(),
    ) {
        let rows: Vec<(i32, i64, Row)> = partials
            .iter()
            .map(|&(p, offset, revision, fin, late, w)| {
                (p, offset, row(t(10, 15 * w), offset as u64 + late, revision, fin, t(11, revision as u32), late))
            })
            .collect();
        let mut shuffled = rows.clone();
        // A deterministic shuffle from the seed.
        let mut state = seed;
        for i in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (state >> 33) as usize % (i + 1));
        }
        let (mut a, mut b) = (PartialMerge::default(), PartialMerge::default());
        for (p, o, r) in rows { a.insert_row(p, o, r); }
        for (p, o, r) in shuffled { b.insert_row(p, o, r); }
        prop_assert_eq!(a.merged_rows(|_| false), b.merged_rows(|_| false));
    }
}
