//! The emit modes through the processor: exact rows, revisions and `final` flags per mode,
//! with late alerts and an idle partition.

use std::time::{Duration, Instant};

use pipeline_kafka::runtime::{Output, Processor};

use super::tests::{feed, t, tick};
use super::{Counter, EmitMode};
use pipeline_core::window::WindowConfig;

/// 15-minute windows, watermark delay 30 min (final windows kept 30 min more), idle after 30 s.
async fn counter(mode: EmitMode) -> Counter {
    let mut c = super::tests::counter().with_emit(mode);
    c.config = WindowConfig { watermark_delay: chrono::Duration::minutes(30), ..c.config.clone() };
    for p in [0, 1] {
        let restored = c.restore(p).await.unwrap();
        c.resumed(p, restored);
    }
    c
}

/// (key, revision, final, num_of_rows, late_alerts, watermark) of each counts record; "late" for
/// a late-topic record.
fn rows(out: &[Output]) -> Vec<String> {
    out.iter()
        .map(|o| {
            if &*o.topic == "late" {
                return "late".to_owned();
            }
            let v: serde_json::Value = serde_json::from_slice(&o.payload).unwrap();
            let key = String::from_utf8_lossy(o.key.as_deref().unwrap());
            format!(
                "{} r{} {} n={} late={} wm={}",
                &key[11..16],
                v["revision"],
                if v["final"].as_bool().unwrap() { "final" } else { "open" },
                v["num_of_rows"],
                v["late_alerts"],
                &v["watermark"].as_str().unwrap()[11..16],
            ) + &key[key.len() - 2..]
        })
        .collect()
}

fn trigger(c: &mut Counter) -> Vec<Output> {
    let mut out = Vec::new();
    c.trigger_now(&mut out);
    out
}

/// The same input in every mode: partition 0 counts in 10:00, moves on and closes it by its own
/// watermark, gets a late alert; partition 1 counts in 10:00 and goes idle, a tick closes its
/// window by partition 0's progress, and it gets a late alert when it wakes.
async fn script(mode: EmitMode) -> Vec<Vec<String>> {
    let mut c = counter(mode).await;
    let t0 = Instant::now();
    let s = |secs| t0 + Duration::from_secs(secs);
    let mut steps = Vec::new();
    feed(&mut c, 0, 0, t(10, 1), s(0));
    feed(&mut c, 1, 0, t(10, 2), s(0));
    steps.push(rows(&trigger(&mut c)));
    feed(&mut c, 0, 1, t(10, 3), s(1));
    steps.push(rows(&trigger(&mut c)));
    steps.push(rows(&trigger(&mut c)));
    // 10:50 on partition 0: its own watermark (10:20) passes 10:15: its 10:00 share is final.
    steps.push(rows(&feed(&mut c, 0, 2, t(10, 50), s(2))));
    // Partition 1 idles: a tick closes its 10:00 share by partition 0's 10:50 (watermark 10:20).
    steps.push(rows(&tick(&mut c, s(31))));
    // 11:00: watermark 10:30, nothing closes; the final 10:00 is kept (until the watermark
    // passes 10:15 + 30 min).
    steps.push(rows(&feed(&mut c, 0, 3, t(11, 0), s(32))));
    // Late for 10:00 on both partitions: corrections at the next trigger.
    steps.push(rows(&feed(&mut c, 0, 4, t(10, 5), s(33))));
    steps.push(rows(&feed(&mut c, 1, 1, t(10, 6), s(33))));
    steps.push(rows(&trigger(&mut c)));
    steps
}

#[tokio::test]
async fn complete_publishes_changes_closes_and_corrections() {
    let want: Vec<Vec<&str>> = vec![
        vec!["10:00 r1 open n=1 late=0 wm=09:31/0", "10:00 r1 open n=1 late=0 wm=09:32/1"],
        vec!["10:00 r2 open n=2 late=0 wm=09:33/0"],
        vec![],
        vec!["10:00 r3 final n=2 late=0 wm=10:20/0"],
        vec!["10:00 r2 final n=1 late=0 wm=10:20/1"],
        vec![],
        vec!["late"],
        vec!["late"],
        vec![
            "10:00 r4 final n=2 late=1 wm=10:30/0",
            "10:45 r1 open n=1 late=0 wm=10:30/0",
            "11:00 r1 open n=1 late=0 wm=10:30/0",
            "10:00 r3 final n=1 late=1 wm=10:20/1",
        ],
    ];
    assert_eq!(script(EmitMode::Complete).await, want);
    assert_eq!(script(EmitMode::Updates).await, want, "updates publishes the same rows");
}

#[tokio::test]
async fn final_publishes_each_window_once_then_corrections() {
    let want: Vec<Vec<&str>> = vec![
        vec![],
        vec![],
        vec![],
        vec!["10:00 r1 final n=2 late=0 wm=10:20/0"],
        vec!["10:00 r1 final n=1 late=0 wm=10:20/1"],
        vec![],
        vec!["late"],
        vec!["late"],
        vec!["10:00 r2 final n=2 late=1 wm=10:30/0", "10:00 r2 final n=1 late=1 wm=10:20/1"],
    ];
    assert_eq!(script(EmitMode::Final).await, want);
}

#[tokio::test]
async fn the_table_and_dashboard_follow_the_mode() {
    for mode in [EmitMode::Complete, EmitMode::Updates, EmitMode::Final] {
        let mut c = counter(mode).await;
        let now = Instant::now();
        feed(&mut c, 0, 0, t(10, 1), now);
        feed(&mut c, 0, 1, t(10, 50), now); // watermark 10:20: 10:00 closes
        trigger(&mut c);
        let touched = [t(10, 0)].into();
        let table: Vec<(String, u64, bool)> = mode
            .table(|| c.merged(false), || c.merged(true), &touched)
            .iter()
            .map(|r| (r.stats.start.format("%H:%M").to_string(), r.meta.revision, r.meta.is_final))
            .collect();
        let dashboard: Vec<bool> =
            mode.dashboard(|| c.merged(false), || c.merged(true)).iter().map(|r| r.meta.is_final).collect();
        match mode {
            EmitMode::Complete => {
                assert_eq!(table, vec![("10:45".into(), 1, false)], "every live window");
                assert_eq!(dashboard, vec![false]);
            }
            EmitMode::Updates => assert_eq!(table, vec![("10:00".into(), 1, true)], "what changed"),
            EmitMode::Final => {
                assert_eq!(table, vec![("10:00".into(), 1, true)], "what became final");
                assert_eq!(dashboard, vec![true]);
            }
        }
    }
}
