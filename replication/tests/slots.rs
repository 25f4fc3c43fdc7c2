//! The slot as the operator meets it: a slot that cannot continue is refused with what to do;
//! status, metrics and drop report and clean up.

mod support;

use std::time::{Duration, Instant};

use replication::error::PipelineError;
use support::{DEADLINE, Pair, rows, start};

const TABLE: &str = "CREATE TABLE items (id bigint PRIMARY KEY, note text);";

/// Runs the pipeline until it has applied what the source has now, then stops it.
async fn run_once(pair: &Pair, pipeline: &replication::config::Pipeline) {
    let running = start(pipeline.clone());
    running.streaming().await;
    pair.caught_up().await;
    running.stop().await.unwrap();
}

async fn run_expecting_error(pipeline: &replication::config::Pipeline) -> PipelineError {
    let running = start(pipeline.clone());
    tokio::time::timeout(DEADLINE, running.task)
        .await
        .expect("the pipeline gives up by itself")
        .unwrap()
        .expect_err("the pipeline refuses to start")
}

#[tokio::test]
async fn a_missing_or_recreated_slot_is_refused_rather_than_resumed() {
    let pair = Pair::new("slots", TABLE).await;
    let pipeline = pair.pipeline(&["public.items"]);
    let slot = pipeline.slot();
    pair.src
        .batch_execute("INSERT INTO items VALUES (1, 'one')")
        .await
        .unwrap();
    run_once(&pair, &pipeline).await;

    pair.src
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    let error = run_expecting_error(&pipeline).await;
    assert!(
        matches!(error, PipelineError::SlotMissing { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("fig replication drop"),
        "{error}"
    );

    // Someone recreates it: it starts after changes the target never saw.
    pair.src
        .batch_execute("INSERT INTO items VALUES (2, 'lost')")
        .await
        .unwrap();
    pair.src
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .unwrap();
    let error = run_expecting_error(&pipeline).await;
    assert!(matches!(error, PipelineError::SlotAhead { .. }), "{error}");

    // The documented way out: drop, run again, and the copy brings everything.
    replication::ops::drop(&pipeline).await.unwrap();
    run_once(&pair, &pipeline).await;
    assert_eq!(
        rows(&pair.dst, "items", "id").await,
        rows(&pair.src, "items", "id").await
    );
}

#[tokio::test]
async fn an_invalidated_slot_fails_fast_saying_what_to_do() {
    // Its own cluster: the WAL limit below would invalidate other tests' slots.
    let cluster = localpg::Cluster::start(localpg::ClusterOptions::default()).unwrap();
    for db in ["src", "dst"] {
        cluster.create_database(db).unwrap();
    }
    let src = support::client(&cluster.url("src")).await;
    let dst = support::client(&cluster.url("dst")).await;
    src.batch_execute(TABLE).await.unwrap();
    dst.batch_execute(TABLE).await.unwrap();
    let mut pipeline = replication::config::parse(
        &format!(
            "[[pipelines]]\nname = \"lost\"\nsource = \"{}\"\ntarget = \"{}\"\n[[pipelines.tables]]\nsource = \"public.items\"\n",
            cluster.url("src"),
            cluster.url("dst")
        ),
        |_| None,
    )
    .unwrap()
    .remove(0);
    pipeline.batch_rows = 1000;
    let running = start(pipeline.clone());
    running.streaming().await;
    running.stop().await.unwrap();

    for sql in [
        "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'",
        "SELECT pg_reload_conf()",
    ] {
        src.batch_execute(sql).await.unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        for sql in [
            "INSERT INTO items SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g
               ON CONFLICT (id) DO UPDATE SET note = excluded.note",
            "SELECT pg_switch_wal()",
            "CHECKPOINT",
        ] {
            src.batch_execute(sql).await.unwrap();
        }
        let status: Option<String> = src
            .query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'fig_lost'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if status.as_deref() == Some("lost") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was never invalidated ({status:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let error = run_expecting_error(&pipeline).await;
    assert!(
        matches!(error, PipelineError::SlotInvalidated { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("fig replication drop"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
    drop((src, dst));
    cluster.stop().unwrap();
}

#[tokio::test]
async fn status_metrics_and_drop_report_and_clean_up() {
    let pair = Pair::new("ops", TABLE).await;
    let pipeline = pair.pipeline(&["public.items"]);
    // 300 rows for the initial copy, analyzed so that the planner's estimate is known.
    pair.src
        .batch_execute(
            "INSERT INTO items SELECT g, 'c' FROM generate_series(100001, 100300) g; ANALYZE items",
        )
        .await
        .unwrap();
    let running = start(pipeline.clone());
    running.streaming().await;
    pair.src
        .batch_execute("INSERT INTO items SELECT g, 'n' FROM generate_series(1, 500) g")
        .await
        .unwrap();
    pair.caught_up().await;

    let status =
        replication::ops::status(std::slice::from_ref(&pipeline), Duration::from_millis(200))
            .await
            .unwrap();
    let line = status[0].to_string();
    assert_eq!(status[0].state, "streaming", "{line}");
    assert!(status[0].slot_active, "{line}");
    assert_eq!(status[0].rows_applied, Some(500), "{line}");
    assert!(status[0].retained_wal_bytes.is_some(), "{line}");
    assert!(status[0].lag_bytes.is_some_and(|b| b >= 0), "{line}");

    let text = replication::metrics::render(std::slice::from_ref(&running.metrics));
    let name = &pipeline.name;
    assert!(
        text.contains(&format!(
            "fig_replication_up{{pipeline=\"{name}\",phase=\"streaming\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("fig_replication_lag_bytes{{pipeline=\"{name}\"}}")),
        "{text}"
    );
    for metric in [
        "fig_replication_copy_rows_total",
        "fig_replication_copy_rows_estimated",
    ] {
        assert!(
            text.contains(&format!("{metric}{{pipeline=\"{name}\"}} 300\n")),
            "{metric}: {text}"
        );
    }

    // Drop refuses while the pipeline runs, then removes everything once it is stopped.
    assert!(matches!(
        replication::ops::drop(&pipeline).await,
        Err(PipelineError::SlotInUse { .. })
    ));
    running.stop().await.unwrap();
    replication::ops::drop(&pipeline).await.unwrap();
    let left: (i64, i64, i64) = {
        let slots = pair
            .src
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&pipeline.slot()],
            )
            .await
            .unwrap()
            .get(0);
        let publications = pair
            .src
            .query_one(
                "SELECT count(*) FROM pg_publication WHERE pubname = $1",
                &[&pipeline.publication()],
            )
            .await
            .unwrap()
            .get(0);
        let states = pair
            .dst
            .query_one(
                "SELECT count(*) FROM fig_replication.pipelines WHERE name = $1",
                &[name],
            )
            .await
            .unwrap()
            .get(0);
        (slots, publications, states)
    };
    assert_eq!(left, (0, 0, 0));
    let status = replication::ops::status(std::slice::from_ref(&pipeline), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(status[0].state, "not started");
}
