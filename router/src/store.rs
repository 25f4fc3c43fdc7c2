//! The toggle store: Unleash feature definitions in PostgreSQL (database `router`), shared by all
//! router instances, with an append-only audit history. Every change bumps one version counter
//! and sends `NOTIFY router_toggles` in the same transaction, so other instances reload at once.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use serde::Serialize;
use unleash_types::client_features::{ClientFeature, ClientFeatures};

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
    toggle_audit (id) {
        id -> Int8,
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

#[derive(Debug, Clone, Serialize, Queryable)]
pub struct AuditEntry {
    pub id: i64,
    pub name: String,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub reason: String,
}

/// Every definition and the version they are at, read in one transaction.
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
        Ok((version, document(features)))
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

pub fn version(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(toggle_version::table
        .select(toggle_version::version)
        .first(conn)?)
}

fn get_json(tx: &mut PgConnection, name: &str) -> QueryResult<Option<serde_json::Value>> {
    toggles::table
        .find(name)
        .select(toggles::definition)
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
    diesel::insert_into(toggle_audit::table)
        .values((
            toggle_audit::name.eq(name),
            toggle_audit::actor.eq(change.actor),
            toggle_audit::before.eq(before),
            toggle_audit::after.eq(after),
            toggle_audit::reason.eq(change.reason),
        ))
        .execute(tx)?;
    Ok(true)
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

/// Creates or replaces one toggle. Returns the version after the change.
pub fn put(
    conn: &mut PgConnection,
    feature: &ClientFeature,
    change: &Change,
) -> Result<i64, StoreError> {
    let json = serde_json::to_value(feature).unwrap_or_default();
    conn.transaction(|tx| {
        if write(tx, &feature.name, Some(&json), change)? {
            publish(tx)
        } else {
            version(tx)
        }
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
        let mut feature = get(tx, name)?;
        edit(&mut feature);
        let json = serde_json::to_value(&feature).unwrap_or_default();
        let version = if write(tx, name, Some(&json), change)? {
            publish(tx)?
        } else {
            version(tx)?
        };
        Ok((version, feature))
    })
}

pub fn delete(conn: &mut PgConnection, name: &str, change: &Change) -> Result<i64, StoreError> {
    conn.transaction(|tx| {
        if get_json(tx, name)?.is_none() {
            return Err(StoreError::NotFound(name.to_string()));
        }
        write(tx, name, None, change)?;
        publish(tx)
    })
}

/// Imports a client-features document: each toggle in it is created or replaced (toggles not in
/// it are left alone), in one transaction with one version bump.
pub fn import(
    conn: &mut PgConnection,
    features: &ClientFeatures,
    change: &Change,
) -> Result<(i64, usize), StoreError> {
    conn.transaction(|tx| {
        let mut changed = 0;
        for feature in &features.features {
            let json = serde_json::to_value(feature).unwrap_or_default();
            if write(tx, &feature.name, Some(&json), change)? {
                changed += 1;
            }
        }
        let version = if changed > 0 {
            publish(tx)?
        } else {
            version(tx)?
        };
        Ok((version, changed))
    })
}

/// The audit history, oldest first; for one toggle or all.
pub fn history(
    conn: &mut PgConnection,
    name: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut q = toggle_audit::table
        .select((
            toggle_audit::id,
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
    if let Some(name) = name {
        q = q.filter(toggle_audit::name.eq(name.to_string()));
    }
    let mut rows: Vec<AuditEntry> = q.load(conn)?;
    rows.reverse();
    Ok(rows)
}

/// Each toggle's latest audit entry: when it last changed, by whom, why. Without the
/// definitions before and after (`before`/`after` are `None`). Deleted toggles included.
pub fn latest_changes(conn: &mut PgConnection) -> Result<Vec<AuditEntry>, StoreError> {
    let rows: Vec<(i64, String, String, DateTime<Utc>, String)> = toggle_audit::table
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
