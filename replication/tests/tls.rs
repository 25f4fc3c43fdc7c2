//! The engine's connections over TLS, against real clusters: one serving TLS with a certificate
//! for `localhost` only (signed by a throwaway CA), one with `ssl = off`. The replication
//! connection (the engine's own protocol code) under every `sslmode`, and a pipeline that copies
//! and streams with both ends at `sslmode=verify-full`.

mod support;

use localpg::{Cluster, RootCert as Ca};
use replication::wire::{ReplicationConfig, ReplicationConnection};
use support::{Pair, rows, start};

use localpg::TlsOutcome::{Connected, Refused};

async fn replication_attempt(url: &str) -> Result<bool, String> {
    let config = ReplicationConfig::from_url(url).map_err(|e| e.to_string())?;
    let mut connection = ReplicationConnection::connect(&config)
        .await
        .map_err(|e| e.to_string())?;
    let rows = connection
        .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .map_err(|e| e.to_string())?;
    let ssl = rows[0].get("ssl") == Some("t");
    connection.close().await.map_err(|e| e.to_string())?;
    Ok(ssl)
}

async fn sql_attempt(url: &str) -> Result<bool, String> {
    let client = replication::source::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn every_sslmode_behaves_as_libpq_on_both_kinds_of_connection() {
    let tls = localpg::shared_tls();
    let plain = localpg::shared_tcp();
    // (cluster, host, sslmode, sslrootcert, replication connection, SQL connection)
    let cases = [
        (
            tls,
            "localhost",
            "verify-full",
            Ca::Right,
            Connected { ssl: true },
            Connected { ssl: true },
        ),
        (
            tls,
            "localhost",
            "verify-full",
            Ca::Wrong,
            Refused(
                "TLS: certificate verify failed: UnknownIssuer for localhost (sslmode=verify-full, sslrootcert=",
            ),
            Refused(
                "TLS: certificate verify failed: UnknownIssuer for localhost (sslmode=verify-full, sslrootcert=",
            ),
        ),
        (
            tls,
            "127.0.0.1",
            "verify-full",
            Ca::Right,
            Refused(
                "certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"localhost\") for 127.0.0.1",
            ),
            Refused("certificate not valid for name \"127.0.0.1\""),
        ),
        (
            tls,
            "127.0.0.1",
            "verify-ca",
            Ca::Right,
            Connected { ssl: true },
            Connected { ssl: true },
        ),
        (
            tls,
            "localhost",
            "verify-ca",
            Ca::Wrong,
            Refused("UnknownIssuer"),
            Refused("UnknownIssuer"),
        ),
        (
            tls,
            "127.0.0.1",
            "require",
            Ca::None,
            Connected { ssl: true },
            Connected { ssl: true },
        ),
        (
            tls,
            "127.0.0.1",
            "require",
            Ca::Wrong,
            Refused("UnknownIssuer"),
            Refused("UnknownIssuer"),
        ),
        (
            tls,
            "127.0.0.1",
            "prefer",
            Ca::None,
            Connected { ssl: true },
            Connected { ssl: true },
        ),
        (
            tls,
            "127.0.0.1",
            "disable",
            Ca::None,
            Connected { ssl: false },
            Connected { ssl: false },
        ),
        (
            plain,
            "127.0.0.1",
            "prefer",
            Ca::None,
            Connected { ssl: false },
            Connected { ssl: false },
        ),
        (
            plain,
            "127.0.0.1",
            "disable",
            Ca::None,
            Connected { ssl: false },
            Connected { ssl: false },
        ),
        (
            plain,
            "127.0.0.1",
            "require",
            Ca::None,
            Refused(
                "TLS: the server at 127.0.0.1 does not accept TLS connections (sslmode=require)",
            ),
            Refused("server does not support TLS"),
        ),
        (
            plain,
            "localhost",
            "verify-full",
            Ca::Right,
            Refused(
                "TLS: the server at localhost does not accept TLS connections (sslmode=verify-full, sslrootcert=",
            ),
            Refused("server does not support TLS"),
        ),
    ];
    let mut failures = Vec::new();
    for (cluster, host, mode, ca, wire_want, sql_want) in cases {
        let url = localpg::tls_test_url(cluster, host, mode, ca);
        for (kind, want, got) in [
            ("replication", wire_want, replication_attempt(&url).await),
            ("SQL", sql_want, sql_attempt(&url).await),
        ] {
            if !want.fits(&got) {
                failures.push(format!("{kind} {url}: wanted {want:?}, got {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_pipeline_copies_and_streams_over_verified_tls() {
    let cluster = localpg::shared_tls();
    let pair = Pair::on(
        cluster,
        "tls",
        "CREATE TABLE albums (id bigint PRIMARY KEY, title text NOT NULL);",
    )
    .await;
    let pipeline = pair.pipeline(&["public.albums"]);
    for url in [&pipeline.source, &pipeline.target] {
        assert!(
            url.contains("sslmode=verify-full") && url.contains("@localhost:"),
            "{url}"
        );
    }
    pair.src
        .batch_execute("INSERT INTO albums SELECT g, 'copied ' || g FROM generate_series(1, 50) g")
        .await
        .unwrap();
    let running = start(pipeline.clone());
    running.streaming().await;
    pair.src
        .batch_execute(
            "INSERT INTO albums VALUES (100, 'streamed');
             UPDATE albums SET title = 'changed' WHERE id = 1;
             DELETE FROM albums WHERE id = 2;",
        )
        .await
        .unwrap();
    pair.caught_up().await;
    let want = rows(&pair.src, "albums", "id").await;
    assert_eq!(want.len(), 50);
    assert_eq!(rows(&pair.dst, "albums", "id").await, want);

    // The walsender serving the pipeline runs over TLS, as do the target's apply sessions.
    let walsender_ssl: Vec<bool> = pair
        .src
        .query(
            "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
              WHERE r.application_name = $1",
            &[&pipeline.application_name()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(walsender_ssl, [true], "one walsender, encrypted");
    let plaintext_sessions: i64 = pair
        .dst
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.datname = current_database() AND NOT s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plaintext_sessions, 0);
    running.stop().await.unwrap();
}

/// Prepends `line` to the cluster's pg_hba.conf and waits until the server applies it (the
/// reload is asynchronous): `applied` must hold for a fresh connection.
async fn with_hba_line<F, Fut>(cluster: &Cluster, line: &str, applied: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let path = cluster.data_dir().unwrap().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{line}\n{rules}")).unwrap();
    let admin = support::client(&cluster.url("postgres")).await;
    admin.execute("SELECT pg_reload_conf()", &[]).await.unwrap();
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while !applied().await {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_hba.conf never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn scram_passwords_work_over_tls_without_channel_binding() {
    // Over TLS the server offers SCRAM-SHA-256-PLUS too; both clients take SCRAM-SHA-256 and
    // say they do not bind ('n'), which the server must accept.
    let cluster = localpg::shared_tls();
    let role = format!("tls_scram_{}", std::process::id());
    let admin = support::client(&cluster.url("postgres")).await;
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'right horse'"
        ))
        .await
        .unwrap();
    let ca = cluster.tls().unwrap().ca_path().display().to_string();
    let as_role = |password: &str| {
        format!(
            "postgresql://{role}:{password}@localhost:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
            cluster.tcp_port().unwrap()
        )
    };
    let wrong = as_role("wrong%20horse");
    let right = as_role("right%20horse");
    with_hba_line(
        cluster,
        &format!(
            "hostssl all {role} 127.0.0.1/32 scram-sha-256\nhostssl replication {role} 127.0.0.1/32 scram-sha-256"
        ),
        || async { sql_attempt(&wrong).await.is_err() },
    )
    .await;

    assert_eq!(replication_attempt(&right).await, Ok(true));
    assert_eq!(sql_attempt(&right).await, Ok(true));
    for (kind, got) in [
        ("replication", replication_attempt(&wrong).await),
        ("SQL", sql_attempt(&wrong).await),
    ] {
        let err = got.expect_err(kind);
        assert!(
            err.contains("password authentication failed"),
            "{kind}: {err}"
        );
    }
}
