//! The command line, shared by the `replication` binary and `fig replication ...`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::config::{self, Pipeline};
use crate::ops;

#[derive(Debug, Parser)]
#[command(
    name = "replication",
    about = "Change-data-capture pipelines on PostgreSQL logical replication"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Select {
    /// The pipeline file (TOML). `${NAME}` in it is read from the environment.
    #[arg(long, env = "FIG_REPLICATION_CONFIG")]
    pub config: String,
    /// Only these pipelines (all when absent).
    #[arg(long = "pipeline")]
    pub pipelines: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the pipelines until interrupted (Ctrl-C or SIGTERM).
    Run {
        #[command(flatten)]
        select: Select,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// State, lag, throughput and retained WAL per pipeline.
    Status {
        #[command(flatten)]
        select: Select,
    },
    /// Removes the slot, publication, origin and recorded position (stop the pipeline first).
    Drop {
        #[command(flatten)]
        select: Select,
    },
    /// Compares source and target tables: row counts, content hashes, differing keys.
    Verify {
        #[command(flatten)]
        select: Select,
        /// At most this many differing keys per table.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn pipelines(select: &Select) -> Result<Vec<Pipeline>, String> {
    let all = config::load(&select.config).map_err(|e| e.to_string())?;
    if select.pipelines.is_empty() {
        return Ok(all);
    }
    select
        .pipelines
        .iter()
        .map(|name| {
            all.iter()
                .find(|p| &p.name == name)
                .cloned()
                .ok_or_else(|| format!("no pipeline named {name:?} in {}", select.config))
        })
        .collect()
}

/// A receiver that turns true on Ctrl-C or SIGTERM.
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    rx
}

/// Runs a command; the process exit code: 0 success, 1 pipelines failed or differ, 2 usage or
/// setup error.
pub async fn main(command: Command) -> u8 {
    match run(command).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(message) => {
            eprintln!("error: {message}");
            2
        }
    }
}

async fn run(command: Command) -> Result<bool, String> {
    match command {
        Command::Run {
            select,
            metrics_listen,
        } => {
            let pipelines = pipelines(&select)?;
            let listener = match metrics_listen {
                Some(addr) => {
                    let l = ops::bind_metrics(addr)
                        .await
                        .map_err(|e| format!("binding {addr}: {e}"))?;
                    if let Ok(a) = l.local_addr() {
                        eprintln!("metrics at http://{a}/metrics");
                    }
                    Some(l)
                }
                None => None,
            };
            let failures = ops::run_all(&pipelines, stop_on_signal(), listener).await;
            for (name, e) in &failures {
                eprintln!("pipeline {name}: {e}");
            }
            Ok(failures.is_empty())
        }
        Command::Status { select } => {
            let pipelines = pipelines(&select)?;
            for s in ops::status(&pipelines, Duration::from_secs(1))
                .await
                .map_err(|e| e.to_string())?
            {
                println!("{s}");
            }
            Ok(true)
        }
        Command::Drop { select } => {
            let pipelines = pipelines(&select)?;
            for p in &pipelines {
                ops::drop(p)
                    .await
                    .map_err(|e| format!("pipeline {}: {e}", p.name))?;
                println!(
                    "dropped pipeline {}: slot {}, publication {}, origin {}",
                    p.name,
                    p.slot(),
                    p.publication(),
                    p.origin()
                );
            }
            Ok(true)
        }
        Command::Verify { select, limit } => {
            let pipelines = pipelines(&select)?;
            let mut equal = true;
            for p in &pipelines {
                let report = ops::verify(p, limit, Duration::from_secs(30))
                    .await
                    .map_err(|e| format!("pipeline {}: {e}", p.name))?;
                println!("pipeline {}:\n{report}", p.name);
                equal &= report.equal();
            }
            Ok(equal)
        }
    }
}
