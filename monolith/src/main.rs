//! Runs the MusicCorp monolith: `MONOLITH_DATABASE_URL=postgres://... monolith`.

use monolith::{Config, MIGRATIONS};
use platform::serve::{Binary, init_logging};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let config = Config::from_env()?;
    let mut outbox = None;
    let served = Binary {
        name: "monolith",
        basics: &config.basics,
    }
    .run(MIGRATIONS, |listener, pool| {
        let started =
            monolith::start_with(listener, pool, config.options.clone(), &config.reverse)?;
        outbox = Some(started.outbox);
        Ok(started.server)
    })
    .await;
    // The server has stopped (a signal, or it failed): the outbox delivers or releases the message
    // in flight before the process exits, so another process can take it over at once.
    if let Some(outbox) = outbox {
        outbox.stop().await;
    }
    served.map_err(|e| anyhow::anyhow!("{e}"))
}
