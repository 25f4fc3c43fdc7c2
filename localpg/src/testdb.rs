use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use diesel::migration::MigrationSource;
use diesel::pg::Pg;

use crate::{Cluster, ClusterOptions, Listen, Settings};

static SHARED: OnceLock<Cluster> = OnceLock::new();
static SHARED_TCP: OnceLock<Cluster> = OnceLock::new();
#[cfg(feature = "tls")]
static SHARED_TLS: OnceLock<Cluster> = OnceLock::new();
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

/// A cluster of this process's own that listens on a free loopback TCP port, without TLS
/// (`ssl = off`): for tests of how clients behave against a server that refuses TLS. Never an
/// existing server (`LOCALPG_URL` is not consulted), since its TLS setting would be unknown.
pub fn shared_tcp() -> &'static Cluster {
    SHARED_TCP.get_or_init(|| start_own("TCP", Listen::Tcp { port: 0 }, None))
}

/// A cluster of this process's own that speaks TLS on a free loopback TCP port, its server
/// certificate naming only `localhost` and signed by a throwaway CA (see [`Cluster::tls`]).
/// Its [`Cluster::url`] connects with `sslmode=verify-full`.
#[cfg(feature = "tls")]
pub fn shared_tls() -> &'static Cluster {
    SHARED_TLS.get_or_init(|| {
        start_own(
            "TLS",
            Listen::Tcp { port: 0 },
            Some(crate::TlsOptions::default()),
        )
    })
}

/// Which CA file a test client names in `sslrootcert`.
#[cfg(feature = "tls")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootCert {
    /// None: no `sslrootcert` parameter.
    None,
    /// The CA that signed [`shared_tls`]'s server certificate.
    Right,
    /// A CA that signed nothing any server presents.
    Wrong,
}

/// What a test's connection attempt must come to.
#[cfg(feature = "tls")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsOutcome {
    /// Connected; whether the session is encrypted (`pg_stat_ssl.ssl`).
    Connected { ssl: bool },
    /// Refused, with this in the error's text.
    Refused(&'static str),
}

#[cfg(feature = "tls")]
impl TlsOutcome {
    /// Whether `got` (whether the session is encrypted, or the error's text) is this outcome.
    pub fn fits(&self, got: &Result<bool, String>) -> bool {
        match (self, got) {
            (TlsOutcome::Connected { ssl }, Ok(got)) => ssl == got,
            (TlsOutcome::Refused(needle), Err(e)) => e.contains(needle),
            _ => false,
        }
    }
}

/// A URL to `cluster`'s `postgres` database through `host` (its TCP port), with `sslmode=mode`
/// and `sslrootcert` naming the file `root` says, from [`shared_tls`]'s certificates: the TLS
/// tests of every client ask for the same combinations.
#[cfg(feature = "tls")]
pub fn tls_test_url(cluster: &Cluster, host: &str, mode: &str, root: RootCert) -> String {
    let tls = shared_tls()
        .tls()
        .expect("the shared TLS cluster has certificates");
    let path = match root {
        RootCert::None => None,
        RootCert::Right => Some(tls.ca_path().display().to_string()),
        RootCert::Wrong => Some(tls.wrong_ca_path().display().to_string()),
    };
    let mut params = vec![("sslmode", mode)];
    if let Some(path) = &path {
        params.push(("sslrootcert", path));
    }
    cluster.url_via("postgres", host, &params)
}

fn start_own(kind: &str, listen: Listen, tls: Option<crate::TlsOptions>) -> Cluster {
    let settings = Settings::from_env()
        .unwrap_or_else(|e| panic!("localpg: bad settings for the {kind} test cluster: {e}"));
    Cluster::start(ClusterOptions {
        listen,
        tls,
        settings: Settings {
            url: None,
            ..settings
        },
        ..ClusterOptions::default()
    })
    .unwrap_or_else(|e| panic!("localpg: could not start the {kind} test cluster: {e}"))
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
        TestDb::new_on(shared(), key, migrations)
    }

    /// Like [`TestDb::new`], on `cluster` (e.g. `shared_tls()` or [`shared_tcp`]).
    pub fn new_on<S: MigrationSource<Pg>>(
        cluster: &'static Cluster,
        key: &str,
        migrations: S,
    ) -> TestDb {
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
        TestDb::empty_on(shared(), key)
    }

    /// Like [`TestDb::empty`], on `cluster`.
    pub fn empty_on(cluster: &'static Cluster, key: &str) -> TestDb {
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
