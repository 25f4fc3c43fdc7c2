//! Moving a capability's writes between the monolith and its service while traffic flows
//! (`POST /admin/migrations/{capability}/cutover|rollback`, `fig migrate`): the flip (`flip`),
//! its decisions ([`plan`]), its record ([`audit`]) and the streams that follow the owner
//! ([`follow`]). The write fences in the two databases ([`platform::fence`]) make it lose
//! nothing; the router's holding of writes ([`crate::ownership`]) makes it barely noticed.

pub mod api;
pub mod audit;
mod flip;
pub mod follow;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use platform::Pool;
use serde::Serialize;

use crate::ownership;
use crate::routes::{RouteTable, WriteOwner};

pub use audit::Flip;
pub use plan::{Direction, Movable, Step};

/// How long a flip's steps may take.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The stream into the new owner must apply past the cut within this, or the flip is
    /// undone (the writes are held meanwhile, so keep it well under the routers' write hold).
    pub catch_up: Duration,
    /// How long to wait for every live router to apply a hold or a release before going on.
    pub acks_within: Duration,
    /// Routers that acknowledged within this count as live.
    pub alive_within: Duration,
    /// The stream into the new owner must be running within this, before anything changes.
    pub streams_within: Duration,
    /// The new owner must answer `/readyz` within this.
    pub ready_timeout: Duration,
    /// A pause after each recorded step. Zero (the default) but in fault tests, where it widens
    /// the moments a killed process can stop in.
    pub step_pause: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            catch_up: Duration::from_secs(1),
            acks_within: Duration::from_millis(500),
            alive_within: Duration::from_secs(90),
            streams_within: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(1),
            step_pause: Duration::ZERO,
        }
    }
}

/// The capabilities this router can flip, and how.
#[derive(Debug, Clone, Default)]
pub struct Migrations {
    pub movable: Vec<Movable>,
    /// Other streams out of the two sides' databases (the reporting database's feeds): a flip
    /// also waits for those carrying its capability out of the old owner to pass the cut.
    pub feeds: Vec<replication::config::Pipeline>,
    pub settings: Settings,
}

impl Migrations {
    /// One movable capability per forward pipeline, named like it (the route table's and the
    /// fences' capability names: `catalog`, `wishlist`).
    pub fn from_pipelines(pipelines: &[replication::config::Pipeline]) -> Migrations {
        Migrations {
            movable: pipelines
                .iter()
                .map(|p| Movable {
                    capability: p.name.clone(),
                    forward: p.clone(),
                })
                .collect(),
            feeds: Vec::new(),
            settings: Settings::default(),
        }
    }

    /// A pipeline file's pipelines for `table`: those named like one of its capabilities move
    /// it, the others are feeds. An error when none names a capability.
    pub fn for_table(
        pipelines: Vec<replication::config::Pipeline>,
        table: &crate::RouteTable,
    ) -> Result<Migrations, String> {
        let (movable, feeds): (Vec<_>, Vec<_>) = pipelines
            .into_iter()
            .partition(|p| table.capabilities.iter().any(|c| c.name == p.name));
        if movable.is_empty() {
            return Err("no pipeline is named like a capability of the route table".into());
        }
        Ok(Migrations::from_pipelines(&movable).with_feeds(&feeds))
    }

    /// With these feeds (see [`Migrations::feeds`]).
    pub fn with_feeds(mut self, feeds: &[replication::config::Pipeline]) -> Migrations {
        self.feeds = feeds.to_vec();
        self
    }

    pub fn find(&self, capability: &str) -> Option<&Movable> {
        self.movable.iter().find(|m| m.capability == capability)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlipError {
    #[error("{0} is not a capability this router can migrate")]
    Unknown(String),
    #[error("a flip of {0} is running (on this or another router instance)")]
    Busy(String),
    #[error("router database: {0}")]
    Store(String),
    /// An interrupted flip could be neither finished nor undone (a database unreachable).
    #[error("an interrupted flip could not be settled: {0}")]
    Settle(String),
}

/// What a flip command did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The writes were with the requested owner already (after settling an interrupted flip,
    /// if there was one).
    AlreadyThere {
        owner: WriteOwner,
        recovered: Option<Flip>,
    },
    /// A flip ran: its record says how it ended (`done`, `undone`, `failed`).
    Flipped {
        flip: Box<Flip>,
        recovered: Option<Flip>,
    },
}

/// Runs flips for one router instance (app data of its admin API).
pub struct Flipper {
    pool: Pool,
    database_url: String,
    table: Arc<RouteTable>,
    migrations: Migrations,
    settings: Settings,
    http: reqwest::Client,
}

impl Flipper {
    pub fn new(
        pool: Pool,
        database_url: &str,
        table: Arc<RouteTable>,
        migrations: Migrations,
    ) -> Flipper {
        let http = reqwest::Client::builder()
            .timeout(migrations.settings.ready_timeout)
            .build()
            .unwrap_or_default();
        Flipper {
            pool,
            database_url: database_url.to_string(),
            table,
            settings: migrations.settings,
            migrations,
            http,
        }
    }

    pub fn migrations(&self) -> &Migrations {
        &self.migrations
    }

    /// Runs a flip to its end on its own task: a caller that goes away (a dropped HTTP request)
    /// does not stop it half way.
    pub async fn flip(
        self: &Arc<Self>,
        capability: &str,
        direction: Direction,
        actor: &str,
        reason: &str,
    ) -> Result<Outcome, FlipError> {
        let movable = self
            .migrations
            .find(capability)
            .cloned()
            .ok_or_else(|| FlipError::Unknown(capability.to_string()))?;
        let (this, actor, reason) = (Arc::clone(self), actor.to_string(), reason.to_string());
        tokio::spawn(async move { this.run(&movable, direction, &actor, &reason).await })
            .await
            .map_err(|e| FlipError::Store(format!("the flip's task failed: {e}")))?
    }

    /// The stored owner of `capability`, or the route table's when nothing is stored.
    pub async fn owner(&self, capability: &str) -> Result<WriteOwner, FlipError> {
        let rows = self.rows().await?;
        Ok(rows
            .iter()
            .find(|r| r.capability == capability)
            .map(|r| r.owner)
            .or_else(|| self.configured(capability))
            .unwrap_or(WriteOwner::Legacy))
    }

    /// Every movable capability's state and recent flips.
    pub async fn status(&self, capability: Option<&str>) -> Result<Vec<Status>, FlipError> {
        let rows = self.rows().await?;
        let mut out = Vec::new();
        for m in &self.migrations.movable {
            if capability.is_some_and(|c| c != m.capability) {
                continue;
            }
            let row = rows.iter().find(|r| r.capability == m.capability);
            let owner = row
                .map(|r| r.owner)
                .or_else(|| self.configured(&m.capability))
                .unwrap_or(WriteOwner::Legacy);
            let held = row.is_some_and(|r| r.held);
            let cap = m.capability.clone();
            let flips = flip::stored_history(&self.pool, cap, 20)
                .await
                .map_err(FlipError::Store)?;
            let flipping = flips.iter().any(|f| f.outcome == "running");
            out.push(Status {
                capability: m.capability.clone(),
                owner,
                held,
                phase: plan::phase(owner, held || flipping),
                flips,
            });
        }
        Ok(out)
    }

    async fn rows(&self) -> Result<Vec<ownership::Row>, FlipError> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            ownership::load(&mut conn)
                .map(|(_, rows)| rows)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| FlipError::Store(e.to_string()))?
        .map_err(FlipError::Store)
    }

    fn configured(&self, capability: &str) -> Option<WriteOwner> {
        self.table
            .capabilities
            .iter()
            .find(|c| c.name == capability)
            .map(|c| c.write_owner)
    }

    fn upstream(&self, capability: &str, side: WriteOwner) -> Option<String> {
        let cap = self
            .table
            .capabilities
            .iter()
            .find(|c| c.name == capability)?;
        let index = match side {
            WriteOwner::Legacy => cap.legacy,
            WriteOwner::Extracted => cap.extracted,
        };
        self.table.upstreams.get(index).map(|u| u.url.clone())
    }
}

/// A movable capability as `fig migrate CAP status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub capability: String,
    pub owner: WriteOwner,
    pub held: bool,
    /// `monolith` (the monolith owns the writes), `cutover` (the service does) or `flipping`.
    pub phase: &'static str,
    /// Newest first.
    pub flips: Vec<Flip>,
}
