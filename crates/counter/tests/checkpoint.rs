//! Checkpoints in the real local S3: newest first, the oldest pruned, each recovery choice,
//! and a damaged or incompatible checkpoint refused with a message naming the object.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use counter::checkpoint::{CheckpointError, CheckpointStore, KEEP, Recovery, ReplayReason, Restore};
use counter::dashboard::WindowsView;
use counter::processor::{Checkpoints, Counter, CounterSettings};
use pipeline_core::window::{WindowConfig, WindowStats, WindowsState};
use pipeline_kafka::runtime::{Processor, Resume};
use pipeline_s3::store::ObjectStore;
use pipeline_testkit as testkit;

fn config() -> WindowConfig {
    WindowConfig {
        size: chrono::Duration::minutes(15),
        watermark_delay: chrono::Duration::hours(48),
        idle_timeout: Duration::from_secs(30),
        colors: vec!["Black".into(), "White".into()],
    }
}

fn state(rows: u64) -> WindowsState {
    let start = chrono::Utc.with_ymd_and_hms(2026, 4, 1, 8, 0, 0).unwrap();
    let w = WindowStats {
        start,
        end: start + chrono::Duration::minutes(15),
        rows,
        colors: vec![1, 0],
        max_speed: 150.25,
        max_gear: 5,
        max_rpm: 6400,
    };
    WindowsState {
        max_event_time: Some(start),
        watermark: None,
        late: 2,
        windows: vec![w],
        finals: Vec::new(),
        marks: Vec::new(),
    }
}

#[tokio::test]
async fn newest_wins_old_ones_are_pruned_and_damage_is_named() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let (s3, store) = testkit::bucket("ckpt").await;
    let prefix = s3.dims_prefix.replace("/data/dims", "/checkpoints");
    let checkpoints = CheckpointStore::new(store.clone(), &prefix, "group-a", "alerts");
    let config = config();
    let none_yet = Restore::Replay(ReplayReason::NoCheckpoint);
    assert_eq!(checkpoints.load(1, Recovery::Latest, &config).await.unwrap(), none_yet, "none yet");

    let saved: Vec<_> = (1..=KEEP as i64 + 2)
        .map(|i| CheckpointStore::checkpoint("alerts", 1, i * 100, &config, i as u64, state(i as u64)))
        .collect();
    for c in &saved {
        checkpoints.save(c).await.unwrap();
    }
    let dir = format!("{prefix}/group-a/alerts/p1/");
    let mut keys = store.list(&dir).await.unwrap();
    keys.sort();
    let want: Vec<String> = (3..=KEEP as i64 + 2).map(|i| format!("{dir}ckpt-{:020}.json", i * 100)).collect();
    assert_eq!(keys, [vec![format!("{dir}MANIFEST.json")], want.clone()].concat(), "the newest {KEEP} are kept");

    let latest = checkpoints.load(1, Recovery::Latest, &config).await.unwrap();
    assert_eq!(latest, Restore::From(saved.last().unwrap().clone()));
    let previous = Restore::From(saved[saved.len() - 2].clone());
    assert_eq!(checkpoints.load(1, Recovery::Previous, &config).await.unwrap(), previous);
    let asked = Restore::Replay(ReplayReason::Asked);
    assert_eq!(checkpoints.load(1, Recovery::Replay, &config).await.unwrap(), asked);
    assert_eq!(checkpoints.load(0, Recovery::Latest, &config).await.unwrap(), none_yet, "partitions are apart");

    // Damage the newest: a clear error naming it; `previous` still works.
    store.put(want.last().unwrap(), b"{\"version\": 1, \"trunc".to_vec()).await.unwrap();
    let err = checkpoints.load(1, Recovery::Latest, &config).await.unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
    let text = err.to_string();
    let url = format!("s3://{}/{}", s3.s3_bucket, want.last().unwrap());
    assert!(text.starts_with(&format!("checkpoint {url} is unreadable (")), "{text}");
    assert!(text.contains("--checkpoint-recovery previous") && text.contains("replay"), "{text}");
    assert_eq!(checkpoints.load(1, Recovery::Previous, &config).await.unwrap(), previous);

    // Other window settings than the checkpoint's: refused, naming it.
    let other = WindowConfig { size: chrono::Duration::minutes(5), ..config.clone() };
    let err = checkpoints.load(1, Recovery::Previous, &other).await.unwrap_err();
    assert!(matches!(err, CheckpointError::Incompatible { .. }), "{err}");
    let url = format!("s3://{}/{}", s3.s3_bucket, want[want.len() - 2]);
    let text = err.to_string();
    assert!(text.starts_with(&format!("checkpoint {url} was written with --window 15m, ")), "{text}");
    assert!(text.contains("this counter runs with --window 5m;"), "{text}");

    // `previous` with a single checkpoint: that partition is replayed, saying which one it skipped.
    let single = CheckpointStore::new(store.clone(), &prefix, "group-b", "alerts");
    single.save(&saved[0]).await.unwrap();
    let url = format!("s3://{}/{prefix}/group-b/alerts/p1/ckpt-{:020}.json", s3.s3_bucket, 100);
    let replay = single.load(1, Recovery::Previous, &config).await.unwrap();
    assert_eq!(replay, Restore::Replay(ReplayReason::NoPrevious { url: url.clone() }));
    let Restore::Replay(reason) = replay else { unreachable!() };
    assert_eq!(
        reason.to_string(),
        format!(
            "--checkpoint-recovery previous: no checkpoint before {url}, replaying the partition from the earliest offset"
        )
    );
}

/// What the loop does for a newly assigned partition: restore it, then install it.
async fn resume(counter: &mut Counter, partition: i32) -> Resume {
    let restored = counter.restore(partition).await.expect("restored");
    counter.resumed(partition, restored)
}

/// A private checkpoint directory: the store, the bucket and the prefix.
async fn private(name: &str) -> (pipeline_s3::S3Args, ObjectStore, String) {
    let (s3, store) = testkit::bucket(name).await;
    let prefix = s3.dims_prefix.replace("/data/dims", "/checkpoints");
    (s3, store, prefix)
}

#[tokio::test]
async fn previous_falls_back_per_partition_and_replays_one_with_a_single_checkpoint() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let (_, store, prefix) = private("ckpt-prev").await;
    let checkpoints = CheckpointStore::new(store, &prefix, "group", "alerts");
    let config = config();
    // Partition 0 has an older checkpoint, partition 1 only its newest, partition 2 none.
    for (partition, offset) in [(0, 100), (0, 200), (1, 300)] {
        let c = CheckpointStore::checkpoint("alerts", partition, offset, &config, 1, state(1));
        checkpoints.save(&c).await.unwrap();
    }
    let (view, _) = tokio::sync::watch::channel(Arc::new(WindowsView::default()));
    let recovery = Recovery::Previous;
    let readiness = pipeline_kafka::observe::Readiness::default();
    let ckpts = Some(Checkpoints { store: checkpoints.clone(), recovery, readiness });
    let mut counter = Counter::new(CounterSettings {
        config,
        input_topic: "alerts".into(),
        checkpoints: ckpts,
        counts_topic: "counts".into(),
        late_topic: "late".into(),
        print: false,
        trigger: Duration::from_secs(60),
        view,
    });
    assert_eq!(resume(&mut counter, 0).await, Resume::At(100), "the one before the newest");
    assert_eq!(resume(&mut counter, 1).await, Resume::At(0), "no older one: replayed, the start goes on");
    assert_eq!(resume(&mut counter, 2).await, Resume::At(0), "none at all: replayed");
}

#[tokio::test]
async fn a_manifest_that_cannot_be_read_is_an_error_naming_it() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let (s3, store, prefix) = private("ckpt-manifest").await;
    let checkpoints = CheckpointStore::new(store.clone(), &prefix, "group", "alerts");
    let config = config();
    let older = CheckpointStore::checkpoint("alerts", 1, 100, &config, 1, state(1));
    checkpoints.save(&older).await.unwrap();
    let dir = format!("{prefix}/group/alerts/p1/");
    let manifest = format!("{dir}MANIFEST.json");
    let url = format!("s3://{}/{manifest}", s3.s3_bucket);

    // Unparsable: saving refuses rather than start a manifest that forgets the older checkpoint.
    store.put(&manifest, b"{\"checkpoints\": [".to_vec()).await.unwrap();
    let newer = CheckpointStore::checkpoint("alerts", 1, 200, &config, 2, state(2));
    let err = checkpoints.save(&newer).await.unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
    assert!(!err.to_string().contains('\n'), "one line: {err}");
    let mut keys = store.list(&dir).await.unwrap();
    keys.sort();
    assert_eq!(keys, vec![format!("{dir}MANIFEST.json"), format!("{dir}ckpt-{:020}.json", 100)], "nothing written");
    assert_eq!(store.get(&manifest).await.unwrap().as_ref(), b"{\"checkpoints\": [", "the manifest is left alone");
    let err = checkpoints.load(1, Recovery::Latest, &config).await.unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
    assert!(!err.to_string().contains("--checkpoint-recovery previous"), "previous needs the manifest too: {err}");

    // An S3 failure other than "not found" (here: no such bucket) is not "no checkpoint yet".
    let bucket = testkit::unique("no-such-bucket");
    let missing = CheckpointStore::new(ObjectStore::connect_bucket(&s3, &bucket).await, &prefix, "group", "alerts");
    let err = missing.load(1, Recovery::Latest, &config).await.unwrap_err();
    assert!(err.to_string().contains(&format!("s3://{bucket}/{manifest}")), "{err}");
    let err = missing.save(&newer).await.unwrap_err();
    assert!(err.to_string().contains(&format!("s3://{bucket}/{manifest}")), "{err}");
}

#[tokio::test]
async fn a_checkpoint_of_another_watermark_delay_is_refused_naming_both() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let (s3, store, prefix) = private("ckpt-delay").await;
    let checkpoints = CheckpointStore::new(store, &prefix, "group", "alerts");
    let config = config();
    checkpoints.save(&CheckpointStore::checkpoint("alerts", 0, 100, &config, 1, state(1))).await.unwrap();
    let other = WindowConfig { watermark_delay: chrono::Duration::hours(1), ..config.clone() };
    let err = checkpoints.load(0, Recovery::Latest, &other).await.unwrap_err();
    assert!(matches!(err, CheckpointError::Incompatible { .. }), "{err}");
    let text = err.to_string();
    let url = format!("s3://{}/{prefix}/group/alerts/p0/ckpt-{:020}.json", s3.s3_bucket, 100);
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("--watermark-delay 2days") && text.contains("--watermark-delay 1h"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(
        matches!(checkpoints.load(0, Recovery::Latest, &config).await.unwrap(), Restore::From(_)),
        "the same settings restore it"
    );
}
