//! Runs the MusicCorp monolith: `MONOLITH_DATABASE_URL=postgres://... monolith`.

use anyhow::Context;
use diesel::Connection;
use diesel_migrations::MigrationHarness;
use monolith::{Config, MIGRATIONS};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = Config::from_env()?;
    if config.migrate {
        let mut conn = diesel::PgConnection::establish(&config.database_url)
            .context("connecting to run migrations")?;
        conn.run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
    }
    let pool = monolith::build_pool(&config.database_url, config.pool)?;
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "monolith listening");
    let server = monolith::server(listener, pool, config.workers)?;
    let handle = server.handle();
    tokio_shutdown(handle);
    server.await?;
    Ok(())
}

/// Stops gracefully on Ctrl-C or SIGTERM (the server's own signal handling is off so that `fig`
/// can own it when it embeds the monolith).
fn tokio_shutdown(handle: actix_web::dev::ServerHandle) {
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
