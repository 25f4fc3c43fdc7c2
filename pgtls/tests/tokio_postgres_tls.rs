//! tokio-postgres over rustls against real clusters, one serving TLS with a certificate for
//! `localhost` only and one with `ssl = off`: every `sslmode` as libpq would behave.

use localpg::RootCert as Ca;

use localpg::TlsOutcome::{Connected, Refused};

async fn attempt(url: &str) -> Result<bool, String> {
    let (config, tls) = pgtls::tokio_postgres_config(url).map_err(|e| pgtls::with_causes(&e))?;
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| pgtls::with_causes(&e))?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| pgtls::with_causes(&e))?;
    Ok(row.get(0))
}

#[tokio::test]
async fn every_sslmode_behaves_as_libpq() {
    let tls = localpg::shared_tls();
    let plain = localpg::shared_tcp();
    let cases = [
        // The TLS cluster: its certificate names localhost only.
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
            Refused(
                "certificate verify failed: UnknownIssuer for localhost (sslmode=verify-full, sslrootcert=",
            ),
        ),
        (
            tls,
            "127.0.0.1",
            "verify-full",
            Ca::Right,
            Refused(
                "certificate verify failed: certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"localhost\") for 127.0.0.1",
            ),
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
            Refused("UnknownIssuer"),
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
            Ca::Right,
            Connected { ssl: true },
        ),
        (
            tls,
            "127.0.0.1",
            "require",
            Ca::Wrong,
            Refused("UnknownIssuer"),
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
        // The cluster with ssl = off.
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
            Refused("server does not support TLS"),
        ),
        (
            plain,
            "localhost",
            "verify-full",
            Ca::Right,
            Refused("server does not support TLS"),
        ),
    ];
    let mut failures = Vec::new();
    for (cluster, host, mode, ca, want) in cases {
        let url = localpg::tls_test_url(cluster, host, mode, ca);
        let got = attempt(&url).await;
        if !want.fits(&got) {
            failures.push(format!("{url}: wanted {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
