//! Write ownership in the `router` database, shared by every router instance: one row per
//! capability whose ownership was ever set, one version counter for all of them, and each
//! instance's acknowledgement of the version it applies.
//!
//! A change bumps the counter and sends `NOTIFY router_ownership, '<version>'` in its own
//! transaction, so every instance reloads within milliseconds of the commit, and never sees the
//! notification of a change that rolled back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double, Text};
use serde::Serialize;

use crate::routes::WriteOwner;

/// The channel changes are announced on; the payload is the new version.
pub const CHANNEL: &str = "router_ownership";

diesel::table! {
    write_ownership (capability) {
        capability -> Text,
        owner -> Text,
        held -> Bool,
        held_since -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    ownership_version (id) {
        id -> Int4,
        version -> Int8,
    }
}

diesel::table! {
    router_instances (instance) {
        instance -> Text,
        ownership_version -> Int8,
        seen_at -> Timestamptz,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// The table's CHECK forbids this; it would take a hand edit with the constraint dropped.
    #[error("stored owner of {capability} is {owner:?}, neither legacy nor extracted")]
    Corrupt { capability: String, owner: String },
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Db(#[from] platform::db::DbError),
}

/// One capability's stored ownership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub capability: String,
    pub owner: WriteOwner,
    /// Writes to the capability wait in every router (up to its `write_hold`) instead of going
    /// to `owner`.
    pub held: bool,
    /// When the current hold began; `None` while not held.
    pub held_since: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A router instance's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable)]
pub struct Instance {
    /// The instance's name (`ROUTER_INSTANCE`).
    pub name: String,
    /// The ownership version it applies.
    pub version: i64,
    /// When it last acknowledged (at least every periodic reload while it runs).
    pub seen_at: DateTime<Utc>,
}

type RawRow = (String, String, bool, Option<DateTime<Utc>>, DateTime<Utc>);

fn row((capability, owner, held, held_since, updated_at): RawRow) -> Result<Row, OwnershipError> {
    let Some(parsed) = WriteOwner::parse(&owner) else {
        return Err(OwnershipError::Corrupt { capability, owner });
    };
    Ok(Row {
        capability,
        owner: parsed,
        held,
        held_since,
        updated_at,
    })
}

/// Every stored row (by capability) and the version they are at.
///
/// The version is read before the rows, in one transaction: a change committing in between
/// makes the rows newer than the version, never older, so an instance that applies them and
/// acknowledges the version applies at least that version (its next reload catches up the
/// label).
pub fn load(conn: &mut PgConnection) -> Result<(i64, Vec<Row>), OwnershipError> {
    conn.transaction(|tx| {
        let version = version(tx)?;
        let rows: Vec<RawRow> = write_ownership::table
            .select((
                write_ownership::capability,
                write_ownership::owner,
                write_ownership::held,
                write_ownership::held_since,
                write_ownership::updated_at,
            ))
            .order(write_ownership::capability.asc())
            .load(tx)?;
        let rows = rows.into_iter().map(row).collect::<Result<Vec<_>, _>>()?;
        Ok((version, rows))
    })
}

/// The stored version (0 until the first change).
pub fn version(conn: &mut PgConnection) -> Result<i64, OwnershipError> {
    Ok(ownership_version::table
        .find(1)
        .select(ownership_version::version)
        .first(conn)?)
}

/// Sets `capability`'s write owner and whether its writes are held, and returns the version
/// that includes it: once every live instance has acknowledged that version
/// ([`behind`] is empty), every router routes the capability's writes accordingly.
///
/// One transaction: the row is upserted, the version bumped and `NOTIFY router_ownership,
/// '<version>'` sent, so instances hear of the change exactly when it commits. `held_since` is
/// set when `held` turns true, kept while it stays true (the owner may change during a hold),
/// and cleared when it turns false. Setting what is already stored changes nothing and returns
/// the current version. Changes are serialized on the counter's row lock, so versions are handed
/// out in commit order.
///
/// `capability` is a route-table capability name; a row naming none of an instance's
/// capabilities is ignored by that instance.
pub fn set(
    conn: &mut PgConnection,
    capability: &str,
    owner: WriteOwner,
    held: bool,
) -> Result<i64, OwnershipError> {
    conn.transaction(|tx| {
        let current: i64 = ownership_version::table
            .find(1)
            .select(ownership_version::version)
            .for_update()
            .first(tx)?;
        let before: Option<(String, bool)> = write_ownership::table
            .find(capability)
            .select((write_ownership::owner, write_ownership::held))
            .first(tx)
            .optional()?;
        if before
            .as_ref()
            .is_some_and(|(o, h)| o == owner.as_str() && *h == held)
        {
            return Ok(current);
        }
        diesel::sql_query(
            "INSERT INTO write_ownership (capability, owner, held, held_since, updated_at) \
             VALUES ($1, $2, $3, CASE WHEN $3 THEN now() END, now()) \
             ON CONFLICT (capability) DO UPDATE SET \
               owner = EXCLUDED.owner, \
               held = EXCLUDED.held, \
               held_since = CASE WHEN EXCLUDED.held \
                 THEN coalesce(write_ownership.held_since, now()) END, \
               updated_at = now()",
        )
        .bind::<Text, _>(capability)
        .bind::<Text, _>(owner.as_str())
        .bind::<Bool, _>(held)
        .execute(tx)?;
        let version: i64 = diesel::update(ownership_version::table.find(1))
            .set(ownership_version::version.eq(ownership_version::version + 1))
            .returning(ownership_version::version)
            .get_result(tx)?;
        // Delivered only if the transaction commits.
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(CHANNEL)
            .bind::<Text, _>(version.to_string())
            .execute(tx)?;
        Ok(version)
    })
}

/// Records that `instance` applies ownership `version`, now. Every instance calls it after each
/// reload, including the periodic one, so `seen_at` doubles as its heartbeat.
pub fn ack(conn: &mut PgConnection, instance: &str, version: i64) -> Result<(), OwnershipError> {
    diesel::insert_into(router_instances::table)
        .values((
            router_instances::instance.eq(instance),
            router_instances::ownership_version.eq(version),
            router_instances::seen_at.eq(diesel::dsl::now),
        ))
        .on_conflict(router_instances::instance)
        .do_update()
        .set((
            router_instances::ownership_version.eq(version),
            router_instances::seen_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    instance: String,
}

/// The instances seen within `alive_within` (by the database's clock) that acknowledged a
/// version older than `version`, by name: empty when every live router applies `version` or
/// newer.
///
/// Instances re-acknowledge on every periodic reload (`ROUTER_RELOAD_SECONDS`, 30 s by
/// default), so `alive_within` should be a few of those: shorter, and a healthy instance that
/// has not yet reloaded drops out as if it were gone; a stopped instance drops out once it has
/// been silent that long.
pub fn behind(
    conn: &mut PgConnection,
    version: i64,
    alive_within: Duration,
) -> Result<Vec<String>, OwnershipError> {
    let rows: Vec<Name> = diesel::sql_query(
        "SELECT instance FROM router_instances \
         WHERE ownership_version < $1 AND seen_at >= now() - make_interval(secs => $2) \
         ORDER BY instance",
    )
    .bind::<BigInt, _>(version)
    .bind::<Double, _>(alive_within.as_secs_f64())
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.instance).collect())
}

/// Every instance that ever acknowledged, by name.
pub fn instances(conn: &mut PgConnection) -> Result<Vec<Instance>, OwnershipError> {
    Ok(router_instances::table
        .select((
            router_instances::instance,
            router_instances::ownership_version,
            router_instances::seen_at,
        ))
        .order(router_instances::instance.asc())
        .load(conn)?)
}
