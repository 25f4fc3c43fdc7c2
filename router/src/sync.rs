//! Keeps an instance's live toggles equal to the store: a reload on every `NOTIFY
//! router_toggles` (so a change reaches every instance within milliseconds), and a periodic full
//! reload as a safety net for notifications lost while disconnected.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use platform::{Pool, blocking};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::store::{self, StoreError};
use crate::toggles::{LiveToggles, ToggleSet};

/// Loads the store and installs it if it is newer than what is live. Returns the live version.
pub async fn reload(pool: &Pool, live: &LiveToggles) -> Result<i64, StoreError> {
    let (version, features) = blocking(pool, store::load).await?;
    let current = live.load().version;
    if version <= current {
        return Ok(current);
    }
    match ToggleSet::new(features, version) {
        Ok(set) => {
            if live.store_if_newer(set) {
                tracing::info!(version, "toggles applied");
            }
            Ok(live.load().version)
        }
        Err(e) => {
            // The admin API validates before storing, so this means a hand edit: keep serving
            // the last good generation and say so.
            tracing::error!(version, error = %e, "stored toggles are invalid; keeping the previous ones");
            Ok(current)
        }
    }
}

/// Listens for changes on `database_url` and reloads; reconnects when the connection drops.
/// Runs until the runtime stops.
pub fn spawn(
    pool: Pool,
    live: Arc<LiveToggles>,
    database_url: String,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = listen(&pool, &live, &database_url, every).await {
                tracing::warn!(error = %e, "toggle listener lost its connection; reconnecting");
                // The safety net holds while LISTEN is down: reload through the pool.
                if let Err(e) = reload(&pool, &live).await {
                    tracing::warn!(error = %e, "toggle reload failed");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

async fn listen(
    pool: &Pool,
    live: &LiveToggles,
    database_url: &str,
    every: Duration,
) -> Result<(), String> {
    let (client, mut connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut changed) = mpsc::unbounded_channel::<()>();
    // The connection must be polled by hand to see notifications.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", store::CHANNEL))
        .await
        .map_err(|e| e.to_string())?;
    // Anything changed while we were not listening.
    reload(pool, live).await.map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            got = changed.recv() => {
                if got.is_none() {
                    driver.abort();
                    return Err("notification stream ended".into());
                }
                // Several notifications may be queued; one reload covers them all.
                while changed.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
        }
        if let Err(e) = reload(pool, live).await {
            tracing::warn!(error = %e, "toggle reload failed");
        }
    }
}

/// Where an instance's toggles come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The `router` database (the admin API changes them).
    Store,
    /// An Unleash server (or anything serving its client API, another router included), polled;
    /// the admin API then only reads.
    Unleash {
        api_url: String,
        token: String,
        every: Duration,
    },
}

/// Polls `{api_url}/client/features` and installs each new, valid document as the next
/// generation. An unreachable server or an invalid document keeps the last good toggles.
pub fn spawn_unleash(
    live: Arc<LiveToggles>,
    api_url: String,
    token: String,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let url = format!("{}/client/features", api_url.trim_end_matches('/'));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = poll_once(&http, &url, &token, &live).await {
                tracing::warn!(url = %url, error = %e, "polling Unleash failed; keeping the current toggles");
            }
        }
    })
}

async fn poll_once(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    live: &LiveToggles,
) -> Result<(), String> {
    let reply = http
        .get(url)
        .header("authorization", token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !reply.status().is_success() {
        return Err(format!("answered {}", reply.status()));
    }
    let body = reply.bytes().await.map_err(|e| e.to_string())?;
    let features = crate::toggles::parse_features(&body).map_err(|e| e.to_string())?;
    let current = live.load();
    if serde_json::to_value(&features).ok() == serde_json::to_value(current.features()).ok() {
        return Ok(());
    }
    let set = ToggleSet::new(features, current.version + 1).map_err(|e| e.to_string())?;
    if live.store_if_newer(set) {
        tracing::info!(
            version = current.version + 1,
            "toggles from Unleash applied"
        );
    }
    Ok(())
}
