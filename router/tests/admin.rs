//! Router instances on a real toggle database: the admin API (auth, validation, audit),
//! propagation of a flip to every instance sharing the database, and flips under load.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use localpg::TestDb;
use router::RouteTable;
use router::run::Running;
use serde_json::{Value, json};

const TOKEN: &str = "test-token-7f3a";

/// A tiny upstream answering every request with its name (reqwest is the client; actix serves).
async fn named_upstream(name: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().default_service(actix_web::web::to(move || async move {
            actix_web::HttpResponse::Ok().json(json!({"upstream": name}))
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    base
}

fn table(monolith: &str, catalog: &str) -> RouteTable {
    let mut t = RouteTable::musiccorp();
    t.set_upstream("monolith", monolith).unwrap();
    t.set_upstream("catalog", catalog).unwrap();
    t
}

async fn instance(db: &TestDb, table: RouteTable, name: &str) -> Running {
    instance_from(db, table, name, router::sync::Source::Store).await
}

async fn instance_from(
    db: &TestDb,
    table: RouteTable,
    name: &str,
    source: router::sync::Source,
) -> Running {
    support::start_instance(
        db.url(),
        TOKEN,
        table,
        name,
        source,
        router::proxy::Limits::default(),
    )
    .await
}

/// A monolith and a catalog upstream, each answering with its name.
async fn two_sides() -> (String, String) {
    (
        named_upstream("monolith").await,
        named_upstream("catalog").await,
    )
}

struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    fn of(r: &Running) -> Admin {
        Admin {
            base: format!("http://{}", r.admin_addr),
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Actor", "test")
            .header("X-Reason", format!("testing {path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method, path, body, Some(TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

fn reads(name: &str, enabled: bool) -> Value {
    json!({"name": name, "enabled": enabled, "strategies": [{"name": "default"}]})
}

async fn side(data: &str, http: &reqwest::Client, user: &str) -> Result<String, String> {
    let res = http
        .get(format!("{data}/catalog/albums"))
        .header("x-user-id", user)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("status {}", res.status()));
    }
    let body: Value = res.json().await.map_err(|e| e.to_string())?;
    Ok(body["upstream"].as_str().unwrap_or("?").to_string())
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_changes_nothing_without_it() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let up = named_upstream("monolith").await;
    let r = instance(&db, table(&up, &up), "auth").await;
    let admin = Admin::of(&r);
    let put = || Some(reads("catalog.reads", true));
    for token in [None, Some("wrong"), Some("test-token-7f3")] {
        let (status, body) = admin
            .call(
                reqwest::Method::PUT,
                "/admin/toggles/catalog.reads",
                put(),
                token,
            )
            .await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, _) = admin
        .call(reqwest::Method::GET, "/api/client/features", None, None)
        .await;
    assert_eq!(status, 401);
    let audit = admin.ok(reqwest::Method::GET, "/admin/audit", None).await;
    assert_eq!(audit["entries"], json!([]), "nothing changed");
    // The bare token, as Unleash SDKs send it, is accepted too.
    let res = reqwest::Client::new()
        .get(format!("{}/api/client/features", admin.base))
        .header("authorization", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    r.stop().await;
}

#[tokio::test]
async fn bad_definitions_are_refused_naming_the_field() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let up = named_upstream("monolith").await;
    let r = instance(&db, table(&up, &up), "validate").await;
    let admin = Admin::of(&r);
    let cases = [
        (
            json!({"name": "x", "enabled": true, "strategies": [{"name": "magic"}]}),
            "strategies[0].name",
        ),
        (json!({"name": "x", "enabled": "yes"}), "enabled"),
        (
            json!({"name": "x", "enabled": true, "strategies": [{"name": "flexibleRollout", "parameters": {"rollout": "101"}}]}),
            "strategies[0].parameters.rollout",
        ),
        (json!({"name": "other", "enabled": true}), "name"),
    ];
    for (body, field) in cases {
        let (status, reply) = admin
            .call(
                reqwest::Method::PUT,
                "/admin/toggles/x",
                Some(body),
                Some(TOKEN),
            )
            .await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["error"]["field"], field, "{reply}");
    }
    let (status, reply) = admin
        .call(
            reqwest::Method::POST,
            "/admin/toggles/x/rollout",
            Some(json!({"percent": 150})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (status, reply["error"]["field"].clone()),
        (400, json!("percent"))
    );
    let missing_reason = reqwest::Client::new()
        .put(format!("{}/admin/toggles/x", admin.base))
        .bearer_auth(TOKEN)
        .header("X-Actor", "test")
        .json(&reads("x", true))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_reason.status().as_u16(), 400);
    let body: Value = missing_reason.json().await.unwrap();
    assert_eq!(body["error"]["field"], "X-Reason");
    assert_eq!(
        admin.ok(reqwest::Method::GET, "/admin/audit", None).await["entries"],
        json!([])
    );
    r.stop().await;
}

#[tokio::test]
async fn every_change_is_in_the_audit_history_in_order() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let up = named_upstream("monolith").await;
    let r = instance(&db, table(&up, &up), "audit").await;
    let admin = Admin::of(&r);
    use reqwest::Method;
    admin
        .ok(
            Method::PUT,
            "/admin/toggles/catalog.reads",
            Some(reads("catalog.reads", false)),
        )
        .await;
    admin
        .ok(Method::POST, "/admin/toggles/catalog.reads/enable", None)
        .await;
    let rolled = admin
        .ok(
            Method::POST,
            "/admin/toggles/catalog.reads/rollout",
            Some(json!({"percent": 25})),
        )
        .await;
    assert_eq!(rolled["toggle"]["strategies"][0]["name"], "flexibleRollout");
    admin
        .ok(Method::POST, "/admin/toggles/catalog.reads/disable", None)
        .await;
    // A change that changes nothing is not a change.
    admin
        .ok(Method::POST, "/admin/toggles/catalog.reads/disable", None)
        .await;

    let audit = admin
        .ok(Method::GET, "/admin/audit?toggle=catalog.reads", None)
        .await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{audit}");
    assert_eq!(entries[0]["before"], Value::Null);
    assert_eq!(entries[0]["after"]["enabled"], false);
    assert_eq!(entries[1]["after"]["enabled"], true);
    assert_eq!(
        entries[2]["after"]["strategies"][0]["parameters"]["rollout"],
        "25"
    );
    assert_eq!(entries[3]["before"]["enabled"], true);
    assert_eq!(entries[3]["after"]["enabled"], false);
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] == "test" && e["reason"].as_str().unwrap().starts_with("testing"))
    );
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let explained = admin
        .ok(
            Method::GET,
            "/admin/explain?method=GET&path=/catalog/albums&user_id=u1",
            None,
        )
        .await;
    assert_eq!(explained["reason"], "read_toggle_off");
    assert_eq!(explained["primary"], "monolith");
    let evaluated = admin
        .ok(
            Method::POST,
            "/admin/evaluate",
            Some(json!({"toggle": "catalog.reads", "context": {"userId": "u1"}})),
        )
        .await;
    assert_eq!(evaluated["enabled"], false);
    let features = admin.ok(Method::GET, "/api/client/features", None).await;
    assert_eq!(features["features"][0]["name"], "catalog.reads");
    let health = admin.ok(Method::GET, "/admin/upstreams", None).await;
    assert!(
        health["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["circuit"] == "closed"),
        "{health}"
    );
    r.stop().await;
}

/// `value` escaped for a query string, so the admin API unescapes it back to exactly `value`.
fn escaped(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The data path's answer to `method target`: the upstream that answered, or the status the
/// router refused it with.
async fn data_path_answer(data: std::net::SocketAddr, method: &str, target: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(data).await.unwrap();
    let request = format!("{method} {target} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the router answers")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    match text
        .lines()
        .find_map(|l| l.strip_prefix("x-fig-upstream: "))
    {
        Some(upstream) => upstream.trim().to_string(),
        None => text[9..12].to_string(),
    }
}

#[tokio::test]
async fn explain_gives_the_data_paths_answer_for_every_spelling_of_a_target() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let (monolith, catalog) = two_sides().await;
    let r = instance(&db, table(&monolith, &catalog), "explain").await;
    let admin = Admin::of(&r);
    admin
        .ok(
            reqwest::Method::PUT,
            "/admin/toggles/catalog.reads",
            Some(reads("catalog.reads", true)),
        )
        .await;
    for (method, target, want) in [
        ("GET", "/catalog/albums", "catalog"),
        ("GET", "/%63atalog/albums", "catalog"),
        ("GET", "/catalog/albums?limit=1&x=%2F", "catalog"),
        ("GET", "http://shop/catalog/albums", "catalog"),
        ("GET", "/catalog", "monolith"),
        ("GET", "/orders", "monolith"),
        // Methods are case-sensitive: `get` is not a read, so it goes to the write owner.
        ("get", "/catalog/albums", "monolith"),
        ("POST", "/catalog/albums", "monolith"),
        ("GET", "/wishlists/../catalog/albums", "400"),
        ("GET", "/%2e%2e/catalog/albums", "400"),
        ("GET", "/catalog/%+1", "400"),
        ("GET", "*", "400"),
    ] {
        let data = data_path_answer(r.addr, method, target).await;
        assert_eq!(data, want, "data path: {method} {target}");
        let (status, explained) = admin
            .call(
                reqwest::Method::GET,
                &format!(
                    "/admin/explain?method={}&path={}",
                    escaped(method),
                    escaped(target)
                ),
                None,
                Some(TOKEN),
            )
            .await;
        let explained = match status {
            200 => explained["primary"].as_str().unwrap().to_string(),
            _ => {
                assert_eq!(
                    explained["error"]["code"], "bad_request_target",
                    "{explained}"
                );
                assert_eq!(explained["error"]["field"], "path", "{explained}");
                status.to_string()
            }
        };
        assert_eq!(explained, data, "explain: {method} {target}");
    }
    r.stop().await;
}

#[tokio::test]
async fn a_flip_through_one_instance_reaches_every_instance() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let (monolith, catalog) = two_sides().await;
    let mut routers = Vec::new();
    for name in ["a", "b", "c"] {
        routers.push(instance(&db, table(&monolith, &catalog), name).await);
    }
    let http = reqwest::Client::new();
    let datas: Vec<String> = routers
        .iter()
        .map(|r| format!("http://{}", r.addr))
        .collect();
    for d in &datas {
        assert_eq!(side(d, &http, "u").await.unwrap(), "monolith");
    }
    let admin = Admin::of(&routers[0]);
    admin
        .ok(
            reqwest::Method::PUT,
            "/admin/toggles/catalog.reads",
            Some(reads("catalog.reads", true)),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for d in &datas {
        loop {
            if side(d, &http, "u").await.unwrap() == "catalog" {
                break;
            }
            assert!(Instant::now() < deadline, "{d} never applied the flip");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for r in routers {
        r.stop().await;
    }
}

#[tokio::test]
async fn flipping_fifty_times_under_load_fails_no_request() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let (monolith, catalog) = two_sides().await;
    let r = instance(&db, table(&monolith, &catalog), "load").await;
    let data = format!("http://{}", r.addr);
    let admin = Admin::of(&r);
    admin
        .ok(
            reqwest::Method::PUT,
            "/admin/toggles/catalog.reads",
            Some(reads("catalog.reads", false)),
        )
        .await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (data, done, served, failed) =
                (data.clone(), done.clone(), served.clone(), failed.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let user = format!("user-{i}");
                while !done.load(Ordering::Relaxed) {
                    match side(&data, &http, &user).await {
                        Ok(s) if s == "monolith" || s == "catalog" => {
                            served.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for i in 0..50 {
        let action = if i % 2 == 0 { "enable" } else { "disable" };
        admin
            .ok(
                reqwest::Method::POST,
                &format!("/admin/toggles/catalog.reads/{action}"),
                None,
            )
            .await;
    }
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        served.load(Ordering::Relaxed) > 50,
        "clients ran during the flips"
    );
    let audit = admin
        .ok(
            reqwest::Method::GET,
            "/admin/audit?toggle=catalog.reads",
            None,
        )
        .await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 51);
    r.stop().await;
}

use unleash_api_client::client::FeatureKey;

/// The SDK wants a typed feature list; this test reads toggles by name only.
#[allow(non_camel_case_types, dead_code)]
#[derive(Debug, Clone, Copy, FeatureKey)]
enum NoTypedFeatures {
    unused,
}

/// Unleash's own Rust SDK, pointed at the router's admin port, sees the toggles and their flips.
#[tokio::test]
async fn an_official_unleash_sdk_reads_the_same_toggles() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let up = named_upstream("monolith").await;
    let r = instance(&db, table(&up, &up), "sdk").await;
    let admin = Admin::of(&r);
    admin
        .ok(
            reqwest::Method::PUT,
            "/admin/toggles/catalog.reads",
            Some(reads("catalog.reads", true)),
        )
        .await;
    let sdk = Arc::new(
        unleash_api_client::client::ClientBuilder::default()
            .interval(50)
            .disable_metric_submission()
            .enable_string_features()
            .into_client::<NoTypedFeatures>(
                &format!("{}/api", admin.base),
                "e2e",
                "sdk-test",
                Some(TOKEN.into()),
            )
            .expect("sdk client"),
    );
    let poller = tokio::spawn({
        let sdk = sdk.clone();
        async move { sdk.poll_for_updates().await }
    });
    let sees = |expected: bool| {
        let sdk = sdk.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while sdk.is_enabled_str("catalog.reads", None, !expected) != expected {
                assert!(
                    Instant::now() < deadline,
                    "the SDK never saw catalog.reads = {expected}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    sees(true).await;
    admin
        .ok(
            reqwest::Method::POST,
            "/admin/toggles/catalog.reads/disable",
            None,
        )
        .await;
    sees(false).await;
    sdk.stop_poll().await;
    let _ = poller.await;
    r.stop().await;
}

/// An instance that takes its toggles from an Unleash server follows it and refuses changes;
/// the server here is another router's Unleash client API, a real one.
#[tokio::test]
async fn toggles_can_come_from_an_unleash_server_instead() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let (monolith, catalog) = two_sides().await;
    let server = instance(&db, table(&monolith, &catalog), "unleash-server").await;
    let server_admin = Admin::of(&server);
    let follower = instance_from(
        &db,
        table(&monolith, &catalog),
        "follower",
        router::sync::Source::Unleash {
            api_url: format!("{}/api", server_admin.base),
            token: TOKEN.into(),
            every: Duration::from_millis(50),
        },
    )
    .await;
    let data = format!("http://{}", follower.addr);
    let http = reqwest::Client::new();
    assert_eq!(side(&data, &http, "u").await.unwrap(), "monolith");
    server_admin
        .ok(
            reqwest::Method::PUT,
            "/admin/toggles/catalog.reads",
            Some(reads("catalog.reads", true)),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while side(&data, &http, "u").await.unwrap() != "catalog" {
        assert!(
            Instant::now() < deadline,
            "the follower never applied the Unleash server's flip"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = Admin::of(&follower)
        .call(
            reqwest::Method::POST,
            "/admin/toggles/catalog.reads/disable",
            None,
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("toggles_managed_elsewhere"))
    );
    follower.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn shadow_reports_are_served_and_reset_behind_the_token() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let (monolith, catalog) = two_sides().await;
    let r = instance(&db, table(&monolith, &catalog), "diffs").await;
    let admin = Admin::of(&r);
    admin
        .ok(
            reqwest::Method::PUT,
            "/admin/toggles/catalog.shadow",
            Some(reads("catalog.shadow", true)),
        )
        .await;
    assert_eq!(
        data_path_answer(r.addr, "GET", "/catalog/albums/1").await,
        "monolith"
    );
    // The two sides name themselves: a real difference at `$.upstream`.
    let route = "GET /catalog/";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let report = loop {
        let diffs = admin.ok(reqwest::Method::GET, "/admin/diffs", None).await;
        if diffs["routes"][route]["compared"] == 1 {
            break diffs["routes"][route].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no comparison: {diffs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(report["real"], 1, "{report}");
    assert_eq!(report["paths"]["$.upstream"], 1, "{report}");
    // A second instance on the same database: its counts join the same report.
    let r2 = instance(&db, table(&monolith, &catalog), "diffs-2").await;
    let version = r.router.toggles.load().version;
    while r2.router.toggles.load().version < version {
        assert!(
            std::time::Instant::now() < deadline,
            "the second instance never got the toggle"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        data_path_answer(r2.addr, "GET", "/catalog/albums/2").await,
        "monolith"
    );
    loop {
        let diffs = admin.ok(reqwest::Method::GET, "/admin/diffs", None).await;
        if diffs["routes"][route]["compared"] == 2 {
            assert_eq!(diffs["routes"][route]["paths"]["$.upstream"], 2, "{diffs}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second instance's counts never arrived: {diffs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r2.stop().await;
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", admin.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("router_shadow_total{route=\"GET /catalog/\",outcome=\"real\"} 1"),
        "{metrics}"
    );
    for token in [None, Some("wrong")] {
        let (status, _) = admin
            .call(reqwest::Method::GET, "/admin/diffs", None, token)
            .await;
        assert_eq!(status, 401);
        let (status, _) = admin
            .call(reqwest::Method::DELETE, "/admin/diffs", None, token)
            .await;
        assert_eq!(status, 401);
    }
    let (status, body) = admin
        .call(
            reqwest::Method::DELETE,
            "/admin/diffs?route=GET%20/nowhere",
            None,
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "no_such_report");
    let reset = admin
        .ok(
            reqwest::Method::DELETE,
            "/admin/diffs?route=GET%20/catalog/",
            None,
        )
        .await;
    assert_eq!(reset["reset"], 1);
    let diffs = admin.ok(reqwest::Method::GET, "/admin/diffs", None).await;
    assert_eq!(diffs["routes"], json!({}));
    r.stop().await;
}

/// The client-features document as an SDK declaring `spec` (or nothing) gets it.
async fn client_features(admin: &Admin, spec: Option<&str>) -> Value {
    let mut req = admin
        .http
        .get(format!("{}/api/client/features", admin.base))
        .bearer_auth(TOKEN);
    if let Some(spec) = spec {
        req = req.header("Unleash-Client-Spec", spec);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.json().await.unwrap()
}

/// Waits until the data path of `data` sends `user` to `side`.
async fn lands(data: &str, http: &reqwest::Client, user: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while side(data, http, user).await.unwrap() != expected {
        assert!(
            Instant::now() < deadline,
            "{data} never sent {user} to {expected}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A segment is stored once and named by id: replacing it changes every strategy naming it on
/// every instance at once, a segment in use cannot be deleted, a strategy cannot name one that
/// does not exist, and every change is audited and bumps the version.
#[tokio::test]
async fn segments_are_shared_by_id_audited_and_followed_by_every_instance() {
    use reqwest::Method;
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let (monolith, catalog) = two_sides().await;
    let a = instance(&db, table(&monolith, &catalog), "seg-a").await;
    let b = instance(&db, table(&monolith, &catalog), "seg-b").await;
    let admin = Admin::of(&a);
    let users = |ids: &[&str]| {
        json!({"id": 1, "constraints": [{"contextName": "userId", "operator": "IN", "values": ids,
            "caseInsensitive": false, "inverted": false}]})
    };
    let imported = admin
        .ok(
            Method::POST,
            "/admin/toggles",
            Some(json!({"version": 2, "segments": [users(&["alice"])], "features": [
                {"name": "catalog.reads", "enabled": true, "strategies": [{"name": "default", "segments": [1]}]}]})),
        )
        .await;
    assert_eq!(imported["changed"], 2, "{imported}");
    let (data_b, http) = (format!("http://{}", b.addr), reqwest::Client::new());
    lands(&data_b, &http, "alice", "catalog").await;
    assert_eq!(side(&data_b, &http, "bob").await.unwrap(), "monolith");

    // Replacing the segment moves every strategy that names it, on the other instance too.
    let replaced = admin
        .ok(Method::PUT, "/admin/segments/1", Some(users(&["bob"])))
        .await;
    assert!(
        replaced["version"].as_i64() > imported["version"].as_i64(),
        "{replaced}"
    );
    lands(&data_b, &http, "bob", "catalog").await;
    assert_eq!(side(&data_b, &http, "alice").await.unwrap(), "monolith");

    // A strategy naming a segment that does not exist is refused, naming the field.
    let missing = json!({"name": "catalog.shadow", "enabled": true,
        "strategies": [{"name": "default", "segments": [1, 9]}]});
    let (status, reply) = admin
        .call(
            Method::PUT,
            "/admin/toggles/catalog.shadow",
            Some(missing.clone()),
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (status, &reply["error"]["field"]),
        (400, &json!("strategies[0].segments[1]"))
    );
    assert_eq!(reply["error"]["message"], "there is no segment 9");
    let (status, reply) = admin
        .call(
            Method::POST,
            "/admin/toggles",
            Some(json!({"version": 2, "features": [reads("wishlist.reads", true), missing]})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (status, &reply["error"]["field"]),
        (400, &json!("features[1].strategies[0].segments[1]"))
    );

    // A segment in use stays; once no strategy names it, it can go.
    let (status, reply) = admin
        .call(Method::DELETE, "/admin/segments/1", None, Some(TOKEN))
        .await;
    assert_eq!(
        (status, &reply["error"]["code"]),
        (409, &json!("segment_in_use")),
        "{reply}"
    );
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("catalog.reads"),
        "{reply}"
    );

    // SDKs that read segments get them; others get their constraints in the strategy.
    let with = client_features(&admin, Some("4.2.0")).await;
    assert_eq!(with["segments"], json!([users(&["bob"])]));
    assert_eq!(with["features"][0]["strategies"][0]["segments"], json!([1]));
    let without = client_features(&admin, None).await;
    assert!(without.get("segments").is_none(), "{without}");
    assert_eq!(
        without["features"][0]["strategies"][0]["constraints"],
        users(&["bob"])["constraints"]
    );
    let (status, reply) = admin
        .call(Method::GET, "/api/client/features", None, Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{reply}");
    let bad_spec = admin
        .http
        .get(format!("{}/api/client/features", admin.base))
        .bearer_auth(TOKEN)
        .header("Unleash-Client-Spec", "four")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_spec.status().as_u16(), 400);

    admin
        .ok(Method::DELETE, "/admin/toggles/catalog.reads", None)
        .await;
    admin.ok(Method::DELETE, "/admin/segments/1", None).await;
    let (status, _) = admin
        .call(Method::GET, "/admin/segments/1", None, Some(TOKEN))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        admin.ok(Method::GET, "/admin/segments", None).await["segments"],
        json!([])
    );

    let audit = admin.ok(Method::GET, "/admin/audit?segment=1", None).await;
    let entries = audit["entries"].as_array().unwrap();
    let shapes: Vec<(&Value, &Value, bool, bool)> = entries
        .iter()
        .map(|e| {
            (
                &e["kind"],
                &e["name"],
                e["before"].is_null(),
                e["after"].is_null(),
            )
        })
        .collect();
    let segment = (&json!("segment"), &json!("1"));
    assert_eq!(
        shapes,
        [
            (segment.0, segment.1, true, false),
            (segment.0, segment.1, false, false),
            (segment.0, segment.1, false, true)
        ],
        "{audit}"
    );
    assert_eq!(entries[1]["after"], users(&["bob"]));
    let toggle_audit = admin
        .ok(Method::GET, "/admin/audit?toggle=catalog.reads", None)
        .await;
    assert!(
        toggle_audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] == "toggle"),
        "{toggle_audit}"
    );
    // The other instance followed every change: it is at the same version.
    let version = a.router.toggles.load().version;
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.router.toggles.load().version != version {
        assert!(Instant::now() < deadline, "instance b never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.stop().await;
    a.stop().await;
}

/// A constraint whose operator the engine does not know is stored and served as it came; its
/// strategy is off (the toggle's other strategies still count), and evaluate and explain say why.
#[tokio::test]
async fn an_unknown_operator_is_kept_served_and_explained() {
    use reqwest::Method;
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let (monolith, catalog) = two_sides().await;
    let r = instance(&db, table(&monolith, &catalog), "future-op").await;
    let admin = Admin::of(&r);
    // Inverted too: a constraint that cannot be checked does not match either way.
    let future = json!({"contextName": "region", "operator": "SOME_FUTURE_OP", "values": ["eu"],
        "caseInsensitive": false, "inverted": true});
    let definition = json!({"name": "catalog.reads", "enabled": true, "strategies": [
        {"name": "default", "constraints": [future]},
        {"name": "userWithId", "parameters": {"userIds": "alice"}}]});
    let put = admin
        .ok(
            Method::PUT,
            "/admin/toggles/catalog.reads",
            Some(definition),
        )
        .await;
    assert_eq!(put["toggle"]["strategies"][0]["constraints"][0], future);
    let stored = admin
        .ok(Method::GET, "/admin/toggles/catalog.reads", None)
        .await;
    assert_eq!(stored["strategies"][0]["constraints"][0], future);
    let served = client_features(&admin, None).await;
    assert_eq!(
        served["features"][0]["strategies"][0]["constraints"][0],
        future
    );
    let audit = admin.ok(Method::GET, "/admin/audit", None).await;
    assert_eq!(
        audit["entries"][0]["after"]["strategies"][0]["constraints"][0],
        future
    );

    let why = "strategy 0 (default) is always off: its constraint 0 has the unknown operator \"SOME_FUTURE_OP\"";
    for (user, enabled, side_expected) in [("bob", false, "monolith"), ("alice", true, "catalog")] {
        let evaluated = admin
            .ok(
                Method::POST,
                "/admin/evaluate",
                Some(
                    json!({"toggle": "catalog.reads", "context": {"userId": user, "region": "eu"}}),
                ),
            )
            .await;
        assert_eq!(evaluated["enabled"], enabled, "{user}: {evaluated}");
        assert_eq!(evaluated["explain"], json!([why]), "{evaluated}");
        let explained = admin
            .ok(
                Method::GET,
                &format!("/admin/explain?path=/catalog/albums&user_id={user}"),
                None,
            )
            .await;
        assert_eq!(explained["primary"], side_expected, "{explained}");
        assert_eq!(explained["notes"], json!([format!("catalog.reads: {why}")]));
    }
    let plain = admin
        .ok(
            Method::POST,
            "/admin/evaluate",
            Some(json!({"toggle": "catalog.shadow"})),
        )
        .await;
    assert_eq!(plain["explain"], json!([]));
    r.stop().await;
}
