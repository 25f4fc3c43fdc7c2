//! HTTP/1.1 on the wire through the router's own data path: what a client library would never
//! send (pipelining, smuggling attempts, HTTP/1.0, broken heads) and upstreams that behave in
//! ways a well-behaved test server would not (closing kept connections, answering early).
//! Clients here write raw bytes, so each test controls exactly what reaches the router.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;

use support::raw::{LIMIT, addr, exchange, read_to_close, statuses, upload_reading};
use support::{full, router, table, upstream};

/// An upstream answering `<method> <path> <body>`, and its request count.
async fn echo_body() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let base = upstream(move |req: Request<Incoming>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let line = format!("{} {}", req.method(), req.uri());
            let body: Bytes = req.into_body().collect().await.unwrap().to_bytes();
            let text = format!("{line} {}", String::from_utf8_lossy(&body));
            Response::builder()
                .header("content-type", "text/plain")
                .body(full(text))
                .unwrap()
        }
    })
    .await;
    (base, hits)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (up, hits) = echo_body().await;
    let (base, _) = router(table(&up, &up, 1000)).await;
    let text = exchange(
        &base,
        b"GET /catalog/a HTTP/1.1\r\nHost: shop\r\n\r\n\
          POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello\
          GET /catalog/b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["200", "200", "200"], "{text}");
    let a = text.find("GET /catalog/a").unwrap();
    let post = text.find("POST /orders hello").unwrap();
    let b = text.find("GET /catalog/b").unwrap();
    assert!(a < post && post < b, "{text}");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn ambiguous_framing_is_refused_before_anything_reaches_an_upstream() {
    let (up, hits) = echo_body().await;
    let (base, _) = router(table(&up, &up, 1000)).await;
    for smuggle in [
        &b"POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /orders HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /orders HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let text = exchange(&base, smuggle).await;
        assert_eq!(statuses(&text), ["400"], "{text}");
        assert!(text.contains("bad_framing"), "{text}");
    }
    for broken in [
        &b"GET / HTTP/1.1\r\nHost: shop\r\nNo Colon Here\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    ] {
        let text = exchange(&base, broken).await;
        assert_eq!(statuses(&text), ["400"], "{text}");
    }
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: shop\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let text = exchange(&base, huge.as_bytes()).await;
    assert_eq!(statuses(&text), ["431"], "{text}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_chunked_request_body_is_forwarded_with_its_chunks() {
    let (up, _) = echo_body().await;
    let (base, _) = router(table(&up, &up, 1000)).await;
    let text = exchange(
        &base,
        b"POST /orders HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["200"], "{text}");
    assert!(text.contains("POST /orders hello world"), "{text}");
}

#[tokio::test]
async fn a_head_answer_carries_a_length_but_no_body() {
    let up = upstream(|_req: Request<Incoming>| async {
        Response::builder()
            .header("content-length", "81")
            .body(full(String::new()))
            .unwrap()
    })
    .await;
    let (base, _) = router(table(&up, &up, 1000)).await;
    // If the router waited for 81 body bytes after the HEAD answer, the second answer would
    // never come.
    let text = exchange(
        &base,
        b"HEAD /catalog/a HTTP/1.1\r\nHost: shop\r\n\r\nHEAD /catalog/b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["200", "200"], "{text}");
    assert_eq!(text.matches("content-length: 81").count(), 2, "{text}");
}

#[tokio::test]
async fn an_http_1_0_client_gets_its_answer_and_the_connection_closes() {
    let (up, _) = echo_body().await;
    let (base, _) = router(table(&up, &up, 1000)).await;
    let text = exchange(&base, b"GET /catalog/old HTTP/1.0\r\n\r\n").await;
    assert_eq!(statuses(&text), ["200"], "{text}");
    assert!(text.contains("GET /catalog/old"), "{text}");
}

#[tokio::test]
async fn expect_100_continue_is_relayed_before_the_body_is_sent() {
    let (up, _) = echo_body().await;
    let (base, _) = router(table(&up, &up, 1000)).await;
    let mut stream = TcpStream::connect(addr(&base)).await.unwrap();
    stream
        .write_all(b"POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut interim))
        .await
        .expect("100 Continue arrives without the body")
        .unwrap();
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    stream.write_all(b"ping").await.unwrap();
    let text = read_to_close(&mut stream).await;
    assert_eq!(statuses(&text), ["200"], "{text}");
    assert!(text.contains("POST /orders ping"), "{text}");
}

/// An upstream speaking raw HTTP/1.1: each connection answers one request with `answer`, then
/// closes without announcing it (as an upstream that times out idle connections does).
async fn one_shot_upstream(answer: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = stream.write_all(answer).await;
            });
        }
    });
    (base, connections)
}

#[tokio::test]
async fn a_kept_connection_the_upstream_closed_is_replaced_without_failing_the_request() {
    let (up, connections) =
        one_shot_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let (base, _) = router(table(&up, &up, 1000)).await;
    let text = exchange(
        &base,
        b"GET /catalog/1 HTTP/1.1\r\nHost: shop\r\n\r\nGET /catalog/2 HTTP/1.1\r\nHost: shop\r\n\r\nGET /catalog/3 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["200", "200", "200"], "{text}");
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_upstream_answering_before_the_whole_body_is_passed_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut first = [0u8; 64];
        let _ = stream.read(&mut first).await;
        let _ = stream
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
            .await;
        // Keep reading (and dropping) so the router is never stuck writing to us.
        let mut sink = vec![0u8; 64 * 1024];
        while stream.read(&mut sink).await.unwrap_or(0) > 0 {}
    });
    let (base, _) = router(table(&up, &up, 5000)).await;
    let (text, _) = upload_reading(&base, 8 * 1024 * 1024).await;
    assert!(
        text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{text}"
    );
    assert!(text.ends_with("too large"), "{text}");
}
