#![allow(clippy::unwrap_used)]
use super::*;

fn lines(health: &PartitionHealth, now: Instant, name: &str) -> Vec<String> {
    health.render(now, 1_000_000).lines().filter(|l| l.starts_with(&format!("{name}{{"))).map(str::to_owned).collect()
}

#[tokio::test(start_paused = true)]
async fn time_to_drain_is_the_lag_over_the_recent_rate() {
    let health = PartitionHealth::default();
    let t0 = Instant::now();
    // 100 records a second consumed for 40 s, the high watermark 3 000 ahead throughout.
    for s in 0..=40 {
        let at = t0 + Duration::from_secs(s);
        health.observe("enricher", "in", 0, 3000 + 100 * s as i64, 100 * s as i64, at);
    }
    let now = t0 + Duration::from_secs(40);
    assert_eq!(
        lines(&health, now, "pipeline_consumer_lag"),
        ["pipeline_consumer_lag{service=\"enricher\",topic=\"in\",partition=\"0\"} 3000"]
    );
    assert_eq!(
        lines(&health, now, "pipeline_partition_time_to_drain_seconds"),
        ["pipeline_partition_time_to_drain_seconds{service=\"enricher\",topic=\"in\",partition=\"0\"} 30"]
    );
    assert!(health.stalled(now).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_partition_with_growing_lag_and_no_progress_is_stalled_after_the_limit_and_not_before() {
    let health = PartitionHealth::default();
    let t0 = Instant::now();
    health.observe("counter", "alerts", 3, 1000, 1000, t0);
    // Input keeps arriving; the position never moves.
    let mut now = t0;
    for s in (2..=58).step_by(2) {
        now = t0 + Duration::from_secs(s);
        health.observe("counter", "alerts", 3, 1000 + 10 * s as i64, 1000, now);
    }
    assert!(health.stalled(now).is_empty(), "58 s without progress is not yet stalled");
    now = t0 + Duration::from_secs(62);
    health.observe("counter", "alerts", 3, 1620, 1000, now);
    assert_eq!(health.stalled(now), ["partition 3 stalled: lag 620 growing, nothing consumed for 62 s"]);
    assert_eq!(
        lines(&health, now, "pipeline_partition_stalled"),
        ["pipeline_partition_stalled{service=\"counter\",topic=\"alerts\",partition=\"3\"} 1"]
    );
    assert_eq!(
        lines(&health, now, "pipeline_partition_time_to_drain_seconds"),
        ["pipeline_partition_time_to_drain_seconds{service=\"counter\",topic=\"alerts\",partition=\"3\"} +Inf"]
    );
    // One record consumed: no longer stalled.
    now += Duration::from_secs(2);
    health.observe("counter", "alerts", 3, 1640, 1001, now);
    assert!(health.stalled(now).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_idle_partition_without_lag_is_never_stalled() {
    let health = PartitionHealth::default();
    let t0 = Instant::now();
    health.observe("detector", "in", 1, 500, 500, t0);
    let later = t0 + STALL_AFTER * 5;
    health.observe("detector", "in", 1, 500, 500, later);
    assert!(health.stalled(later).is_empty());
    assert_eq!(
        lines(&health, later, "pipeline_partition_time_to_drain_seconds"),
        ["pipeline_partition_time_to_drain_seconds{service=\"detector\",topic=\"in\",partition=\"1\"} 0"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_revoked_partition_has_no_series_and_event_time_lag_is_per_partition() {
    let health = PartitionHealth::default();
    let now = Instant::now();
    for p in 0..3 {
        health.observe("enricher", "in", p, 10, 10, now);
    }
    health.event_time(0, 990_000);
    health.event_time(0, 980_000); // older: the newest stays
    health.event_time(7, 1); // not owned: ignored
    assert_eq!(
        lines(&health, now, "pipeline_partition_event_time_lag_seconds"),
        ["pipeline_partition_event_time_lag_seconds{service=\"enricher\",topic=\"in\",partition=\"0\"} 10"]
    );
    health.forget(&[0, 2]);
    assert_eq!(
        lines(&health, now, "pipeline_consumer_lag"),
        ["pipeline_consumer_lag{service=\"enricher\",topic=\"in\",partition=\"1\"} 0"]
    );
    assert!(lines(&health, now, "pipeline_partition_event_time_lag_seconds").is_empty());
}
