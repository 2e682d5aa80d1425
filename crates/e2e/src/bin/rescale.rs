//! `rescale`: the rescaling drill (`e2e::rescale`) on the local stack, once per variant of
//! group membership and assignment. Prints, per variant, one Markdown table of the events
//! (the longest pause of any partition, the duplicates, how long the lag stayed over a second)
//! and one verdict line; exits non-zero when a variant is not sound (the audit found an event
//! missing or different, a window wrong, a partition stalled, a service exited by itself or an
//! event never settled). Run it with `scripts/rescale.sh`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use e2e::rescale::{self, Assignment, Drill, Membership, Outcome, Role};

/// The rescaling drill.
#[derive(Debug, Parser)]
struct Cli {
    /// The variants to run, each `<membership>-<assignment>`; default: the four of dynamic or
    /// static membership with eager or cooperative assignment. `dynamic-consumer` tries the
    /// KIP-848 protocol.
    #[arg(long, env = "RESCALE_VARIANTS", value_delimiter = ',', value_enum)]
    variants: Vec<Variant>,
    /// Partitions of every topic.
    #[arg(long, env = "RESCALE_PARTITIONS", default_value_t = 12)]
    partitions: i32,
    /// The generator's steady rate, events per second.
    #[arg(long, env = "RESCALE_RATE", default_value_t = 20_000)]
    rate: u32,
    /// The instance counts each service is scaled to in turn, from one.
    #[arg(long, env = "RESCALE_SCALE", value_delimiter = ',', num_args = 0.., default_values_t = [4, 2, 1])]
    scale: Vec<usize>,
    /// The least time an event is given (measured until the next).
    #[arg(long, env = "RESCALE_SETTLE_MIN", default_value = "8s", value_parser = humantime::parse_duration)]
    settle_min: Duration,
    /// The services the events act on, in this order.
    #[arg(long, env = "RESCALE_ROLES", value_delimiter = ',', value_enum, default_values_t = [Service::Enricher, Service::Detector, Service::Counter])]
    roles: Vec<Service>,
    /// The steady stretch measured before the first event.
    #[arg(long, env = "RESCALE_BASELINE", default_value = "10s", value_parser = humantime::parse_duration)]
    baseline: Duration,
    /// No rolling restarts.
    #[arg(long, env = "RESCALE_NO_ROLLING")]
    no_rolling: bool,
    /// No SIGKILLs.
    #[arg(long, env = "RESCALE_NO_KILL")]
    no_kill: bool,
}

/// A consuming service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Service {
    Enricher,
    Detector,
    Counter,
}

impl From<Service> for Role {
    fn from(s: Service) -> Self {
        match s {
            Service::Enricher => Role::Enricher,
            Service::Detector => Role::Detector,
            Service::Counter => Role::Counter,
        }
    }
}

/// A membership and assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    DynamicEager,
    DynamicCooperative,
    StaticEager,
    StaticCooperative,
    DynamicConsumer,
}

impl Variant {
    fn parts(self) -> (Membership, Assignment) {
        match self {
            Variant::DynamicEager => (Membership::Dynamic, Assignment::Eager),
            Variant::DynamicCooperative => (Membership::Dynamic, Assignment::Cooperative),
            Variant::StaticEager => (Membership::Static, Assignment::Eager),
            Variant::StaticCooperative => (Membership::Static, Assignment::Cooperative),
            Variant::DynamicConsumer => (Membership::Dynamic, Assignment::Consumer),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let variants = if cli.variants.is_empty() {
        vec![Variant::DynamicEager, Variant::DynamicCooperative, Variant::StaticEager, Variant::StaticCooperative]
    } else {
        cli.variants.clone()
    };
    let mut sound = true;
    for variant in variants {
        let (membership, assignment) = variant.parts();
        let name = variant.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
        if assignment == Assignment::Consumer {
            let broker = rescale::own_broker().await;
            if let Err(why) = rescale::consumer_protocol(&broker.kafka(&[])).await {
                println!("\n### {name}\n\nNot run: this broker does not serve the KIP-848 consumer protocol ({why}).");
                continue;
            }
        }
        println!("\n### {name}\n\n{}", Outcome::HEADER);
        // One run per service, each on a fresh broker: the broker's fetches slow down as a log
        // grows (it lists a partition's batches), so one long run would measure that.
        for role in cli.roles.iter().map(|s| Role::from(*s)) {
            let drill = Drill {
                partitions: cli.partitions,
                rate: cli.rate,
                scale: cli.scale.clone(),
                settle_min: cli.settle_min,
                roles: vec![role],
                baseline: cli.baseline,
                rolling: !cli.no_rolling,
                kill: !cli.no_kill,
                ..Drill::full(membership, assignment)
            };
            eprintln!(
                "rescale: {name}, {}: {} partitions, {} events/s, scale 1 → {:?}",
                role.name(),
                drill.partitions,
                drill.rate,
                drill.scale
            );
            let broker = rescale::own_broker().await;
            let outcome = rescale::run(&drill, broker.kafka(&[])).await;
            drop(broker);
            print!("{}", outcome.rows(drill.rate, role));
            sound &= verdict(&name, role, &outcome, drill.rate);
        }
    }
    if sound { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The verdict line of one run (on stderr its lag timeline, and what is wrong if anything is);
/// whether it is sound.
fn verdict(name: &str, role: Role, outcome: &Outcome, rate: u32) -> bool {
    for (stage, maxima) in &outcome.timeline {
        let seconds: Vec<String> = maxima.iter().map(|ms| format!("{:.1}", *ms as f64 / 1000.0)).collect();
        eprintln!("rescale: {stage:?} largest lag per 10 s: {}", seconds.join(" "));
    }
    let worst = outcome.events.iter().max_by_key(|e| e.figures.longest_pause.0);
    let most_dups = outcome.events.iter().map(|e| e.figures.duplicates).max().unwrap_or(0);
    let extra: Vec<String> = outcome.audit.extra_copies.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!(
        "rescale variant={name} service={} events={} audit={} (input {} events; extra copies: {}) windows={}/{} \
         stalled={} exited={} stops={:?} longest_pause={:.2}s ({}) most_duplicates={most_dups} ({:.2} s of input) \
         elapsed={}s drill_cpu={}s",
        role.name(),
        outcome.events.len(),
        if outcome.audit.clean() { "clean" } else { "DIFFERENCES" },
        outcome.audit.events,
        extra.join(", "),
        outcome.audit.windows.1,
        outcome.audit.windows.0,
        outcome.stalled.len(),
        outcome.exited.len(),
        outcome.stop_codes,
        worst.map_or(0.0, |e| e.figures.longest_pause.0 as f64 / 1000.0),
        worst.map_or_else(String::new, |e| e.what.clone()),
        most_dups as f64 / f64::from(rate.max(1)),
        outcome.elapsed.as_secs(),
        outcome.own_cpu.as_secs(),
    );
    let sound = outcome.sound();
    if !sound {
        eprintln!(
            "rescale: {name}, {} is not sound: stalled {:?}, exited {:?}",
            role.name(),
            outcome.stalled,
            outcome.exited
        );
        if !outcome.audit.clean() {
            eprintln!("rescale: audit: {}", outcome.audit.json);
        }
    }
    sound
}
