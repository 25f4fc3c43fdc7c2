//! Write ownership as run-time state, on a real router database: the store (`ownership::set`
//! and friends, as the flip calls them), every instance following it (two on one database, and
//! one taking its toggles from Unleash), writes held while a flip is under way, and the
//! acknowledgements a flip waits for.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use localpg::TestDb;
use router::WriteOwner::{Extracted, Legacy};
use router::ownership;
use router::proxy::Limits;
use router::run::Running;
use router::{RouteTable, sync::Source};
use serde_json::{Value, json};
use support::full;

const TOKEN: &str = "test-token-ownership";

/// What an upstream received: `METHOD path body`, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// An upstream that records every request and answers `{"upstream": name}`.
async fn recording(name: &'static str) -> (String, Seen) {
    recording_with(name, false).await
}

/// A recording upstream; with `fail_reads`, it answers every `GET` `503` (a struggling
/// extracted service, for the fallback).
async fn recording_with(name: &'static str, fail_reads: bool) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let base = support::upstream(move |req: Request<Incoming>| {
        let log = log.clone();
        async move {
            if fail_reads && req.method() == http::Method::GET {
                return Response::builder()
                    .status(503)
                    .body(full(String::new()))
                    .unwrap();
            }
            let line = format!("{} {}", req.method(), req.uri().path());
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            log.lock()
                .unwrap()
                .push(format!("{line} {}", String::from_utf8_lossy(&body)));
            Response::builder()
                .header("content-type", "application/json")
                .body(full(json!({ "upstream": name }).to_string()))
                .unwrap()
        }
    })
    .await;
    (base, seen)
}

/// What the monolith and the catalog service received for `path`.
fn received(sides: &[&Seen], path: &str) -> Vec<String> {
    sides
        .iter()
        .flat_map(|s| s.lock().unwrap().clone())
        .filter(|line| line.split(' ').nth(1) == Some(path))
        .collect()
}

struct Sides {
    monolith: Seen,
    catalog: Seen,
    table: RouteTable,
}

async fn sides() -> Sides {
    sides_with(false).await
}

async fn sides_with(catalog_fails_reads: bool) -> Sides {
    let (monolith_url, monolith) = recording("monolith").await;
    let (catalog_url, catalog) = recording_with("catalog", catalog_fails_reads).await;
    let mut table = RouteTable::musiccorp();
    table.set_upstream("monolith", &monolith_url).unwrap();
    table.set_upstream("catalog", &catalog_url).unwrap();
    Sides {
        monolith,
        catalog,
        table,
    }
}

async fn instance(
    db: &TestDb,
    table: RouteTable,
    name: &str,
    limits: Limits,
    source: Source,
) -> Running {
    support::start_instance(db.url(), TOKEN, table, name, source, limits).await
}

async fn store_instance(db: &TestDb, table: RouteTable, name: &str) -> Running {
    instance(db, table, name, Limits::default(), Source::Store).await
}

/// Runs `f` on a connection of its own to `db`, off the runtime's thread (the store is
/// blocking diesel, as the flip will call it).
async fn on_db<T: Send + 'static>(
    db: &TestDb,
    f: impl FnOnce(&mut PgConnection) -> T + Send + 'static,
) -> T {
    let url = db.url().to_string();
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).expect("connect to the router database");
        f(&mut conn)
    })
    .await
    .unwrap()
}

async fn set(db: &TestDb, owner: router::WriteOwner, held: bool) -> i64 {
    on_db(db, move |c| ownership::set(c, "catalog", owner, held))
        .await
        .expect("set")
}

/// Polls `check` until it holds, for 10 s at most.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Status, JSON body and `Retry-After` of `method base+path`, with `body` if any.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, res.json().await.unwrap_or(Value::Null), retry_after)
}

/// The upstream that answered a write to `path` on `r`'s data port.
async fn write_lands(http: &reqwest::Client, r: &Running, path: &str) -> String {
    let (status, body, _) = call(
        http,
        reqwest::Method::POST,
        format!("http://{}{path}", r.addr),
        Some("{}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["upstream"].as_str().unwrap().to_string()
}

/// Turns `catalog.reads` on (default strategy) through `r`'s admin API.
async fn enable_catalog_reads(r: &Running, reason: &str) {
    let res = reqwest::Client::new()
        .put(format!(
            "http://{}/admin/toggles/catalog.reads",
            r.admin_addr
        ))
        .bearer_auth(TOKEN)
        .header("X-Actor", "test")
        .header("X-Reason", reason)
        .json(
            &json!({"name": "catalog.reads", "enabled": true, "strategies": [{"name": "default"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
}

async fn admin_get(r: &Running, path: &str) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("http://{}{path}", r.admin_addr));
    if path != "/admin/ownership?no-token" {
        req = req.bearer_auth(TOKEN);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn admin_json(r: &Running, path: &str) -> Value {
    let (status, text) = admin_get(r, path).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// The value of the series `line` (`name{labels}`) in `r`'s metrics, 0 when absent.
async fn metric(r: &Running, series: &str) -> u64 {
    let (_, text) = admin_get(r, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

const HELD: &str = "router_writes_held_total{capability=\"catalog\"}";
const HOLD_TIMEOUTS: &str = "router_write_hold_timeouts_total{capability=\"catalog\"}";

#[tokio::test]
async fn a_stored_owner_moves_writes_on_every_instance() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let s = sides().await;
    let a = store_instance(&db, s.table.clone(), "a").await;
    let b = store_instance(&db, s.table.clone(), "b").await;
    // Toggles from Unleash (here: a's Unleash client API); ownership still from the database.
    let u = instance(
        &db,
        s.table.clone(),
        "u",
        Limits::default(),
        Source::Unleash {
            api_url: format!("http://{}/api", a.admin_addr),
            token: TOKEN.into(),
            every: Duration::from_millis(50),
        },
    )
    .await;
    let http = reqwest::Client::new();
    for r in [&a, &b, &u] {
        assert_eq!(
            write_lands(&http, r, "/catalog/albums").await,
            "monolith",
            "the table's owner"
        );
    }

    let version = set(&db, Extracted, false).await;
    for r in [&a, &b, &u] {
        until("a write reaches the extracted side", || async {
            write_lands(&http, r, "/catalog/albums").await == "catalog"
        })
        .await;
    }
    // Reads still follow the read toggle (off), not the write owner.
    let (status, body, _) = call(
        &http,
        reqwest::Method::GET,
        format!("http://{}/catalog/albums", a.addr),
        None,
    )
    .await;
    assert_eq!((status, body["upstream"].as_str()), (200, Some("monolith")));
    // Other capabilities keep the table's owner.
    let (_, body, _) = call(
        &http,
        reqwest::Method::POST,
        format!("http://{}/wishlists/1/items", a.addr),
        Some("{}"),
    )
    .await;
    assert_ne!(body["upstream"], "catalog", "{body}");

    // An instance started now applies the stored owner from its first request.
    let c = store_instance(&db, s.table.clone(), "c").await;
    assert_eq!(write_lands(&http, &c, "/catalog/albums").await, "catalog");

    let listed = admin_json(&a, "/admin/ownership").await;
    assert_eq!(listed["version"], version, "{listed}");
    let catalog = listed["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "catalog")
        .unwrap();
    assert_eq!(
        (
            &catalog["owner"],
            &catalog["held"],
            &catalog["held_since"],
            &catalog["configured_owner"]
        ),
        (
            &json!("extracted"),
            &json!(false),
            &Value::Null,
            &json!("legacy")
        ),
        "{listed}"
    );
    let names: Vec<&str> = listed["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "u"], "{listed}");
    assert!(
        listed["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["version"] == version && i["seen_at"].is_string()),
        "{listed}"
    );
    let routes = admin_json(&b, "/admin/routes").await;
    let catalog = routes["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "catalog")
        .unwrap();
    assert_eq!(
        (&catalog["write_owner"], &catalog["held"]),
        (&json!("extracted"), &json!(false)),
        "/admin/routes shows the live owner: {routes}"
    );
    let (status, _) = admin_get(&a, "/admin/ownership?no-token").await;
    assert_eq!(status, 401, "behind the token like every admin path");

    // And back: a flip the other way moves them again.
    set(&db, Legacy, false).await;
    for r in [&a, &b, &u, &c] {
        until("a write reaches the legacy side again", || async {
            write_lands(&http, r, "/catalog/albums").await == "monolith"
        })
        .await;
    }
    for r in [a, b, u, c] {
        r.stop().await;
    }
}

#[tokio::test]
async fn a_read_falls_back_to_the_legacy_copy_only_while_legacy_owns_the_writes() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let s = sides_with(true).await;
    let r = store_instance(&db, s.table.clone(), "fallback").await;
    enable_catalog_reads(&r, "reads to the catalog service").await;
    let http = reqwest::Client::new();
    let read = || async {
        let res = http
            .get(format!("http://{}/catalog/albums", r.addr))
            .send()
            .await
            .unwrap();
        let reason = res
            .headers()
            .get("x-fig-reason")
            .map(|v| v.to_str().unwrap().to_string());
        (res.status().as_u16(), reason)
    };
    assert_eq!(
        read().await,
        (200, Some("fallback_to_legacy".to_string())),
        "legacy owns the writes: its copy is fresh"
    );
    set(&db, Extracted, false).await;
    until("the extracted side's failure is the client's", || async {
        read().await.0 != 200
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn a_held_write_waits_unread_and_goes_to_the_new_owner_while_reads_pass() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let mut s = sides().await;
    // Shorter than the hold below: the upstream's time starts when the write is let go.
    let catalog = s
        .table
        .capabilities
        .iter()
        .position(|c| c.name == "catalog")
        .unwrap();
    s.table.capabilities[catalog].timeout = Duration::from_millis(200);
    let limits = Limits {
        write_hold: Duration::from_secs(20),
        ..Limits::default()
    };
    let a = instance(&db, s.table.clone(), "a", limits, Source::Store).await;
    let b = instance(&db, s.table.clone(), "b", limits, Source::Store).await;

    let held = set(&db, Legacy, true).await;
    for r in [&a, &b] {
        until("the hold is applied", || async {
            r.router.owners.version() >= held
        })
        .await;
    }
    let listed = admin_json(&a, "/admin/ownership").await;
    let entry = &listed["capabilities"][catalog];
    assert_eq!(
        (&entry["owner"], &entry["held"]),
        (&json!("legacy"), &json!(true))
    );
    assert!(entry["held_since"].is_string(), "{listed}");

    let http = reqwest::Client::new();
    let writes: Vec<_> = [&a, &b]
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let (http, url) = (
                http.clone(),
                format!("http://{}/catalog/albums/held", r.addr),
            );
            tokio::spawn(async move {
                let body = format!("{{\"title\":\"held {i}\"}}");
                let sent = Instant::now();
                let answer = call(&http, reqwest::Method::POST, url, Some(&body)).await;
                (answer, sent.elapsed())
            })
        })
        .collect();
    for r in [&a, &b] {
        until("the write is held", || async { metric(r, HELD).await == 1 }).await;
    }
    // A read during the hold is answered at once.
    let asked = Instant::now();
    let (status, body, _) = call(
        &http,
        reqwest::Method::GET,
        format!("http://{}/catalog/albums", a.addr),
        None,
    )
    .await;
    assert_eq!((status, body["upstream"].as_str()), (200, Some("monolith")));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "a read is never held"
    );
    // Longer than the catalog's timeout, so a hold that ate into it would show as a 504.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        writes.iter().all(|w| !w.is_finished()),
        "the writes are still waiting"
    );
    assert_eq!(
        received(&[&s.monolith, &s.catalog], "/catalog/albums/held"),
        Vec::<String>::new(),
        "nothing reached either side during the hold"
    );

    let released = set(&db, Extracted, false).await;
    assert!(released > held);
    for (i, w) in writes.into_iter().enumerate() {
        let ((status, body, _), took) = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("released writes are answered")
            .unwrap();
        assert_eq!(
            (status, body["upstream"].as_str()),
            (200, Some("catalog")),
            "write {i} goes to the new owner: {body}"
        );
        assert!(took >= Duration::from_millis(300), "{took:?}");
    }
    let mut landed = received(&[&s.catalog], "/catalog/albums/held");
    landed.sort();
    assert_eq!(
        landed,
        [
            "POST /catalog/albums/held {\"title\":\"held 0\"}",
            "POST /catalog/albums/held {\"title\":\"held 1\"}"
        ],
        "each write arrives once, its body whole, at the new owner"
    );
    assert_eq!(
        received(&[&s.monolith], "/catalog/albums/held"),
        Vec::<String>::new()
    );
    for r in [&a, &b] {
        assert_eq!(metric(r, HOLD_TIMEOUTS).await, 0);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_write_held_past_the_limit_is_refused_and_sent_nowhere() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let s = sides().await;
    let hold = Duration::from_millis(300);
    let limits = Limits {
        write_hold: hold,
        ..Limits::default()
    };
    let r = instance(&db, s.table.clone(), "short", limits, Source::Store).await;
    let held = set(&db, Extracted, true).await;
    until("the hold is applied", || async {
        r.router.owners.version() >= held
    })
    .await;

    let http = reqwest::Client::new();
    let sent = Instant::now();
    let (status, body, retry_after) = call(
        &http,
        reqwest::Method::POST,
        format!("http://{}/catalog/albums/late", r.addr),
        Some("{\"title\":\"late\"}"),
    )
    .await;
    let took = sent.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "write_held", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("catalog"), "{message}");
    assert_eq!(
        body["error"].get("upstream"),
        None,
        "the router's own answer"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(took >= hold, "held for the limit first: {took:?}");
    // A bodiless write on a kept connection is refused the same way; the connection goes on.
    let (status, _, _) = call(
        &http,
        reqwest::Method::DELETE,
        format!("http://{}/catalog/albums/late", r.addr),
        None,
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(
        received(&[&s.monolith, &s.catalog], "/catalog/albums/late"),
        Vec::<String>::new(),
        "a refused held write reaches no upstream"
    );
    assert_eq!(metric(&r, HELD).await, 2);
    assert_eq!(metric(&r, HOLD_TIMEOUTS).await, 2);
    // Reads were never held, and the hold's end lets writes through again.
    let (status, _, _) = call(
        &http,
        reqwest::Method::GET,
        format!("http://{}/catalog/albums/late", r.addr),
        None,
    )
    .await;
    assert_eq!(status, 200);
    set(&db, Extracted, false).await;
    until("writes flow once the hold ends", || async {
        write_lands(&http, &r, "/catalog/albums/after").await == "catalog"
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn instances_acknowledge_the_version_and_behind_names_the_ones_that_have_not() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let s = sides().await;
    let a = store_instance(&db, s.table.clone(), "a").await;
    let b = store_instance(&db, s.table.clone(), "b").await;
    let alive = Duration::from_secs(60);

    let first = set(&db, Extracted, true).await;
    until("both instances acknowledge", || async {
        on_db(&db, move |c| ownership::behind(c, first, alive))
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let acked = on_db(&db, ownership::instances).await.unwrap();
    assert_eq!(
        acked
            .iter()
            .map(|i| (i.name.as_str(), i.version))
            .collect::<Vec<_>>(),
        [("a", first), ("b", first)]
    );

    // b stops: it can no longer acknowledge, and is named until it has been silent long enough.
    b.stop().await;
    let second = set(&db, Extracted, false).await;
    until("a acknowledges the second version", || async {
        on_db(&db, ownership::instances)
            .await
            .unwrap()
            .iter()
            .any(|i| i.name == "a" && i.version == second)
    })
    .await;
    let behind =
        |version: i64, within: Duration| on_db(&db, move |c| ownership::behind(c, version, within));
    assert_eq!(behind(second, alive).await.unwrap(), ["b"]);
    assert_eq!(
        behind(first, alive).await.unwrap(),
        Vec::<String>::new(),
        "b did apply the first"
    );
    on_db(&db, |c| {
        diesel::sql_query(
            "UPDATE router_instances SET seen_at = now() - interval '10 minutes' WHERE instance = 'b'",
        )
        .execute(c)
    })
    .await
    .unwrap();
    assert_eq!(
        behind(second, alive).await.unwrap(),
        Vec::<String>::new(),
        "silent for longer than alive_within: gone"
    );
    assert_eq!(
        behind(second, Duration::from_secs(3600)).await.unwrap(),
        ["b"]
    );
    // An instance that acknowledged an older version just now is behind; acknowledging again
    // moves its row, not a second one.
    on_db(&db, move |c| ownership::ack(c, "ghost", second - 1))
        .await
        .unwrap();
    assert_eq!(behind(second, alive).await.unwrap(), ["ghost"]);
    on_db(&db, move |c| ownership::ack(c, "ghost", second))
        .await
        .unwrap();
    assert_eq!(behind(second, alive).await.unwrap(), Vec::<String>::new());
    assert_eq!(on_db(&db, ownership::instances).await.unwrap().len(), 3);
    a.stop().await;
}

/// The next notification heard, as `channel payload`.
async fn next(heard: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("a notification")
        .unwrap()
}

#[tokio::test]
async fn set_bumps_the_version_and_notifies_only_when_its_transaction_commits() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let (client, mut connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(format!("{} {}", n.channel(), n.payload()));
            }
        }
    });
    client
        .batch_execute("LISTEN router_ownership")
        .await
        .unwrap();

    assert_eq!(
        on_db(&db, ownership::load).await.unwrap(),
        (0, vec![]),
        "nothing stored"
    );
    assert_eq!(set(&db, Legacy, true).await, 1);
    assert_eq!(next(&mut heard).await, "router_ownership 1");
    let (version, rows) = on_db(&db, ownership::load).await.unwrap();
    assert_eq!(version, 1);
    let since = rows[0].held_since.expect("held since the hold began");
    assert_eq!(
        (rows[0].capability.as_str(), rows[0].owner, rows[0].held),
        ("catalog", Legacy, true)
    );

    // The owner changes during the hold: the hold's start stays.
    assert_eq!(set(&db, Extracted, true).await, 2);
    assert_eq!(next(&mut heard).await, "router_ownership 2");
    let (_, rows) = on_db(&db, ownership::load).await.unwrap();
    assert_eq!(
        (rows[0].owner, rows[0].held_since),
        (Extracted, Some(since))
    );
    assert_eq!(set(&db, Extracted, true).await, 2, "no change, no version");

    // Rolled back with the caller's transaction: neither the change nor its notification.
    on_db(&db, |c| {
        c.transaction::<(), _, _>(|tx| {
            ownership::set(tx, "catalog", Legacy, false).unwrap();
            ownership::set(tx, "wishlist", Legacy, true).unwrap();
            Err(diesel::result::Error::RollbackTransaction)
        })
    })
    .await
    .unwrap_err();
    on_db(&db, |c| {
        diesel::sql_query("NOTIFY router_ownership, 'marker'").execute(c)
    })
    .await
    .unwrap();
    assert_eq!(next(&mut heard).await, "router_ownership marker");
    assert_eq!(on_db(&db, ownership::version).await.unwrap(), 2);

    assert_eq!(set(&db, Extracted, false).await, 3);
    assert_eq!(next(&mut heard).await, "router_ownership 3");
    let (version, rows) = on_db(&db, ownership::load).await.unwrap();
    assert_eq!(version, 3);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].owner, rows[0].held, rows[0].held_since),
        (Extracted, false, None),
        "the hold's start goes with the hold"
    );
    // The table refuses an owner that is neither side.
    let refused = on_db(&db, |c| {
        diesel::sql_query("UPDATE write_ownership SET owner = 'both'").execute(c)
    })
    .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn instances_follow_the_store_over_verified_tls() {
    // A cluster serving TLS; its URLs say sslmode=verify-full with the cluster's CA, so the
    // pool and migrations (libpq) and the LISTEN connection (rustls) all verify the server.
    let db = TestDb::new_on(localpg::shared_tls(), "router", router::store::MIGRATIONS);
    assert!(db.url().contains("sslmode=verify-full"), "{}", db.url());
    let s = sides().await;
    let a = store_instance(&db, s.table.clone(), "tls-a").await;
    let b = store_instance(&db, s.table.clone(), "tls-b").await;
    // Both listeners are up, and encrypted.
    let listeners = move |c: &mut PgConnection| {
        #[derive(diesel::QueryableByName)]
        struct Listener {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            ssl: bool,
        }
        diesel::sql_query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.datname = current_database() AND a.query LIKE 'LISTEN%'",
        )
        .load::<Listener>(c)
        .unwrap()
        .into_iter()
        .map(|l| l.ssl)
        .collect::<Vec<bool>>()
    };
    until("both instances listen", || async {
        on_db(&db, listeners).await.len() == 2
    })
    .await;
    assert_eq!(on_db(&db, listeners).await, [true, true]);

    // A change made through one instance reaches the other by notification: its periodic
    // reload is 30 s away.
    let before = b.router.toggles.load().version;
    enable_catalog_reads(&a, "over TLS").await;
    until("the change reaches the other instance", || async {
        b.router.toggles.load().version > before
    })
    .await;
    a.stop().await;
    b.stop().await;
}
