//! MusicCorp, a modular monolith: catalog, wishlist, customers and orders in one process and one
//! PostgreSQL database, a schema per module. It is the system the toolkit migrates away from, so
//! its module boundaries are kept strict: a module reaches another only through its functions.
//!
//! Each module has the same files: `mod.rs` (its published interface), `domain.rs` (typed ids,
//! pure rules), `db.rs` (its tables and queries, private), `http.rs` (wire types and handlers)
//! and `error.rs` (one enum, one conversion to the envelope), so an extraction reads as a move.
//!
//! What each owns, and whom it calls:
//!
//! - `catalog`: `catalog.artists`, `catalog.albums`; calls nobody.
//! - `customers`: `customers.customers`; calls nobody.
//! - `wishlist`: `wishlist.items`; calls `customers::customer_exists` and
//!   `catalog::albums_by_ids`.
//! - `orders`: `orders.orders`, `order_lines`, `idempotency_keys` and `outbox`; calls
//!   `customers::customer_exists`, and while the monolith owns the capability's writes
//!   `catalog::take_stock` and `wishlist::remove_albums`; once a service owns them,
//!   [`integrations::StockClient`] and [`integrations::WishlistClient`] (through the outbox).
//!
//! These calls are the seams where extraction turns function calls into HTTP calls:
//! `catalog::albums_by_ids` already has the shape of `GET /catalog/albums/batch`.

pub mod catalog;
pub mod config;
pub mod customers;
pub mod integrations;
pub mod orders;
pub mod seed;
pub mod wishlist;

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use config::Config;
pub use integrations::{Backend, Integrations};

use integrations::{StockClient, WishlistClient};
use orders::outbox::Delivery;
use orders::{OrdersDeps, Removal};
use platform::fence::Fences;
use platform::parallel_run::{Positions, Source};
pub use platform::{self, Pool, build_pool};

/// The monolith's schema, one migration per module.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/monolith");

/// Every route of the monolith.
pub fn configure(cfg: &mut web::ServiceConfig) {
    platform::health::configure(cfg);
    catalog::http::configure(cfg);
    customers::http::configure(cfg);
    wishlist::http::configure(cfg);
    orders::http::configure(cfg);
}

/// How the monolith runs: HTTP workers, and where order placement reaches stock and wishlists.
#[derive(Debug, Clone)]
pub struct Options {
    pub workers: usize,
    pub integrations: Integrations,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            integrations: Integrations::default(),
        }
    }
}

/// The HTTP server on an already bound listener (port 0 in tests), everything local.
pub fn server(listener: TcpListener, pool: Pool, workers: usize) -> std::io::Result<Server> {
    server_with(
        listener,
        pool,
        Options {
            workers,
            ..Options::default()
        },
    )
}

/// The replication pipelines that feed the monolith's copy of a capability once its service owns
/// the writes (`fig up --cutover` names them `<forward name>_reverse`). They matter only for the
/// `X-Fig-Db-Position` of that capability's paths, see [`positions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversePipelines {
    /// Feeds `catalog.*` from the catalog service; default `catalog_reverse`.
    pub catalog: String,
    /// Feeds `wishlist.items` from the wishlist service; default `wishlist_reverse`.
    pub wishlist: String,
}

impl Default for ReversePipelines {
    fn default() -> Self {
        ReversePipelines {
            catalog: "catalog_reverse".into(),
            wishlist: "wishlist_reverse".into(),
        }
    }
}

/// Where each path's `X-Fig-Db-Position` comes from. The monolith owns customers and orders for
/// good. It owns the catalog and the wishlist until their services do, which is exactly when it
/// reaches them remotely (a `Remote` stock backend means the catalog service owns stock, a
/// `Remote` wishlist backend that the wishlist service owns wishlists, [ADR 0006]): from then on
/// its own copy of that capability is a replica, fed by the reverse pipeline, and reports that
/// pipeline's applied position (none while the pipeline has no row here).
///
/// [ADR 0006]: ../../docs/adr/0006-stock-reservation-saga.md
pub fn positions(integrations: &Integrations, reverse: &ReversePipelines) -> Positions {
    let source = |backend: &Backend, pipeline: &str| {
        if backend.monolith_owns_at_start() {
            Source::Owner
        } else {
            Source::Replica {
                pipeline: pipeline.to_string(),
            }
        }
    };
    Positions::single(Source::Owner)
        .with_prefix("/catalog", source(&integrations.stock, &reverse.catalog))
        .with_prefix(
            "/wishlists",
            source(&integrations.wishlist, &reverse.wishlist),
        )
}

/// A started monolith: the HTTP server, and the outbox worker running beside it.
pub struct Started {
    pub server: Server,
    /// Stop it after the server (see [`orders::outbox::Worker::stop`]), so that what the last
    /// requests owe is delivered or left due.
    pub outbox: orders::outbox::Worker,
}

/// The HTTP server plus the outbox worker, which runs on the current Tokio runtime until the
/// server has stopped; then it finishes or releases the message in flight.
pub fn server_with(listener: TcpListener, pool: Pool, options: Options) -> std::io::Result<Server> {
    start(listener, pool, options).map(|started| started.server)
}

/// Like [`server_with`], with a handle to stop the outbox worker and wait for it. Refuses
/// integrations whose outbox lease could outlast a stock reservation ([`Integrations::check`]).
pub fn start(listener: TcpListener, pool: Pool, options: Options) -> std::io::Result<Started> {
    start_with(listener, pool, options, &ReversePipelines::default())
}

/// Like [`start`], naming the reverse pipelines whose positions the extracted capabilities'
/// paths report ([`positions`]).
pub fn start_with(
    listener: TcpListener,
    pool: Pool,
    options: Options,
    reverse: &ReversePipelines,
) -> std::io::Result<Started> {
    let positions = web::Data::new(positions(&options.integrations, reverse));
    let integrations = options.integrations;
    integrations
        .check()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // Who owns each movable capability's writes, recorded once; a flip changes it later.
    for (capability, backend) in [
        (integrations::CATALOG, &integrations.stock),
        (integrations::WISHLIST, &integrations.wishlist),
    ] {
        let first = if backend.monolith_owns_at_start() {
            platform::WriteMode::Owner
        } else {
            platform::WriteMode::Replica
        };
        platform::fence::install_on(&pool, capability, first)?;
    }
    let fences = web::Data::new(
        Fences::default()
            .with_prefix("/catalog", integrations::CATALOG)
            .with_prefix("/wishlists", integrations::WISHLIST),
    );
    let http = integrations::http_client(integrations.timeout)?;
    let stock = integrations
        .stock
        .base_url()
        .map(|url| StockClient::new(http.clone(), url, integrations.reservation_ttl));
    let wishlist = integrations
        .wishlist
        .base_url()
        .map(|url| WishlistClient::new(http.clone(), url));
    let removal = if wishlist.is_some() {
        Removal::LocalOrOutbox
    } else {
        Removal::LocalOnly
    };
    // The server's app data holds the only `Outbox`es: once the server is gone, the worker stops.
    let (outbox, worker) = orders::outbox::spawn_worker(Delivery {
        pool: pool.clone(),
        integrations,
        stock: stock.clone(),
        wishlist,
    });
    let deps = web::Data::new(OrdersDeps {
        stock,
        removal,
        outbox,
    });
    let pool = web::Data::new(pool);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .app_data(deps.clone())
            .app_data(positions.clone())
            .app_data(fences.clone())
            .wrap(platform::json_error_handlers())
            // Outermost, so that every answer gets its position, rewritten errors included.
            .wrap(from_fn(platform::parallel_run::middleware))
            // HEAD is a GET without the body, on every resource.
            .wrap(from_fn(platform::head::head_as_get))
            .configure(configure)
    })
    .workers(options.workers.max(1))
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(Started {
        server,
        outbox: worker,
    })
}
