//! `fig follow`: keeps each capability's stream running out of its current write owner, and
//! switches it when a flip moves the writes, as `fig up` does for its own stack. For a stack
//! whose pieces run as separate processes (docs/operations.md): one `fig follow` beside the
//! routers, with the same environment as the router that runs the flips.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use platform::PoolConfig;
use router::RouteTable;

#[derive(Debug, clap::Args)]
pub struct FollowArgs {
    /// The router database, where the write ownership is kept.
    #[arg(long, env = "ROUTER_DATABASE_URL")]
    database_url: String,
    /// The pipeline file naming each capability's forward stream (the router's
    /// `ROUTER_MIGRATIONS`); `${NAME}`s are read from the environment. Pipelines not named
    /// like a capability (feeds) are left to `replication run`.
    #[arg(long, env = "ROUTER_MIGRATIONS")]
    config: String,
    /// The route table (TOML), as the router's `ROUTER_ROUTES`; MusicCorp's without.
    #[arg(long, env = "ROUTER_ROUTES")]
    routes: Option<String>,
    /// Serve the streams' Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// How often the stored ownership is read, in milliseconds.
    #[arg(long, default_value_t = 250)]
    every_ms: u64,
}

pub fn run(args: FollowArgs) -> anyhow::Result<()> {
    let table = match &args.routes {
        None => RouteTable::musiccorp(),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            RouteTable::parse(&text).with_context(|| format!("the route table {path}"))?
        }
    };
    let pipelines = replication::config::load(&args.config)?;
    let migrations = router::migrate::Migrations::for_table(pipelines, &table)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config))?;
    for feed in &migrations.feeds {
        tracing::info!(pipeline = %feed.name, "not a capability's stream: left to replication run");
    }
    let pool = platform::build_pool(&args.database_url, PoolConfig::default())
        .context("the router database")?;
    let names: Vec<String> = migrations
        .movable
        .iter()
        .map(|m| m.capability.clone())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let follower = router::migrate::follow::follow(
            pool,
            Arc::new(table),
            migrations.movable,
            Duration::from_millis(args.every_ms.max(10)),
        );
        let metrics = match args.metrics_listen {
            None => None,
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics listener to {addr}"))?;
                println!(
                    "fig follow: metrics http://{}/metrics",
                    listener.local_addr()?
                );
                Some(tokio::spawn(replication::metrics::serve(
                    listener,
                    follower.metrics().to_vec(),
                )))
            }
        };
        println!(
            "fig follow: streams of {} follow their write owner; Ctrl-C to stop",
            names.join(", ")
        );
        crate::up::shutdown_signal().await;
        if let Some(task) = metrics {
            task.abort();
        }
        follower.stop().await;
        anyhow::Ok(())
    })
}
