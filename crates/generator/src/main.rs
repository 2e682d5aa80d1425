//! `generator`: writes the dimension tables to S3 (`dims`) and produces random vehicle
//! telemetry to Kafka (`run`).

use clap::Parser;

mod cli;
mod dims_cmd;
mod run;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    pipeline_kafka::shutdown::serve("generator", cli.log_format, |cancel| async move {
        match cli.command {
            cli::Command::Dims(args) => dims_cmd::dims(args).await,
            cli::Command::Run(args) => run::run(args, cancel).await,
        }
    })
    .await
}
