//! MusicCorp's catalog as its own service: the monolith's catalog module moved out with its
//! layout intact, on its own database, serving the same HTTP contract (docs/api.md), plus the
//! stock reservations an order saga needs once the catalog owns its writes.
//!
//! [`server_fed_by`] ([`server`] with the default pipeline) records the `catalog` write fence
//! from [`Options::write_mode`] on a first start, admits every write request for it, rewrites
//! actix's errors into the envelope, and runs the reservation expiry sweeper beside the server,
//! whose writes are admitted too (a side that does not own the writes skips). `GET /status`
//! reports the live fence and the reservations held.

pub mod catalog;
pub mod config;
pub mod faults;
pub mod reservations;

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use platform::fence::{self, Fences};
use platform::parallel_run::{Positions, Source};
use platform::{Db, Pool, WriteMode, blocking};
use serde_json::json;

pub use config::Config;
pub use faults::Faults;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/catalog");
pub const SERVICE: &str = "catalog";
/// The pipeline that feeds a replica's tables from the monolith (`replication/config/musiccorp.toml`).
pub const POSITION_PIPELINE: &str = "catalog";

#[derive(Debug, Clone)]
pub struct Options {
    pub workers: usize,
    pub write_mode: WriteMode,
    /// How often expired reservations give their stock back.
    pub sweep_every: Duration,
    /// Deliberate defects in album answers, for tests only ([`faults`]); none by default, and
    /// refused on a write owner.
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            write_mode: WriteMode::Replica,
            sweep_every: Duration::from_secs(5),
            faults: Faults::default(),
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    platform::health::configure(cfg);
    cfg.service(web::resource("/status").route(web::get().to(status)));
    catalog::http::configure(cfg);
    reservations::http::configure(cfg);
}

async fn status(db: Db) -> HttpResponse {
    let held = db.run(reservations::count_held).await.ok();
    let mode = db
        .run(|c| fence::read(c, SERVICE).map_err(platform::db::DbError::from))
        .await
        .ok()
        .map(|owned| owned.mode());
    HttpResponse::Ok().json(json!({
        "service": SERVICE,
        "version": env!("CARGO_PKG_VERSION"),
        "write_mode": mode,
        "reservations_held": held,
    }))
}

/// The service on an already bound listener, plus the reservation expiry sweeper (which writes
/// only while the service owns the catalog's writes), which stops with the runtime it was
/// started on. The fence starts in `options.write_mode` unless the database already records who
/// owns the writes. A replica reports the position of
/// the pipeline [`POSITION_PIPELINE`]. Faults on a write owner are refused (`InvalidInput`).
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
    let faulty = check_faults(&options)?;
    if faulty {
        tracing::warn!(faults = ?options.faults, "answering with deliberate defects (tests only)");
    }
    fence::install_on(&pool, SERVICE, options.write_mode)?;
    spawn_sweeper(pool.clone(), options.sweep_every);
    let pool = web::Data::new(pool);
    let fences = web::Data::new(Fences::single(SERVICE));
    // `X-Fig-Db-Position`: the owner's own WAL, or a replica's feeding pipeline.
    let positions = web::Data::new(Positions::single(Source::of_service(
        options.write_mode,
        pipeline,
    )));
    let defects = web::Data::new(options.faults);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .app_data(fences.clone())
            .app_data(positions.clone())
            .app_data(defects.clone())
            // Innermost, and only with faults: they change the handlers' answers alone.
            .wrap(Condition::new(faulty, from_fn(faults::middleware)))
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

/// Whether the service answers with faults; an error if it would while owning its writes.
fn check_faults(options: &Options) -> std::io::Result<bool> {
    let faulty = !options.faults.is_empty();
    if faulty && options.write_mode == WriteMode::Owner {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is for tests only, on a replica: a write owner answers clients",
                faults::ENV_FAULTS
            ),
        ));
    }
    Ok(faulty)
}

fn spawn_sweeper(pool: Pool, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            // Expiry writes status and stock: admitted like any write, so a replica (or a
            // fenced former owner) leaves them to the owner.
            let swept = blocking(&pool, |c| {
                platform::db::admitted(c, SERVICE, reservations::expire_due)
            });
            match swept.await {
                Ok(0) => {}
                Err(reservations::ReservationError::Db(platform::db::DbError::NotOwner(_))) => {}
                Ok(n) => tracing::info!(expired = n, "expired reservations released their stock"),
                Err(e) => tracing::warn!(error = %e, "reservation sweep failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_refused_on_a_write_owner() {
        let faults: Faults = "404:7".parse().unwrap();
        let replica = Options {
            faults: faults.clone(),
            ..Options::default()
        };
        assert!(check_faults(&replica).unwrap());
        assert!(!check_faults(&Options::default()).unwrap());
        let owner = Options {
            write_mode: WriteMode::Owner,
            faults,
            ..Options::default()
        };
        let e = check_faults(&owner).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("CATALOG_FAULTS"), "{e}");
        let owner = Options {
            write_mode: WriteMode::Owner,
            ..Options::default()
        };
        assert!(!check_faults(&owner).unwrap());
    }
}
