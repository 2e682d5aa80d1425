//! The windows, the watermark and the partial merge, with synthetic processing instants.

use super::*;
use chrono::TimeZone;

fn config(delay_min: i64) -> WindowConfig {
    WindowConfig {
        size: chrono::Duration::minutes(15),
        watermark_delay: chrono::Duration::minutes(delay_min),
        idle_timeout: Duration::from_secs(30),
        colors: vec!["Black".into(), "White".into(), "Silver".into()],
    }
}

fn pt(at: DateTime<Utc>, speed: f64, gear: i32, rpm: i32, color: Option<&str>) -> AlertPoint<'_> {
    AlertPoint { at, speed, gear, rpm, color }
}

fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, h, m, s).unwrap()
}

#[test]
fn edges_belong_to_the_window_they_start() {
    let mut w = Windows::new(config(48 * 60));
    let now = Instant::now();
    assert_eq!(w.add(0, pt(t(10, 0, 0), 1.0, 1, 1, None), now), Placement::Counted(t(10, 0, 0)));
    assert_eq!(w.add(0, pt(t(10, 14, 59), 1.0, 1, 1, None), now), Placement::Counted(t(10, 0, 0)));
    assert_eq!(w.add(0, pt(t(10, 15, 0), 1.0, 1, 1, None), now), Placement::Counted(t(10, 15, 0)));
    let before = t(10, 0, 0) - chrono::Duration::milliseconds(1);
    assert_eq!(w.add(0, pt(before, 1.0, 1, 1, None), now), Placement::Counted(t(9, 45, 0)));
    let rows: Vec<_> = w.live().map(|s| (s.start, s.end, s.rows)).collect();
    assert_eq!(
        rows,
        vec![(t(9, 45, 0), t(10, 0, 0), 1), (t(10, 0, 0), t(10, 15, 0), 2), (t(10, 15, 0), t(10, 30, 0), 1)]
    );
}

#[test]
fn aggregates_count_colors_and_take_maxima() {
    let mut w = Windows::new(config(60));
    let now = Instant::now();
    w.add(0, pt(t(10, 1, 0), 130.5, 3, 2000, Some("Black")), now);
    w.add(1, pt(t(10, 2, 0), 90.0, 6, 6500, Some("white")), now);
    w.add(2, pt(t(10, 3, 0), 100.0, 2, 1000, Some("Red")), now);
    w.add(0, pt(t(10, 4, 0), 10.0, 1, 700, None), now);
    let s = w.live().next().unwrap();
    assert_eq!((s.rows, s.colors.clone(), s.max_speed, s.max_gear, s.max_rpm), (4, vec![1, 1, 0], 130.5, 6, 6500));
    let json = String::from_utf8(s.to_json(&w.config().colors)).unwrap();
    assert_eq!(
        json,
        r#"{"window_start":"2026-05-01T10:00:00.000Z","window_end":"2026-05-01T10:15:00.000Z","num_of_rows":4,"num_of_black":1,"num_of_white":1,"num_of_silver":0,"maximum_speed":130.5,"maximum_gear":6,"maximum_rpm":6500}"#
    );
}

#[test]
fn the_watermark_finalizes_windows_and_makes_later_alerts_late() {
    let mut w = Windows::new(config(0));
    let now = Instant::now();
    w.add(0, pt(t(10, 5, 0), 1.0, 1, 1, None), now);
    assert!(w.advance(now).is_empty(), "watermark 10:05 is inside the first window");
    w.add(0, pt(t(10, 15, 0), 1.0, 1, 1, None), now);
    let done = w.advance(now);
    assert_eq!(done.iter().map(|s| (s.start, s.rows)).collect::<Vec<_>>(), vec![(t(10, 0, 0), 1)]);
    assert_eq!(w.watermark(), Some(t(10, 15, 0)));
    assert_eq!(w.add(0, pt(t(10, 14, 59), 1.0, 1, 1, None), now), Placement::Late(t(10, 0, 0)));
    assert_eq!(w.add(0, pt(t(10, 15, 0), 1.0, 1, 1, None), now), Placement::Counted(t(10, 15, 0)));
    assert_eq!(w.late(), 1);
    assert_eq!(w.live().map(|s| s.rows).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn the_slowest_active_partition_holds_the_watermark_until_it_idles() {
    let mut w = Windows::new(config(0));
    let start = Instant::now();
    w.add(0, pt(t(10, 1, 0), 1.0, 1, 1, None), start);
    w.add(1, pt(t(11, 0, 0), 1.0, 1, 1, None), start);
    assert!(w.advance(start).is_empty());
    assert_eq!(w.watermark(), Some(t(10, 1, 0)), "partition 0 holds it back");
    // Partition 0 goes quiet; partition 1 keeps going.
    let later = start + Duration::from_secs(31);
    w.add(1, pt(t(11, 1, 0), 1.0, 1, 1, None), later);
    let done = w.advance(later);
    assert_eq!(w.watermark(), Some(t(11, 1, 0)));
    assert_eq!(done.iter().map(|s| s.start).collect::<Vec<_>>(), vec![t(10, 0, 0)]);
    // The watermark never goes back when partition 0 wakes up behind it.
    w.add(0, pt(t(10, 30, 0), 1.0, 1, 1, None), later);
    assert!(w.advance(later).is_empty());
    assert_eq!(w.watermark(), Some(t(11, 1, 0)));
}

#[test]
fn changed_windows_are_reported_once() {
    let mut w = Windows::new(config(60));
    let now = Instant::now();
    w.add(0, pt(t(10, 1, 0), 1.0, 1, 1, None), now);
    w.add(0, pt(t(10, 20, 0), 1.0, 1, 1, None), now);
    assert_eq!(w.take_changed().len(), 2);
    assert!(w.take_changed().is_empty());
    w.add(0, pt(t(10, 21, 0), 1.0, 1, 1, None), now);
    assert_eq!(w.take_changed().iter().map(|s| s.rows).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn partials_merge_into_what_one_counter_counts() {
    let (mut whole, mut p0, mut p1) = (Windows::new(config(60)), Windows::new(config(60)), Windows::new(config(60)));
    let now = Instant::now();
    let alerts = [
        (0, pt(t(10, 1, 0), 130.5, 3, 2000, Some("Black"))),
        (1, pt(t(10, 2, 0), 90.0, 6, 6500, Some("White"))),
        (1, pt(t(10, 20, 0), 150.0, 2, 1000, Some("Black"))),
        (0, pt(t(10, 4, 0), 10.0, 1, 700, None)),
    ];
    for (partition, a) in alerts {
        whole.add(partition, a, now);
        if partition == 0 { &mut p0 } else { &mut p1 }.add(partition, a, now);
    }
    let colors = whole.config().colors.clone();
    let mut merge = PartialMerge::default();
    // Published out of order: an older value of partition 0's window arrives last.
    let mut stale = p0.live().next().unwrap().clone();
    stale.rows = 1;
    for (partition, offset, w) in p0.live().map(|w| (0, 2, w)).chain(p1.live().map(|w| (1, 2, w))) {
        let (parsed, partial) = WindowStats::from_row(&w.to_partial_json(&colors, partition, offset), &colors).unwrap();
        assert_eq!((&parsed, partial), (w, Some((partition, offset))), "a partial row round-trips");
        assert!(merge.insert(partition, offset, parsed));
    }
    assert!(!merge.insert(0, 1, stale), "a value covering less input never wins");
    assert_eq!(merge.merged(|_| false), whole.live().cloned().collect::<Vec<_>>());
    let own = p1.live().cloned();
    assert_eq!(merge_windows(merge.merged(|p| p == 1), own), whole.live().cloned().collect::<Vec<_>>());
    merge.forget_before(t(10, 15, 0));
    assert_eq!(merge.merged(|_| false).iter().map(|w| w.start).collect::<Vec<_>>(), vec![t(10, 15, 0)]);
}

#[test]
fn a_restored_partition_continues_exactly() {
    let now = Instant::now();
    let (mut straight, mut before) = (Windows::new(config(30)), Windows::new(config(30)));
    let alerts: Vec<_> = (0..40)
        .map(|i| pt(t(10, 0, 0) + chrono::Duration::minutes(i * 3), 100.0 + i as f64, 2, 6100, Some("Black")))
        .collect();
    let mut late_one = alerts[2];
    late_one.at = t(10, 1, 0);
    let mut finals = (Vec::new(), Vec::new());
    for (i, a) in alerts.iter().chain([&late_one]).enumerate() {
        straight.add(0, *a, now);
        finals.0.extend(straight.advance(now));
        if i < 20 {
            before.add(0, *a, now);
            finals.1.extend(before.advance(now));
        }
    }
    let state = before.state();
    let json = serde_json::to_vec(&state).unwrap();
    let mut after = Windows::restore(config(30), 0, serde_json::from_slice(&json).unwrap(), now);
    assert_eq!(after.take_changed().len(), state.windows.len(), "restored windows are published again");
    for a in alerts[20..].iter().chain([&late_one]) {
        after.add(0, *a, now);
        finals.1.extend(after.advance(now));
    }
    assert_eq!(after.state(), straight.state());
    assert_eq!(finals.0, finals.1);
    assert_eq!(after.late(), 1);
}

#[test]
fn windows_kept_apart_share_idleness_through_their_frontier() {
    let shared = |a: &Windows, b: &Windows, now| frontier(a.progress(now).chain(b.progress(now)));
    let (mut p0, mut p1) = (Windows::new(config(0)), Windows::new(config(0)));
    let start = Instant::now();
    let secs = |s: u64| start + Duration::from_secs(s);
    p0.add(0, pt(t(10, 1, 0), 120.0, 4, 5000, Some("Silver")), start);
    p1.add(1, pt(t(10, 2, 0), 1.0, 1, 1, None), start);
    p1.add(1, pt(t(11, 5, 0), 1.0, 1, 1, None), secs(20));
    assert_eq!(p1.advance(secs(20)).iter().map(|w| w.start).collect::<Vec<_>>(), vec![t(10, 0, 0)]);
    assert_eq!(shared(&p0, &p1, secs(29)), Some(t(10, 1, 0)), "partition 0 holds it back until it idles");
    assert!(p0.advance_to(shared(&p0, &p1, secs(29))).is_empty());

    // Idle: no record needed, partition 1's progress closes partition 0's window.
    assert_eq!(shared(&p0, &p1, secs(30)), Some(t(11, 5, 0)));
    let done = p0.advance_to(shared(&p0, &p1, secs(30)));
    let whole = WindowStats {
        start: t(10, 0, 0),
        end: t(10, 15, 0),
        rows: 1,
        colors: vec![0, 0, 1],
        max_speed: 120.0,
        max_gear: 4,
        max_rpm: 5000,
    };
    assert_eq!(done, vec![whole]);
    assert_eq!(p0.watermark(), Some(t(11, 5, 0)));
    assert!(p0.take_changed().is_empty(), "a final window is not reported as changed");

    // Awake: its record counts in an open window and it holds the frontier back again; one for a
    // window the shared watermark passed is late.
    assert_eq!(p0.add(0, pt(t(11, 2, 0), 1.0, 1, 1, None), secs(40)), Placement::Counted(t(11, 0, 0)));
    assert_eq!(shared(&p0, &p1, secs(40)), Some(t(11, 2, 0)));
    assert!(p0.advance_to(shared(&p0, &p1, secs(40))).is_empty(), "the watermark never goes back");
    assert_eq!(p0.add(0, pt(t(10, 59, 0), 1.0, 1, 1, None), secs(41)), Placement::Late(t(10, 45, 0)));
    // Every partition idle: the largest event time of all.
    assert_eq!(shared(&p0, &p1, secs(100)), Some(t(11, 5, 0)));
    assert_eq!(frontier([]), None);
}

#[test]
fn the_windows_kept_are_bounded_by_window_and_delay() {
    let (min, hour) = (Duration::from_secs(60), Duration::from_secs(3600));
    assert_eq!(WindowConfig::windows_kept(15 * min, 48 * hour), 386, "the seed's");
    assert_eq!(WindowConfig::windows_kept(Duration::from_secs(1), 48 * hour), 345_602);
    assert_eq!(WindowConfig::windows_kept(15 * min, Duration::ZERO), 2);
    assert!(WindowConfig::windows_kept(Duration::from_nanos(1), Duration::MAX) == u64::MAX);
}
