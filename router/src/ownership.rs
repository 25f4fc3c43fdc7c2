//! Who owns each capability's writes, as run-time state: stored in the `router` database
//! ([`store`]), followed by every instance like the toggles (a reload on `NOTIFY
//! router_ownership` and on the periodic reload, see [`crate::sync`]), and applied on the data
//! path from a lock-free snapshot ([`LiveOwners`]).
//!
//! A capability's writes can also be *held*: while a flip moves ownership between the monolith
//! and the extracted service, writes wait in the router instead of reaching either side, and go
//! to the new owner once the hold ends. The flip itself (fencing the databases) is not here; it
//! drives these functions.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, Guard};
use chrono::{DateTime, Utc};
use platform::{Pool, blocking};
use tokio::sync::Notify;

use crate::routes::{RouteTable, WriteOwner};

pub mod store;

pub use store::{
    CHANNEL, Instance, OwnershipError, Row, ack, behind, instances, load, set, version,
};

/// One capability's write ownership as an instance applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owned {
    pub owner: WriteOwner,
    /// Writes wait (see [`crate::proxy::Limits::write_hold`]) instead of going to `owner`.
    pub held: bool,
    pub held_since: Option<DateTime<Utc>>,
}

impl Owned {
    /// Owned by `owner`, not held.
    pub fn by(owner: WriteOwner) -> Owned {
        Owned {
            owner,
            held: false,
            held_since: None,
        }
    }
}

/// Every capability's ownership at one version, indexed like the route table's capabilities,
/// so the data path finds a capability's owner without looking a name up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSet {
    /// The stored version this set is (0: nothing stored yet, the table's configuration).
    pub version: i64,
    owners: Vec<Owned>,
}

impl OwnerSet {
    /// The route table's configured owners, none held: what applies until something is stored.
    pub fn configured(table: &RouteTable) -> OwnerSet {
        OwnerSet {
            version: 0,
            owners: table
                .capabilities
                .iter()
                .map(|c| Owned::by(c.write_owner))
                .collect(),
        }
    }

    /// The stored `rows` at `version` over the table's configured owners: a capability without a
    /// row keeps its configured owner. Also returns the rows naming no capability of `table`
    /// (another route table's, or a typo in a hand edit), which are otherwise ignored.
    pub fn from_rows<'r>(
        table: &RouteTable,
        version: i64,
        rows: &'r [Row],
    ) -> (OwnerSet, Vec<&'r str>) {
        let mut set = OwnerSet {
            version,
            ..OwnerSet::configured(table)
        };
        let mut unknown = Vec::new();
        for row in rows {
            match table
                .capabilities
                .iter()
                .position(|c| c.name == row.capability)
            {
                Some(i) => {
                    set.owners[i] = Owned {
                        owner: row.owner,
                        held: row.held,
                        held_since: row.held_since,
                    }
                }
                None => unknown.push(row.capability.as_str()),
            }
        }
        (set, unknown)
    }

    /// The same set with capability `index` owned as `owned` (for building sets by hand).
    pub fn with(mut self, index: usize, owned: Owned) -> OwnerSet {
        if let Some(slot) = self.owners.get_mut(index) {
            *slot = owned;
        }
        self
    }

    /// Capability `index`'s ownership; `None` for an index this set does not have (a set built
    /// for another table), where the caller falls back to the table's configured owner.
    pub fn get(&self, index: usize) -> Option<&Owned> {
        self.owners.get(index)
    }

    /// Every capability's ownership, by index.
    pub fn iter(&self) -> impl Iterator<Item = &Owned> {
        self.owners.iter()
    }
}

/// An instance's live ownership: one atomic load to read on the data path, replaced whole on
/// reload, and a signal for writes held until it changes.
pub struct LiveOwners {
    set: ArcSwap<OwnerSet>,
    /// Signalled (all waiters) whenever a newer set is installed.
    changed: Notify,
    /// The table the sets are indexed by.
    table: Arc<RouteTable>,
}

impl std::fmt::Debug for LiveOwners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveOwners")
            .field("set", &*self.set.load())
            .finish_non_exhaustive()
    }
}

impl LiveOwners {
    /// Starts from the table's configured owners (version 0).
    pub fn new(table: Arc<RouteTable>) -> LiveOwners {
        LiveOwners {
            set: ArcSwap::from_pointee(OwnerSet::configured(&table)),
            changed: Notify::new(),
            table,
        }
    }

    /// The live set. A guard, not a clone of the `Arc`: no reference count is touched, so the
    /// data path pays one atomic load. Drop it before awaiting anything.
    pub fn load(&self) -> Guard<Arc<OwnerSet>> {
        self.set.load()
    }

    /// The live set, kept: for answers that outlive a guard (the admin API).
    pub fn load_full(&self) -> Arc<OwnerSet> {
        self.set.load_full()
    }

    /// The live set's version.
    pub fn version(&self) -> i64 {
        self.set.load().version
    }

    /// Installs `set` unless what is live is as new or newer, and then wakes every held write;
    /// returns whether it did. Atomic, so two reloads racing cannot leave the older live.
    pub fn store_if_newer(&self, set: OwnerSet) -> bool {
        let new = Arc::new(set);
        let previous = self.set.rcu(|current| {
            if current.version >= new.version {
                current.clone()
            } else {
                new.clone()
            }
        });
        let installed = previous.version < new.version;
        if installed {
            self.changed.notify_waiters();
        }
        installed
    }

    /// Installs the stored `rows` at `version` if newer than what is live (see
    /// [`OwnerSet::from_rows`]); returns whether it did.
    pub fn install(&self, version: i64, rows: &[Row]) -> bool {
        let (set, unknown) = OwnerSet::from_rows(&self.table, version, rows);
        if !unknown.is_empty() {
            tracing::warn!(version, capabilities = ?unknown, "stored write ownership names capabilities this route table does not have; ignored");
        }
        self.store_if_newer(set)
    }

    /// Waits until a set newer than `version` is live, or until `until`; returns whether one
    /// is. No polling: woken by [`LiveOwners::store_if_newer`].
    pub async fn changed_after(&self, version: i64, until: Instant) -> bool {
        loop {
            // Registered before looking, so an install between the look and the wait still
            // wakes this waiter.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.version() > version {
                return true;
            }
            if tokio::time::timeout_at(until.into(), notified)
                .await
                .is_err()
            {
                return self.version() > version;
            }
        }
    }
}

/// Loads the stored ownership and installs it if it is newer than what is live. Returns the
/// live version (what this instance now applies, and acknowledges).
pub async fn reload(pool: &Pool, live: &LiveOwners) -> Result<i64, OwnershipError> {
    let (version, rows) = blocking(pool, load).await?;
    if version > live.version() && live.install(version, &rows) {
        tracing::info!(version, "write ownership applied");
    }
    Ok(live.version())
}

/// [`reload`], then acknowledges the live version as `instance` (the flip waits for every
/// instance's acknowledgement). Returns the live version.
pub async fn reload_and_ack(
    pool: &Pool,
    live: &LiveOwners,
    instance: &str,
) -> Result<i64, OwnershipError> {
    let version = reload(pool, live).await?;
    let name = instance.to_string();
    blocking(pool, move |c| ack(c, &name, version)).await?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(capability: &str, owner: WriteOwner, held: bool) -> Row {
        let at = Utc::now();
        Row {
            capability: capability.into(),
            owner,
            held,
            held_since: held.then_some(at),
            updated_at: at,
        }
    }

    fn index(table: &RouteTable, name: &str) -> usize {
        table
            .capabilities
            .iter()
            .position(|c| c.name == name)
            .unwrap()
    }

    #[test]
    fn stored_rows_override_the_configured_owners_and_only_theirs() {
        let table = RouteTable::musiccorp();
        let (catalog, wishlist) = (index(&table, "catalog"), index(&table, "wishlist"));
        let configured = table.capabilities[wishlist].write_owner;
        // (case, stored rows, catalog's owner and hold, rows ignored)
        let cases = [
            (
                "nothing stored: the table's owners",
                vec![],
                (table.capabilities[catalog].write_owner, false),
                vec![],
            ),
            (
                "a row moves its capability",
                vec![row("catalog", WriteOwner::Extracted, false)],
                (WriteOwner::Extracted, false),
                vec![],
            ),
            (
                "a held row is held",
                vec![row("catalog", WriteOwner::Legacy, true)],
                (WriteOwner::Legacy, true),
                vec![],
            ),
            (
                "an unknown capability is reported and ignored",
                vec![
                    row("orders", WriteOwner::Extracted, true),
                    row("catalog", WriteOwner::Extracted, false),
                ],
                (WriteOwner::Extracted, false),
                vec!["orders"],
            ),
        ];
        for (case, rows, (owner, held), unknown) in cases {
            let (set, ignored) = OwnerSet::from_rows(&table, 7, &rows);
            assert_eq!(set.version, 7, "{case}");
            let c = set.get(catalog).unwrap();
            assert_eq!(
                (c.owner, c.held, c.held_since.is_some()),
                (owner, held, held),
                "{case}"
            );
            assert_eq!(
                set.get(wishlist),
                Some(&Owned::by(configured)),
                "{case}: the other capability keeps the table's owner"
            );
            assert_eq!(ignored, unknown, "{case}");
        }
        assert_eq!(OwnerSet::configured(&table).get(99), None);
    }

    #[test]
    fn only_a_newer_set_is_installed() {
        let table = Arc::new(RouteTable::musiccorp());
        let live = LiveOwners::new(table.clone());
        assert_eq!(live.version(), 0);
        assert!(!live.install(0, &[row("catalog", WriteOwner::Extracted, false)]));
        assert!(live.install(2, &[row("catalog", WriteOwner::Extracted, false)]));
        assert!(
            !live.install(1, &[]),
            "an older set never replaces a newer one"
        );
        let catalog = index(&table, "catalog");
        assert_eq!(
            live.load().get(catalog).unwrap().owner,
            WriteOwner::Extracted
        );
        assert_eq!(live.version(), 2);
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_a_newer_set_and_gives_up_at_its_deadline() {
        let live = Arc::new(LiveOwners::new(Arc::new(RouteTable::musiccorp())));
        let started = Instant::now();
        assert!(
            !live
                .changed_after(0, started + Duration::from_millis(50))
                .await,
            "nothing changed"
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        let waiter = tokio::spawn({
            let live = live.clone();
            async move {
                live.changed_after(0, Instant::now() + Duration::from_secs(30))
                    .await
            }
        });
        // Not yet installed: the waiter is still waiting, whenever it registered.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        live.install(1, &[]);
        let woke = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken, long before its deadline")
            .unwrap();
        assert!(woke);
        assert!(
            live.changed_after(0, Instant::now()).await,
            "a set already newer needs no wait"
        );
    }
}
