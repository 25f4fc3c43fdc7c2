//! Applying decoded changes to the target.
//!
//! Source transactions are applied inside one target transaction (several consecutive ones when
//! they arrive together), and that transaction also moves the pipeline's `applied_lsn`: after a
//! crash the target holds either all of a source transaction and its LSN, or neither (ADR 0008).
//!
//! Rows are batched: consecutive changes of one kind to one table go out together, as a
//! run of statements sent with the rest of the transaction in one round trip, or for large batches
//! as one `COPY` (inserts) or a
//! `COPY` into a staging table and one set-based `UPDATE`/`DELETE`. Values travel in pgoutput's
//! text form and are cast to the target column's type by the database, so every type works.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::config::quote_ident;
use crate::error::{PipelineError, target};
use crate::pgoutput::{Cell, OldTuple, Tuple};
use crate::schema::RelPlan;
use crate::state;

mod bulk;
mod range;

use bulk::{Batch, Job, spawn_writer};

/// Batches at least this large take the COPY path.
const BULK_ROWS: usize = 256;
/// Gathered statements are sent once this many are queued, even mid-transaction.
const QUEUED_FLUSH: usize = 2_000;

/// The foreign keys that tables outside `$1` (quoted names) have to tables in it: constraint,
/// referencing table, its key columns (quoted, comma-separated), referenced table.
const REFERENCED_FROM_OUTSIDE: &str = "
    WITH truncated AS (SELECT unnest($1::text[])::regclass AS oid)
    SELECT c.conname::text, c.conrelid::regclass::text,
           (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
              FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
              JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
           c.confrelid::regclass::text
      FROM pg_constraint c
     WHERE c.contype = 'f'
       AND c.confrelid IN (SELECT oid FROM truncated)
       AND c.conrelid NOT IN (SELECT oid FROM truncated)
     ORDER BY 2, 1";

/// Something to send to the target with the rest of the transaction, in order.
enum Queued {
    /// Statements without parameters (BEGIN, SAVEPOINT, TRUNCATE, the position update...).
    Sql(String),
    /// One row's prepared statement and its values (checked to be UTF-8 when queued), and the
    /// relation it is for (`None` for the pipeline's own position), to name the table when the
    /// target refuses it.
    Row(Statement, Vec<Option<Bytes>>, Option<u32>),
}

/// One row change, values still in pgoutput form.
#[derive(Debug, Clone)]
pub enum Change {
    Insert { new: Tuple },
    Update { old: Option<OldTuple>, new: Tuple },
    Delete { old: OldTuple },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    Insert,
    /// Which target columns an update leaves alone (unchanged TOAST values, or not copied).
    Update(Vec<bool>),
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StatementKey {
    relation: u32,
    kind: Kind,
}

/// A row ready to write: target-ordered new values, and the source identity's values.
struct Row {
    values: Vec<Option<Bytes>>,
    key: Vec<Option<Bytes>>,
}

pub struct Applier {
    /// Shared with the task writing the batch in flight.
    client: Arc<Client>,
    /// Large batches go to a writer task, so the target works while the stream is read and
    /// decoded (and the server keeps decoding). Settled before anything else goes to the
    /// target, so statements keep their order.
    writer: tokio::sync::mpsc::Sender<Job>,
    /// Batches were queued since the last settle.
    writes_queued: bool,
    pipeline: String,
    batch_rows: usize,
    plans: HashMap<u32, RelPlan>,
    /// Statements not yet sent: a whole group of small source transactions, BEGIN to COMMIT,
    /// goes to the target in one round trip (pipelined).
    queued: Vec<Queued>,
    /// Prepared per table and change shape: the target parses and plans each once per session.
    statements: HashMap<StatementKey, Statement>,
    /// `SELECT pg_current_wal_insert_lsn()` and the position update, prepared.
    insert_lsn: Option<Statement>,
    position: Option<Statement>,
    batch: Vec<Row>,
    batch_key: Option<StatementKey>,
    /// Hashes of the identities in the current batch: a second change to the same row starts a
    /// new batch, since a set-based statement would apply only one of them. (A hash collision
    /// only starts a batch early.)
    batch_identities: HashSet<u64, BuildIdentity>,
    /// Reused for each update's unchanged-columns mask, so a row allocates none.
    scratch_untouched: Vec<bool>,
    in_transaction: bool,
    rows_in_transaction: u64,
    /// The end LSN and commit time of the last source transaction applied in the open
    /// target transaction.
    pending: Option<(u64, i64)>,
    /// Rows that an UPDATE or DELETE found nothing for (the target diverged); counted, logged.
    pub missing_rows: u64,
}

fn text(cell: &Cell) -> Option<Bytes> {
    match cell {
        Cell::Text(b) | Cell::Binary(b) => Some(b.clone()),
        Cell::Null | Cell::UnchangedToast => None,
    }
}

fn as_str(value: &Option<Bytes>) -> Result<Option<&str>, PipelineError> {
    value
        .as_deref()
        .map(std::str::from_utf8)
        .transpose()
        .map_err(|_| PipelineError::Protocol("a column value is not valid UTF-8".into()))
}

impl Applier {
    pub fn new(client: Client, pipeline: &str, batch_rows: usize) -> Applier {
        let client = Arc::new(client);
        Applier {
            writer: spawn_writer(client.clone()),
            client,
            writes_queued: false,
            pipeline: pipeline.to_string(),
            batch_rows,
            plans: HashMap::new(),
            queued: Vec::new(),
            statements: HashMap::new(),
            insert_lsn: None,
            position: None,
            batch: Vec::new(),
            batch_key: None,
            batch_identities: HashSet::default(),
            scratch_untouched: Vec::new(),
            in_transaction: false,
            rows_in_transaction: 0,
            pending: None,
            missing_rows: 0,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Installs the plan for a relation id (from a Relation message); statements prepared for
    /// its old shape are forgotten.
    pub async fn set_plan(&mut self, relation: u32, plan: RelPlan) -> Result<(), PipelineError> {
        if self
            .batch_key
            .as_ref()
            .is_some_and(|k| k.relation == relation)
        {
            self.flush().await?;
        }
        self.plans.insert(relation, plan);
        self.statements.retain(|key, _| key.relation != relation);
        Ok(())
    }

    pub fn has_plan(&self, relation: u32) -> bool {
        self.plans.contains_key(&relation)
    }

    /// The plans of `other`, for an applier joining after the Relation messages went by.
    pub fn adopt_plans(&mut self, other: &Applier) {
        self.plans.clone_from(&other.plans);
    }

    /// Starts a savepoint (a source subtransaction) at this point of the change sequence.
    pub async fn savepoint(&mut self, name: &str) -> Result<(), PipelineError> {
        self.flush().await?;
        self.begin().await?;
        self.queue_sql(&format!("SAVEPOINT {};\n", quote_ident(name)));
        Ok(())
    }

    /// Undoes everything since the savepoint `name` (a source subtransaction aborted), at once:
    /// the caller has sent what came before ([`Applier::send_now`]), or dropped it after the
    /// target refused part of it. The target refuses a savepoint that never reached it (one
    /// queued after a refused statement).
    pub async fn rollback_to(&mut self, name: &str) -> Result<(), PipelineError> {
        self.client
            .batch_execute(&format!("ROLLBACK TO SAVEPOINT {}", quote_ident(name)))
            .await
            .map_err(target(format!("rolling back to savepoint {name}")))
    }

    /// Discards the open target transaction (a source transaction aborted, or was already
    /// applied): nothing of it is written.
    pub async fn rollback(&mut self) -> Result<(), PipelineError> {
        // A write that failed is undone with the rest: its error no longer matters.
        let _ = self.settle().await;
        self.discard_unsent();
        self.pending = None;
        // (If BEGIN never reached the server, ROLLBACK only draws a warning.)
        if std::mem::take(&mut self.in_transaction) {
            self.client
                .batch_execute("ROLLBACK")
                .await
                .map_err(target("rolling back"))?;
        }
        Ok(())
    }

    /// Forgets what is batched or queued and not yet sent (after the target refused a statement
    /// of the open transaction, the server would refuse all of it anyway).
    pub fn discard_unsent(&mut self) {
        self.batch.clear();
        self.batch_key = None;
        self.batch_identities.clear();
        self.queued.clear();
    }

    /// Sends what is queued now, rather than with the next batch or the commit.
    pub async fn send_now(&mut self) -> Result<(), PipelineError> {
        self.flush().await?;
        self.send_sql().await
    }

    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    pub fn rows_in_transaction(&self) -> u64 {
        self.rows_in_transaction
    }

    async fn begin(&mut self) -> Result<(), PipelineError> {
        if !self.in_transaction {
            self.queue_sql("BEGIN;\n");
            self.in_transaction = true;
            self.rows_in_transaction = 0;
        }
        Ok(())
    }

    /// Waits until every queued batch is written; fails with the first write's error.
    async fn settle(&mut self) -> Result<(), PipelineError> {
        if !std::mem::take(&mut self.writes_queued) {
            return Ok(());
        }
        let (reply, done) = tokio::sync::oneshot::channel();
        self.writer
            .send(Job::Barrier(reply))
            .await
            .map_err(|_| writer_gone())?;
        self.missing_rows += done.await.map_err(|_| writer_gone())??;
        Ok(())
    }

    /// Adds statements to what is sent next, joining the text before them if it is text too.
    fn queue_sql(&mut self, sql: &str) {
        match self.queued.last_mut() {
            Some(Queued::Sql(text)) => text.push_str(sql),
            _ => self.queued.push(Queued::Sql(sql.to_string())),
        }
    }

    /// Sends the statements gathered so far (one round trip).
    async fn send_sql(&mut self) -> Result<(), PipelineError> {
        self.settle().await?;
        if self.queued.is_empty() {
            return Ok(());
        }
        let queued = std::mem::take(&mut self.queued);
        send_queued(&self.client, &queued, None)
            .await
            .map(|_| ())
            .map_err(|(at, e)| self.refused(&queued, at, e))
    }

    /// The target's refusal of `queued[at]`, naming the table it was for.
    fn refused(&self, queued: &[Queued], at: usize, e: tokio_postgres::Error) -> PipelineError {
        let table = match queued.get(at) {
            Some(Queued::Row(_, _, Some(relation))) => self.plans.get(relation),
            _ => None,
        };
        match table {
            Some(plan) => target(format!("applying changes to {}", plan.target))(e),
            None => target("applying changes")(e),
        }
    }

    /// Adds one change; writes the batch when it is full or the change does not fit it.
    pub async fn change(&mut self, relation: u32, change: Change) -> Result<(), PipelineError> {
        self.begin().await?;
        let plan = self.plans.get(&relation).ok_or_else(|| {
            PipelineError::Protocol(format!("change for unknown relation {relation}"))
        })?;
        let width = plan.target_columns.len();
        let mut untouched = std::mem::take(&mut self.scratch_untouched);
        // An update that changes the row's identity: the identity it gets.
        let mut becomes = None;
        let (tag, row) = match change {
            Change::Insert { new } => {
                let mut values = vec![None; width];
                for (cell, slot) in new.0.iter().zip(&plan.slots) {
                    if let Some(t) = slot {
                        values[*t] = text(cell);
                    }
                }
                (
                    Tag::Insert,
                    Row {
                        values,
                        key: Vec::new(),
                    },
                )
            }
            Change::Update { old, new } => {
                let mut values = vec![None; width];
                untouched.clear();
                untouched.resize(width, true);
                for (cell, slot) in new.0.iter().zip(&plan.slots) {
                    if let Some(t) = slot
                        && !matches!(cell, Cell::UnchangedToast)
                    {
                        values[*t] = text(cell);
                        untouched[*t] = false;
                    }
                }
                // The identity as it was: from the old tuple when the server sent one (the key
                // changed, or REPLICA IDENTITY FULL), else from the new row.
                let identity = old.as_ref().map(OldTuple::tuple).unwrap_or(&new);
                let key = identity_values(plan, identity);
                if old.is_some() {
                    let new_key = identity_values(plan, &new);
                    if new_key != key {
                        becomes = Some(identity_hash(&new_key));
                    }
                }
                (Tag::Update, Row { values, key })
            }
            Change::Delete { old } => {
                let key = identity_values(plan, old.tuple());
                (
                    Tag::Delete,
                    Row {
                        values: Vec::new(),
                        key,
                    },
                )
            }
        };
        let fits = self.batch_key.as_ref().is_some_and(|k| {
            k.relation == relation
                && match (&k.kind, tag) {
                    (Kind::Insert, Tag::Insert) | (Kind::Delete, Tag::Delete) => true,
                    (Kind::Update(u), Tag::Update) => *u == untouched,
                    _ => false,
                }
        });
        let identity = (!row.key.is_empty()).then(|| identity_hash(&row.key));
        // A set-based statement sees every row as it was before it: a change to a row whose
        // identity the batch already names, as it was or as it became (chained key changes,
        // renumbering, swaps), needs a statement of its own.
        let repeats = identity
            .into_iter()
            .chain(becomes)
            .any(|h| self.batch_identities.contains(&h));
        if !fits || repeats || self.batch.len() >= self.batch_rows {
            self.flush().await?;
            let kind = match tag {
                Tag::Insert => Kind::Insert,
                Tag::Update => Kind::Update(untouched.clone()),
                Tag::Delete => Kind::Delete,
            };
            self.batch_key = Some(StatementKey { relation, kind });
        }
        self.scratch_untouched = untouched;
        self.batch_identities
            .extend(identity.into_iter().chain(becomes));
        self.batch.push(row);
        self.rows_in_transaction += 1;
        Ok(())
    }

    /// Empties the target tables of `relations` (a source TRUNCATE), as PostgreSQL's own apply
    /// does: RESTRICT, so nothing outside them is emptied (the source's CASCADE named every
    /// table it reached, and those of the pipeline are in `relations`; a target-only table that
    /// refers to them keeps its rows), and without RESTART IDENTITY (the target's sequences are
    /// its own). When a table outside the set has a foreign key to one of them, TRUNCATE would
    /// refuse: the rows are deleted instead, if no row refers to them; if one does, the pipeline
    /// stops, naming the table and the constraint, and the slot keeps the change.
    pub async fn truncate(&mut self, relations: &[u32]) -> Result<(), PipelineError> {
        self.flush().await?;
        self.begin().await?;
        let tables: Vec<String> = relations
            .iter()
            .filter_map(|r| self.plans.get(r))
            .map(|p| p.target.quoted())
            .collect();
        if tables.is_empty() {
            return Ok(());
        }
        // What is queued goes first, so the checks below see this transaction's own changes.
        self.send_sql().await?;
        let outside = self
            .client
            .query(REFERENCED_FROM_OUTSIDE, &[&tables])
            .await
            .map_err(target("looking up foreign keys into truncated tables"))?;
        if outside.is_empty() {
            self.queue_sql(&format!("TRUNCATE {};\n", tables.join(", ")));
        } else {
            for row in &outside {
                let (constraint, referencing, columns, referenced): (
                    String,
                    String,
                    String,
                    String,
                ) = (row.get(0), row.get(1), row.get(2), row.get(3));
                let refers = self
                    .client
                    .query_opt(
                        &format!(
                            "SELECT 1 FROM {referencing} WHERE ({columns}) IS NOT NULL LIMIT 1"
                        ),
                        &[],
                    )
                    .await
                    .map_err(target(format!(
                        "looking for rows of {referencing} that refer to {referenced}"
                    )))?;
                if refers.is_some() {
                    return Err(PipelineError::TruncateBlocked {
                        table: referenced,
                        referencing,
                        constraint,
                    });
                }
            }
            let deletes: Vec<String> = tables
                .iter()
                .map(|t| format!("DELETE FROM {t};\n"))
                .collect();
            self.queue_sql(&deletes.concat());
        }
        self.rows_in_transaction += 1;
        Ok(())
    }

    /// Marks the end of a source transaction: its changes are written (not yet committed).
    pub async fn source_commit(
        &mut self,
        end_lsn: u64,
        commit_time: i64,
    ) -> Result<(), PipelineError> {
        self.flush().await?;
        self.begin().await?;
        self.pending = Some((end_lsn, commit_time));
        Ok(())
    }

    /// Commits the target transaction together with the pipeline's new position. Returns that
    /// source position and the target's WAL position just past the commit (the commit is
    /// asynchronous: the caller confirms the source position once the target has flushed that
    /// far).
    pub async fn commit(&mut self) -> Result<Option<(u64, u64)>, PipelineError> {
        if !self.in_transaction {
            return Ok(None);
        }
        self.flush().await?;
        let Some((lsn, commit_time)) = self.pending.take() else {
            return Ok(None);
        };
        let position = prepare_once(
            &self.client,
            &mut self.position,
            state::APPLIED_SQL,
            &[Type::TEXT; 4],
        )
        .await?;
        let values =
            state::applied_params(&self.pipeline, lsn, commit_time, self.rows_in_transaction)
                .map(|v| Some(Bytes::from(v)));
        self.queued.push(Queued::Row(position, values.into(), None));
        self.queue_sql("COMMIT;\n");
        // The transaction ends here whether or not the round trip succeeds: on failure the
        // pipeline stops and the target rolled back.
        self.in_transaction = false;
        self.settle().await?;
        let insert_lsn = prepare_once(
            &self.client,
            &mut self.insert_lsn,
            "SELECT pg_current_wal_insert_lsn()::text",
            &[],
        )
        .await?;
        let queued = std::mem::take(&mut self.queued);
        let text = send_queued(&self.client, &queued, Some(&insert_lsn))
            .await
            .map_err(|(at, e)| self.refused(&queued, at, e))?;
        let target_lsn = text
            .and_then(|text| crate::wire::parse_lsn(&text).ok())
            .ok_or_else(|| PipelineError::Protocol("the target reported no WAL position".into()))?;
        Ok(Some((lsn, target_lsn)))
    }

    /// Writes the current batch.
    async fn flush(&mut self) -> Result<(), PipelineError> {
        let Some(key) = self.batch_key.take() else {
            return Ok(());
        };
        let rows = std::mem::take(&mut self.batch);
        self.batch_identities.clear();
        if rows.is_empty() {
            return Ok(());
        }
        let bulk = rows.len() >= BULK_ROWS && !self.plans[&key.relation].full_identity;
        if !bulk {
            return self.append_rows(&key, &rows).await;
        }
        // The writer task gets its own copy of the plan (the statement path borrows it).
        let plan = self.plans[&key.relation].clone();
        // COPY and the staging statements use the extended protocol: what is gathered goes
        // first (and the batch before this one).
        self.send_sql().await?;
        self.writes_queued = true;
        self.writer
            .send(Job::Write(Box::new(Batch {
                kind: key.kind,
                plan,
                rows,
            })))
            .await
            .map_err(|_| writer_gone())
    }

    /// One prepared statement per row, added to what goes out at commit.
    async fn append_rows(&mut self, key: &StatementKey, rows: &[Row]) -> Result<(), PipelineError> {
        let statement = match self.statements.get(key) {
            Some(statement) => statement.clone(),
            None => {
                let plan = &self.plans[&key.relation];
                let (sql, n) = statement_sql(plan, &key.kind, &|n| format!("${n}"));
                // Every value travels as text and is cast by the statement itself.
                let statement = self
                    .client
                    .prepare_typed(&sql, &vec![Type::TEXT; n])
                    .await
                    .map_err(target(format!("preparing a statement for {}", plan.target)))?;
                self.statements.insert(key.clone(), statement.clone());
                statement
            }
        };
        for row in rows {
            let params = row_params(&key.kind, row)?;
            self.queued
                .push(Queued::Row(statement.clone(), params, Some(key.relation)));
        }
        if self.queued.len() >= QUEUED_FLUSH {
            self.send_sql().await?;
        }
        Ok(())
    }
}

/// The writer task ended before the applier: it only does when its runtime shuts down.
fn writer_gone() -> PipelineError {
    PipelineError::Protocol("the batch writer stopped".into())
}

/// `slot`'s statement, prepared from `sql` (parameters of `types`) on first use.
async fn prepare_once(
    client: &Client,
    slot: &mut Option<Statement>,
    sql: &str,
    types: &[Type],
) -> Result<Statement, PipelineError> {
    if let Some(statement) = slot {
        return Ok(statement.clone());
    }
    let statement = client
        .prepare_typed(sql, types)
        .await
        .map_err(target(format!("preparing {sql}")))?;
    Ok(slot.insert(statement).clone())
}

/// Which kind of change a row is, before its batch key is settled.
#[derive(Debug, Clone, Copy)]
enum Tag {
    Insert,
    Update,
    Delete,
}

/// A hash of an identity's values (NULL distinct from every value, values delimited).
fn identity_hash(key: &[Option<Bytes>]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, value| {
        let h = match value {
            None => h ^ 0xff,
            Some(v) => fnv1a_from(h ^ v.len() as u64, v),
        };
        h.wrapping_mul(0x0100_0000_01b3)
    })
}

/// The hasher of `batch_identities`: its keys are hashes already.
#[derive(Default, Clone, Copy)]
struct BuildIdentity;

#[derive(Default)]
struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a_from(self.0, bytes);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl std::hash::BuildHasher for BuildIdentity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(0xcbf2_9ce4_8422_2325, bytes)
}

fn fnv1a_from(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn identity_values(plan: &RelPlan, tuple: &Tuple) -> Vec<Option<Bytes>> {
    if plan.full_identity {
        // Every copied column, in target order.
        let mut values = vec![None; plan.target_columns.len()];
        for (cell, slot) in tuple.0.iter().zip(&plan.slots) {
            if let Some(t) = slot {
                values[*t] = text(cell);
            }
        }
        values
    } else {
        plan.key
            .iter()
            .map(|&k| tuple.0.get(k).and_then(text))
            .collect()
    }
}

/// The SQL for one row of `kind` with parameter `n` (1-based) rendered by `param`, and how many
/// parameters it takes.
fn statement_sql(plan: &RelPlan, kind: &Kind, param: &dyn Fn(usize) -> String) -> (String, usize) {
    let table = plan.target.quoted();
    let column = |i: usize| quote_ident(&plan.target_columns[i].name);
    let cast =
        |n: usize, i: usize| format!("CAST({} AS {})", param(n), plan.target_columns[i].cast_type);
    // Identity columns, as target column indices.
    let identity: Vec<usize> = if plan.full_identity {
        (0..plan.target_columns.len()).collect()
    } else {
        plan.key.iter().filter_map(|&k| plan.slots[k]).collect()
    };
    let matcher = |first: usize| -> String {
        let conditions: Vec<String> = identity
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                if plan.full_identity {
                    format!("{} IS NOT DISTINCT FROM {}", column(i), cast(first + j, i))
                } else {
                    format!("{} = {}", column(i), cast(first + j, i))
                }
            })
            .collect();
        if plan.full_identity {
            // Without a key, identical rows are interchangeable: change exactly one. One that
            // another apply session has locked is skipped: on the source this change found an
            // identical row nobody held (row locks order the source), and waiting for the
            // other session, whose transaction commits later in the stream, would never end.
            format!(
                "ctid = (SELECT ctid FROM {table} WHERE {} LIMIT 1 FOR UPDATE SKIP LOCKED)",
                conditions.join(" AND ")
            )
        } else {
            conditions.join(" AND ")
        }
    };
    match kind {
        Kind::Insert => {
            let n = plan.target_columns.len();
            let columns: Vec<String> = (0..n).map(column).collect();
            let values: Vec<String> = (0..n).map(|i| cast(i + 1, i)).collect();
            (
                format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    columns.join(", "),
                    values.join(", ")
                ),
                n,
            )
        }
        Kind::Update(untouched) => {
            let set: Vec<usize> = (0..plan.target_columns.len())
                .filter(|&i| !untouched[i])
                .collect();
            let assignments: Vec<String> = set
                .iter()
                .enumerate()
                .map(|(j, &i)| format!("{} = {}", column(i), cast(j + 1, i)))
                .collect();
            (
                format!(
                    "UPDATE {table} SET {} WHERE {}",
                    assignments.join(", "),
                    matcher(set.len() + 1)
                ),
                set.len() + identity.len(),
            )
        }
        Kind::Delete => (
            format!("DELETE FROM {table} WHERE {}", matcher(1)),
            identity.len(),
        ),
    }
}

/// The row's values in parameter order (shared with the decoded message), checked to be UTF-8.
fn row_params(kind: &Kind, row: &Row) -> Result<Vec<Option<Bytes>>, PipelineError> {
    let values: Box<dyn Iterator<Item = &Option<Bytes>>> = match kind {
        Kind::Insert => Box::new(row.values.iter()),
        Kind::Update(untouched) => Box::new(
            row.values
                .iter()
                .zip(untouched)
                .filter(|(_, untouched)| !**untouched)
                .map(|(v, _)| v)
                .chain(&row.key),
        ),
        Kind::Delete => Box::new(row.key.iter()),
    };
    values.map(|v| as_str(v).map(|_| v.clone())).collect()
}

/// Sends `queued` in one pipeline (every request written before any answer is awaited), then
/// `last`'s single text value if given. Stops at the first error.
/// On failure, says which of `queued` the target refused (`queued.len()` for `last`).
async fn send_queued(
    client: &Client,
    queued: &[Queued],
    last: Option<&Statement>,
) -> Result<Option<String>, (usize, tokio_postgres::Error)> {
    type Sent<'a> = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>,
    >;
    let mut sends: Vec<Sent<'_>> = queued
        .iter()
        .map(|q| -> Sent<'_> {
            match q {
                Queued::Sql(sql) => Box::pin(client.batch_execute(sql)),
                Queued::Row(statement, values, _) => Box::pin(async move {
                    // Checked when queued, so nothing is replaced here.
                    let values = values.iter().map(|v| {
                        v.as_deref()
                            .map(|b| std::str::from_utf8(b).unwrap_or_default())
                    });
                    client.execute_raw(statement, values).await.map(|_| ())
                }),
            }
        })
        .collect();
    let mut last = last.map(|statement| Box::pin(client.query_one(statement, &[])));
    // A request is written when its future is first polled: poll each once, in order, so they
    // reach the server in order and back to back; then collect the answers (awaiting polls
    // them again, with a real waker).
    let mut done = Vec::with_capacity(sends.len());
    for send in &mut sends {
        done.push(send.now_or_never());
    }
    let mut answer = last.as_mut().and_then(|query| query.now_or_never());
    for (at, (send, early)) in sends.into_iter().zip(done).enumerate() {
        match early {
            Some(result) => result,
            None => send.await,
        }
        .map_err(|e| (at, e))?;
    }
    if let Some(query) = last
        && answer.is_none()
    {
        answer = Some(query.await);
    }
    match answer {
        None => Ok(None),
        Some(row) => Ok(row
            .map_err(|e| (queued.len(), e))?
            .get::<_, Option<String>>(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QualifiedName;
    use crate::schema::ColumnInfo;

    fn column(name: &str, type_name: &str, cast_type: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            type_name: type_name.into(),
            cast_type: cast_type.into(),
            in_primary_key: name == "id",
        }
    }

    fn plan(full: bool) -> RelPlan {
        RelPlan {
            source: QualifiedName::parse("s.t").unwrap(),
            target: QualifiedName::parse("d.t").unwrap(),
            slots: vec![Some(0), Some(1), None],
            target_columns: vec![
                column("id", "bigint", "bigint"),
                column("title", "character varying(20)", "character varying"),
            ],
            key: if full { vec![0, 1] } else { vec![0] },
            full_identity: full,
        }
    }

    fn placeholder(n: usize) -> String {
        format!("${n}")
    }

    #[test]
    fn statements_cast_text_parameters_to_the_target_types() {
        // Without the type's modifier: the column's own assignment refuses a value too long
        // for it, where `CAST(... AS character varying(20))` would cut it.
        let p = plan(false);
        assert_eq!(
            statement_sql(&p, &Kind::Insert, &placeholder),
            (
                "INSERT INTO \"d\".\"t\" (\"id\", \"title\") VALUES (CAST($1 AS bigint), CAST($2 AS character varying))".into(),
                2
            )
        );
        assert_eq!(
            statement_sql(&p, &Kind::Update(vec![false, true]), &placeholder),
            (
                "UPDATE \"d\".\"t\" SET \"id\" = CAST($1 AS bigint) WHERE \"id\" = CAST($2 AS bigint)".into(),
                2
            )
        );
        assert_eq!(
            statement_sql(&p, &Kind::Delete, &placeholder),
            (
                "DELETE FROM \"d\".\"t\" WHERE \"id\" = CAST($1 AS bigint)".into(),
                1
            )
        );
    }

    #[test]
    fn without_a_key_one_identical_row_is_matched() {
        let (sql, n) = statement_sql(&plan(true), &Kind::Delete, &placeholder);
        assert_eq!(n, 2);
        assert!(
            sql.contains("ctid = (SELECT ctid FROM \"d\".\"t\" WHERE \"id\" IS NOT DISTINCT FROM"),
            "{sql}"
        );
        assert!(sql.ends_with("LIMIT 1 FOR UPDATE SKIP LOCKED)"), "{sql}");
    }
}
