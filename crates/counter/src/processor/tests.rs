//! The processor with injected processing time: idle partitions and dead-lettered inputs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use pipeline_core::schema::EnrichedEvent;
use pipeline_core::window::WindowConfig;
use pipeline_kafka::runtime::{InputMeta, Output, Processor, Resume};

use super::{Counter, CounterSettings};
use crate::dashboard::WindowsView;

/// 15-minute windows, no watermark delay, idle after 30 s; the trigger never fires by itself.
pub(super) fn counter() -> Counter {
    let config = WindowConfig {
        size: chrono::Duration::minutes(15),
        watermark_delay: chrono::Duration::zero(),
        idle_timeout: Duration::from_secs(30),
        colors: vec!["Black".into(), "White".into()],
    };
    let (view, _) = tokio::sync::watch::channel(Arc::new(WindowsView::default()));
    Counter::new(CounterSettings {
        config,
        input_topic: "alerts".into(),
        checkpoints: None,
        counts_topic: "counts".into(),
        late_topic: "late".into(),
        print: false,
        trigger: Duration::from_secs(3600),
        view,
    })
}

pub(super) fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, h, m, 0).unwrap()
}

pub(super) fn alert(at: DateTime<Utc>, speed: f64) -> EnrichedEvent<'static> {
    EnrichedEvent {
        event_id: uuid::Uuid::nil(),
        event_time: at,
        car_id: 7,
        speed,
        rpm: 6100,
        gear: 3,
        driver_id: None,
        brand_name: None,
        model_name: None,
        color_name: Some("Black".into()),
        expected_gear: 5,
        model_id: None,
    }
}

/// Feeds one alert of `partition` at `offset`, read at `now`; returns the outputs.
pub(super) fn feed(c: &mut Counter, partition: i32, offset: i64, at: DateTime<Utc>, now: Instant) -> Vec<Output> {
    let mut out = Vec::new();
    let meta = InputMeta { payload: b"{}", key: None, partition, offset };
    c.process_at(alert(at, 100.0 + offset as f64), meta, now, &mut out);
    out
}

pub(super) fn tick(c: &mut Counter, now: Instant) -> Vec<Output> {
    let mut out = Vec::new();
    c.tick_at(now, &mut out);
    out
}

/// (topic, key, payload) of each output, as text.
pub(super) fn shown(out: &[Output]) -> Vec<(String, String, String)> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    out.iter().map(|o| (o.topic.to_string(), text(o.key.as_deref().unwrap_or_default()), text(&o.payload))).collect()
}

/// A final row of one partition's share, revision 1 (never published before it closed), as
/// published when the watermark reached `watermark`.
#[allow(clippy::too_many_arguments)]
fn partial(
    start: &str,
    end: &str,
    rows: u64,
    speed: &str,
    partition: i32,
    input_offset: i64,
    watermark: &str,
) -> (String, String, String) {
    (
        "counts".into(),
        format!("{start}/{partition}"),
        format!(
            r#"{{"window_start":"{start}","window_end":"{end}","num_of_rows":{rows},"num_of_black":{rows},"num_of_white":0,"maximum_speed":{speed},"maximum_gear":3,"maximum_rpm":6100,"partition":{partition},"input_offset":{input_offset},"revision":1,"final":true,"watermark":"{watermark}","late_alerts":0}}"#
        ),
    )
}

pub(super) async fn owning(partitions: &[i32]) -> Counter {
    let mut c = counter();
    for p in partitions {
        let restored = c.restore(*p).await.unwrap();
        assert_eq!(c.resumed(*p, restored), Resume::At(0));
    }
    c
}

#[tokio::test]
async fn an_idle_partition_stops_holding_the_watermark_back_on_a_tick_and_counts_again_when_it_wakes() {
    let mut c = owning(&[0, 1]).await;
    let t0 = Instant::now();
    assert!(feed(&mut c, 0, 0, t(10, 1), t0).is_empty());
    assert!(feed(&mut c, 1, 0, t(10, 2), t0).is_empty());
    // Partition 1 moves on and closes its own 10:00 window; partition 0 goes quiet.
    let closed = feed(&mut c, 1, 1, t(11, 0), t0 + Duration::from_secs(1));
    let p1_first =
        partial("2026-05-01T10:00:00.000Z", "2026-05-01T10:15:00.000Z", 1, "100.0", 1, 2, "2026-05-01T11:00:00.000Z");
    assert_eq!(shown(&closed), vec![p1_first]);
    assert!(feed(&mut c, 1, 2, t(11, 5), t0 + Duration::from_secs(20)).is_empty());
    assert!(tick(&mut c, t0 + Duration::from_secs(29)).is_empty(), "partition 0 is not idle yet");
    assert_eq!(c.watermark(), Some(t(10, 1)), "partition 0 holds the watermark back");

    // 31 s without a record: partition 0 is idle; a tick alone closes its window by partition 1's progress.
    let closed = tick(&mut c, t0 + Duration::from_secs(31));
    let p0_first =
        partial("2026-05-01T10:00:00.000Z", "2026-05-01T10:15:00.000Z", 1, "100.0", 0, 1, "2026-05-01T11:05:00.000Z");
    assert_eq!(shown(&closed), vec![p0_first]);
    assert_eq!(c.watermark(), Some(t(11, 5)));
    assert!(c.parts[&0].dirty, "the closed window changes the partition's checkpoint");
    assert!(tick(&mut c, t0 + Duration::from_secs(32)).is_empty(), "a window is final once");

    // Partition 0 wakes up: its record counts (its window is open) and it holds the watermark back again.
    assert!(feed(&mut c, 0, 1, t(11, 2), t0 + Duration::from_secs(40)).is_empty());
    let closed = feed(&mut c, 1, 3, t(12, 0), t0 + Duration::from_secs(41));
    let p1_second =
        partial("2026-05-01T11:00:00.000Z", "2026-05-01T11:15:00.000Z", 2, "102.0", 1, 4, "2026-05-01T12:00:00.000Z");
    assert_eq!(shown(&closed), vec![p1_second]);
    assert!(tick(&mut c, t0 + Duration::from_secs(42)).is_empty(), "partition 0 is active again");
    assert_eq!(c.watermark(), Some(t(11, 5)), "partition 0 holds the watermark back again");
    assert_eq!(c.parts[&0].windows.live().map(|w| (w.start, w.rows)).collect::<Vec<_>>(), vec![(t(11, 0), 1)]);

    // Idle again: its window closes on a tick, with everything it counted.
    let closed = tick(&mut c, t0 + Duration::from_millis(70_500));
    let p0_second =
        partial("2026-05-01T11:00:00.000Z", "2026-05-01T11:15:00.000Z", 1, "101.0", 0, 2, "2026-05-01T12:00:00.000Z");
    assert_eq!(shown(&closed), vec![p0_second]);

    // A record for a window closed that way is late; with every partition idle nothing moves.
    let late = feed(&mut c, 0, 2, t(11, 50), t0 + Duration::from_secs(80));
    let late_record = ("late".to_owned(), String::new(), "{}".to_owned());
    assert_eq!(shown(&late), vec![late_record]);
    assert!(feed(&mut c, 0, 3, t(12, 10), t0 + Duration::from_secs(80)).is_empty());
    assert_eq!(shown(&feed(&mut c, 1, 4, t(13, 0), t0 + Duration::from_secs(81))).len(), 1, "p1's 12:00 window");
    assert!(tick(&mut c, t0 + Duration::from_secs(200)).is_empty(), "all idle: partition 0's 12:00 window stays open");
    assert_eq!(c.parts[&0].windows.live().map(|w| (w.start, w.rows)).collect::<Vec<_>>(), vec![(t(12, 0), 1)]);
}

#[tokio::test]
async fn dead_lettered_inputs_are_covered_by_the_partition_offset() {
    let mut c = owning(&[0, 1]).await;
    let now = Instant::now();
    feed(&mut c, 0, 0, t(10, 1), now);
    c.parts.get_mut(&0).unwrap().dirty = false; // as after a checkpoint
    c.on_dead_letter(0, 1);
    c.on_dead_letter(0, 2);
    assert_eq!((c.parts[&0].next_offset, c.parts[&0].dirty), (3, true), "the poison tail is covered");
    // A partition whose very first records are poison is covered too.
    c.on_dead_letter(1, 0);
    assert_eq!((c.parts[&1].next_offset, c.parts[&1].dirty), (1, true));
    // A dead letter never takes the offset back, nor touches a partition not owned.
    c.on_dead_letter(0, 0);
    assert_eq!(c.parts[&0].next_offset, 3);
    c.on_dead_letter(5, 9);
    assert!(!c.parts.contains_key(&5));
}

#[test]
fn an_alert_stamped_past_the_clock_skew_is_refused_saying_how_far_ahead() {
    let mut c = counter().with_max_clock_skew(chrono::Duration::minutes(10));
    let wall = t(12, 0);
    assert_eq!(c.admit_at(&alert(wall + chrono::Duration::minutes(10), 130.0), wall), Ok(()), "at the bound");
    assert_eq!(c.admit_at(&alert(wall - chrono::Duration::days(20_000), 130.0), wall), Ok(()), "the past is not skew");
    let ahead = Utc.with_ymd_and_hms(2036, 5, 1, 12, 0, 0).unwrap();
    let err = c.admit_at(&alert(ahead, 130.0), wall).unwrap_err();
    assert!(
        err.starts_with("event_time 2036-05-01T12:00:00.000Z is 10years 12h ahead of this counter's clock (2026-05-01T12:00:00.000Z), more than --max-clock-skew 10m"),
        "{err}"
    );
}

#[tokio::test]
async fn the_calendar_edges_go_through_admission_and_the_windows_without_a_panic() {
    // What a reset RTC, a GPS glitch or a hostile producer can stamp, between ordinary alerts
    // of one partition: the ordinary ones keep their windows exactly.
    let mut c = owning(&[0]).await.with_max_clock_skew(chrono::Duration::minutes(10));
    let now = Instant::now();
    let wall = t(12, 0);
    let edges = [
        DateTime::<Utc>::MIN_UTC,
        Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
        DateTime::<Utc>::UNIX_EPOCH,
        wall + chrono::Duration::days(3),
        Utc.with_ymd_and_hms(2036, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
        DateTime::<Utc>::MAX_UTC,
    ];
    let mut offset = 0;
    let mut refused = 0;
    for (i, edge) in edges.into_iter().enumerate() {
        offset += 1;
        feed(&mut c, 0, offset, t(11, 50) + chrono::Duration::seconds(i as i64), now);
        offset += 1;
        match c.admit_at(&alert(edge, 130.0), wall) {
            Ok(()) => drop(feed(&mut c, 0, offset, edge, now)),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(refused, 4, "3 days ahead, 2036, 9999 and chrono's last instant are refused");
    let rows: Vec<_> = c.merged(false).into_iter().map(|r| (r.stats.start, r.stats.rows)).collect();
    assert_eq!(rows, [(t(11, 45), 8)], "every ordinary alert counted in its window, nothing else live");
    assert_eq!(c.late(), 4, "the past ones are late: their windows are behind the watermark");
}
