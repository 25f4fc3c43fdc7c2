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

/// Everything a service binary does: migrations, pool, bind, serve until a signal.
pub struct Binary<'a> {
    pub name: &'static str,
    pub basics: &'a crate::config::Basics,
}

impl Binary<'_> {
    pub async fn run<S, F>(self, migrations: S, build: F) -> Result<(), Box<dyn std::error::Error>>
    where
        S: MigrationSource<Pg>,
        F: FnOnce(std::net::TcpListener, crate::Pool) -> std::io::Result<actix_web::dev::Server>,
    {
        let basics = self.basics;
        if basics.migrate {
            migrate(&basics.database_url, migrations)?;
        }
        let pool = crate::build_pool(&basics.database_url, basics.pool)?;
        let listener = std::net::TcpListener::bind(basics.listen)
            .map_err(|e| format!("binding {}: {e}", basics.listen))?;
        tracing::info!(service = self.name, addr = %listener.local_addr()?, "listening");
        let server = build(listener, pool)?;
        stop_on_signal(server.handle());
        server.await?;
        Ok(())
    }
}

/// Structured logs to stdout (where scripts and tests that start a server read its address),
/// filtered by `RUST_LOG` (default info).
pub fn init_logging() {
    crate::logging::init("RUST_LOG", "info", crate::logging::Output::Stdout);
}
