//! The catalog's contract: artists, albums, the batch read, PATCH, and how bad input is refused.
//! Each case runs against the monolith and against the catalog service.

use reqwest::Method;
use serde_json::{Value, json};

use crate::target::Target;

contract! {
    targets: [monolith, catalog_service];
    artists_are_created_fetched_and_validated,
    artists_are_paged_and_searched,
    albums_are_created_with_every_field,
    album_creation_is_validated,
    albums_are_filtered_and_paged_without_gaps,
    album_list_queries_are_validated,
    albums_are_read_in_batches,
    batch_reads_are_validated,
    price_and_stock_are_patched,
    patch_requests_are_validated_in_order,
    bad_bodies_get_the_json_error_envelope,
    garbage_bodies_never_cause_a_server_error,
    unknown_routes_and_methods_get_json_errors,
    health_and_readiness_answer,
}

/// A valid album body by `artist`.
fn album_body(sku: &str, artist: i64) -> Value {
    json!({
        "sku": sku, "title": "Kind of Blue", "artist_id": artist, "genre": "jazz",
        "release_year": 1959, "price": {"amount_cents": 1999, "currency": "USD"}, "stock": 7
    })
}

fn ids_of(page: &Value, key: &str) -> Vec<i64> {
    page[key]
        .as_array()
        .unwrap_or_else(|| panic!("no array {key:?} in {page}"))
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

fn len_of(page: &Value) -> usize {
    page["items"].as_array().unwrap().len()
}

async fn artists_are_created_fetched_and_validated(t: Target) {
    let api = t.catalog();
    let created = api
        .post(
            "/catalog/artists",
            json!({"name": "  Nina Simone ", "country": "US"}),
        )
        .await;
    let id = created.id("id");
    assert_eq!(
        created.ok(201),
        &json!({"id": id, "name": "Nina Simone", "country": "US"}),
        "the name is trimmed and the key order fixed"
    );
    assert_eq!(
        created.header("location"),
        Some(format!("/catalog/artists/{id}").as_str())
    );
    created.assert_json();

    let got = api.get(&format!("/catalog/artists/{id}")).await;
    assert_eq!(got.ok(200), &created.body);

    // country is optional and nullable, and always present in the answer.
    for body in [
        json!({"name": "No Country"}),
        json!({"name": "Null", "country": null}),
    ] {
        let reply = api.post("/catalog/artists", body).await;
        assert_eq!(reply.ok(201)["country"], Value::Null);
        assert!(reply.body.as_object().unwrap().contains_key("country"));
    }
    // 200 characters, counted as characters not bytes.
    let long = "é".repeat(200);
    assert_eq!(
        api.post("/catalog/artists", json!({"name": long}))
            .await
            .ok(201)["name"],
        long.as_str()
    );

    for bad in ["999999", "abc", "0", "-1", "1.5", "99999999999999999999"] {
        api.get(&format!("/catalog/artists/{bad}"))
            .await
            .assert_error(404, "not_found", Some("artist_id"));
    }

    let invalid = [
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"name": "X", "country": "usa"}), "country"),
        (json!({"name": "X", "country": "gb"}), "country"),
        (json!({"country": "GB"}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"name": "X", "genre": "rock"}), "genre"),
        // Rules run in the order name, country.
        (json!({"name": "", "country": "usa"}), "name"),
    ];
    for (body, field) in invalid {
        api.post("/catalog/artists", body)
            .await
            .assert_error(422, "invalid_field", Some(field));
    }
    assert_eq!(
        t.count_catalog("SELECT count(*) AS n FROM catalog.artists"),
        4,
        "nothing invalid stored"
    );
}

async fn artists_are_paged_and_searched(t: Target) {
    let api = t.catalog();
    let mut paged = Vec::new();
    for n in 0..5 {
        paged.push(api.create_artist(&format!("Paged {n}")).await);
    }
    api.create_artist("Someone Else").await;
    let percent = api.create_artist("100% Pure").await;
    api.create_artist("1000 Pure").await;

    // Three pages of at most two, following next_cursor, which is a string until the end.
    let mut seen = Vec::new();
    let mut path = "/catalog/artists?limit=2&q=paged".to_string();
    let mut pages = 0;
    loop {
        let reply = api.get(&path).await;
        let page = reply.ok(200);
        pages += 1;
        assert!(len_of(page) <= 2);
        seen.extend(ids_of(page, "items"));
        match &page["next_cursor"] {
            Value::String(c) => path = format!("/catalog/artists?limit=2&q=paged&cursor={c}"),
            Value::Null => break,
            other => panic!("next_cursor must be a string or null, got {other}"),
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, paged, "every match once, in id order");

    // The search is a case-insensitive substring; % and _ match literally.
    assert_eq!(
        len_of(api.get("/catalog/artists?q=PAGED%203").await.ok(200)),
        1
    );
    assert_eq!(
        ids_of(api.get("/catalog/artists?q=%25").await.ok(200), "items"),
        vec![percent]
    );
    assert_eq!(
        len_of(api.get("/catalog/artists?q=_").await.ok(200)),
        0,
        "_ is literal"
    );
    assert_eq!(
        api.get("/catalog/artists?q=nobody").await.ok(200),
        &json!({"items": [], "next_cursor": null})
    );
    // An empty value is absent (the default limit), and the last repeated value wins.
    assert_eq!(len_of(api.get("/catalog/artists?limit=").await.ok(200)), 8);
    assert_eq!(
        len_of(api.get("/catalog/artists?limit=0&limit=3").await.ok(200)),
        3
    );
    assert_eq!(
        len_of(api.get("/catalog/artists?limit=200").await.ok(200)),
        8
    );
    // A full last page has no cursor: one exists exactly when more items follow.
    assert_eq!(
        api.get("/catalog/artists?limit=8").await.ok(200)["next_cursor"],
        Value::Null
    );

    for bad in ["0", "201", "abc", "-1", "1.5"] {
        api.get(&format!("/catalog/artists?limit={bad}"))
            .await
            .assert_error(422, "invalid_field", Some("limit"));
    }
    for bad in ["x", "-1"] {
        api.get(&format!("/catalog/artists?cursor={bad}"))
            .await
            .assert_error(422, "invalid_field", Some("cursor"));
    }
    api.get("/catalog/artists?q=%00")
        .await
        .assert_error(400, "bad_query", None);
}

async fn albums_are_created_with_every_field(t: Target) {
    let api = t.catalog();
    let artist = api.create_artist("Miles Davis").await;
    let mut body = album_body("MD-1959", artist);
    body["title"] = json!("  Kind of Blue ");
    body["genre"] = json!(" jazz  ");
    let created = api.post("/catalog/albums", body).await;
    let id = created.id("id");
    let updated_at = created.body["updated_at"].clone();
    assert_eq!(
        created.ok(201),
        &json!({
            "id": id, "sku": "MD-1959", "title": "Kind of Blue",
            "artist": {"id": artist, "name": "Miles Davis"}, "genre": "jazz",
            "release_year": 1959, "price": {"amount_cents": 1999, "currency": "USD"},
            "stock": 7, "updated_at": updated_at
        })
    );
    let stamp = updated_at.as_str().unwrap();
    assert!(stamp.ends_with('Z') && stamp.contains('T'), "{stamp}");
    assert_eq!(
        created.header("location"),
        Some(format!("/catalog/albums/{id}").as_str())
    );

    let got = api.get(&format!("/catalog/albums/{id}")).await;
    assert_eq!(got.ok(200), &created.body);

    // Quirk kept by the contract: a nested object may be given as an array of its fields.
    let mut quirk = album_body("MD_array-2", artist);
    quirk["price"] = json!([1299, "EUR"]);
    assert_eq!(
        api.post("/catalog/albums", quirk).await.ok(201)["price"],
        json!({"amount_cents": 1299, "currency": "EUR"})
    );
    // The bounds themselves are allowed.
    let mut edges = album_body("unused", artist);
    edges["release_year"] = json!(2100);
    edges["price"] = json!({"amount_cents": 0, "currency": "XYZ"});
    edges["stock"] = json!(1_000_000);
    edges["sku"] = json!("S".repeat(64));
    assert_eq!(
        api.post("/catalog/albums", edges).await.ok(201)["stock"],
        1_000_000
    );

    for bad in ["424242", "abc", "0", "-7", "99999999999999999999"] {
        api.get(&format!("/catalog/albums/{bad}"))
            .await
            .assert_error(404, "not_found", Some("album_id"));
    }
}

async fn album_creation_is_validated(t: Target) {
    let api = t.catalog();
    let artist = api.create_artist("Miles Davis").await;
    let body = album_body("MD-1959", artist);
    api.post("/catalog/albums", body.clone()).await.ok(201);

    api.post("/catalog/albums", body.clone())
        .await
        .assert_error(409, "sku_taken", Some("sku"));
    // The sku is checked before the artist.
    let mut taken_and_unknown = body.clone();
    taken_and_unknown["artist_id"] = json!(987654);
    api.post("/catalog/albums", taken_and_unknown)
        .await
        .assert_error(409, "sku_taken", Some("sku"));
    let mut unknown_artist = body.clone();
    unknown_artist["sku"] = json!("NEW-1");
    unknown_artist["artist_id"] = json!(987654);
    api.post("/catalog/albums", unknown_artist)
        .await
        .assert_error(422, "unknown_reference", Some("artist_id"));

    let cases = [
        ("sku", json!("bad sku!"), "sku"),
        ("sku", json!(""), "sku"),
        ("sku", json!("S".repeat(65)), "sku"),
        ("title", json!(""), "title"),
        ("title", json!("t".repeat(201)), "title"),
        ("genre", json!("  "), "genre"),
        ("genre", json!("g".repeat(51)), "genre"),
        ("release_year", json!(1800), "release_year"),
        ("release_year", json!(2101), "release_year"),
        (
            "price",
            json!({"amount_cents": -5, "currency": "USD"}),
            "price.amount_cents",
        ),
        (
            "price",
            json!({"amount_cents": 100_000_001, "currency": "USD"}),
            "price.amount_cents",
        ),
        (
            "price",
            json!({"amount_cents": 5, "currency": "dollars"}),
            "price.currency",
        ),
        (
            "price",
            json!({"amount_cents": 5, "currency": "usd"}),
            "price.currency",
        ),
        ("price", json!({"amount_cents": 5}), "price.currency"),
        (
            "price",
            json!({"amount_cents": 5, "currency": "USD", "x": 1}),
            "price.x",
        ),
        ("price", json!([5, 6]), "price[1]"),
        ("stock", json!(-1), "stock"),
        ("stock", json!(1_000_001), "stock"),
        ("stock", json!("many"), "stock"),
        ("stock", json!(3_000_000_000_i64), "stock"),
        ("artist_id", json!(null), "artist_id"),
        ("artist_id", json!(0), "artist_id"),
        ("artist_id", json!(-3), "artist_id"),
        ("artist_id", json!("1"), "artist_id"),
        ("extra", json!(true), "extra"),
    ];
    for (key, value, field) in cases {
        let mut bad = body.clone();
        bad["sku"] = json!("OTHER-1");
        bad[key] = value;
        api.post("/catalog/albums", bad)
            .await
            .assert_error(422, "invalid_field", Some(field));
    }
    let mut missing = body.clone();
    missing["sku"] = json!("OTHER-2");
    missing.as_object_mut().unwrap().remove("stock");
    api.post("/catalog/albums", missing)
        .await
        .assert_error(422, "invalid_field", Some("stock"));
    // Rules run in the documented order: sku before title before release_year.
    let mut several = body.clone();
    several["sku"] = json!("bad sku!");
    several["title"] = json!("");
    api.post("/catalog/albums", several)
        .await
        .assert_error(422, "invalid_field", Some("sku"));
    let mut later = body.clone();
    later["sku"] = json!("OTHER-3");
    later["release_year"] = json!(1);
    later["stock"] = json!(-1);
    api.post("/catalog/albums", later).await.assert_error(
        422,
        "invalid_field",
        Some("release_year"),
    );

    assert_eq!(
        t.count_catalog("SELECT count(*) AS n FROM catalog.albums"),
        1,
        "nothing invalid stored"
    );
}

async fn albums_are_filtered_and_paged_without_gaps(t: Target) {
    let api = t.catalog();
    let a = api.create_artist("Alpha Band").await;
    let b = api.create_artist("Beta Collective").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            api.create_album(a, &format!("A-{i}"), &format!("Alpha Song {i}"), "rock", 1)
                .await,
        );
    }
    for i in 0..3 {
        ids.push(
            api.create_album(b, &format!("B-{i}"), &format!("100% Beta_{i}"), "jazz", 1)
                .await,
        );
    }

    let mut seen = Vec::new();
    let mut path = "/catalog/albums?limit=3".to_string();
    loop {
        let reply = api.get(&path).await;
        let page = reply.ok(200);
        seen.extend(ids_of(page, "items"));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/catalog/albums?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every album once, in id order");

    // Every listed album has the full shape.
    let listed = api.get(&format!("/catalog/albums?artist_id={b}")).await;
    let listed = listed.ok(200);
    assert_eq!(ids_of(listed, "items"), ids[5..].to_vec());
    assert_eq!(
        listed["items"][0]["artist"],
        json!({"id": b, "name": "Beta Collective"})
    );
    assert_eq!(listed["next_cursor"], Value::Null);

    let count = |path: &'static str| {
        let api = api.clone();
        async move { len_of(api.get(path).await.ok(200)) }
    };
    assert_eq!(count("/catalog/albums?genre=rock").await, 5);
    assert_eq!(
        count("/catalog/albums?genre=Rock").await,
        0,
        "genre is exact"
    );
    assert_eq!(count("/catalog/albums?artist_id=987654").await, 0);
    // Filters combine with AND.
    assert_eq!(
        len_of(
            api.get(&format!("/catalog/albums?artist_id={a}&genre=jazz"))
                .await
                .ok(200)
        ),
        0
    );
    assert_eq!(
        len_of(
            api.get(&format!("/catalog/albums?artist_id={a}&genre=rock&limit=2"))
                .await
                .ok(200)
        ),
        2
    );
    // Text search covers the artist's name and the title, case-insensitively, with % and _
    // matched literally.
    assert_eq!(count("/catalog/albums?q=collective").await, 3);
    assert_eq!(count("/catalog/albums?q=ALPHA%20SONG").await, 5);
    assert_eq!(count("/catalog/albums?q=100%25%20Beta_1").await, 1);
    assert_eq!(count("/catalog/albums?q=%25").await, 3, "% is literal");
    assert_eq!(count("/catalog/albums?q=a_s").await, 0, "_ is literal");
    assert_eq!(
        api.get("/catalog/albums?q=nothing%20at%20all")
            .await
            .ok(200),
        &json!({"items": [], "next_cursor": null})
    );
}

async fn album_list_queries_are_validated(t: Target) {
    let api = t.catalog();
    api.album("Q-1", 1).await;
    for (query, field) in [
        ("artist_id=x", "artist_id"),
        ("artist_id=1.5", "artist_id"),
        ("limit=201", "limit"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("cursor=x", "cursor"),
        ("cursor=-1", "cursor"),
    ] {
        api.get(&format!("/catalog/albums?{query}"))
            .await
            .assert_error(422, "invalid_field", Some(field));
    }
    for query in ["q=a%00b", "genre=%00", "x%00=1"] {
        api.get(&format!("/catalog/albums?{query}"))
            .await
            .assert_error(400, "bad_query", None);
    }
    // Unknown parameters are ignored, empty values are absent.
    assert_eq!(
        len_of(
            api.get("/catalog/albums?colour=blue&artist_id=&genre=")
                .await
                .ok(200)
        ),
        1
    );
}

async fn albums_are_read_in_batches(t: Target) {
    let api = t.catalog();
    let x = api.album("X-1", 1).await;
    let y = api.album("Y-1", 0).await;
    let got = api
        .get(&format!("/catalog/albums/batch?ids={y},987654,{x},{y}"))
        .await;
    let body = got.ok(200);
    assert_eq!(
        ids_of(body, "items"),
        vec![y, x],
        "requested order, deduplicated"
    );
    assert_eq!(body["missing"], json!([987654]));
    // Each item is a whole album, as GET /catalog/albums/{id} shows it.
    let single = api.get(&format!("/catalog/albums/{x}")).await;
    assert_eq!(body["items"][1], single.body);

    assert_eq!(
        api.get("/catalog/albums/batch?ids=987654,987655")
            .await
            .ok(200),
        &json!({"items": [], "missing": [987654, 987655]}),
        "all missing is still 200, both arrays present"
    );
    let spaced = api
        .get(&format!("/catalog/albums/batch?ids=%20{x}%20,{y}"))
        .await;
    assert_eq!(ids_of(spaced.ok(200), "items"), vec![x, y]);
    assert_eq!(spaced.body["missing"], json!([]));
    // 100 entries are allowed, duplicates included.
    let hundred = vec![x.to_string(); 100].join(",");
    let reply = api
        .get(&format!("/catalog/albums/batch?ids={hundred}"))
        .await;
    assert_eq!(ids_of(reply.ok(200), "items"), vec![x]);
}

async fn batch_reads_are_validated(t: Target) {
    let api = t.catalog();
    let x = api.album("X-1", 1).await;
    let many = (1..=101)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let many_duplicates = vec![x.to_string(); 101].join(",");
    for query in [
        String::new(),
        "?ids=".to_string(),
        "?ids=1,nope".to_string(),
        "?ids=1,,2".to_string(),
        "?ids=0".to_string(),
        "?ids=-1".to_string(),
        "?ids=1.5".to_string(),
        format!("?ids={many}"),
        format!("?ids={many_duplicates}"),
        // The count is checked before the entries.
        format!("?ids={many},nope"),
    ] {
        api.get(&format!("/catalog/albums/batch{query}"))
            .await
            .assert_error(422, "invalid_field", Some("ids"));
    }
    api.get("/catalog/albums/batch?ids=%00")
        .await
        .assert_error(400, "bad_query", None);
    // Only GET: the path is not an album id.
    for method in [Method::PATCH, Method::POST, Method::DELETE] {
        api.send(
            method,
            "/catalog/albums/batch",
            Some(&json!({"stock": 1})),
            &[],
        )
        .await
        .assert_error(405, "method_not_allowed", None);
    }
    assert_eq!(api.stock(x).await, 1);
}

async fn price_and_stock_are_patched(t: Target) {
    let api = t.catalog();
    let id = api.album("P-1", 3).await;
    let path = format!("/catalog/albums/{id}");
    let before = api.get(&path).await.body;

    let updated = api
        .patch(
            &path,
            json!({"price": {"amount_cents": 1500, "currency": "EUR"}}),
        )
        .await;
    let body = updated.ok(200).clone();
    assert_eq!(
        body["price"],
        json!({"amount_cents": 1500, "currency": "EUR"}),
        "the currency may change"
    );
    assert_ne!(body["updated_at"], before["updated_at"]);
    // Everything else is untouched, and the answer is the whole album.
    let mut expected = before.clone();
    expected["price"] = body["price"].clone();
    expected["updated_at"] = body["updated_at"].clone();
    assert_eq!(body, expected);
    assert_eq!(api.get(&path).await.ok(200), &body);

    let restocked = api.patch(&path, json!({"stock": 40, "price": null})).await;
    assert_eq!(restocked.ok(200)["stock"], 40);
    assert_eq!(
        restocked.body["price"]["currency"], "EUR",
        "null means absent"
    );

    let both = api
        .patch(
            &path,
            json!({"stock": 0, "price": {"amount_cents": 0, "currency": "USD"}}),
        )
        .await;
    assert_eq!(both.ok(200)["stock"], 0);
    assert_eq!(both.body["price"]["amount_cents"], 0);
    assert_eq!(api.stock(id).await, 0);
}

async fn patch_requests_are_validated_in_order(t: Target) {
    let api = t.catalog();
    let id = api.album("P-1", 3).await;
    let path = format!("/catalog/albums/{id}");
    let cases = [
        (json!({}), "body"),
        (json!({"stock": null, "price": null}), "body"),
        (json!({"stock": -3}), "stock"),
        (json!({"stock": 1_000_001}), "stock"),
        (json!({"stock": "3"}), "stock"),
        (
            json!({"price": {"amount_cents": -1, "currency": "USD"}}),
            "price.amount_cents",
        ),
        (
            json!({"price": {"amount_cents": 1, "currency": "US"}}),
            "price.currency",
        ),
        (json!({"price": {"currency": "USD"}}), "price.amount_cents"),
        (json!({"title": "renamed"}), "title"),
        (json!({"sku": "NEW", "stock": 1}), "sku"),
    ];
    for (body, field) in cases {
        api.patch(&path, body)
            .await
            .assert_error(422, "invalid_field", Some(field));
    }
    // An unknown id is 404, but only once the body has passed its rules...
    api.patch("/catalog/albums/777777", json!({"stock": 1}))
        .await
        .assert_error(404, "not_found", Some("album_id"));
    api.patch("/catalog/albums/777777", json!({}))
        .await
        .assert_error(422, "invalid_field", Some("body"));
    // ...a malformed id is refused before the rules...
    api.patch("/catalog/albums/abc", json!({}))
        .await
        .assert_error(404, "not_found", Some("album_id"));
    api.patch("/catalog/albums/0", json!({"stock": -1}))
        .await
        .assert_error(404, "not_found", Some("album_id"));
    // ...and the body's own checks come before either.
    api.send_raw(
        Method::PATCH,
        "/catalog/albums/abc",
        Some("application/json"),
        b"{".to_vec(),
    )
    .await
    .assert_error(400, "malformed_json", None);
    api.patch("/catalog/albums/abc", json!({"title": "x"}))
        .await
        .assert_error(422, "invalid_field", Some("title"));
    api.send_raw(
        Method::PATCH,
        "/catalog/albums/777777",
        Some("text/plain"),
        b"{}".to_vec(),
    )
    .await
    .assert_error(415, "unsupported_media_type", Some("Content-Type"));

    assert_eq!(api.stock(id).await, 3, "nothing changed");
}

async fn bad_bodies_get_the_json_error_envelope(t: Target) {
    let api = t.catalog();
    let album = api.album("B-1", 2).await;
    let patch = format!("/catalog/albums/{album}");
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024));
    let endpoints = [
        (Method::POST, "/catalog/artists"),
        (Method::POST, "/catalog/albums"),
        (Method::PATCH, patch.as_str()),
    ];
    for (method, path) in &endpoints {
        let send = |ct: Option<&'static str>, body: &[u8]| {
            let (api, method, body) = (api.clone(), method.clone(), body.to_vec());
            async move { api.send_raw(method, path, ct, body).await }
        };
        let json = Some("application/json");
        send(json, b"{\"name\": ")
            .await
            .assert_error(400, "malformed_json", None);
        send(json, b"")
            .await
            .assert_error(400, "malformed_json", None);
        send(json, b"  \n ")
            .await
            .assert_error(400, "malformed_json", None);
        send(json, b"{} x")
            .await
            .assert_error(400, "malformed_json", None);
        send(json, b"{\"stock\": 1e400}")
            .await
            .assert_error(400, "malformed_json", None);
        send(Some("text/plain"), b"{}").await.assert_error(
            415,
            "unsupported_media_type",
            Some("Content-Type"),
        );
        send(Some("application/x-www-form-urlencoded"), b"name=x")
            .await
            .assert_error(415, "unsupported_media_type", Some("Content-Type"));
        send(json, huge.as_bytes())
            .await
            .assert_error(413, "payload_too_large", None);
        for not_object in [&b"[]"[..], b"\"text\"", b"null", b"42", b"true"] {
            send(json, not_object)
                .await
                .assert_error(422, "invalid_field", Some("body"));
        }
        send(json, br#"{"name": "a\u0000b"}"#).await.assert_error(
            422,
            "invalid_field",
            Some("name"),
        );
        send(json, br#"{"price": {"currency": "U\u0000D"}}"#)
            .await
            .assert_error(422, "invalid_field", Some("price.currency"));
        // Any +json type and a charset are JSON; a missing Content-Type is accepted too. These
        // bodies pass the body checks and fail the endpoint's own rules.
        for ct in [
            Some("application/vnd.musiccorp+json"),
            Some("Application/JSON; charset=utf-8"),
            None,
        ] {
            let reply = send(ct, b"{\"stock\": -1, \"name\": \"\"}").await;
            assert_eq!(reply.status.as_u16(), 422, "{ct:?}: {}", reply.body);
            assert_eq!(reply.body["error"]["code"], "invalid_field");
        }
    }
    // A key given twice is refused, naming it.
    api.send_raw(
        Method::POST,
        "/catalog/artists",
        Some("application/json"),
        br#"{"name": "A", "name": "B"}"#.to_vec(),
    )
    .await
    .assert_error(422, "invalid_field", Some("name"));
    api.send_raw(
        Method::PATCH,
        &patch,
        Some("application/json"),
        br#"{"price": {"amount_cents": 1, "currency": "USD", "currency": "EUR"}}"#.to_vec(),
    )
    .await
    .assert_error(422, "invalid_field", Some("price.currency"));

    assert_eq!(
        t.count_catalog("SELECT count(*) AS n FROM catalog.artists"),
        1
    );
    assert_eq!(
        t.count_catalog("SELECT count(*) AS n FROM catalog.albums"),
        1
    );
    assert_eq!(api.stock(album).await, 2);
}

async fn garbage_bodies_never_cause_a_server_error(t: Target) {
    let api = t.catalog();
    let bodies: Vec<&[u8]> = vec![
        b"{\"artist_id\": 9223372036854775807, \"stock\": 2147483648}",
        b"{\"sku\": \"S\", \"title\": \"T\", \"artist_id\": 9223372036854775807, \"genre\": \"g\", \"release_year\": 2000, \"price\": {\"amount_cents\": 1, \"currency\": \"USD\"}, \"stock\": 1}",
        b"{\"price\": {\"amount_cents\": 9223372036854775808}}",
        b"{\"stock\": 1.5}",
        &[0xff, 0xfe, 0x00, 0x7b],
        br#"{"name": "A", "country": "G\u0000"}"#,
        br#"{"na\u0000me": "A"}"#,
        b"{\"name\": {\"nested\": [1, 2, {\"deep\": null}]}}",
    ];
    for (method, path) in [
        (Method::POST, "/catalog/artists"),
        (Method::POST, "/catalog/albums"),
        (Method::PATCH, "/catalog/albums/1"),
    ] {
        for body in &bodies {
            let reply = api
                .send_raw(
                    method.clone(),
                    path,
                    Some("application/json"),
                    body.to_vec(),
                )
                .await;
            assert!(
                reply.status.is_client_error(),
                "{method} {path} {:?} -> {} {}",
                String::from_utf8_lossy(body),
                reply.status,
                reply.body
            );
            assert!(reply.body["error"]["code"].is_string(), "{}", reply.body);
            let text = reply.body.to_string().to_lowercase();
            for leak in ["sql", "postgres", "constraint", "relation", "diesel"] {
                assert!(!text.contains(leak), "{path}: leaked {leak}: {text}");
            }
        }
    }
    assert_eq!(
        t.count_catalog("SELECT count(*) AS n FROM catalog.artists"),
        0
    );
}

async fn unknown_routes_and_methods_get_json_errors(t: Target) {
    let api = t.catalog();
    for path in [
        "/no/such/thing",
        "/catalog/albums/",
        "/catalog/artists/1/albums",
        "/catalog",
    ] {
        api.get(path).await.assert_error(404, "not_found", None);
    }
    for (method, path) in [
        (Method::DELETE, "/catalog/albums"),
        (Method::PUT, "/catalog/artists"),
        (Method::PATCH, "/catalog/artists/1"),
        (Method::DELETE, "/catalog/albums/1"),
        (Method::PUT, "/catalog/albums/1"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/readyz"),
    ] {
        let reply = api.send(method, path, None, &[]).await;
        reply.assert_error(405, "method_not_allowed", None);
        assert!(reply.header("allow").is_none(), "no Allow header");
    }
}

async fn health_and_readiness_answer(t: Target) {
    let api = t.catalog();
    let health = api.get("/healthz").await;
    assert_eq!(health.ok(200), &json!({"status": "ok"}));
    health.assert_json();
    assert_eq!(
        api.get("/readyz").await.ok(200),
        &json!({"status": "ready"})
    );
}
