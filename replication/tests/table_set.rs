//! Tables added to or taken out of a pipeline that has been streaming (issue 16, item 5): an
//! added table is copied consistently while the source keeps writing, and a table taken out
//! does not stop the pipeline.

mod support;

use support::{Pair, rows, start};

const DDL: &str = "
CREATE SCHEMA shop;
CREATE TABLE shop.a (id integer PRIMARY KEY, v text);
CREATE TABLE shop.b (id integer PRIMARY KEY, v text);
INSERT INTO shop.a SELECT g, 'a' || g FROM generate_series(1, 10) g;";

/// Writes to both tables, statement after statement, until told to stop; returns how many.
fn keep_writing(
    url: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let client = support::client(&url).await;
        let mut n = 0;
        while !*stop.borrow() || n < 50 {
            n += 1;
            client
                .batch_execute(&format!(
                    "INSERT INTO shop.b VALUES (1000 + {n}, 'new {n}');
                     UPDATE shop.b SET v = v || '+' WHERE id = {n} % 90 + 1;
                     DELETE FROM shop.b WHERE id = 1000 + {n} - 7;
                     UPDATE shop.a SET v = v || '+' WHERE id = {n} % 10 + 1;"
                ))
                .await
                .unwrap();
        }
        n
    })
}

#[tokio::test]
async fn a_table_added_to_a_streaming_pipeline_is_copied_while_the_source_writes() {
    let pair = Pair::new("table_added", DDL).await;
    pair.src
        .batch_execute("INSERT INTO shop.b SELECT g, 'b' || g FROM generate_series(1, 90) g")
        .await
        .unwrap();
    let running = start(pair.pipeline(&["shop.a"]));
    running.streaming().await;
    pair.src
        .batch_execute(
            "UPDATE shop.b SET v = 'changed' WHERE id = 1; UPDATE shop.a SET v = 'x' WHERE id = 1",
        )
        .await
        .unwrap();
    pair.caught_up().await;
    running.stop().await.unwrap();

    // The source keeps writing to both tables while the pipeline starts again with `b` added.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = keep_writing(pair.source.url().to_string(), stopped);
    let running = start(pair.pipeline(&["shop.a", "shop.b"]));
    running.streaming().await;
    stop.send(true).unwrap();
    let writes = writer.await.unwrap();
    assert!(writes >= 50);
    pair.caught_up().await;
    // Before the fix the target held only the rows of `b` changed since the restart.
    let source_b = rows(&pair.src, "shop.b", "id").await;
    assert!(source_b.len() >= 90);
    assert_eq!(rows(&pair.dst, "shop.b", "id").await, source_b);
    assert_eq!(
        rows(&pair.dst, "shop.a", "id").await,
        rows(&pair.src, "shop.a", "id").await
    );
    // Streaming goes on as usual afterwards.
    pair.src
        .batch_execute("INSERT INTO shop.b VALUES (5000, 'after')")
        .await
        .unwrap();
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.b", "id").await,
        rows(&pair.src, "shop.b", "id").await
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_table_taken_out_of_a_pipeline_does_not_stop_it_and_comes_back_copied() {
    let pair = Pair::new("table_removed", DDL).await;
    let running = start(pair.pipeline(&["shop.a", "shop.b"]));
    running.streaming().await;
    pair.src
        .batch_execute("INSERT INTO shop.b VALUES (1, 'one')")
        .await
        .unwrap();
    pair.caught_up().await;
    running.stop().await.unwrap();

    // Changes to `b` wait in the slot (the publication still carries it) when `b` leaves the
    // mapping.
    pair.src
        .batch_execute(
            "INSERT INTO shop.b VALUES (2, 'two'); UPDATE shop.a SET v = 'while out' WHERE id = 1;",
        )
        .await
        .unwrap();
    let running = start(pair.pipeline(&["shop.a"]));
    running.streaming().await;
    pair.src
        .batch_execute(
            "INSERT INTO shop.b VALUES (3, 'three'); UPDATE shop.a SET v = 'later' WHERE id = 2;",
        )
        .await
        .unwrap();
    // Before the fix: "shop.b is published but not in the pipeline's table mapping".
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.a", "id").await,
        rows(&pair.src, "shop.a", "id").await
    );
    assert_eq!(rows(&pair.dst, "shop.b", "id").await, ["(1,one)"]);
    running.stop().await.unwrap();

    // Back in the mapping, `b` is copied again.
    let running = start(pair.pipeline(&["shop.a", "shop.b"]));
    running.streaming().await;
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.b", "id").await,
        ["(1,one)", "(2,two)", "(3,three)"]
    );
    running.stop().await.unwrap();
}
