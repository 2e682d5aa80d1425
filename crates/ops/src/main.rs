//! `ops`: the operator's tools for the telemetry pipeline — `smoke` (is the stack usable?),
//! `produce` and `tail` (send and read records), `topics` (create, list, describe), `audit`
//! (reconcile the outputs with the input), `rules` (the detector's rules table: show, validate,
//! set) and `what-if` (what a candidate table would change).

use clap::Parser;

mod audit;
mod cli;
mod json;
mod produce;
mod rules;
mod smoke;
mod tail;
mod topics;
mod what_if;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if let cli::Command::Audit(args) = cli.command {
        // Three outcomes, not two: 0 clean, 1 differences, 2 cannot run.
        pipeline_kafka::telemetry::init(cli.log_format);
        return match audit::audit(args).await {
            Ok(audit::Verdict::Clean) => std::process::ExitCode::SUCCESS,
            Ok(audit::Verdict::Differences) => std::process::ExitCode::from(1),
            Err(e) => {
                eprintln!("ops: error: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    pipeline_kafka::shutdown::serve("ops", cli.log_format, |cancel| async move {
        match cli.command {
            cli::Command::Smoke(args) => smoke::smoke(args).await,
            cli::Command::Produce(args) => produce::produce(args).await,
            cli::Command::Tail(args) => tail::tail(args, cancel).await,
            cli::Command::Topics(args) => topics::topics(args.command).await,
            cli::Command::Rules(args) => rules::rules(args).await,
            cli::Command::WhatIf(args) => what_if::what_if(args).await,
            cli::Command::Audit(_) => unreachable!("audit runs above"),
        }
    })
    .await
}
