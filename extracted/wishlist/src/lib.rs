//! MusicCorp's wishlist as its own service: the monolith's wishlist module moved out, on its own
//! database, serving the same HTTP contract (docs/api.md). The SQL join with the catalog became
//! one batched HTTP call to the catalog, with a timeout and a degraded answer when it fails.

pub mod clients;
pub mod config;
pub mod wishlist;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use platform::fence::{self, Fences};
use platform::parallel_run::{Positions, Source};
use platform::{Db, Pool, WriteMode};
use serde_json::json;

pub use clients::{CatalogClient, CustomerDirectory};
pub use config::Config;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/wishlist");
pub const SERVICE: &str = "wishlist";
/// The pipeline that feeds a replica's table from the monolith (`replication/config/musiccorp.toml`).
pub const POSITION_PIPELINE: &str = "wishlist";

/// Where the services the wishlist depends on are, and how long to wait for them.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// Base URL serving `GET /catalog/albums/batch` (the router, or the catalog's current owner).
    pub catalog_url: String,
    /// Base URL serving `GET /customers/{id}` (the router, or the monolith).
    pub customers_url: String,
    /// Per call; default 500 ms.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub workers: usize,
    pub write_mode: WriteMode,
    pub upstreams: Upstreams,
}

/// What every handler shares (the database is reached through `platform::Db`).
#[derive(Debug)]
pub struct State {
    pub catalog: CatalogClient,
    pub customers: CustomerDirectory,
    /// Reads answered without album details, for the status endpoint and alerts.
    pub degraded_reads: AtomicU64,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    platform::health::configure(cfg);
    cfg.service(web::resource("/status").route(web::get().to(status)));
    wishlist::http::configure(cfg);
}

async fn status(db: Db, state: web::Data<State>) -> HttpResponse {
    let mode = db
        .run(|c| fence::read(c, SERVICE).map_err(platform::db::DbError::from))
        .await
        .ok()
        .map(|owned| owned.mode());
    HttpResponse::Ok().json(json!({
        "service": SERVICE,
        "version": env!("CARGO_PKG_VERSION"),
        "write_mode": mode,
        "degraded_reads": state.degraded_reads.load(Ordering::Relaxed),
    }))
}

/// The service on an already bound listener. A replica reports the position of the pipeline
/// [`POSITION_PIPELINE`]. The fence starts in `options.write_mode` unless the database already
/// records who owns the writes.
pub fn server(listener: TcpListener, pool: Pool, options: Options) -> std::io::Result<Server> {
    server_fed_by(listener, pool, options, POSITION_PIPELINE)
}

/// Like [`server`]; as a replica, it reports the applied position of `pipeline`.
pub fn server_fed_by(
    listener: TcpListener,
    pool: Pool,
    options: Options,
    pipeline: &str,
) -> std::io::Result<Server> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    let up = &options.upstreams;
    let state = web::Data::new(State {
        catalog: CatalogClient::new(http.clone(), &up.catalog_url, up.timeout),
        customers: CustomerDirectory::new(http, &up.customers_url, up.timeout),
        degraded_reads: AtomicU64::new(0),
    });
    fence::install_on(&pool, SERVICE, options.write_mode)?;
    let pool = web::Data::new(pool);
    let fences = web::Data::new(Fences::single(SERVICE));
    // `X-Fig-Db-Position`: the owner's own WAL, or a replica's feeding pipeline.
    let positions = web::Data::new(Positions::single(Source::of_service(
        options.write_mode,
        pipeline,
    )));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .app_data(state.clone())
            .app_data(fences.clone())
            .app_data(positions.clone())
            .wrap(platform::json_error_handlers())
            // Outermost: a bad dry-run header is refused before any handler, and every answer
            // (rewritten errors too) gets its position.
            .wrap(from_fn(platform::parallel_run::middleware))
            // HEAD is a GET without the body, on every resource.
            .wrap(from_fn(platform::head::head_as_get))
            .configure(configure)
    })
    .workers(options.workers.max(1))
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}
