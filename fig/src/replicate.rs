//! Replication in `fig up`: the MusicCorp pipelines (the data-first split, monolith -> services)
//! for this cluster, and the file `fig replication status --config` reads. Which direction runs
//! is the write owner's to say (`router::migrate::follow`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use replication::config::{InitialCopy, Pipeline};
use replication::metrics::PipelineMetrics;
use tokio::sync::watch;

/// Computes the reporting database's aggregates from its raw tables (ADR 0015): the initial
/// copy into them skips the triggers that keep the aggregates afterwards.
pub async fn rebuild_reports(reporting_url: &str) -> anyhow::Result<()> {
    let client = replication::source::connect(reporting_url)
        .await
        .context("connecting to the reporting database")?;
    client
        .batch_execute("SELECT reporting_agg.rebuild()")
        .await
        .context("rebuilding the reporting aggregates")?;
    Ok(())
}

/// Pipelines running in this process, each until stopped.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics: Vec<Arc<PipelineMetrics>>,
}

/// How soon a pipeline that failed (its database restarted, a connection dropped) starts again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Starts `pipelines`, each on a task of its own, until stopped: one that fails says so and
/// starts again (it resumes where its target recorded it had got to).
pub fn start(pipelines: &[Pipeline]) -> Running {
    let (stop, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut metrics = Vec::new();
    for p in pipelines {
        let m = PipelineMetrics::new(&p.name);
        let (p, mut rx, task_metrics) = (p.clone(), rx.clone(), m.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let run = replication::pipeline::run(&p, rx.clone(), task_metrics.clone()).await;
                let Err(e) = run else { return };
                tracing::error!(pipeline = %p.name, error = %e, "replication pipeline stopped; starting it again");
                eprintln!("fig: replication pipeline {} stopped: {e}; starting it again", p.name);
                tokio::select! {
                    _ = tokio::time::sleep(RESTART_AFTER) => {}
                    _ = rx.changed() => return,
                }
                if *rx.borrow() {
                    return;
                }
            }
        }));
        metrics.push(m);
    }
    Running {
        stop,
        tasks,
        metrics,
    }
}

impl Running {
    /// Waits until every pipeline streams (its initial copy done), up to `limit`.
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

/// The pipeline file, for `fig replication status|verify --config` (not `run`: `fig up` runs
/// one direction of each pair at a time).
pub fn write_config(
    dir: &std::path::Path,
    pipelines: &[Pipeline],
) -> anyhow::Result<std::path::PathBuf> {
    let mut text = String::from(
        "# Written by `fig up`: both directions of each pipeline, for `status` and `verify`.\n\
         # fig up runs one of them at a time, out of the capability's write owner.\n",
    );
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
