//! Runs the MusicCorp monolith: `MONOLITH_DATABASE_URL=postgres://... monolith`.

use anyhow::Context;
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
        platform::serve::migrate(&config.database_url, MIGRATIONS).map_err(anyhow::Error::msg)?;
    }
    let pool = monolith::build_pool(&config.database_url, config.pool)?;
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "monolith listening");
    let server = monolith::server(listener, pool, config.workers)?;
    platform::serve::stop_on_signal(server.handle());
    server.await?;
    Ok(())
}
