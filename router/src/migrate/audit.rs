//! Every flip as the router database keeps it (table `flips`): what `fig migrate CAP status` and
//! `GET /admin/migrations/{capability}` show, and what tells the next flip command that a flip
//! was interrupted.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text};
use serde::Serialize;

use super::plan::{Direction, Step};

/// A flip as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, QueryableByName)]
pub struct Flip {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub capability: String,
    #[diesel(sql_type = Text)]
    pub direction: String,
    #[diesel(sql_type = Text)]
    pub actor: String,
    #[diesel(sql_type = Text)]
    pub reason: String,
    /// The last step done; for a failed or undone flip, the step that failed.
    #[diesel(sql_type = Text)]
    pub step: String,
    /// `running`, `done`, `undone` (failed and given back to the old owner) or `failed` (the
    /// undo itself failed: the next flip command settles it first).
    #[diesel(sql_type = Text)]
    pub outcome: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    /// The old owner's end of WAL after its fence.
    #[diesel(sql_type = Nullable<Text>)]
    pub cut_lsn: Option<String>,
    /// Where the stream back into the old owner starts.
    #[diesel(sql_type = Nullable<Text>)]
    pub reverse_from_lsn: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
    /// From holding the writes to releasing them: the pause writes saw.
    #[diesel(sql_type = Nullable<Double>)]
    pub hold_ms: Option<f64>,
    /// Waiting for the stream into the new owner to pass the cut.
    #[diesel(sql_type = Nullable<Double>)]
    pub catch_up_ms: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub total_ms: Option<f64>,
}

const COLUMNS: &str = "id, capability, direction, actor, reason, step, outcome, error, \
     cut_lsn::text AS cut_lsn, reverse_from_lsn::text AS reverse_from_lsn, started_at, \
     finished_at, hold_ms, catch_up_ms, total_ms";

/// Records a new running flip. Fails on the unique index when one is running already.
pub fn start(
    conn: &mut PgConnection,
    capability: &str,
    direction: Direction,
    actor: &str,
    reason: &str,
) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    diesel::sql_query(
        "INSERT INTO flips (capability, direction, actor, reason, step, outcome) \
         VALUES ($1, $2, $3, $4, 'started', 'running') RETURNING id",
    )
    .bind::<Text, _>(capability)
    .bind::<Text, _>(direction.as_str())
    .bind::<Text, _>(actor)
    .bind::<Text, _>(reason)
    .get_result::<Id>(conn)
    .map(|r| r.id)
}

/// The flip of `capability` left unsettled, if any: one still recorded as running (its process
/// died), or one whose undo failed. Every flip command settles it before anything else, so
/// there is at most one.
pub fn running(conn: &mut PgConnection, capability: &str) -> QueryResult<Option<Flip>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM flips WHERE capability = $1 AND outcome IN ('running', 'failed') \
         ORDER BY id DESC LIMIT 1"
    ))
    .bind::<Text, _>(capability)
    .get_result(conn)
    .optional()
}

/// `capability`'s flips, newest first.
pub fn history(conn: &mut PgConnection, capability: &str, limit: i64) -> QueryResult<Vec<Flip>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM flips WHERE capability = $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind::<Text, _>(capability)
    .bind::<BigInt, _>(limit)
    .load(conn)
}

/// One flip.
pub fn get(conn: &mut PgConnection, id: i64) -> QueryResult<Flip> {
    diesel::sql_query(format!("SELECT {COLUMNS} FROM flips WHERE id = $1"))
        .bind::<BigInt, _>(id)
        .get_result(conn)
}

/// Records that `step` is done (and the positions it produced).
pub fn step(
    conn: &mut PgConnection,
    id: i64,
    step: Step,
    cut: Option<&str>,
    reverse_from: Option<&str>,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE flips SET step = $2, \
         cut_lsn = coalesce($3::pg_lsn, cut_lsn), \
         reverse_from_lsn = coalesce($4::pg_lsn, reverse_from_lsn) WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(step.as_str())
    .bind::<Nullable<Text>, _>(cut)
    .bind::<Nullable<Text>, _>(reverse_from)
    .execute(conn)
    .map(drop)
}

/// How a flip ended.
#[derive(Debug, Clone, Default)]
pub struct Ending<'a> {
    pub outcome: &'a str,
    /// For `undone` and `failed`: the step that failed.
    pub failed_step: Option<Step>,
    pub error: Option<&'a str>,
    pub hold_ms: Option<f64>,
    pub catch_up_ms: Option<f64>,
    pub total_ms: Option<f64>,
}

pub fn finish(conn: &mut PgConnection, id: i64, ending: &Ending) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE flips SET outcome = $2, step = coalesce($3, step), error = $4, \
         hold_ms = coalesce($5, hold_ms), catch_up_ms = coalesce($6, catch_up_ms), \
         total_ms = coalesce($7, total_ms), finished_at = now() WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(ending.outcome)
    .bind::<Nullable<Text>, _>(ending.failed_step.map(Step::as_str))
    .bind::<Nullable<Text>, _>(ending.error)
    .bind::<Nullable<Double>, _>(ending.hold_ms)
    .bind::<Nullable<Double>, _>(ending.catch_up_ms)
    .bind::<Nullable<Double>, _>(ending.total_ms)
    .execute(conn)
    .map(drop)
}
