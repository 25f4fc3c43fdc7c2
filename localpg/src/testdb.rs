use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use diesel::migration::MigrationSource;
use diesel::pg::Pg;

use crate::{Cluster, ClusterOptions, Settings};

static SHARED: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// The cluster shared by every test in this process: started on first use from `LOCALPG_URL` /
/// `LOCALPG_BINDIR` (or found binaries), removed by its watchdog when the process exits.
///
/// Test-only convenience: it panics with the harness's error when no server can be had, which is
/// the message a failing test should show.
pub fn shared() -> &'static Cluster {
    SHARED.get_or_init(|| {
        let settings = Settings::from_env()
            .unwrap_or_else(|e| panic!("localpg: bad settings for the test cluster: {e}"));
        Cluster::start(ClusterOptions {
            settings,
            ..ClusterOptions::default()
        })
        .unwrap_or_else(|e| panic!("localpg: could not start the test cluster: {e}"))
    })
}

/// A database of its own for one test, cloned from a migrated template and dropped on drop.
#[derive(Debug)]
pub struct TestDb {
    cluster: &'static Cluster,
    name: String,
    url: String,
}

impl TestDb {
    /// A fresh database holding `migrations` (keyed by `key`, e.g. "monolith") on the shared cluster.
    pub fn new<S: MigrationSource<Pg>>(key: &str, migrations: S) -> TestDb {
        let cluster = shared();
        let template = cluster
            .template(key, migrations)
            .unwrap_or_else(|e| panic!("localpg: template {key}: {e}"));
        let name = unique_name(key);
        cluster
            .create_database_from(&name, &template)
            .unwrap_or_else(|e| panic!("localpg: creating {name}: {e}"));
        TestDb::adopt(cluster, name)
    }

    /// A fresh empty database (for tests that run migrations themselves).
    pub fn empty(key: &str) -> TestDb {
        let cluster = shared();
        let name = unique_name(key);
        cluster
            .create_database(&name)
            .unwrap_or_else(|e| panic!("localpg: creating {name}: {e}"));
        TestDb::adopt(cluster, name)
    }

    fn adopt(cluster: &'static Cluster, name: String) -> TestDb {
        let url = cluster.url(&name);
        TestDb { cluster, name, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &'static Cluster {
        self.cluster
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Err(e) = self.cluster.drop_database(&self.name) {
            eprintln!("localpg: dropping {}: {e}", self.name);
        }
    }
}

fn unique_name(key: &str) -> String {
    format!(
        "t_{key}_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    )
}
