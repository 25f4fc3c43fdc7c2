//! The applier's bulk paths: batches of 256 rows or more, written by a task of their own while
//! the stream goes on being read. Inserts go in by one `COPY`; updates and deletes by a `COPY`
//! into a staging table typed like the target and one set-based `UPDATE … FROM` / `DELETE …
//! USING` joined on the identity (bounded to a key range when `range::dense` says so).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::Client;

use super::{Kind, Row, fnv1a, range};
use crate::config::quote_ident;
use crate::error::{PipelineError, target};
use crate::schema::{ColumnInfo, RelPlan};

/// Batches queued for the writer task at most: bounds memory while the target catches up.
const WRITES_QUEUED: usize = 2;

/// Work for an applier's writer task.
pub(super) enum Job {
    Write(Box<Batch>),
    /// Answers once every earlier job is done: the rows found missing since the last barrier,
    /// or the first error (after which writes are skipped: the transaction is lost anyway).
    Barrier(tokio::sync::oneshot::Sender<Result<u64, PipelineError>>),
}

/// A batch for the writer: rows of one kind for one table.
pub(super) struct Batch {
    pub(super) kind: Kind,
    pub(super) plan: RelPlan,
    pub(super) rows: Vec<Row>,
}

/// Writes batches in order on `client` until the applier drops its sender.
pub(super) fn spawn_writer(client: Arc<Client>) -> tokio::sync::mpsc::Sender<Job> {
    let (sender, mut jobs) = tokio::sync::mpsc::channel(WRITES_QUEUED);
    tokio::spawn(async move {
        let mut missing = 0;
        let mut failed = None;
        while let Some(job) = jobs.recv().await {
            match job {
                Job::Write(_) if failed.is_some() => {}
                Job::Write(batch) => {
                    let Batch { kind, plan, rows } = *batch;
                    let written = match &kind {
                        Kind::Insert => copy_insert(&client, &plan, &rows).await.map(|()| 0),
                        Kind::Update(untouched) => {
                            staged(&client, &plan, &rows, Some(untouched)).await
                        }
                        Kind::Delete => staged(&client, &plan, &rows, None).await,
                    };
                    match written {
                        Ok(m) => missing += m,
                        Err(e) => failed = Some(e),
                    }
                }
                Job::Barrier(reply) => {
                    let _ = reply.send(match failed.take() {
                        Some(e) => Err(e),
                        None => Ok(std::mem::take(&mut missing)),
                    });
                }
            }
        }
    });
    sender
}

/// Inserts by `COPY ... FROM STDIN` in text format.
async fn copy_insert(client: &Client, plan: &RelPlan, rows: &[Row]) -> Result<(), PipelineError> {
    let columns: Vec<String> = plan
        .target_columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let sql = format!(
        "COPY {} ({}) FROM STDIN",
        plan.target.quoted(),
        columns.join(", ")
    );
    copy_rows(
        client,
        &sql,
        rows.iter().map(|r| r.values.iter()),
        &plan.target.to_string(),
    )
    .await
}

/// Large updates and deletes: the rows go into a temporary staging table by COPY, then one
/// statement joins it to the target on the identity.
async fn staged(
    client: &Client,
    plan: &RelPlan,
    rows: &[Row],
    untouched: Option<&Vec<bool>>,
) -> Result<u64, PipelineError> {
    let key_columns: Vec<&ColumnInfo> = plan
        .key
        .iter()
        .filter_map(|&k| plan.slots[k])
        .map(|t| &plan.target_columns[t])
        .collect();
    let set: Vec<usize> = match untouched {
        Some(u) => (0..plan.target_columns.len()).filter(|&i| !u[i]).collect(),
        None => Vec::new(),
    };
    // Staging columns have the target's types, so COPY parses each value once, as a CAST
    // would (a little less work for the target than text columns cast in the join), and one
    // table serves every batch of the same shape.
    let mut stage_columns: Vec<String> = key_columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("k{i} {}", c.type_name))
        .collect();
    stage_columns.extend(
        set.iter()
            .map(|&i| format!("v{i} {}", plan.target_columns[i].type_name)),
    );
    let stage = format!(
        "fig_stage_{:016x}",
        fnv1a(stage_columns.join(",").as_bytes())
    );
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ({}) ON COMMIT DELETE ROWS; TRUNCATE {stage}",
            stage_columns.join(", ")
        ))
        .await
        .map_err(target("creating a staging table"))?;
    let copy_sql = format!("COPY {stage} FROM STDIN");
    let set = &set;
    let lines = rows
        .iter()
        .map(|r| r.key.iter().chain(set.iter().map(move |&i| &r.values[i])));
    copy_rows(client, &copy_sql, lines, &plan.target.to_string()).await?;
    let mut join: Vec<String> = key_columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("t.{} = s.k{i}", quote_ident(&c.name)))
        .collect();
    // The staging table has no statistics, and a hash join over the whole target would scan it
    // once per batch. So either the keys are dense and the join is bounded to their stretch of
    // the key index, which is hashed, or the key index is probed row by row. The settings hold
    // for the rest of the transaction, so every batch sets all three.
    let dense = match key_columns.as_slice() {
        [only] => range::dense(&only.type_name, rows.iter().map(|r| r.key[0].as_deref())),
        _ => None,
    };
    let planner = match dense {
        Some((lo, hi)) => {
            join.push(format!(
                "t.{} BETWEEN {lo} AND {hi}",
                quote_ident(&key_columns[0].name)
            ));
            "SET LOCAL enable_hashjoin = on; SET LOCAL enable_nestloop = off; SET LOCAL enable_mergejoin = off"
        }
        None => {
            "SET LOCAL enable_hashjoin = off; SET LOCAL enable_nestloop = on; SET LOCAL enable_mergejoin = off"
        }
    };
    client
        .batch_execute(planner)
        .await
        .map_err(target("planning a staged batch"))?;
    let sql = match untouched {
        Some(_) => {
            let assignments: Vec<String> = set
                .iter()
                .map(|&i| format!("{} = s.v{i}", quote_ident(&plan.target_columns[i].name)))
                .collect();
            format!(
                "UPDATE {} t SET {} FROM {stage} s WHERE {}",
                plan.target.quoted(),
                assignments.join(", "),
                join.join(" AND ")
            )
        }
        None => format!(
            "DELETE FROM {} t USING {stage} s WHERE {}",
            plan.target.quoted(),
            join.join(" AND ")
        ),
    };
    let changed = client
        .execute(&sql, &[])
        .await
        .map_err(target(format!("applying changes to {}", plan.target)))?;
    let missing = (rows.len() as u64).saturating_sub(changed);
    if missing > 0 {
        tracing::warn!(table = %plan.target, missing, "rows to update or delete were not on the target");
    }
    Ok(missing)
}

async fn copy_rows<'a, I, R>(
    client: &Client,
    sql: &str,
    rows: I,
    table: &str,
) -> Result<(), PipelineError>
where
    I: Iterator<Item = R>,
    R: Iterator<Item = &'a Option<Bytes>>,
{
    let sink = client
        .copy_in::<_, Bytes>(sql)
        .await
        .map_err(target(format!("starting {sql}")))?;
    futures_util::pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    for row in rows {
        for (i, value) in row.enumerate() {
            if i > 0 {
                buf.put_u8(b'\t');
            }
            match value {
                None => buf.put_slice(b"\\N"),
                Some(v) => escape_copy_text(v, &mut buf),
            }
        }
        buf.put_u8(b'\n');
        if buf.len() >= 60 * 1024 {
            sink.send(buf.split().freeze())
                .await
                .map_err(target(format!("copying rows into {table}")))?;
        }
    }
    if !buf.is_empty() {
        sink.send(buf.freeze())
            .await
            .map_err(target(format!("copying rows into {table}")))?;
    }
    sink.finish()
        .await
        .map_err(target(format!("copying rows into {table}")))?;
    Ok(())
}

/// COPY's text format: backslash, tab, newline and carriage return are escaped. Runs without
/// them are copied whole (most values have none).
pub fn escape_copy_text(value: &[u8], out: &mut BytesMut) {
    let mut rest = value;
    while let Some(i) = rest
        .iter()
        .position(|&b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        out.put_slice(&rest[..i]);
        out.put_slice(match rest[i] {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            _ => b"\\r",
        });
        rest = &rest[i + 1..];
    }
    out.put_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_its_delimiters() {
        let mut out = BytesMut::new();
        escape_copy_text(b"a\\b\tc\nd\re", &mut out);
        assert_eq!(&out[..], b"a\\\\b\\tc\\nd\\re");
    }
}
