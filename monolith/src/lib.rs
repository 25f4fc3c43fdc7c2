//! MusicCorp, a modular monolith: catalog, wishlist, customers and orders in one process and one
//! PostgreSQL database, a schema per module. It is the system the toolkit migrates away from, so
//! its module boundaries are kept strict: a module reaches another only through its functions.

pub mod catalog;
pub mod config;
pub mod customers;
pub mod orders;
pub mod seed;
pub mod wishlist;

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use config::Config;
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

/// The HTTP server on an already bound listener (port 0 in tests), not yet awaited.
pub fn server(listener: TcpListener, pool: Pool, workers: usize) -> std::io::Result<Server> {
    let pool = web::Data::new(pool);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .wrap(platform::json_error_handlers())
            .configure(configure)
    })
    .workers(workers.max(1))
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}
