//! `X-Fig-Db-Position` on every answer: the owner's WAL insert position read after the answer, a
//! replica's applied position read from its pipeline's row (none without one).

use std::time::Duration;

use e2e::{
    CatalogService, Client, Monolith, Reply, Stack, WishlistService, WriteMode, closed_port_url,
    count_in, eventually,
};
use monolith::{Backend, Integrations};
use platform::parallel_run::{DB_POSITION, DRY_RUN, Lsn};
use reqwest::Method;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(10);

/// The database's WAL insert position, read directly.
fn wal_insert(database_url: &str) -> Lsn {
    let n = count_in(
        database_url,
        "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint AS n",
    );
    Lsn(n as u64)
}

#[track_caller]
fn position(reply: &Reply) -> Lsn {
    reply
        .position()
        .unwrap_or_else(|| panic!("no {DB_POSITION} on {}: {}", reply.status, reply.body))
}

/// On an owner: reads, writes, dry runs and errors all carry the position; it moves past a write
/// (read after the commit), the database is at or past it, and later answers are not behind it.
async fn owner_positions(
    api: &Client,
    database_url: &str,
    read: &str,
    write: (Method, &str, Option<Value>),
    bad_write: Option<Value>,
) {
    let (method, path, body) = write;
    let before = position(&api.get(read).await);
    let written = api.send(method.clone(), path, body.as_ref(), &[]).await;
    assert!(written.status.is_success(), "{path}: {}", written.body);
    let after_write = position(&written);
    assert!(
        after_write > before,
        "{path}: the write's answer reports {after_write}, not past the read before it ({before})"
    );
    assert!(wal_insert(database_url) >= after_write);
    let later = position(&api.get(read).await);
    assert!(later >= after_write, "{read}: {later} < {after_write}");
    let dry = api
        .send(method.clone(), path, body.as_ref(), &[(DRY_RUN, "1")])
        .await;
    assert!(position(&dry) >= later, "a dry run's answer");
    let mut errors = vec![
        api.get("/no/such/path").await,
        api.send(Method::POST, read, None, &[]).await,
        api.send(method.clone(), path, body.as_ref(), &[(DRY_RUN, "nope")])
            .await,
    ];
    if let Some(bad) = bad_write {
        errors.push(api.send(method, path, Some(&bad), &[]).await);
    }
    for error in &errors {
        assert!(error.status.is_client_error(), "{}", error.body);
        assert!(position(error) >= later, "{}: {}", error.status, error.body);
    }
}

#[tokio::test]
async fn owners_report_their_wal_position_after_each_answer() {
    let m = Monolith::spawn().await;
    let api = m.client();
    let customer = api.create_customer("pos@example.com").await;
    owner_positions(
        &api,
        m.db.url(),
        &format!("/customers/{customer}"),
        (
            Method::POST,
            "/customers",
            Some(json!({"name": "P", "email": "p2@example.com"})),
        ),
        Some(json!({"name": "P"})),
    )
    .await;
    // The monolith owns its catalog while it takes stock itself.
    let album = api.album("POS-1", 2).await;
    owner_positions(
        &api,
        m.db.url(),
        &format!("/catalog/albums/{album}"),
        (
            Method::PATCH,
            &format!("/catalog/albums/{album}"),
            Some(json!({"stock": 3})),
        ),
        Some(json!({"stock": -1})),
    )
    .await;

    let s = Stack::spawn().await;
    owner_positions(
        &s.catalog.client(),
        s.catalog.db.url(),
        "/catalog/artists",
        (
            Method::POST,
            "/catalog/artists",
            Some(json!({"name": "Owned"})),
        ),
        Some(json!({"name": ""})),
    )
    .await;
    let customer = s.monolith.client().create_customer("w@example.com").await;
    let album = s.catalog.client().album("POS-2", 1).await;
    owner_positions(
        &s.wishlist.client(),
        s.wishlist.db.url(),
        &format!("/wishlists/{customer}"),
        (
            Method::PUT,
            &format!("/wishlists/{customer}/items/{album}"),
            None,
        ),
        None,
    )
    .await;
}

/// The part of the replication engine's `fig_replication.pipelines` a side reads.
fn create_pipelines(execute: impl Fn(&str) -> usize) {
    execute("CREATE SCHEMA fig_replication");
    execute(
        "CREATE TABLE fig_replication.pipelines (name text PRIMARY KEY, slot text NOT NULL, \
         phase text NOT NULL, applied_lsn pg_lsn NOT NULL DEFAULT '0/0')",
    );
}

fn record(execute: impl Fn(&str) -> usize, pipeline: &str, lsn: &str) {
    execute(&format!(
        "INSERT INTO fig_replication.pipelines (name, slot, phase, applied_lsn) \
         VALUES ('{pipeline}', 'fig_{pipeline}', 'streaming', '{lsn}') \
         ON CONFLICT (name) DO UPDATE SET applied_lsn = excluded.applied_lsn"
    ));
}

/// Polls `path` until its answer reports `expected` (a replica reuses a position it read for a
/// few milliseconds).
async fn reports(api: &Client, path: &str, expected: &str) {
    let expected: Lsn = expected.parse().unwrap();
    eventually(
        PATIENCE,
        &format!("{path} to report {expected}"),
        || async { (api.get(path).await.position() == Some(expected)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_replica_reports_the_applied_position_of_the_pipeline_feeding_it() {
    let catalog = CatalogService::spawn(WriteMode::Replica).await;
    let api = catalog.client();
    // Not fed yet: no table, then no row for its pipeline.
    let unfed = api.get("/catalog/artists").await;
    assert_eq!(unfed.ok(200)["items"], json!([]));
    assert_eq!(unfed.header(DB_POSITION), None);
    create_pipelines(|sql| catalog.execute(sql));
    record(|sql| catalog.execute(sql), "wishlist", "7/7");
    for _ in 0..3 {
        assert_eq!(api.get("/catalog/artists").await.header(DB_POSITION), None);
    }

    record(|sql| catalog.execute(sql), "catalog", "5/ABCDEF01");
    reports(&api, "/catalog/artists", "5/ABCDEF01").await;
    let expected = Some("5/ABCDEF01");
    let answers = [
        api.get("/catalog/albums/987654").await,
        api.get("/no/such/path").await,
        api.get("/healthz").await,
        api.get("/status").await,
        api.post("/catalog/artists", json!({"name": "x"})).await,
        api.send(
            Method::POST,
            "/catalog/artists",
            Some(&json!({"name": "x"})),
            &[(DRY_RUN, "1")],
        )
        .await,
        api.send(Method::GET, "/catalog/artists", None, &[(DRY_RUN, "no")])
            .await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses, [404, 404, 200, 200, 503, 201, 400]);
    for answer in &answers {
        assert_eq!(
            answer.header(DB_POSITION),
            expected,
            "{}: {}",
            answer.status,
            answer.body
        );
    }

    // The engine moves it; the answers follow.
    record(|sql| catalog.execute(sql), "catalog", "6/0");
    reports(&api, "/catalog/artists", "6/0").await;

    // The pipeline's name is configurable: a wishlist replica fed by `wl_fed`.
    let wishlist = WishlistService::spawn_fed_by(
        WriteMode::Replica,
        &closed_port_url(),
        &closed_port_url(),
        Duration::from_millis(200),
        "wl_fed",
    )
    .await;
    create_pipelines(|sql| wishlist.execute(sql));
    record(|sql| wishlist.execute(sql), "wishlist", "1/1");
    let api = wishlist.client();
    assert_eq!(api.get("/wishlists/1").await.header(DB_POSITION), None);
    record(|sql| wishlist.execute(sql), "wl_fed", "2/2");
    reports(&api, "/wishlists/1", "2/2").await;
}

#[tokio::test]
async fn after_cutover_the_monolith_reports_the_reverse_pipelines_for_extracted_capabilities() {
    // With remote stock and wishlists, the catalog and wishlist services own those writes; the
    // monolith's copies are fed back by `catalog_reverse` and `wishlist_reverse`.
    let cut_over = Monolith::spawn_with(monolith::Options {
        workers: 2,
        integrations: Integrations {
            stock: Backend::Remote {
                base_url: closed_port_url(),
            },
            wishlist: Backend::Remote {
                base_url: closed_port_url(),
            },
            ..Integrations::default()
        },
    })
    .await;
    let local = Monolith::spawn().await;
    for m in [&cut_over, &local] {
        create_pipelines(|sql| m.execute(sql));
        record(|sql| m.execute(sql), "catalog_reverse", "FFFF0000/10");
        record(|sql| m.execute(sql), "wishlist_reverse", "FFFF0000/20");
    }
    let api = cut_over.client();
    let customer = api.create_customer("cut@example.com").await;
    reports(&api, "/catalog/artists", "FFFF0000/10").await;
    assert_eq!(
        api.get("/catalog/albums/987654").await.header(DB_POSITION),
        Some("FFFF0000/10")
    );
    reports(&api, &format!("/wishlists/{customer}"), "FFFF0000/20").await;
    // Customers never moved: the monolith's own position, whatever the rows say.
    let own = position(&api.get(&format!("/customers/{customer}")).await);
    assert!(own <= wal_insert(cut_over.db.url()));
    assert!(![Lsn(0xFFFF_0000_0000_0010), Lsn(0xFFFF_0000_0000_0020)].contains(&own));

    // A monolith that still takes stock and clears wishlists itself owns both: its own position.
    let api = local.client();
    let customer = api.create_customer("local@example.com").await;
    for path in [
        "/catalog/artists".to_string(),
        format!("/wishlists/{customer}"),
    ] {
        let own = position(&api.get(&path).await);
        assert!(own <= wal_insert(local.db.url()), "{path}");
        assert!(own < Lsn(0xFFFF_0000_0000_0010), "{path}: {own}");
    }
}
