//! `replication`: run, inspect, drop and verify the pipelines of a config file.
//!
//!   replication run    --config pipelines.toml [--pipeline NAME] [--metrics-listen ADDR]
//!   replication status --config pipelines.toml
//!   replication drop   --config pipelines.toml --pipeline NAME
//!   replication verify --config pipelines.toml [--pipeline NAME]
//!
//! `REPLICATION_THREADS=N` sets the runtime's worker threads (1: everything on one thread).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    replication::cli::init_logging();
    let cli = replication::cli::Cli::parse();
    let threads = std::env::var("REPLICATION_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(runtime) => ExitCode::from(runtime.block_on(replication::cli::main(cli.command))),
        Err(e) => {
            eprintln!("replication: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}
