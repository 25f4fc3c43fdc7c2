//! Runs each movable capability's stream in the direction its write owner says: out of the
//! owner's database into the other side's. After a flip releases the writes to the new owner,
//! the stream that fed it stops and is retired (slot, publication, origin and position dropped:
//! it applied past the cut, and its source takes no more writes of the capability), and only
//! then the stream the flip prepared at the cut starts. While a flip holds the writes the stored
//! owner is still the old one, whose stream is the one the flip waits for: a hold changes
//! nothing here. A stream that fails is started again. `fig up` runs this beside the router; it
//! needs only the router database's ownership, so it can run in any one process.
//!
//! Why the retirement comes first: the next flip (back) prepares the retired stream's slot
//! anew, and it can do so only after the stream started here has caught up with its cut. A
//! retirement left for later could drop that new slot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::Pool;
use replication::config::Pipeline;
use replication::error::PipelineError;
use replication::metrics::PipelineMetrics;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::plan::Movable;
use crate::ownership;
use crate::routes::{RouteTable, WriteOwner};

/// How soon a failed stream is started again.
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// How long a retired stream's slot may stay in use after the stream stopped.
const RETIRE_WITHIN: Duration = Duration::from_secs(10);

/// The follower's handle: its streams' metrics (both directions of every capability), and a
/// way to stop it.
pub struct Follower {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    metrics: Vec<Arc<PipelineMetrics>>,
    streaming: watch::Receiver<HashMap<String, WriteOwner>>,
}

/// One capability's running stream.
struct Running {
    owner: WriteOwner,
    pipeline: Pipeline,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), PipelineError>>,
}

impl Follower {
    /// Every stream's metrics, for the metrics endpoint.
    pub fn metrics(&self) -> &[Arc<PipelineMetrics>] {
        &self.metrics
    }

    /// Waits until every capability's stream runs in its owner's direction and streams (its
    /// first copy done), up to `limit`.
    pub async fn streaming(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let ready = self.streaming.borrow().clone();
            let all = self
                .metrics
                .iter()
                .filter(|m| ready.keys().any(|name| name == &m.name));
            if !ready.is_empty() && all.clone().all(|m| m.phase() == "streaming") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let phases: Vec<String> = self
                    .metrics
                    .iter()
                    .map(|m| format!("{} {}", m.name, m.phase()))
                    .collect();
                return Err(format!(
                    "the streams are not all streaming after {limit:?}: {}",
                    phases.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every stream cleanly (what is applied stays applied).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts following: every `every`, reads the stored ownership and moves streams to match.
pub fn follow(
    pool: Pool,
    table: Arc<RouteTable>,
    movable: Vec<Movable>,
    every: Duration,
) -> Follower {
    let metrics: HashMap<String, Arc<PipelineMetrics>> = movable
        .iter()
        .flat_map(|m| {
            [WriteOwner::Legacy, WriteOwner::Extracted].map(|owner| m.stream_while(owner).name)
        })
        .map(|name| {
            let m = PipelineMetrics::new(&name);
            (name, m)
        })
        .collect();
    let mut all: Vec<Arc<PipelineMetrics>> = metrics.values().cloned().collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let (stop, mut stopped) = watch::channel(false);
    let (streaming_tx, streaming) = watch::channel(HashMap::new());
    let task = tokio::spawn(async move {
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut retiring: Vec<Pipeline> = Vec::new();
        let mut restart_at: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => break,
            }
            let owners = match owners(&pool, &table, &movable).await {
                Ok(owners) => owners,
                Err(e) => {
                    tracing::warn!(error = %e, "reading write ownership failed; streams unchanged");
                    continue;
                }
            };
            for m in &movable {
                let Some(&owner) = owners.get(&m.capability) else {
                    continue;
                };
                let current = running.get(&m.capability);
                let switch = current.is_some_and(|r| r.owner != owner);
                let failed = current.is_some_and(|r| r.task.is_finished());
                if (switch || failed)
                    && let Some(r) = running.remove(&m.capability)
                {
                    let _ = r.stop.send(true);
                    let result = r.task.await;
                    if switch {
                        tracing::info!(capability = %m.capability, stream = %r.pipeline.name, "the writes moved: retiring the stream that fed the new owner");
                        if let Err(e) = retire(&r.pipeline).await {
                            tracing::error!(stream = %r.pipeline.name, error = %e, "retiring the stream failed; trying again later");
                            retiring.push(r.pipeline);
                        }
                    } else {
                        tracing::warn!(capability = %m.capability, stream = %r.pipeline.name, ?result, "stream stopped; starting it again");
                        restart_at.insert(m.capability.clone(), Instant::now() + RESTART_AFTER);
                    }
                }
                if running.contains_key(&m.capability)
                    || restart_at
                        .get(&m.capability)
                        .is_some_and(|at| Instant::now() < *at)
                {
                    continue;
                }
                let pipeline = m.stream_while(owner);
                let Some(metrics) = metrics.get(&pipeline.name).cloned() else {
                    continue;
                };
                let (stop, rx) = watch::channel(false);
                let (p, task_metrics) = (pipeline.clone(), metrics);
                let task = tokio::spawn(async move {
                    let result = replication::pipeline::run(&p, rx, task_metrics).await;
                    if let Err(e) = &result {
                        tracing::error!(stream = %p.name, error = %e, "replication stream stopped");
                    }
                    result
                });
                running.insert(
                    m.capability.clone(),
                    Running {
                        owner,
                        pipeline,
                        stop,
                        task,
                    },
                );
            }
            // What could not be retired at once (its database unreachable): try again.
            let mut still = Vec::new();
            for p in retiring.drain(..) {
                if let Err(e) = replication::ops::drop(&p).await {
                    tracing::debug!(stream = %p.name, error = %e, "retiring the stream failed; trying again");
                    still.push(p);
                }
            }
            retiring = still;
            let now: HashMap<String, WriteOwner> = running
                .values()
                .map(|r| (r.pipeline.name.clone(), r.owner))
                .collect();
            streaming_tx.send_if_modified(|s| {
                let changed = *s != now;
                *s = now;
                changed
            });
        }
        for (_, r) in running {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
    });
    Follower {
        stop,
        task,
        metrics: all,
        streaming,
    }
}

/// Drops a stopped stream's slot, publication, origin and position. Its walsender may take a
/// moment to notice the stream's connection closed: until then the slot is in use.
async fn retire(pipeline: &Pipeline) -> Result<(), PipelineError> {
    let deadline = Instant::now() + RETIRE_WITHIN;
    loop {
        match replication::ops::drop(pipeline).await {
            Err(PipelineError::SlotInUse { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            done => return done,
        }
    }
}

/// Each movable capability's stored owner (the route table's when none is stored).
async fn owners(
    pool: &Pool,
    table: &RouteTable,
    movable: &[Movable],
) -> Result<HashMap<String, WriteOwner>, String> {
    let pool = pool.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        ownership::load(&mut conn)
            .map(|(_, rows)| rows)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(movable
        .iter()
        .map(|m| {
            let row = rows.iter().find(|r| r.capability == m.capability);
            let configured = table
                .capabilities
                .iter()
                .find(|c| c.name == m.capability)
                .map(|c| c.write_owner)
                .unwrap_or(WriteOwner::Legacy);
            (
                m.capability.clone(),
                row.map(|r| r.owner).unwrap_or(configured),
            )
        })
        .collect())
}
