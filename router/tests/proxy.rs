//! The router's data path against real HTTP servers on port 0. The upstreams here are small
//! test servers because these tests need upstreams that report what they received, stall, or
//! stream on cue.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use router::ToggleSet;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

mod support;

use support::{TestBody, full, router, router_with, table, toggles, upstream};

/// An upstream that answers with its name and the request headers it received.
async fn echo(name: &'static str) -> String {
    upstream(move |req: Request<Incoming>| async move {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), Value::from(v.to_str().unwrap_or(""))))
            .collect();
        let body = json!({"upstream": name, "method": req.method().as_str(), "path": req.uri().to_string(), "headers": headers});
        Response::builder()
            .header("content-type", "application/json")
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "secret")
            .body(full(body.to_string()))
            .unwrap()
    })
    .await
}

async fn send(req: Request<TestBody>) -> (StatusCode, http::HeaderMap, Value) {
    let client: Client<_, TestBody> = Client::builder(TokioExecutor::new()).build_http();
    let res = client.request(req).await.expect("router answers");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn get(url: String) -> http::request::Builder {
    Request::builder().uri(url)
}

#[tokio::test]
async fn hop_by_hop_headers_stay_behind_and_forwarding_headers_are_added() {
    let monolith = echo("monolith").await;
    let (base, _) = router(table(&monolith, &monolith, 1000)).await;
    let req = get(format!("{base}/orders/1"))
        .header("host", "shop.example")
        .header("connection", "keep-alive, x-private-hop")
        .header("x-private-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eA==")
        .header("x-forwarded-for", "203.0.113.7")
        .header("traceparent", "not-a-trace")
        .header("x-keep", "yes")
        .body(full(String::new()))
        .unwrap();
    let (status, headers, body) = send(req).await;
    assert_eq!(status, 200);
    let seen = &body["headers"];
    for dropped in ["x-private-hop", "keep-alive", "proxy-authorization"] {
        assert!(seen.get(dropped).is_none(), "{dropped} forwarded: {seen}");
    }
    assert_eq!(seen["x-keep"], "yes");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example");
    assert!(seen["via"].as_str().unwrap().contains("fig-router-test"));
    assert!(router::headers::valid_traceparent(
        seen["traceparent"].as_str().unwrap()
    ));
    // The upstream's own hop-by-hop headers stay on its hop too.
    assert!(headers.get("x-upstream-hop").is_none());
    assert_eq!(headers["x-fig-upstream"], "monolith");
    assert_eq!(headers["x-fig-reason"], "no_route");
}

#[tokio::test]
async fn a_valid_traceparent_is_propagated_unchanged() {
    let monolith = echo("monolith").await;
    let (base, _) = router(table(&monolith, &monolith, 1000)).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = get(format!("{base}/x"))
        .header("traceparent", trace)
        .body(full(String::new()))
        .unwrap();
    let (_, _, body) = send(req).await;
    assert_eq!(body["headers"]["traceparent"], trace);
}

#[tokio::test]
async fn reads_follow_the_toggle_and_writes_the_owner() {
    let (monolith, catalog) = (echo("monolith").await, echo("catalog").await);
    let (base, live) = router(table(&monolith, &catalog, 1000)).await;
    let side = |method: &'static str| {
        let base = base.clone();
        async move {
            let req = Request::builder()
                .method(method)
                .uri(format!("{base}/catalog/albums?limit=1"))
                .body(full(String::new()))
                .unwrap();
            let (_, headers, body) = send(req).await;
            assert_eq!(
                body["path"], "/catalog/albums?limit=1",
                "path and query forwarded"
            );
            (
                body["upstream"].as_str().unwrap().to_string(),
                headers["x-fig-upstream"].to_str().unwrap().to_string(),
            )
        }
    };
    assert_eq!(side("GET").await, ("monolith".into(), "monolith".into()));
    live.store(toggles(json!({"version": 2, "features": [
        {"name": "catalog.reads", "enabled": true, "strategies": [{"name": "default"}]}]})));
    assert_eq!(side("GET").await, ("catalog".into(), "catalog".into()));
    assert_eq!(
        side("POST").await.0,
        "monolith",
        "writes stay with the owner"
    );
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_naming_it() {
    let slow = upstream(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(full("late".into()))
    })
    .await;
    let (base, live) = router(table(&slow, &slow, 200)).await;
    live.store(ToggleSet::empty());
    let started = std::time::Instant::now();
    let (status, _, body) = send(
        get(format!("{base}/catalog/albums"))
            .body(full(String::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert_eq!(body["error"]["upstream"], "monolith");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_502_naming_the_upstream() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (base, _) = router(table(&closed, &closed, 1000)).await;
    let (status, headers, body) = send(
        get(format!("{base}/catalog/albums"))
            .body(full(String::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert_eq!(body["error"]["upstream"], "monolith");
}

#[tokio::test]
async fn a_request_that_already_passed_this_router_is_refused() {
    let monolith = echo("monolith").await;
    let (base, _) = router(table(&monolith, &monolith, 1000)).await;
    let req = get(format!("{base}/x"))
        .header("via", "1.1 edge, 1.1 fig-router-test")
        .body(full(String::new()))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, 508);
    assert_eq!(body["error"]["code"], "loop_detected");
}

const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 50;

/// 50 MiB each way, and neither direction is buffered whole: the first chunk must arrive at the
/// far end before the sender releases the rest, which a buffering proxy could never satisfy.
#[tokio::test]
async fn large_bodies_stream_through_in_both_directions() {
    let (upload_seen_tx, upload_seen_rx) = mpsc::channel::<()>(1);
    let upload_seen_tx = Arc::new(upload_seen_tx);
    let (download_go_tx, download_go_rx) = mpsc::channel::<()>(1);
    let download_go_rx = Arc::new(Mutex::new(download_go_rx));
    let streaming = upstream(move |req: Request<Incoming>| {
        let seen = upload_seen_tx.clone();
        let go = download_go_rx.clone();
        async move {
            // Count the upload, announcing its first chunk as soon as it arrives.
            let mut body = req.into_body();
            let mut received = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    if received == 0 {
                        seen.send(()).await.unwrap();
                    }
                    received += data.len();
                }
            }
            // Download: one chunk now, the rest only once the client has the first.
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
            tokio::spawn(async move {
                tx.send(Ok(Frame::data(Bytes::from(vec![b'd'; CHUNK]))))
                    .await
                    .unwrap();
                go.lock().await.recv().await.unwrap();
                for _ in 1..CHUNKS {
                    tx.send(Ok(Frame::data(Bytes::from(vec![b'd'; CHUNK]))))
                        .await
                        .unwrap();
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            Response::builder()
                .header("x-received", received.to_string())
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
    })
    .await;
    let (base, _) = router(table(&streaming, &streaming, 60_000)).await;

    // Upload: the first chunk, then the rest only after the upstream has seen it.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
    let mut upload_seen_rx = upload_seen_rx;
    tokio::spawn(async move {
        tx.send(Ok(Frame::data(Bytes::from(vec![b'u'; CHUNK]))))
            .await
            .unwrap();
        upload_seen_rx.recv().await.unwrap();
        for _ in 1..CHUNKS {
            tx.send(Ok(Frame::data(Bytes::from(vec![b'u'; CHUNK]))))
                .await
                .unwrap();
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let req = Request::builder()
        .method("POST")
        .uri(format!("{base}/upload"))
        .body(StreamBody::new(stream).boxed())
        .unwrap();
    let client: Client<_, TestBody> = Client::builder(TokioExecutor::new()).build_http();
    let res = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .expect("no deadlock")
        .unwrap();
    assert_eq!(res.headers()["x-received"], (CHUNK * CHUNKS).to_string());
    let mut body = res.into_body();
    let mut downloaded = 0usize;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(60), body.frame())
        .await
        .expect("no deadlock")
    {
        if let Ok(data) = frame.unwrap().into_data() {
            if downloaded == 0 {
                download_go_tx.send(()).await.unwrap();
            }
            downloaded += data.len();
        }
    }
    assert_eq!(downloaded, CHUNK * CHUNKS);
}

fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn reads_on() -> ToggleSet {
    toggles(json!({"version": 2, "features": [
        {"name": "catalog.reads", "enabled": true, "strategies": [{"name": "default"}]}]}))
}

/// An upstream that answers 503 while `healthy` is false, counting every request it gets.
async fn switchable(
    healthy: Arc<std::sync::atomic::AtomicBool>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
) -> String {
    use std::sync::atomic::Ordering;
    upstream(move |_req| {
        let (healthy, hits) = (healthy.clone(), hits.clone());
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let status = if healthy.load(Ordering::SeqCst) {
                200
            } else {
                503
            };
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(full(json!({"upstream": "switchable"}).to_string()))
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn reads_fall_back_to_the_monolith_while_the_extracted_side_fails() {
    let monolith = echo("monolith").await;
    let (base, live) = router(table(&monolith, &closed_port(), 1000)).await;
    live.store(reads_on());
    let (status, headers, body) = send(
        get(format!("{base}/catalog/albums"))
            .body(full(String::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["upstream"], "monolith");
    assert_eq!(headers["x-fig-reason"], "fallback_to_legacy");
}

#[tokio::test]
async fn writes_never_fall_back() {
    let monolith = echo("monolith").await;
    let mut t = table(&monolith, &closed_port(), 1000);
    t.capabilities[0].write_owner = router::WriteOwner::Extracted;
    let (base, live) = router(t).await;
    live.store(reads_on());
    let req = Request::builder()
        .method("POST")
        .uri(format!("{base}/catalog/albums"))
        .body(full("{}".into()))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["upstream"], "catalog");
}

#[tokio::test]
async fn a_503_is_retried_for_reads_but_passed_on_for_writes() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let healthy = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let flaky = switchable(healthy.clone(), hits.clone()).await;
    let (base, _) = router(table(&flaky, &flaky, 1000)).await;
    let post = Request::builder()
        .method("POST")
        .uri(format!("{base}/orders"))
        .body(full("{}".into()))
        .unwrap();
    let (status, _, _) = send(post).await;
    assert_eq!(status, 503, "the upstream's own answer");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "a write is sent once");
    hits.store(0, Ordering::SeqCst);
    let (status, _, body) = send(
        get(format!("{base}/orders/1"))
            .body(full(String::new()))
            .unwrap(),
    )
    .await;
    // The retry also got a 503: that answer is passed on as it is, not turned into a 502.
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["upstream"], "switchable");
    assert_eq!(hits.load(Ordering::SeqCst), 2, "a read is retried once");
}

#[tokio::test]
async fn the_breaker_opens_on_failures_and_closes_after_a_good_probe() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let healthy = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let flaky = switchable(healthy.clone(), hits.clone()).await;
    let (base, _, router) =
        router_with(table(&flaky, &flaky, 1000), 3, Duration::from_millis(300)).await;
    let post = || {
        Request::builder()
            .method("POST")
            .uri(format!("{base}/orders"))
            .body(full("{}".into()))
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(send(post()).await.0, 503);
    }
    let monolith = router.table.upstream_named("monolith").unwrap();
    assert_eq!(
        router.breakers[monolith].state(),
        router::breaker::State::Open
    );
    let before = hits.load(Ordering::SeqCst);
    let (status, _, body) = send(post()).await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (503, Some("circuit_open"))
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "an open circuit sends nothing"
    );

    healthy.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if send(post()).await.0 == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker never let a probe through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        router.breakers[monolith].state(),
        router::breaker::State::Closed
    );
}

#[tokio::test]
async fn a_side_refusing_writes_it_does_not_own_is_not_failing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    // What a fenced service answers (platform's `not_write_owner`), every time.
    let fenced = upstream(move |_req| {
        let hits = counted.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            Response::builder()
                .status(503)
                .header("content-type", "application/json")
                .header("x-fig-refused", "not_write_owner")
                .body(full(
                    json!({"error": {"code": "not_write_owner", "message": "no"}}).to_string(),
                ))
                .unwrap()
        }
    })
    .await;
    let (base, _, router) =
        router_with(table(&fenced, &fenced, 1000), 3, Duration::from_secs(30)).await;
    for n in 1..=10 {
        let (status, _, body) = send(
            Request::builder()
                .method("PUT")
                .uri(format!("{base}/wishlists/1/items/2"))
                .body(full(String::new()))
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status.as_u16(), body["error"]["code"].as_str()),
            (503, Some("not_write_owner")),
            "write {n}"
        );
        // Passed on at once: asking the same side again changes nothing.
        assert_eq!(hits.load(Ordering::SeqCst), n, "write {n} sent once");
    }
    let monolith = router.table.upstream_named("monolith").unwrap();
    assert_eq!(
        router.breakers[monolith].state(),
        router::breaker::State::Closed
    );
}

#[tokio::test]
async fn an_escaped_path_is_routed_as_the_upstream_reads_it() {
    let (monolith, catalog) = (echo("monolith").await, echo("catalog").await);
    let mut t = table(&monolith, &catalog, 1000);
    t.capabilities[0].write_owner = router::WriteOwner::Extracted;
    let (base, _) = router(t).await;
    let req = Request::builder()
        .method("POST")
        .uri(format!("{base}/%63atalog/artists"))
        .body(full("{}".into()))
        .unwrap();
    let (_, headers, body) = send(req).await;
    assert_eq!(
        body["upstream"], "catalog",
        "a write to the catalog goes to its owner however it is spelt"
    );
    assert_eq!(headers["x-fig-reason"], "write_to_owner");
    let dotted = get(format!("{base}/wishlists/..%2F../catalog/artists"))
        .body(full(String::new()))
        .unwrap();
    let (status, _, body) = send(dotted).await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (400, Some("bad_request_target"))
    );
}

#[tokio::test]
async fn a_streamed_body_is_never_sent_twice() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let flaky = switchable(Arc::new(AtomicBool::new(false)), hits.clone()).await;
    let (base, _) = router(table(&flaky, &flaky, 1000)).await;
    let chunks = futures_util::stream::iter(vec![Ok::<_, Infallible>(Frame::data(
        Bytes::from_static(b"{\"a\":1}"),
    ))]);
    let req = Request::builder()
        .method("PUT")
        .uri(format!("{base}/orders/1"))
        .body(StreamBody::new(chunks).boxed())
        .unwrap();
    let (status, _, _) = send(req).await;
    assert_eq!(
        status, 503,
        "the upstream's answer, not an empty-bodied retry"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn after_cutover_reads_do_not_fall_back_to_the_stale_monolith() {
    let monolith = echo("monolith").await;
    let mut t = table(&monolith, &closed_port(), 1000);
    t.capabilities[0].write_owner = router::WriteOwner::Extracted;
    let (base, live) = router(t).await;
    live.store(reads_on());
    let (status, _, body) = send(
        get(format!("{base}/catalog/albums"))
            .body(full(String::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["upstream"], "catalog");
}
