//! `fig`: the operator CLI of the strangler-fig toolkit.

mod admin;
mod diff;
mod follow;
mod migrate;
mod progress;
mod replay;
mod replicate;
mod report;
mod table;
mod toggle;
mod up;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fig",
    version,
    about = "Run and operate a strangler-fig migration locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local PostgreSQL (or use --database-url), migrate, seed on first run, and serve
    /// the whole stack until Ctrl-C.
    Up(up::UpArgs),
    /// Flip and inspect the router's toggles through its admin API.
    Toggle(toggle::ToggleArgs),
    /// The reporting database's headline reports (reporting_v1) as tables, or --json.
    Report(report::ReportArgs),
    /// Move a capability's writes between the monolith and its service while traffic flows
    /// (cutover, rollback), or show who owns them and every flip (status).
    Migrate(migrate::MigrateArgs),
    /// Send a corpus of requests (JSON Lines) to two sides, writes as dry runs, and compare the
    /// answers as the router's parallel run does. Exit 1 on a real difference, 2 on an error.
    Replay(replay::ReplayArgs),
    /// The router's parallel-run report (GET /admin/diffs) as a table. Exit 1 when a route has
    /// a real difference, 2 on an error.
    Diff(diff::DiffArgs),
    /// Keep each capability's stream running out of its write owner, switching it after a
    /// flip (what `fig up` does for its stack), for routers run as separate processes.
    Follow(follow::FollowArgs),
    /// Operate replication pipelines: run, status, drop, verify.
    Replication {
        #[command(subcommand)]
        command: replication::cli::Command,
    },
    /// Run the pipelines of a file until Ctrl-C (same as `fig replication run`).
    Replicate {
        #[command(flatten)]
        select: replication::cli::Select,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Compare pipelines' source and target tables (same as `fig replication verify`).
    Verify {
        #[command(flatten)]
        select: replication::cli::Select,
        /// At most this many differing keys per table.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// Ends the process with a comparison's exit code: 0 when it passed, 1 when something real
/// differed, 2 (with the error on stderr) when it could not be done.
fn judged(command: &str, outcome: anyhow::Result<bool>) -> anyhow::Result<()> {
    use std::io::Write;
    // `exit` skips destructors: whatever the report left in stdout's buffer goes out first.
    let _ = std::io::stdout().flush();
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("fig {command}: {e:#}");
            std::process::exit(2)
        }
    }
}

/// Runs a replication command on a fresh runtime and exits with its code when it is not 0.
fn replication(command: replication::cli::Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = runtime.block_on(replication::cli::main(command));
    if code != 0 {
        std::process::exit(i32::from(code));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    platform::logging::init("FIG_LOG", "warn", platform::logging::Output::Stderr);
    match Cli::parse().command {
        Command::Up(args) => up::run(args),
        Command::Toggle(args) => toggle::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Follow(args) => follow::run(args),
        Command::Report(args) => report::run(args),
        Command::Replay(args) => judged("replay", replay::run(args)),
        Command::Diff(args) => judged("diff", diff::run(args)),
        Command::Replication { command } => replication(command),
        Command::Replicate {
            select,
            metrics_listen,
        } => replication(replication::cli::Command::Run {
            select,
            metrics_listen,
        }),
        Command::Verify { select, limit } => {
            replication(replication::cli::Command::Verify { select, limit })
        }
    }
}
