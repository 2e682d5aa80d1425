//! `bench-e2e`: the pipeline end to end on the local stack, against two rdkafka relays through
//! the same hops, in one run (`scripts/bench.sh` builds and runs it).
//!
//! For every offered rate (`--rate`, default full speed, 1 000, 5 000 and 20 000 events/s) it
//! runs one phase per system of `--systems` (default all three), each on fresh topics:
//! - **pipeline**: enricher, detector and counter started and ready (`/readyz`), then the
//!   generator produces the events (`--seed`, synthetic event times 1 ms apart);
//! - **relay**: `relay hop` A→B, `relay hop --only-alerts` B→C and `relay sink` on C, then
//!   `relay source` produces the generator's very records to A (see `relay`'s docs);
//! - **bare**: the same with `relay bare-hop` (BaseConsumer + BaseProducer; per batch poll,
//!   produce, flush, store offsets): the client's floor on this broker.
//!
//! Figures: throughput = events ÷ (first produce → the final stage has counted the last record);
//! output rate = the rate events leave the last topic (the latency's growth taken out, see
//! `bench::report::output_rate`); latency = an event's produce timestamp (CreateTime of its
//! record on the first topic) → its alert received from the last topic by this driver's own
//! consumer; peak RSS (`VmHWM`) and CPU seconds (utime + stime, also per event) from `/proc`,
//! sampled just before each process is stopped (the sources just after they exit, before they
//! are reaped); readiness from `/readyz` and the services' JSON log lines. Every count is checked
//! exact; a phase that is not fails the run.

use std::process::ExitCode;

use anyhow::{Context, ensure};
use bench::phase::{Bench, say};
use bench::{Options, Report, System};
use clap::Parser;
use pipeline_testkit as testkit;

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores ({model}), load {}", loadavg())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(opts: Options) -> anyhow::Result<Report> {
    opts.validate()?;
    let systems = opts.systems();
    let bin_dir = match &opts.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?.parent().context("binary directory")?.to_path_buf(),
    };
    let mut needed = vec!["generator", "enricher", "detector", "counter"];
    if systems.iter().any(|&s| s != System::Pipeline) {
        needed.push("relay");
    }
    for bin in needed {
        ensure!(
            bin_dir.join(bin).exists(),
            "{} is missing: build the binaries first (scripts/bench.sh does)",
            bin_dir.join(bin).display()
        );
    }
    let log_dir = match &opts.log_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(testkit::unique("bench-e2e")),
    };
    std::fs::create_dir_all(&log_dir)?;
    say(format!("binaries from {}; logs in {}", bin_dir.display(), log_dir.display()));
    let mut bench = Bench::new(opts, bin_dir, log_dir)?;
    let mut report = Report { machine: machine(), partitions: bench.opts.partitions, ..Report::default() };
    for rate in bench.opts.rates.clone() {
        let events = bench.opts.events_at(rate);
        for &system in &systems {
            report.phases.push(bench.phase(system, rate, events)?);
        }
    }
    report.machine = format!("{}; load after {}", report.machine, loadavg());
    report.summarize();
    if let Some(path) = &bench.opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(report)
}

fn main() -> ExitCode {
    match run(Options::parse()) {
        Ok(report) => {
            print!("{}", report.render());
            if report.phases.iter().all(|p| p.exact) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("bench-e2e: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
