//! Bad input of every kind gets the JSON error envelope: never a panic, never database text.

use reqwest::Method;
use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn().await;
    app.get("/no/such/thing")
        .await
        .assert_error(404, "not_found", None);
    app.send(Method::DELETE, "/catalog/albums", None, &[])
        .await
        .assert_error(405, "method_not_allowed", None);
    app.send(Method::PUT, "/orders", None, &[])
        .await
        .assert_error(405, "method_not_allowed", None);
    app.send(Method::POST, "/healthz", None, &[])
        .await
        .assert_error(405, "method_not_allowed", None);
}

#[tokio::test]
async fn malformed_oversized_and_mistyped_bodies_are_refused() {
    let app = TestApp::spawn().await;
    app.send_raw(
        Method::POST,
        "/customers",
        "application/json",
        b"{\"name\": ".to_vec(),
    )
    .await
    .assert_error(400, "malformed_json", None);
    app.send_raw(Method::POST, "/customers", "application/json", Vec::new())
        .await
        .assert_error(400, "malformed_json", None);
    app.send_raw(Method::POST, "/customers", "text/plain", b"{}".to_vec())
        .await
        .assert_error(415, "unsupported_media_type", Some("Content-Type"));
    let huge = format!(
        "{{\"name\": \"{}\", \"email\": \"a@b.co\"}}",
        "x".repeat(70 * 1024)
    );
    app.send_raw(
        Method::POST,
        "/customers",
        "application/json",
        huge.into_bytes(),
    )
    .await
    .assert_error(413, "payload_too_large", None);
    app.post(
        "/customers",
        json!({"name": "A", "email": "a@b.co", "admin": true}),
    )
    .await
    .assert_error(422, "invalid_field", Some("admin"));
    assert_eq!(
        app.count("SELECT count(*) AS n FROM customers.customers"),
        0
    );
}

#[tokio::test]
async fn garbage_never_causes_a_server_error() {
    let app = TestApp::spawn().await;
    let bodies: Vec<Vec<u8>> = vec![
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"text\"".to_vec(),
        b"{\"customer_id\": 9223372036854775807, \"lines\": [{\"album_id\": -9223372036854775808, \"quantity\": 2147483647}]}".to_vec(),
        b"{\"customer_id\": 1.5}".to_vec(),
        b"{\"price\": {\"amount_cents\": 1e400}}".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        br#"{"name": "nul\u0000", "email": "a\u0000@x.io"}"#.to_vec(),
        br#"{"name": "A", "country": "G\u0000"}"#.to_vec(),
        br#"{"sku": "S", "title": "\u0000", "artist_id": 1, "genre": "g", "release_year": 2000, "price": {"amount_cents": 1, "currency": "USD"}, "stock": 1}"#.to_vec(),
        b"{\"sku\": \"S\", \"title\": \"T\", \"artist_id\": 9223372036854775807, \"genre\": \"g\", \"release_year\": 2000, \"price\": {\"amount_cents\": 1, \"currency\": \"USD\"}, \"stock\": 1}".to_vec(),
    ];
    let targets = [
        (Method::POST, "/catalog/artists"),
        (Method::POST, "/catalog/albums"),
        (Method::PATCH, "/catalog/albums/1"),
        (Method::POST, "/customers"),
        (Method::POST, "/orders"),
    ];
    for (method, path) in &targets {
        for body in &bodies {
            let reply = app
                .send_raw(method.clone(), path, "application/json", body.clone())
                .await;
            assert!(
                reply.status.is_client_error(),
                "{method} {path} {:?} -> {} {}",
                String::from_utf8_lossy(body),
                reply.status,
                reply.body
            );
            assert!(reply.body["error"]["code"].is_string());
            let text = reply.body.to_string().to_lowercase();
            for leak in ["sql", "postgres", "constraint", "relation", "diesel"] {
                assert!(!text.contains(leak), "{path}: leaked {leak}: {text}");
            }
        }
    }
}

#[tokio::test]
async fn nul_bytes_in_queries_are_refused_not_sent_to_the_database() {
    let app = TestApp::spawn().await;
    for path in [
        "/catalog/albums?q=a%00b",
        "/catalog/albums?genre=%00",
        "/catalog/artists?q=%00",
    ] {
        app.get(path).await.assert_error(400, "bad_query", None);
    }
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.ok(200)["status"], "ok");
    assert_eq!(app.get("/readyz").await.ok(200)["status"], "ready");
}
