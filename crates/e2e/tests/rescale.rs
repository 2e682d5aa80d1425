//! The rescaling drill, short (`scripts/rescale.sh` runs it in full): 4 partitions, a steady
//! 500 events/s, each of enricher, detector and counter scaled 1 → 2 → 1, restarted, and
//! SIGKILLed; then every stage must reconcile exactly with the input (`ops audit`: no event
//! missing or different, every window exact; duplicates are at-least-once's and allowed), no
//! partition may have stopped flowing, and no service may have exited by itself. The pauses
//! and duplicates per event are printed, not asserted: timing is the benchmark's business.

use std::time::Duration;

use e2e::rescale::{self, Assignment, Drill, Membership, Role};

#[tokio::test]
async fn scaling_restarting_and_killing_every_service_under_a_steady_stream_loses_nothing() {
    pipeline_testkit::needs_stack!(S3, BrokerBuilds);
    let drill = Drill {
        partitions: 4,
        rate: 500,
        cars: 200,
        seed: 1_920,
        membership: Membership::Dynamic,
        assignment: Assignment::Eager,
        roles: Role::ALL.to_vec(),
        scale: vec![2, 1],
        rolling: true,
        kill: true,
        settle_min: Duration::from_secs(2),
        settle_max: Duration::from_secs(60),
        baseline: Duration::from_secs(3),
    };
    let broker = rescale::own_broker().await;
    let outcome = rescale::run(&drill, broker.kafka(&[])).await;
    println!("{}", outcome.table(drill.rate));
    // Per service: two scale events, one rolling restart, one kill.
    assert_eq!(outcome.events.len(), 12, "{outcome:#?}");
    assert!(outcome.audit.clean(), "the audit found differences: {}", outcome.audit.json);
    let (expected, found) = outcome.audit.windows;
    assert!(expected > 0 && found == expected, "windows {found} of {expected}: {}", outcome.audit.json);
    assert!(outcome.audit.events >= 500, "the stream ran: {}", outcome.audit.events);
    assert_eq!(outcome.stalled, Vec::<String>::new(), "every partition flowed to the end");
    assert_eq!(outcome.exited, Vec::<String>::new(), "no service exited by itself");
    assert!(outcome.stop_codes.iter().all(|c| *c == Some(0)), "clean stops: {:?}", outcome.stop_codes);
    let unsettled: Vec<_> = outcome.events.iter().filter(|e| !e.settled).map(|e| (e.role, &e.what)).collect();
    assert!(unsettled.is_empty(), "every event caught up: {unsettled:?}\n{}", outcome.table(drill.rate));
}
