//! `fig follow` as an operator runs it beside routers started as separate processes: the real
//! binary with the shipped pipeline file, real databases and slots. The capability's stream runs
//! out of its write owner and switches direction when the stored ownership changes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use localpg::TestDb;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use router::WriteOwner;

/// `SELECT count(*)` of `sql` (a `FROM ...` clause) in `url`.
fn count(url: &str, from: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = PgConnection::establish(url).unwrap();
    diesel::sql_query(format!("SELECT count(*) AS n {from}"))
        .get_result::<N>(&mut c)
        .unwrap()
        .n
}

fn execute(url: &str, sql: &str) {
    let mut c = PgConnection::establish(url).unwrap();
    diesel::sql_query(sql).execute(&mut c).unwrap();
}

/// Polls `check` until it holds, for up to 60 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

fn streaming(text: &str, pipeline: &str) -> bool {
    text.contains(&format!(
        "fig_replication_up{{pipeline=\"{pipeline}\",phase=\"streaming\"}} 1"
    ))
}

/// The `fig follow` process, killed if the test ends before it stopped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn streams_follow_the_write_owner_from_a_process_of_their_own() {
    let monolith = TestDb::new("monolith", monolith::MIGRATIONS);
    let catalog = TestDb::new("catalog", catalog_service::MIGRATIONS);
    let wishlist = TestDb::new("wishlist", wishlist_service::MIGRATIONS);
    let routerdb = TestDb::new("router", router::store::MIGRATIONS);
    {
        let mut c = PgConnection::establish(monolith.url()).unwrap();
        monolith::seed::seed(&mut c, monolith::seed::SeedSize::scaled(0.02)).unwrap();
    }
    let albums = count(monolith.url(), "FROM catalog.albums");
    assert!(albums > 0);

    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../replication/config/musiccorp.toml"
    );
    let mut follow = Stopped(
        Command::new(env!("CARGO_BIN_EXE_fig"))
            .args([
                "follow",
                "--config",
                config,
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(["--every-ms", "50"])
            .env("ROUTER_DATABASE_URL", routerdb.url())
            .env("FIG_MONOLITH_DATABASE_URL", monolith.url())
            .env("FIG_CATALOG_DATABASE_URL", catalog.url())
            .env("FIG_WISHLIST_DATABASE_URL", wishlist.url())
            .env_remove("ROUTER_ROUTES")
            .stdout(Stdio::piped())
            .spawn()
            .expect("fig follow starts"),
    );
    let child = &mut follow.0;
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let metrics_url = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("fig follow prints where its metrics are");
        if let Some(rest) = line.strip_prefix("fig follow: metrics ") {
            break rest.trim().to_string();
        }
    };

    // The monolith owns the writes: its tables are copied into the service, then streamed.
    eventually("the catalog's forward stream", || {
        streaming(&metrics(&metrics_url), "catalog")
    });
    assert_eq!(count(catalog.url(), "FROM catalog.albums"), albums);
    execute(
        monolith.url(),
        "INSERT INTO catalog.artists (name) VALUES ('Followed Forward')",
    );
    eventually("a monolith change in the service", || {
        count(
            catalog.url(),
            "FROM catalog.artists WHERE name = 'Followed Forward'",
        ) == 1
    });

    // The catalog service takes the writes (as a flip's grant records it): the stream turns.
    {
        let mut c = PgConnection::establish(routerdb.url()).unwrap();
        router::ownership::store::set(&mut c, "catalog", WriteOwner::Extracted, false).unwrap();
    }
    eventually("the catalog's stream back, the forward one retired", || {
        let text = metrics(&metrics_url);
        streaming(&text, "catalog_reverse")
            && text.contains("fig_replication_up{pipeline=\"catalog\",phase=\"stopped\"} 1")
    });
    execute(
        catalog.url(),
        "INSERT INTO catalog.artists (name) VALUES ('Followed Back')",
    );
    eventually("a service change in the monolith", || {
        count(
            monolith.url(),
            "FROM catalog.artists WHERE name = 'Followed Back'",
        ) == 1
    });
    // The wishlist's stream kept its direction.
    assert!(streaming(&metrics(&metrics_url), "wishlist"));

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "fig follow did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
