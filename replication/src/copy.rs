//! The initial copy: every table read at the slot's exported snapshot, so the copy and the
//! stream that follows (from the slot's consistent point) meet with no row missed or doubled.
//! Tables are copied in parallel, each in one target transaction, binary when both sides have
//! the same column types. Where it is safe, that transaction loads the table the way pg_restore
//! does: emptied in the same transaction (so COPY can FREEZE), its indexes dropped before the
//! rows and built again after them, which costs far less than maintaining them row by row. All of
//! it commits or rolls back together, so a crash never leaves a table without its indexes.

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::Client;

use crate::config::{QualifiedName, quote_ident};
use crate::error::{PipelineError, source, target};
use crate::metrics::PipelineMetrics;
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

/// Copies every job at `snapshot`; returns the rows copied. `metrics` follows the rows as they
/// go.
pub async fn copy_all(
    source_url: &str,
    target_url: &str,
    snapshot: &str,
    jobs: Vec<CopyJob>,
    metrics: &PipelineMetrics,
) -> Result<i64, PipelineError> {
    let tables: Vec<QualifiedName> = jobs.iter().map(|j| j.plan.target.clone()).collect();
    metrics.copy_planned(jobs.iter().map(|j| j.estimate.max(0) as u64).sum());
    clear_targets(target_url, &tables).await?;
    let results: Vec<i64> = futures_util::stream::iter(jobs)
        .map(|job| copy_table(source_url, target_url, snapshot, job, metrics))
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
    metrics: &PipelineMetrics,
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
    // Marks the session as a bulk load, for triggers on the target that want to tell it from
    // changes: the reporting database's skip it and rebuild their aggregates once it is done
    // (loads of related tables run side by side, each seeing none of the others' rows).
    to.batch_execute("SET fig.copying = on")
        .await
        .map_err(target("marking the session as a copy"))?;
    // The load need not wait for the target's disk at its commit (PostgreSQL's own table sync
    // commits the same way). The pipeline is marked `streaming` only after every load has
    // committed, and the target's WAL survives a crash only as a prefix: a target that kept
    // that mark kept every load before it, and one that lost it copies again. The source is
    // told to forget nothing until the target has flushed past the mark.
    to.batch_execute("SET synchronous_commit = off")
        .await
        .map_err(target("setting synchronous_commit for the copy"))?;

    let mut source_list = Vec::new();
    let mut target_list = Vec::new();
    for (column, slot) in job.source_columns.iter().zip(&plan.slots) {
        if let Some(t) = slot {
            source_list.push(quote_ident(column));
            target_list.push(quote_ident(&plan.target_columns[*t].name));
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
    to.batch_execute("BEGIN")
        .await
        .map_err(target(format!("copying into {}", plan.target)))?;
    let load = prepare_load(&to, &plan.target).await?;
    let options = match (job.same_types, load.freeze) {
        (true, true) => " (FORMAT binary, FREEZE)",
        (true, false) => " (FORMAT binary)",
        (false, true) => " (FREEZE)",
        (false, false) => "",
    };
    let write = format!(
        "COPY {} ({}) FROM STDIN{options}",
        plan.target.quoted(),
        target_list.join(", ")
    );
    tracing::info!(table = %plan.source, into = %plan.target, estimate = job.estimate, binary = job.same_types,
        freeze = load.freeze, indexes_rebuilt = load.rebuild.len(), "initial copy started");
    let rows = pump(&from, &to, &read, &write, &plan.target, metrics).await?;
    for statement in &load.rebuild {
        to.batch_execute(statement).await.map_err(target(format!(
            "rebuilding an index of {}: {statement}",
            plan.target
        )))?;
    }
    to.batch_execute("COMMIT")
        .await
        .map_err(target(format!("committing the copy of {}", plan.target)))?;
    from.batch_execute("COMMIT").await.ok();
    tracing::info!(table = %plan.source, rows, "initial copy finished");
    Ok(rows as i64)
}

/// How a table is loaded inside its copy transaction.
#[derive(Debug, Default)]
struct Load {
    /// Emptied in this transaction: COPY may write the rows frozen.
    freeze: bool,
    /// Statements that rebuild the indexes dropped for the load, to run after the rows.
    rebuild: Vec<String>,
}

/// In the open copy transaction: empties `table` again and drops the indexes it is safe to
/// rebuild, when nothing refers to the table (a TRUNCATE of it alone would be refused, and a
/// referenced key cannot be dropped) and it is a plain table. Kept as they are: indexes backing
/// the replica identity, clustered, in their own tablespace, with a comment, or named unlike the
/// constraint they back (a rebuild from their definition would lose that). If any of it is
/// refused (e.g. not the owner), the table is loaded as it is.
async fn prepare_load(to: &Client, table: &QualifiedName) -> Result<Load, PipelineError> {
    let context = || format!("preparing {table} for the copy");
    let eligible: bool = to
        .query_one(
            "SELECT c.relkind = 'r' AND NOT c.relispartition
                    AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.confrelid = c.oid)
               FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&table.quoted()],
        )
        .await
        .map_err(target(context()))?
        .get(0);
    if !eligible {
        return Ok(Load::default());
    }
    let indexes = to
        .query(
            "SELECT ic.relname, con.conname, pg_get_constraintdef(con.oid), pg_get_indexdef(i.indexrelid)
               FROM pg_index i
               JOIN pg_class ic ON ic.oid = i.indexrelid
               LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                          AND con.contype IN ('p', 'u', 'x')
              WHERE i.indrelid = $1::text::regclass
                AND i.indisvalid AND NOT i.indisreplident AND NOT i.indisclustered
                AND ic.reltablespace = 0
                AND (con.oid IS NULL OR con.conname = ic.relname)
                AND NOT EXISTS (SELECT 1 FROM pg_description d
                                 WHERE d.objoid IN (i.indexrelid, coalesce(con.oid, 0)))
              ORDER BY con.contype = 'p' DESC NULLS LAST, ic.relname",
            &[&table.quoted()],
        )
        .await
        .map_err(target(context()))?;
    let mut drop = vec![format!("TRUNCATE ONLY {}", table.quoted())];
    let mut rebuild = Vec::new();
    for row in &indexes {
        let index: &str = row.get(0);
        match (row.get::<_, Option<&str>>(1), row.get::<_, Option<&str>>(2)) {
            (Some(constraint), Some(definition)) => {
                drop.push(format!(
                    "ALTER TABLE {} DROP CONSTRAINT {}",
                    table.quoted(),
                    quote_ident(constraint)
                ));
                rebuild.push(format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {definition}",
                    table.quoted(),
                    quote_ident(constraint)
                ));
            }
            _ => {
                drop.push(format!(
                    "DROP INDEX {}.{}",
                    quote_ident(&table.schema),
                    quote_ident(index)
                ));
                rebuild.push(row.get::<_, &str>(3).to_string());
            }
        }
    }
    // Index builds sort in memory: give them room, for this transaction only.
    drop.push("SET LOCAL maintenance_work_mem = '256MB'".into());
    let sql = format!(
        "SAVEPOINT fig_load; {}; RELEASE SAVEPOINT fig_load",
        drop.join("; ")
    );
    match to.batch_execute(&sql).await {
        Ok(()) => Ok(Load {
            freeze: true,
            rebuild,
        }),
        Err(e) => {
            tracing::info!(table = %table, error = %e, "loading with the indexes in place");
            to.batch_execute("ROLLBACK TO SAVEPOINT fig_load")
                .await
                .map_err(target(context()))?;
            Ok(Load::default())
        }
    }
}

async fn pump(
    from: &Client,
    to: &Client,
    read: &str,
    write: &str,
    table: &QualifiedName,
    metrics: &PipelineMetrics,
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
    // Messages sent so far, one per row (binary COPY adds its trailer): progress, not the count.
    let (mut messages, mut reported) = (0u64, 0u64);
    while let Some(chunk) = out.next().await {
        // The context is built only on failure: this runs once per row.
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return Err(source(format!("reading {table}"))(e)),
        };
        pending.extend_from_slice(&chunk);
        messages += 1;
        if pending.len() >= COPY_CHUNK {
            sink.send(pending.split().freeze())
                .await
                .map_err(target(format!("writing {table}")))?;
            metrics.copied(messages - reported);
            reported = messages;
        }
    }
    if !pending.is_empty() {
        sink.send(pending.freeze())
            .await
            .map_err(target(format!("writing {table}")))?;
    }
    let rows = sink
        .finish()
        .await
        .map_err(target(format!("writing {table}")))?;
    // The server's count is the true one.
    metrics.copied(rows.saturating_sub(reported));
    Ok(rows)
}
