//! The toggle store: Unleash feature definitions and segments in PostgreSQL (database `router`),
//! shared by all router instances, with an append-only audit history. Every change bumps one
//! version counter and sends `NOTIFY router_toggles` in the same transaction, so other instances
//! reload at once.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use serde::Serialize;
use unleash_types::client_features::{ClientFeature, ClientFeatures, Segment};

use crate::toggles::{ToggleError, check_with_segments, wire};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/router");
/// The channel changes are announced on; the payload is the new version.
pub const CHANNEL: &str = "router_toggles";

diesel::table! {
    toggles (name) {
        name -> Text,
        definition -> Jsonb,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    toggle_segments (id) {
        id -> Int4,
        definition -> Jsonb,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    toggle_audit (id) {
        id -> Int8,
        kind -> Text,
        name -> Text,
        actor -> Text,
        at -> Timestamptz,
        before -> Nullable<Jsonb>,
        after -> Nullable<Jsonb>,
        reason -> Text,
    }
}

diesel::table! {
    toggle_version (id) {
        id -> Int4,
        version -> Int8,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("toggle {0} not found")]
    NotFound(String),
    #[error("segment {0} not found")]
    SegmentNotFound(i32),
    #[error("segment {id} is used by {}", toggles.join(", "))]
    SegmentInUse { id: i32, toggles: Vec<String> },
    /// The change would leave a set the engine cannot take (a strategy naming a segment that is
    /// not stored, say); nothing was written.
    #[error(transparent)]
    Invalid(#[from] ToggleError),
    #[error("stored definition of {name} is unreadable: {detail}")]
    Corrupt { name: String, detail: String },
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Db(#[from] platform::db::DbError),
}

/// Who changed a toggle and why; both end up in the audit history.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub actor: &'a str,
    pub reason: &'a str,
}

/// What an audit row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Toggle(&'a str),
    Segment(i32),
}

impl Subject<'_> {
    /// The row's `kind` and `name` (a segment's name is its id).
    fn key(self) -> (&'static str, String) {
        match self {
            Subject::Toggle(name) => ("toggle", name.to_string()),
            Subject::Segment(id) => ("segment", id.to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Queryable)]
pub struct AuditEntry {
    pub id: i64,
    pub kind: String,
    pub name: String,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub reason: String,
}

/// Every definition and segment and the version they are at, read in one transaction.
pub fn load(conn: &mut PgConnection) -> Result<(i64, ClientFeatures), StoreError> {
    conn.transaction(|tx| {
        let version: i64 = toggle_version::table
            .select(toggle_version::version)
            .first(tx)?;
        let rows: Vec<(String, serde_json::Value)> = toggles::table
            .select((toggles::name, toggles::definition))
            .order(toggles::name.asc())
            .load(tx)?;
        let features = rows
            .into_iter()
            .map(|(name, json)| {
                serde_json::from_value::<ClientFeature>(json).map_err(|e| StoreError::Corrupt {
                    name,
                    detail: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut document = document(features);
        let segments = segments(tx)?;
        if !segments.is_empty() {
            document.segments = Some(segments);
        }
        Ok((version, document))
    })
}

pub fn document(features: Vec<ClientFeature>) -> ClientFeatures {
    ClientFeatures {
        version: 2,
        features,
        segments: None,
        query: None,
        meta: None,
    }
}

/// Every stored segment, by id.
pub fn segments(conn: &mut PgConnection) -> Result<Vec<Segment>, StoreError> {
    let rows: Vec<(i32, serde_json::Value)> = toggle_segments::table
        .select((toggle_segments::id, toggle_segments::definition))
        .order(toggle_segments::id.asc())
        .load(conn)?;
    rows.into_iter()
        .map(|(id, json)| parse_segment(id, json))
        .collect()
}

fn parse_segment(id: i32, json: serde_json::Value) -> Result<Segment, StoreError> {
    serde_json::from_value(json).map_err(|e| StoreError::Corrupt {
        name: format!("segment {id}"),
        detail: e.to_string(),
    })
}

pub fn version(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(toggle_version::table
        .select(toggle_version::version)
        .first(conn)?)
}

/// Serializes the changes: each takes the version row first, so a change that checks the set
/// (are the segments a strategy names still there? is a segment still used?) sees every change
/// before it committed, and none commits under it.
fn lock(tx: &mut PgConnection) -> QueryResult<i64> {
    toggle_version::table
        .find(1)
        .select(toggle_version::version)
        .for_update()
        .first(tx)
}

fn get_json(tx: &mut PgConnection, name: &str) -> QueryResult<Option<serde_json::Value>> {
    toggles::table
        .find(name)
        .select(toggles::definition)
        .for_update()
        .first(tx)
        .optional()
}

fn get_segment_json(tx: &mut PgConnection, id: i32) -> QueryResult<Option<serde_json::Value>> {
    toggle_segments::table
        .find(id)
        .select(toggle_segments::definition)
        .for_update()
        .first(tx)
        .optional()
}

pub fn get(conn: &mut PgConnection, name: &str) -> Result<ClientFeature, StoreError> {
    let json = get_json(conn, name)?.ok_or_else(|| StoreError::NotFound(name.to_string()))?;
    serde_json::from_value(json).map_err(|e| StoreError::Corrupt {
        name: name.to_string(),
        detail: e.to_string(),
    })
}

pub fn get_segment(conn: &mut PgConnection, id: i32) -> Result<Segment, StoreError> {
    let json = get_segment_json(conn, id)?.ok_or(StoreError::SegmentNotFound(id))?;
    parse_segment(id, json)
}

/// Appends the audit row of one change.
fn audit(
    tx: &mut PgConnection,
    subject: Subject,
    before: Option<serde_json::Value>,
    after: Option<&serde_json::Value>,
    change: &Change,
) -> QueryResult<()> {
    let (kind, name) = subject.key();
    diesel::insert_into(toggle_audit::table)
        .values((
            toggle_audit::kind.eq(kind),
            toggle_audit::name.eq(name),
            toggle_audit::actor.eq(change.actor),
            toggle_audit::before.eq(before),
            toggle_audit::after.eq(after),
            toggle_audit::reason.eq(change.reason),
        ))
        .execute(tx)?;
    Ok(())
}

/// Writes `after` (or deletes, for `None`) with its audit row, unless nothing changes.
fn write(
    tx: &mut PgConnection,
    name: &str,
    after: Option<&serde_json::Value>,
    change: &Change,
) -> Result<bool, StoreError> {
    let before = get_json(tx, name)?;
    if before.as_ref() == after {
        return Ok(false);
    }
    match after {
        Some(json) => {
            diesel::insert_into(toggles::table)
                .values((toggles::name.eq(name), toggles::definition.eq(json)))
                .on_conflict(toggles::name)
                .do_update()
                .set((
                    toggles::definition.eq(json),
                    toggles::updated_at.eq(diesel::dsl::now),
                ))
                .execute(tx)?;
        }
        None => {
            diesel::delete(toggles::table.find(name)).execute(tx)?;
        }
    }
    audit(tx, Subject::Toggle(name), before, after, change)?;
    Ok(true)
}

/// [`write`] for a segment.
fn write_segment(
    tx: &mut PgConnection,
    id: i32,
    after: Option<&serde_json::Value>,
    change: &Change,
) -> Result<bool, StoreError> {
    let before = get_segment_json(tx, id)?;
    if before.as_ref() == after {
        return Ok(false);
    }
    match after {
        Some(json) => {
            diesel::insert_into(toggle_segments::table)
                .values((
                    toggle_segments::id.eq(id),
                    toggle_segments::definition.eq(json),
                ))
                .on_conflict(toggle_segments::id)
                .do_update()
                .set((
                    toggle_segments::definition.eq(json),
                    toggle_segments::updated_at.eq(diesel::dsl::now),
                ))
                .execute(tx)?;
        }
        None => {
            diesel::delete(toggle_segments::table.find(id)).execute(tx)?;
        }
    }
    audit(tx, Subject::Segment(id), before, after, change)?;
    Ok(true)
}

/// Checks `features` as the engine will take them with the stored segments (see
/// [`check_with_segments`]); fields name `features[i]…` in the given order.
fn check(tx: &mut PgConnection, features: &[ClientFeature]) -> Result<(), StoreError> {
    let segments = segments(tx)?;
    check_with_segments(features, &segments)?;
    Ok(())
}

/// Bumps the version and announces it; the NOTIFY is delivered only if the transaction commits.
fn publish(tx: &mut PgConnection) -> Result<i64, StoreError> {
    let version: i64 = diesel::update(toggle_version::table.find(1))
        .set(toggle_version::version.eq(toggle_version::version + 1))
        .returning(toggle_version::version)
        .get_result(tx)?;
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<diesel::sql_types::Text, _>(CHANNEL)
        .bind::<diesel::sql_types::Text, _>(version.to_string())
        .execute(tx)?;
    Ok(version)
}

/// The version after a change: bumped and announced if anything changed.
fn settle(tx: &mut PgConnection, changed: bool) -> Result<i64, StoreError> {
    if changed { publish(tx) } else { version(tx) }
}

/// Creates or replaces one toggle. Returns the version after the change. Refused
/// ([`StoreError::Invalid`], fields `features[0]…`) if it names a segment that is not stored.
pub fn put(
    conn: &mut PgConnection,
    feature: &ClientFeature,
    change: &Change,
) -> Result<i64, StoreError> {
    let json = wire::to_json(feature);
    conn.transaction(|tx| {
        lock(tx)?;
        let changed = write(tx, &feature.name, Some(&json), change)?;
        check(tx, std::slice::from_ref(feature))?;
        settle(tx, changed)
    })
}

/// Reads a toggle, applies `edit`, writes it back, all under one row lock.
pub fn update(
    conn: &mut PgConnection,
    name: &str,
    change: &Change,
    edit: impl FnOnce(&mut ClientFeature),
) -> Result<(i64, ClientFeature), StoreError> {
    conn.transaction(|tx| {
        lock(tx)?;
        let mut feature = get(tx, name)?;
        edit(&mut feature);
        let json = wire::to_json(&feature);
        let changed = write(tx, name, Some(&json), change)?;
        check(tx, std::slice::from_ref(&feature))?;
        Ok((settle(tx, changed)?, feature))
    })
}

pub fn delete(conn: &mut PgConnection, name: &str, change: &Change) -> Result<i64, StoreError> {
    conn.transaction(|tx| {
        lock(tx)?;
        if get_json(tx, name)?.is_none() {
            return Err(StoreError::NotFound(name.to_string()));
        }
        write(tx, name, None, change)?;
        publish(tx)
    })
}

/// Imports a client-features document: each segment and toggle in it is created or replaced
/// (those not in it are left alone), in one transaction with one version bump. A strategy may
/// name a segment of the document or one already stored. Returns the version and how many
/// toggles and segments changed.
pub fn import(
    conn: &mut PgConnection,
    features: &ClientFeatures,
    change: &Change,
) -> Result<(i64, usize), StoreError> {
    conn.transaction(|tx| {
        lock(tx)?;
        let mut changed = 0;
        for segment in features.segments.iter().flatten() {
            let json = wire::to_json(segment);
            if write_segment(tx, segment.id, Some(&json), change)? {
                changed += 1;
            }
        }
        for feature in &features.features {
            let json = wire::to_json(feature);
            if write(tx, &feature.name, Some(&json), change)? {
                changed += 1;
            }
        }
        check(tx, &features.features)?;
        Ok((settle(tx, changed > 0)?, changed))
    })
}

/// Creates or replaces one segment; every strategy naming it follows at once.
pub fn put_segment(
    conn: &mut PgConnection,
    segment: &Segment,
    change: &Change,
) -> Result<i64, StoreError> {
    let json = wire::to_json(segment);
    conn.transaction(|tx| {
        lock(tx)?;
        let changed = write_segment(tx, segment.id, Some(&json), change)?;
        settle(tx, changed)
    })
}

/// Deletes a segment that no strategy names ([`StoreError::SegmentInUse`] lists the toggles
/// that do: as in Unleash, a segment in use cannot go, since its strategies would match more).
pub fn delete_segment(
    conn: &mut PgConnection,
    id: i32,
    change: &Change,
) -> Result<i64, StoreError> {
    conn.transaction(|tx| {
        lock(tx)?;
        if get_segment_json(tx, id)?.is_none() {
            return Err(StoreError::SegmentNotFound(id));
        }
        let (_, document) = load(tx)?;
        let users: Vec<String> = document
            .features
            .into_iter()
            .filter(|f| {
                f.strategies
                    .iter()
                    .flatten()
                    .any(|s| s.segments.iter().flatten().any(|used| *used == id))
            })
            .map(|f| f.name)
            .collect();
        if !users.is_empty() {
            return Err(StoreError::SegmentInUse { id, toggles: users });
        }
        write_segment(tx, id, None, change)?;
        publish(tx)
    })
}

/// The audit history, oldest first; for one toggle or segment, or all.
pub fn history(
    conn: &mut PgConnection,
    subject: Option<Subject>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut q = toggle_audit::table
        .select((
            toggle_audit::id,
            toggle_audit::kind,
            toggle_audit::name,
            toggle_audit::actor,
            toggle_audit::at,
            toggle_audit::before,
            toggle_audit::after,
            toggle_audit::reason,
        ))
        .order(toggle_audit::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(subject) = subject {
        let (kind, name) = subject.key();
        q = q
            .filter(toggle_audit::kind.eq(kind))
            .filter(toggle_audit::name.eq(name));
    }
    let mut rows: Vec<AuditEntry> = q.load(conn)?;
    rows.reverse();
    Ok(rows)
}

/// Each toggle's latest audit entry: when it last changed, by whom, why. Without the
/// definitions before and after (`before`/`after` are `None`). Deleted toggles included.
pub fn latest_changes(conn: &mut PgConnection) -> Result<Vec<AuditEntry>, StoreError> {
    let rows: Vec<(i64, String, String, DateTime<Utc>, String)> = toggle_audit::table
        .filter(toggle_audit::kind.eq("toggle"))
        .select((
            toggle_audit::id,
            toggle_audit::name,
            toggle_audit::actor,
            toggle_audit::at,
            toggle_audit::reason,
        ))
        .distinct_on(toggle_audit::name)
        .order((toggle_audit::name.asc(), toggle_audit::id.desc()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, name, actor, at, reason)| AuditEntry {
            id,
            kind: "toggle".into(),
            name,
            actor,
            at,
            before: None,
            after: None,
            reason,
        })
        .collect())
}

/// When each toggle last changed, for finding stale ones.
pub fn last_changes(conn: &mut PgConnection) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    Ok(toggles::table
        .select((toggles::name, toggles::updated_at))
        .order(toggles::name.asc())
        .load(conn)?)
}
