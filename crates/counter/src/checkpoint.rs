//! The counter's checkpoints in S3: one input partition's window state together with the input
//! offset it covers.
//!
//! Layout, per consumer group, topic and partition, under a prefix (default
//! `checkpoints/counter`):
//!
//! ```text
//! <prefix>/<group>/<topic>/p<partition>/ckpt-<next offset, 20 digits>.json   one checkpoint
//! <prefix>/<group>/<topic>/p<partition>/MANIFEST.json                        newest first
//! ```
//!
//! A checkpoint object is written whole by one PUT (atomic in S3), then the manifest is
//! replaced to name it first; a crash between the two leaves the manifest on the previous
//! checkpoint, still valid. Only the newest [`KEEP`] are kept. Checkpoints are per partition
//! so that partitions can move between counter instances: whoever owns a partition restores
//! its checkpoint and replays its input from the offset it names.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use pipeline_core::window::{WindowConfig, WindowsState};
use pipeline_s3::store::{ObjectStore, S3Error};

/// How many checkpoints are kept per partition (the newest one and fallbacks).
pub const KEEP: usize = 3;

/// Checkpoint errors, each naming the object and the way out.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The object could not be read or parsed.
    #[error(
        "checkpoint {url} is unreadable ({detail}); restart with --checkpoint-recovery previous to use the one \
         before it, or --checkpoint-recovery replay to rebuild from the earliest offset"
    )]
    Corrupt { url: String, detail: String },
    /// The manifest is there but does not parse: the partition's checkpoints are unknown (an
    /// empty manifest in its place would orphan them), and `previous` needs it as well.
    #[error(
        "checkpoint manifest {url} is unreadable ({detail}); repair it ({{\"checkpoints\": [the ckpt-*.json keys \
         beside it, newest first]}}) or delete it to rebuild the partition from the earliest offset"
    )]
    BadManifest {
        /// The manifest.
        url: String,
        /// What the parser said.
        detail: String,
    },
    /// S3 failed on an object other than by "not found", which S3's own message may not name.
    #[error("reading {url} failed: {error}")]
    Read {
        /// The object.
        url: String,
        /// What S3 said (in the message, not a source: printed once).
        error: S3Error,
    },
    /// It was written with other window settings.
    #[error(
        "checkpoint {url} was written with {written}, this counter runs with {running}; start with the same \
         settings, or with --checkpoint-recovery replay to rebuild the windows from the earliest offset"
    )]
    Incompatible {
        /// The checkpoint.
        url: String,
        /// The checkpoint's settings that differ, as flags.
        written: String,
        /// The running counter's values of those settings, as flags.
        running: String,
    },
    /// S3 failed.
    #[error(transparent)]
    S3(#[from] S3Error),
}

impl CheckpointError {
    /// S3 is unreachable, stalled or busy ([`S3Error::is_transient`]): waiting may help, unlike
    /// every other error (refused credentials, a missing bucket, a damaged checkpoint).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::S3(e) | Self::Read { error: e, .. } if e.is_transient())
    }
}

/// Which checkpoint a starting counter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Recovery {
    /// The newest one (the normal case).
    #[default]
    Latest,
    /// The one before the newest (when the newest is damaged).
    Previous,
    /// None: replay the input from the earliest offset.
    Replay,
}

/// What a start restores for one partition.
#[derive(Debug, Clone, PartialEq)]
pub enum Restore {
    /// This checkpoint: its windows, and the offset reading resumes at.
    From(Checkpoint),
    /// Nothing: the partition is replayed from the earliest offset, for this reason.
    Replay(ReplayReason),
}

/// Why a partition is replayed from the earliest offset rather than restored: said in the one
/// line logged for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayReason {
    /// It has no checkpoint yet.
    NoCheckpoint,
    /// `--checkpoint-recovery replay`.
    Asked,
    /// `--checkpoint-recovery previous` skips the newest checkpoint, and this partition has no
    /// older one (only the one named): replaying it rather than failing the whole start.
    NoPrevious {
        /// Its only checkpoint, skipped.
        url: String,
    },
}

impl std::fmt::Display for ReplayReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoCheckpoint => f.write_str("no checkpoint: replaying the partition from the earliest offset"),
            Self::Asked => {
                f.write_str("--checkpoint-recovery replay: replaying the partition from the earliest offset")
            }
            Self::NoPrevious { url } => write!(
                f,
                "--checkpoint-recovery previous: no checkpoint before {url}, replaying the partition from the \
                 earliest offset"
            ),
        }
    }
}

/// One partition's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Input topic.
    pub topic: String,
    /// Input partition.
    pub partition: i32,
    /// The next offset to read: the state covers every record before it.
    pub next_offset: i64,
    /// When it was taken.
    pub written_at: DateTime<Utc>,
    /// Window length in milliseconds (must match the running counter's).
    pub window_ms: i64,
    /// Watermark delay in milliseconds (must match: the state's watermark and which windows are
    /// final follow from it). None in checkpoints written before it was recorded: not checked.
    #[serde(default)]
    pub watermark_delay_ms: Option<i64>,
    /// Counted colors, in column order (must match).
    pub colors: Vec<String>,
    /// Alerts counted in this partition so far.
    pub counted: u64,
    /// The windows.
    pub state: WindowsState,
}

const VERSION: u32 = 1;

/// The manifest: checkpoint keys, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    /// Keys of the kept checkpoints, newest first.
    checkpoints: Vec<String>,
}

/// Checkpoints of one consumer group's input topic.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    /// The bucket.
    store: ObjectStore,
    /// `<prefix>/<group>/<topic>`.
    base: String,
}

impl CheckpointStore {
    /// Checkpoints under `prefix` for `group` reading `topic`.
    pub fn new(store: ObjectStore, prefix: &str, group: &str, topic: &str) -> Self {
        Self { store, base: format!("{}/{group}/{topic}", prefix.trim_end_matches('/')) }
    }

    fn dir(&self, partition: i32) -> String {
        format!("{}/p{partition}", self.base)
    }

    fn manifest_key(&self, partition: i32) -> String {
        format!("{}/MANIFEST.json", self.dir(partition))
    }

    /// The partition's manifest; empty when there is none yet (a failed read or an unparsable
    /// one is an error naming it: taking it for empty would orphan its checkpoints).
    async fn manifest(&self, partition: i32) -> Result<Manifest, CheckpointError> {
        let key = self.manifest_key(partition);
        let url = || self.store.url(&key);
        match self.store.get(&key).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CheckpointError::BadManifest { url: url(), detail: e.to_string() }),
            Err(S3Error::NoSuchKey { .. }) => Ok(Manifest::default()),
            Err(error) => Err(CheckpointError::Read { url: url(), error }),
        }
    }

    /// What `recovery` restores for `partition`, checked against `config`.
    pub async fn load(
        &self,
        partition: i32,
        recovery: Recovery,
        config: &WindowConfig,
    ) -> Result<Restore, CheckpointError> {
        if recovery == Recovery::Replay {
            return Ok(Restore::Replay(ReplayReason::Asked));
        }
        let manifest = self.manifest(partition).await?;
        let key = match (recovery, manifest.checkpoints.as_slice()) {
            (_, []) => return Ok(Restore::Replay(ReplayReason::NoCheckpoint)),
            (Recovery::Previous, [_, previous, ..]) => previous,
            (Recovery::Previous, [newest]) => {
                return Ok(Restore::Replay(ReplayReason::NoPrevious { url: self.store.url(newest) }));
            }
            (_, [newest, ..]) => newest,
        };
        let url = self.store.url(key);
        let bytes = self.store.get(key).await.map_err(|e| match e {
            S3Error::NoSuchKey { .. } => CheckpointError::Corrupt { url: url.clone(), detail: "missing".into() },
            error => CheckpointError::Read { url: url.clone(), error },
        })?;
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
            .map_err(|e| CheckpointError::Corrupt { url: url.clone(), detail: e.to_string() })?;
        if checkpoint.version != VERSION || checkpoint.partition != partition {
            let detail = format!("version {} for partition {}", checkpoint.version, checkpoint.partition);
            return Err(CheckpointError::Corrupt { url, detail });
        }
        if let Some((written, running)) = mismatch(&checkpoint, config) {
            return Err(CheckpointError::Incompatible { url, written, running });
        }
        Ok(Restore::From(checkpoint))
    }

    /// Writes `checkpoint`, makes it the newest and prunes the oldest. The manifest is read
    /// first: if it cannot be, nothing is written.
    pub async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let partition = checkpoint.partition;
        let mut manifest = self.manifest(partition).await?;
        let key = format!("{}/ckpt-{:020}.json", self.dir(partition), checkpoint.next_offset);
        let body = serde_json::to_vec(checkpoint).expect("a checkpoint serializes");
        self.store.put(&key, body).await?;
        manifest.checkpoints.retain(|k| k != &key);
        manifest.checkpoints.insert(0, key);
        let pruned = manifest.checkpoints.split_off(manifest.checkpoints.len().min(KEEP));
        let body = serde_json::to_vec(&manifest).expect("a manifest serializes");
        self.store.put(&self.manifest_key(partition), body).await?;
        for old in pruned {
            if let Err(e) = self.store.delete(&old).await {
                tracing::warn!(key = %old, error = %e, "pruning an old checkpoint failed");
            }
        }
        Ok(())
    }

    /// `s3://bucket/<prefix>/<group>/<topic>/p<partition>/`, for messages.
    pub fn url(&self, partition: i32) -> String {
        self.store.url(&format!("{}/", self.dir(partition)))
    }

    /// Checkpoint a new checkpoint of `partition` covering everything before `next_offset`.
    pub fn checkpoint(
        topic: &str,
        partition: i32,
        next_offset: i64,
        config: &WindowConfig,
        counted: u64,
        state: WindowsState,
    ) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            topic: topic.to_owned(),
            partition,
            next_offset,
            written_at: Utc::now(),
            window_ms: config.size.num_milliseconds(),
            watermark_delay_ms: Some(config.watermark_delay.num_milliseconds()),
            colors: config.colors.clone(),
            counted,
            state,
        }
    }
}

/// The settings `checkpoint` was written with that differ from `config`, as flags: (the
/// checkpoint's, the running counter's); None when it fits.
fn mismatch(checkpoint: &Checkpoint, config: &WindowConfig) -> Option<(String, String)> {
    let (mut written, mut running) = (Vec::new(), Vec::new());
    let window_ms = config.size.num_milliseconds();
    if checkpoint.window_ms != window_ms {
        written.push(format!("--window {}", human(checkpoint.window_ms)));
        running.push(format!("--window {}", human(window_ms)));
    }
    let delay_ms = config.watermark_delay.num_milliseconds();
    if let Some(written_ms) = checkpoint.watermark_delay_ms.filter(|ms| *ms != delay_ms) {
        written.push(format!("--watermark-delay {}", human(written_ms)));
        running.push(format!("--watermark-delay {}", human(delay_ms)));
    }
    if checkpoint.colors != config.colors {
        written.push(format!("--colors {}", checkpoint.colors.join(",")));
        running.push(format!("--colors {}", config.colors.join(",")));
    }
    (!written.is_empty()).then(|| (written.join(" "), running.join(" ")))
}

/// `ms` as a duration flag's value (`15m`, `2days`).
fn human(ms: i64) -> String {
    u64::try_from(ms)
        .map(|ms| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string())
        .unwrap_or_else(|_| format!("{ms}ms"))
}

#[cfg(test)]
mod tests;
