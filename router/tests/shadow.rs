//! The parallel run's shadow traffic through the router's data path (issue 17): clients are
//! answered by the primary alone, the candidate gets a copy off the critical path, and the
//! comparison lands in the route's report, with noise and replication lag told apart.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use router::shadow::{RouteReport, ShadowLimits};
use router::{LiveToggles, Router};
use serde_json::json;
use support::{full, raw, table, toggles, upstream};
use tokio::net::TcpListener;

const ROUTE: &str = "GET /catalog/";

/// A router in front of `monolith` and `catalog` with `catalog.shadow` on for everyone: the
/// monolith answers clients, the catalog service gets the copies.
async fn shadowing(monolith: &str, catalog: &str, limits: ShadowLimits) -> (String, Arc<Router>) {
    shadowing_within(monolith, catalog, limits, 500).await
}

/// As [`shadowing`], each ask of a side given `timeout_ms`.
async fn shadowing_within(
    monolith: &str,
    catalog: &str,
    limits: ShadowLimits,
    timeout_ms: u64,
) -> (String, Arc<Router>) {
    let live = Arc::new(LiveToggles::new(toggles(
        json!({"version": 2, "features": [
            {"name": "catalog.shadow", "enabled": true, "strategies": [{"name": "default"}]}
        ]}),
    )));
    let router = Arc::new(
        Router::new(Arc::new(table(monolith, catalog, timeout_ms)), live, "test")
            .with_shadow_limits(limits),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(router::serve(listener, router.clone()));
    (base, router)
}

fn json_answer(body: serde_json::Value, position: Option<&str>) -> Response<support::TestBody> {
    let mut answer = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json");
    if let Some(position) = position {
        answer = answer.header("x-fig-db-position", position);
    }
    answer.body(full(body.to_string())).unwrap()
}

async fn get(base: &str, path: &str) -> String {
    raw::exchange(
        base,
        format!("GET {path} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Polls the catalog reads' report until `done` says so.
async fn report_until(router: &Router, done: impl Fn(&RouteReport) -> bool) -> RouteReport {
    report_until_route(router, ROUTE, done).await
}

fn quiet() -> ShadowLimits {
    ShadowLimits {
        noise_every: u64::MAX,
        ..ShadowLimits::default()
    }
}

#[tokio::test]
async fn clients_get_the_primary_and_the_report_names_the_differing_path() {
    let monolith = upstream(|req| async move {
        let id = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        json_answer(
            json!({"id": id, "price": 10, "tags": ["a", "b"]}),
            Some("0/100"),
        )
    })
    .await;
    let catalog = upstream(|req| async move {
        let id = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let price = if id == "7" { 11 } else { 10 };
        json_answer(
            json!({"id": id, "price": price, "tags": ["a", "b"]}),
            Some("0/100"),
        )
    })
    .await;
    let (base, router) = shadowing(&monolith, &catalog, quiet()).await;
    for id in 1..=10 {
        let answer = get(&base, &format!("/catalog/albums/{id}")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("\"price\":10"),
            "the primary answers: {answer}"
        );
        assert!(
            !answer.to_ascii_lowercase().contains("x-fig-db-position"),
            "the position is the router's, not the client's: {answer}"
        );
    }
    let report = report_until(&router, |r| r.compared == 10).await;
    assert_eq!((report.matched, report.real, report.transient), (9, 1, 0));
    assert_eq!(report.paths.get("$.price"), Some(&1), "{report:#?}");
    assert_eq!(report.samples.len(), 1);
    assert_eq!(report.samples[0].request, "GET /catalog/albums/7");
}

#[tokio::test]
async fn a_field_that_changes_on_every_call_is_noise_not_a_mismatch() {
    let calls = Arc::new(AtomicUsize::new(0));
    let monolith = upstream(move |_| {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            json_answer(json!({"title": "Blue", "served_at": n}), None)
        }
    })
    .await;
    let catalog =
        upstream(
            |_| async move { json_answer(json!({"title": "Blue", "served_at": 123_456}), None) },
        )
        .await;
    let limits = ShadowLimits {
        noise_every: 1,
        ..ShadowLimits::default()
    };
    let (base, router) = shadowing(&monolith, &catalog, limits).await;
    for _ in 0..5 {
        get(&base, "/catalog/albums/1").await;
    }
    let report = report_until(&router, |r| r.compared == 5).await;
    assert!(report.noise.contains("$.served_at"), "{report:#?}");
    assert_eq!(report.real, 0, "{report:#?}");
    assert_eq!(report.matched, 5);
    assert_eq!(report.noise_hits.get("$.served_at"), Some(&5));
}

#[tokio::test]
async fn a_candidate_behind_the_primary_is_asked_again_and_counts_as_transient() {
    // The replica answers from before the primary's write until asked a second time.
    let asked = Arc::new(AtomicUsize::new(0));
    let monolith = upstream(|req| async move {
        let defect = req.uri().path().ends_with("/9");
        json_answer(json!({"stock": 5, "defect": defect}), Some("0/200"))
    })
    .await;
    let catalog = upstream(move |req| {
        let asked = asked.clone();
        async move {
            if req.uri().path().ends_with("/9") {
                // A real defect on the same route: caught up, and still different.
                return json_answer(json!({"stock": 5, "defect": false}), Some("0/200"));
            }
            if asked.fetch_add(1, Ordering::Relaxed) == 0 {
                json_answer(json!({"stock": 6, "defect": false}), Some("0/150"))
            } else {
                json_answer(json!({"stock": 5, "defect": false}), Some("0/200"))
            }
        }
    })
    .await;
    let (base, router) = shadowing(&monolith, &catalog, quiet()).await;
    get(&base, "/catalog/albums/1").await;
    report_until(&router, |r| r.compared == 1).await;
    get(&base, "/catalog/albums/9").await;
    let report = report_until(&router, |r| r.compared == 2).await;
    assert_eq!(
        (report.transient, report.real, report.matched),
        (1, 1, 0),
        "{report:#?}"
    );
    assert_eq!(report.paths.get("$.defect"), Some(&1));
    assert_eq!(report.paths.get("$.stock"), None);
}

#[tokio::test]
async fn a_hanging_or_absent_candidate_changes_nothing_for_clients() {
    let monolith = upstream(|_| async move { json_answer(json!({"ok": true}), None) }).await;
    let hanging = upstream(|_| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        json_answer(json!({"ok": true}), None)
    })
    .await;
    // A port nothing listens on.
    let absent = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    for (candidate, hangs) in [(hanging, true), (absent, false)] {
        let limits = ShadowLimits {
            in_flight: 4,
            ..quiet()
        };
        // Each ask of the candidate may take 3 s: a client that waited for one would show it.
        let (base, router) = shadowing_within(&monolith, &candidate, limits, 3_000).await;
        let started = Instant::now();
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let base = base.clone();
                tokio::spawn(async move {
                    let mut slowest = Duration::ZERO;
                    for _ in 0..25 {
                        let at = Instant::now();
                        let answer = get(&base, "/catalog/albums/1").await;
                        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                        assert!(answer.contains("{\"ok\":true}"), "{answer}");
                        slowest = slowest.max(at.elapsed());
                    }
                    slowest
                })
            })
            .collect();
        for client in clients {
            let slowest = client.await.unwrap();
            // The candidate is given 3 s and hangs for 30: no client waited on it.
            assert!(
                slowest < Duration::from_secs(1),
                "a client waited {slowest:?}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        // Four at most in flight: while they hang the rest are dropped and counted; every
        // admitted one fails.
        let report = report_until(&router, |r| r.dropped + r.failed == 200).await;
        assert!(report.failed > 0, "{report:#?}");
        if hangs {
            assert!(report.dropped >= 150, "{report:#?}");
        }
        assert_eq!(report.compared, 0);
    }
}

#[tokio::test]
async fn a_recorded_sample_keeps_only_what_a_replay_needs() {
    let monolith = upstream(|_| async move { json_answer(json!({"ok": true}), None) }).await;
    let file = std::env::temp_dir().join(format!(
        "router-record-{}-{:?}.jsonl",
        std::process::id(),
        Instant::now()
    ));
    let recorder = router::record::Recorder::start(&router::record::RecordSettings {
        file: file.clone(),
        percent: 100,
    })
    .unwrap();
    let live = Arc::new(LiveToggles::new(toggles(
        json!({"version": 2, "features": []}),
    )));
    let router = Arc::new(
        Router::new(Arc::new(table(&monolith, &monolith, 500)), live, "test")
            .with_recorder(recorder),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(router::serve(listener, router));
    let body = r#"{"title": "Blue", "password": "hunter2"}"#;
    for request in [
        "GET /catalog/albums?page=2&token=abc HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer s3cret\r\nX-User-Id: 42\r\nCookie: a=b\r\nConnection: close\r\n\r\n".to_string(),
        format!("POST /catalog/albums HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
        // Not JSON: left out of the sample.
        "POST /catalog/albums HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc".to_string(),
        // Not routed: left out.
        "GET /elsewhere HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".to_string(),
    ] {
        let answer = raw::exchange(&base, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.lines().count() >= 2 {
            break text;
        }
        assert!(Instant::now() < deadline, "recorded: {text:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let recorded: Vec<router::record::Line> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recorded.len(), 2, "{lines}");
    assert_eq!(recorded[0].method, "GET");
    assert_eq!(recorded[0].target, "/catalog/albums?page=2&token=REDACTED");
    assert_eq!(
        recorded[0].headers,
        [("x-user-id".to_string(), "42".to_string())].into()
    );
    assert_eq!(recorded[0].body, None);
    assert_eq!(recorded[1].method, "POST");
    assert_eq!(
        recorded[1].body,
        Some(json!({"title": "Blue", "password": "REDACTED"}))
    );
    assert!(!lines.contains("s3cret") && !lines.contains("hunter2") && !lines.contains("abc"));
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn a_write_goes_to_the_other_side_only_as_a_dry_run() {
    use http_body_util::BodyExt;
    let primary_calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(Option<String>, String)>::new()));
    let monolith = {
        let calls = primary_calls.clone();
        upstream(move |_| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::Relaxed);
                json_answer(json!({"id": 7, "title": "Blue"}), None)
            }
        })
        .await
    };
    let catalog = {
        let seen = seen.clone();
        upstream(move |req: http::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let dry_run = req
                    .headers()
                    .get("x-fig-dry-run")
                    .map(|v| v.to_str().unwrap().to_string());
                let body = req.into_body().collect().await.unwrap().to_bytes();
                seen.lock()
                    .unwrap()
                    .push((dry_run, String::from_utf8_lossy(&body).into_owned()));
                json_answer(json!({"id": 8, "title": "Blue"}), None)
            }
        })
        .await
    };
    let (base, router) = shadowing(&monolith, &catalog, ShadowLimits::default()).await;
    let body = r#"{"title": "Blue"}"#;
    let answer = raw::exchange(
        &base,
        format!(
            "POST /catalog/albums HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.contains("\"id\":7"), "the owner answers: {answer}");
    let route = "POST /catalog/";
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report = router.shadows.reports().remove(route).unwrap_or_default();
        if report.compared == 1 {
            break report;
        }
        assert!(Instant::now() < deadline, "{report:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The sequence each side draws ids from is its own: the ids differ, and say so.
    assert_eq!(report.paths.get("$.id"), Some(&1), "{report:#?}");
    assert_eq!(
        *seen.lock().unwrap(),
        [(Some("1".to_string()), body.to_string())],
        "the other side got the body, as a dry run"
    );
    // A write reaches the side that owns it once, never again for noise or lag.
    assert_eq!(primary_calls.load(Ordering::Relaxed), 1);

    // A body too large to keep is not shadowed at all.
    let big = format!(
        "{{\"title\": \"{}\"}}",
        "x".repeat(router::shadow::REQUEST_BODY)
    );
    let answer = raw::exchange(
        &base,
        format!(
            "POST /catalog/albums HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let report = report_until_route(&router, route, |r| r.too_large == 1).await;
    assert_eq!(report.compared, 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// Polls `route`'s report until `done` says so.
async fn report_until_route(
    router: &Router,
    route: &str,
    done: impl Fn(&RouteReport) -> bool,
) -> RouteReport {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = router.shadows.reports().remove(route).unwrap_or_default();
        if done(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "the report never got there: {report:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_primary_behind_the_owner_is_asked_again_too() {
    // Reads moved to the service, which trails the monolith (the owner) until asked again.
    let asked = Arc::new(AtomicUsize::new(0));
    let monolith =
        upstream(|_| async move { json_answer(json!({"stock": 5}), Some("0/200")) }).await;
    let catalog = upstream(move |_| {
        let asked = asked.clone();
        async move {
            if asked.fetch_add(1, Ordering::Relaxed) == 0 {
                json_answer(json!({"stock": 6}), Some("0/150"))
            } else {
                json_answer(json!({"stock": 5}), Some("0/200"))
            }
        }
    })
    .await;
    let live = Arc::new(LiveToggles::new(toggles(
        json!({"version": 2, "features": [
            {"name": "catalog.shadow", "enabled": true, "strategies": [{"name": "default"}]},
            {"name": "catalog.reads", "enabled": true, "strategies": [{"name": "default"}]}
        ]}),
    )));
    let router = Arc::new(
        Router::new(Arc::new(table(&monolith, &catalog, 500)), live, "test")
            .with_shadow_limits(quiet()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(router::serve(listener, router.clone()));
    let answer = get(&base, "/catalog/albums/1").await;
    assert!(
        answer.contains("\"stock\":6"),
        "the service answers, stale: {answer}"
    );
    let report = report_until(&router, |r| r.compared == 1).await;
    assert_eq!((report.transient, report.real), (1, 0), "{report:#?}");
}
