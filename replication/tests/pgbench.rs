//! pgbench's tables through a pipeline: under traffic during and after the initial copy, and
//! with the engine killed (-9) at random moments. The end state is compared with `verify` and
//! row for row.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use replication::config::Pipeline;
use support::{DEADLINE, Pair, rows, start};

const TABLES: [&str; 4] = [
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_history",
];

fn pgbench(pair: &Pair, url: &str, args: &[&str]) {
    let program = pair
        .source
        .cluster()
        .binaries()
        .map(|b| b.program("pgbench"))
        .unwrap_or_else(|| "pgbench".into());
    let out = Command::new(program)
        .args(args)
        .arg(url)
        .output()
        .expect("pgbench runs");
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pgbench data on the source, empty pgbench tables (with keys) on the target.
async fn pgbench_pair(key: &str) -> Pair {
    let pair = Pair::new(key, "").await;
    pgbench(&pair, pair.source.url(), &["-i", "-q", "-s", "1"]);
    pgbench(
        &pair,
        pair.target.url(),
        &["-i", "-q", "-I", "dtp", "-s", "1"],
    );
    pair
}

async fn assert_identical(pair: &Pair) {
    for (table, order) in [
        ("pgbench_accounts", "aid"),
        ("pgbench_branches", "bid"),
        ("pgbench_tellers", "tid"),
        ("pgbench_history", "t::text"),
    ] {
        let source = rows(&pair.src, table, order).await;
        let target = rows(&pair.dst, table, order).await;
        assert_eq!(source.len(), target.len(), "{table}: row counts");
        assert!(source == target, "{table}: rows differ");
    }
}

#[tokio::test]
async fn pgbench_tables_replicate_under_traffic_and_verify_equal() {
    let pair = pgbench_pair("pgb").await;
    let pipeline = pair.pipeline(&TABLES);
    let url = pair.source.url().to_string();
    // Traffic while the copy runs...
    let during = {
        let pair_url = url.clone();
        let program = pair
            .source
            .cluster()
            .binaries()
            .map(|b| b.program("pgbench"));
        tokio::task::spawn_blocking(move || {
            let out = Command::new(program.unwrap_or_else(|| "pgbench".into()))
                .args(["-c", "2", "-T", "3", "-n"])
                .arg(&pair_url)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
    };
    let running = start(pipeline.clone());
    during.await.unwrap();
    running.streaming().await;
    // ...and after it.
    pgbench(&pair, &url, &["-c", "2", "-t", "200", "-n"]);
    pair.caught_up().await;
    let report = replication::ops::verify(&pipeline, 10, DEADLINE)
        .await
        .unwrap();
    assert!(report.equal(), "{report}");
    assert_eq!(report.tables.len(), 4);
    let history = report
        .tables
        .iter()
        .find(|t| t.source == "public.pgbench_history")
        .unwrap();
    assert!(
        history.source_rows > 0 && history.source_rows == history.target_rows,
        "{history}"
    );
    running.stop().await.unwrap();
}

fn config_file(dir: &std::path::Path, p: &Pipeline) -> std::path::PathBuf {
    let tables: String = p
        .tables
        .iter()
        .map(|t| format!("[[pipelines.tables]]\nsource = \"{}\"\n", t.source))
        .collect();
    let text = format!(
        "[[pipelines]]\nname = \"{}\"\nsource = \"{}\"\ntarget = \"{}\"\nbatch_rows = 500\nstream_after_kib = {}\n{tables}",
        p.name, p.source, p.target, p.stream_after_kib
    );
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn engine(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_replication"))
        .args(["run", "--config"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("ENGINE_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the replication binary starts")
}

/// SplitMix64: reproducible "random" moments without a dependency.
fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Polls `sql` on `client` (a boolean) until true, or gives up at the deadline.
async fn until(client: &tokio_postgres::Client, sql: &str, name: &str, child: &mut Child) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the engine exited by itself ({status}) while waiting for: {sql}");
        }
        let hit = client
            .query_opt(sql, &[&name])
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.get::<_, bool>(0));
        if hit {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

#[tokio::test]
async fn killed_at_random_moments_the_target_still_ends_identical() {
    let pair = pgbench_pair("crash").await;
    let mut pipeline = pair.pipeline(&TABLES);
    // Every 6th transaction below (a few MB of changes) is streamed while in progress; the
    // others (a few hundred kB) are not.
    pipeline.stream_after_kib = 1024;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &pipeline);

    // Source traffic throughout: multi-row transactions of every kind, and large ones with a
    // subtransaction rolled back.
    let traffic_client = support::client(pair.source.url()).await;
    let (stop_traffic, mut stopped) = tokio::sync::watch::channel(false);
    let traffic = tokio::spawn(async move {
        let mut round: i64 = 0;
        while !*stopped.borrow_and_update() {
            round += 1;
            // Paced, so the engine (a debug build here) is not left minutes behind at the end.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let low = (round * 997) % 90_000 + 1;
            if round % 6 == 0 {
                traffic_client
                    .batch_execute(&format!(
                        "BEGIN;
                         UPDATE pgbench_accounts SET abalance = abalance - 1 WHERE aid BETWEEN {low} AND {low} + 8000;
                         SAVEPOINT s;
                         UPDATE pgbench_branches SET bbalance = bbalance + 1000;
                         DELETE FROM pgbench_accounts WHERE aid BETWEEN {low} AND {low} + 100;
                         ROLLBACK TO SAVEPOINT s;
                         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
                           SELECT 1 + g % 10, 1, g, -{round}, now() FROM generate_series(1, 1000) g;
                         COMMIT;"
                    ))
                    .await
                    .unwrap();
                continue;
            }
            traffic_client
                .batch_execute(&format!(
                    "BEGIN;
                     UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN {low} AND {low} + 2000;
                     INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
                       SELECT 1 + g % 10, 1, g, {round}, now() FROM generate_series(1, 300) g;
                     UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 1 + {round} % 10;
                     COMMIT;"
                ))
                .await
                .unwrap();
        }
    });

    let name = pipeline.name.clone();
    let app = format!("fig-replication-{name}");
    let mut seed = 0x5eed_u64;
    let mut during_copy = 0;
    let mut inside_transaction = 0;
    let mut inside_streamed = 0;
    for round in 0..10 {
        let mut child = engine(&config);
        let (moment, count) = if round < 3 {
            // During the initial copy (each restart before streaming starts the copy again).
            (
                "SELECT EXISTS (SELECT 1 FROM fig_replication.pipelines WHERE name = $1 AND phase = 'copying')
                    AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'COPY%' AND state = 'active')".to_string(),
                &mut during_copy,
            )
        } else if round >= 8 {
            // While a streamed transaction is being applied, before its source commit.
            (
                format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = '{app}-stream'
                        AND backend_xid IS NOT NULL AND $1::text IS NOT NULL)"
                ),
                &mut inside_streamed,
            )
        } else {
            // While the engine has a target transaction open: right after a BEGIN, or inside
            // a batch of rows.
            (
                format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = '{app}'
                        AND xact_start IS NOT NULL AND $1::text IS NOT NULL)"
                ),
                &mut inside_transaction,
            )
        };
        let hit = until(&pair.dst, &moment, &name, &mut child).await;
        *count += usize::from(hit);
        assert!(hit, "round {round}: the moment to kill never came");
        tokio::time::sleep(Duration::from_micros(next(&mut seed) % 20_000)).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(
        (during_copy, inside_transaction, inside_streamed),
        (3, 5, 2)
    );

    stop_traffic.send(true).unwrap();
    traffic.await.unwrap();
    let mut child = engine(&config);
    pair.caught_up().await;
    assert_identical(&pair).await;
    child.kill().unwrap();
    child.wait().unwrap();
}
