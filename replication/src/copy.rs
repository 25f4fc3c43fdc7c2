//! The initial copy: every table read at the slot's exported snapshot, so the copy and the
//! stream that follows (from the slot's consistent point) meet with no row missed or doubled.
//! Tables are copied in parallel, each in one target transaction (TRUNCATE, then COPY), binary
//! when both sides have the same column types.

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::Client;

use crate::config::{QualifiedName, quote_ident};
use crate::error::{PipelineError, source, target};
use crate::schema::RelPlan;
use crate::source::connect;

/// Bytes gathered before each write to the target.
const COPY_CHUNK: usize = 256 * 1024;

/// How many tables are copied at once.
pub const PARALLEL: usize = 4;

/// One table to copy: which source columns, into which target columns.
#[derive(Debug, Clone)]
pub struct CopyJob {
    pub plan: RelPlan,
    /// Source column names, in source order (matching `plan.slots`).
    pub source_columns: Vec<String>,
    /// Whether each copied column has the same type on both sides (binary COPY is then safe).
    pub same_types: bool,
    /// The planner's row estimate, for progress.
    pub estimate: i64,
}

/// Copies every job at `snapshot`; returns the rows copied.
pub async fn copy_all(
    source_url: &str,
    target_url: &str,
    snapshot: &str,
    jobs: Vec<CopyJob>,
) -> Result<i64, PipelineError> {
    let tables: Vec<QualifiedName> = jobs.iter().map(|j| j.plan.target.clone()).collect();
    clear_targets(target_url, &tables).await?;
    let results: Vec<i64> = futures_util::stream::iter(jobs)
        .map(|job| copy_table(source_url, target_url, snapshot, job))
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await?;
    Ok(results.iter().sum())
}

/// Empties the target tables, all in one statement so foreign keys among them don't object;
/// when a table outside the pipeline refers to one of them, row by row instead (with triggers,
/// and so foreign-key checks, off: the rows come back with the copy).
async fn clear_targets(target_url: &str, tables: &[QualifiedName]) -> Result<(), PipelineError> {
    let to = connect(target_url)
        .await
        .map_err(target("connecting to empty the target tables"))?;
    let list: Vec<String> = tables.iter().map(QualifiedName::quoted).collect();
    let truncate = format!("TRUNCATE {}", list.join(", "));
    match to.batch_execute(&truncate).await {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED) => {
            let deletes: Vec<String> = list.iter().map(|t| format!("DELETE FROM {t};")).collect();
            to.batch_execute(&format!(
                "BEGIN; SET LOCAL session_replication_role = replica; {} COMMIT;",
                deletes.join(" ")
            ))
            .await
            .map_err(target("emptying the target tables"))
        }
        Err(e) => Err(target("emptying the target tables")(e)),
    }
}

/// Applies rows the way PostgreSQL's own apply worker does: as a replica, so triggers and
/// foreign-key checks (which depend on the order tables are copied or batches written) stay
/// off. Needs superuser; without it the session keeps the default and says so.
pub async fn act_as_replica(client: &Client) {
    if let Err(e) = client
        .batch_execute("SET session_replication_role = replica")
        .await
    {
        tracing::warn!(error = %e, "could not set session_replication_role = replica: foreign keys between copied tables may reject rows arriving out of order");
    }
}

async fn copy_table(
    source_url: &str,
    target_url: &str,
    snapshot: &str,
    job: CopyJob,
) -> Result<i64, PipelineError> {
    let plan = &job.plan;
    let from = connect(source_url)
        .await
        .map_err(source("connecting for the initial copy"))?;
    from.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot.replace('\'', "''")
    ))
    .await
    .map_err(source("importing the slot's snapshot"))?;
    let to = connect(target_url)
        .await
        .map_err(target("connecting for the initial copy"))?;
    act_as_replica(&to).await;

    let mut source_list = Vec::new();
    let mut target_list = Vec::new();
    for (column, slot) in job.source_columns.iter().zip(&plan.slots) {
        if let Some(t) = slot {
            source_list.push(quote_ident(column));
            target_list.push(quote_ident(&plan.target_columns[*t].0));
        }
    }
    let format = if job.same_types {
        " (FORMAT binary)"
    } else {
        ""
    };
    let read = format!(
        "COPY (SELECT {} FROM {}) TO STDOUT{format}",
        source_list.join(", "),
        plan.source.quoted()
    );
    let write = format!(
        "COPY {} ({}) FROM STDIN{format}",
        plan.target.quoted(),
        target_list.join(", ")
    );
    tracing::info!(table = %plan.source, into = %plan.target, estimate = job.estimate, binary = job.same_types, "initial copy started");
    to.batch_execute("BEGIN")
        .await
        .map_err(target(format!("copying into {}", plan.target)))?;
    let rows = pump(&from, &to, &read, &write, &plan.target).await?;
    to.batch_execute("COMMIT")
        .await
        .map_err(target(format!("committing the copy of {}", plan.target)))?;
    from.batch_execute("COMMIT").await.ok();
    tracing::info!(table = %plan.source, rows, "initial copy finished");
    Ok(rows as i64)
}

async fn pump(
    from: &Client,
    to: &Client,
    read: &str,
    write: &str,
    table: &QualifiedName,
) -> Result<u64, PipelineError> {
    let out = from
        .copy_out(read)
        .await
        .map_err(source(format!("reading {table}")))?;
    let sink = to
        .copy_in::<_, bytes::Bytes>(write)
        .await
        .map_err(target(format!("writing {table}")))?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    // COPY OUT hands over one row per message: gather them, so the target gets large writes
    // rather than a flush per row.
    let mut pending = bytes::BytesMut::with_capacity(COPY_CHUNK);
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(source(format!("reading {table}")))?;
        pending.extend_from_slice(&chunk);
        if pending.len() >= COPY_CHUNK {
            sink.send(pending.split().freeze())
                .await
                .map_err(target(format!("writing {table}")))?;
        }
    }
    if !pending.is_empty() {
        sink.send(pending.freeze())
            .await
            .map_err(target(format!("writing {table}")))?;
    }
    sink.finish()
        .await
        .map_err(target(format!("writing {table}")))
}
