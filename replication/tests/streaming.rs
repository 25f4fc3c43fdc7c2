//! Large transactions streamed while in progress (protocol 2): applied as they arrive on a
//! session of their own, committed or rolled back with the source, subtransactions included.

mod support;

use support::{Pair, applying_in_progress, rows, start, until};

const ITEMS: &str = "
CREATE SCHEMA shop;
CREATE TABLE shop.items (id bigint PRIMARY KEY, title text NOT NULL, n integer);";

/// A pipeline that streams any transaction past 64 kB of changes (the server's minimum).
fn streaming_pipeline(pair: &Pair) -> replication::config::Pipeline {
    let mut p = pair.pipeline(&["shop.items"]);
    p.stream_after_kib = 64;
    p
}

/// Starts a streaming pipeline for `pair`, then runs `sql` on a source session of its own (a
/// transaction left open), and waits until the target applies it while still open.
async fn open_while_streaming(
    pair: &Pair,
    sql: &str,
) -> (support::Running, tokio_postgres::Client) {
    let running = start(streaming_pipeline(pair));
    running.streaming().await;
    pair.caught_up().await;
    let big = support::client(pair.source.url()).await;
    big.batch_execute(sql).await.unwrap();
    until(
        &pair.dst,
        &applying_in_progress(&pair.name),
        "the open transaction is applied on the target",
    )
    .await;
    (running, big)
}

async fn applied(client: &tokio_postgres::Client, name: &str) -> i64 {
    let sql = format!("SELECT rows_applied FROM fig_replication.pipelines WHERE name = '{name}'");
    count(client, &sql).await
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_large_transaction_is_applied_while_in_progress_and_commits_with_the_source() {
    let pair = Pair::new("stream_commit", ITEMS).await;
    // A big transaction with subtransactions, left open.
    let (running, big) = open_while_streaming(
        &pair,
        "BEGIN;
         INSERT INTO shop.items SELECT g, 'item ' || g, 0 FROM generate_series(1, 20000) g;
         SAVEPOINT a;
         UPDATE shop.items SET n = 1 WHERE id <= 5000;
         SAVEPOINT b;
         DELETE FROM shop.items WHERE id > 19000;
         ROLLBACK TO SAVEPOINT b;
         UPDATE shop.items SET title = 'kept' WHERE id % 1000 = 0;
         RELEASE SAVEPOINT a;
         SAVEPOINT c;
         UPDATE shop.items SET n = -1;
         ROLLBACK TO SAVEPOINT c;
         INSERT INTO shop.items SELECT g, 'late ' || g, 2 FROM generate_series(20001, 25000) g;",
    )
    .await;

    // Small transactions committing meanwhile are not held up by it.
    pair.src
        .batch_execute("INSERT INTO shop.items VALUES (-1, 'small, committed first', 0)")
        .await
        .unwrap();
    until(
        &pair.dst,
        "SELECT EXISTS (SELECT 1 FROM shop.items WHERE id = -1)",
        "the small transaction arrives while the big one is open",
    )
    .await;
    assert_eq!(
        count(&pair.dst, "SELECT count(*) FROM shop.items").await,
        1,
        "nothing of the open transaction is visible on the target"
    );

    big.batch_execute("COMMIT").await.unwrap();
    pair.caught_up().await;
    let want = rows(&pair.src, "shop.items", "id").await;
    assert_eq!(want.len(), 25_001);
    assert_eq!(rows(&pair.dst, "shop.items", "id").await, want);
    assert_eq!(
        count(&pair.dst, "SELECT count(*) FROM shop.items WHERE n = 1").await,
        5_000,
        "the released subtransaction's update is kept"
    );
    assert_eq!(
        count(&pair.dst, "SELECT count(*) FROM shop.items WHERE n = -1").await,
        0,
        "the rolled-back subtransaction's update is undone"
    );

    // A second one on the same (recycled) session, updating and deleting what the first wrote.
    big.batch_execute(
        "BEGIN;
         UPDATE shop.items SET n = n + 10, title = title || '!';
         DELETE FROM shop.items WHERE id % 3 = 0;
         COMMIT;",
    )
    .await
    .unwrap();
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.items", "id").await,
        rows(&pair.src, "shop.items", "id").await
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_large_transaction_that_aborts_leaves_nothing_on_the_target() {
    let pair = Pair::new("stream_abort", ITEMS).await;
    pair.src
        .batch_execute(
            "INSERT INTO shop.items SELECT g, 'before ' || g, 0 FROM generate_series(1, 100) g",
        )
        .await
        .unwrap();
    let (running, big) = open_while_streaming(
        &pair,
        "BEGIN;
         INSERT INTO shop.items SELECT g, 'doomed ' || g, 0 FROM generate_series(1000, 30000) g;
         DELETE FROM shop.items WHERE id <= 50;",
    )
    .await;
    big.batch_execute("ROLLBACK").await.unwrap();
    pair.src
        .batch_execute("UPDATE shop.items SET n = 7 WHERE id = 1")
        .await
        .unwrap();
    pair.caught_up().await;
    let want = rows(&pair.src, "shop.items", "id").await;
    assert_eq!(want.len(), 100);
    assert_eq!(rows(&pair.dst, "shop.items", "id").await, want);
    until(
        &pair.dst,
        &format!("SELECT NOT ({})", applying_in_progress(&pair.name)),
        "the aborted transaction's target transaction is rolled back",
    )
    .await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn streamed_transactions_are_not_echoed_by_the_reverse_stream() {
    let pair = Pair::new("stream_twoway", ITEMS).await;
    let (forward, f, reverse, r) = pair.start_two_way(streaming_pipeline(&pair)).await;
    let (forward_name, reverse_name) = (forward.name, reverse.name);

    // Big enough to be streamed each way; an echo would insert the same keys again and fail.
    pair.src
        .batch_execute(
            "INSERT INTO shop.items SELECT g, 'monolith', 0 FROM generate_series(1, 10000) g",
        )
        .await
        .unwrap();
    support::caught_up(&pair.src, &pair.dst, &forward_name).await;
    pair.dst
        .batch_execute(
            "INSERT INTO shop.items SELECT g, 'service', 0 FROM generate_series(10001, 20000) g",
        )
        .await
        .unwrap();
    support::caught_up(&pair.dst, &pair.src, &reverse_name).await;
    support::caught_up(&pair.src, &pair.dst, &forward_name).await;
    support::caught_up(&pair.dst, &pair.src, &reverse_name).await;

    let both = rows(&pair.src, "shop.items", "id").await;
    assert_eq!(both.len(), 20_000);
    assert_eq!(both, rows(&pair.dst, "shop.items", "id").await);
    assert_eq!(
        applied(&pair.dst, &forward_name).await,
        10_000,
        "monolith → service"
    );
    assert_eq!(
        applied(&pair.src, &reverse_name).await,
        10_000,
        "service → monolith"
    );
    let origins = count(
        &pair.dst,
        &format!(
            "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'fig\\_{forward_name}.s%'"
        ),
    )
    .await;
    assert!(
        origins >= 1,
        "the forward stream applied on a streaming session"
    );
    f.stop().await.unwrap();
    r.stop().await.unwrap();
}
