//! The replication side of a write-ownership flip against real PostgreSQL: a pipeline prepared
//! (slot and position) without running, and a cut marker the running pipeline records at once.

mod support;

use std::time::{Duration, Instant};

use replication::config::InitialCopy;
use replication::ops;
use support::{Pair, rows, start};

const ITEMS: &str = "
CREATE SCHEMA shop;
CREATE TABLE shop.items (id bigint PRIMARY KEY, label text NOT NULL);
-- Not carried by the pipelines: writes here only move the source's WAL on.
CREATE TABLE shop.other (id bigserial PRIMARY KEY, label text);";

#[tokio::test]
async fn a_prepared_pipeline_streams_exactly_what_commits_after_prepare() {
    let pair = Pair::new("prepare", ITEMS).await;
    pair.src
        .batch_execute("INSERT INTO shop.items VALUES (1, 'before'), (2, 'before')")
        .await
        .unwrap();
    let mut pipeline = pair.pipeline(&["shop.items"]);
    pipeline.initial_copy = InitialCopy::None;

    let at = ops::prepare(&pipeline).await.unwrap();
    assert_eq!(
        ops::prepare(&pipeline).await.unwrap(),
        at,
        "prepared again: the same slot and position"
    );
    let recorded: Vec<String> = support::texts(
        &pair.dst,
        "SELECT phase || ' ' || applied_lsn::text FROM fig_replication.pipelines",
    )
    .await;
    assert_eq!(
        recorded,
        [format!("streaming {}", replication::wire::format_lsn(at))]
    );

    // Committed while nothing runs: the slot made by prepare keeps them.
    pair.src
        .batch_execute(
            "INSERT INTO shop.items VALUES (3, 'after'), (4, 'after');
             UPDATE shop.items SET label = 'after, updated' WHERE id = 3;
             DELETE FROM shop.items WHERE id = 4;
             INSERT INTO shop.other (label) VALUES ('elsewhere');",
        )
        .await
        .unwrap();
    let running = start(pipeline);
    running.streaming().await;
    pair.src
        .batch_execute("INSERT INTO shop.items VALUES (5, 'while running')")
        .await
        .unwrap();
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.items", "id").await,
        ["(3,\"after, updated\")", "(5,\"while running\")"],
        "the changes after prepare, and none of the rows before it"
    );
    running.stop().await.unwrap();
}

/// Rounds of cut and wait. Without the marker handling, an idle pipeline records a position
/// only once a second (a keepalive at least a second after its last record, or the housekeeping
/// tick): one round may happen to be answered within the wait, but the round after it then
/// finds the last record fresh and the next tick a second away.
const CUTS: usize = 3;
/// Well under the idle pipeline's second.
const CUT_WAIT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn an_idle_pipeline_records_a_cut_marker_at_once() {
    let pair = Pair::new("cut", ITEMS).await;
    let pipeline = pair.pipeline(&["shop.items"]);
    let running = start(pipeline.clone());
    running.streaming().await;
    pair.caught_up().await;

    for round in 0..CUTS as i64 {
        pair.src
            .batch_execute(&format!(
                "INSERT INTO shop.other (label) SELECT 'elsewhere' FROM generate_series(1, 10);
                 INSERT INTO shop.items VALUES ({round}, 'before cut {round}');"
            ))
            .await
            .unwrap();
        let marker = ops::emit_cut(pair.source.url()).await.unwrap();
        let started = Instant::now();
        // The walsender decodes only flushed WAL: left to the WAL writer (the test cluster
        // commits asynchronously), the marker would wait up to wal_writer_delay.
        let flushed: bool = pair
            .src
            .query_one(
                "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
                &[&replication::wire::format_lsn(marker)],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            flushed,
            "round {round}: the marker is flushed when emit_cut returns"
        );
        let reached = ops::wait_applied(&pipeline, marker, CUT_WAIT)
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(
            reached,
            "round {round}: the target did not record {} within {CUT_WAIT:?}",
            replication::wire::format_lsn(marker)
        );
        eprintln!("round {round}: cut recorded after {took:?}");
        let carried = support::texts(
            &pair.dst,
            &format!("SELECT label FROM shop.items WHERE id = {round}"),
        )
        .await;
        assert_eq!(
            carried,
            [format!("before cut {round}")],
            "round {round}: applied before the cut was recorded"
        );
    }
    assert_eq!(
        rows(&pair.dst, "shop.items", "id").await,
        rows(&pair.src, "shop.items", "id").await
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn waiting_for_a_cut_answers_false_at_once_when_nothing_streams() {
    let pair = Pair::new("cutidle", ITEMS).await;
    let marker = ops::emit_cut(pair.source.url()).await.unwrap();
    let started = Instant::now();
    let reached = ops::wait_applied(&pair.pipeline(&["shop.items"]), marker, support::DEADLINE)
        .await
        .unwrap();
    assert!(!reached, "no pipeline ever ran");
    assert!(
        started.elapsed() < support::DEADLINE / 2,
        "an answer, not a wait until the deadline"
    );
}
