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
    /// It was written with other window settings.
    #[error(
        "checkpoint {url} was written with {detail}; start with the same settings, or with \
         --checkpoint-recovery replay to rebuild the windows from the earliest offset"
    )]
    Incompatible { url: String, detail: String },
    /// `previous` was asked for and there is none.
    #[error("no checkpoint before {url}; use --checkpoint-recovery replay to rebuild from the earliest offset")]
    NoPrevious { url: String },
    /// S3 failed.
    #[error(transparent)]
    S3(#[from] S3Error),
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

    async fn manifest(&self, partition: i32) -> Result<Manifest, CheckpointError> {
        let key = self.manifest_key(partition);
        match self.store.get(&key).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CheckpointError::Corrupt { url: self.store.url(&key), detail: e.to_string() }),
            Err(S3Error::NoSuchKey { .. }) => Ok(Manifest::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// The checkpoint `recovery` asks for, checked against `config`; None when there is none
    /// (or `replay`).
    pub async fn load(
        &self,
        partition: i32,
        recovery: Recovery,
        config: &WindowConfig,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let manifest = self.manifest(partition).await?;
        let key = match (recovery, manifest.checkpoints.as_slice()) {
            (Recovery::Replay, _) | (_, []) => return Ok(None),
            (Recovery::Latest, [newest, ..]) => newest,
            (Recovery::Previous, [_, previous, ..]) => previous,
            (Recovery::Previous, [newest]) => return Err(CheckpointError::NoPrevious { url: self.store.url(newest) }),
        };
        let url = self.store.url(key);
        let bytes = self.store.get(key).await.map_err(|e| match e {
            S3Error::NoSuchKey { .. } => CheckpointError::Corrupt { url: url.clone(), detail: "missing".into() },
            other => other.into(),
        })?;
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
            .map_err(|e| CheckpointError::Corrupt { url: url.clone(), detail: e.to_string() })?;
        if checkpoint.version != VERSION || checkpoint.partition != partition {
            let detail = format!("version {} for partition {}", checkpoint.version, checkpoint.partition);
            return Err(CheckpointError::Corrupt { url, detail });
        }
        let window_ms = config.size.num_milliseconds();
        if checkpoint.window_ms != window_ms || checkpoint.colors != config.colors {
            let detail = format!("--window {} ms and colors {:?}", checkpoint.window_ms, checkpoint.colors);
            return Err(CheckpointError::Incompatible { url, detail });
        }
        Ok(Some(checkpoint))
    }

    /// Writes `checkpoint`, makes it the newest and prunes the oldest.
    pub async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let partition = checkpoint.partition;
        let key = format!("{}/ckpt-{:020}.json", self.dir(partition), checkpoint.next_offset);
        let body = serde_json::to_vec(checkpoint).expect("a checkpoint serializes");
        self.store.put(&key, body).await?;
        let mut manifest = self.manifest(partition).await.unwrap_or_default();
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
            colors: config.colors.clone(),
            counted,
            state,
        }
    }
}
