//! Cross-target comparison: one scenario touching every catalog and wishlist endpoint, run against
//! the monolith and against the extracted services. Every answer is normalised (ids replaced by
//! the order in which each first appeared, timestamps by a placeholder) and the two sides must
//! give equal answers, step by step: status, content type, Location, and the whole body. Any drift
//! in shape, key set, error code, message or field fails here even where no case asserts on it.

use std::collections::HashMap;

use e2e::Reply;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::target::Target;

#[tokio::test]
async fn monolith_and_services_give_the_same_answers() {
    let (monolith, services) = tokio::join!(Target::monolith(), Target::wishlist_service());
    let (left, right) = tokio::join!(scenario(&monolith), scenario(&services));
    let (left, right) = (normalise(left), normalise(right));
    assert_eq!(left.len(), right.len(), "both sides ran the whole scenario");
    let mut differences = Vec::new();
    for (l, r) in left.iter().zip(&right) {
        assert_eq!(l.step, r.step);
        if l != r {
            differences.push(format!(
                "step {:?}\n  monolith: {}\n  services: {}",
                l.step,
                serde_json::to_string(&l.as_json()).unwrap(),
                serde_json::to_string(&r.as_json()).unwrap()
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} answers differ:\n{}",
        differences.len(),
        left.len(),
        differences.join("\n")
    );
    // The comparison compared something: successes and failures of every kind.
    let statuses: Vec<u16> = left.iter().map(|e| e.status).collect();
    for expected in [200, 201, 204, 400, 404, 405, 409, 413, 415, 422] {
        assert!(
            statuses.contains(&expected),
            "no {expected} in {statuses:?}"
        );
    }
}

/// One request and its answer, as recorded on one side.
#[derive(Debug, Clone, PartialEq)]
struct Exchange {
    step: &'static str,
    status: u16,
    content_type: Option<String>,
    location: Option<String>,
    body: Value,
}

impl Exchange {
    fn as_json(&self) -> Value {
        json!({
            "status": self.status, "content_type": self.content_type,
            "location": self.location, "body": self.body
        })
    }
}

#[derive(Default)]
struct Recorder {
    exchanges: Vec<Exchange>,
}

impl Recorder {
    /// Records the reply under `step` and hands it back for the scenario to use.
    fn record(&mut self, step: &'static str, reply: Reply) -> Reply {
        self.exchanges.push(Exchange {
            step,
            status: reply.status.as_u16(),
            content_type: reply.header("content-type").map(str::to_string),
            location: reply.header("location").map(str::to_string),
            body: reply.body.clone(),
        });
        reply
    }
}

/// The scenario, on one side. Ids in later requests come from this side's own answers.
async fn scenario(t: &Target) -> Vec<Exchange> {
    let (catalog, customers, wishlist) = (t.catalog(), t.customers(), t.wishlist());
    let mut r = Recorder::default();

    // Artists.
    let beatles = r
        .record(
            "create artist",
            catalog
                .post(
                    "/catalog/artists",
                    json!({"name": " The Beatles ", "country": "GB"}),
                )
                .await,
        )
        .id("id");
    let nina = r
        .record(
            "create artist without country",
            catalog
                .post("/catalog/artists", json!({"name": "Nina Simone"}))
                .await,
        )
        .id("id");
    r.record(
        "create artist invalid country",
        catalog
            .post("/catalog/artists", json!({"name": "X", "country": "gb"}))
            .await,
    );
    r.record(
        "get artist",
        catalog.get(&format!("/catalog/artists/{beatles}")).await,
    );
    r.record(
        "get unknown artist",
        catalog.get("/catalog/artists/987654").await,
    );
    let page = r.record(
        "list artists page 1",
        catalog.get("/catalog/artists?limit=1").await,
    );
    let cursor = page.body["next_cursor"].as_str().unwrap_or("").to_string();
    r.record(
        "list artists page 2",
        catalog
            .get(&format!("/catalog/artists?limit=1&cursor={cursor}"))
            .await,
    );
    r.record(
        "search artists",
        catalog.get("/catalog/artists?q=SIMONE").await,
    );
    r.record(
        "list artists bad limit",
        catalog.get("/catalog/artists?limit=500").await,
    );

    // Albums.
    let album = |sku: &str, title: &str, artist: i64, genre: &str, cents: i64, stock: i32| {
        json!({
            "sku": sku, "title": title, "artist_id": artist, "genre": genre,
            "release_year": 1969, "price": {"amount_cents": cents, "currency": "USD"},
            "stock": stock
        })
    };
    let abbey = r
        .record(
            "create album",
            catalog
                .post(
                    "/catalog/albums",
                    album("MC-1", "Abbey Road", beatles, "rock", 1299, 10),
                )
                .await,
        )
        .id("id");
    let let_it_be = r
        .record(
            "create second album",
            catalog
                .post(
                    "/catalog/albums",
                    album("MC-2", "Let It Be", beatles, "rock", 1099, 1),
                )
                .await,
        )
        .id("id");
    let pastel = r
        .record(
            "create album by other artist",
            catalog
                .post(
                    "/catalog/albums",
                    album("MC-3", "Pastel Blues", nina, "jazz", 999, 0),
                )
                .await,
        )
        .id("id");
    r.record(
        "create album duplicate sku",
        catalog
            .post(
                "/catalog/albums",
                album("MC-1", "Again", beatles, "rock", 1, 1),
            )
            .await,
    );
    r.record(
        "create album unknown artist",
        catalog
            .post(
                "/catalog/albums",
                album("MC-4", "Nobody's", 987654, "rock", 1, 1),
            )
            .await,
    );
    r.record(
        "create album invalid year",
        catalog
            .post("/catalog/albums", {
                let mut b = album("MC-5", "Too Old", beatles, "rock", 1, 1);
                b["release_year"] = json!(1800);
                b
            })
            .await,
    );
    r.record(
        "create album missing field",
        catalog
            .post(
                "/catalog/albums",
                json!({"sku": "MC-6", "title": "T", "artist_id": beatles}),
            )
            .await,
    );
    let page = r.record(
        "list albums page 1",
        catalog.get("/catalog/albums?limit=2").await,
    );
    let cursor = page.body["next_cursor"].as_str().unwrap_or("").to_string();
    r.record(
        "list albums page 2",
        catalog
            .get(&format!("/catalog/albums?limit=2&cursor={cursor}"))
            .await,
    );
    r.record(
        "list albums by artist",
        catalog
            .get(&format!("/catalog/albums?artist_id={beatles}"))
            .await,
    );
    r.record(
        "list albums by genre and text",
        catalog.get("/catalog/albums?genre=rock&q=let").await,
    );
    r.record(
        "list albums bad artist",
        catalog.get("/catalog/albums?artist_id=x").await,
    );
    r.record(
        "batch read",
        catalog
            .get(&format!(
                "/catalog/albums/batch?ids={let_it_be},987654,{abbey},{let_it_be}"
            ))
            .await,
    );
    r.record(
        "batch read bad ids",
        catalog.get("/catalog/albums/batch?ids=1,,2").await,
    );
    r.record(
        "get album",
        catalog.get(&format!("/catalog/albums/{abbey}")).await,
    );
    r.record(
        "get unknown album",
        catalog.get("/catalog/albums/987654").await,
    );
    r.record(
        "get malformed album id",
        catalog.get("/catalog/albums/abc").await,
    );
    r.record(
        "patch price",
        catalog
            .patch(
                &format!("/catalog/albums/{abbey}"),
                json!({"price": {"amount_cents": 1499, "currency": "USD"}}),
            )
            .await,
    );
    r.record(
        "patch stock",
        catalog
            .patch(&format!("/catalog/albums/{let_it_be}"), json!({"stock": 0}))
            .await,
    );
    r.record(
        "patch nothing",
        catalog
            .patch(&format!("/catalog/albums/{abbey}"), json!({}))
            .await,
    );
    r.record(
        "patch unknown album",
        catalog
            .patch("/catalog/albums/987654", json!({"stock": 1}))
            .await,
    );
    r.record(
        "patch other field",
        catalog
            .patch(&format!("/catalog/albums/{abbey}"), json!({"title": "x"}))
            .await,
    );

    // Bad requests of every kind.
    r.record(
        "malformed json",
        catalog
            .send_raw(
                Method::POST,
                "/catalog/albums",
                Some("application/json"),
                b"{\"sku\": ".to_vec(),
            )
            .await,
    );
    r.record(
        "wrong content type",
        catalog
            .send_raw(
                Method::POST,
                "/catalog/artists",
                Some("text/plain"),
                b"{}".to_vec(),
            )
            .await,
    );
    r.record(
        "body too large",
        catalog
            .send_raw(
                Method::POST,
                "/catalog/artists",
                Some("application/json"),
                vec![b' '; 70 * 1024],
            )
            .await,
    );
    r.record(
        "body not an object",
        catalog
            .send_raw(
                Method::POST,
                "/catalog/artists",
                Some("application/json"),
                b"[1]".to_vec(),
            )
            .await,
    );
    r.record("unknown route", catalog.get("/catalog/nothing").await);
    r.record(
        "method not allowed",
        catalog
            .send(Method::DELETE, "/catalog/albums", None, &[])
            .await,
    );

    // Wishlists.
    let customer = r
        .record(
            "create customer",
            customers
                .post(
                    "/customers",
                    json!({"name": "Ada Lovelace", "email": "Ada@Example.com"}),
                )
                .await,
        )
        .id("id");
    let items = |album: i64| format!("/wishlists/{customer}/items/{album}");
    r.record(
        "empty wishlist",
        wishlist.get(&format!("/wishlists/{customer}")).await,
    );
    r.record("add item", wishlist.put(&items(abbey)).await);
    r.record("add item again", wishlist.put(&items(abbey)).await);
    r.record(
        "add out of stock item",
        wishlist.put(&items(let_it_be)).await,
    );
    r.record("add third item", wishlist.put(&items(pastel)).await);
    r.record("add unknown album", wishlist.put(&items(987654)).await);
    r.record(
        "add for unknown customer",
        wishlist
            .put(&format!("/wishlists/987654/items/{abbey}"))
            .await,
    );
    r.record(
        "add malformed album",
        wishlist
            .put(&format!("/wishlists/{customer}/items/x"))
            .await,
    );
    // The catalog changes; the wishlist shows it at once.
    r.record(
        "reprice for the wishlist",
        catalog
            .patch(
                &format!("/catalog/albums/{abbey}"),
                json!({"price": {"amount_cents": 500, "currency": "EUR"}, "stock": 0}),
            )
            .await,
    );
    r.record(
        "wishlist with items",
        wishlist.get(&format!("/wishlists/{customer}")).await,
    );
    r.record("remove item", wishlist.delete(&items(let_it_be)).await);
    r.record(
        "remove item again",
        wishlist.delete(&items(let_it_be)).await,
    );
    r.record(
        "remove for unknown customer",
        wishlist
            .delete(&format!("/wishlists/987654/items/{abbey}"))
            .await,
    );
    r.record(
        "wishlist after removal",
        wishlist.get(&format!("/wishlists/{customer}")).await,
    );
    r.record(
        "unknown customer's wishlist",
        wishlist.get("/wishlists/987654").await,
    );
    r.record(
        "wishlist method not allowed",
        wishlist
            .send(Method::POST, &format!("/wishlists/{customer}"), None, &[])
            .await,
    );
    r.exchanges
}

// ---------------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Artist,
    Album,
    Customer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Artist => "artist",
            Kind::Album => "album",
            Kind::Customer => "customer",
        }
    }
}

/// Replaces each id by `<kind>#<n>`, `n` counting first appearances of that kind on this side;
/// an id absent from every answer (an unknown one such as 987654) stays a raw number until it
/// appears in one.
#[derive(Default)]
struct Ids {
    seen: HashMap<(Kind, i64), usize>,
    next: HashMap<Kind, usize>,
}

impl Ids {
    fn label(&mut self, kind: Kind, id: i64) -> String {
        let next = self.next.entry(kind).or_default();
        let n = *self.seen.entry((kind, id)).or_insert_with(|| {
            *next += 1;
            *next
        });
        format!("<{}#{n}>", kind.name())
    }
}

const TIMESTAMP_KEYS: [&str; 3] = ["updated_at", "added_at", "created_at"];

fn normalise(exchanges: Vec<Exchange>) -> Vec<Exchange> {
    let mut ids = Ids::default();
    exchanges
        .into_iter()
        .map(|mut e| {
            e.body = normalise_value(&mut ids, e.body, None);
            e.location = e.location.map(|l| normalise_location(&mut ids, &l));
            e
        })
        .collect()
}

fn normalise_location(ids: &mut Ids, location: &str) -> String {
    let (prefix, id) = location.rsplit_once('/').unwrap_or(("", location));
    let kind = match prefix {
        "/catalog/artists" => Kind::Artist,
        "/catalog/albums" => Kind::Album,
        "/customers" => Kind::Customer,
        _ => return location.to_string(),
    };
    match id.parse() {
        Ok(id) => format!("{prefix}/{}", ids.label(kind, id)),
        Err(_) => location.to_string(),
    }
}

/// What the `id` of an object names, from the object's own keys or where it sits.
fn kind_of_object(object: &Map<String, Value>, parent_key: Option<&str>) -> Option<Kind> {
    if object.contains_key("sku") {
        Some(Kind::Album)
    } else if object.contains_key("email") {
        Some(Kind::Customer)
    } else if object.contains_key("country") || parent_key == Some("artist") {
        Some(Kind::Artist)
    } else {
        None
    }
}

fn id_kind_of_key(key: &str) -> Option<Kind> {
    match key {
        "artist_id" => Some(Kind::Artist),
        "album_id" => Some(Kind::Album),
        "customer_id" => Some(Kind::Customer),
        _ => None,
    }
}

fn normalise_value(ids: &mut Ids, value: Value, parent_key: Option<&str>) -> Value {
    match value {
        Value::Object(object) => {
            let own_kind = kind_of_object(&object, parent_key);
            // The cursor is the id of the last item of the page.
            let cursor_kind = object
                .get("items")
                .and_then(|items| items.get(0))
                .and_then(Value::as_object)
                .and_then(|first| kind_of_object(first, None));
            let mut out = Map::new();
            for (key, v) in object {
                let normalised = match (key.as_str(), &v) {
                    ("id", Value::Number(n)) if own_kind.is_some() => {
                        Value::String(ids.label(own_kind.unwrap(), n.as_i64().unwrap()))
                    }
                    (k, Value::Number(n)) if id_kind_of_key(k).is_some() => {
                        Value::String(ids.label(id_kind_of_key(k).unwrap(), n.as_i64().unwrap()))
                    }
                    ("next_cursor", Value::String(c)) => match (cursor_kind, c.parse()) {
                        (Some(kind), Ok(id)) => Value::String(ids.label(kind, id)),
                        _ => v.clone(),
                    },
                    ("missing", Value::Array(missing)) => Value::Array(
                        missing
                            .iter()
                            .map(|m| match m.as_i64() {
                                Some(id) => Value::String(ids.label(Kind::Album, id)),
                                None => m.clone(),
                            })
                            .collect(),
                    ),
                    (k, Value::String(s)) if TIMESTAMP_KEYS.contains(&k) => {
                        assert!(
                            s.ends_with('Z') && s.contains('T'),
                            "{k} is not an RFC 3339 UTC timestamp: {s}"
                        );
                        Value::String("<timestamp>".into())
                    }
                    _ => normalise_value(ids, v, Some(&key)),
                };
                out.insert(key, normalised);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| normalise_value(ids, v, parent_key))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn normalising_replaces_ids_by_first_appearance_and_timestamps() {
    let raw = vec![
        Exchange {
            step: "a",
            status: 201,
            content_type: None,
            location: Some("/catalog/albums/42".into()),
            body: json!({"id": 42, "sku": "S", "artist": {"id": 7, "name": "N"},
                         "updated_at": "2026-01-01T00:00:00Z"}),
        },
        Exchange {
            step: "b",
            status: 200,
            content_type: None,
            location: None,
            body: json!({"items": [{"id": 7, "name": "N", "country": null}], "next_cursor": "7",
                         "missing": [42, 9], "customer_id": 42}),
        },
    ];
    let got = normalise(raw);
    assert_eq!(
        got[0].location.as_deref(),
        Some("/catalog/albums/<album#1>")
    );
    assert_eq!(
        got[0].body,
        json!({"id": "<album#1>", "sku": "S", "artist": {"id": "<artist#1>", "name": "N"},
               "updated_at": "<timestamp>"})
    );
    assert_eq!(
        got[1].body,
        json!({"items": [{"id": "<artist#1>", "name": "N", "country": null}],
               "next_cursor": "<artist#1>", "missing": ["<album#1>", "<album#2>"],
               "customer_id": "<customer#1>"})
    );
}

#[test]
fn normalising_hides_only_ids_and_times() {
    let side = |album: i64, stamp: &str, extra: Option<(&str, Value)>| {
        let mut body = json!({"customer_id": 3, "items": [
            {"album_id": album, "added_at": stamp, "album": null}
        ]});
        if let Some((key, value)) = extra {
            body[key] = value;
        }
        normalise(vec![Exchange {
            step: "s",
            status: 200,
            content_type: Some("application/json".into()),
            location: None,
            body,
        }])
    };
    let base = side(5, "2026-01-01T00:00:00Z", None);
    assert_eq!(base, side(77, "2027-02-02T02:02:02.5Z", None));
    assert_ne!(
        base,
        side(5, "2026-01-01T00:00:00Z", Some(("degraded", json!(true))))
    );
    assert_ne!(
        base,
        side(5, "2026-01-01T00:00:00Z", Some(("items", json!([]))))
    );
}
