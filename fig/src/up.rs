//! `fig up`: one command from nothing to a running, seeded stack: the monolith and the extracted
//! catalog and wishlist services, each on its own database in one local cluster.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use localpg::{Cluster, ClusterOptions, Listen, Settings};
use monolith::seed::{self, SeedSize};
use monolith::{Backend, Integrations};
use platform::{PoolConfig, WriteMode};

use crate::progress::{Phase, Progress, thousands};
use crate::replicate;

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
    /// Where the router (the front door) listens.
    #[arg(long, env = "FIG_ROUTER_ADDR", default_value = "127.0.0.1:7000")]
    router_addr: SocketAddr,
    /// Where the router's admin API listens.
    #[arg(long, env = "FIG_ADMIN_ADDR", default_value = "127.0.0.1:7100")]
    admin_addr: SocketAddr,
    /// Where the replication pipelines' Prometheus metrics are served.
    #[arg(
        long,
        env = "FIG_REPLICATION_METRICS_ADDR",
        default_value = "127.0.0.1:7200"
    )]
    replication_metrics_addr: SocketAddr,
    /// Cut both capabilities over before serving (the flip `fig migrate CAP cutover` runs, unless
    /// a service owns its writes already): the services own their writes, and the monolith's
    /// orders take stock from the catalog service (saga) and remove wishlist items through the
    /// wishlist service (outbox). Default: whoever owns the writes now keeps them (the monolith
    /// on a first run; the services are read replicas).
    #[arg(long)]
    cutover: bool,
    /// Seed size relative to the default (200 artists, 2,000 albums, 1,000 customers, 5,000 orders).
    #[arg(long, default_value_t = 1.0)]
    seed_scale: f64,
    /// Do not seed an empty database.
    #[arg(long)]
    no_seed: bool,
    /// For tests only: the catalog service answers some album reads with deliberate defects,
    /// to check what the parallel run reports (`price+1:3,5; drop:genre; reverse:albums;
    /// 404:7; slow:9=800ms`, see docs/parallel-run.md). Refused with --cutover.
    #[arg(long, env = "CATALOG_FAULTS", value_name = "FAULTS", value_parser = faults)]
    catalog_faults: Option<Box<catalog_service::Faults>>,
}

/// `--catalog-faults`, boxed: the arguments stay small without it.
fn faults(
    text: &str,
) -> Result<Box<catalog_service::Faults>, catalog_service::faults::FaultsError> {
    text.parse().map(Box::new)
}

const MONOLITH_DB: &str = "monolith";
const CATALOG_DB: &str = "catalog";
const WISHLIST_DB: &str = "wishlist";
const ROUTER_DB: &str = "router";
const REPORTING_DB: &str = "reporting";

/// The reporting database's schema (docs/reporting.md).
const REPORTING_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../migrations/reporting");

/// Bound listeners, so every printed URL already answers.
struct Listeners {
    monolith: TcpListener,
    catalog: TcpListener,
    wishlist: TcpListener,
    router: TcpListener,
    admin: TcpListener,
    replication_metrics: TcpListener,
}

/// Every service's base URL.
struct Urls {
    monolith: String,
    catalog: String,
    wishlist: String,
    router: String,
    admin: String,
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
    if args.cutover && args.catalog_faults.is_some() {
        anyhow::bail!("--catalog-faults is for a replica catalog service, not with --cutover");
    }
    let mut progress = Progress::new(if args.cutover { 7 } else { 6 });
    let settings = Settings {
        url: args.database_url.clone(),
        ..Settings::from_env()?
    };
    let phase = progress.phase("starting PostgreSQL");
    let cluster = Cluster::start(ClusterOptions {
        data_dir: args.data_dir.clone(),
        listen: Listen::Tcp { port: args.pg_port },
        durable: args.data_dir.is_some(),
        settings,
        tls: None,
    })
    .context("starting PostgreSQL")?;
    phase.done(&cluster.url(""));

    let phase = progress.phase("migrating databases");
    let databases = [
        (MONOLITH_DB, "monolith"),
        (CATALOG_DB, "catalog"),
        (WISHLIST_DB, "wishlist"),
        (ROUTER_DB, "router"),
        (REPORTING_DB, "reporting"),
    ];
    for (db, what) in databases {
        cluster.create_database(db)?;
        let migrated = match db {
            MONOLITH_DB => cluster.migrate(db, monolith::MIGRATIONS),
            CATALOG_DB => cluster.migrate(db, catalog_service::MIGRATIONS),
            WISHLIST_DB => cluster.migrate(db, wishlist_service::MIGRATIONS),
            REPORTING_DB => cluster.migrate(db, REPORTING_MIGRATIONS),
            _ => cluster.migrate(db, router::store::MIGRATIONS),
        };
        migrated.with_context(|| format!("migrating the {what} database"))?;
    }
    phase.done(&databases.map(|(db, _)| db).join(", "));
    let mut phase = progress.phase("seeding the monolith");
    let seeded = seed_if_empty(&cluster, &args, &mut phase)?;
    phase.done(&seeded);
    // The services' databases follow the monolith's through the default replication pipelines
    // (after a cutover, the reverse ones carry the services' writes back): run in `serve` in the
    // direction each capability's write owner says, written down here for
    // `fig replication status --config`.
    let databases = replication::config::MusicCorp {
        monolith: cluster.url(MONOLITH_DB),
        catalog: cluster.url(CATALOG_DB),
        wishlist: cluster.url(WISHLIST_DB),
        reporting: cluster.url(REPORTING_DB),
    };
    let pipelines = databases.pipelines()?;
    let reporting = databases.reporting_feeds()?;
    let config_dir = tempfile::Builder::new()
        .prefix("fig-replication-")
        .tempdir()
        .context("creating a directory for the replication config")?;
    let both: Vec<replication::config::Pipeline> = pipelines
        .iter()
        .flat_map(|p| [p.clone(), p.reversed()])
        .chain(reporting.iter().cloned())
        .collect();
    let config_file = replicate::write_config(config_dir.path(), &both)?;
    ensure_toggles(&cluster, args.cutover)?;

    let listeners = Listeners {
        monolith: bind(args.monolith_addr, "monolith", "--monolith-addr")?,
        catalog: bind(args.catalog_addr, "catalog service", "--catalog-addr")?,
        wishlist: bind(args.wishlist_addr, "wishlist service", "--wishlist-addr")?,
        router: bind(args.router_addr, "router", "--router-addr")?,
        admin: bind(args.admin_addr, "router admin API", "--admin-addr")?,
        replication_metrics: bind(
            args.replication_metrics_addr,
            "replication metrics",
            "--replication-metrics-addr",
        )?,
    };
    let urls = Urls {
        monolith: url(&listeners.monolith)?,
        catalog: url(&listeners.catalog)?,
        wishlist: url(&listeners.wishlist)?,
        router: url(&listeners.router)?,
        admin: url(&listeners.admin)?,
    };
    let token = admin_token()?;
    let banner = banner(&Banner {
        cluster: &cluster,
        kept: args.data_dir.is_some(),
        seeded: &seeded,
        urls: &urls,
        token: &token,
        pipelines: &pipelines,
        reporting: &reporting,
        metrics: listeners.replication_metrics.local_addr()?,
        config_file: &config_file,
    });

    let served = serve(
        &cluster,
        listeners,
        &args,
        &urls,
        token,
        Streams {
            pipelines: &pipelines,
            reporting: &reporting,
        },
        Shown { progress, banner },
    );
    // Stop PostgreSQL even when serving failed.
    let stopped = cluster.stop().context("stopping PostgreSQL");
    served?;
    stopped?;
    println!("fig: stopped");
    Ok(())
}

/// What the banner names.
struct Banner<'a> {
    cluster: &'a Cluster,
    kept: bool,
    seeded: &'a str,
    urls: &'a Urls,
    token: &'a str,
    pipelines: &'a [replication::config::Pipeline],
    reporting: &'a [replication::config::Pipeline],
    metrics: SocketAddr,
    config_file: &'a std::path::Path,
}

/// Where everything is and what to try first; printed on stdout once the stack serves.
fn banner(b: &Banner<'_>) -> String {
    let names = |ps: &[replication::config::Pipeline]| {
        ps.iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (urls, token) = (b.urls, b.token);
    let mut out = format!("fig: stack is up ({})\n", b.seeded);
    out.push_str(&format!("  postgres   {}\n", b.cluster.url(MONOLITH_DB)));
    if let Some(dir) = b.cluster.data_dir() {
        let fate = if b.kept { "kept" } else { "removed on exit" };
        out.push_str(&format!("  data       {} ({fate})\n", dir.display()));
    }
    out.push_str(&format!("  router     {}\n", urls.router));
    out.push_str(&format!("  admin      {}\n", urls.admin));
    out.push_str(&format!("  token      {token}\n"));
    out.push_str(&format!("  monolith   {}\n", urls.monolith));
    out.push_str(&format!("  catalog    {}\n", urls.catalog));
    out.push_str(&format!("  wishlist   {}\n", urls.wishlist));
    out.push_str(&format!(
        "  replication {} (out of each capability's write owner; metrics http://{}/metrics)\n",
        names(b.pipelines),
        b.metrics
    ));
    out.push_str(&format!(
        "     fig replication status --config {}\n",
        b.config_file.display()
    ));
    out.push_str(&format!(
        "  reporting  {} (query the reporting_v1 schema; fed by {})\n",
        b.cluster.url(REPORTING_DB),
        names(b.reporting)
    ));
    out.push_str(&format!(
        "Try: curl '{}/catalog/albums?limit=3'\n",
        urls.router
    ));
    out.push_str(&format!(
        "     fig toggle --admin-url {} --token {token} enable catalog.reads --reason demo\n",
        urls.admin
    ));
    out.push_str(&format!(
        "     fig migrate --admin-url {} --token {token} catalog cutover --reason demo\n",
        urls.admin
    ));
    out
}

/// The capabilities' pipelines (both directions follow the write owner) and the reporting
/// database's feeds.
struct Streams<'a> {
    pipelines: &'a [replication::config::Pipeline],
    reporting: &'a [replication::config::Pipeline],
}

/// The phases still to show, and the banner to print once serving.
struct Shown {
    progress: Progress,
    banner: String,
}

/// A fresh admin token for this run: 32 hex characters from the kernel's randomness.
fn admin_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the admin token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The toggles the MusicCorp route table uses, created (off) on a first run so they can be
/// flipped at once; after cutover, reads go to the services.
fn ensure_toggles(cluster: &Cluster, cutover: bool) -> anyhow::Result<()> {
    use router::store::{self, Change, StoreError};
    let mut conn = cluster.connect(ROUTER_DB)?;
    let table = router::RouteTable::musiccorp();
    for capability in &table.capabilities {
        for (name, reads) in [
            (&capability.read_toggle, true),
            (&capability.shadow_toggle, false),
        ] {
            let enabled = cutover && reads;
            let exists = match store::get(&mut conn, name) {
                Ok(_) => true,
                Err(StoreError::NotFound(_)) => false,
                Err(e) => return Err(e.into()),
            };
            if exists && !cutover {
                continue;
            }
            let feature: router::toggles::Feature = serde_json::from_value(serde_json::json!({
                "name": name, "enabled": enabled, "strategies": [{"name": "default"}]
            }))?;
            let reason = if cutover {
                "fig up --cutover"
            } else {
                "fig up: first run"
            };
            store::put(
                &mut conn,
                &feature,
                &Change {
                    actor: "fig",
                    reason,
                },
            )?;
        }
    }
    Ok(())
}

fn seed_if_empty(cluster: &Cluster, args: &UpArgs, phase: &mut Phase) -> anyhow::Result<String> {
    let mut conn = cluster.connect(MONOLITH_DB)?;
    if seed::is_seeded(&mut conn)? {
        return Ok("kept existing data".into());
    }
    if args.no_seed {
        return Ok("empty, not seeded".into());
    }
    let report = seed::seed_with_progress(
        &mut conn,
        SeedSize::scaled(args.seed_scale),
        &mut |done, total| phase.progress(done as u64, total as u64, "rows"),
    )?;
    Ok(format!(
        "seeded {} artists, {} albums, {} customers, {} orders",
        report.artists, report.albums, report.customers, report.orders
    ))
}

/// Serves everything until Ctrl-C or SIGTERM, then drains in-flight requests. The services
/// reach each other through the router, as they would in production, so they follow whichever
/// side the toggles send each capability to.
fn serve(
    cluster: &Cluster,
    listeners: Listeners,
    args: &UpArgs,
    urls: &Urls,
    token: String,
    streams: Streams<'_>,
    shown: Shown,
) -> anyhow::Result<()> {
    let Shown {
        mut progress,
        banner,
    } = shown;
    let Streams {
        pipelines,
        reporting,
    } = streams;
    let pool = |db: &str| platform::build_pool(&cluster.url(db), PoolConfig::default());
    let (monolith_pool, catalog_pool, wishlist_pool) =
        (pool(MONOLITH_DB)?, pool(CATALOG_DB)?, pool(WISHLIST_DB)?);
    // Who owns the writes is recorded in the databases (the write fences) and the router's
    // (ownership): these are only the first run's, before any flip.
    let movable = |base: &str| Backend::Movable {
        base_url: base.to_string(),
    };
    let monolith_options = monolith::Options {
        workers: 2,
        integrations: Integrations {
            stock: movable(&urls.router),
            wishlist: movable(&urls.router),
            ..Integrations::default()
        },
    };
    let catalog_options = catalog_service::Options {
        workers: 1,
        write_mode: WriteMode::Replica,
        faults: args.catalog_faults.as_deref().cloned().unwrap_or_default(),
        ..catalog_service::Options::default()
    };
    let wishlist_options = wishlist_service::Options {
        workers: 1,
        write_mode: WriteMode::Replica,
        upstreams: wishlist_service::Upstreams {
            catalog_url: urls.router.clone(),
            customers_url: urls.router.clone(),
            timeout: Duration::from_millis(500),
        },
    };
    let mut table = router::RouteTable::musiccorp();
    table.set_upstream("monolith", &urls.monolith)?;
    table.set_upstream("catalog", &urls.catalog)?;
    table.set_upstream("wishlist", &urls.wishlist)?;
    let migrations = router::migrate::Migrations::from_pipelines(pipelines).with_feeds(reporting);
    let router_config = router::run::Config {
        listen: listeners.router.local_addr()?,
        admin_listen: listeners.admin.local_addr()?,
        database_url: cluster.url(ROUTER_DB),
        token,
        table,
        instance: "fig".into(),
        reload_every: Duration::from_secs(30),
        source: router::sync::Source::Store,
        limits: router::proxy::Limits::default(),
        record: None,
        migrations: Some(migrations.clone()),
    };
    let follow_table = Arc::new(router_config.table.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Replication first: the services answer from their databases, so those should hold
        // the monolith's data (the initial copy done) before anyone can ask. The streams run
        // out of each capability's write owner, and switch when a flip moves the writes.
        let limit = Duration::from_secs(300);
        let router_pool = platform::build_pool(&cluster.url(ROUTER_DB), PoolConfig::default())?;
        let replicating = router::migrate::follow::follow(
            router_pool,
            follow_table,
            migrations.movable.clone(),
            Duration::from_millis(50),
        );
        let phase = progress.phase("copying into the services");
        let (phase, rows) = copying(phase, replicating.metrics(), async {
            replicating
                .streaming(limit)
                .await
                .map_err(anyhow::Error::msg)
        })
        .await?;
        phase.done(&format!("{} rows copied; streaming", thousands(rows)));
        // The reporting database's feeds run always, each out of its own source; they start
        // once the services' copies are in, which they must not take for the services' own
        // changes.
        let phase = progress.phase("feeding the reporting database");
        let reports = replicate::start(reporting);
        let (phase, rows) = copying(phase, reports.metrics(), reports.streaming(limit)).await?;
        if let Some(feed) = reporting.first() {
            replicate::rebuild_reports(&feed.target).await?;
        }
        phase.done(&format!(
            "{} rows copied, reports rebuilt; streaming",
            thousands(rows)
        ));
        let phase = progress.phase("starting the servers");
        listeners.replication_metrics.set_nonblocking(true)?;
        let metrics_listener = tokio::net::TcpListener::from_std(listeners.replication_metrics)?;
        let metrics_server = tokio::spawn(replication::metrics::serve(
            metrics_listener,
            replicating
                .metrics()
                .iter()
                .chain(reports.metrics())
                .cloned()
                .collect(),
        ));
        let router =
            router::run::start_on(router_config, listeners.router, listeners.admin).await?;
        let servers = [
            monolith::server_with(listeners.monolith, monolith_pool, monolith_options)?,
            catalog_service::server(listeners.catalog, catalog_pool, catalog_options)?,
            wishlist_service::server(listeners.wishlist, wishlist_pool, wishlist_options)?,
        ];
        let handles: Vec<_> = servers.iter().map(|s| s.handle()).collect();
        let running: Vec<_> = servers.into_iter().map(tokio::spawn).collect();
        phase.done("router, monolith, catalog, wishlist");
        if args.cutover {
            let phase = progress.phase("cutting over");
            cut_over(&router, &migrations).await?;
            phase.done("the services own their writes");
        }
        print!("{banner}");
        // Last: a script that waits for this line finds the stack serving (and cut over).
        println!("Press Ctrl-C to stop.");
        shutdown_signal().await;
        eprintln!("fig: stopping...");
        router.stop().await;
        for handle in handles {
            handle.stop(true).await;
        }
        for server in running {
            server.await??;
        }
        metrics_server.abort();
        replicating.stop().await;
        reports.stop().await;
        anyhow::Ok(())
    })
}

/// Waits for `until` (the pipelines streaming), showing their initial copies' progress in
/// `phase`; returns the phase and the rows copied.
async fn copying(
    mut phase: Phase,
    metrics: &[Arc<replication::metrics::PipelineMetrics>],
    until: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<(Phase, u64)> {
    let sum = || {
        metrics
            .iter()
            .map(|m| m.copy_progress())
            .fold((0, 0), |(d, t), (dm, tm)| (d + dm, t + tm))
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tokio::pin!(until);
    loop {
        tokio::select! {
            done = &mut until => {
                done?;
                return Ok((phase, sum().0));
            }
            _ = tick.tick() => {
                let (done, total) = sum();
                phase.progress(done, total, "rows");
            }
        }
    }
}

/// `--cutover`: every capability the monolith still owns flips to its service, as
/// `fig migrate CAP cutover` would do it.
async fn cut_over(
    router: &router::run::Running,
    migrations: &router::migrate::Migrations,
) -> anyhow::Result<()> {
    use router::migrate::{Direction, Outcome};
    let flipper = router
        .flipper
        .as_ref()
        .context("the router runs without migrations")?;
    for m in &migrations.movable {
        let outcome = flipper
            .flip(&m.capability, Direction::Cutover, "fig", "fig up --cutover")
            .await?;
        if let Outcome::Flipped { flip, .. } = &outcome
            && flip.outcome != "done"
        {
            anyhow::bail!(
                "cutting {} over failed at step {}: {}",
                m.capability,
                flip.step,
                flip.error.as_deref().unwrap_or("unknown error")
            );
        }
        eprintln!(
            "fig: {} cut over: its service owns the writes",
            m.capability
        );
    }
    Ok(())
}

pub(crate) async fn shutdown_signal() {
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
