//! The services' connection pool takes TLS from libpq (through diesel): `sslmode` and
//! `sslrootcert` in the database URL are honoured as libpq documents them. Against a cluster
//! serving TLS with a certificate for `localhost` only, and one with `ssl = off`.

use std::time::Duration;

use diesel::RunQueryDsl;
use localpg::TlsOutcome::{self, Connected, Refused};
use localpg::{Cluster, RootCert as Ca};
use platform::{PoolConfig, build_pool};

#[derive(diesel::QueryableByName)]
struct Ssl {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ssl: bool,
}

/// Whether the pool's session is encrypted, or why the pool could not be built.
fn attempt(url: &str) -> Result<bool, String> {
    let pool = build_pool(
        url,
        PoolConfig {
            max_size: 1,
            // A refused connection is retried until this runs out.
            connection_timeout: Duration::from_secs(2),
        },
    )
    .map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Ssl>(&mut conn)
        .map(|row| row.ssl)
        .map_err(|e| e.to_string())
}

/// Cluster, host, sslmode, sslrootcert, and what the attempt must come to.
type Case = (&'static Cluster, &'static str, &'static str, Ca, TlsOutcome);

#[test]
fn the_pool_honours_sslmode_and_sslrootcert_through_libpq() {
    let tls = localpg::shared_tls();
    let plain = localpg::shared_tcp();
    let cases: [Case; 13] = [
        (
            tls,
            "localhost",
            "verify-full",
            Ca::Right,
            Connected { ssl: true },
        ),
        (
            tls,
            "localhost",
            "verify-full",
            Ca::Wrong,
            Refused("certificate verify failed"),
        ),
        (
            tls,
            "127.0.0.1",
            "verify-full",
            Ca::Right,
            Refused("does not match host name \"127.0.0.1\""),
        ),
        (
            tls,
            "127.0.0.1",
            "verify-ca",
            Ca::Right,
            Connected { ssl: true },
        ),
        (
            tls,
            "localhost",
            "verify-ca",
            Ca::Wrong,
            Refused("certificate verify failed"),
        ),
        (
            tls,
            "127.0.0.1",
            "require",
            Ca::None,
            Connected { ssl: true },
        ),
        (
            tls,
            "127.0.0.1",
            "require",
            Ca::Wrong,
            Refused("certificate verify failed"),
        ),
        (
            tls,
            "127.0.0.1",
            "prefer",
            Ca::None,
            Connected { ssl: true },
        ),
        (
            tls,
            "127.0.0.1",
            "disable",
            Ca::None,
            Connected { ssl: false },
        ),
        (
            plain,
            "127.0.0.1",
            "prefer",
            Ca::None,
            Connected { ssl: false },
        ),
        (
            plain,
            "127.0.0.1",
            "disable",
            Ca::None,
            Connected { ssl: false },
        ),
        (
            plain,
            "127.0.0.1",
            "require",
            Ca::None,
            Refused("server does not support SSL"),
        ),
        (
            plain,
            "localhost",
            "verify-full",
            Ca::Right,
            Refused("server does not support SSL"),
        ),
    ];
    // Each refusal waits out the pool's timeout: run them side by side.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(cluster, host, mode, ca, want)| {
                let url = localpg::tls_test_url(cluster, host, mode, *ca);
                scope.spawn(move || {
                    let got = attempt(&url);
                    (!want.fits(&got)).then(|| format!("{url}: wanted {want:?}, got {got:?}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
