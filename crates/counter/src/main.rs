//! `counter`: counts the alerts of `alert-data` in event-time tumbling windows (15 minutes by
//! default) with a watermark (48 hours behind the largest event time, the seed's), and every
//! `--trigger` prints all live windows as the seed's table (complete mode) and publishes each
//! changed window as JSON to `alert-counts`: each input partition's share of the window, keyed
//! `<window start>/<partition>` (readers add the shares up).
//!
//! State and restarts: windows are kept per input partition, each with its own watermark, so a
//! partition's windows depend on its records alone. Every `--checkpoint-interval` (once every
//! output so far is acknowledged) and at shutdown, each changed partition's windows are written
//! to S3 with the offset they cover (`counter::checkpoint`), and that offset is then
//! committed to the consumer group, so lag tools see progress; the checkpoint is the truth. A
//! partition's new owner (after a restart, a crash or a rebalance) restores its newest
//! checkpoint and replays from the offset it names, rebuilding exactly the values it had. At a
//! rebalance the old owner writes the partitions it gives up first (within `--drain-timeout`:
//! `pipeline_kafka::runtime`'s hand-off), so their new owner replays nothing.
//! Without a checkpoint it replays the partition from the earliest offset. A checkpoint written
//! with another `--window`, `--watermark-delay` or `--colors` is refused with one line naming it;
//! `--checkpoint-recovery previous` skips the newest checkpoint of each partition and replays the
//! partitions that have no older one. Checkpoint writes and restores run beside the consumer's
//! polling (a snapshot is taken in the loop, the S3 calls are not), each S3 call bounded by
//! `--s3-timeout`: a stalled store costs no group membership. S3 errors that waiting may fix
//! (unreachable, stalled, 5xx, throttling) are retried with `/readyz` failing
//! `checkpoint_store`; the others (credentials, a missing bucket) stop the counter with one line.
//! A partition whose log is behind its checkpoint (the topic recreated) follows
//! `--below-checkpoint`.
//!
//! Idle partitions: a partition that has received nothing for `--idle-timeout` (processing time)
//! no longer holds back this instance's watermark: on every tick its windows advance to the
//! largest event time the slowest active partition has reached (minus the delay), so they close
//! without a record of its own; its next record makes it count again. With every partition idle
//! nothing moves (a stalled reader looks the same as a quiet topic). An active partition only
//! ever closes windows by its own records, so its partials stay a function of its input; an idle
//! one's closing depends on wall time and the other partitions (an alert arriving later for a
//! window closed that way is late).
//!
//! Scale-out: instances in one group split the partitions. Each publishes its partitions'
//! shares of a window ("partials", keyed `<window_start>/<partition>`, with `partition` and
//! `input_offset` fields); whoever reads `alert-counts` keeps, per (window, partition), the
//! partial covering the most input and adds the partitions up (`window::PartialMerge`). Every
//! instance reads the topic back so its table and dashboard show whole windows.
//!
//! Exactly-once: a partial is a pure function of (partition, input offset), and readers keep
//! the one with the largest offset, so a partial published twice (after a crash, by a former
//! owner) changes nothing: duplicates in `alert-counts` are harmless and it needs no
//! transaction. With `--guarantee exactly-once` the counter reads `read_committed` and never
//! counts an alert of an aborted transaction.
//!
//! With `--metrics-addr`, the same address serves a live dashboard at `/` (the window table and
//! a chart of alerts per window by color, refreshed every second; read-only) and its data at
//! `/api/windows`.
//!
//! Alerts for windows the watermark has already passed are late: counted, logged, and sent
//! unchanged to `--late-topic`; a final window still kept (one more watermark delay) has its row
//! published again with `late_alerts` raised. `--emit` (`counter::emit`) picks which rows a
//! trigger publishes and prints. Poison records go to the dead-letter topic like in every
//! service.
//!
//! Device clocks: an alert stamped more than `--max-clock-skew` (10 min) ahead of this
//! machine's clock is dead-lettered with how far ahead it was (`pipeline_clock_skew_alerts_total`
//! counts them), never counted: it would move its partition's watermark years ahead and make
//! every real alert late, and a checkpoint would keep it so. One stamped in the past (1970, the
//! year 1) is an ordinary alert: late when its window is final (the usual case), else counted in its
//! window, which the next watermark closes.

use pipeline_core::defaults;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use counter::checkpoint::{CheckpointStore, Recovery};
use counter::dashboard::{self, WindowsView};
use counter::emit::EmitMode;
use pipeline_core::window::{MAX_WINDOWS_KEPT, WindowConfig};
use pipeline_kafka::args::{ServiceArgs, positive_duration};
use pipeline_kafka::runtime;
use pipeline_s3::S3Args;
use pipeline_s3::store::ObjectStore;
use tokio_util::sync::CancellationToken;

use counter::peers;
use counter::processor::{Checkpoints, Counter, CounterSettings};

/// Counts alerts per event-time window, per input partition, with its state checkpointed in S3.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Kafka and runtime settings.
    #[command(flatten)]
    service: ServiceArgs,

    /// Where the checkpoints are kept (bucket and endpoint).
    #[command(flatten)]
    s3: S3Args,

    /// Topic of the alerts.
    #[arg(long, env = "ALERTS_TOPIC", default_value = defaults::ALERTS_TOPIC)]
    input_topic: String,

    /// Topic the partial window values are published to (key = `<window start>/<partition>`).
    #[arg(long, env = "COUNTS_TOPIC", default_value = defaults::COUNTS_TOPIC)]
    counts_topic: String,

    /// Topic late alerts are sent to.
    #[arg(long, env = "LATE_TOPIC", default_value = "alert-data.late")]
    late_topic: String,

    /// Window length.
    #[arg(long, env = "COUNTER_WINDOW", default_value = defaults::WINDOW, value_parser = positive_duration)]
    window: Duration,

    /// How far the watermark trails the largest event time seen.
    #[arg(long, env = "COUNTER_WATERMARK_DELAY", default_value = "48h", value_parser = humantime::parse_duration)]
    watermark_delay: Duration,

    /// A partition silent this long no longer holds the watermark back.
    #[arg(long, env = "COUNTER_IDLE_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    idle_timeout: Duration,

    /// How often the table is printed and changed windows are published.
    #[arg(long, env = "COUNTER_TRIGGER", default_value = "60s", value_parser = positive_duration)]
    trigger: Duration,

    /// Alerts stamped more than this ahead of this machine's clock are dead-lettered (to the
    /// input's dead-letter topic, with how far ahead they were): a device whose clock jumped
    /// years ahead would otherwise move its partition's watermark there and make every later
    /// alert late. Covers devices a few minutes fast and this host's own drift; keep it well
    /// below --watermark-delay.
    #[arg(long, env = "COUNTER_MAX_CLOCK_SKEW", default_value = "10m", value_parser = humantime::parse_duration)]
    max_clock_skew: Duration,

    /// Colors counted per window (one num_of_<color> column each), comma separated.
    #[arg(long, env = "COUNTER_COLORS", value_delimiter = ',', default_value = "Black,White,Silver")]
    colors: Vec<String>,

    /// How often the window state is checkpointed to S3 (0: never; every start then replays
    /// the whole input topic).
    #[arg(long, env = "CHECKPOINT_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    checkpoint_interval: Duration,

    /// Key prefix of the checkpoints in the bucket (below it: `<group>/<topic>/p<partition>/`).
    #[arg(long, env = "CHECKPOINT_PREFIX", default_value = "checkpoints/counter")]
    checkpoint_prefix: String,

    /// Which checkpoint this start restores: the newest, the one before it (when the newest is
    /// damaged; a partition with no older one is replayed), or none (replay the input from the
    /// earliest offset).
    #[arg(long, env = "CHECKPOINT_RECOVERY", value_enum, default_value_t)]
    checkpoint_recovery: Recovery,

    /// What to do when a partition's records arrive below the offset its checkpoint resumes
    /// from (the topic was recreated, or the broker lost records): `replay` forgets the
    /// checkpoint's windows and counts the log as it is now, `skip` takes those records as
    /// counted, `stop` exits with one line. Logged and counted
    /// (`pipeline_offsets_below_checkpoint_total`) whatever the choice.
    #[arg(long, env = "COUNTER_BELOW_CHECKPOINT", value_enum, default_value_t)]
    below_checkpoint: runtime::BelowCheckpoint,

    /// Which window rows a trigger emits: `complete` (the seed's: publishes changed windows,
    /// prints every live one), `updates` (prints only changed ones), `final` (a window once the
    /// watermark passes its end, again only as a late-alert correction). Rows carry `revision`,
    /// `final`, `watermark` and `late_alerts` in every mode.
    #[arg(long = "emit", env = "COUNTER_EMIT", value_enum, default_value_t)]
    emit: EmitMode,

    /// Don't print the table (publish only).
    #[arg(long, env = "COUNTER_QUIET")]
    quiet: bool,
}

async fn run(cli: Cli, cancel: CancellationToken) -> anyhow::Result<()> {
    let chrono =
        |d: Duration, flag: &str| chrono::Duration::from_std(d).with_context(|| format!("--{flag} is too large"));
    let kept = WindowConfig::windows_kept(cli.window, cli.watermark_delay);
    anyhow::ensure!(
        kept <= MAX_WINDOWS_KEPT,
        "--window {} with --watermark-delay {} keeps up to {kept} windows per input partition (at most {MAX_WINDOWS_KEPT}): \
         lengthen --window or shorten --watermark-delay",
        humantime::format_duration(cli.window),
        humantime::format_duration(cli.watermark_delay)
    );
    let config = WindowConfig {
        size: chrono(cli.window, "window")?,
        watermark_delay: chrono(cli.watermark_delay, "watermark-delay")?,
        idle_timeout: cli.idle_timeout,
        colors: cli.colors.iter().map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect(),
    };
    // Ticks drive the dashboard (every second at most) as well as the trigger.
    let tick = cli.trigger.min(Duration::from_secs(1));
    let mut runtime_config = runtime::RuntimeConfig::new(
        &cli.service,
        "counter",
        &cli.input_topic,
        runtime::OffsetCommits::Checkpointed,
        tick,
    )?;
    runtime_config.output_topics = vec![cli.counts_topic.clone(), cli.late_topic.clone()];
    runtime_config.below_checkpoint = cli.below_checkpoint;
    let checkpoints = if cli.checkpoint_interval.is_zero() {
        None
    } else {
        runtime_config.checkpoint_interval = Some(cli.checkpoint_interval);
        let store = ObjectStore::connect(&cli.s3).await;
        // A refused credential or a missing bucket is said now, in one line, and stops the start;
        // a store that is down or slow is waited for by the restores (not ready meanwhile).
        // A stop does not wait for a store that is slow to answer.
        let checked = tokio::select! {
            checked = store.check_bucket() => checked,
            () = cancel.cancelled() => return Ok(()),
        };
        match checked {
            Err(e) if !e.is_transient() => return Err(anyhow::Error::new(e).context("the checkpoint store")),
            _ => {}
        }
        let group = runtime_config.group_id().to_owned();
        let store = CheckpointStore::new(store, &cli.checkpoint_prefix, &group, &cli.input_topic);
        let readiness = runtime_config.readiness.clone();
        Some(Checkpoints { store, recovery: cli.checkpoint_recovery, readiness })
    };
    let (view, view_rx) = tokio::sync::watch::channel(Arc::new(WindowsView::default()));
    cli.service.observe_with(&runtime_config.readiness, dashboard::routes(view_rx), &cancel).await?;
    let processor = Counter::new(CounterSettings {
        config: config.clone(),
        input_topic: cli.input_topic.clone(),
        checkpoints,
        counts_topic: cli.counts_topic.clone(),
        late_topic: cli.late_topic.clone(),
        print: !cli.quiet,
        trigger: cli.trigger,
        view,
    })
    .with_emit(cli.emit)
    .with_max_clock_skew(chrono(cli.max_clock_skew, "max-clock-skew")?);
    let peers = tokio::spawn(peers::follow(
        cli.service.kafka.clone(),
        cli.counts_topic.clone(),
        cli.input_topic.clone(),
        config.size,
        chrono(cli.max_clock_skew, "max-clock-skew")?,
        config.colors.clone(),
        processor.peers.clone(),
        cancel.clone(),
    ));
    let result = runtime::run(&runtime_config, processor, cancel.clone()).await;
    cancel.cancel();
    match peers.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "reading the counts topic back failed"),
        Err(e) => tracing::warn!(error = %e, "the counts reader panicked"),
        Ok(Ok(())) => {}
    }
    result.map(drop).map_err(Into::into)
}

fn main() -> std::process::ExitCode {
    // The checkpoints need the bucket and endpoint, not the dimension tables' prefix.
    let command = Cli::command().mut_arg("dims_prefix", |a| a.hide(true));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let (log_format, drain_timeout) = (cli.service.log_format, cli.service.drain_timeout);
    pipeline_kafka::shutdown::service_main("counter", log_format, drain_timeout, |cancel| run(cli, cancel))
}
