//! Starting a router instance: the data port (our HTTP/1.1 core), the admin port (actix-web), and the toggle
//! and write-ownership sync, all on the current Tokio runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use platform::PoolConfig;

use crate::admin::{self, Admin, AdminToken};
use crate::migrate::Flipper;
use crate::ownership;
use crate::proxy::{self, Router};
use crate::routes::RouteTable;
use crate::store;
use crate::sync;
use crate::toggles::{LiveToggles, ToggleSet};

#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where operators connect (the admin API and the Unleash client API).
    pub admin_listen: SocketAddr,
    /// The `router` database holding toggles and their history, and the write ownership
    /// (which comes from it whatever `source` says).
    pub database_url: String,
    /// The admin bearer token.
    pub token: String,
    pub table: RouteTable,
    /// This instance's name (in `Via`, to detect loops).
    pub instance: String,
    /// The safety-net full reload, besides NOTIFY.
    pub reload_every: Duration,
    /// The router database, or an Unleash server.
    pub source: sync::Source,
    /// The data path's connection limit and timeouts.
    pub limits: proxy::Limits,
    /// Record a sample of routed requests to a file (`fig replay` reads it).
    pub record: Option<crate::record::RecordSettings>,
    /// The capabilities whose writes this instance can flip (`/admin/migrations`); none
    /// without.
    pub migrations: Option<crate::migrate::Migrations>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("router database: {0}")]
    Database(String),
    #[error("recording requests to {file}: {source}")]
    Record {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A started instance; dropping it leaves the tasks running until the runtime ends, `stop`
/// ends them.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub router: Arc<Router>,
    /// Runs this instance's flips, when it was started with migrations.
    pub flipper: Option<Arc<Flipper>>,
    admin: ServerHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(self) {
        self.admin.stop(true).await;
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds `listen` and `admin_listen`, then starts.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let bind = |addr: SocketAddr| {
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })
    };
    let data = bind(config.listen)?;
    let admin = bind(config.admin_listen)?;
    start_on(config, data, admin).await
}

/// Starts on listeners the caller bound (so it could print their addresses first).
pub async fn start_on(
    config: Config,
    data: std::net::TcpListener,
    admin_listener: std::net::TcpListener,
) -> Result<Running, StartError> {
    platform::serve::migrate(&config.database_url, store::MIGRATIONS)
        .map_err(StartError::Database)?;
    let pool = platform::build_pool(
        &config.database_url,
        PoolConfig {
            max_size: 8,
            ..PoolConfig::default()
        },
    )
    .map_err(|e| StartError::Database(e.to_string()))?;
    let live = Arc::new(LiveToggles::new(ToggleSet::empty()));
    sync::reload(&pool, &live)
        .await
        .map_err(|e| StartError::Database(e.to_string()))?;
    let mut router = Router::new(Arc::new(config.table), live.clone(), &config.instance)
        .with_limits(config.limits);
    if let Some(settings) = &config.record {
        let recorder =
            crate::record::Recorder::start(settings).map_err(|source| StartError::Record {
                file: settings.file.display().to_string(),
                source,
            })?;
        router = router.with_recorder(recorder);
    }
    let router = Arc::new(router);
    // Writes must go to the stored owner from the first request on, and the flip must see this
    // instance (and what it applies) before it serves any.
    ownership::reload_and_ack(&pool, &router.owners, &config.instance)
        .await
        .map_err(|e| StartError::Database(e.to_string()))?;

    let addr = data.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.admin_listen,
            source,
        })?;
    data.set_nonblocking(true)
        .map_err(|source| StartError::Bind { addr, source })?;
    let data = tokio::net::TcpListener::from_std(data)
        .map_err(|source| StartError::Bind { addr, source })?;

    let mut tasks = vec![
        tokio::spawn(proxy::serve(data, router.clone())),
        crate::reports::spawn_flusher(pool.clone(), router.shadows.clone()),
    ];
    let mut followed = sync::Followed {
        toggles: Some(live.clone()),
        owners: router.owners.clone(),
        instance: config.instance.clone(),
    };
    if let sync::Source::Unleash {
        api_url,
        token,
        every,
    } = &config.source
    {
        // The toggles from Unleash; the ownership still from the router database.
        followed.toggles = None;
        tasks.push(sync::spawn_unleash(
            live,
            api_url.clone(),
            token.clone(),
            *every,
        ));
    }
    tasks.push(sync::spawn(
        pool.clone(),
        followed,
        config.database_url.clone(),
        config.reload_every,
    ));

    let managed_elsewhere = match &config.source {
        sync::Source::Store => None,
        sync::Source::Unleash { api_url, .. } => Some(api_url.clone()),
    };
    let flipper = config.migrations.map(|migrations| {
        Arc::new(Flipper::new(
            pool.clone(),
            &config.database_url,
            router.table.clone(),
            migrations,
        ))
    });
    let flips = flipper.clone().map(web::Data::new);
    let state = web::Data::new(Admin {
        pool,
        router: router.clone(),
        managed_elsewhere,
    });
    let token = web::Data::new(AdminToken(Arc::from(config.token.as_str())));
    let server = HttpServer::new(move || {
        let app = App::new().app_data(state.clone()).app_data(token.clone());
        let app = match &flips {
            Some(flips) => app.app_data(flips.clone()),
            None => app,
        };
        app.wrap(from_fn(admin::require_token))
            .wrap(platform::json_error_handlers())
            .wrap(from_fn(platform::head::head_as_get))
            .configure(admin::configure)
    })
    .workers(1)
    .disable_signals()
    .listen(admin_listener)
    .map_err(|source| StartError::Bind {
        addr: admin_addr,
        source,
    })?
    .run();
    let handle = server.handle();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "admin server failed");
        }
    }));
    Ok(Running {
        addr,
        admin_addr,
        router,
        flipper,
        admin: handle,
        tasks,
    })
}
