//! The data path: accept, decide, forward, stream back. Built on hyper directly (not actix-web),
//! so bodies stream through untouched and the decision sees only the request head; `http` 1 types
//! throughout, so there is no conversion on the hot path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::decide::{Plan, RequestHead, decide};
use crate::headers;
use crate::routes::RouteTable;
use crate::toggles::LiveToggles;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// Header naming the user for sticky rollouts.
pub const USER_HEADER: &str = "x-user-id";
pub const SESSION_HEADER: &str = "x-session-id";
/// Response headers saying which side answered and why (for clients, tests and debugging).
pub const UPSTREAM_HEADER: &str = "x-fig-upstream";
pub const REASON_HEADER: &str = "x-fig-reason";
/// How long an unrouted request (to the default upstream) may wait for response headers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One router instance: the table, the live toggles and a pooled upstream client.
pub struct Router {
    pub table: Arc<RouteTable>,
    pub toggles: Arc<LiveToggles>,
    client: Client<HttpConnector, Incoming>,
    /// This instance's name in `Via`, to recognise its own requests coming back (loops).
    token: String,
    trace_ids: AtomicU64,
}

impl Router {
    pub fn new(table: Arc<RouteTable>, toggles: Arc<LiveToggles>, instance: &str) -> Router {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Router {
            table,
            toggles,
            client,
            token: format!("fig-router-{instance}"),
            trace_ids: AtomicU64::new(seed),
        }
    }

    /// SplitMix64 over a counter: unique, well-spread ids without a lock or an RNG crate.
    fn next_id(&self) -> u64 {
        let mut z = self
            .trace_ids
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The plan for a request head, with the toggles as they are now.
    pub fn plan(&self, head: &RequestHead) -> Plan {
        decide(head, self.toggles.load().as_ref(), &self.table)
    }

    pub async fn handle(
        &self,
        client_addr: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Response<Body> {
        if headers::has_passed(req.headers(), &self.token) {
            return error(
                StatusCode::LOOP_DETECTED,
                "loop_detected",
                "this request already passed through this router",
                None,
            );
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let client_ip = client_addr.ip().to_string();
        let plan = {
            let head = RequestHead {
                method: req.method().as_str(),
                path: req.uri().path(),
                user_id: header(USER_HEADER),
                session_id: header(SESSION_HEADER),
                remote_addr: Some(&client_ip),
            };
            self.plan(&head)
        };
        let upstream = &self.table.upstreams[plan.primary];
        let timeout = plan
            .capability
            .map(|c| self.table.capabilities[c].timeout)
            .unwrap_or(DEFAULT_TIMEOUT);

        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri: Uri = match format!("{}{path}", upstream.url).parse() {
            Ok(uri) => uri,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request_target",
                    "the request target cannot be forwarded",
                    None,
                );
            }
        };
        *req.uri_mut() = uri;
        let original_host = req.headers_mut().remove(HOST);
        let h = req.headers_mut();
        headers::strip_hop_by_hop(h);
        headers::add_forwarded(h, &client_ip, original_host);
        headers::add_via(h, &self.token);
        headers::ensure_traceparent(h, || (self.next_id(), self.next_id(), self.next_id()));

        let answer = match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    &format!(
                        "{} did not answer within {} ms",
                        upstream.name,
                        timeout.as_millis()
                    ),
                    Some(&upstream.name),
                );
            }
            Ok(Err(e)) if e.is_connect() => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    &format!("could not connect to {}", upstream.name),
                    Some(&upstream.name),
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %upstream.name, error = %e, "upstream failed");
                return error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    &format!("{} failed to answer", upstream.name),
                    Some(&upstream.name),
                );
            }
            Ok(Ok(answer)) => answer,
        };
        let (mut parts, body) = answer.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::add_via(&mut parts.headers, &self.token);
        if let Ok(v) = HeaderValue::from_str(&upstream.name) {
            parts.headers.insert(UPSTREAM_HEADER, v);
        }
        parts.headers.insert(
            REASON_HEADER,
            HeaderValue::from_static(plan.reason.as_str()),
        );
        Response::from_parts(parts, body.boxed())
    }
}

/// A JSON error that says who failed: the router itself (`upstream` absent) or an upstream.
fn error(status: StatusCode, code: &str, message: &str, upstream: Option<&str>) -> Response<Body> {
    let mut body = serde_json::json!({"error": {"code": code, "message": message}});
    if let Some(u) = upstream {
        body["error"]["upstream"] = serde_json::Value::from(u);
    }
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves connections from `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, router: Arc<Router>) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let router = router.clone();
                async move { Ok::<_, Infallible>(router.handle(client, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
