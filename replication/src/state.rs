//! The pipeline's position, kept in the target database (schema `fig_replication`), written in
//! the same transaction as the rows it accounts for.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::{PipelineError, target};
use crate::wire::format_lsn;

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS fig_replication;
CREATE TABLE IF NOT EXISTS fig_replication.pipelines (
    name                text PRIMARY KEY,
    slot                text NOT NULL,
    phase               text NOT NULL CHECK (phase IN ('copying', 'streaming')),
    -- End LSN of the last source transaction applied here (or the idle end of WAL confirmed).
    applied_lsn         pg_lsn NOT NULL DEFAULT '0/0',
    -- Source commit time of that transaction: lag in seconds is now() minus this.
    applied_commit_time timestamptz,
    rows_applied        bigint NOT NULL DEFAULT 0,
    copied_rows         bigint NOT NULL DEFAULT 0,
    copy_started_at     timestamptz,
    copy_finished_at    timestamptz,
    last_error          text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- The source tables a pipeline carries, and where each one's copy was taken: changes committed
-- before copied_lsn are in the copy. A table added to a running pipeline is copied on its own.
CREATE TABLE IF NOT EXISTS fig_replication.pipeline_tables (
    pipeline            text NOT NULL,
    source_table        text NOT NULL,
    copied_lsn          pg_lsn NOT NULL,
    PRIMARY KEY (pipeline, source_table)
);
";

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_SECS: f64 = 946_684_800.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Copying,
    Streaming,
}

#[derive(Debug, Clone)]
pub struct State {
    pub slot: String,
    pub phase: Phase,
    pub applied_lsn: u64,
}

pub async fn ensure_schema(client: &Client) -> Result<(), PipelineError> {
    // Two pipelines starting at once into one target must not race on CREATE.
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(7411); {SCHEMA} COMMIT;"
        ))
        .await
        .map_err(target("creating schema fig_replication"))
}

pub async fn load(client: &Client, pipeline: &str) -> Result<Option<State>, PipelineError> {
    let row = client
        .query_opt(
            "SELECT slot, phase, applied_lsn::text FROM fig_replication.pipelines WHERE name = $1",
            &[&pipeline],
        )
        .await
        .map_err(target("reading the pipeline state"))?;
    Ok(row.map(|r| State {
        slot: r.get(0),
        phase: if r.get::<_, String>(1) == "streaming" {
            Phase::Streaming
        } else {
            Phase::Copying
        },
        applied_lsn: crate::wire::parse_lsn(r.get::<_, &str>(2)).unwrap_or(0),
    }))
}

/// A fresh start: copying from a new slot.
pub async fn start_copy(client: &Client, pipeline: &str, slot: &str) -> Result<(), PipelineError> {
    client
        .execute(
            "INSERT INTO fig_replication.pipelines (name, slot, phase, copy_started_at)
             VALUES ($1, $2, 'copying', now())
             ON CONFLICT (name) DO UPDATE SET slot = $2, phase = 'copying', applied_lsn = '0/0',
                 applied_commit_time = NULL, rows_applied = 0, copied_rows = 0,
                 copy_started_at = now(), copy_finished_at = NULL, last_error = NULL,
                 updated_at = now()",
            &[&pipeline, &slot],
        )
        .await
        .map_err(target("recording the start of the copy"))?;
    client
        .execute(
            "DELETE FROM fig_replication.pipeline_tables WHERE pipeline = $1",
            &[&pipeline],
        )
        .await
        .map_err(target("recording the start of the copy"))?;
    Ok(())
}

/// The source tables recorded for `pipeline` and where each one's copy was taken (`None`: none
/// recorded, as by an engine that did not keep them).
pub async fn tables(
    client: &Client,
    pipeline: &str,
) -> Result<Option<HashMap<String, u64>>, PipelineError> {
    let rows = client
        .query(
            "SELECT source_table, copied_lsn::text FROM fig_replication.pipeline_tables
              WHERE pipeline = $1",
            &[&pipeline],
        )
        .await
        .map_err(target("reading the pipeline's tables"))?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.iter()
            .map(|r| {
                let lsn = crate::wire::parse_lsn(r.get::<_, &str>(1)).unwrap_or(0);
                (r.get::<_, String>(0), lsn)
            })
            .collect(),
    ))
}

/// Records `tables` (source table, copy position) as carried by `pipeline`, and forgets
/// `removed`.
pub async fn record_tables(
    client: &Client,
    pipeline: &str,
    tables: &[(String, u64)],
    removed: &[String],
) -> Result<(), PipelineError> {
    let names: Vec<&str> = tables.iter().map(|(t, _)| t.as_str()).collect();
    let positions: Vec<String> = tables.iter().map(|(_, lsn)| format_lsn(*lsn)).collect();
    client
        .execute(
            "WITH gone AS (
                 DELETE FROM fig_replication.pipeline_tables
                  WHERE pipeline = $1 AND source_table = ANY($4))
             INSERT INTO fig_replication.pipeline_tables (pipeline, source_table, copied_lsn)
             SELECT $1, t, p::pg_lsn FROM unnest($2::text[], $3::text[]) AS u(t, p)
             ON CONFLICT (pipeline, source_table) DO UPDATE SET copied_lsn = excluded.copied_lsn",
            &[&pipeline, &names, &positions, &removed],
        )
        .await
        .map_err(target("recording the pipeline's tables"))?;
    Ok(())
}

/// The copy is complete: streaming starts at `lsn`.
pub async fn start_streaming(
    client: &Client,
    pipeline: &str,
    lsn: u64,
    copied_rows: i64,
) -> Result<(), PipelineError> {
    client
        .execute(
            "UPDATE fig_replication.pipelines
                SET phase = 'streaming', applied_lsn = $2::text::pg_lsn, copied_rows = $3,
                    copy_finished_at = now(), updated_at = now()
              WHERE name = $1",
            &[&pipeline, &format_lsn(lsn), &copied_rows],
        )
        .await
        .map_err(target("recording the end of the copy"))?;
    Ok(())
}

/// The statement that moves the position, for the end of the applying transaction (prepared
/// once per session); its parameters, all text, come from [`applied_params`].
pub const APPLIED_SQL: &str = "UPDATE fig_replication.pipelines
    SET applied_lsn = $2::pg_lsn, applied_commit_time = to_timestamp($3::float8),
        rows_applied = rows_applied + $4::bigint, updated_at = now()
  WHERE name = $1";

/// [`APPLIED_SQL`]'s parameters: pipeline, source position, source commit time, rows applied.
pub fn applied_params(pipeline: &str, lsn: u64, commit_time: i64, rows: u64) -> [String; 4] {
    let unix_seconds = commit_time as f64 / 1e6 + PG_EPOCH_OFFSET_SECS;
    [
        pipeline.to_string(),
        format_lsn(lsn),
        format!("{unix_seconds:.6}"),
        rows.to_string(),
    ]
}

/// Moves the position with nothing applied: the source's WAL moved on in tables this pipeline
/// does not carry.
pub async fn record_idle(client: &Client, pipeline: &str, lsn: u64) -> Result<(), PipelineError> {
    client
        .execute(
            "UPDATE fig_replication.pipelines
                SET applied_lsn = greatest(applied_lsn, $2::text::pg_lsn), updated_at = now()
              WHERE name = $1",
            &[&pipeline, &format_lsn(lsn)],
        )
        .await
        .map_err(target("recording the idle position"))?;
    Ok(())
}

/// The target's WAL position: `insert` is just past anything committed so far; `flush` is what
/// survives a crash of the target server.
pub async fn target_lsn(client: &Client, flush: bool) -> Result<u64, PipelineError> {
    crate::source::wal_position(client, flush)
        .await
        .map_err(target("reading the WAL position"))?
        .ok_or_else(|| {
            PipelineError::Protocol("the target reported a malformed WAL position".into())
        })
}

/// Whether the target holds a recorded position for `pipeline` (false too when the engine's
/// schema was never created there).
pub async fn exists(client: &Client, pipeline: &str) -> Result<bool, PipelineError> {
    let has_table = client
        .query_one(
            "SELECT to_regclass('fig_replication.pipelines') IS NOT NULL",
            &[],
        )
        .await
        .map_err(target("looking for the pipeline state"))?
        .get::<_, bool>(0);
    if !has_table {
        return Ok(false);
    }
    Ok(client
        .query_opt(
            "SELECT 1 FROM fig_replication.pipelines WHERE name = $1",
            &[&pipeline],
        )
        .await
        .map_err(target("looking for the pipeline state"))?
        .is_some())
}

/// Best effort: the reason a pipeline stopped, for `fig replication status`.
pub async fn record_error(client: &Client, pipeline: &str, error: &str) {
    let _ = client
        .execute(
            "UPDATE fig_replication.pipelines SET last_error = $2, updated_at = now() WHERE name = $1",
            &[&pipeline, &error],
        )
        .await;
}

/// The pipeline runs again: an earlier stop's reason no longer applies.
pub async fn clear_error(client: &Client, pipeline: &str) -> Result<(), PipelineError> {
    client
        .execute(
            "UPDATE fig_replication.pipelines SET last_error = NULL, updated_at = now() WHERE name = $1",
            &[&pipeline],
        )
        .await
        .map_err(target("clearing the last error"))?;
    Ok(())
}

pub async fn forget(client: &Client, pipeline: &str) -> Result<(), PipelineError> {
    client
        .execute(
            "DELETE FROM fig_replication.pipelines WHERE name = $1",
            &[&pipeline],
        )
        .await
        .map_err(target("removing the pipeline state"))?;
    // (A target last run by an engine that did not record tables has no such table.)
    client
        .execute(
            "DELETE FROM fig_replication.pipeline_tables WHERE pipeline = $1",
            &[&pipeline],
        )
        .await
        .or_else(|e| match e.code() {
            Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(0),
            _ => Err(e),
        })
        .map_err(target("removing the pipeline's tables"))?;
    Ok(())
}
