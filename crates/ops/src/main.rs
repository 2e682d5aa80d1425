//! `ops`: the operator's tools for the telemetry pipeline — `smoke` (is the stack usable?),
//! `produce` and `tail` (send and read records), `topics` (create, list, describe).

use clap::Parser;

mod cli;
mod json;
mod produce;
mod smoke;
mod tail;
mod topics;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    pipeline_kafka::shutdown::serve("ops", cli.log_format, |cancel| async move {
        match cli.command {
            cli::Command::Smoke(args) => smoke::smoke(args).await,
            cli::Command::Produce(args) => produce::produce(args).await,
            cli::Command::Tail(args) => tail::tail(args, cancel).await,
            cli::Command::Topics(args) => topics::topics(args.command).await,
        }
    })
    .await
}
