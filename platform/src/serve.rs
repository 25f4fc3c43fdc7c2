//! What every service binary does at start and stop.

use actix_web::dev::ServerHandle;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::{Connection, PgConnection};
use diesel_migrations::MigrationHarness;

/// Runs pending migrations on `database_url`.
pub fn migrate<S: MigrationSource<Pg>>(database_url: &str, source: S) -> Result<(), String> {
    let mut conn =
        PgConnection::establish(database_url).map_err(|e| format!("connecting to migrate: {e}"))?;
    conn.run_pending_migrations(source)
        .map(|_| ())
        .map_err(|e| format!("migrations failed: {e}"))
}

/// Stops the server gracefully on Ctrl-C or SIGTERM. Servers are built with their own signal
/// handling off, so that a host embedding several (like `fig up`) owns the signals.
pub fn stop_on_signal(handle: ServerHandle) {
    use actix_web::rt::signal::unix::{SignalKind, signal};
    actix_web::rt::spawn(async move {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                let ctrl_c = Box::pin(actix_web::rt::signal::ctrl_c());
                let _ = futures_util::future::select(ctrl_c, Box::pin(term.recv())).await;
            }
            Err(_) => {
                let _ = actix_web::rt::signal::ctrl_c().await;
            }
        }
        handle.stop(true).await;
    });
}
