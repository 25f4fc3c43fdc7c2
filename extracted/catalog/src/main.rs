//! Runs the catalog service: `CATALOG_DATABASE_URL=postgres://... catalog-service`.

use anyhow::Context;
use catalog_service::{Config, MIGRATIONS};

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
    let pool = platform::build_pool(&config.database_url, config.pool)?;
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, mode = config.options.write_mode.as_str(), "catalog service listening");
    let server = catalog_service::server(listener, pool, config.options)?;
    platform::serve::stop_on_signal(server.handle());
    server.await?;
    Ok(())
}
