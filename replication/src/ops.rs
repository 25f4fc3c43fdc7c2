//! Operator commands over a set of pipelines: run them, prepare one to run later, report their
//! status, wait until one has applied a position (a cut marker's, or the source's end of WAL),
//! drop them, and verify their targets. Shared by the `replication` binary and `fig`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{Pipeline, QualifiedName};
use crate::error::{PipelineError, source, target};
use crate::metrics::{self, PipelineMetrics};
use crate::schema;
use crate::source as src;
use crate::verify::{self, Report, TablePair};
use crate::wire::{format_lsn, parse_lsn};

pub use crate::pipeline::CUT_PREFIX;

/// How often a wait reads the target's recorded position: a cut is waited for in milliseconds.
const POLL_EVERY: Duration = Duration::from_millis(2);

/// Runs every pipeline until `stop` turns true; one failing does not stop the others. Returns
/// the failures (pipeline name, error).
pub async fn run_all(
    pipelines: &[Pipeline],
    stop: watch::Receiver<bool>,
    metrics_listen: Option<tokio::net::TcpListener>,
) -> Vec<(String, PipelineError)> {
    let all: Vec<Arc<PipelineMetrics>> = pipelines
        .iter()
        .map(|p| PipelineMetrics::new(&p.name))
        .collect();
    let server = metrics_listen.map(|l| tokio::spawn(metrics::serve(l, all.clone())));
    let mut tasks = Vec::new();
    for (pipeline, m) in pipelines.iter().zip(&all) {
        let pipeline = pipeline.clone();
        let stop = stop.clone();
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let result = crate::pipeline::run(&pipeline, stop, m).await;
            if let Err(e) = &result {
                tracing::error!(pipeline = %pipeline.name, error = %e, "pipeline stopped");
            }
            (pipeline.name.clone(), result)
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        if let Ok((name, Err(e))) = task.await {
            failures.push((name, e));
        }
    }
    if let Some(server) = server {
        server.abort();
    }
    failures
}

/// Binds the metrics address, for callers that print it.
pub async fn bind_metrics(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[derive(Debug, Clone)]
pub struct Status {
    pub pipeline: String,
    /// `copying`, `streaming`, `failed` or `not started`.
    pub state: String,
    pub last_error: Option<String>,
    pub applied_lsn: Option<String>,
    pub lag_bytes: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub rows_per_second: Option<f64>,
    pub rows_applied: Option<i64>,
    pub slot_wal_status: Option<String>,
    pub retained_wal_bytes: Option<i64>,
    pub slot_active: bool,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        write!(
            f,
            "{:<12} {:<11} applied {:<12} lag {:>10} B {:>8} s  {:>9} rows/s  retained WAL {:>10} B  slot {}{}",
            self.pipeline,
            self.state,
            opt(self.applied_lsn.clone()),
            opt(self.lag_bytes.map(|v| v.to_string())),
            opt(self.lag_seconds.map(|v| format!("{v:.1}"))),
            opt(self.rows_per_second.map(|v| format!("{v:.0}"))),
            opt(self.retained_wal_bytes.map(|v| v.to_string())),
            opt(self.slot_wal_status.clone()),
            if self.slot_active { " (active)" } else { "" },
        )?;
        if let Some(e) = &self.last_error {
            write!(f, "\n             last error: {e}")?;
        }
        Ok(())
    }
}

struct Progress {
    phase: String,
    applied: String,
    commit_age: Option<f64>,
    rows: i64,
    error: Option<String>,
}

async fn progress(client: &tokio_postgres::Client, name: &str) -> Option<Progress> {
    let row = client
        .query_opt(
            "SELECT phase, applied_lsn::text, extract(epoch FROM now() - applied_commit_time)::float8,
                    rows_applied, last_error
               FROM fig_replication.pipelines WHERE name = $1",
            &[&name],
        )
        .await
        .ok()??;
    Some(Progress {
        phase: row.get(0),
        applied: row.get(1),
        commit_age: row.get(2),
        rows: row.get(3),
        error: row.get(4),
    })
}

/// Ordinary SQL connections to a pipeline's source and target.
async fn connect_both(
    pipeline: &Pipeline,
) -> Result<(tokio_postgres::Client, tokio_postgres::Client), PipelineError> {
    let s = src::connect(&pipeline.source)
        .await
        .map_err(source("connecting"))?;
    let t = src::connect(&pipeline.target)
        .await
        .map_err(target("connecting"))?;
    Ok((s, t))
}

/// Each pipeline's state, lag, throughput (sampled over `window`) and slot.
pub async fn status(
    pipelines: &[Pipeline],
    window: Duration,
) -> Result<Vec<Status>, PipelineError> {
    let mut clients = Vec::new();
    for p in pipelines {
        let (s, t) = connect_both(p).await?;
        let before = progress(&t, &p.name).await.map(|p| p.rows);
        clients.push((s, t, before));
    }
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let mut out = Vec::new();
    for (p, (s, t, before)) in pipelines.iter().zip(clients) {
        let now = progress(&t, &p.name).await;
        let slot = src::slot_status(&s, &p.slot()).await?;
        let current = src::current_lsn(&s).await?;
        let applied = now.as_ref().and_then(|n| parse_lsn(&n.applied).ok());
        let lag_bytes = applied.map(|a| current.saturating_sub(a) as i64);
        let caught_up = lag_bytes.is_some_and(|b| b == 0);
        out.push(Status {
            pipeline: p.name.clone(),
            state: match &now {
                None => "not started".into(),
                Some(n)
                    if n.error.is_some()
                        && slot.as_ref().is_none_or(|s| s.active_pid.is_none()) =>
                {
                    "failed".into()
                }
                Some(n) => n.phase.clone(),
            },
            last_error: now.as_ref().and_then(|n| n.error.clone()),
            applied_lsn: applied.map(format_lsn),
            lag_bytes,
            lag_seconds: now
                .as_ref()
                .and_then(|n| n.commit_age)
                .map(|age| if caught_up { 0.0 } else { age.max(0.0) }),
            rows_per_second: match (before, &now) {
                (Some(b), Some(n)) => Some((n.rows - b) as f64 / started.elapsed().as_secs_f64()),
                _ => None,
            },
            rows_applied: now.as_ref().map(|n| n.rows),
            slot_wal_status: slot.as_ref().and_then(|s| s.wal_status.clone()),
            retained_wal_bytes: slot.as_ref().and_then(|s| s.retained_bytes),
            slot_active: slot.as_ref().is_some_and(|s| s.active_pid.is_some()),
        });
    }
    Ok(out)
}

/// Removes the pipeline's slot, publication, origin and recorded position. The slot must not
/// be in use: stop the pipeline first.
pub async fn drop(pipeline: &Pipeline) -> Result<(), PipelineError> {
    let s = src::connect(&pipeline.source)
        .await
        .map_err(source("connecting"))?;
    src::drop_slot(&s, &pipeline.slot()).await?;
    src::drop_publication(&s, &pipeline.publication()).await?;
    let t = src::connect(&pipeline.target)
        .await
        .map_err(target("connecting"))?;
    src::drop_origin(&t, &pipeline.origin()).await?;
    if crate::state::exists(&t, &pipeline.name).await? {
        crate::state::forget(&t, &pipeline.name).await?;
    }
    Ok(())
}

/// Moves the target's sequences of the pipeline's tables forward to the source's (never back):
/// for whoever takes over writes on the target, e.g. at a cutover, after the pipeline stopped.
/// Returns how many moved.
pub async fn sync_sequences(pipeline: &Pipeline) -> Result<usize, PipelineError> {
    let (s, t) = connect_both(pipeline).await?;
    let pairs = crate::sequences::resolve(&s, &t, &pipeline.tables).await?;
    crate::sequences::sync(&s, &t, &pairs).await
}

/// Makes `pipeline` ready to stream without running it, as a fresh start without a copy does up
/// to streaming: the publication, a new permanent slot (no snapshot exported) and the target's
/// state, streaming from the slot's consistent point, which it returns. A later
/// [`pipeline::run`](crate::pipeline::run) resumes from there: it applies every transaction the
/// source commits after that point and nothing committed before it, whatever `initial_copy`
/// says. Creating the slot waits for the source's transactions in progress to end. Prepared
/// already (streaming from this slot, which still exists): returns the recorded position and
/// creates nothing.
pub async fn prepare(pipeline: &Pipeline) -> Result<u64, PipelineError> {
    crate::pipeline::prepare(pipeline).await
}

/// Writes a cut marker ([`CUT_PREFIX`]) into the source's WAL and returns its position. Every
/// transaction that committed on the source before this call is before that position; a
/// running, idle pipeline from this source records it on its target as soon as it decodes the
/// marker (see [`wait_applied`]).
pub async fn emit_cut(source_url: &str) -> Result<u64, PipelineError> {
    let mut client = src::connect(source_url)
        .await
        .map_err(source("connecting"))?;
    let failed = || source("emitting a cut marker");
    let tx = client.transaction().await.map_err(failed())?;
    // The walsender decodes only WAL flushed to disk, and nothing flushes a non-transactional
    // message by itself (the WAL writer would, within wal_writer_delay or longer): a
    // transaction id makes the commit a real one, flushed (locally, never waiting on standbys)
    // before it returns, and the marker is before it.
    tx.batch_execute("SET LOCAL synchronous_commit = local")
        .await
        .map_err(failed())?;
    let row = tx
        .query_one(
            "SELECT pg_logical_emit_message(false, $1::text, ''::text)::text",
            &[&CUT_PREFIX],
        )
        .await
        .map_err(failed())?;
    tx.batch_execute("SELECT txid_current()")
        .await
        .map_err(failed())?;
    tx.commit().await.map_err(failed())?;
    parse_lsn(row.get::<_, &str>(0))
        .map_err(|_| PipelineError::Protocol("the source reported a malformed WAL position".into()))
}

/// Waits (up to `wait`) until a streaming pipeline's target has recorded a position at or past
/// `lsn`, e.g. a cut marker's from [`emit_cut`]; returns whether it got there (false at once if
/// the pipeline is not streaming).
pub async fn wait_applied(
    pipeline: &Pipeline,
    lsn: u64,
    wait: Duration,
) -> Result<bool, PipelineError> {
    let t = src::connect(&pipeline.target)
        .await
        .map_err(target("connecting"))?;
    Ok(wait_position(&t, &pipeline.name, lsn, wait).await)
}

/// Waits (up to `wait`) until a streaming pipeline's target has applied everything the source
/// has now; returns whether it got there.
pub async fn caught_up(pipeline: &Pipeline, wait: Duration) -> Result<bool, PipelineError> {
    let (s, t) = connect_both(pipeline).await?;
    wait_caught_up(&s, &t, &pipeline.name, wait).await
}

async fn wait_caught_up(
    s: &tokio_postgres::Client,
    t: &tokio_postgres::Client,
    name: &str,
    wait: Duration,
) -> Result<bool, PipelineError> {
    let goal = src::current_lsn(s).await?;
    Ok(wait_position(t, name, goal, wait).await)
}

/// Polls the target's recorded position of pipeline `name` until it reaches `goal` (true), the
/// pipeline is not streaming, or `wait` has passed.
async fn wait_position(t: &tokio_postgres::Client, name: &str, goal: u64, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let Some(p) = progress(t, name).await else {
            return false;
        };
        let applied = parse_lsn(&p.applied).unwrap_or(0);
        if applied >= goal {
            return true;
        }
        if p.phase != "streaming" || Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Compares source and target table by table. When the pipeline is streaming, it first waits
/// (up to `wait`) until the target has applied everything the source had when asked, so both
/// sides are compared at the same point.
pub async fn verify(
    pipeline: &Pipeline,
    limit: usize,
    wait: Duration,
) -> Result<Report, PipelineError> {
    let (s, t) = connect_both(pipeline).await?;
    wait_caught_up(&s, &t, &pipeline.name, wait).await?;
    let mut pairs = Vec::new();
    for mapping in &pipeline.tables {
        let source_name = mapping.source_name();
        let info = schema::table_info(&s, &source_name)
            .await
            .map_err(source(format!("reading table {source_name}")))?
            .ok_or_else(|| PipelineError::Mapping {
                table: source_name.to_string(),
                detail: "no such table on the source".into(),
            })?;
        let target_name: QualifiedName = mapping.target_name();
        pairs.push(TablePair {
            source: (source_name.schema.clone(), source_name.name.clone()),
            target: (target_name.schema.clone(), target_name.name.clone()),
            columns: info
                .columns
                .iter()
                .filter_map(|c| {
                    mapping
                        .target_column(&c.name)
                        .map(|t| (c.name.clone(), t.to_string()))
                })
                .collect(),
        });
    }
    verify::verify(&s, &t, &pairs, limit)
        .await
        .map_err(|e| PipelineError::Protocol(format!("verify: {e}")))
}
