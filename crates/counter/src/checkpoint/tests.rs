//! Checkpoint format compatibility: a checkpoint written before emit modes still restores.

use std::time::Instant;

use pipeline_core::window::{WindowConfig, Windows};

use super::{Checkpoint, mismatch};

/// A checkpoint as the counter wrote it before emit modes (revisions, kept final windows):
/// `serde_json::to_string` of `CheckpointStore::checkpoint("alert-data", 2, 42, …)` with two
/// live windows, 30 min watermark delay and the seed's colors.
const BEFORE_EMIT_MODES: &str = r#"{"version":1,"topic":"alert-data","partition":2,"next_offset":42,"written_at":"2026-05-01T12:00:00.123Z","window_ms":900000,"watermark_delay_ms":1800000,"colors":["Black","White","Silver"],"counted":9,"state":{"max_event_time":"2026-05-01T11:05:00.250Z","watermark":"2026-05-01T10:35:00.250Z","late":2,"windows":[{"start":"2026-05-01T10:45:00Z","end":"2026-05-01T11:00:00Z","rows":3,"colors":[1,0,1],"max_speed":150.5,"max_gear":6,"max_rpm":6500},{"start":"2026-05-01T11:00:00Z","end":"2026-05-01T11:15:00Z","rows":1,"colors":[0,1,0],"max_speed":121.0,"max_gear":3,"max_rpm":6100}]}}"#;

fn config() -> WindowConfig {
    WindowConfig {
        size: chrono::Duration::minutes(15),
        watermark_delay: chrono::Duration::minutes(30),
        idle_timeout: std::time::Duration::from_secs(30),
        colors: vec!["Black".into(), "White".into(), "Silver".into()],
    }
}

#[test]
fn a_checkpoint_from_before_emit_modes_restores_and_starts_revisions_at_1() {
    let c: Checkpoint = serde_json::from_str(BEFORE_EMIT_MODES).unwrap();
    assert_eq!(mismatch(&c, &config()), None);
    // The current format is the old one plus the two new fields, nothing renamed or moved.
    let mut now_written: serde_json::Value = serde_json::to_value(&c).unwrap();
    let state = now_written["state"].as_object_mut().unwrap();
    assert_eq!(
        (state.remove("finals"), state.remove("marks")),
        (Some(serde_json::json!([])), Some(serde_json::json!([])))
    );
    assert_eq!(now_written, serde_json::from_str::<serde_json::Value>(BEFORE_EMIT_MODES).unwrap());

    let mut w = Windows::restore(config(), 2, c.state, Instant::now());
    assert_eq!(w.late(), 2);
    let rows: Vec<(String, u64, u64, bool)> = w
        .publish(true)
        .iter()
        .map(|r| (r.stats.start.to_rfc3339(), r.stats.rows, r.meta.revision, r.meta.is_final))
        .collect();
    assert_eq!(
        rows,
        vec![("2026-05-01T10:45:00+00:00".into(), 3, 1, false), ("2026-05-01T11:00:00+00:00".into(), 1, 1, false)]
    );
    // Written again, it carries the revisions: a second restore republishes at revision 1.
    let again: Checkpoint =
        serde_json::from_slice(&serde_json::to_vec(&Checkpoint { state: w.state(), ..c_clone() }).unwrap()).unwrap();
    let mut w = Windows::restore(config(), 2, again.state, Instant::now());
    assert_eq!(w.publish(true).iter().map(|r| r.meta.revision).collect::<Vec<_>>(), vec![1, 1]);
}

fn c_clone() -> Checkpoint {
    serde_json::from_str(BEFORE_EMIT_MODES).unwrap()
}
