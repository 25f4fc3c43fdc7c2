//! The replication connection against a real PostgreSQL (the shared `localpg` test cluster:
//! wal_level=logical, Unix socket, trust authentication).
//!
//! Tests run in parallel on one cluster, so every slot, publication and role is named after the
//! test's own database, and slots are temporary (they go when their connection does).

use std::future::Future;
use std::time::Duration;

use localpg::TestDb;
use replication::wire::{
    Lsn, ReplicationConfig, ReplicationConnection, ReplicationMessage, ReplicationStream,
    SnapshotAction, WireError, format_lsn, parse_lsn, publication_names_option,
};
use tokio::time::Instant;
use tokio_postgres::NoTls;

/// Generous: the machine may be busy with other test binaries.
const PATIENCE: Duration = Duration::from_secs(30);

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("sql connection ended: {e}");
        }
    });
    client
}

async fn replication(url: &str) -> ReplicationConnection {
    let config = ReplicationConfig::from_url(url)
        .unwrap()
        .with_application_name("wire-test");
    ReplicationConnection::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("replication connection to {url}: {e}"))
}

/// Polls `probe` until it yields a value, failing the test after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Temporary slots are dropped by the server as their walsender exits, a moment after the
/// client hangs up; the test database cannot be dropped while one remains.
async fn wait_until_slot_gone(client: &tokio_postgres::Client, slot: &str) {
    eventually(&format!("slot {slot} to go away"), PATIENCE, || async {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0) == 0).then_some(())
    })
    .await;
}

async fn confirmed_flush(client: &tokio_postgres::Client, slot: &str) -> Lsn {
    let row = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap();
    parse_lsn(&row.get::<_, String>(0)).unwrap()
}

/// Reads the stream until `want` accepts a message, answering every keepalive that asks for a
/// reply (reporting `confirmed` as flushed) so the walsender never times us out.
async fn read_until<T>(
    stream: &mut ReplicationStream,
    confirmed: Lsn,
    what: &str,
    mut want: impl FnMut(&ReplicationMessage) -> Option<T>,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?} waiting for {what}"))
            .unwrap_or_else(|e| panic!("stream failed while waiting for {what}: {e}"))
            .unwrap_or_else(|| panic!("stream ended while waiting for {what}"));
        if let Some(found) = want(&message) {
            return found;
        }
        if let ReplicationMessage::PrimaryKeepAlive {
            reply_requested: true,
            wal_end,
            ..
        } = message
        {
            stream
                .send_status_update(wal_end, confirmed, confirmed, false)
                .await
                .unwrap();
        }
    }
}

/// One decoded-enough transaction: the pgoutput message tags in order and where it ends.
struct Transaction {
    tags: Vec<u8>,
    /// `wal_start` and `wal_end` of the XLogData carrying the Commit.
    commit_wal_start: Lsn,
    commit_wal_end: Lsn,
    /// The end LSN inside the Commit message itself.
    commit_end_lsn: Lsn,
}

async fn read_transaction(stream: &mut ReplicationStream, confirmed: Lsn) -> Transaction {
    let mut tags = Vec::new();
    let (commit_wal_start, commit_wal_end, commit_end_lsn) =
        read_until(stream, confirmed, "a committed transaction", |message| {
            let ReplicationMessage::XLogData {
                data,
                wal_start,
                wal_end,
                ..
            } = message
            else {
                return None;
            };
            let tag = *data.first().expect("empty XLogData");
            tags.push(tag);
            if tag != b'C' {
                return None;
            }
            // Commit: tag, flags, commit LSN, end LSN, timestamp.
            let end = data.get(10..18).expect("short Commit message");
            Some((
                *wal_start,
                *wal_end,
                u64::from_be_bytes(end.try_into().unwrap()),
            ))
        })
        .await;
    Transaction {
        tags,
        commit_wal_start,
        commit_wal_end,
        commit_end_lsn,
    }
}

#[tokio::test]
async fn identify_system_reports_position_and_database() {
    let db = TestDb::empty("wire");
    let client = sql(db.url()).await;
    let mut conn = replication(db.url()).await;

    let system = conn.identify_system().await.unwrap();
    assert_eq!(system.dbname.as_deref(), Some(db.name()));
    assert!(system.timeline >= 1, "{system:?}");
    assert!(
        !system.systemid.is_empty() && system.systemid.bytes().all(|b| b.is_ascii_digit()),
        "{system:?}"
    );
    assert!(system.xlogpos > 0, "{system:?}");
    let current: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let current = parse_lsn(&current).unwrap();
    assert!(
        system.xlogpos <= current,
        "{} is ahead of the server's {}",
        format_lsn(system.xlogpos),
        format_lsn(current)
    );

    // The server sees a walsender with our application name.
    let pid = conn.backend_pid().expect("BackendKeyData");
    let row = client
        .query_one(
            "SELECT backend_type, application_name FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "walsender");
    assert_eq!(row.get::<_, String>(1), "wire-test");
    assert!(conn.parameter("server_version").is_some());

    // SQL works on a replication=database connection too, with NULLs and errors.
    let rows = conn
        .simple_query("SELECT 1 AS one, NULL::text AS nothing")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].columns(), ["one", "nothing"]);
    assert_eq!(rows[0].values(), [Some("1".to_string()), None]);
    let err = conn.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code(), Some("22012"), "{err}");
    assert!(conn.simple_query("").await.unwrap().is_empty());
    // Still usable after the error.
    assert_eq!(
        conn.identify_system().await.unwrap().dbname.as_deref(),
        Some(db.name())
    );
    conn.close().await.unwrap();
}

#[tokio::test]
async fn exported_snapshot_is_importable_until_the_next_command() {
    let db = TestDb::empty("wire");
    let slot = format!("{}_snap", db.name());
    let writer = sql(db.url()).await;
    writer
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
        .await
        .unwrap();

    let mut conn = replication(db.url()).await;
    let created = conn
        .create_logical_slot(&slot, true, SnapshotAction::Export)
        .await
        .unwrap();
    assert_eq!(created.slot_name, slot);
    assert_eq!(created.output_plugin, "pgoutput");
    assert!(created.consistent_point > 0);
    let snapshot = created.snapshot_name.expect("an exported snapshot");

    // Committed after the slot's consistent point: streamed later, so not in the snapshot.
    writer
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();

    let reader = sql(db.url()).await;
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    reader
        .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))
        .await
        .unwrap();
    let seen: i64 = reader
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        seen, 1,
        "the snapshot shows the table as of the slot's start"
    );
    reader.batch_execute("COMMIT").await.unwrap();

    // Any further command on the replication connection releases the snapshot.
    conn.identify_system().await.unwrap();
    let late = sql(db.url()).await;
    late.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let err = late
        .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))
        .await
        .expect_err("the snapshot should be gone");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE),
        "{err}"
    );

    conn.close().await.unwrap();
    wait_until_slot_gone(&writer, &slot).await;
}

#[tokio::test]
async fn streams_transactions_answers_keepalives_and_confirms_flush() {
    let db = TestDb::empty("wire");
    let slot = format!("{}_stream", db.name());
    let publication = format!("{}_pub", db.name());
    let client = sql(db.url()).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text); \
             CREATE PUBLICATION \"{publication}\" FOR TABLE items;"
        ))
        .await
        .unwrap();

    let mut conn = replication(db.url()).await;
    // Short, so the server asks for replies within the test; every ask is answered below.
    conn.simple_query("SET wal_sender_timeout = '4s'")
        .await
        .unwrap();
    let created = conn
        .create_logical_slot(&slot, true, SnapshotAction::NoExport)
        .await
        .unwrap();
    assert_eq!(created.snapshot_name, None);
    let publications = publication_names_option(&[&publication]);
    let mut stream = conn
        .start_logical_replication(
            &slot,
            created.consistent_point,
            &[("proto_version", "1"), ("publication_names", &publications)],
        )
        .await
        .unwrap();
    let mut confirmed = created.consistent_point;

    client
        .batch_execute(
            "BEGIN; INSERT INTO items VALUES (1, 'a'), (2, 'b'); \
             INSERT INTO items VALUES (3, 'it''s'); COMMIT;",
        )
        .await
        .unwrap();
    let tx = read_transaction(&mut stream, confirmed).await;
    assert_eq!(tx.tags.first(), Some(&b'B'), "{:?}", tx.tags);
    assert_eq!(tx.tags.last(), Some(&b'C'), "{:?}", tx.tags);
    assert_eq!(
        tx.tags.iter().filter(|t| **t == b'I').count(),
        3,
        "{:?}",
        tx.tags
    );
    assert!(
        tx.tags.contains(&b'R'),
        "a Relation precedes the first Insert"
    );
    // The Commit arrives at the end of its commit record: the position to confirm.
    assert_eq!(tx.commit_wal_start, tx.commit_end_lsn);
    assert_eq!(tx.commit_wal_end, tx.commit_end_lsn);
    assert!(tx.commit_end_lsn > confirmed);

    // Confirming the commit moves the slot.
    assert!(confirmed_flush(&client, &slot).await < tx.commit_end_lsn);
    let flush = tx.commit_wal_end;
    stream
        .send_status_update(flush, flush, flush, false)
        .await
        .unwrap();
    confirmed = flush;
    let moved = eventually("confirmed_flush_lsn to advance", PATIENCE, || async {
        let now = confirmed_flush(&client, &slot).await;
        (now >= flush).then_some(now)
    })
    .await;
    assert_eq!(moved, flush);

    // Asking for a reply gets a keepalive back at once.
    stream
        .send_status_update(flush, flush, flush, true)
        .await
        .unwrap();
    read_until(&mut stream, confirmed, "a keepalive answering ours", |m| {
        matches!(m, ReplicationMessage::PrimaryKeepAlive { .. }).then_some(())
    })
    .await;

    // The server asks for a reply every wal_sender_timeout/2; unanswered, it would hang up at the
    // full timeout. Answer two asks, then prove the stream still flows.
    for _ in 0..2 {
        let wal_end = read_until(
            &mut stream,
            confirmed,
            "a keepalive asking for a reply",
            |m| match m {
                ReplicationMessage::PrimaryKeepAlive {
                    reply_requested: true,
                    wal_end,
                    ..
                } => Some(*wal_end),
                _ => None,
            },
        )
        .await;
        assert!(wal_end >= flush);
        stream
            .send_status_update(wal_end, confirmed, confirmed, false)
            .await
            .unwrap();
    }
    client
        .batch_execute("INSERT INTO items VALUES (4, 'd')")
        .await
        .unwrap();
    let tx = read_transaction(&mut stream, confirmed).await;
    assert_eq!(tx.tags.first(), Some(&b'B'));
    assert!(tx.tags.contains(&b'I'));
    assert!(tx.commit_end_lsn > flush);

    tokio::time::timeout(PATIENCE, stream.finish())
        .await
        .expect("finish within the deadline")
        .unwrap();
    wait_until_slot_gone(&client, &slot).await;
}

#[tokio::test]
async fn stop_returns_a_usable_connection_and_unconfirmed_data_is_replayed() {
    let db = TestDb::empty("wire");
    let slot = format!("{}_stop", db.name());
    let publication = format!("{}_pub", db.name());
    let client = sql(db.url()).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION \"{publication}\" FOR TABLE t;"
        ))
        .await
        .unwrap();
    let mut conn = replication(db.url()).await;
    // Permanent, so it outlives this connection and the next one can resume from it.
    let created = conn
        .create_logical_slot(&slot, false, SnapshotAction::NoExport)
        .await
        .unwrap();
    let publications = publication_names_option(&[&publication]);
    let options = [
        ("proto_version", "2"),
        ("publication_names", publications.as_str()),
        ("streaming", "on"),
        ("messages", "true"),
    ];
    let mut stream = conn
        .start_logical_replication(&slot, created.consistent_point, &options)
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let first = read_transaction(&mut stream, created.consistent_point).await;
    assert_eq!(first.tags.first(), Some(&b'B'));

    // Whatever is in flight when we stop is discarded; the connection takes commands again.
    client
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let mut conn = tokio::time::timeout(PATIENCE, stream.stop())
        .await
        .expect("stop within the deadline")
        .unwrap();
    assert!(conn.identify_system().await.unwrap().xlogpos >= first.commit_end_lsn);
    conn.close().await.unwrap();

    // Nothing was confirmed, so a new connection gets both transactions again.
    let mut stream = eventually("the slot to be released", PATIENCE, || async {
        match replication(db.url())
            .await
            .start_logical_replication(&slot, 0, &options)
            .await
        {
            Ok(stream) => Some(stream),
            // 55006: still active for the previous walsender, which is exiting.
            Err(e) if e.code() == Some("55006") => None,
            Err(e) => panic!("restarting replication: {e}"),
        }
    })
    .await;
    let again = read_transaction(&mut stream, created.consistent_point).await;
    assert_eq!(again.commit_end_lsn, first.commit_end_lsn);
    let second = read_transaction(&mut stream, created.consistent_point).await;
    assert!(second.commit_end_lsn > first.commit_end_lsn);
    let mut conn = stream.stop().await.unwrap();
    conn.drop_slot(&slot, true).await.unwrap();
    conn.close().await.unwrap();
    wait_until_slot_gone(&client, &slot).await;
}

#[tokio::test]
async fn unknown_slot_is_a_server_error() {
    let db = TestDb::empty("wire");
    let conn = replication(db.url()).await;
    let err = conn
        .start_logical_replication("no_such_slot", 0, &[("proto_version", "1")])
        .await
        .expect_err("no such slot");
    match &err {
        WireError::Server { code, message, .. } => {
            assert_eq!(code, "42704", "{err}");
            assert!(message.contains("no_such_slot"), "{err}");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_database_is_a_server_error() {
    let db = TestDb::empty("wire");
    let url = db.cluster().url(&format!("{}_missing", db.name()));
    let err = ReplicationConnection::connect(&ReplicationConfig::from_url(&url).unwrap())
        .await
        .expect_err("no such database");
    assert_eq!(err.code(), Some("3D000"), "{err}");
}

#[tokio::test]
async fn closed_port_fails_fast_with_an_io_error() {
    // Bound but never listening: the port stays ours (no other test can take it) and refuses.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let config =
        ReplicationConfig::from_url(&format!("postgresql://postgres@127.0.0.1:{port}/db")).unwrap();
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        ReplicationConnection::connect(&config),
    )
    .await
    .expect("refused at once, not hanging");
    match result {
        Err(WireError::Io { context, source }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
            assert!(context.contains(&port.to_string()), "{context}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    let config =
        ReplicationConfig::from_url("postgresql://postgres@/db?host=/nonexistent-dir&port=1")
            .unwrap();
    let err = ReplicationConnection::connect(&config).await.unwrap_err();
    assert!(
        matches!(&err, WireError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

/// Password methods need pg_hba.conf lines, and the shared cluster trusts everyone. When we own
/// the cluster, lines for this test's own roles go in front (so nobody else is affected) and the
/// configuration is reloaded; against an external server the test is skipped.
#[tokio::test]
async fn password_authentication_methods() {
    let db = TestDb::empty("wire");
    let cluster = db.cluster();
    if cluster.data_dir().is_none() {
        eprintln!("skipped: the cluster is external, its pg_hba.conf is not ours to edit");
        return;
    }
    let admin = sql(db.url()).await;
    let hba_file: String = admin.query_one("SHOW hba_file", &[]).await.unwrap().get(0);
    let original = std::fs::read_to_string(&hba_file).unwrap();

    let base = db.name();
    let roles = [
        (format!("{base}_scram"), "scram-sha-256", "scram-sha-256"),
        (format!("{base}_md5"), "md5", "md5"),
        (format!("{base}_clear"), "password", "scram-sha-256"),
    ];
    let secret = "pa ss'wörd";
    let mut lines = String::new();
    for (role, method, encryption) in &roles {
        admin
            .batch_execute(&format!(
                "SET password_encryption = '{encryption}'; \
                 CREATE ROLE \"{role}\" LOGIN REPLICATION PASSWORD 'pa ss''wörd';"
            ))
            .await
            .unwrap();
        lines.push_str(&format!("local all \"{role}\" {method}\n"));
    }
    // Written in place, so the file keeps the owner and mode the server needs.
    std::fs::write(&hba_file, format!("{lines}{original}")).unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();

    // The harness URL names `postgres`; the same server as another role.
    let url_for = |role: &str, password: Option<&str>| {
        let url = db.url().replacen("postgres@", &format!("{role}@"), 1);
        let config = ReplicationConfig::from_url(&url).unwrap();
        match password {
            Some(password) => config.with_password(password),
            None => config,
        }
    };

    // The reload is asynchronous: wait until a wrong password is refused.
    let (scram_role, _, _) = &roles[0];
    eventually("pg_hba.conf to be reloaded", PATIENCE, || async {
        match ReplicationConnection::connect(&url_for(scram_role, Some("wrong"))).await {
            Err(e) if e.code() == Some("28P01") => Some(()),
            Ok(conn) => {
                conn.close().await.unwrap();
                None
            }
            Err(e) => panic!("unexpected error while waiting for the reload: {e}"),
        }
    })
    .await;

    for (role, method, _) in &roles {
        let mut conn = ReplicationConnection::connect(&url_for(role, Some(secret)))
            .await
            .unwrap_or_else(|e| panic!("{method} with the right password: {e}"));
        assert_eq!(
            conn.identify_system().await.unwrap().dbname.as_deref(),
            Some(db.name())
        );
        conn.close().await.unwrap();

        let err = ReplicationConnection::connect(&url_for(role, Some("wrong")))
            .await
            .expect_err("wrong password");
        assert_eq!(err.code(), Some("28P01"), "{method}: {err}");

        let err = ReplicationConnection::connect(&url_for(role, None))
            .await
            .expect_err("no password");
        assert!(matches!(err, WireError::Config(_)), "{method}: {err:?}");
    }

    std::fs::write(&hba_file, original).unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    for (role, _, _) in &roles {
        admin
            .batch_execute(&format!("DROP ROLE \"{role}\""))
            .await
            .unwrap();
    }
}
