//! The parallel run's corpora in `tests/parallel_run/` are generated here, so that what they hold
//! is written down once, as code: this test fails when a file differs from what the generator
//! makes. After changing the generator, write the files again with
//!
//! ```text
//! FIG_WRITE_CORPORA=1 cargo test -p fig --test corpora
//! ```
//!
//! The ids are the seed's (`fig up`, deterministic): with `--seed-scale 0.05` or more there are
//! artists 1 to 10, albums 1 to 100 and customers 1 to 50, so a request meant to find one does.
//! [`SEEDED_ITEMS`] are wishlist items of the seed at that scale (a `PUT` of one answers `200`,
//! another album `201`); at another scale the same requests are still compared, with other
//! statuses. Every write is replayed as a dry run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use router::record::Line;
use serde_json::{Value, json};

/// Items on the seeded wishlists at `--seed-scale 0.05`: (customer, album).
const SEEDED_ITEMS: [(u32, u32); 24] = [
    (1, 16),
    (2, 14),
    (2, 79),
    (3, 15),
    (5, 63),
    (6, 8),
    (10, 9),
    (11, 42),
    (12, 13),
    (13, 37),
    (14, 11),
    (15, 4),
    (16, 18),
    (17, 40),
    (18, 24),
    (19, 59),
    (20, 26),
    (22, 11),
    (24, 92),
    (26, 6),
    (27, 7),
    (37, 1),
    (40, 3),
    (50, 51),
];
/// Customers whose seeded wishlist (at that scale) is empty.
const EMPTY_WISHLISTS: [u32; 8] = [4, 7, 23, 33, 36, 39, 43, 47];
/// Albums the seed sold out (stock 0) at that scale.
const SOLD_OUT: [u32; 3] = [3, 30, 32];
const GENRES: [&str; 12] = [
    "rock",
    "jazz",
    "pop",
    "electronic",
    "hip-hop",
    "classical",
    "folk",
    "metal",
    "soul",
    "blues",
    "reggae",
    "country",
];
/// Ids that are not positive integers that fit in an i64: every one is a `404`.
const MALFORMED_IDS: [&str; 6] = ["0", "-1", "abc", "1.5", "99999999999999999999", "%20"];

#[derive(Default)]
struct Corpus {
    lines: Vec<Line>,
}

impl Corpus {
    fn add(&mut self, method: &str, target: impl Into<String>, body: Option<Value>) {
        self.with(method, target, &[], body);
    }

    fn get(&mut self, target: impl Into<String>) {
        self.add("GET", target, None);
    }

    fn with(
        &mut self,
        method: &str,
        target: impl Into<String>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) {
        self.lines.push(Line {
            method: method.to_string(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            body,
        });
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| serde_json::to_string(l).expect("a line serialises") + "\n")
            .collect()
    }
}

fn album(sku: &str) -> Value {
    json!({
        "sku": sku, "title": "Replayed Title", "artist_id": 1, "genre": "rock",
        "release_year": 1999, "price": {"amount_cents": 1299, "currency": "USD"}, "stock": 10
    })
}

/// `album(sku)` with `field` set to `value` (a dotted path: `price.currency`), or removed.
fn album_with(sku: &str, field: &str, value: Option<Value>) -> Value {
    let mut body = album(sku);
    let (object, key) = match field.split_once('.') {
        Some((outer, inner)) => (&mut body[outer], inner),
        None => (&mut body, field),
    };
    let object = object.as_object_mut().expect("an object");
    match value {
        Some(v) => object.insert(key.to_string(), v),
        None => object.remove(key),
    };
    body
}

/// Every catalog endpoint of the shared contract, reads and writes, successes and errors.
/// (Stock reservations are the catalog service's own and have no monolith side to compare.)
fn catalog() -> Corpus {
    let mut c = Corpus::default();
    // Artists: lists, pages, search, and every query error.
    c.get("/catalog/artists");
    for limit in [1, 2, 3, 5, 10, 200] {
        c.get(format!("/catalog/artists?limit={limit}"));
    }
    for cursor in [0, 3, 6, 9, 10] {
        c.get(format!("/catalog/artists?limit=3&cursor={cursor}"));
    }
    for q in [
        "the", "THE", "pilots", "Silent", "1", "%25", "_", "%5C", "nobody",
    ] {
        c.get(format!("/catalog/artists?q={q}"));
    }
    for query in [
        "q=silent&limit=1",
        "limit=",
        "cursor=",
        "limit=0&limit=3",
        "colour=blue",
        "limit=0",
        "limit=201",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "cursor=abc",
        "cursor=-1",
        "q=%00",
        "limit=%00",
    ] {
        c.get(format!("/catalog/artists?{query}"));
    }
    for id in 1..=10 {
        c.get(format!("/catalog/artists/{id}"));
    }
    for id in MALFORMED_IDS.iter().chain(&["999999"]) {
        c.get(format!("/catalog/artists/{id}"));
    }
    c.get("/catalog/artists/1/");

    // Albums: lists, filters, pages.
    c.get("/catalog/albums");
    for limit in [1, 10, 50, 200] {
        c.get(format!("/catalog/albums?limit={limit}"));
    }
    for cursor in [0, 25, 50, 75, 100] {
        c.get(format!("/catalog/albums?limit=25&cursor={cursor}"));
    }
    for artist in (1..=10)
        .map(|a| a.to_string())
        .chain(["999999".into(), "-5".into()])
    {
        c.get(format!("/catalog/albums?artist_id={artist}"));
    }
    for genre in GENRES.iter().chain(&["Rock", "unknown"]) {
        c.get(format!("/catalog/albums?genre={genre}"));
    }
    for q in ["parade", "FEVER", "pilots", "%25", "_", "zzz"] {
        c.get(format!("/catalog/albums?q={q}"));
    }
    for query in [
        "artist_id=7&genre=rock",
        "artist_id=9&limit=2",
        "artist_id=9&limit=2&cursor=40",
        "genre=rock&limit=5&cursor=20",
        "q=the&genre=blues&limit=3",
        "colour=blue&artist_id=&genre=",
        "artist_id=abc",
        "artist_id=1.5",
        "limit=0",
        "limit=300",
        "cursor=x",
        "q=%00",
    ] {
        c.get(format!("/catalog/albums?{query}"));
    }
    // Single albums: every seeded one up to 40, some later ones, the sold-out ones, bad ids.
    for id in (1..=40).chain([50, 75, 99, 100]) {
        c.get(format!("/catalog/albums/{id}"));
    }
    for id in MALFORMED_IDS.iter().chain(&["999999"]) {
        c.get(format!("/catalog/albums/{id}"));
    }
    c.get("/catalog/albums/");
    c.with(
        "GET",
        "/catalog/albums/1",
        &[("x-user-id", "42"), ("x-session-id", "s-1")],
        None,
    );
    c.add("GET", "/catalog/albums/2", Some(json!({"ignored": true})));
    c.with(
        "GET",
        "/catalog/albums/3",
        &[("x-fig-dry-run", "maybe")],
        None,
    );
    // Batch reads.
    let hundred: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    let ones = vec!["1"; 101].join(",");
    let sold_out: Vec<String> = SOLD_OUT.iter().map(|i| i.to_string()).collect();
    for ids in [
        "1,2,3".to_string(),
        "2,999999,1,2".into(),
        "%201%20,%202".into(),
        "999998,999999".into(),
        sold_out.join(","),
        hundred.join(","),
        format!("{},101", hundred.join(",")),
        ones,
        "".into(),
        "1,,2".into(),
        "abc".into(),
        "0".into(),
        "-1".into(),
        "%00".into(),
    ] {
        c.get(format!("/catalog/albums/batch?ids={ids}"));
    }
    c.get("/catalog/albums/batch");

    // Writes, replayed as dry runs. Artists.
    let long = |n: usize| "x".repeat(n);
    for body in [
        json!({"name": "Replayed Artist", "country": "GB"}),
        json!({"name": "  Padded Name  ", "country": null}),
        json!({"name": "No Country"}),
        json!({"name": "Ünïcödé ✓", "country": "SE"}),
        json!({"name": long(200)}),
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": long(201)}),
        json!({"name": "x", "country": "gb"}),
        json!({"name": "x", "country": "GBR"}),
        json!({"name": "x", "country": 1}),
        json!({"country": "GB"}),
        json!({"name": "x", "extra": 1}),
        json!({"name": 5}),
        json!({"name": "a\u{0000}b"}),
        json!([]),
        json!("x"),
        json!(1),
        json!(true),
        json!({"name": long(70_000)}),
    ] {
        c.add("POST", "/catalog/artists", Some(body));
    }
    c.add("POST", "/catalog/artists", None);
    c.with(
        "POST",
        "/catalog/artists",
        &[("content-type", "text/plain")],
        Some(json!({"name": "x"})),
    );
    // Albums: valid ones, the database's refusals, and each rule in order.
    let mut albums = vec![
        album("REPLAY-001"),
        album_with("REPLAY-002", "artist_id", Some(json!(10))),
        album_with(
            "REPLAY-003",
            "price",
            Some(json!({"amount_cents": 0, "currency": "EUR"})),
        ),
        album_with("REPLAY-004", "stock", Some(json!(0))),
        album_with("REPLAY-005", "release_year", Some(json!(1900))),
        album_with("REPLAY-006", "release_year", Some(json!(2100))),
        album_with("REPLAY-007", "price.amount_cents", Some(json!(100_000_000))),
        album_with("REPLAY-008", "price", Some(json!([1299, "USD"]))),
        album_with("REPLAY-009", "title", Some(json!("  Padded  "))),
        album("MC-000001"),
        album_with("MC-000002", "artist_id", Some(json!(999_999))),
        album_with("REPLAY-010", "artist_id", Some(json!(999_999))),
    ];
    for (field, value) in [
        ("sku", json!("bad sku")),
        ("sku", json!("")),
        ("sku", json!(long(65))),
        ("title", json!("")),
        ("title", json!(long(201))),
        ("artist_id", json!(0)),
        ("artist_id", json!(-1)),
        ("genre", json!("")),
        ("genre", json!(long(51))),
        ("release_year", json!(1899)),
        ("release_year", json!(2101)),
        ("price.amount_cents", json!(-1)),
        ("price.amount_cents", json!(100_000_001)),
        ("price.currency", json!("usd")),
        ("price.currency", json!("US")),
        ("stock", json!(-1)),
        ("stock", json!(1_000_001)),
        ("stock", json!("3")),
        ("stock", json!(3_000_000_000_i64)),
        ("price.x", json!(1)),
        ("extra", json!(true)),
    ] {
        albums.push(album_with("REPLAY-BAD", field, Some(value)));
    }
    for missing in ["stock", "price.currency", "sku"] {
        albums.push(album_with("REPLAY-BAD", missing, None));
    }
    for body in albums {
        c.add("POST", "/catalog/albums", Some(body));
    }
    // Price and stock changes.
    let usd = |cents: i64| json!({"amount_cents": cents, "currency": "USD"});
    for (id, body) in [
        ("1", json!({"stock": 5})),
        ("2", json!({"price": usd(1099)})),
        ("3", json!({"stock": 7, "price": usd(999)})),
        ("4", json!({"stock": 0})),
        (
            "5",
            json!({"price": {"amount_cents": 1500, "currency": "EUR"}}),
        ),
        ("6", json!({"stock": 40, "price": null})),
        ("7", json!({"stock": 1_000_000})),
        ("8", json!({"price": [1299, "USD"]})),
        ("100", json!({"stock": 1})),
        ("1", json!({})),
        ("1", json!({"stock": null, "price": null})),
        ("1", json!({"title": "x"})),
        ("1", json!({"stock": -1})),
        ("1", json!({"stock": 1_000_001})),
        ("1", json!({"price": usd(-1)})),
        (
            "1",
            json!({"price": {"amount_cents": 1, "currency": "usd"}}),
        ),
        ("1", json!([])),
        ("999999", json!({"stock": 1})),
        ("999999", json!({})),
        ("abc", json!({})),
        ("0", json!({"stock": -1})),
        ("abc", json!({"title": "x"})),
        ("batch", json!({"stock": 1})),
    ] {
        c.add("PATCH", format!("/catalog/albums/{id}"), Some(body));
    }
    c.add("PATCH", "/catalog/albums/1", None);
    c.with(
        "PATCH",
        "/catalog/albums/1",
        &[("content-type", "text/plain")],
        Some(json!({"stock": 1})),
    );
    // Methods a path does not take, and paths that do not exist.
    for (method, target) in [
        ("DELETE", "/catalog/albums/1"),
        ("PUT", "/catalog/albums/1"),
        ("POST", "/catalog/albums/1"),
        ("DELETE", "/catalog/albums"),
        ("DELETE", "/catalog/artists/1"),
        ("PATCH", "/catalog/artists/1"),
        ("PUT", "/catalog/artists"),
        ("POST", "/catalog/nothing"),
        ("POST", "/catalog/albums/"),
    ] {
        c.add(method, target, None);
    }
    c
}

/// Every wishlist endpoint: reads of every seeded customer, adds of new and present albums,
/// removals with and without `added_before`, and every error.
fn wishlist() -> Corpus {
    let mut c = Corpus::default();
    for customer in 1..=50 {
        c.get(format!("/wishlists/{customer}"));
    }
    for customer in (1..=50).step_by(5) {
        c.with(
            "GET",
            format!("/wishlists/{customer}"),
            &[("x-user-id", &customer.to_string())],
            None,
        );
    }
    for customer in [2, 3, 19, 22, 42] {
        c.get(format!("/wishlists/{customer}?page=2&limit=1"));
    }
    for id in MALFORMED_IDS.iter().chain(&["999999"]) {
        c.get(format!("/wishlists/{id}"));
    }
    c.get("/wishlists/");
    c.get("/wishlists/1/items");
    c.get("/wishlists/1/items/16");
    c.with("GET", "/wishlists/4", &[("x-fig-dry-run", "maybe")], None);

    // Adds, replayed as dry runs: one album per customer, the seeded items again (200), and an
    // item on an empty wishlist, a sold-out album, every error.
    for customer in 1..=50u32 {
        let album = (customer * 37) % 100 + 1;
        c.add("PUT", format!("/wishlists/{customer}/items/{album}"), None);
    }
    for (customer, album) in SEEDED_ITEMS {
        c.add("PUT", format!("/wishlists/{customer}/items/{album}"), None);
    }
    for (customer, album) in EMPTY_WISHLISTS.iter().zip(SOLD_OUT.iter().cycle()) {
        c.add("PUT", format!("/wishlists/{customer}/items/{album}"), None);
    }
    for (customer, album) in [
        ("999999", "1"),
        ("1", "999999"),
        ("999999", "999999"),
        ("abc", "1"),
        ("1", "abc"),
        ("0", "1"),
        ("1", "0"),
        ("-1", "1"),
        ("abc", "abc"),
        ("1", "1.5"),
        ("1", "99999999999999999999"),
    ] {
        c.add("PUT", format!("/wishlists/{customer}/items/{album}"), None);
    }
    c.add(
        "PUT",
        "/wishlists/1/items/2",
        Some(json!({"note": "a body is not read"})),
    );

    // Removals, as dry runs: present items, absent ones, `added_before` in every form.
    for (customer, album) in SEEDED_ITEMS {
        c.add(
            "DELETE",
            format!("/wishlists/{customer}/items/{album}"),
            None,
        );
    }
    for customer in (1..=50u32).step_by(3) {
        let album = (customer * 13) % 100 + 1;
        c.add(
            "DELETE",
            format!("/wishlists/{customer}/items/{album}"),
            None,
        );
    }
    for added_before in [
        "2026-01-01T00:00:00Z",
        "2999-01-01T00:00:00Z",
        "2026-11-23T11:29:54.387824Z",
        "2026-11-23T12:00:00%2B01:00",
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-11-23T12:00:00+01:00",
        "%00",
    ] {
        c.add(
            "DELETE",
            format!("/wishlists/1/items/16?added_before={added_before}"),
            None,
        );
    }
    for (customer, album) in [
        ("999999", "1"),
        ("1", "999999"),
        ("abc", "1"),
        ("1", "abc"),
        ("0", "1"),
        ("1", "0"),
        ("abc", "1?added_before=yesterday"),
        ("999999", "1?added_before=yesterday"),
    ] {
        c.add(
            "DELETE",
            format!("/wishlists/{customer}/items/{album}"),
            None,
        );
    }
    // Methods a path does not take, and paths that do not exist.
    for (method, target) in [
        ("POST", "/wishlists/1"),
        ("DELETE", "/wishlists/1"),
        ("PUT", "/wishlists/1"),
        ("PATCH", "/wishlists/1/items/16"),
        ("POST", "/wishlists/1/items/16"),
        ("PUT", "/wishlists/1/items"),
        ("DELETE", "/wishlists/1/items/16/extra"),
    ] {
        c.add(method, target, None);
    }
    c
}

#[test]
fn the_corpora_are_what_the_generator_makes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/parallel_run");
    let write = std::env::var_os("FIG_WRITE_CORPORA").is_some();
    for (name, corpus) in [("catalog.jsonl", catalog()), ("wishlist.jsonl", wishlist())] {
        assert!(
            corpus.lines.len() >= 200,
            "{name}: {} requests",
            corpus.lines.len()
        );
        let path = dir.join(name);
        let text = corpus.text();
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let found =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            found == text,
            "{} is not what the generator makes: run FIG_WRITE_CORPORA=1 cargo test -p fig \
             --test corpora",
            path.display()
        );
    }
}
