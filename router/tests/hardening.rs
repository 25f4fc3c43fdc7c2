//! One test per defect a review reproduced in the data path (framing, retries, fallback,
//! breakers, limits). Upstreams here speak raw TCP, so each can misbehave exactly as the
//! reproduction did, and count what reached it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use router::proxy::Limits;
use router::{LiveToggles, RouteTable, Router, ToggleSet};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod support;

use support::raw::{
    LIMIT, OK, answering, connect, exchange, raw_upstream, read_answer, read_request,
    read_to_close, statuses, upload_reading,
};
use support::{table, toggles};

/// A router on port 0 with `limits` and breakers opening after 5 failures; returns its base URL,
/// the live toggles and the router.
async fn router_with(
    table: RouteTable,
    limits: Limits,
    toggles: ToggleSet,
) -> (String, Arc<LiveToggles>, Arc<Router>) {
    let live = Arc::new(LiveToggles::new(toggles));
    let router = Arc::new(
        Router::new(Arc::new(table), live.clone(), "test")
            .with_breakers(5, Duration::from_secs(30))
            .with_limits(limits),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(router::serve(listener, router.clone()));
    (base, live, router)
}

async fn plain_router(table: RouteTable) -> String {
    router_with(table, Limits::default(), ToggleSet::empty())
        .await
        .0
}

fn reads_on() -> ToggleSet {
    toggles(json!({"version": 2, "features": [
        {"name": "catalog.reads", "enabled": true, "strategies": [{"name": "default"}]}]}))
}

// 1. Smuggling through the Connection header.

#[tokio::test]
async fn a_request_whose_connection_names_a_framing_field_is_refused() {
    let (up, requests) = answering(OK).await;
    let base = plain_router(table(&up, &up, 1000)).await;
    for named in [
        "Content-Length",
        "transfer-encoding",
        "Host",
        "keep-alive, content-length",
    ] {
        // Had Content-Length been dropped, the body would reach the upstream as a second request.
        let text = exchange(
            &base,
            format!(
                "POST /orders HTTP/1.1\r\nHost: shop\r\nConnection: {named}\r\nContent-Length: 35\r\n\r\nGET /admin HTTP/1.1\r\nHost: shop\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(statuses(&text), ["400"], "{named}: {text}");
        assert!(text.contains("bad_framing"), "{text}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_answer_whose_connection_names_its_length_keeps_it_and_closes_the_connection() {
    let (up, _) =
        answering(b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok")
            .await;
    let base = plain_router(table(&up, &up, 1000)).await;
    let text = exchange(
        &base,
        b"GET /catalog/a HTTP/1.1\r\nHost: shop\r\n\r\nGET /catalog/b HTTP/1.1\r\nHost: shop\r\n\r\n",
    )
    .await;
    // One answer, with its length, then the connection ends (the second request is not served
    // on a connection whose framing a second parser may have read differently).
    assert_eq!(statuses(&text), ["200"], "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("content-length: 2\r\n"), "{text}");
    assert!(lower.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
}

// 2. Host.

#[tokio::test]
async fn http_1_1_needs_exactly_one_host() {
    let (up, requests) = answering(OK).await;
    let base = plain_router(table(&up, &up, 1000)).await;
    for bad in [
        &b"GET /catalog/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
        b"GET /catalog/a HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        b"GET /catalog/a HTTP/1.1\r\n\r\n",
        b"GET /catalog/a HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let text = exchange(&base, bad).await;
        assert_eq!(
            statuses(&text),
            ["400"],
            "{}: {text}",
            String::from_utf8_lossy(bad)
        );
        assert!(text.contains("Host"), "{text}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    let text = exchange(&base, b"GET /catalog/a HTTP/1.0\r\n\r\n").await;
    assert_eq!(statuses(&text), ["200"], "HTTP/1.0 needs no Host: {text}");
}

// 3. Stray bytes on a kept upstream connection.

#[tokio::test]
async fn bytes_an_upstream_sent_while_idle_never_become_the_next_answer() {
    let (stray_sent, mut stray_arrived) = mpsc::unbounded_channel();
    let (up, requests) = raw_upstream(move |mut stream, count| {
        let stray_sent = stray_sent.clone();
        async move {
            let mut buf = Vec::new();
            while read_request(&mut stream, &mut buf).await.is_some() {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let body = format!("answer {n}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                if n == 1 {
                    // After the complete answer, bytes no request asked for.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
                        .await;
                    let _ = stray_sent.send(());
                }
            }
        }
    })
    .await;
    let base = plain_router(table(&up, &up, 1000)).await;
    let mut client = connect(&base).await;
    client
        .write_all(b"GET /catalog/1 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let first = read_answer(&mut client).await;
    assert!(first.ends_with("answer 1"), "{first}");
    stray_arrived.recv().await.unwrap();
    client
        .write_all(b"GET /catalog/2 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let second = read_answer(&mut client).await;
    assert!(second.ends_with("answer 2"), "{second}");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

// 4. Status lines without a reason phrase, or with a non-ASCII one.

#[tokio::test]
async fn answers_without_a_reason_phrase_or_with_a_non_ascii_one_are_relayed() {
    for (answer, reason) in [
        (&b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"[..], ""),
        (b"HTTP/1.1 201 \r\nContent-Length: 2\r\n\r\nok", ""),
        (
            b"HTTP/1.1 200 \xc3\xa9t\xc3\xa9\r\nContent-Length: 2\r\n\r\nok",
            "",
        ),
        (
            b"HTTP/1.1 404 Not Here\r\nContent-Length: 2\r\n\r\nok",
            "Not Here",
        ),
    ] {
        let (up, _) = answering(answer).await;
        let base = plain_router(table(&up, &up, 1000)).await;
        let text = exchange(
            &base,
            b"GET /catalog/a HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        )
        .await;
        let status = &String::from_utf8_lossy(answer)[9..12];
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} {reason}\r\n")),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nok"), "{text}");
    }
}

// 5. Broken percent-escapes.

#[tokio::test]
async fn a_signed_percent_escape_is_a_broken_escape() {
    let (up, requests) = answering(OK).await;
    let base = plain_router(table(&up, &up, 1000)).await;
    for target in ["/catalog/%+1", "/catalog/%-1", "/catalog/%+f"] {
        let text = exchange(
            &base,
            format!("GET {target} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(statuses(&text), ["400"], "{target}: {text}");
        assert!(text.contains("bad_request_target"), "{text}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 0);
}

// 6. A POST is never sent twice.

/// An upstream that answers the first request on each connection and, on the second, reads it
/// and closes without answering: the upstream may have acted on it.
async fn closes_on_second_request() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let posts = Arc::new(AtomicUsize::new(0));
    let seen = posts.clone();
    let (up, requests) = raw_upstream(move |mut stream, count| {
        let seen = seen.clone();
        async move {
            let mut buf = Vec::new();
            let mut on_this = 0;
            while let Some((head, _)) = read_request(&mut stream, &mut buf).await {
                count.fetch_add(1, Ordering::SeqCst);
                if head.starts_with("POST") {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                on_this += 1;
                if on_this == 2 {
                    return;
                }
                if stream.write_all(OK).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (up, requests, posts)
}

#[tokio::test]
async fn a_post_on_a_kept_connection_that_closes_unanswered_is_not_sent_again() {
    let (up, _, posts) = closes_on_second_request().await;
    let base = plain_router(table(&up, &up, 1000)).await;
    let mut client = connect(&base).await;
    client
        .write_all(b"GET /catalog/1 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(statuses(&read_answer(&mut client).await), ["200"]);
    client
        .write_all(b"POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let text = read_answer(&mut client).await;
    assert_eq!(statuses(&text), ["502"], "{text}");
    assert_eq!(posts.load(Ordering::SeqCst), 1, "the POST went out once");
}

#[tokio::test]
async fn a_get_on_a_kept_connection_that_closes_unanswered_is_sent_again() {
    let (up, requests, _) = closes_on_second_request().await;
    let base = plain_router(table(&up, &up, 1000)).await;
    let mut client = connect(&base).await;
    for path in ["/catalog/1", "/catalog/2"] {
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(statuses(&read_answer(&mut client).await), ["200"], "{path}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 3, "the GET went out twice");
}

// 7. Fallback and retries get time of their own; a breaker books only its own failures.

/// An upstream that reads each request and never answers it.
async fn silent() -> String {
    raw_upstream(|mut stream, count| async move {
        let mut buf = Vec::new();
        while read_request(&mut stream, &mut buf).await.is_some() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await
    .0
}

#[tokio::test]
async fn after_a_slow_extracted_side_the_fallback_has_its_own_time_and_the_monolith_stays_healthy()
{
    let (monolith, monolith_requests) = answering(OK).await;
    let catalog = silent().await;
    let (base, _, router) = router_with(
        table(&monolith, &catalog, 300),
        Limits::default(),
        reads_on(),
    )
    .await;
    for i in 0..6 {
        let text = exchange(
            &base,
            format!("GET /catalog/{i} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(statuses(&text), ["200"], "read {i}: {text}");
        assert!(text.contains("fallback_to_legacy"), "{text}");
    }
    assert_eq!(monolith_requests.load(Ordering::SeqCst), 6);
    let monolith_index = router.table.upstream_named("monolith").unwrap();
    let catalog_index = router.table.upstream_named("catalog").unwrap();
    assert_eq!(
        router.breakers[monolith_index].state(),
        router::breaker::State::Closed
    );
    assert_eq!(
        router.breakers[catalog_index].state(),
        router::breaker::State::Open,
        "five timeouts are the catalog's own"
    );
    let text = exchange(
        &base,
        b"GET /orders HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["200"], "unrelated traffic flows: {text}");
}

#[tokio::test]
async fn all_attempts_together_stay_within_twice_the_timeout() {
    let monolith = silent().await;
    let catalog = silent().await;
    let (base, _, _) = router_with(
        table(&monolith, &catalog, 300),
        Limits::default(),
        reads_on(),
    )
    .await;
    let started = Instant::now();
    let text = exchange(
        &base,
        b"GET /catalog/1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["504"], "{text}");
    assert!(text.contains("\"upstream\":\"monolith\""), "{text}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(1500),
        "primary and fallback each had their time, and no more: {took:?}"
    );
}

// 8. A stalled client is the client's fault.

#[tokio::test]
async fn a_client_that_stalls_its_body_gets_408_and_the_upstream_stays_healthy() {
    let (up, _) = raw_upstream(|mut stream, count| async move {
        // Waits for a body that never completes.
        let mut buf = Vec::new();
        if read_request(&mut stream, &mut buf).await.is_some() {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(OK).await;
        }
    })
    .await;
    let (base, _, router) =
        router_with(table(&up, &up, 200), Limits::default(), ToggleSet::empty()).await;
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut client = connect(&base).await;
        client
            .write_all(b"POST /catalog/albums HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\n\r\nonly ten b")
            .await
            .unwrap();
        let text = read_to_close(&mut client).await;
        assert_eq!(statuses(&text), ["408"], "{text}");
        assert!(text.contains("request_timeout"), "{text}");
        stalled.push(client);
    }
    for breaker in &router.breakers {
        assert_eq!(breaker.state(), router::breaker::State::Closed);
    }
    let text = exchange(
        &base,
        b"POST /catalog/albums HTTP/1.1\r\nHost: shop\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await;
    assert_eq!(statuses(&text), ["200"], "{text}");
}

// 9. Limits.

#[tokio::test]
async fn connections_past_the_limit_are_shed_politely_and_served_again_once_below_it() {
    let (up, _) = answering(OK).await;
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (base, _, router) = router_with(table(&up, &up, 1000), limits, ToggleSet::empty()).await;
    let mut held = vec![connect(&base).await, connect(&base).await];
    for client in &mut held {
        client
            .write_all(b"GET /catalog/a HTTP/1.1\r\nHost: shop\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(statuses(&read_answer(client).await), ["200"]);
    }
    let text = exchange(&base, b"GET /catalog/a HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    assert_eq!(statuses(&text), ["503"], "{text}");
    assert!(text.contains("overloaded"), "{text}");
    assert!(text.contains("retry-after: 1\r\n"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    drop(held.pop());
    let deadline = Instant::now() + LIMIT;
    while router.open_connections() > 1 {
        assert!(
            Instant::now() < deadline,
            "the closed connection is never released"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let text = exchange(
        &base,
        b"GET /catalog/a HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["200"], "{text}");
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answer_releases_the_upstream_connection() {
    let (released_tx, mut released) = mpsc::unbounded_channel();
    let (up, _) = raw_upstream(move |mut stream, _| {
        let released_tx = released_tx.clone();
        async move {
            let mut buf = Vec::new();
            if read_request(&mut stream, &mut buf).await.is_none() {
                return;
            }
            let size = 256 * 1024 * 1024;
            let _ = stream
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").as_bytes())
                .await;
            let chunk = vec![b'x'; 64 * 1024];
            let mut written = 0;
            while written < size {
                if stream.write_all(&chunk).await.is_err() {
                    break;
                }
                written += chunk.len();
            }
            let _ = released_tx.send(written < size);
        }
    })
    .await;
    let limits = Limits {
        body_idle: Duration::from_millis(300),
        ..Limits::default()
    };
    let (base, _, _) = router_with(table(&up, &up, 1000), limits, ToggleSet::empty()).await;
    let mut client = connect(&base).await;
    client
        .write_all(b"GET /catalog/big HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing: the router's writes stall, and it must give up.
    let cut_short = tokio::time::timeout(LIMIT, released.recv())
        .await
        .expect("the upstream's connection is released")
        .unwrap();
    assert!(cut_short, "the upstream could not finish its answer");
    drop(client);
}

// 11. Early answers reach the client.

#[tokio::test]
async fn an_early_answer_before_a_large_body_reaches_the_client_even_when_the_upstream_closes() {
    let (up, _) = raw_upstream(|mut stream, _| async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let _ = stream
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
            .await;
        // Closes with the body unread, as servers refusing a body do.
    })
    .await;
    let base = plain_router(table(&up, &up, 5000)).await;
    let (text, read) = upload_reading(&base, 5 * 1024 * 1024).await;
    assert!(
        read.is_ok(),
        "the connection was reset: {read:?} after {text:?}"
    );
    assert!(
        text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{text}"
    );
    assert!(text.ends_with("too large"), "{text}");
}
