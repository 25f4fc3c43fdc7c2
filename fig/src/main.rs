//! `fig`: the operator CLI of the strangler-fig toolkit.

mod copy;
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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIG_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Up(args) => up::run(args),
        Command::Toggle(args) => toggle::run(args),
    }
}
