//! Streamed transactions and the ordinary ones committed around them (issue 16, items 1 and 4):
//! the target sees conflicting changes in source order, no two apply sessions wait on each
//! other for good, and a change the source undid in a subtransaction does not stop the pipeline.

mod support;

use support::proxy::{Proxy, Upstream};
use support::{DEADLINE, Pair, applying_in_progress, rows, start, until};

const DDL: &str = "
CREATE SCHEMA shop;
CREATE TABLE shop.items (id bigint PRIMARY KEY, title text NOT NULL, n integer);
CREATE TABLE shop.marks (id integer PRIMARY KEY, v text);
CREATE TABLE shop.bag (v text, n integer);
ALTER TABLE shop.bag REPLICA IDENTITY FULL;";

const TABLES: [&str; 3] = ["shop.items", "shop.marks", "shop.bag"];

/// Inserts enough rows into `shop.items` (from `first`) to stream them and to send whatever the
/// streamed transaction's session had gathered before (more than a batch: the COPY path writes
/// what was gathered first).
fn filler(first: i64) -> String {
    format!(
        "INSERT INTO shop.items SELECT g, 'item ' || g, 0 FROM generate_series({first}, {}) g;",
        first + 11_999
    )
}

/// A streaming pipeline over `pair`, caught up, and a source session holding a transaction that
/// the target is applying while it is open. The engine is kept busy (the transaction's first
/// statement is large), so what the source commits next reaches it together with the
/// transaction's next block.
async fn streaming_with_open_transaction(
    pair: &Pair,
) -> (support::Running, tokio_postgres::Client) {
    let mut pipeline = pair.pipeline(&TABLES);
    pipeline.stream_after_kib = 64;
    let running = start(pipeline);
    running.streaming().await;
    pair.caught_up().await;
    let big = support::client(pair.source.url()).await;
    big.batch_execute(
        "BEGIN; INSERT INTO shop.items SELECT g, 'item ' || g, 0 FROM generate_series(1, 60000) g;",
    )
    .await
    .unwrap();
    until(
        &pair.dst,
        &applying_in_progress(&pair.name),
        "the open transaction is applied on the target",
    )
    .await;
    (running, big)
}

#[tokio::test]
async fn a_streamed_transaction_changes_rows_only_after_the_commits_before_it() {
    let pair = Pair::new("stream_order", DDL).await;
    // The engine reads the source through a proxy that can hold the stream back.
    let proxy = Proxy::start(Upstream::of_url(pair.source.url())).await;
    let mut pipeline = pair.pipeline(&TABLES);
    pipeline.stream_after_kib = 64;
    pipeline.source = format!(
        "postgresql://postgres@127.0.0.1:{}/{}",
        proxy.port,
        pair.source.name()
    );
    let running = start(pipeline);
    running.streaming().await;
    // The same kinds of transaction as below go first, so that the engine has the statements
    // prepared and a session for streamed transactions open: it then applies the ordinary
    // transaction and starts the streamed one without a round trip to the target.
    pair.src
        .batch_execute(&format!(
            "INSERT INTO shop.marks VALUES (0, 'warm');
             UPDATE shop.marks SET v = 'warm' WHERE id = 0;
             BEGIN; {} COMMIT;",
            filler(1)
        ))
        .await
        .unwrap();
    pair.caught_up().await;
    // Before the fix, in most rounds: the streamed UPDATE ran before the ordinary transaction
    // was committed on the target (it found no new row), and the ordinary UPDATE of the old
    // row then waited for the streamed session's lock for good.
    for round in 1..=2 {
        let (old, new) = (round * 10, round * 10 + 1);
        pair.src
            .batch_execute(&format!("INSERT INTO shop.marks VALUES ({old}, 'before')"))
            .await
            .unwrap();
        pair.caught_up().await;
        // From here the stream piles up, as it does behind a busy engine, and reaches the
        // engine back to back.
        proxy.pause();
        let big = support::client(pair.source.url()).await;
        big.batch_execute(&format!(
            "BEGIN; INSERT INTO shop.items VALUES (-{round}, 'open', 0);"
        ))
        .await
        .unwrap();
        // While that transaction is open, an ordinary one inserts a row and updates another...
        pair.src
            .batch_execute(&format!(
                "INSERT INTO shop.marks VALUES ({new}, 'ordinary');
                 UPDATE shop.marks SET v = 'ordinary' WHERE id = {old};"
            ))
            .await
            .unwrap();
        // ...then the open one, streamed from here, changes both rows, and commits last. (Its
        // TRUNCATE makes the engine write the UPDATE at once, not with a later batch.)
        big.batch_execute(&format!(
            "UPDATE shop.marks SET v = 'streamed' WHERE id IN ({old}, {new});
             TRUNCATE shop.bag;
             {} COMMIT;",
            filler(100_000 * i64::from(round) + 1)
        ))
        .await
        .unwrap();
        let end = support::current_lsn(&pair.src).await;
        until(
            &pair.src,
            &format!(
                "SELECT coalesce(bool_or(sent_lsn >= '{end}'), false) FROM pg_stat_replication
                  WHERE application_name = 'fig-replication-{}'",
                pair.name
            ),
            "the server has sent all of it",
        )
        .await;
        proxy.resume();
        tokio::time::timeout(DEADLINE, pair.caught_up())
            .await
            .expect("the pipeline catches up (no two sessions wait on each other)");
        assert_eq!(
            support::texts(
                &pair.dst,
                &format!("SELECT v FROM shop.marks WHERE id IN ({old}, {new}) ORDER BY id")
            )
            .await,
            ["streamed", "streamed"],
            "round {round}"
        );
        assert_eq!(
            running.metrics.commit_order_retries(),
            0,
            "round {round}: applied concurrently, without a wait to cancel"
        );
    }
    assert_eq!(
        rows(&pair.src, "shop.items", "id").await,
        rows(&pair.dst, "shop.items", "id").await
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_row_without_a_key_that_a_streamed_transaction_holds_is_not_waited_for() {
    let pair = Pair::new("stream_keyless", DDL).await;
    pair.src
        .batch_execute("INSERT INTO shop.bag VALUES ('x', 0), ('x', 0)")
        .await
        .unwrap();
    let (running, big) = streaming_with_open_transaction(&pair).await;
    // The open transaction takes one of two identical rows...
    big.batch_execute(&format!(
        "UPDATE shop.bag SET n = 1 WHERE ctid = (SELECT ctid FROM shop.bag WHERE n = 0 LIMIT 1);
         {}",
        filler(100_001)
    ))
    .await
    .unwrap();
    // ...an ordinary transaction the other, and commits first.
    pair.src
        .batch_execute(
            "UPDATE shop.bag SET n = 2
              WHERE ctid = (SELECT ctid FROM shop.bag WHERE n = 0 LIMIT 1 FOR UPDATE SKIP LOCKED)",
        )
        .await
        .unwrap();
    big.batch_execute(&format!("{} COMMIT;", filler(200_001)))
        .await
        .unwrap();
    // Before the fix the ordinary UPDATE picked the row the streamed session held, and waited.
    tokio::time::timeout(DEADLINE, pair.caught_up())
        .await
        .expect("the pipeline catches up");
    assert_eq!(rows(&pair.dst, "shop.bag", "n").await, ["(x,1)", "(x,2)"]);
    assert_eq!(
        running.metrics.commit_order_retries(),
        0,
        "applied concurrently, without a wait to cancel"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_row_the_target_refuses_in_a_subtransaction_the_source_rolled_back_is_undone() {
    // A unique column checked at the end of the statement: the whole multi-row INSERT is written
    // (and streamed) before the source refuses its duplicates.
    let ddl = "CREATE SCHEMA shop;
               CREATE TABLE shop.items (id bigint PRIMARY KEY, code integer UNIQUE DEFERRABLE, n integer);";
    let pair = Pair::new("stream_subfail", ddl).await;
    // The target checks each row (the apply runs as a replica, where a deferred check, a
    // trigger, would not run at all).
    pair.dst
        .batch_execute("ALTER TABLE shop.items DROP CONSTRAINT items_code_key, ADD UNIQUE (code)")
        .await
        .unwrap();
    let mut pipeline = pair.pipeline(&["shop.items"]);
    pipeline.stream_after_kib = 64;
    let running = start(pipeline);
    running.streaming().await;
    let big = support::client(pair.source.url()).await;
    big.batch_execute(
        "BEGIN;
         INSERT INTO shop.items SELECT g, g, 0 FROM generate_series(1, 2000) g;
         SAVEPOINT s;
         SAVEPOINT inner_one;
         INSERT INTO shop.items SELECT 10000 + g, g % 2000 + 1, 1 FROM generate_series(1, 4000) g;",
    )
    .await
    .expect_err("the source refuses the duplicates");
    big.batch_execute(
        "ROLLBACK TO SAVEPOINT s;
         UPDATE shop.items SET n = 2 WHERE id <= 10;
         SAVEPOINT later;
         INSERT INTO shop.items SELECT g, g, 3 FROM generate_series(2001, 4000) g;
         RELEASE SAVEPOINT later;
         COMMIT;",
    )
    .await
    .unwrap();
    pair.caught_up().await;
    let target = rows(&pair.dst, "shop.items", "id").await;
    assert_eq!(target.len(), 4_000);
    assert_eq!(target, rows(&pair.src, "shop.items", "id").await);
    assert_eq!(
        running.metrics.commit_order_retries(),
        0,
        "the refusal was undone with the subtransaction"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_wait_on_a_target_only_unique_index_stops_the_pipeline_instead_of_hanging() {
    let pair = Pair::new("stream_waits", DDL).await;
    // The target has a constraint the source lacks.
    pair.dst
        .batch_execute("CREATE UNIQUE INDEX marks_v_unique ON shop.marks (v)")
        .await
        .unwrap();
    pair.src
        .batch_execute("INSERT INTO shop.marks VALUES (1, 'X')")
        .await
        .unwrap();
    let (running, big) = streaming_with_open_transaction(&pair).await;
    // The open transaction deletes the row ('X' is free once it commits)...
    big.batch_execute(&format!(
        "DELETE FROM shop.marks WHERE id = 1; {}",
        filler(100_001)
    ))
    .await
    .unwrap();
    // ...and an ordinary one takes 'X' first: on the target its insert waits for the open
    // transaction's delete, which commits later in the stream.
    pair.src
        .batch_execute("INSERT INTO shop.marks VALUES (2, 'X')")
        .await
        .unwrap();
    big.batch_execute("COMMIT").await.unwrap();
    // In commit order the insert comes first, and the target cannot take it: the pipeline says
    // so rather than wait for ever.
    let metrics = running.metrics.clone();
    let ended = tokio::time::timeout(DEADLINE, running.task)
        .await
        .expect("the pipeline stops instead of hanging")
        .unwrap();
    let error = ended
        .expect_err("the target cannot hold the source's rows")
        .to_string();
    assert!(error.contains("marks_v_unique"), "{error}");
    let recorded: Option<String> = pair
        .dst
        .query_one(
            "SELECT last_error FROM fig_replication.pipelines WHERE name = $1",
            &[&pair.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        recorded.is_some_and(|e| e.contains("marks_v_unique")),
        "the reason is recorded"
    );
    assert_eq!(
        metrics.commit_order_retries(),
        1,
        "tried once in commit order"
    );
    // The pipeline stopped without applying the insert: the slot still has it.
    assert_eq!(rows(&pair.dst, "shop.marks", "id").await, ["(1,X)"]);
}

#[tokio::test]
async fn a_pipeline_stuck_on_a_lock_stops_when_asked() {
    let pair = Pair::new("stream_stuck", DDL).await;
    let running = start(pair.pipeline(&TABLES));
    running.streaming().await;
    // Another session on the target holds a lock the engine needs.
    let locker = support::client(pair.target.url()).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE shop.marks IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    pair.src
        .batch_execute("INSERT INTO shop.marks VALUES (1, 'waits')")
        .await
        .unwrap();
    until(
        &pair.dst,
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'
              AND application_name = 'fig-replication-{}')",
            pair.name
        ),
        "the engine waits for the lock",
    )
    .await;
    // Before the fix the stop was only seen between messages: it waited as long as the lock.
    tokio::time::timeout(DEADLINE / 4, running.stop())
        .await
        .expect("the pipeline stops while the lock is still held")
        .unwrap();
    locker.batch_execute("ROLLBACK").await.unwrap();
    // Nothing was lost: the next run applies the row.
    let running = start(pair.pipeline(&TABLES));
    running.streaming().await;
    pair.caught_up().await;
    assert_eq!(rows(&pair.dst, "shop.marks", "id").await, ["(1,waits)"]);
    running.stop().await.unwrap();
}
