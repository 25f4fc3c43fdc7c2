//! `fig up`: one command from nothing to a running, seeded stack: the monolith and the extracted
//! catalog and wishlist services, each on its own database in one local cluster.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use localpg::{Cluster, ClusterOptions, Listen, Settings};
use monolith::seed::{self, SeedSize};
use monolith::{Backend, Integrations};
use platform::{PoolConfig, WriteMode};

use crate::copy::seed_service_copy;

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
    /// Where the catalog service listens.
    #[arg(long, env = "FIG_CATALOG_ADDR", default_value = "127.0.0.1:7002")]
    catalog_addr: SocketAddr,
    /// Where the wishlist service listens.
    #[arg(long, env = "FIG_WISHLIST_ADDR", default_value = "127.0.0.1:7003")]
    wishlist_addr: SocketAddr,
    /// Run as after cutover: the services own their writes, and the monolith's orders take
    /// stock from the catalog service (saga) and remove wishlist items through the wishlist
    /// service (outbox). Default: the services are read replicas and the monolith owns writes.
    #[arg(long)]
    cutover: bool,
    /// Seed size relative to the default (200 artists, 2,000 albums, 1,000 customers, 5,000 orders).
    #[arg(long, default_value_t = 1.0)]
    seed_scale: f64,
    /// Do not seed an empty database.
    #[arg(long)]
    no_seed: bool,
}

const MONOLITH_DB: &str = "monolith";
const CATALOG_DB: &str = "catalog";
const WISHLIST_DB: &str = "wishlist";

/// Bound listeners, so every printed URL already answers.
struct Listeners {
    monolith: TcpListener,
    catalog: TcpListener,
    wishlist: TcpListener,
}

fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .with_context(|| format!("binding the {what} to {addr} (try {flag} 127.0.0.1:0)"))
}

fn url(listener: &TcpListener) -> anyhow::Result<String> {
    Ok(format!("http://{}", listener.local_addr()?))
}

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

    for (db, what) in [
        (MONOLITH_DB, "monolith"),
        (CATALOG_DB, "catalog"),
        (WISHLIST_DB, "wishlist"),
    ] {
        cluster.create_database(db)?;
        let migrated = match db {
            MONOLITH_DB => cluster.migrate(db, monolith::MIGRATIONS),
            CATALOG_DB => cluster.migrate(db, catalog_service::MIGRATIONS),
            _ => cluster.migrate(db, wishlist_service::MIGRATIONS),
        };
        migrated.with_context(|| format!("migrating the {what} database"))?;
    }
    let seeded = seed_if_empty(&cluster, &args)?;
    seed_service_copy(
        &cluster,
        "catalog",
        MONOLITH_DB,
        CATALOG_DB,
        "catalog.albums",
    )?;
    seed_service_copy(
        &cluster,
        "wishlist",
        MONOLITH_DB,
        WISHLIST_DB,
        "wishlist.items",
    )?;

    let listeners = Listeners {
        monolith: bind(args.monolith_addr, "monolith", "--monolith-addr")?,
        catalog: bind(args.catalog_addr, "catalog service", "--catalog-addr")?,
        wishlist: bind(args.wishlist_addr, "wishlist service", "--wishlist-addr")?,
    };
    let (monolith_url, catalog_url, wishlist_url) = (
        url(&listeners.monolith)?,
        url(&listeners.catalog)?,
        url(&listeners.wishlist)?,
    );

    let phase = if args.cutover {
        "cutover: services own their writes"
    } else {
        "monolith owns writes; services are read replicas"
    };
    println!("fig: stack is up ({seeded}; {phase})");
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
    println!("  catalog    {catalog_url}");
    println!("  wishlist   {wishlist_url}");
    println!("Try: curl '{monolith_url}/catalog/albums?limit=3'");
    println!("Press Ctrl-C to stop.");

    let served = serve(
        &cluster,
        listeners,
        &args,
        &catalog_url,
        &wishlist_url,
        &monolith_url,
    );
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

/// Serves all three until Ctrl-C or SIGTERM, then drains in-flight requests.
fn serve(
    cluster: &Cluster,
    listeners: Listeners,
    args: &UpArgs,
    catalog_url: &str,
    wishlist_url: &str,
    monolith_url: &str,
) -> anyhow::Result<()> {
    let pool = |db: &str| platform::build_pool(&cluster.url(db), PoolConfig::default());
    let (monolith_pool, catalog_pool, wishlist_pool) =
        (pool(MONOLITH_DB)?, pool(CATALOG_DB)?, pool(WISHLIST_DB)?);
    let mode = if args.cutover {
        WriteMode::Owner
    } else {
        WriteMode::Replica
    };
    let remote = |base: &str| {
        if args.cutover {
            Backend::Remote {
                base_url: base.to_string(),
            }
        } else {
            Backend::Local
        }
    };
    let monolith_options = monolith::Options {
        workers: 2,
        integrations: Integrations {
            stock: remote(catalog_url),
            wishlist: remote(wishlist_url),
            ..Integrations::default()
        },
    };
    let catalog_options = catalog_service::Options {
        workers: 1,
        write_mode: mode,
        ..catalog_service::Options::default()
    };
    let wishlist_options = wishlist_service::Options {
        workers: 1,
        write_mode: mode,
        upstreams: wishlist_service::Upstreams {
            catalog_url: catalog_url.to_string(),
            customers_url: monolith_url.to_string(),
            timeout: Duration::from_millis(500),
        },
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let servers = [
            monolith::server_with(listeners.monolith, monolith_pool, monolith_options)?,
            catalog_service::server(listeners.catalog, catalog_pool, catalog_options)?,
            wishlist_service::server(listeners.wishlist, wishlist_pool, wishlist_options)?,
        ];
        let handles: Vec<_> = servers.iter().map(|s| s.handle()).collect();
        let running: Vec<_> = servers.into_iter().map(tokio::spawn).collect();
        shutdown_signal().await;
        eprintln!("fig: stopping...");
        for handle in handles {
            handle.stop(true).await;
        }
        for server in running {
            server.await??;
        }
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
