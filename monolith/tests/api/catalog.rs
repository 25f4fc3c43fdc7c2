use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn artists_are_created_fetched_listed_and_validated() {
    let app = TestApp::spawn().await;
    let created = app
        .post(
            "/catalog/artists",
            json!({"name": "  Nina Simone ", "country": "US"}),
        )
        .await;
    let body = created.ok(201);
    assert_eq!(body["name"], "Nina Simone");
    assert_eq!(body["country"], "US");
    let id = body["id"].as_i64().unwrap();

    let got = app.get(&format!("/catalog/artists/{id}")).await;
    assert_eq!(got.ok(200)["name"], "Nina Simone");
    app.get("/catalog/artists/999999")
        .await
        .assert_error(404, "not_found", Some("artist_id"));
    app.get("/catalog/artists/abc")
        .await
        .assert_error(404, "not_found", Some("artist_id"));

    app.post("/catalog/artists", json!({"name": ""}))
        .await
        .assert_error(422, "invalid_field", Some("name"));
    app.post("/catalog/artists", json!({"name": "X", "country": "usa"}))
        .await
        .assert_error(422, "invalid_field", Some("country"));
    app.post("/catalog/artists", json!({"country": "GB"}))
        .await
        .assert_error(422, "invalid_field", Some("name"));

    for n in 0..4 {
        app.artist(&format!("Paged {n}")).await;
    }
    let first = app.get("/catalog/artists?limit=2&q=paged").await;
    let first = first.ok(200);
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = app
        .get(&format!("/catalog/artists?limit=2&q=paged&cursor={cursor}"))
        .await;
    let second = second.ok(200);
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert_eq!(second["items"][1]["name"], "Paged 3");
    assert_eq!(
        second["next_cursor"],
        json!(null),
        "no cursor after the last page"
    );
    app.get("/catalog/artists?limit=0")
        .await
        .assert_error(422, "invalid_field", Some("limit"));
    app.get("/catalog/artists?cursor=x")
        .await
        .assert_error(422, "invalid_field", Some("cursor"));
}

#[tokio::test]
async fn albums_are_created_with_every_field_and_validated() {
    let app = TestApp::spawn().await;
    let artist = app.artist("Miles Davis").await;
    let body = json!({
        "sku": "MD-1959", "title": "Kind of Blue", "artist_id": artist, "genre": "jazz",
        "release_year": 1959, "price": {"amount_cents": 1999, "currency": "USD"}, "stock": 7
    });
    let created = app.post("/catalog/albums", body.clone()).await;
    let album = created.ok(201);
    let location = format!("/catalog/albums/{}", album["id"]);
    assert_eq!(created.headers["location"], location.as_str());
    assert_eq!(album["sku"], "MD-1959");
    assert_eq!(album["title"], "Kind of Blue");
    assert_eq!(
        album["artist"],
        json!({"id": artist, "name": "Miles Davis"})
    );
    assert_eq!(album["genre"], "jazz");
    assert_eq!(album["release_year"], 1959);
    assert_eq!(
        album["price"],
        json!({"amount_cents": 1999, "currency": "USD"})
    );
    assert_eq!(album["stock"], 7);
    assert!(album["updated_at"].as_str().unwrap().ends_with('Z'));

    let id = album["id"].as_i64().unwrap();
    assert_eq!(
        app.get(&format!("/catalog/albums/{id}")).await.ok(200)["title"],
        "Kind of Blue"
    );
    app.get("/catalog/albums/424242")
        .await
        .assert_error(404, "not_found", Some("album_id"));

    app.post("/catalog/albums", body.clone())
        .await
        .assert_error(409, "sku_taken", Some("sku"));

    let mut unknown_artist = body.clone();
    unknown_artist["sku"] = json!("NEW-1");
    unknown_artist["artist_id"] = json!(987654);
    app.post("/catalog/albums", unknown_artist)
        .await
        .assert_error(422, "unknown_reference", Some("artist_id"));

    let cases = [
        ("sku", json!("bad sku!"), "sku"),
        ("title", json!(""), "title"),
        ("release_year", json!(1800), "release_year"),
        (
            "price",
            json!({"amount_cents": -5, "currency": "USD"}),
            "price.amount_cents",
        ),
        (
            "price",
            json!({"amount_cents": 5, "currency": "dollars"}),
            "price.currency",
        ),
        ("price", json!({"amount_cents": 5}), "price.currency"),
        ("stock", json!(-1), "stock"),
        ("stock", json!("many"), "stock"),
        ("artist_id", json!(null), "artist_id"),
        ("artist_id", json!(0), "artist_id"),
    ];
    for (key, value, field) in cases {
        let mut bad = body.clone();
        bad["sku"] = json!("OTHER-1");
        bad[key] = value;
        app.post("/catalog/albums", bad)
            .await
            .assert_error(422, "invalid_field", Some(field));
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM catalog.albums"),
        1,
        "nothing invalid stored"
    );
}

#[tokio::test]
async fn albums_are_listed_by_filter_and_paged_without_gaps() {
    let app = TestApp::spawn().await;
    let a = app.artist("Alpha Band").await;
    let b = app.artist("Beta Collective").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.album_by(a, &format!("A-{i}"), &format!("Alpha Song {i}"), "rock", 1)
                .await,
        );
    }
    for i in 0..3 {
        ids.push(
            app.album_by(b, &format!("B-{i}"), &format!("100% Beta_{i}"), "jazz", 1)
                .await,
        );
    }

    let mut seen = Vec::new();
    let mut path = "/catalog/albums?limit=3".to_string();
    loop {
        let page = app.get(&path).await;
        let page = page.ok(200);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/catalog/albums?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every album once, in id order");

    let by_artist = app.get(&format!("/catalog/albums?artist_id={b}")).await;
    assert_eq!(by_artist.ok(200)["items"].as_array().unwrap().len(), 3);
    let by_genre = app.get("/catalog/albums?genre=rock").await;
    assert_eq!(by_genre.ok(200)["items"].as_array().unwrap().len(), 5);
    // Text search covers the artist's name and the title, and matches % and _ literally.
    let by_artist_name = app.get("/catalog/albums?q=collective").await;
    assert_eq!(by_artist_name.ok(200)["items"].as_array().unwrap().len(), 3);
    let literal = app.get("/catalog/albums?q=100%25%20Beta_1").await;
    assert_eq!(literal.ok(200)["items"].as_array().unwrap().len(), 1);
    let wildcard = app.get("/catalog/albums?q=%25").await;
    assert_eq!(
        wildcard.ok(200)["items"].as_array().unwrap().len(),
        3,
        "% is literal"
    );

    app.get("/catalog/albums?artist_id=x").await.assert_error(
        422,
        "invalid_field",
        Some("artist_id"),
    );
    app.get("/catalog/albums?limit=201")
        .await
        .assert_error(422, "invalid_field", Some("limit"));
}

#[tokio::test]
async fn batch_read_returns_requested_order_and_missing_ids() {
    let app = TestApp::spawn().await;
    let x = app.album("X-1", 1).await;
    let y = app.album("Y-1", 0).await;
    let got = app
        .get(&format!("/catalog/albums/batch?ids={y},999999,{x},{y}"))
        .await;
    let body = got.ok(200);
    let ids: Vec<i64> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![y, x]);
    assert_eq!(body["missing"], json!([999999]));

    app.get("/catalog/albums/batch")
        .await
        .assert_error(422, "invalid_field", Some("ids"));
    app.get("/catalog/albums/batch?ids=1,nope")
        .await
        .assert_error(422, "invalid_field", Some("ids"));
    let many = (1..=101)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    app.get(&format!("/catalog/albums/batch?ids={many}"))
        .await
        .assert_error(422, "invalid_field", Some("ids"));
}

#[tokio::test]
async fn price_and_stock_updates_apply_and_are_validated() {
    let app = TestApp::spawn().await;
    let id = app.album("P-1", 3).await;
    let before = app.get(&format!("/catalog/albums/{id}")).await.body["updated_at"].clone();

    let updated = app
        .patch(
            &format!("/catalog/albums/{id}"),
            json!({"price": {"amount_cents": 1500, "currency": "EUR"}}),
        )
        .await;
    let body = updated.ok(200);
    assert_eq!(
        body["price"],
        json!({"amount_cents": 1500, "currency": "EUR"})
    );
    assert_eq!(body["stock"], 3, "untouched field kept");
    assert_ne!(body["updated_at"], before);

    let restocked = app
        .patch(&format!("/catalog/albums/{id}"), json!({"stock": 40}))
        .await;
    assert_eq!(restocked.ok(200)["stock"], 40);

    app.patch(&format!("/catalog/albums/{id}"), json!({}))
        .await
        .assert_error(422, "invalid_field", Some("body"));
    app.patch(&format!("/catalog/albums/{id}"), json!({"stock": -3}))
        .await
        .assert_error(422, "invalid_field", Some("stock"));
    app.patch(
        &format!("/catalog/albums/{id}"),
        json!({"title": "renamed"}),
    )
    .await
    .assert_error(422, "invalid_field", Some("title"));
    app.patch("/catalog/albums/777777", json!({"stock": 1}))
        .await
        .assert_error(404, "not_found", Some("album_id"));
    assert_eq!(app.stock(id).await, 40);
}
