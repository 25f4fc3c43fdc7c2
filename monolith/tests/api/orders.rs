use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn an_order_takes_stock_records_lines_and_can_be_fetched() {
    let app = TestApp::spawn().await;
    let customer = app.customer("o1@example.com").await;
    let a = app.album("O-A", 5).await;
    let b = app.album("O-B", 2).await;
    let placed = app
        .post(
            "/orders",
            json!({"customer_id": customer, "lines": [{"album_id": b, "quantity": 2}, {"album_id": a, "quantity": 1}]}),
        )
        .await;
    let order = placed.ok(201);
    assert_eq!(order["customer_id"], customer);
    assert_eq!(order["status"], "placed");
    assert_eq!(
        order["total"],
        json!({"amount_cents": 3000, "currency": "USD"})
    );
    assert_eq!(
        order["lines"][0],
        json!({"album_id": b, "quantity": 2, "unit_price": {"amount_cents": 1000, "currency": "USD"}})
    );
    assert_eq!(order["lines"][1]["album_id"], a);
    assert_eq!((app.stock(a).await, app.stock(b).await), (4, 0));

    let id = order["id"].as_i64().unwrap();
    let fetched = app.get(&format!("/orders/{id}")).await;
    assert_eq!(fetched.ok(200), order);
    app.get("/orders/31337")
        .await
        .assert_error(404, "not_found", Some("order_id"));
}

#[tokio::test]
async fn a_failing_line_rolls_back_the_whole_order() {
    let app = TestApp::spawn().await;
    let customer = app.customer("o2@example.com").await;
    let plenty = app.album("O-PLENTY", 10).await;
    let scarce = app.album("O-SCARCE", 1).await;
    app.post(
        "/orders",
        json!({"customer_id": customer, "lines": [{"album_id": plenty, "quantity": 3}, {"album_id": scarce, "quantity": 2}]}),
    )
    .await
    .assert_error(409, "insufficient_stock", Some("lines[1].quantity"));
    assert_eq!(
        app.stock(plenty).await,
        10,
        "the first line's stock is back"
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM orders.orders"), 0);

    app.post(
        "/orders",
        json!({"customer_id": 999999, "lines": [{"album_id": plenty, "quantity": 1}]}),
    )
    .await
    .assert_error(422, "unknown_reference", Some("customer_id"));
    app.post(
        "/orders",
        json!({"customer_id": customer, "lines": [{"album_id": plenty, "quantity": 1}, {"album_id": 999999, "quantity": 1}]}),
    )
    .await
    .assert_error(422, "unknown_reference", Some("lines[1].album_id"));
    app.post(
        "/orders",
        json!({"customer_id": customer, "lines": [{"album_id": plenty, "quantity": 0}]}),
    )
    .await
    .assert_error(422, "invalid_field", Some("lines[0].quantity"));
    app.post("/orders", json!({"customer_id": customer, "lines": []}))
        .await
        .assert_error(422, "invalid_field", Some("lines"));
    app.post(
        "/orders",
        json!({"customer_id": customer, "lines": [{"album_id": plenty}]}),
    )
    .await
    .assert_error(422, "invalid_field", Some("lines[0].quantity"));
    assert_eq!(app.stock(plenty).await, 10);
    assert_eq!(app.count("SELECT count(*) AS n FROM orders.orders"), 0);
}

#[tokio::test]
async fn ordering_removes_the_album_from_that_customers_wishlist_only() {
    let app = TestApp::spawn().await;
    let buyer = app.customer("o3@example.com").await;
    let other = app.customer("o4@example.com").await;
    let bought = app.album("O-BOUGHT", 5).await;
    let kept = app.album("O-KEPT", 5).await;
    for (c, a) in [(buyer, bought), (buyer, kept), (other, bought)] {
        app.put(&format!("/wishlists/{c}/items/{a}")).await.ok(201);
    }
    app.post(
        "/orders",
        json!({"customer_id": buyer, "lines": [{"album_id": bought, "quantity": 1}]}),
    )
    .await
    .ok(201);
    let buyer_list = app.get(&format!("/wishlists/{buyer}")).await;
    let ids: Vec<i64> = buyer_list.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["album_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![kept]);
    let other_list = app.get(&format!("/wishlists/{other}")).await;
    assert_eq!(
        other_list.ok(200)["items"].as_array().unwrap().len(),
        1,
        "others keep theirs"
    );
}

#[tokio::test]
async fn twenty_concurrent_orders_for_the_last_five_units_sell_exactly_five() {
    let app = Arc::new(TestApp::spawn().await);
    let album = app.album("O-LAST5", 5).await;
    let mut customers = Vec::new();
    for i in 0..20 {
        customers.push(app.customer(&format!("race{i}@example.com")).await);
    }
    let tasks: Vec<_> = customers
        .into_iter()
        .map(|customer| {
            let app = app.clone();
            tokio::spawn(async move {
                app.post(
                    "/orders",
                    json!({"customer_id": customer, "lines": [{"album_id": album, "quantity": 1}]}),
                )
                .await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status.as_u16() {
            201 => created += 1,
            _ => reply.assert_error(409, "insufficient_stock", Some("lines[0].quantity")),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(app.stock(album).await, 0);
    assert_eq!(app.count("SELECT count(*) AS n FROM orders.orders"), 5);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM catalog.albums WHERE stock < 0"),
        0
    );
}

#[tokio::test]
async fn a_retried_order_with_the_same_key_returns_the_same_order() {
    let app = TestApp::spawn().await;
    let customer = app.customer("o5@example.com").await;
    let album = app.album("O-IDEM", 10).await;
    let body = json!({"customer_id": customer, "lines": [{"album_id": album, "quantity": 2}]});
    let key = [("Idempotency-Key", "order-abc-1")];

    let first = app
        .send(Method::POST, "/orders", Some(body.clone()), &key)
        .await;
    let first_order = first.ok(201).clone();
    assert!(first.headers.get("idempotent-replayed").is_none());
    let retry = app
        .send(Method::POST, "/orders", Some(body.clone()), &key)
        .await;
    assert_eq!(retry.ok(201), &first_order);
    assert_eq!(retry.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.stock(album).await, 8, "stock taken once");

    let mut changed = body.clone();
    changed["lines"][0]["quantity"] = json!(3);
    app.send(Method::POST, "/orders", Some(changed), &key)
        .await
        .assert_error(422, "idempotency_key_reused", Some("Idempotency-Key"));
    app.send(
        Method::POST,
        "/orders",
        Some(body),
        &[("Idempotency-Key", "has space")],
    )
    .await
    .assert_error(422, "invalid_field", Some("Idempotency-Key"));
    assert_eq!(app.count("SELECT count(*) AS n FROM orders.orders"), 1);
}

#[tokio::test]
async fn the_same_key_sent_concurrently_creates_one_order() {
    let app = Arc::new(TestApp::spawn().await);
    let customer = app.customer("o6@example.com").await;
    let album = app.album("O-IDEM-RACE", 50).await;
    let body = json!({"customer_id": customer, "lines": [{"album_id": album, "quantity": 1}]});
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move {
                app.send(
                    Method::POST,
                    "/orders",
                    Some(body),
                    &[("Idempotency-Key", "same-key-race")],
                )
                .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().ok(201)["id"].as_i64().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every reply names one order: {ids:?}");
    assert_eq!(app.count("SELECT count(*) AS n FROM orders.orders"), 1);
    assert_eq!(app.stock(album).await, 49);
}
