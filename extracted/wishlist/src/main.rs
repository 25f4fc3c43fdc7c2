//! Runs the wishlist service: `WISHLIST_DATABASE_URL=postgres://... wishlist-service`.

use platform::serve::{Binary, init_logging};
use wishlist_service::{Config, MIGRATIONS};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let config = Config::from_env()?;
    Binary {
        name: "wishlist",
        basics: &config.basics,
    }
    .run(MIGRATIONS, |listener, pool| {
        wishlist_service::server_fed_by(
            listener,
            pool,
            config.options.clone(),
            &config.position_pipeline,
        )
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}
