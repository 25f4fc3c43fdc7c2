//! The write-ownership flip on a running stack (`POST /admin/migrations/{capability}/...`,
//! what `fig migrate` calls): under load through three routers, writes move between the
//! monolith and the services and back, and nothing a client was told is written gets lost or
//! doubled; a flip that cannot finish gives the writes back.

mod load;
mod stack;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{Client, count_in, eventually};
use load::Log;
use router::migrate::Settings;
use router::routes::WriteOwner;
use serde_json::json;
use stack::{PATIENCE, Stack, fixture};

/// Waits until the clients had `more` further writes acknowledged, so every phase runs under
/// load.
async fn more_writes(log: &Log, more: u64) {
    let goal = log.acknowledged.load(Ordering::Relaxed) + more;
    eventually(PATIENCE, "the load to go on", || async {
        (log.acknowledged.load(Ordering::Relaxed) >= goal).then_some(())
    })
    .await;
}

/// Waits until the monolith's outbox has delivered what the orders owe (wishlist removals, stock
/// confirmations and releases).
async fn outbox_drained(monolith_db: &str) {
    eventually(PATIENCE, "the outbox to drain", || async {
        (count_in(monolith_db, "SELECT count(*) AS n FROM orders.outbox") == 0).then_some(())
    })
    .await;
}

/// The side a flip in `direction` takes the writes from.
fn old_owner(direction: &str) -> WriteOwner {
    if direction == "cutover" {
        WriteOwner::Legacy
    } else {
        WriteOwner::Extracted
    }
}

fn other(side: WriteOwner) -> WriteOwner {
    match side {
        WriteOwner::Legacy => WriteOwner::Extracted,
        WriteOwner::Extracted => WriteOwner::Legacy,
    }
}

/// `sql`'s single text column, every row.
fn texts(url: &str, sql: &str) -> Vec<String> {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct T {
        #[diesel(sql_type = diesel::sql_types::Text)]
        t: String,
    }
    let mut conn = diesel::PgConnection::establish(url).unwrap();
    diesel::sql_query(sql)
        .load::<T>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|r| r.t)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_flip_both_ways_under_load_through_three_routers_losing_and_doubling_nothing() {
    let stack = Stack::spawn(Settings {
        catch_up: Duration::from_secs(5),
        ..Settings::default()
    })
    .await;
    let fixture = Arc::new(fixture(&stack.front(0)).await);
    let log = Arc::new(Log::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = load::clients(&stack, 6, &fixture, &log, &stop);
    clients.push(tokio::spawn(load::direct(
        [
            Client::new(&stack.monolith.base),
            Client::new(&stack.catalog.base),
        ],
        log.clone(),
        stop.clone(),
    )));

    let flips = [
        ("wishlist", "cutover"),
        ("catalog", "cutover"),
        ("wishlist", "rollback"),
        ("catalog", "rollback"),
        ("catalog", "cutover"),
        ("wishlist", "cutover"),
    ];
    let mut holds = Vec::new();
    for (i, (capability, direction)) in flips.into_iter().enumerate() {
        more_writes(&log, 40).await;
        let (status, answer) = stack.flip(i, capability, direction).await;
        assert_eq!(status, 200, "{capability} {direction}: {answer}");
        assert_eq!(answer["flip"]["outcome"], "done", "{answer}");
        holds.push(answer["flip"]["hold_ms"].as_f64().unwrap());
        // Exactly one side owns the writes, the new one; the old one refuses them on its own
        // URL too.
        let old = old_owner(direction);
        assert!(
            stack.admits(capability, other(old)),
            "{capability} {direction}"
        );
        assert!(!stack.admits(capability, old), "{capability} {direction}");
        let old_url = match (capability, old) {
            (_, WriteOwner::Legacy) => stack.monolith.base.clone(),
            ("catalog", WriteOwner::Extracted) => stack.catalog.base.clone(),
            (_, WriteOwner::Extracted) => stack.wishlist.base.clone(),
        };
        let refused = match capability {
            "catalog" => {
                Client::new(&old_url)
                    .post("/catalog/artists", json!({"name": "refused"}))
                    .await
            }
            _ => {
                Client::new(&old_url)
                    .put(&format!(
                        "/wishlists/{}/items/{}",
                        fixture.adders[0], fixture.albums[1]
                    ))
                    .await
            }
        };
        refused.assert_error(503, "not_write_owner", None);
        let state = stack.status((i + 1) % 3, capability).await;
        assert_eq!(state["owner"], other(old).as_str(), "{state}");
        assert_eq!(
            state["phase"],
            if direction == "cutover" {
                "cutover"
            } else {
                "monolith"
            }
        );
        assert_eq!(state["flips"][0]["direction"], direction, "{state}");
    }
    more_writes(&log, 40).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let unexpected = log.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "answers outside the contract: {unexpected:#?}"
    );
    eprintln!(
        "flip test: {} writes acknowledged, refusals {:?}, holds (ms) {holds:?}",
        log.acknowledged.load(Ordering::Relaxed),
        log.refused.lock().unwrap()
    );

    // What the orders owe is delivered: wishlist removals and stock confirmations.
    let monolith_db = stack.monolith.db.url().to_string();
    outbox_drained(&monolith_db).await;

    // Both capabilities end with the services owning them; both sides hold the same rows.
    for capability in ["catalog", "wishlist"] {
        let report = stack.verify(capability, WriteOwner::Extracted).await;
        assert!(report.equal(), "{capability}: {report:?}");
    }

    // Every acknowledged artist exactly once, on both sides (and none twice).
    let acknowledged = log.artists.lock().unwrap().clone();
    for side in [WriteOwner::Legacy, WriteOwner::Extracted] {
        let url = stack.database("catalog", side);
        let names = texts(&url, "SELECT name AS t FROM catalog.artists");
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        for n in &names {
            *counts.entry(n).or_default() += 1;
        }
        let doubled: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
        assert!(doubled.is_empty(), "{side:?}: twice: {doubled:?}");
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|a| !counts.contains_key(a.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "{side:?}: lost {} artists: {lost:?}",
            lost.len()
        );
    }
    // Every acknowledged wish of a customer who never buys, on both sides.
    let wishes = log.wishes.lock().unwrap().clone();
    for side in [WriteOwner::Legacy, WriteOwner::Extracted] {
        let url = stack.database("wishlist", side);
        let rows = texts(
            &url,
            "SELECT customer_id || ',' || album_id AS t FROM wishlist.items",
        );
        for (customer, album) in &wishes {
            assert!(
                rows.contains(&format!("{customer},{album}")),
                "{side:?}: the wish {customer},{album} is lost"
            );
        }
    }
    // A buyer who ordered the album they wished for no longer wishes for it, on either side
    // (removed locally or through the outbox, whoever owned the wishlists then).
    let wished = fixture.albums[0];
    for side in [WriteOwner::Legacy, WriteOwner::Extracted] {
        let url = stack.database("wishlist", side);
        for buyer in &fixture.buyers {
            let ordered_it = count_in(
                &monolith_db,
                &format!(
                    "SELECT count(*) AS n FROM orders.orders o JOIN orders.order_lines l \
                     ON l.order_id = o.id WHERE o.customer_id = {buyer} AND l.album_id = {wished}"
                ),
            ) > 0;
            let still = count_in(
                &url,
                &format!(
                    "SELECT count(*) AS n FROM wishlist.items \
                     WHERE customer_id = {buyer} AND album_id = {wished}"
                ),
            );
            assert_eq!(still, i64::from(!ordered_it), "{side:?}: buyer {buyer}");
        }
    }
    // Every acknowledged order is placed once, and took its stock exactly once: what the
    // albums lost is what the placed orders bought, on both sides.
    let orders = log.orders.lock().unwrap().clone();
    for (id, _) in &orders {
        let status = texts(
            &monolith_db,
            &format!("SELECT status AS t FROM orders.orders WHERE id = {id}"),
        );
        assert_eq!(status, vec!["placed".to_string()], "order {id}");
    }
    for side in [WriteOwner::Legacy, WriteOwner::Extracted] {
        let url = stack.database("catalog", side);
        for album in &fixture.albums {
            let stock = count_in(
                &url,
                &format!("SELECT stock::bigint AS n FROM catalog.albums WHERE id = {album}"),
            );
            let bought = count_in(
                &monolith_db,
                &format!(
                    "SELECT coalesce(sum(l.quantity), 0)::bigint AS n FROM orders.order_lines l \
                     JOIN orders.orders o ON o.id = l.order_id \
                     WHERE l.album_id = {album} AND o.status = 'placed'"
                ),
            );
            assert_eq!(stock + bought, fixture.stock, "{side:?}: album {album}");
            assert!(stock >= 0);
        }
    }
}

/// After a flip that failed: the writes are the monolith's again, everywhere, and go on.
async fn back_with_the_monolith(stack: &Stack, answer: &serde_json::Value, step: &str) {
    assert_eq!(answer["error"]["code"], "flip_undone", "{answer}");
    assert_eq!(answer["error"]["field"], step, "{answer}");
    assert_eq!(answer["flip"]["outcome"], "undone", "{answer}");
    assert!(stack.admits("catalog", WriteOwner::Legacy));
    assert!(!stack.admits("catalog", WriteOwner::Extracted));
    let state = stack.status(1, "catalog").await;
    assert_eq!(
        (state["owner"].as_str(), state["held"].as_bool()),
        (Some("legacy"), Some(false)),
        "{state}"
    );
    // No stream back was left behind to hold the service's WAL.
    let reverse = stack.movable("catalog").stream_while(WriteOwner::Extracted);
    let slots = count_in(
        stack.catalog.db.url(),
        &format!(
            "SELECT count(*) AS n FROM pg_replication_slots WHERE slot_name = '{}'",
            reverse.slot()
        ),
    );
    assert_eq!(slots, 0);
    let name = format!("After the undo at {step}");
    let created = stack
        .front(2)
        .post("/catalog/artists", json!({"name": name}))
        .await;
    created.ok(201);
    assert_eq!(
        count_in(
            stack.monolith.db.url(),
            &format!("SELECT count(*) AS n FROM catalog.artists WHERE name = '{name}'")
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flip_whose_stream_cannot_catch_up_in_time_gives_the_writes_back() {
    let stack = Stack::spawn(Settings {
        catch_up: Duration::from_millis(300),
        streams_within: Duration::from_millis(500),
        // Time to stop the stream between the flip's checks and its catch-up.
        step_pause: Duration::from_secs(1),
        ..Settings::default()
    })
    .await;
    stack.front(0).create_artist("Before").await;
    // The stream runs when the flip checks it, and stops before the cut: nothing carries the
    // monolith's last writes to the service.
    let stop_the_stream = async {
        eventually(PATIENCE, "the flip to prepare the stream back", || async {
            let state = stack.status(1, "catalog").await;
            (state["flips"][0]["step"] == "reverse_ready").then_some(())
        })
        .await;
        stack.unfollow().await;
    };
    let started = Instant::now();
    let ((status, answer), ()) = tokio::join!(stack.flip(0, "catalog", "cutover"), stop_the_stream);
    assert_eq!(status, 409, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the wait is bounded"
    );
    back_with_the_monolith(&stack, &answer, "caught_up").await;

    // No stream at all: refused before anything changes.
    let (status, answer) = stack.flip(1, "catalog", "cutover").await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["flip"]["cut_lsn"],
        serde_json::Value::Null,
        "{answer}"
    );
    back_with_the_monolith(&stack, &answer, "reverse_ready").await;

    // Once the stream runs again, the same command goes through.
    stack.follow().await;
    let (status, answer) = stack.flip(2, "catalog", "cutover").await;
    assert_eq!(
        (status, &answer["flip"]["outcome"]),
        (200, &json!("done")),
        "{answer}"
    );
    assert!(stack.admits("catalog", WriteOwner::Extracted));
    let report = stack.verify("catalog", WriteOwner::Extracted).await;
    assert!(report.equal(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flip_to_a_new_owner_that_is_down_gives_the_writes_back() {
    let stack = Stack::spawn(Settings::default()).await;
    stack.catalog.stop().await;
    let (status, answer) = stack.flip(2, "catalog", "cutover").await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("down"),
        "{answer}"
    );
    back_with_the_monolith(&stack, &answer, "ready").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flips_back_to_back_each_find_their_stream_and_lose_nothing() {
    let stack = Stack::spawn(Settings::default()).await;
    let front = stack.front(0);
    // No pause between flips: the stream a flip waits for is the one the previous flip
    // prepared, started (and the one before it retired) while this flip already holds.
    for (round, direction) in ["cutover", "rollback", "cutover", "rollback"]
        .iter()
        .enumerate()
    {
        front
            .post(
                "/catalog/artists",
                json!({"name": format!("before {round}")}),
            )
            .await
            .ok(201);
        let (status, answer) = stack.flip(round, "catalog", direction).await;
        assert_eq!(
            (status, &answer["flip"]["outcome"]),
            (200, &json!("done")),
            "{direction} {round}: {answer}"
        );
    }
    front
        .post("/catalog/artists", json!({"name": "after"}))
        .await
        .ok(201);
    let report = stack.verify("catalog", WriteOwner::Legacy).await;
    assert!(report.equal(), "{report:?}");
    assert_eq!(
        count_in(
            &stack.database("catalog", WriteOwner::Extracted),
            "SELECT count(*) AS n FROM catalog.artists"
        ),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reporting_database_counts_each_change_once_across_flips() {
    let stack = Stack::spawn_with_reporting(Settings {
        catch_up: Duration::from_secs(5),
        ..Settings::default()
    })
    .await;
    let fixture = Arc::new(fixture(&stack.front(0)).await);
    let log = Arc::new(Log::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load::clients(&stack, 4, &fixture, &log, &stop);
    // During the flips too, at every moment the reports agree with the raw rows they have
    // received (one snapshot for both): a switch never shows a doubled or missing wish.
    let reporting = stack.reporting.as_ref().unwrap().db.url().to_string();
    let checker = tokio::task::spawn_blocking({
        let (reporting, stop) = (reporting.clone(), stop.clone());
        move || {
            let mut checks = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let both = texts(
                    &reporting,
                    "WITH v AS (SELECT coalesce(string_agg(album_id || ':' || wishes, ',' \
                                ORDER BY album_id), '') AS s FROM reporting_v1.most_wished_albums), \
                          r AS (SELECT coalesce(string_agg(album_id || ':' || n, ',' \
                                ORDER BY album_id), '') AS s FROM (SELECT album_id, count(*) AS n \
                                FROM raw_wishlist.items GROUP BY 1) w) \
                     SELECT (v.s = r.s)::text AS t FROM v, r",
                );
                assert_eq!(both, ["true"], "check {checks}");
                checks += 1;
            }
            checks
        }
    });
    for (i, (capability, direction)) in [
        ("wishlist", "cutover"),
        ("catalog", "cutover"),
        ("wishlist", "rollback"),
        ("wishlist", "cutover"),
    ]
    .into_iter()
    .enumerate()
    {
        more_writes(&log, 30).await;
        let (status, answer) = stack.flip(i, capability, direction).await;
        assert_eq!(status, 200, "{capability} {direction}: {answer}");
        assert_eq!(answer["flip"]["outcome"], "done", "{answer}");
    }
    more_writes(&log, 30).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(
        checker.await.unwrap() > 10,
        "the reports were checked during the flips"
    );
    let unexpected = log.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    let monolith_db = stack.monolith.db.url().to_string();
    outbox_drained(&monolith_db).await;
    // Every feed has applied everything its source has.
    for feed in &stack.migrations.feeds {
        assert!(
            replication::ops::caught_up(feed, PATIENCE).await.unwrap(),
            "{}",
            feed.name
        );
    }
    // The raw copies equal the owners' tables, each row once: the wishlist service's wishes
    // (it owns them now), the monolith's orders.
    let wishes = "SELECT r::text AS t FROM (SELECT customer_id, album_id FROM {} ORDER BY 1, 2) r";
    assert_eq!(
        texts(&reporting, &wishes.replace("{}", "raw_wishlist.items")),
        texts(
            stack.wishlist.db.url(),
            &wishes.replace("{}", "wishlist.items")
        ),
    );
    // And the reports answer as the sources: wishes per album from the wishlist service, sales
    // from the monolith's orders.
    assert_eq!(
        texts(
            &reporting,
            "SELECT r::text AS t FROM (SELECT album_id, wishes FROM reporting_v1.most_wished_albums ORDER BY 1) r"
        ),
        texts(
            stack.wishlist.db.url(),
            "SELECT r::text AS t FROM (SELECT album_id, count(*) FROM wishlist.items GROUP BY 1 ORDER BY 1) r"
        ),
    );
    assert_eq!(
        texts(
            &reporting,
            "SELECT r::text AS t FROM (SELECT customer_id, orders, revenue_cents \
             FROM reporting_v1.customer_lifetime_value ORDER BY 1) r"
        ),
        texts(
            &monolith_db,
            "SELECT r::text AS t FROM (SELECT customer_id, count(*), sum(total_cents) \
             FROM orders.orders WHERE status = 'placed' GROUP BY 1 ORDER BY 1) r"
        ),
    );
    let sold = "SELECT sum(units)::text AS t FROM reporting_v1.sales_by_artist_day";
    assert_eq!(
        texts(&reporting, sold),
        texts(
            &monolith_db,
            "SELECT sum(l.quantity)::text AS t FROM orders.order_lines l \
             JOIN orders.orders o ON o.id = l.order_id WHERE o.status = 'placed'"
        ),
    );
}
