//! Runs one router instance: `ROUTER_DATABASE_URL=... ROUTER_TOKEN=... router`.

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    platform::serve::init_logging();
    let (config, threads) = router::config::from_env()?;
    // One data-path thread gets a current-thread runtime: no work-stealing machinery to pay for
    // on every wake-up.
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let running = router::run::start(config)
            .await
            .context("starting the router")?;
        tracing::info!(addr = %running.addr, admin = %running.admin_addr, "router listening");
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        running.stop().await;
        anyhow::Ok(())
    })
}
