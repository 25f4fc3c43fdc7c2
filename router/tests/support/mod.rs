//! Helpers shared by the data-path tests: upstreams on port 0 and routers in front of them.
#![allow(dead_code)]

pub mod raw;
pub mod rng;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use router::toggles::parse_features;
use router::{LiveToggles, RouteTable, Router, ToggleSet};
use serde_json::Value;
use tokio::net::TcpListener;

pub type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn full(text: String) -> TestBody {
    Full::new(Bytes::from(text)).boxed()
}

/// An upstream that answers every request with `behaviour`, on port 0; returns its base URL.
pub async fn upstream<F, Fut>(behaviour: F) -> String
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<TestBody>> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let behaviour = behaviour.clone();
                    async move { Ok::<_, Infallible>(behaviour(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    base
}

pub fn table(monolith: &str, catalog: &str, timeout_ms: u64) -> RouteTable {
    RouteTable::parse(&format!(
        r#"
        [upstreams]
        monolith = "{monolith}"
        catalog = "{catalog}"
        [capabilities.catalog]
        legacy = "monolith"
        extracted = "catalog"
        read_toggle = "catalog.reads"
        shadow_toggle = "catalog.shadow"
        write_owner = "legacy"
        timeout_ms = {timeout_ms}
        [[routes]]
        prefix = "/catalog/"
        capability = "catalog"
        "#
    ))
    .unwrap()
}

pub fn toggles(doc: Value) -> ToggleSet {
    ToggleSet::new(parse_features(doc.to_string().as_bytes()).unwrap(), 1).unwrap()
}

/// A router on port 0; returns its base URL and the live toggles to flip.
pub async fn router(table: RouteTable) -> (String, Arc<LiveToggles>) {
    let (base, live, _) = router_with(table, 5, Duration::from_secs(5)).await;
    (base, live)
}

pub async fn router_with(
    table: RouteTable,
    threshold: u32,
    cooldown: Duration,
) -> (String, Arc<LiveToggles>, Arc<Router>) {
    let live = Arc::new(LiveToggles::new(ToggleSet::empty()));
    let router = Arc::new(
        Router::new(Arc::new(table), live.clone(), "test").with_breakers(threshold, cooldown),
    );
    let handle = router.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(router::serve(listener, router));
    (base, live, handle)
}

/// Starts a router instance on `database_url` with its data and admin ports on 127.0.0.1:0,
/// no recording and no migrations.
pub async fn start_instance(
    database_url: &str,
    token: &str,
    table: RouteTable,
    name: &str,
    source: router::sync::Source,
    limits: router::proxy::Limits,
) -> router::run::Running {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    router::run::start(router::run::Config {
        listen: any,
        admin_listen: any,
        database_url: database_url.to_string(),
        token: token.into(),
        table,
        instance: name.into(),
        reload_every: Duration::from_secs(30),
        source,
        limits,
        record: None,
        migrations: None,
    })
    .await
    .expect("router starts")
}
