//! Who owns a capability's writes, kept in each side's own database and checked inside every
//! write's transaction ([ADR 0013]): the fence that makes a write-ownership flip lose nothing.
//!
//! Each database that can hold a capability's data has one row per capability in
//! `fig_fence.ownership`. A write first takes that row `FOR SHARE` ([`admit`]) and goes on only if
//! the row says this side owns the capability; the lock lasts until the write's transaction ends.
//! [`fence`] locks the table against such writers, which waits for every write holding the row
//! to end, and commits `owns = false`; a write that asked for the row meanwhile waits and then
//! reads the fenced row. So once [`fence`] returns, every write the old owner ever accepted has
//! committed (or never will), and its cut position (the end of WAL after the fence committed) is
//! past all of them.
//!
//! The schema is this module's own, created by [`install`] (idempotent) as the replication engine
//! creates its state schema: it is never in a publication, so it is never replicated.
//!
//! [ADR 0013]: ../../docs/adr/0013-write-ownership-fenced-in-each-database.md

use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel::{Connection, OptionalExtension, PgConnection, QueryableByName, RunQueryDsl};

use crate::parallel_run::{Lsn, wal_insert_lsn};

/// Why a write was not admitted, or a fence not taken.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// This side does not own the capability's writes (fenced, or never granted).
    #[error("this side does not own {capability}'s writes")]
    NotOwner { capability: String },
    /// No ownership row: [`install`] never ran for the capability in this database.
    #[error("no write ownership recorded for {capability} in this database")]
    Unknown { capability: String },
    #[error("write ownership query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("the end of WAL could not be read: {0}")]
    Position(String),
}

/// A capability's ownership row as stored here.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Owned {
    #[diesel(sql_type = Bool)]
    pub owns: bool,
    /// Counts every change of `owns`: a flip's steps say which state they expect.
    #[diesel(sql_type = BigInt)]
    pub epoch: i64,
}

/// What [`fence`] leaves: the epoch it wrote, and the old owner's end of WAL after the fence
/// committed, past every write it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    pub epoch: i64,
    pub cut: Lsn,
}

/// The capability's row as `sql` (bound to the capability, answering `owns, epoch`) gives it.
fn row(conn: &mut PgConnection, sql: &str, capability: &str) -> Result<Owned, FenceError> {
    diesel::sql_query(sql)
        .bind::<Text, _>(capability)
        .get_result::<Owned>(conn)
        .optional()?
        .ok_or_else(|| FenceError::Unknown {
            capability: capability.to_string(),
        })
}

/// Creates the schema if it is missing, and records `capability` with `initially_owns` if it
/// has no row yet. An existing row is left alone: once a flip has run, the database says who
/// owns the writes, not the configuration a process was started with.
pub fn install(
    conn: &mut PgConnection,
    capability: &str,
    initially_owns: bool,
) -> Result<Owned, FenceError> {
    conn.transaction(|conn| {
        // Two processes installing at once: the advisory lock keeps CREATE ... IF NOT EXISTS
        // from racing on the catalog (it is not atomic against a concurrent creator).
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('fig_fence.install'))")
            .execute(conn)?;
        conn.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS fig_fence;
             CREATE TABLE IF NOT EXISTS fig_fence.ownership (
                 capability text        PRIMARY KEY,
                 owns       boolean     NOT NULL,
                 epoch      bigint      NOT NULL DEFAULT 0,
                 changed_at timestamptz NOT NULL DEFAULT now()
             )",
        )?;
        diesel::sql_query(
            "INSERT INTO fig_fence.ownership (capability, owns) VALUES ($1, $2)
             ON CONFLICT (capability) DO NOTHING",
        )
        .bind::<Text, _>(capability)
        .bind::<Bool, _>(initially_owns)
        .execute(conn)?;
        read(conn, capability)
    })
}

/// [`install`] at a service's start, from its configured first-start mode; an `InvalidInput`
/// I/O error (what server constructors return) when the database cannot say.
pub fn install_on(
    pool: &crate::Pool,
    capability: &str,
    initially: crate::WriteMode,
) -> std::io::Result<Owned> {
    let failed = |e: String| {
        std::io::Error::other(format!(
            "recording who owns {capability}'s writes in the database: {e}"
        ))
    };
    let mut conn = pool.get().map_err(|e| failed(e.to_string()))?;
    install(&mut conn, capability, initially == crate::WriteMode::Owner)
        .map_err(|e| failed(e.to_string()))
}

impl Owned {
    /// The mode this row puts its side in.
    pub fn mode(&self) -> crate::WriteMode {
        if self.owns {
            crate::WriteMode::Owner
        } else {
            crate::WriteMode::Replica
        }
    }
}

/// The capability's ownership as committed now (no lock).
pub fn read(conn: &mut PgConnection, capability: &str) -> Result<Owned, FenceError> {
    row(
        conn,
        "SELECT owns, epoch FROM fig_fence.ownership WHERE capability = $1",
        capability,
    )
}

/// Admits a write: call it first inside the write's transaction (its lock lasts until that
/// transaction ends, which is what makes [`fence`] wait for the write). `Ok` only if this side
/// owns the capability's writes.
pub fn admit(conn: &mut PgConnection, capability: &str) -> Result<(), FenceError> {
    // FOR SHARE takes ROW SHARE on the table, which conflicts with the fence's EXCLUSIVE lock
    // and not with other writers: writes run side by side, the fence waits for all of them, and
    // a write that comes while the fence waits or commits waits too, then reads the fenced row
    // (READ COMMITTED re-reads a row updated meanwhile; a stricter isolation level fails).
    let owned = row(
        conn,
        "SELECT owns, epoch FROM fig_fence.ownership WHERE capability = $1 FOR SHARE",
        capability,
    )?;
    if owned.owns {
        Ok(())
    } else {
        Err(FenceError::NotOwner {
            capability: capability.to_string(),
        })
    }
}

/// Takes the capability's writes away from this side and returns where its WAL ended after
/// that: every write this side accepted is before the cut. Waits for writes in flight to end.
/// Fencing a side that already does not own the writes changes nothing and gives the current
/// epoch and position (so a flip that was interrupted after its fence can be run again).
pub fn fence(conn: &mut PgConnection, capability: &str) -> Result<Fenced, FenceError> {
    let epoch = conn.transaction(|conn| {
        // The table lock first: it waits for every admitted write in this database to end, and
        // the writes that come after it queue behind it (the lock manager keeps arrival order),
        // so a steady stream of writes cannot starve the fence. A row lock alone would not do:
        // a FOR SHARE compatible with the holders is granted at once even while an UPDATE
        // waits. Plain reads of the row (`read`) still pass.
        diesel::sql_query("LOCK TABLE fig_fence.ownership IN EXCLUSIVE MODE").execute(conn)?;
        row(
            conn,
            "UPDATE fig_fence.ownership
                SET owns = false,
                    epoch = epoch + (CASE WHEN owns THEN 1 ELSE 0 END),
                    changed_at = CASE WHEN owns THEN now() ELSE changed_at END
              WHERE capability = $1
          RETURNING owns, epoch",
            capability,
        )
        .map(|owned| owned.epoch)
    })?;
    // Read after the commit: the fence's commit record, and so every write before it, lies
    // before this position. The insert position, since the write position can still be behind
    // a commit that has returned.
    let cut = wal_insert_lsn(conn).map_err(FenceError::Position)?;
    Ok(Fenced { epoch, cut })
}

/// Gives this side the capability's writes (the flip's last step on the new owner, or its undo
/// on the old one). Returns the epoch after it.
pub fn grant(conn: &mut PgConnection, capability: &str) -> Result<i64, FenceError> {
    row(
        conn,
        "UPDATE fig_fence.ownership
            SET owns = true,
                epoch = epoch + (CASE WHEN owns THEN 0 ELSE 1 END),
                changed_at = CASE WHEN owns THEN changed_at ELSE now() END
          WHERE capability = $1
      RETURNING owns, epoch",
        capability,
    )
    .map(|owned| owned.epoch)
}

/// Which capability a write request's path belongs to, for [`crate::Db`] to admit it (app data).
/// A service is one capability; the monolith maps the path prefixes of the capabilities that can
/// move out, and leaves the rest (customers, orders) unfenced: it owns them for good.
#[derive(Debug, Clone, Default)]
pub struct Fences {
    every_path: Option<Arc<str>>,
    by_prefix: Vec<(String, Arc<str>)>,
}

impl Fences {
    /// Every write is `capability`'s (an extracted service).
    pub fn single(capability: &str) -> Fences {
        Fences {
            every_path: Some(Arc::from(capability)),
            by_prefix: Vec::new(),
        }
    }

    /// Writes under `prefix` (a whole path segment) are `capability`'s.
    pub fn with_prefix(mut self, prefix: &str, capability: &str) -> Fences {
        self.by_prefix.push((
            prefix.trim_end_matches('/').to_string(),
            Arc::from(capability),
        ));
        self
    }

    /// The capability a write to `path` must be admitted for, if any.
    pub fn for_path(&self, path: &str) -> Option<&Arc<str>> {
        self.by_prefix
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(|(_, capability)| capability)
            .or(self.every_path.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_belongs_to_the_capability_of_its_prefix() {
        let monolith = Fences::default()
            .with_prefix("/catalog", "catalog")
            .with_prefix("/wishlists/", "wishlist");
        for (path, expected) in [
            ("/catalog", Some("catalog")),
            ("/catalog/albums/7", Some("catalog")),
            ("/catalogue", None),
            ("/wishlists/3/items/4", Some("wishlist")),
            ("/orders", None),
            ("/customers/1", None),
        ] {
            assert_eq!(monolith.for_path(path).map(|c| &**c), expected, "{path}");
        }
        let service = Fences::single("catalog");
        assert_eq!(
            service.for_path("/reservations").map(|c| &**c),
            Some("catalog")
        );
        assert_eq!(Fences::default().for_path("/catalog"), None);
    }
}
