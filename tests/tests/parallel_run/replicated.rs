//! The real replication engine feeding a replica catalog service from the monolith's database, as
//! `fig up` runs it: the replica reports the pipeline's applied position, and the router's
//! lag-aware re-check holds (once the replica reports a position at or past the one the owner
//! reported with a write, the replica's answer has that write).

use std::time::Duration;

use e2e::{CatalogService, Monolith, WriteMode, count_in, eventually};
use platform::parallel_run::Lsn;
use replication::config::{InitialCopy, Pipeline, Table};
use replication::metrics::PipelineMetrics;
use serde_json::json;
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(60);

fn pipeline(name: &str, source: &str, target: &str) -> Pipeline {
    Pipeline {
        name: name.to_string(),
        source: source.to_string(),
        target: target.to_string(),
        publication: None,
        slot: None,
        initial_copy: InitialCopy::Snapshot,
        skip_origins_of: Vec::new(),
        batch_rows: 5_000,
        retained_wal_warn_mib: 1_024,
        stream_after_kib: 4_096,
        max_streams: 16,
        tables: ["catalog.artists", "catalog.albums"]
            .iter()
            .map(|t| Table {
                source: t.to_string(),
                target: None,
                columns: None,
                rename: Default::default(),
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_a_replica_reports_the_owners_position_it_answers_with_the_owners_data() {
    let monolith = Monolith::spawn().await;
    let owner = monolith.client();
    let album = owner.album("REP-1", 5).await;
    let path = format!("/catalog/albums/{album}");
    // Slots and origins are cluster-wide, so the pipeline gets a name as unique as a database's;
    // the replica is told which pipeline feeds it.
    let name: String = monolith
        .db
        .name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let catalog = CatalogService::spawn_fed_by(
        catalog_service::Options {
            workers: 2,
            write_mode: WriteMode::Replica,
            ..catalog_service::Options::default()
        },
        &name,
    )
    .await;
    let replica = catalog.client();
    let feed = pipeline(&name, monolith.db.url(), catalog.db.url());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn({
        let feed = feed.clone();
        async move {
            let metrics = PipelineMetrics::new(&feed.name);
            replication::pipeline::run(&feed, stopped, metrics).await
        }
    });

    // Copied: the replica has the album, and reports where the copy left it.
    let copied = eventually(PATIENCE, "the replica to hold the copy", || async {
        let reply = replica.get(&path).await;
        (reply.status == 200 && reply.position().is_some()).then_some(reply)
    })
    .await;
    assert_eq!(copied.body, owner.get(&path).await.body);

    let mut last = copied.position().unwrap();
    for stock in [4, 3, 2] {
        let written = owner
            .patch(
                &path,
                json!({"stock": stock, "price": {"amount_cents": stock * 100, "currency": "USD"}}),
            )
            .await;
        let owner_at = written.position().expect("the owner's position");
        let seen = eventually(
            PATIENCE,
            "the replica to reach the owner's position",
            || async {
                let reply = replica.get(&path).await;
                let at = reply.position().expect("the replica's position");
                (at >= owner_at).then_some((reply, at))
            },
        )
        .await;
        let (reply, at) = seen;
        // The answer that reports the owner's position has the owner's write: equal, field for
        // field (`updated_at` is replicated as it was written).
        assert_eq!(reply.ok(200), &written.body, "stock {stock}");
        assert!(
            at >= last,
            "the replica's position went back: {at} < {last}"
        );
        last = at;
        // What it reports is the engine's recorded position, never ahead of it.
        let recorded = count_in(
            catalog.db.url(),
            &format!(
                "SELECT (applied_lsn - '0/0'::pg_lsn)::bigint AS n \
                 FROM fig_replication.pipelines WHERE name = '{name}'"
            ),
        );
        assert!(
            at <= Lsn(recorded as u64),
            "{at} is past the recorded {recorded}"
        );
    }

    let _ = stop.send(true);
    task.await
        .expect("the pipeline task")
        .expect("the pipeline stops cleanly");
    // The slot would keep the monolith's database from being dropped.
    replication::ops::drop(&feed)
        .await
        .expect("drop the pipeline");
}
