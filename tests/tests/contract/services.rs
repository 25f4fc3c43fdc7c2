//! What only the extracted services do: refuse writes as a replica, report their write mode, and
//! keep wishlist reads working (degraded) when the catalog is down or slow, with exactly one
//! catalog call per read.
//!
//! Upstreams are real services except where an upstream has to misbehave (be slow) or be
//! observed (count calls): then a fake catalog, a tiny actix server on port 0, stands in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use e2e::{
    CatalogService, Monolith, Running, Stack, WishlistService, WriteMode, bind, closed_port_url,
};
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Write modes
// ---------------------------------------------------------------------------------------------

/// What a replica's writes could change, as one comparable value.
fn catalog_state(catalog: &CatalogService) -> Vec<i64> {
    [
        "SELECT count(*) AS n FROM catalog.artists",
        "SELECT count(*) AS n FROM catalog.albums",
        "SELECT coalesce(sum(stock), 0)::bigint AS n FROM catalog.albums",
        "SELECT coalesce(sum(price_cents), 0)::bigint AS n FROM catalog.albums",
        "SELECT (extract(epoch FROM max(updated_at)) * 1000000)::bigint AS n FROM catalog.albums",
        "SELECT count(*) AS n FROM catalog.reservations",
        "SELECT count(*) AS n FROM catalog.reservations WHERE status = 'reserved'",
        "SELECT count(*) AS n FROM catalog.reservation_lines",
    ]
    .iter()
    .map(|sql| catalog.count(sql))
    .collect()
}

#[tokio::test]
async fn a_replica_catalog_refuses_every_write_and_still_serves_reads() {
    let catalog = CatalogService::spawn(WriteMode::Replica).await;
    // Replication fills a replica; here the rows go straight into its database.
    catalog
        .execute("INSERT INTO catalog.artists (id, name, country) VALUES (1, 'Replicated', 'GB')");
    catalog.execute(
        "INSERT INTO catalog.albums (id, sku, title, artist_id, genre, release_year, price_cents, \
         currency, stock) VALUES (1, 'R-1', 'Replicated Album', 1, 'rock', 2000, 1000, 'USD', 5)",
    );
    catalog.execute(
        "INSERT INTO catalog.reservations (id, key, status, request, expires_at) \
         VALUES (1, 'held', 'reserved', '[{\"album_id\":1,\"quantity\":2}]', now() + interval '1 hour')",
    );
    catalog.execute(
        "INSERT INTO catalog.reservation_lines \
         (reservation_id, line_no, album_id, quantity, unit_price_cents, currency) \
         VALUES (1, 0, 1, 2, 1000, 'USD')",
    );
    let before = catalog_state(&catalog);
    let api = catalog.client();

    let album = json!({
        "sku": "NEW-1", "title": "New", "artist_id": 1, "genre": "rock", "release_year": 2001,
        "price": {"amount_cents": 1, "currency": "USD"}, "stock": 1
    });
    let lines = json!({"lines": [{"album_id": 1, "quantity": 1}]});
    let held_lines = json!({"lines": [{"album_id": 1, "quantity": 2}]});
    let writes: Vec<(Method, &str, Option<Value>)> = vec![
        (
            Method::POST,
            "/catalog/artists",
            Some(json!({"name": "New"})),
        ),
        (Method::POST, "/catalog/albums", Some(album)),
        (
            Method::PATCH,
            "/catalog/albums/1",
            Some(json!({"stock": 1})),
        ),
        (
            Method::PATCH,
            "/catalog/albums/1",
            Some(json!({"price": {"amount_cents": 5, "currency": "EUR"}})),
        ),
        (Method::PUT, "/catalog/reservations/new-key", Some(lines)),
        (Method::PUT, "/catalog/reservations/held", Some(held_lines)),
        (Method::POST, "/catalog/reservations/held/confirm", None),
        (Method::POST, "/catalog/reservations/held/release", None),
        // A release of an unknown key would otherwise leave a tombstone.
        (Method::POST, "/catalog/reservations/unknown/release", None),
        (Method::POST, "/catalog/reservations/unknown/confirm", None),
    ];
    for (method, path, body) in writes {
        let reply = api.send(method.clone(), path, body.as_ref(), &[]).await;
        assert_eq!(
            reply.status.as_u16(),
            503,
            "{method} {path}: {}",
            reply.body
        );
        reply.assert_error(503, "not_write_owner", None);
    }
    // The write fence is in the write's transaction: a body that never gets there is refused
    // for what it is, and writes nothing either.
    api.send_raw(
        Method::POST,
        "/catalog/artists",
        Some("application/json"),
        b"{".to_vec(),
    )
    .await
    .assert_error(400, "malformed_json", None);
    assert_eq!(catalog_state(&catalog), before, "the database is unchanged");

    // Reads still work.
    let got = api.get("/catalog/albums/1").await;
    assert_eq!(got.ok(200)["stock"], 5);
    assert_eq!(got.body["title"], "Replicated Album");
    assert_eq!(
        api.get("/catalog/artists/1").await.ok(200),
        &json!({"id": 1, "name": "Replicated", "country": "GB"})
    );
    assert_eq!(
        api.get("/catalog/albums?genre=rock").await.ok(200)["items"][0]["id"],
        1
    );
    assert_eq!(
        api.get("/catalog/albums/batch?ids=1,2").await.ok(200)["missing"],
        json!([2])
    );
    let held = api.get("/catalog/reservations/held").await;
    assert_eq!(held.ok(200)["status"], "reserved");
    assert_eq!(api.get("/readyz").await.ok(200)["status"], "ready");

    let status = api.get("/status").await;
    let status = status.ok(200);
    assert_eq!(status["service"], "catalog");
    assert_eq!(status["write_mode"], "replica");
    assert_eq!(status["reservations_held"], 1);
}

#[tokio::test]
async fn a_replica_wishlist_refuses_every_write_and_still_serves_reads() {
    let (monolith, catalog) =
        tokio::join!(Monolith::spawn(), CatalogService::spawn(WriteMode::Owner));
    let wishlist = WishlistService::spawn(
        WriteMode::Replica,
        &catalog.base,
        &monolith.base,
        e2e::STACK_UPSTREAM_TIMEOUT,
    )
    .await;
    let customer = monolith.client().create_customer("r@example.com").await;
    let kept = catalog.client().album("R-1", 1).await;
    let other = catalog.client().album("R-2", 1).await;
    wishlist.insert_item(customer, kept);
    let rows = || {
        wishlist.count(&format!(
            "SELECT count(*) AS n FROM wishlist.items WHERE customer_id = {customer} AND album_id = {kept}"
        )) * 1000
            + wishlist.count("SELECT count(*) AS n FROM wishlist.items")
    };
    let before = rows();
    assert_eq!(before, 1001);

    let api = wishlist.client();
    for (method, album) in [
        (Method::PUT, other),
        (Method::PUT, kept),
        (Method::DELETE, kept),
        (Method::DELETE, other),
    ] {
        let path = format!("/wishlists/{customer}/items/{album}");
        let reply = api.send(method.clone(), &path, None, &[]).await;
        assert_eq!(
            reply.status.as_u16(),
            503,
            "{method} {path}: {}",
            reply.body
        );
        reply.assert_error(503, "not_write_owner", None);
    }
    assert_eq!(rows(), before, "the database is unchanged");

    let shown = api.get(&format!("/wishlists/{customer}")).await;
    let shown = shown.ok(200);
    assert_eq!(shown["items"][0]["album_id"], kept);
    assert_eq!(shown["items"][0]["album"]["title"], "Title R-1");
    assert!(shown.get("degraded").is_none(), "{shown}");

    let status = api.get("/status").await;
    let status = status.ok(200);
    assert_eq!(status["service"], "wishlist");
    assert_eq!(status["write_mode"], "replica");
    assert_eq!(status["degraded_reads"], 0);
}

#[tokio::test]
async fn owners_say_so_in_their_status() {
    let stack = Stack::spawn().await;
    let catalog = stack.catalog.client().get("/status").await;
    let catalog = catalog.ok(200);
    assert_eq!(catalog["service"], "catalog");
    assert_eq!(catalog["write_mode"], "owner");
    assert_eq!(catalog["reservations_held"], 0);
    assert!(catalog["version"].is_string());
    let wishlist = stack.wishlist.client().get("/status").await;
    let wishlist = wishlist.ok(200);
    assert_eq!(wishlist["service"], "wishlist");
    assert_eq!(wishlist["write_mode"], "owner");
    assert_eq!(wishlist["degraded_reads"], 0);
    // And they take writes.
    stack
        .catalog
        .client()
        .post("/catalog/artists", json!({"name": "Owned"}))
        .await
        .ok(201);
}

// ---------------------------------------------------------------------------------------------
// Degraded wishlist reads
// ---------------------------------------------------------------------------------------------

async fn degraded_reads(wishlist: &WishlistService) -> u64 {
    let status = wishlist.client().get("/status").await;
    status.ok(200)["degraded_reads"]
        .as_u64()
        .unwrap_or_else(|| panic!("no degraded_reads in {}", status.body))
}

/// Asserts a degraded answer: every stored item, in order, none with details.
#[track_caller]
fn assert_degraded(body: &Value, customer: i64, albums: &[i64]) {
    assert_eq!(body["customer_id"], customer, "{body}");
    assert_eq!(body["degraded"], true, "{body}");
    let items = body["items"].as_array().expect("items");
    let ids: Vec<i64> = items
        .iter()
        .map(|i| i["album_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, albums, "every item is still listed, in order");
    for item in items {
        assert_eq!(item["album"], Value::Null, "{item}");
        assert!(item.as_object().unwrap().contains_key("album"));
        assert!(item["added_at"].is_string());
    }
}

#[tokio::test]
async fn a_wishlist_read_survives_a_stopped_catalog() {
    let monolith = Monolith::spawn().await;
    let wishlist = WishlistService::spawn(
        WriteMode::Owner,
        &closed_port_url(),
        &monolith.base,
        Duration::from_secs(2),
    )
    .await;
    let customer = monolith.client().create_customer("down@example.com").await;
    let empty = monolith.client().create_customer("empty@example.com").await;
    // The PUT needs the catalog, so the items go straight into the database.
    for album in [13, 11, 12] {
        wishlist.insert_item(customer, album);
    }
    assert_eq!(degraded_reads(&wishlist).await, 0);

    let api = wishlist.client();
    let reply = api.get(&format!("/wishlists/{customer}")).await;
    assert_degraded(reply.ok(200), customer, &[13, 11, 12]);
    assert_eq!(degraded_reads(&wishlist).await, 1);
    api.get(&format!("/wishlists/{customer}")).await.ok(200);
    assert_eq!(degraded_reads(&wishlist).await, 2);

    // An empty wishlist needs no catalog call, so it is not degraded.
    assert_eq!(
        api.get(&format!("/wishlists/{empty}")).await.ok(200),
        &json!({"customer_id": empty, "items": []})
    );
    assert_eq!(degraded_reads(&wishlist).await, 2);

    // A write cannot check the album, so it fails rather than store an unchecked reference.
    api.put(&format!("/wishlists/{customer}/items/14"))
        .await
        .assert_error(503, "dependency_unavailable", None);
    assert_eq!(
        wishlist.count("SELECT count(*) AS n FROM wishlist.items"),
        3
    );
}

/// A stand-in catalog serving only `GET /catalog/albums/batch`: it counts calls, remembers how
/// many ids the last one asked for, waits `delay` and then answers every requested id as an
/// album (none missing).
struct FakeCatalog {
    base: String,
    state: web::Data<FakeState>,
    _server: Running,
}

struct FakeState {
    delay: Duration,
    calls: AtomicUsize,
    last_ids: AtomicUsize,
}

impl FakeCatalog {
    fn spawn(delay: Duration) -> FakeCatalog {
        let state = web::Data::new(FakeState {
            delay,
            calls: AtomicUsize::new(0),
            last_ids: AtomicUsize::new(0),
        });
        let (listener, base) = bind();
        let data = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/catalog/albums/batch", web::get().to(fake_batch))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("fake catalog listens")
        .run();
        FakeCatalog {
            base,
            state,
            _server: Running::spawn(server),
        }
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

async fn fake_batch(req: HttpRequest, state: web::Data<FakeState>) -> HttpResponse {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let ids: Vec<i64> = req
        .query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("ids="))
        .unwrap_or("")
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect();
    state.last_ids.store(ids.len(), Ordering::SeqCst);
    tokio::time::sleep(state.delay).await;
    let items: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "id": id, "sku": format!("FAKE-{id}"), "title": format!("Fake {id}"),
                "artist": {"id": 1, "name": "Fake Artist"}, "genre": "rock",
                "release_year": 2000, "price": {"amount_cents": 100 + id, "currency": "USD"},
                "stock": id % 2, "updated_at": "2026-01-02T03:04:05Z"
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"items": items, "missing": []}))
}

#[tokio::test]
async fn a_wishlist_read_survives_a_slow_catalog_within_its_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let fake = FakeCatalog::spawn(Duration::from_secs(5));
    let monolith = Monolith::spawn().await;
    let wishlist =
        WishlistService::spawn(WriteMode::Owner, &fake.base, &monolith.base, TIMEOUT).await;
    let customer = monolith.client().create_customer("slow@example.com").await;
    for album in [21, 22] {
        wishlist.insert_item(customer, album);
    }
    let api = wishlist.client();

    let started = Instant::now();
    let reply = api.get(&format!("/wishlists/{customer}")).await;
    let elapsed = started.elapsed();
    assert_degraded(reply.ok(200), customer, &[21, 22]);
    assert!(
        elapsed < TIMEOUT + Duration::from_millis(700),
        "the read took {elapsed:?} with a {TIMEOUT:?} timeout"
    );
    assert_eq!(fake.calls(), 1, "the catalog was asked, and gave up on");
    assert_eq!(degraded_reads(&wishlist).await, 1);
}

#[tokio::test]
async fn a_wishlist_read_is_one_catalog_call_whatever_its_size() {
    let fake = FakeCatalog::spawn(Duration::ZERO);
    let monolith = Monolith::spawn().await;
    let wishlist = WishlistService::spawn(
        WriteMode::Owner,
        &fake.base,
        &monolith.base,
        Duration::from_secs(3),
    )
    .await;
    let api = wishlist.client();
    for size in [1_i64, 10, 100] {
        let customer = monolith
            .client()
            .create_customer(&format!("size{size}@example.com"))
            .await;
        wishlist.execute(&format!(
            "INSERT INTO wishlist.items (customer_id, album_id) \
             SELECT {customer}, g FROM generate_series(1, {size}) AS g"
        ));
        let before = fake.calls();
        let reply = api.get(&format!("/wishlists/{customer}")).await;
        let body = reply.ok(200);
        assert_eq!(fake.calls() - before, 1, "{size} items: one catalog call");
        assert_eq!(
            fake.state.last_ids.load(Ordering::SeqCst),
            size as usize,
            "the one call asked for every item"
        );
        assert!(
            body.get("degraded").is_none(),
            "a healthy read has no degraded key: {body}"
        );
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), size as usize);
        for (i, item) in items.iter().enumerate() {
            let id = i as i64 + 1;
            assert_eq!(item["album_id"], id);
            assert_eq!(
                item["album"],
                json!({
                    "title": format!("Fake {id}"), "artist": "Fake Artist",
                    "price": {"amount_cents": 100 + id, "currency": "USD"},
                    "in_stock": id % 2 == 1
                })
            );
        }
    }
    assert_eq!(fake.calls(), 3);
    assert_eq!(degraded_reads(&wishlist).await, 0);
}

/// "One catalog call per wishlist read" holds only while a wishlist fits in one batch read.
#[test]
fn a_full_wishlist_fits_in_one_catalog_batch_on_every_side() {
    assert_eq!(
        wishlist_service::wishlist::MAX_ITEMS,
        catalog_service::catalog::domain::MAX_BATCH
    );
    assert_eq!(
        monolith::wishlist::MAX_ITEMS,
        monolith::catalog::domain::MAX_BATCH
    );
}
