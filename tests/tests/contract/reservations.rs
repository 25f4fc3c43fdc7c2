//! The catalog service's stock reservations, the catalog's side of the order saga: reserve under
//! a key (stock taken once however often it is retried), then confirm (sold) or release (given
//! back); an unconfirmed reservation expires and its stock comes back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use e2e::{CatalogService, Client, Reply, WriteMode, eventually};
use reqwest::Method;
use serde_json::{Value, json};

async fn reserve(api: &Client, key: &str, lines: &[(i64, i32)], ttl: Option<i64>) -> Reply {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(album, quantity)| json!({"album_id": album, "quantity": quantity}))
        .collect();
    let mut body = json!({ "lines": lines });
    if let Some(ttl) = ttl {
        body["ttl_seconds"] = json!(ttl);
    }
    api.put_json(&format!("/catalog/reservations/{key}"), body)
        .await
}

async fn confirm(api: &Client, key: &str) -> Reply {
    api.post_empty(&format!("/catalog/reservations/{key}/confirm"))
        .await
}

async fn release(api: &Client, key: &str) -> Reply {
    api.post_empty(&format!("/catalog/reservations/{key}/release"))
        .await
}

async fn held(api: &Client) -> i64 {
    let status = api.get("/status").await;
    status.id("reservations_held")
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("{value}")))
        .unwrap_or_else(|e| panic!("{value}: {e}"))
        .with_timezone(&Utc)
}

#[tokio::test]
async fn a_reservation_takes_stock_once_per_key() {
    let catalog = CatalogService::spawn(WriteMode::Owner).await;
    let api = catalog.client();
    let a = api.album("RS-A", 10).await;
    let b = api.album("RS-B", 5).await;

    let first = reserve(&api, "order-1:try.1", &[(b, 2), (a, 3)], Some(120)).await;
    let created_at = first.body["created_at"].clone();
    let expires_at = first.body["expires_at"].clone();
    assert_eq!(
        first.ok(201),
        &json!({
            "key": "order-1:try.1", "status": "reserved",
            "lines": [
                {"album_id": b, "quantity": 2, "unit_price": {"amount_cents": 1000, "currency": "USD"}},
                {"album_id": a, "quantity": 3, "unit_price": {"amount_cents": 1000, "currency": "USD"}}
            ],
            "expires_at": expires_at, "created_at": created_at
        }),
        "lines in request order, priced at the time of reservation"
    );
    let ttl = time(&expires_at) - time(&created_at);
    assert!(
        (119..=121).contains(&ttl.num_seconds()),
        "expires {ttl} after creation"
    );
    assert_eq!((api.stock(a).await, api.stock(b).await), (7, 3));
    assert_eq!(held(&api).await, 1);

    // A retry with the same key and lines (whatever its ttl) is the same reservation.
    for ttl in [Some(120), None, Some(5)] {
        let again = reserve(&api, "order-1:try.1", &[(b, 2), (a, 3)], ttl).await;
        assert_eq!(again.ok(200), &first.body);
    }
    assert_eq!(
        api.get("/catalog/reservations/order-1:try.1").await.ok(200),
        &first.body
    );
    assert_eq!(
        (api.stock(a).await, api.stock(b).await),
        (7, 3),
        "stock taken once"
    );

    // The key is bound to its lines.
    for other in [
        vec![(b, 2), (a, 4)],
        vec![(b, 2)],
        vec![(a, 3), (b, 2), (999, 1)],
    ] {
        reserve(&api, "order-1:try.1", &other, None)
            .await
            .assert_error(422, "idempotency_key_reused", Some("key"));
    }
    assert_eq!((api.stock(a).await, api.stock(b).await), (7, 3));
    assert_eq!(
        catalog.count("SELECT count(*) AS n FROM catalog.reservations"),
        1
    );
}

#[tokio::test]
async fn confirming_sells_the_stock_and_a_confirmed_reservation_cannot_be_released() {
    let catalog = CatalogService::spawn(WriteMode::Owner).await;
    let api = catalog.client();
    let a = api.album("RS-C", 4).await;
    reserve(&api, "k-confirm", &[(a, 3)], None).await.ok(201);

    let confirmed = confirm(&api, "k-confirm").await;
    assert_eq!(confirmed.ok(200)["status"], "confirmed");
    assert_eq!(confirmed.body["lines"][0]["quantity"], 3);
    assert_eq!(
        confirm(&api, "k-confirm").await.ok(200)["status"],
        "confirmed"
    );
    assert_eq!(held(&api).await, 0, "a confirmed reservation holds nothing");

    release(&api, "k-confirm")
        .await
        .assert_error(409, "reservation_confirmed", None);
    // A late retry of the reserve changes nothing either.
    assert_eq!(
        reserve(&api, "k-confirm", &[(a, 3)], None).await.ok(200)["status"],
        "confirmed"
    );
    assert_eq!(api.stock(a).await, 1, "the stock stays sold");
}

#[tokio::test]
async fn releasing_a_reservation_returns_its_stock_once() {
    let catalog = CatalogService::spawn(WriteMode::Owner).await;
    let api = catalog.client();
    let a = api.album("RS-D", 10).await;
    let b = api.album("RS-E", 2).await;
    reserve(&api, "k-release", &[(a, 3), (b, 2)], None)
        .await
        .ok(201);
    assert_eq!((api.stock(a).await, api.stock(b).await), (7, 0));

    for attempt in ["first", "second"] {
        let released = release(&api, "k-release").await;
        assert_eq!(released.ok(200)["status"], "released", "{attempt}");
        assert_eq!(released.body["lines"].as_array().unwrap().len(), 2);
        assert_eq!(
            (api.stock(a).await, api.stock(b).await),
            (10, 2),
            "{attempt}: returned once"
        );
    }
    confirm(&api, "k-release")
        .await
        .assert_error(409, "reservation_released", None);
    assert_eq!(
        reserve(&api, "k-release", &[(a, 3), (b, 2)], None)
            .await
            .ok(200)["status"],
        "released"
    );
    // The key stays bound to its lines after release: other lines are a different request.
    reserve(&api, "k-release", &[(a, 1)], None)
        .await
        .assert_error(422, "idempotency_key_reused", Some("key"));
    assert_eq!((api.stock(a).await, api.stock(b).await), (10, 2));
    assert_eq!(held(&api).await, 0);
}

#[tokio::test]
async fn releasing_an_unknown_key_leaves_a_tombstone_that_takes_no_stock() {
    let catalog = CatalogService::spawn(WriteMode::Owner).await;
    let api = catalog.client();
    let a = api.album("RS-F", 5).await;

    // The release overtook its reserve (a retried or delayed request).
    let tombstone = release(&api, "k-late").await;
    let tombstone = tombstone.ok(200);
    assert_eq!(tombstone["key"], "k-late");
    assert_eq!(tombstone["status"], "released");
    assert_eq!(tombstone["lines"], json!([]));

    // The reserve that arrives afterwards, with any lines, takes nothing.
    for lines in [vec![(a, 2)], vec![(a, 5)]] {
        let late = reserve(&api, "k-late", &lines, None).await;
        assert_eq!(late.ok(200)["status"], "released");
        assert_eq!(late.body["lines"], json!([]));
    }
    assert_eq!(api.stock(a).await, 5);
    confirm(&api, "k-late")
        .await
        .assert_error(409, "reservation_released", None);
    assert_eq!(api.stock(a).await, 5);
    assert_eq!(held(&api).await, 0);
}

#[tokio::test]
async fn a_reservation_short_of_stock_or_naming_an_unknown_album_takes_nothing() {
    let catalog = CatalogService::spawn(WriteMode::Owner).await;
    let api = catalog.client();
    let a = api.album("RS-G", 2).await;
    let b = api.album("RS-H", 5).await;

    reserve(&api, "k-short", &[(b, 1), (a, 3)], None)
        .await
        .assert_error(409, "insufficient_stock", Some("lines[1].quantity"));
    reserve(&api, "k-short", &[(a, 1), (987654, 1)], None)
        .await
        .assert_error(422, "unknown_reference", Some("lines[1].album_id"));
    // Stock is taken in album id order, so the shortfall on the lower id is the one reported.
    reserve(&api, "k-short", &[(987654, 1), (a, 100)], None)
        .await
        .assert_error(409, "insufficient_stock", Some("lines[1].quantity"));
    assert_eq!(
        (api.stock(a).await, api.stock(b).await),
        (2, 5),
        "a failed reservation took nothing, not even its other lines"
    );
    assert_eq!(
        catalog.count("SELECT count(*) AS n FROM catalog.reservations"),
        0,
        "and did not claim its key"
    );

    // So the same key can be used once the request fits.
    reserve(&api, "k-short", &[(b, 1), (a, 2)], None)
        .await
        .ok(201);
    assert_eq!((api.stock(a).await, api.stock(b).await), (0, 4));
}

#[tokio::test]
async fn reservation_requests_are_validated() {
    let catalog = CatalogService::spawn(WriteMode::Owner).await;
    let api = catalog.client();
    let a = api.album("RS-I", 5).await;
    let line = |album: Value, quantity: Value| json!({"album_id": album, "quantity": quantity});
    let cases = [
        (json!({"lines": []}), "lines"),
        (json!({}), "lines"),
        (
            json!({"lines": (0..51).map(|i| line(json!(i + 1), json!(1))).collect::<Vec<_>>()}),
            "lines",
        ),
        (
            json!({"lines": [line(json!(a), json!(0))]}),
            "lines[0].quantity",
        ),
        (
            json!({"lines": [line(json!(a), json!(101))]}),
            "lines[0].quantity",
        ),
        (
            json!({"lines": [line(json!(0), json!(1))]}),
            "lines[0].album_id",
        ),
        (
            json!({"lines": [line(json!(a), json!(1)), line(json!(a), json!(2))]}),
            "lines[1].album_id",
        ),
        (json!({"lines": [{"album_id": a}]}), "lines[0].quantity"),
        (
            json!({"lines": [line(json!(a), json!("1"))]}),
            "lines[0].quantity",
        ),
        (
            json!({"lines": [line(json!(a), json!(1))], "ttl_seconds": 0}),
            "ttl_seconds",
        ),
        (
            json!({"lines": [line(json!(a), json!(1))], "ttl_seconds": 86_401}),
            "ttl_seconds",
        ),
        (
            json!({"lines": [line(json!(a), json!(1))], "note": "x"}),
            "note",
        ),
    ];
    for (body, field) in cases {
        api.put_json("/catalog/reservations/k-valid", body)
            .await
            .assert_error(422, "invalid_field", Some(field));
    }
    let good = json!({"lines": [line(json!(a), json!(1))]});
    for key in ["a%20b", "a%2Fb", &"k".repeat(201)] {
        api.put_json(&format!("/catalog/reservations/{key}"), good.clone())
            .await
            .assert_error(422, "invalid_field", Some("key"));
    }
    api.send_raw(
        Method::PUT,
        "/catalog/reservations/k-valid",
        Some("application/json"),
        b"{\"lines\": [".to_vec(),
    )
    .await
    .assert_error(400, "malformed_json", None);

    for reply in [
        api.get("/catalog/reservations/k-unknown").await,
        confirm(&api, "k-unknown").await,
    ] {
        reply.assert_error(404, "not_found", Some("key"));
    }
    assert_eq!(
        catalog.count("SELECT count(*) AS n FROM catalog.reservations"),
        0
    );
    assert_eq!(api.stock(a).await, 5);
}

#[tokio::test]
async fn an_unconfirmed_reservation_expires_and_a_late_confirm_retakes_its_stock() {
    let catalog = CatalogService::spawn_with(catalog_service::Options {
        workers: 2,
        write_mode: WriteMode::Owner,
        sweep_every: Duration::from_millis(200),
        ..catalog_service::Options::default()
    })
    .await;
    let api = catalog.client();
    let a = api.album("RS-J", 3).await;

    reserve(&api, "k-expiring", &[(a, 2)], Some(1))
        .await
        .ok(201);
    assert_eq!(api.stock(a).await, 1);

    // The sweeper gives the stock back once the second has passed.
    eventually(Duration::from_secs(10), "the reservation to expire", || {
        let api = api.clone();
        async move { (api.stock(a).await == 3).then_some(()) }
    })
    .await;
    let expired = api.get("/catalog/reservations/k-expiring").await;
    assert_eq!(expired.ok(200)["status"], "expired");
    assert_eq!(held(&api).await, 0);
    // Releasing an expired reservation changes nothing.
    assert_eq!(
        release(&api, "k-expiring").await.ok(200)["status"],
        "expired"
    );
    assert_eq!(api.stock(a).await, 3);

    // Someone else takes the stock; the late confirm cannot have it.
    reserve(&api, "k-other", &[(a, 2)], None).await.ok(201);
    confirm(&api, "k-expiring")
        .await
        .assert_error(409, "reservation_expired", None);
    assert_eq!(api.stock(a).await, 1);
    assert_eq!(
        api.get("/catalog/reservations/k-expiring").await.ok(200)["status"],
        "expired"
    );

    // Once it is back, the late confirm takes it again.
    release(&api, "k-other").await.ok(200);
    assert_eq!(api.stock(a).await, 3);
    let confirmed = confirm(&api, "k-expiring").await;
    assert_eq!(confirmed.ok(200)["status"], "confirmed");
    assert_eq!(api.stock(a).await, 1);
}
