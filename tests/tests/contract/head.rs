//! `HEAD` on every `GET` resource answers like the `GET` (RFC 9110 §9.3.2): the same status and
//! headers, `Content-Length` included, and no body. Errors too: an unknown album's `HEAD` is the
//! 404 its `GET` is.

use e2e::Client;
use reqwest::Method;

use crate::target::Target;

contract! {
    targets: [monolith, catalog_service];
    catalog_gets_answer_head,
}

contract! {
    targets: [monolith, wishlist_service];
    wishlist_gets_answer_head,
}

/// Headers that differ between two answers to the same request.
const PER_ANSWER: [&str; 2] = ["date", "x-fig-db-position"];

/// Sends `GET` and then `HEAD` to each path; the `HEAD` must be the `GET` without its body.
async fn head_mirrors_get(client: &Client, paths: &[String]) {
    let http = reqwest::Client::new();
    for path in paths {
        let get = http.get(client.url(path)).send().await.expect("GET sent");
        let (get_status, get_headers) = (get.status(), get.headers().clone());
        let get_body = get.bytes().await.expect("GET body");
        let head = http
            .request(Method::HEAD, client.url(path))
            .send()
            .await
            .expect("HEAD sent");
        assert_eq!(head.status(), get_status, "HEAD {path}");
        let keep = |h: &reqwest::header::HeaderMap| {
            let mut v: Vec<(String, String)> = h
                .iter()
                .filter(|(k, _)| !PER_ANSWER.contains(&k.as_str()))
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(keep(head.headers()), keep(&get_headers), "HEAD {path}");
        assert_eq!(
            head.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()),
            Some(get_body.len().to_string().as_str()),
            "HEAD {path} names the GET body's length"
        );
        assert!(
            head.bytes().await.expect("HEAD body").is_empty(),
            "HEAD {path} has no body"
        );
    }
}

async fn catalog_gets_answer_head(t: Target) {
    let catalog = t.catalog();
    let artist = catalog.create_artist("Head Case").await;
    let album = catalog.album("HEAD-1", 3).await;
    let paths = [
        "/catalog/artists".to_string(),
        format!("/catalog/artists/{artist}"),
        "/catalog/albums?limit=2".to_string(),
        format!("/catalog/albums/{album}"),
        format!("/catalog/albums/batch?ids={album}"),
        "/catalog/albums/999999".to_string(),
        "/catalog/albums/not-a-number".to_string(),
        "/healthz".to_string(),
        "/readyz".to_string(),
    ];
    head_mirrors_get(&catalog, &paths).await;
}

async fn wishlist_gets_answer_head(t: Target) {
    let customer = t.customers().create_customer("head@example.com").await;
    let paths = [
        format!("/wishlists/{customer}"),
        "/wishlists/999999".to_string(),
        "/healthz".to_string(),
    ];
    head_mirrors_get(&t.wishlist(), &paths).await;
    head_mirrors_get(&t.customers(), &[format!("/customers/{customer}")]).await;
}
