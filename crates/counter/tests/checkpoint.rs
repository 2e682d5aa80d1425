//! Checkpoints in the real local S3: newest first, the oldest pruned, each recovery choice,
//! and a damaged or incompatible checkpoint refused with a message naming the object.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use chrono::TimeZone;
use counter::checkpoint::{CheckpointError, CheckpointStore, KEEP, Recovery};
use pipeline_core::window::{WindowConfig, WindowStats, WindowsState};
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
    WindowsState { max_event_time: Some(start), watermark: None, late: 2, windows: vec![w] }
}

#[tokio::test]
async fn newest_wins_old_ones_are_pruned_and_damage_is_named() {
    let (s3, store) = testkit::bucket("ckpt").await;
    let prefix = s3.dims_prefix.replace("/data/dims", "/checkpoints");
    let checkpoints = CheckpointStore::new(store.clone(), &prefix, "group-a", "alerts");
    let config = config();
    assert_eq!(checkpoints.load(1, Recovery::Latest, &config).await.unwrap(), None, "none yet");

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

    let latest = checkpoints.load(1, Recovery::Latest, &config).await.unwrap().unwrap();
    assert_eq!(latest, *saved.last().unwrap());
    let previous = checkpoints.load(1, Recovery::Previous, &config).await.unwrap().unwrap();
    assert_eq!(previous, saved[saved.len() - 2]);
    assert_eq!(checkpoints.load(1, Recovery::Replay, &config).await.unwrap(), None);
    assert_eq!(checkpoints.load(0, Recovery::Latest, &config).await.unwrap(), None, "partitions are apart");

    // Damage the newest: a clear error naming it; `previous` still works.
    store.put(want.last().unwrap(), b"{\"version\": 1, \"trunc".to_vec()).await.unwrap();
    let err = checkpoints.load(1, Recovery::Latest, &config).await.unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
    let text = err.to_string();
    let url = format!("s3://{}/{}", s3.s3_bucket, want.last().unwrap());
    assert!(text.starts_with(&format!("checkpoint {url} is unreadable (")), "{text}");
    assert!(text.contains("--checkpoint-recovery previous") && text.contains("replay"), "{text}");
    assert_eq!(checkpoints.load(1, Recovery::Previous, &config).await.unwrap().unwrap(), saved[saved.len() - 2]);

    // Other window settings than the checkpoint's: refused, naming it.
    let other = WindowConfig { size: chrono::Duration::minutes(5), ..config.clone() };
    let err = checkpoints.load(1, Recovery::Previous, &other).await.unwrap_err();
    assert!(matches!(err, CheckpointError::Incompatible { .. }), "{err}");
    assert!(err.to_string().contains("--window 900000 ms"), "{err}");

    // `previous` with a single checkpoint: nothing to fall back to.
    let single = CheckpointStore::new(store.clone(), &prefix, "group-b", "alerts");
    single.save(&saved[0]).await.unwrap();
    let err = single.load(1, Recovery::Previous, &config).await.unwrap_err();
    assert!(matches!(err, CheckpointError::NoPrevious { .. }), "{err}");
}
