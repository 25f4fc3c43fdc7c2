//! Keeps an instance's live toggles and write ownership equal to the store: a reload on every
//! `NOTIFY router_toggles` / `NOTIFY router_ownership` (so a change reaches every instance within
//! milliseconds), and a periodic full reload as a safety net for notifications lost while
//! disconnected. After each ownership reload the instance acknowledges the version it applies.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use platform::{Pool, blocking};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::ownership::{self, LiveOwners};
use crate::store::{self, StoreError};
use crate::toggles::{LiveToggles, ToggleSet, wire};

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

/// What an instance follows in the `router` database.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The toggles, when they come from the database (`None` when an Unleash server is their
    /// source: see [`spawn_unleash`]).
    pub toggles: Option<Arc<LiveToggles>>,
    /// The write ownership: always from the database, whatever the toggles' source, since the
    /// flip that changes it fences the databases and must hear every instance acknowledge.
    pub owners: Arc<LiveOwners>,
    /// This instance's name, under which it acknowledges the ownership version it applies.
    pub instance: String,
}

impl Followed {
    /// Reloads the toggles, if they are followed here. On failure the last good ones stay live.
    async fn reload_toggles(&self, pool: &Pool) -> Result<(), String> {
        match &self.toggles {
            Some(live) => reload(pool, live)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Reloads the ownership and acknowledges the live version. Every reload acknowledges, the
    /// periodic one too, so the acknowledgement's time is this instance's heartbeat.
    async fn reload_ownership(&self, pool: &Pool) -> Result<(), String> {
        ownership::reload_and_ack(pool, &self.owners, &self.instance)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Listens for toggle and ownership changes on `database_url` (one connection for both
/// channels, over TLS as its `sslmode` and `sslrootcert` say) and reloads what changed;
/// reconnects when the connection drops. Runs until the runtime stops.
pub fn spawn(
    pool: Pool,
    followed: Followed,
    database_url: String,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = listen(&pool, &followed, &database_url, every).await {
                tracing::warn!(error = %e, "toggle and ownership listener lost its connection; reconnecting");
                // The safety net holds while LISTEN is down: reload through the pool.
                if let Err(e) = followed.reload_toggles(&pool).await {
                    tracing::warn!(error = %e, "toggle reload failed");
                }
                if let Err(e) = followed.reload_ownership(&pool).await {
                    tracing::warn!(error = %e, "write ownership reload failed");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Which channels were notified since the last reload.
#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    toggles: bool,
    ownership: bool,
}

impl Pending {
    /// Notes one notification: `true` for the ownership channel, `false` for the toggles'.
    fn add(&mut self, ownership: bool) {
        if ownership {
            self.ownership = true;
        } else {
            self.toggles = true;
        }
    }
}

async fn listen(
    pool: &Pool,
    followed: &Followed,
    database_url: &str,
    every: Duration,
) -> Result<(), String> {
    let (config, tls) = pgtls::tokio_postgres_config(database_url).map_err(|e| e.to_string())?;
    let (client, mut connection) = config
        .connect(tls)
        .await
        .map_err(|e| pgtls::with_causes(&e))?;
    // Each notification as whether it is on the ownership channel.
    let (tx, mut changed) = mpsc::unbounded_channel::<bool>();
    // The connection must be polled by hand to see notifications.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.channel() == ownership::CHANNEL).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let mut statements = format!("LISTEN {};", ownership::CHANNEL);
    if followed.toggles.is_some() {
        statements.push_str(&format!("LISTEN {};", store::CHANNEL));
    }
    client
        .batch_execute(&statements)
        .await
        .map_err(|e| e.to_string())?;
    // Anything changed while we were not listening.
    followed.reload_toggles(pool).await?;
    followed.reload_ownership(pool).await?;
    let mut tick = tokio::time::interval(every);
    loop {
        let pending = tokio::select! {
            got = changed.recv() => {
                let Some(first) = got else {
                    driver.abort();
                    return Err("notification stream ended".into());
                };
                // Several notifications may be queued; one reload per channel covers them all.
                let mut pending = Pending::default();
                pending.add(first);
                while let Ok(next) = changed.try_recv() {
                    pending.add(next);
                }
                pending
            }
            _ = tick.tick() => Pending { toggles: true, ownership: true },
        };
        // Ownership first: a held write is waiting on it.
        if pending.ownership
            && let Err(e) = followed.reload_ownership(pool).await
        {
            tracing::warn!(error = %e, "write ownership reload failed");
        }
        if pending.toggles
            && let Err(e) = followed.reload_toggles(pool).await
        {
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
        .header(wire::CLIENT_SPEC_HEADER, wire::CLIENT_SPEC)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !reply.status().is_success() {
        return Err(format!("answered {}", reply.status()));
    }
    let body = reply.bytes().await.map_err(|e| e.to_string())?;
    let features = crate::toggles::parse_features(&body).map_err(|e| e.to_string())?;
    let current = live.load();
    if wire::to_json(&features) == wire::to_json(current.features()) {
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
