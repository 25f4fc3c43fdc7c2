//! The harness against real PostgreSQL: start, use, stop, clean up, as whatever user runs the tests.

use diesel::{RunQueryDsl, sql_query};
use localpg::{Cluster, ClusterOptions, Listen, Settings, TestDb};

#[derive(diesel::QueryableByName)]
struct One {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

fn show(conn: &mut diesel::PgConnection, setting: &str) -> String {
    sql_query("SELECT current_setting($1) AS value")
        .bind::<diesel::sql_types::Text, _>(setting)
        .get_result::<One>(conn)
        .unwrap()
        .value
}

#[test]
fn owned_cluster_starts_for_logical_replication_and_is_removed_on_stop() {
    let settings = Settings::from_env().unwrap();
    if settings.url.is_some() {
        return; // an external server is the caller's to manage
    }
    let cluster = Cluster::start(ClusterOptions {
        listen: Listen::Tcp { port: 0 },
        settings,
        ..ClusterOptions::default()
    })
    .expect("cluster starts");
    let port = cluster.tcp_port().expect("listens on TCP");
    assert!(cluster.url("x").contains(&format!("127.0.0.1:{port}")));
    let data_dir = cluster.data_dir().unwrap().to_path_buf();
    assert!(data_dir.join("PG_VERSION").exists());

    // When the tests run as root (CI does), the server runs as `postgres` and owns its data.
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        assert_eq!(std::fs::metadata(&data_dir).unwrap().uid(), pg.uid.as_raw());
    }

    assert!(cluster.create_database("app").unwrap());
    assert!(
        !cluster.create_database("app").unwrap(),
        "second create is a no-op"
    );
    let mut conn = cluster.connect("app").unwrap();
    assert_eq!(show(&mut conn, "wal_level"), "logical");
    assert_eq!(show(&mut conn, "max_replication_slots"), "32");
    drop(conn);

    cluster.stop().expect("stops cleanly");
    assert!(!data_dir.exists(), "throwaway data directory removed");
}

#[test]
fn persistent_data_dir_survives_a_restart() {
    let settings = Settings::from_env().unwrap();
    if settings.url.is_some() {
        return;
    }
    let keep = tempfile::tempdir().unwrap();
    // The server may run as another user (when we are root): let it walk into our temp dir.
    std::fs::set_permissions(
        keep.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = keep.path().join("pgdata");
    let options = ClusterOptions {
        data_dir: Some(data.clone()),
        settings,
        ..ClusterOptions::default()
    };
    let first = Cluster::start(options.clone()).unwrap();
    first.create_database("kept").unwrap();
    first.stop().unwrap();
    assert!(data.join("PG_VERSION").exists(), "data kept after stop");

    let second = Cluster::start(options).unwrap();
    assert!(second.database_exists("kept").unwrap());
    second.stop().unwrap();
}

#[test]
fn test_databases_are_isolated_and_dropped() {
    let a = TestDb::empty("iso");
    let b = TestDb::empty("iso");
    assert_ne!(a.name(), b.name());
    let mut conn: diesel::PgConnection = diesel::Connection::establish(a.url()).unwrap();
    sql_query("CREATE TABLE only_in_a (id int)")
        .execute(&mut conn)
        .unwrap();
    let mut conn_b: diesel::PgConnection = diesel::Connection::establish(b.url()).unwrap();
    assert!(
        sql_query("SELECT * FROM only_in_a")
            .execute(&mut conn_b)
            .is_err()
    );
    drop(conn_b);

    let name = a.name().to_string();
    let cluster = a.cluster();
    drop(a); // drops even with our connection still open (WITH FORCE)
    assert!(!cluster.database_exists(&name).unwrap());
    drop(conn);
}

#[test]
fn a_data_dir_the_server_user_cannot_reach_is_named() {
    if !nix::unistd::geteuid().is_root() || Settings::from_env().unwrap().url.is_some() {
        return; // only root hands the server to another user
    }
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let err = Cluster::start(ClusterOptions {
        data_dir: Some(private.path().join("pgdata")),
        ..ClusterOptions::default()
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cannot reach"), "{text}");
    assert!(
        text.contains(&private.path().display().to_string()),
        "{text}"
    );
}

#[test]
fn a_tls_cluster_serves_its_certificate_and_keeps_its_key_private() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let cluster = localpg::shared_tls();
    let tls = cluster.tls().expect("a TLS cluster has certificates");
    assert_eq!(tls.server_names(), ["localhost"]);
    let url = cluster.url("postgres");
    assert!(url.contains("sslmode=verify-full"), "{url}");
    assert!(url.contains("@localhost:"), "{url}");

    // PostgreSQL refuses a key others can read; as root the server runs as `postgres`.
    let key = std::fs::read_dir(tls.ca_path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .expect("the server key is beside the CA");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    if nix::unistd::geteuid().is_root() {
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        assert_eq!(meta.uid(), pg.uid.as_raw());
    }
    assert_ne!(
        std::fs::read(tls.ca_path()).unwrap(),
        std::fs::read(tls.wrong_ca_path()).unwrap()
    );

    // libpq verified the certificate, and the session is encrypted.
    let mut conn = cluster
        .admin()
        .expect("verify-full with the cluster's CA connects");
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let row: Ssl = sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .unwrap();
    assert!(row.ssl);
    assert_eq!(show(&mut conn, "ssl"), "on");
}

#[test]
fn tls_needs_tcp_and_a_cluster_of_our_own() {
    let unix = Cluster::start(ClusterOptions {
        tls: Some(localpg::TlsOptions::default()),
        ..ClusterOptions::default()
    })
    .unwrap_err();
    assert!(unix.to_string().contains("only over TCP"), "{unix}");
    let external = Cluster::start(ClusterOptions {
        listen: Listen::Tcp { port: 0 },
        tls: Some(localpg::TlsOptions::default()),
        settings: Settings {
            url: Some("postgres://u@h/db".into()),
            bindir: None,
        },
        ..ClusterOptions::default()
    })
    .unwrap_err();
    assert!(external.to_string().contains("LOCALPG_URL"), "{external}");
}
