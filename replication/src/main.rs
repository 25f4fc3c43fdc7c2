//! `replication`: run, inspect, drop and verify the pipelines of a config file.
//!
//!   replication run    --config pipelines.toml [--pipeline NAME] [--metrics-listen ADDR]
//!   replication status --config pipelines.toml
//!   replication drop   --config pipelines.toml --pipeline NAME
//!   replication verify --config pipelines.toml [--pipeline NAME]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    replication::cli::init_logging();
    let cli = replication::cli::Cli::parse();
    ExitCode::from(replication::cli::main(cli.command).await)
}
