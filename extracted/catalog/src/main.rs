//! Runs the catalog service: `CATALOG_DATABASE_URL=postgres://... catalog-service`.

use catalog_service::{Config, MIGRATIONS};
use platform::serve::{Binary, init_logging};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let config = Config::from_env()?;
    Binary {
        name: "catalog",
        basics: &config.basics,
    }
    .run(MIGRATIONS, |listener, pool| {
        catalog_service::server_fed_by(listener, pool, config.options, &config.position_pipeline)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}
