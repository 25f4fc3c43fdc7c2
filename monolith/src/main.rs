//! Runs the MusicCorp monolith: `MONOLITH_DATABASE_URL=postgres://... monolith`.

use monolith::{Config, MIGRATIONS};
use platform::serve::{Binary, init_logging};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let config = Config::from_env()?;
    Binary {
        name: "monolith",
        basics: &config.basics,
    }
    .run(MIGRATIONS, |listener, pool| {
        monolith::server_with(listener, pool, config.options.clone())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}
