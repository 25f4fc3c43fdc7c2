//! Replication in `fig up`: the services' databases kept as live copies of the monolith's
//! tables by the default pipelines (data-first split), or after cutover the reverse: the
//! services' changes streamed back to the monolith, so a rollback loses nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use replication::config::{self, InitialCopy, Pipeline};
use replication::error::PipelineError;
use replication::metrics::PipelineMetrics;
use tokio::sync::watch;

/// The MusicCorp pipelines for a cluster's databases.
pub fn musiccorp(monolith: &str, catalog: &str, wishlist: &str) -> anyhow::Result<Vec<Pipeline>> {
    Ok(config::parse(config::MUSICCORP, |name| match name {
        "FIG_MONOLITH_DATABASE_URL" => Some(monolith.to_string()),
        "FIG_CATALOG_DATABASE_URL" => Some(catalog.to_string()),
        "FIG_WISHLIST_DATABASE_URL" => Some(wishlist.to_string()),
        _ => None,
    })?)
}

/// The stream in the other direction ([`Pipeline::reversed`]).
pub fn reverse(forward: &Pipeline) -> Pipeline {
    forward.reversed()
}

/// Pipelines running in this process.
pub struct Replicating {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), PipelineError>>>,
    metrics: Vec<Arc<PipelineMetrics>>,
}

pub fn start(pipelines: &[Pipeline]) -> Replicating {
    let (stop, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut metrics = Vec::new();
    for p in pipelines {
        let m = PipelineMetrics::new(&p.name);
        let (p, rx, task_metrics) = (p.clone(), rx.clone(), m.clone());
        tasks.push(tokio::spawn(async move {
            let result = replication::pipeline::run(&p, rx, task_metrics).await;
            if let Err(e) = &result {
                tracing::error!(pipeline = %p.name, error = %e, "replication pipeline stopped");
                eprintln!("fig: replication pipeline {} stopped: {e}", p.name);
            }
            result
        }));
        metrics.push(m);
    }
    Replicating {
        stop,
        tasks,
        metrics,
    }
}

impl Replicating {
    /// Waits until every pipeline streams (its initial copy done).
    pub async fn streaming(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        for (m, task) in self.metrics.iter().zip(&self.tasks) {
            while m.phase() != "streaming" {
                if task.is_finished() {
                    anyhow::bail!("replication pipeline {} stopped before streaming", m.name);
                }
                if Instant::now() >= deadline {
                    anyhow::bail!(
                        "replication pipeline {} is still {} after {limit:?}",
                        m.name,
                        m.phase()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    pub fn metrics(&self) -> &[Arc<PipelineMetrics>] {
        &self.metrics
    }

    /// Stops every pipeline cleanly (what is applied stays applied).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// After cutover: make sure the services hold the data once (the forward copy, unless the
/// reverse stream already exists, which means the services own newer data), retire the
/// forward stream, bring the services' sequences up to the monolith's, and start the reverse
/// ones.
pub async fn cutover(forward: &[Pipeline], limit: Duration) -> anyhow::Result<Replicating> {
    let reverse: Vec<Pipeline> = forward.iter().map(reverse).collect();
    let mut copy_first = Vec::new();
    for (f, r) in forward.iter().zip(&reverse) {
        if !has_state(&r.target, &r.name).await? {
            copy_first.push(f.clone());
        }
    }
    if !copy_first.is_empty() {
        let copying = start(&copy_first);
        copying.streaming(limit).await?;
        // A forward stream resumed from an earlier run may still be behind: it retires only
        // once it has everything, or those changes would be lost with its slot.
        for f in &copy_first {
            if !replication::ops::caught_up(f, limit).await? {
                copying.stop().await;
                anyhow::bail!(
                    "the forward pipeline {} did not catch up within {limit:?}",
                    f.name
                );
            }
        }
        copying.stop().await;
        for f in &copy_first {
            replication::ops::drop(f)
                .await
                .with_context(|| format!("retiring the forward pipeline {}", f.name))?;
        }
    }
    // The services draw ids from now on: their sequences go past every id the monolith drew
    // (the forward streams synced them while running; this covers the last moments, and writes
    // to the monolith since). Forward only, so what the services drew stays theirs. From here
    // the reverse streams keep the monolith's sequences following the services'.
    for f in forward {
        replication::ops::sync_sequences(f)
            .await
            .with_context(|| format!("moving the services' sequences forward ({})", f.name))?;
    }
    Ok(start(&reverse))
}

/// Before cutover (or after rolling back from it): the forward streams, after retiring reverse
/// streams an earlier `--cutover` run left (their changes are in the monolith already; their
/// slots would otherwise hold the services' WAL forever).
pub async fn forward(pipelines: &[Pipeline], limit: Duration) -> anyhow::Result<Replicating> {
    for p in pipelines {
        let r = reverse(p);
        if has_state(&r.target, &r.name).await? {
            replication::ops::drop(&r)
                .await
                .with_context(|| format!("retiring the reverse pipeline {}", r.name))?;
        }
    }
    let running = start(pipelines);
    running.streaming(limit).await?;
    Ok(running)
}

async fn has_state(url: &str, pipeline: &str) -> anyhow::Result<bool> {
    let client = replication::source::connect(url).await?;
    Ok(replication::state::exists(&client, pipeline).await?)
}

/// The effective pipeline file, for `fig replication ... --config`.
pub fn write_config(
    dir: &std::path::Path,
    pipelines: &[Pipeline],
) -> anyhow::Result<std::path::PathBuf> {
    let mut text = String::from("# Written by `fig up`: the pipelines it runs.\n");
    for p in pipelines {
        text.push_str(&format!(
            "\n[[pipelines]]\nname = {:?}\nsource = {:?}\ntarget = {:?}\n",
            p.name, p.source, p.target
        ));
        if p.initial_copy == InitialCopy::None {
            text.push_str("initial_copy = \"none\"\n");
        }
        if !p.skip_origins_of.is_empty() {
            text.push_str(&format!("skip_origins_of = {:?}\n", p.skip_origins_of));
        }
        for t in &p.tables {
            text.push_str(&format!(
                "\n[[pipelines.tables]]\nsource = {:?}\n",
                t.source
            ));
            if let Some(target) = &t.target {
                text.push_str(&format!("target = {target:?}\n"));
            }
        }
    }
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
