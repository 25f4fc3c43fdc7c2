//! Pipelines end to end against real PostgreSQL: initial copy, streaming every kind of change,
//! TOAST, types, drift, loops.

mod support;

use support::{Pair, rows, start};

const ALBUMS: &str = "
CREATE SCHEMA shop;
CREATE TABLE shop.albums (
    id        bigint PRIMARY KEY,
    title     text NOT NULL,
    price     numeric(10, 2),
    tags      text[],
    extra     jsonb,
    cover     bytea,
    released  timestamptz,
    in_stock  boolean,
    rating    double precision,
    notes     text
);";

#[tokio::test]
async fn copies_then_streams_every_kind_of_change() {
    let pair = Pair::new("kinds", ALBUMS).await;
    pair.src
        .batch_execute(
            "INSERT INTO shop.albums VALUES
               (1, 'Abbey Road', 19.99, '{rock,uk}', '{\"a\": [1, 2]}', '\\x00ff10', '1969-09-26 10:00+02', true, 4.5, NULL),
               (2, 'Tab\there\nnewline\\back', NULL, '{}', 'null', NULL, NULL, NULL, 'NaN', repeat('long ', 20000));",
        )
        .await
        .unwrap();
    let running = start(pair.pipeline(&["shop.albums"]));
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.albums", "id").await,
        rows(&pair.src, "shop.albums", "id").await,
        "after the copy"
    );

    pair.src
        .batch_execute(
            "INSERT INTO shop.albums (id, title, price, tags) VALUES (3, 'Kind of Blue', 9.5, '{jazz}');
             UPDATE shop.albums SET price = 21.00 WHERE id = 1;
             -- the TOASTed neighbour of this column is unchanged and must survive
             UPDATE shop.albums SET in_stock = false WHERE id = 2;
             UPDATE shop.albums SET id = 10 WHERE id = 3;
             DELETE FROM shop.albums WHERE id = 1;
             BEGIN; INSERT INTO shop.albums (id, title) SELECT g, 'bulk ' || g FROM generate_series(100, 1099) g; COMMIT;
             UPDATE shop.albums SET title = title || '!' WHERE id >= 100;
             DELETE FROM shop.albums WHERE id >= 600;",
        )
        .await
        .unwrap();
    pair.caught_up().await;
    let want = rows(&pair.src, "shop.albums", "id").await;
    assert_eq!(rows(&pair.dst, "shop.albums", "id").await, want);
    let toast: i32 = pair
        .dst
        .query_one("SELECT length(notes) FROM shop.albums WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(toast, 100_000, "the unchanged TOAST value is kept");

    pair.src.batch_execute("TRUNCATE shop.albums; INSERT INTO shop.albums (id, title) VALUES (7, 'after truncate');").await.unwrap();
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.albums", "id").await,
        ["(7,\"after truncate\",,,,,,,,)"]
    );
    running.stop().await.unwrap();
}
