//! The wishlist's contract. Each case runs against the monolith and against the wishlist service;
//! customers are created where customers live and albums where the catalog lives (see
//! [`Target`]).

use reqwest::Method;
use serde_json::{Value, json};

use crate::target::Target;

contract! {
    targets: [monolith, wishlist_service];
    an_empty_wishlist_has_no_items,
    adding_is_idempotent,
    album_details_are_live,
    removing_is_idempotent_and_touches_one_customer,
    removal_can_be_limited_to_items_added_before_a_time,
    unknown_customers_and_albums_are_404,
    items_are_listed_in_the_order_added,
    an_album_the_catalog_does_not_have_is_listed_without_details,
    a_wishlist_holds_at_most_100_albums,
    unknown_routes_and_methods_get_json_errors,
}

fn album_ids(wishlist: &Value) -> Vec<i64> {
    wishlist["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {wishlist}"))
        .iter()
        .map(|i| i["album_id"].as_i64().unwrap())
        .collect()
}

async fn an_empty_wishlist_has_no_items(t: Target) {
    let customer = t.customers().create_customer("w0@example.com").await;
    let reply = t.wishlist().get(&format!("/wishlists/{customer}")).await;
    assert_eq!(
        reply.ok(200),
        &json!({"customer_id": customer, "items": []}),
        "exactly this: no other keys"
    );
    reply.assert_json();
}

async fn adding_is_idempotent(t: Target) {
    let customer = t.customers().create_customer("w1@example.com").await;
    let album = t.catalog().album("W-1", 2).await;
    let api = t.wishlist();
    let path = format!("/wishlists/{customer}/items/{album}");

    let first = api.put(&path).await;
    let added_at = first.body["added_at"].clone();
    assert_eq!(
        first.ok(201),
        &json!({
            "album_id": album, "added_at": added_at,
            "album": {
                "title": "Title W-1", "artist": "Artist of W-1",
                "price": {"amount_cents": 1000, "currency": "USD"}, "in_stock": true
            }
        })
    );
    assert!(added_at.as_str().unwrap().ends_with('Z'), "{added_at}");
    assert!(first.header("location").is_none(), "no Location on 201");
    first.assert_json();

    let again = api.put(&path).await;
    assert_eq!(again.ok(200), &first.body, "the existing item, unchanged");
    assert!(again.header("location").is_none(), "no Location on 200");
    assert_eq!(
        t.count_wishlist(&format!(
            "SELECT count(*) AS n FROM wishlist.items WHERE customer_id = {customer}"
        )),
        1
    );

    // A body sent with the PUT is not read.
    let with_body = api
        .send_raw(Method::PUT, &path, Some("text/plain"), b"not json".to_vec())
        .await;
    assert_eq!(with_body.ok(200), &first.body);

    let listed = api.get(&format!("/wishlists/{customer}")).await;
    assert_eq!(
        listed.ok(200),
        &json!({"customer_id": customer, "items": [first.body]})
    );
}

async fn album_details_are_live(t: Target) {
    let customer = t.customers().create_customer("w2@example.com").await;
    let catalog = t.catalog();
    let album = catalog.album("W-2", 2).await;
    let api = t.wishlist();
    api.put(&format!("/wishlists/{customer}/items/{album}"))
        .await
        .ok(201);

    // Price and stock changes in the catalog show on the wishlist at once.
    catalog
        .patch(
            &format!("/catalog/albums/{album}"),
            json!({"price": {"amount_cents": 555, "currency": "EUR"}, "stock": 0}),
        )
        .await
        .ok(200);
    let shown = api.get(&format!("/wishlists/{customer}")).await;
    assert_eq!(
        shown.ok(200)["items"][0]["album"],
        json!({
            "title": "Title W-2", "artist": "Artist of W-2",
            "price": {"amount_cents": 555, "currency": "EUR"}, "in_stock": false
        })
    );

    catalog
        .patch(&format!("/catalog/albums/{album}"), json!({"stock": 1}))
        .await
        .ok(200);
    let shown = api.get(&format!("/wishlists/{customer}")).await;
    assert_eq!(shown.ok(200)["items"][0]["album"]["in_stock"], true);
    // The item as stored is unchanged.
    let again = api
        .put(&format!("/wishlists/{customer}/items/{album}"))
        .await;
    assert_eq!(
        again.ok(200)["added_at"],
        shown.body["items"][0]["added_at"]
    );
    assert_eq!(again.body["album"]["price"]["amount_cents"], 555);
}

async fn removing_is_idempotent_and_touches_one_customer(t: Target) {
    let customers = t.customers();
    let me = customers.create_customer("w3@example.com").await;
    let other = customers.create_customer("w4@example.com").await;
    let catalog = t.catalog();
    let kept = catalog.album("W-3", 1).await;
    let removed = catalog.album("W-4", 1).await;
    let api = t.wishlist();
    for (customer, album) in [(me, kept), (me, removed), (other, removed)] {
        api.put(&format!("/wishlists/{customer}/items/{album}"))
            .await
            .ok(201);
    }

    let path = format!("/wishlists/{me}/items/{removed}");
    for attempt in ["first", "second"] {
        let reply = api.delete(&path).await;
        assert_eq!(reply.status.as_u16(), 204, "{attempt}: {}", reply.body);
        assert_eq!(reply.body, Value::Null, "{attempt}: 204 has no body");
    }
    // An album never added, and one that does not exist at all, are removed just as well.
    for album in [catalog.album("W-5", 1).await, 987654] {
        let reply = api.delete(&format!("/wishlists/{me}/items/{album}")).await;
        assert_eq!(reply.status.as_u16(), 204, "{album}: {}", reply.body);
    }

    assert_eq!(
        album_ids(api.get(&format!("/wishlists/{me}")).await.ok(200)),
        vec![kept]
    );
    assert_eq!(
        album_ids(api.get(&format!("/wishlists/{other}")).await.ok(200)),
        vec![removed],
        "another customer's wishlist is not touched"
    );
    assert_eq!(
        t.count_wishlist("SELECT count(*) AS n FROM wishlist.items"),
        2
    );
}

async fn removal_can_be_limited_to_items_added_before_a_time(t: Target) {
    let customer = t.customers().create_customer("w11@example.com").await;
    let album = t.catalog().album("W-11", 1).await;
    let api = t.wishlist();
    let path = format!("/wishlists/{customer}/items/{album}");
    let added = api.put(&path).await;
    let added_at = added.ok(201)["added_at"].as_str().unwrap().to_string();
    let earlier = (chrono::DateTime::parse_from_rfc3339(&added_at).unwrap()
        - chrono::Duration::seconds(1))
    .with_timezone(&chrono::Utc)
    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

    // An item added after the time is kept (a late removal for an older purchase).
    let reply = api.delete(&format!("{path}?added_before={earlier}")).await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.body);
    assert_eq!(
        album_ids(api.get(&format!("/wishlists/{customer}")).await.ok(200)),
        vec![album]
    );
    for bad in ["yesterday", "2026-13-01T00:00:00Z", "1"] {
        api.delete(&format!("{path}?added_before={bad}"))
            .await
            .assert_error(422, "invalid_field", Some("added_before"));
    }
    api.delete(&format!("{path}?added_before=%00"))
        .await
        .assert_error(400, "bad_query", None);
    // An item added at or before the time goes.
    let reply = api.delete(&format!("{path}?added_before={added_at}")).await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.body);
    assert_eq!(
        album_ids(api.get(&format!("/wishlists/{customer}")).await.ok(200)),
        Vec::<i64>::new()
    );
}

async fn unknown_customers_and_albums_are_404(t: Target) {
    let customer = t.customers().create_customer("w5@example.com").await;
    let album = t.catalog().album("W-6", 1).await;
    let api = t.wishlist();
    for bad in ["987654", "0", "-1", "abc", "99999999999999999999"] {
        api.get(&format!("/wishlists/{bad}")).await.assert_error(
            404,
            "not_found",
            Some("customer_id"),
        );
        api.put(&format!("/wishlists/{bad}/items/{album}"))
            .await
            .assert_error(404, "not_found", Some("customer_id"));
        api.delete(&format!("/wishlists/{bad}/items/{album}"))
            .await
            .assert_error(404, "not_found", Some("customer_id"));
    }
    for bad in ["987654", "0", "zero", "-5", "1.5"] {
        api.put(&format!("/wishlists/{customer}/items/{bad}"))
            .await
            .assert_error(404, "not_found", Some("album_id"));
    }
    for bad in ["0", "zero", "-5"] {
        api.delete(&format!("/wishlists/{customer}/items/{bad}"))
            .await
            .assert_error(404, "not_found", Some("album_id"));
    }
    // Malformed ids first (customer, then album); then the customer must exist; then the album.
    api.put("/wishlists/abc/items/xyz")
        .await
        .assert_error(404, "not_found", Some("customer_id"));
    api.put("/wishlists/987654/items/xyz")
        .await
        .assert_error(404, "not_found", Some("album_id"));
    api.put("/wishlists/987654/items/987654")
        .await
        .assert_error(404, "not_found", Some("customer_id"));
    api.delete("/wishlists/987654/items/zero")
        .await
        .assert_error(404, "not_found", Some("album_id"));
    assert_eq!(
        t.count_wishlist("SELECT count(*) AS n FROM wishlist.items"),
        0
    );
}

async fn items_are_listed_in_the_order_added(t: Target) {
    let customer = t.customers().create_customer("w6@example.com").await;
    let catalog = t.catalog();
    let api = t.wishlist();
    let mut albums = Vec::new();
    for i in 0..12 {
        albums.push(catalog.album(&format!("WL-{i}"), i % 2).await);
    }
    // Added in an order that is not the id order.
    let mut added = albums.clone();
    added.reverse();
    added.swap(0, 5);
    for album in &added {
        api.put(&format!("/wishlists/{customer}/items/{album}"))
            .await
            .ok(201);
    }
    let shown = api.get(&format!("/wishlists/{customer}")).await;
    let shown = shown.ok(200);
    assert_eq!(album_ids(shown), added);
    for item in shown["items"].as_array().unwrap() {
        let id = item["album_id"].as_i64().unwrap();
        let i = albums.iter().position(|a| *a == id).unwrap();
        assert_eq!(item["album"]["title"], format!("Title WL-{i}"));
        assert_eq!(item["album"]["in_stock"], i % 2 == 1);
    }
}

async fn an_album_the_catalog_does_not_have_is_listed_without_details(t: Target) {
    let customer = t.customers().create_customer("w7@example.com").await;
    let album = t.catalog().album("W-8", 1).await;
    let api = t.wishlist();
    api.put(&format!("/wishlists/{customer}/items/{album}"))
        .await
        .ok(201);
    // Albums cannot be deleted through the API; a row naming an album the catalog does not
    // have (any more) can only be made directly.
    t.insert_wishlist_item(customer, 987654);

    let shown = api.get(&format!("/wishlists/{customer}")).await;
    let shown = shown.ok(200);
    assert_eq!(album_ids(shown), vec![album, 987654]);
    assert_eq!(shown["items"][1]["album"], Value::Null);
    assert!(shown["items"][1].as_object().unwrap().contains_key("album"));
    assert_eq!(shown["items"][0]["album"]["title"], "Title W-8");
    assert!(
        shown.get("degraded").is_none(),
        "a missing album is not a degraded read: {shown}"
    );
}

async fn a_wishlist_holds_at_most_100_albums(t: Target) {
    const MAX: usize = 100;
    let customer = t.customers().create_customer("w9@example.com").await;
    let catalog = t.catalog();
    let api = t.wishlist();
    let artist = catalog.create_artist("Prolific").await;
    let mut albums = Vec::new();
    for i in 0..=MAX {
        albums.push(
            catalog
                .create_album(artist, &format!("CAP-{i}"), &format!("Cap {i}"), "pop", 1)
                .await,
        );
    }
    for album in &albums[..MAX] {
        api.put(&format!("/wishlists/{customer}/items/{album}"))
            .await
            .ok(201);
    }
    let last = albums[MAX];
    api.put(&format!("/wishlists/{customer}/items/{last}"))
        .await
        .assert_error(409, "wishlist_full", Some("album_id"));
    let count = || {
        t.count_wishlist(&format!(
            "SELECT count(*) AS n FROM wishlist.items WHERE customer_id = {customer}"
        ))
    };
    assert_eq!(count(), MAX as i64);
    // Adding one that is already there is still fine when full.
    api.put(&format!("/wishlists/{customer}/items/{}", albums[0]))
        .await
        .ok(200);
    // A full wishlist is read whole, in one piece.
    let shown = api.get(&format!("/wishlists/{customer}")).await;
    assert_eq!(album_ids(shown.ok(200)), albums[..MAX].to_vec());
    assert!(
        shown.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["album"]["title"].is_string())
    );
    // Making room makes the add succeed.
    let removed = api
        .delete(&format!("/wishlists/{customer}/items/{}", albums[0]))
        .await;
    assert_eq!(removed.status.as_u16(), 204, "{}", removed.body);
    api.put(&format!("/wishlists/{customer}/items/{last}"))
        .await
        .ok(201);
    assert_eq!(count(), MAX as i64);
}

async fn unknown_routes_and_methods_get_json_errors(t: Target) {
    let customer = t.customers().create_customer("w10@example.com").await;
    let api = t.wishlist();
    for path in [
        "/wishlists",
        "/wishlists/",
        &format!("/wishlists/{customer}/items"),
    ] {
        api.get(path).await.assert_error(404, "not_found", None);
    }
    for (method, path) in [
        (Method::POST, format!("/wishlists/{customer}")),
        (Method::DELETE, format!("/wishlists/{customer}")),
        (Method::GET, format!("/wishlists/{customer}/items/1")),
        (Method::POST, format!("/wishlists/{customer}/items/1")),
        (Method::PATCH, format!("/wishlists/{customer}/items/1")),
    ] {
        let reply = api.send(method, &path, None, &[]).await;
        reply.assert_error(405, "method_not_allowed", None);
        assert!(reply.header("allow").is_none(), "no Allow header");
    }
}
