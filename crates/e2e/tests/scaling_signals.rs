//! The signals a scaler reads, on the real stack: each instance's per-partition series cover
//! exactly the partitions it owns, through a member joining and leaving (a gauge left behind
//! for a revoked partition shows an old owner lagging forever and double-counts lag: Vector
//! 21134), with time to drain and event-time lag beside the lag.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::check::*;
use e2e::{Pipeline, produce_raw};
use pipeline_core::schema::JsonEvent;

/// The partitions `addr`'s `/metrics` has a `family` series for (none while it does not answer
/// yet: a service serves its endpoints a moment after it starts).
fn partitions(addr: &str, family: &str) -> BTreeSet<u32> {
    let (code, body) = http_get(&format!("http://{addr}/metrics"));
    if code != 200 {
        return BTreeSet::new();
    }
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| l.split("partition=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect()
}

/// Waits (bounded) until `check` holds, naming `what` if it never does.
async fn until(what: &str, mut check: impl FnMut() -> bool, show: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what} ({})", show());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn per_partition_series_follow_the_partitions_each_instance_owns() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let p = Pipeline::new(3, 1901).await;
    let (a, b) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let first = p.enricher(&["--metrics-addr", &a]);
    let events = regenerate(&p, 19, 600, 1000).await;
    let records: Vec<_> = events.iter().map(|e| (Some(e.car_id.to_string().into_bytes()), e.encode())).collect();
    produce_raw(&p.sensors, &records).await;
    let all: BTreeSet<u32> = [0, 1, 2].into();
    until(
        "the first instance reports its three partitions",
        || partitions(&a, "pipeline_consumer_lag") == all,
        || format!("{:?}", partitions(&a, "pipeline_consumer_lag")),
    )
    .await;
    for family in [
        "pipeline_partition_time_to_drain_seconds",
        "pipeline_partition_event_time_lag_seconds",
        "pipeline_partition_stalled",
    ] {
        until(family, || partitions(&a, family) == all, || format!("{:?}", partitions(&a, family))).await;
    }

    // A second member joins: the partitions split, and each instance's series split with them.
    let second = p.enricher(&["--metrics-addr", &b]);
    until(
        "the two instances' series split the partitions",
        || {
            let (of_a, of_b) = (partitions(&a, "pipeline_consumer_lag"), partitions(&b, "pipeline_consumer_lag"));
            !of_a.is_empty() && !of_b.is_empty() && of_a.is_disjoint(&of_b) && &of_a | &of_b == all
        },
        || {
            format!(
                "first {:?}, second {:?}",
                partitions(&a, "pipeline_consumer_lag"),
                partitions(&b, "pipeline_consumer_lag")
            )
        },
    )
    .await;
    let of_a = partitions(&a, "pipeline_consumer_lag");
    assert!(of_a.len() < 3, "the first instance no longer reports the partitions it gave up: {of_a:?}");
    assert!(partitions(&a, "pipeline_partition_stalled").is_subset(&of_a));

    // It leaves (SIGTERM: drain, commit, leave): the first instance reports all three again.
    stop_all(vec![second]);
    until(
        "the first instance reports all three again",
        || partitions(&a, "pipeline_consumer_lag") == all,
        || format!("{:?}", partitions(&a, "pipeline_consumer_lag")),
    )
    .await;
    stop_all(vec![first]);
}
