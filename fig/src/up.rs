//! `fig up`: one command from nothing to a running, seeded stack.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use anyhow::Context;
use localpg::{Cluster, ClusterOptions, Listen, Settings};
use monolith::platform::PoolConfig;
use monolith::seed::{self, SeedSize};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Keep PostgreSQL's data here between runs (default: a throwaway directory).
    #[arg(long, env = "FIG_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Use this existing PostgreSQL server instead of starting one (postgres://user@host:port/db).
    #[arg(long, env = "LOCALPG_URL")]
    database_url: Option<String>,
    /// TCP port for the local PostgreSQL; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pg_port: u16,
    /// Where the monolith listens; port 0 picks a free one.
    #[arg(long, env = "FIG_MONOLITH_ADDR", default_value = "127.0.0.1:7001")]
    monolith_addr: SocketAddr,
    /// Seed size relative to the default (200 artists, 2,000 albums, 1,000 customers, 5,000 orders).
    #[arg(long, default_value_t = 1.0)]
    seed_scale: f64,
    /// Do not seed an empty database.
    #[arg(long)]
    no_seed: bool,
}

const MONOLITH_DB: &str = "monolith";

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    if !(args.seed_scale > 0.0 && args.seed_scale <= 100.0) {
        anyhow::bail!("--seed-scale must be greater than 0 and at most 100");
    }
    let settings = Settings {
        url: args.database_url.clone(),
        ..Settings::from_env()?
    };
    let cluster = Cluster::start(ClusterOptions {
        data_dir: args.data_dir.clone(),
        listen: Listen::Tcp { port: args.pg_port },
        durable: args.data_dir.is_some(),
        settings,
    })
    .context("starting PostgreSQL")?;

    cluster.create_database(MONOLITH_DB)?;
    cluster
        .migrate(MONOLITH_DB, monolith::MIGRATIONS)
        .context("migrating the monolith database")?;
    let seeded = seed_if_empty(&cluster, &args)?;

    // Bind before printing, so the printed URL already answers.
    let listener = TcpListener::bind(args.monolith_addr).with_context(|| {
        format!(
            "binding the monolith to {} (try --monolith-addr 127.0.0.1:0)",
            args.monolith_addr
        )
    })?;
    let monolith_url = format!("http://{}", listener.local_addr()?);
    let pool = monolith::build_pool(&cluster.url(MONOLITH_DB), PoolConfig::default())?;

    println!("fig: stack is up ({seeded})");
    println!("  postgres   {}", cluster.url(MONOLITH_DB));
    if let Some(dir) = cluster.data_dir() {
        let fate = if args.data_dir.is_some() {
            "kept"
        } else {
            "removed on exit"
        };
        println!("  data       {} ({fate})", dir.display());
    }
    println!("  monolith   {monolith_url}");
    println!("Try: curl '{monolith_url}/catalog/albums?limit=3'");
    println!("Press Ctrl-C to stop.");

    let served = serve(listener, pool);
    // Stop PostgreSQL even when serving failed.
    let stopped = cluster.stop().context("stopping PostgreSQL");
    served?;
    stopped?;
    println!("fig: stopped");
    Ok(())
}

fn seed_if_empty(cluster: &Cluster, args: &UpArgs) -> anyhow::Result<String> {
    let mut conn = cluster.connect(MONOLITH_DB)?;
    if seed::is_seeded(&mut conn)? {
        return Ok("kept existing data".into());
    }
    if args.no_seed {
        return Ok("empty, not seeded".into());
    }
    let report = seed::seed(&mut conn, SeedSize::scaled(args.seed_scale))?;
    Ok(format!(
        "seeded {} artists, {} albums, {} customers, {} orders",
        report.artists, report.albums, report.customers, report.orders
    ))
}

/// Serves until Ctrl-C or SIGTERM, then drains in-flight requests.
fn serve(listener: TcpListener, pool: monolith::Pool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = monolith::server(listener, pool, 2)?;
        let handle = server.handle();
        let running = tokio::spawn(server);
        shutdown_signal().await;
        eprintln!("fig: stopping...");
        handle.stop(true).await;
        running.await??;
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
