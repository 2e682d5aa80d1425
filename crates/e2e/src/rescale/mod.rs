//! The rescaling drill: the pipeline under a steady stream while each consuming service is
//! scaled through a list of instance counts (1 → 4 → 2 → 1 by default), every instance is
//! restarted one by one (rolling), and one instance of each is SIGKILLed and started again; then
//! the stream stops, the stages drain, and `ops audit` reconciles every stage with the input.
//!
//! Events run one after another: each starts when the previous one has settled (its service's
//! output caught up: every partition wrote within the last 3 s and its newest record is less
//! than a second behind its event, nor was any of those 3 s), at least `settle_min` and at most
//! `settle_max` after it began.
//! Per event, read off that service's output topic ([`watch`]) over the time until the next
//! event: the longest gap of any partition (a pause: no output for it), the duplicates written,
//! and how long until the lag was back under a second for good. The same figures for a quiet
//! stretch before the first event say what a steady stream looks like.
//!
//! A rolling restart follows the orchestrator: with dynamic membership a Deployment's (the new
//! instance started and ready first, then the old one stopped), with static membership a
//! StatefulSet's (the instance stopped, then started under the same member id).

pub mod fleet;
mod report;
pub mod watch;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_kafka::args::KafkaArgs;

pub use fleet::{Assignment, Fleet, Membership, Role};
pub use report::{Audit, EventReport, Outcome};
use watch::{Series, Stage, Watch, now_ms};

use crate::{Pipeline, bin};

/// What the drill does.
#[derive(Debug, Clone)]
pub struct Drill {
    /// Partitions of every topic.
    pub partitions: i32,
    /// The generator's steady rate, events per second.
    pub rate: u32,
    /// Cars in the dims (the keys: enough to spread over every partition).
    pub cars: usize,
    /// Seed of the dims and the stream.
    pub seed: u64,
    /// How instances belong to their group.
    pub membership: Membership,
    /// The group protocol and assignor.
    pub assignment: Assignment,
    /// The services the events act on, in this order.
    pub roles: Vec<Role>,
    /// The instance counts each service is scaled to, one event each, from 1.
    pub scale: Vec<usize>,
    /// Restart every instance of each service one by one afterwards.
    pub rolling: bool,
    /// SIGKILL one instance of each service afterwards (and start it again).
    pub kill: bool,
    /// The least time an event is given.
    pub settle_min: Duration,
    /// The most time an event is given to settle.
    pub settle_max: Duration,
    /// The quiet stretch measured before the first event.
    pub baseline: Duration,
}

impl Drill {
    /// The drill of issue 19: 12 partitions, 20 000 events/s, 1 → 4 → 2 → 1, rolling, kill.
    pub fn full(membership: Membership, assignment: Assignment) -> Self {
        Self {
            partitions: 12,
            rate: 20_000,
            cars: 1_000,
            seed: 1_919,
            membership,
            assignment,
            roles: Role::ALL.to_vec(),
            scale: vec![4, 2, 1],
            rolling: true,
            kill: true,
            settle_min: Duration::from_secs(8),
            settle_max: Duration::from_secs(90),
            baseline: Duration::from_secs(10),
        }
    }
}

/// The stage whose output shows a service.
fn stage(role: Role) -> Stage {
    match role {
        Role::Enricher => Stage::Enriched,
        Role::Detector => Stage::Alerts,
        Role::Counter => Stage::Counts,
    }
}

/// One event's action.
enum Action {
    /// To this many instances.
    Scale(usize),
    /// The instance in this slot, restarted.
    Restart(usize),
    /// The instance in this slot, SIGKILLed and started again.
    Kill(usize),
}

/// A broker of the drill's own: Nisshi keeping its logs in memory. On the shared stack's Nisshi
/// every small batch is an object in the local S3, and SeaweedFS then takes most of this
/// machine's two cores at 2 000 events/s (the lag drifted from 0.2 s to 2 s in two minutes with
/// no event at all); the drill measures the services' rebalancing, not the broker's storage.
pub async fn own_broker() -> pipeline_testkit::OwnBroker {
    let port = pipeline_testkit::free_port();
    let broker = pipeline_testkit::OwnBroker::start(port, "memory://rescale/", &std::env::temp_dir(), &[]).await;
    pipeline_kafka::client::check_cluster(&broker.kafka(&[]), None).await.expect("the drill's broker answers");
    broker
}

/// Whether `kafka`'s broker serves the KIP-848 consumer protocol (`group.protocol=consumer`):
/// a consumer of a fresh topic must get its partition within 20 s. Err says what happened
/// instead (librdkafka's own words where it has some).
pub async fn consumer_protocol(kafka: &KafkaArgs) -> Result<(), String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = pipeline_testkit::topic_on(kafka, "kip848", 1).await;
    let group = pipeline_testkit::unique("kip848");
    let consumer: BaseConsumer = kafka
        .client_config(&[("group.id", group.as_str()), ("group.protocol", "consumer")])
        .create()
        .map_err(|e| format!("librdkafka refused the consumer: {e}"))?;
    consumer.subscribe(&[&topic]).map_err(|e| format!("subscribe: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_error = None;
    while Instant::now() < deadline {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
            last_error = Some(e.to_string());
        }
        if consumer.assignment().is_ok_and(|a| a.count() > 0) {
            return Ok(());
        }
    }
    Err(last_error.unwrap_or_else(|| "no partition assigned within 20 s, and no error".into()))
}

/// Runs `drill` on `kafka`'s cluster (its own topics and bucket).
pub async fn run(drill: &Drill, kafka: KafkaArgs) -> Outcome {
    let (started, cpu_before) = (Instant::now(), report::own_cpu());
    let p = Pipeline::with_cars(kafka.clone(), drill.partitions, drill.seed, drill.cars).await;
    let mut fleet = Fleet::new(&p, drill.membership, drill.assignment);
    for role in Role::ALL {
        fleet.start(role, 0);
    }
    for role in Role::ALL {
        assert!(fleet.await_ready(role, 0, Duration::from_secs(120)), "{} never became ready", role.name());
    }
    let topics =
        [(Stage::Enriched, p.enriched.clone()), (Stage::Alerts, p.alerts.clone()), (Stage::Counts, p.counts.clone())];
    let watch = Watch::start(&kafka, &topics, drill.partitions);
    let mut generator = generate(&p, drill);
    for role in Role::ALL {
        settle(&watch, role, Instant::now(), Duration::ZERO, drill.settle_max).await;
    }
    let baseline_from = now_ms();
    tokio::time::sleep(drill.baseline).await;

    let mut marks: Vec<(Role, String, i64, bool)> = Vec::new();
    let mut instances: BTreeMap<Role, usize> = Role::ALL.iter().map(|r| (*r, 1)).collect();
    for &role in &drill.roles {
        for &to in &drill.scale {
            let from = instances[&role];
            let what = if to > from { format!("join {from} → {to}") } else { format!("leave {from} → {to}") };
            marks.push(act(&mut fleet, &watch, drill, role, Action::Scale(to), what).await);
            instances.insert(role, to);
        }
    }
    if drill.rolling {
        for &role in &drill.roles {
            let slots = fleet.slots(role);
            for (i, slot) in slots.iter().enumerate() {
                let what = format!("rolling restart {} of {}", i + 1, slots.len());
                marks.push(act(&mut fleet, &watch, drill, role, Action::Restart(*slot), what).await);
            }
        }
    }
    if drill.kill {
        for &role in &drill.roles {
            let slot = fleet.slots(role)[0];
            marks.push(act(&mut fleet, &watch, drill, role, Action::Kill(slot), "SIGKILL, restart".into()).await);
        }
    }

    // The stream stops; every stage drains; every partition must have written up to then.
    let stream_end = now_ms();
    stop_generator(&mut generator);
    drain(&watch).await;
    let exited = fleet.exited();
    let stop_codes = fleet.stop_all(Duration::from_secs(30));
    let series = watch.finish();
    let audit = report::audit(&p).await;
    let events = report::events(&marks, stream_end, &series, stage);
    let baseline = Role::ALL
        .iter()
        .map(|r| (*r, report::measure(&series[&stage(*r)], baseline_from, marks.first().map_or(stream_end, |m| m.2))))
        .collect();
    let stalled = stalled(&series, stream_end);
    let timeline = series.iter().map(|(stage, s)| (*stage, report::timeline(s))).collect();
    let own_cpu = report::own_cpu().saturating_sub(cpu_before);
    Outcome { events, baseline, audit, stalled, exited, stop_codes, timeline, elapsed: started.elapsed(), own_cpu }
}

/// Marks the event, acts, and waits for it to settle.
async fn act(
    fleet: &mut Fleet<'_>,
    watch: &Watch,
    drill: &Drill,
    role: Role,
    action: Action,
    what: String,
) -> (Role, String, i64, bool) {
    let at = now_ms();
    let began = Instant::now();
    let stop_limit = Duration::from_secs(30);
    match action {
        Action::Scale(to) => {
            let running = fleet.slots(role);
            if to > running.len() {
                let new: Vec<usize> = (0..to - running.len()).map(|_| fleet.start_next(role)).collect();
                for slot in new {
                    await_ready(fleet, role, slot, drill.settle_max);
                }
            } else {
                let leaving: Vec<usize> = running.iter().rev().take(running.len() - to).copied().collect();
                fleet.stop(role, &leaving, stop_limit);
            }
        }
        Action::Restart(slot) => match drill.membership {
            Membership::Dynamic => {
                let new = fleet.start_next(role);
                await_ready(fleet, role, new, drill.settle_max);
                fleet.stop(role, &[slot], stop_limit);
            }
            Membership::Static => {
                fleet.stop(role, &[slot], stop_limit);
                fleet.start(role, slot);
            }
        },
        Action::Kill(slot) => {
            fleet.kill(role, slot);
            fleet.start(role, slot);
        }
    }
    let settled = settle(watch, role, began, drill.settle_min, drill.settle_max).await;
    eprintln!("rescale: {} {what}: {}", role.name(), if settled { "settled" } else { "NOT settled" });
    (role, what, at, settled)
}

/// Waits (at most `limit`) until the instance is ready; says so when it never is.
fn await_ready(fleet: &Fleet<'_>, role: Role, slot: usize, limit: Duration) {
    if !fleet.await_ready(role, slot, limit) {
        eprintln!("rescale: {} never became ready within {limit:?}", Fleet::log(role, slot));
    }
}

/// Waits until `role`'s output and every stage after it have caught up and stayed so for a
/// second, at least `min` and at most `max` after `began`. Downstream too, and for a second:
/// an upstream recovery hands the next stage a burst of backlog, and the next event must not
/// start while that is still being absorbed (a SIGKILL then replays the burst, which is the
/// previous event's doing, not its own).
async fn settle(watch: &Watch, role: Role, began: Instant, min: Duration, max: Duration) -> bool {
    const STEADY: Duration = Duration::from_secs(1);
    let stages = &[Stage::Enriched, Stage::Alerts, Stage::Counts][stage(role) as usize..];
    let mut caught_up_since: Option<Instant> = None;
    loop {
        let elapsed = began.elapsed();
        let caught_up: Result<(), String> =
            stages.iter().try_for_each(|s| watch.caught_up(*s, now_ms(), Duration::from_secs(3)));
        let since = match caught_up {
            Ok(()) => *caught_up_since.get_or_insert_with(Instant::now),
            Err(_) => {
                caught_up_since = None;
                Instant::now()
            }
        };
        if elapsed >= min && since.elapsed() >= STEADY {
            return true;
        }
        if elapsed >= max {
            eprintln!("rescale: {} not caught up after {max:?}: {}", role.name(), caught_up.err().unwrap_or_default());
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The generator at the drill's rate, until stopped.
fn generate(p: &Pipeline, drill: &Drill) -> Child {
    Command::new(bin("generator"))
        .args(["run", "--s3-bucket", &p.s3.s3_bucket, "--dims-prefix", &p.s3.dims_prefix])
        .args(["--topic", &p.sensors, "--bootstrap-servers", &p.kafka.bootstrap_servers])
        .args(["--rate", &drill.rate.to_string(), "--seed", &drill.seed.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the generator")
}

fn stop_generator(generator: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &generator.id().to_string()]).status();
    let _ = generator.wait();
}

/// Waits until no stage has written anything for 5 s (at most 3 minutes).
async fn drain(watch: &Watch) {
    let total = || [Stage::Enriched, Stage::Alerts, Stage::Counts].map(|s| watch.series(s).records);
    let (mut last, mut quiet_since) = (total(), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(180);
    while quiet_since.elapsed() < Duration::from_secs(5) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = total();
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        }
    }
}

/// Stage partitions whose last record is more than 5 s before the stream's end.
fn stalled(series: &BTreeMap<Stage, Series>, stream_end: i64) -> Vec<String> {
    let mut stalled = Vec::new();
    for (stage, s) in series {
        for (partition, last) in s.last.iter().enumerate() {
            if last.is_none_or(|t| t < stream_end - 5_000) {
                stalled.push(format!("{stage:?}/{partition} (last record {last:?}, stream end {stream_end})"));
            }
        }
    }
    stalled
}
