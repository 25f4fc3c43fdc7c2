use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn adding_is_idempotent_and_details_are_live() {
    let app = TestApp::spawn().await;
    let customer = app.customer("w1@example.com").await;
    let album = app.album("W-1", 2).await;

    let empty = app.get(&format!("/wishlists/{customer}")).await;
    assert_eq!(
        empty.ok(200),
        &json!({"customer_id": customer, "items": []})
    );

    let first = app
        .put(&format!("/wishlists/{customer}/items/{album}"))
        .await;
    let item = first.ok(201);
    assert_eq!(item["album_id"], album);
    assert_eq!(item["album"]["title"], "Title W-1");
    let again = app
        .put(&format!("/wishlists/{customer}/items/{album}"))
        .await;
    assert_eq!(
        again.ok(200)["added_at"],
        item["added_at"],
        "second add changes nothing"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM wishlist.items WHERE customer_id = {customer}"
        )),
        1
    );

    // Price and stock changes in the catalog show on the wishlist at once.
    app.patch(
        &format!("/catalog/albums/{album}"),
        json!({"price": {"amount_cents": 555, "currency": "USD"}, "stock": 0}),
    )
    .await
    .ok(200);
    let shown = app.get(&format!("/wishlists/{customer}")).await;
    let shown = shown.ok(200);
    assert_eq!(
        shown["items"][0]["album"]["price"],
        json!({"amount_cents": 555, "currency": "USD"})
    );
    assert_eq!(shown["items"][0]["album"]["in_stock"], false);
    assert_eq!(shown["items"][0]["album"]["artist"], "Artist of W-1");

    let removed = app
        .delete(&format!("/wishlists/{customer}/items/{album}"))
        .await;
    assert_eq!(removed.status.as_u16(), 204);
    let removed_again = app
        .delete(&format!("/wishlists/{customer}/items/{album}"))
        .await;
    assert_eq!(removed_again.status.as_u16(), 204, "removal is idempotent");
    assert_eq!(
        app.get(&format!("/wishlists/{customer}")).await.ok(200)["items"],
        json!([])
    );
}

#[tokio::test]
async fn unknown_customers_and_albums_are_404() {
    let app = TestApp::spawn().await;
    let customer = app.customer("w2@example.com").await;
    let album = app.album("W-2", 1).await;
    app.get("/wishlists/999999")
        .await
        .assert_error(404, "not_found", Some("customer_id"));
    app.put(&format!("/wishlists/999999/items/{album}"))
        .await
        .assert_error(404, "not_found", Some("customer_id"));
    app.put(&format!("/wishlists/{customer}/items/999999"))
        .await
        .assert_error(404, "not_found", Some("album_id"));
    app.delete(&format!("/wishlists/999999/items/{album}"))
        .await
        .assert_error(404, "not_found", Some("customer_id"));
    app.put(&format!("/wishlists/{customer}/items/zero"))
        .await
        .assert_error(404, "not_found", Some("album_id"));
    assert_eq!(app.count("SELECT count(*) AS n FROM wishlist.items"), 0);
}

#[tokio::test]
async fn a_wishlist_lists_many_albums_in_the_order_added() {
    let app = TestApp::spawn().await;
    let customer = app.customer("w3@example.com").await;
    let mut added = Vec::new();
    for i in 0..12 {
        let album = app.album(&format!("WL-{i}"), i % 2).await;
        app.put(&format!("/wishlists/{customer}/items/{album}"))
            .await
            .ok(201);
        added.push(album);
    }
    let shown = app.get(&format!("/wishlists/{customer}")).await;
    let items = shown.ok(200)["items"].as_array().unwrap().clone();
    let ids: Vec<i64> = items
        .iter()
        .map(|i| i["album_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, added);
    assert!(items.iter().all(|i| i["album"]["title"].is_string()));
}
