//! The data path: accept, decide, forward, stream back. Built on hyper directly (not actix-web),
//! so bodies stream through untouched and the decision sees only the request head; `http` 1 types
//! throughout, so there is no conversion on the hot path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderMap, HeaderValue, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::breaker::Breaker;
use crate::decide::{Plan, RequestHead, decide};
use crate::headers;
use crate::metrics::Metrics;
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

/// Retries may add at most this share of requests (plus a small burst): a failing upstream is
/// not hit harder because it fails.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a retry.
    tokens: std::sync::atomic::AtomicI64,
}

const DEPOSIT: i64 = 100; // each request earns 0.1 retry
const RETRY_COST: i64 = 1_000;
const MAX_TOKENS: i64 = 10_000; // a burst of 10 retries

impl RetryBudget {
    fn new() -> Self {
        RetryBudget {
            tokens: std::sync::atomic::AtomicI64::new(MAX_TOKENS),
        }
    }

    fn deposit(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + DEPOSIT).min(MAX_TOKENS))
            });
    }

    fn withdraw(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= RETRY_COST).then_some(t - RETRY_COST)
            })
            .is_ok()
    }
}

/// Why forwarding to one upstream did not produce an answer to pass on.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Timeout(usize),
    Unreachable(usize),
    Broken(usize),
    CircuitOpen(usize),
}

impl Failure {
    fn upstream(self) -> usize {
        match self {
            Failure::Timeout(u)
            | Failure::Unreachable(u)
            | Failure::Broken(u)
            | Failure::CircuitOpen(u) => u,
        }
    }
}

/// One router instance: the table, the live toggles and a pooled upstream client.
pub struct Router {
    pub table: Arc<RouteTable>,
    pub toggles: Arc<LiveToggles>,
    /// One per upstream, by index.
    pub breakers: Vec<Breaker>,
    pub metrics: Metrics,
    retries: RetryBudget,
    client: Client<HttpConnector, Body>,
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
        let breakers = table
            .upstreams
            .iter()
            .map(|_| Breaker::new(5, Duration::from_secs(5)))
            .collect();
        Router {
            metrics: Metrics::new(&table),
            table,
            toggles,
            breakers,
            retries: RetryBudget::new(),
            client,
            token: format!("fig-router-{instance}"),
            trace_ids: AtomicU64::new(seed),
        }
    }

    /// Replaces the breakers: `threshold` consecutive failures open one for `cooldown`.
    pub fn with_breakers(mut self, threshold: u32, cooldown: Duration) -> Router {
        self.breakers = self
            .table
            .upstreams
            .iter()
            .map(|_| Breaker::new(threshold, cooldown))
            .collect();
        self
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

    /// Handles one request and counts it.
    pub async fn handle(&self, client_addr: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        use futures_util::FutureExt;
        let started = std::time::Instant::now();
        // A bug in the router must not look like an upstream failure, nor drop the connection
        // without an answer: a panic becomes a 500 that says the router is at fault.
        let forwarded = std::panic::AssertUnwindSafe(self.forward(client_addr, req))
            .catch_unwind()
            .await;
        let (response, capability, upstream) = forwarded.unwrap_or_else(|_| {
            tracing::error!("router fault: request handling panicked");
            let fault = error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "router_fault",
                "the router failed to handle this request",
                None,
            );
            (fault, None, None)
        });
        if let Some(upstream) = upstream {
            self.metrics.observe(
                capability,
                upstream,
                response.status().as_u16(),
                started.elapsed(),
            );
        }
        response
    }

    /// The answer, and which capability and upstream it is counted under.
    async fn forward(
        &self,
        client_addr: SocketAddr,
        mut req: Request<Incoming>,
    ) -> (Response<Body>, Option<usize>, Option<usize>) {
        if headers::has_passed(req.headers(), &self.token) {
            let refused = error(
                StatusCode::LOOP_DETECTED,
                "loop_detected",
                "this request already passed through this router",
                None,
            );
            return (refused, None, None);
        }
        // Route on what the upstream will see: `/%63atalog/` is `/catalog/` to it.
        let Some(decoded_path) = headers::decoded_path(req.uri().path()) else {
            let bad = error(
                StatusCode::BAD_REQUEST,
                "bad_request_target",
                "the path has dot segments or bad escapes",
                None,
            );
            return (bad, None, None);
        };
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let client_ip = client_addr.ip().to_string();
        let plan = {
            let head = RequestHead {
                method: req.method().as_str(),
                path: &decoded_path,
                user_id: header(USER_HEADER),
                session_id: header(SESSION_HEADER),
                remote_addr: Some(&client_ip),
            };
            self.plan(&head)
        };
        let timeout = plan
            .capability
            .map(|c| self.table.capabilities[c].timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        // A read the extracted side cannot answer falls back to the monolith's copy, while the
        // monolith still owns writes (after cutover its copy goes stale).
        let fallback = plan.capability.and_then(|c| {
            let cap = &self.table.capabilities[c];
            let legacy_is_fresh = cap.write_owner == crate::routes::WriteOwner::Legacy;
            (is_read(req.method())
                && legacy_is_fresh
                && plan.primary == cap.extracted
                && cap.legacy != cap.extracted)
                .then_some(cap.legacy)
        });
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        // Decided before hop-by-hop headers go: Transfer-Encoding says whether a body follows.
        let replayable = is_replayable(req.method(), req.headers());
        let original_host = req.headers_mut().remove(HOST);
        let h = req.headers_mut();
        headers::strip_hop_by_hop(h);
        headers::add_forwarded(h, &client_ip, original_host);
        headers::add_via(h, &self.token);
        headers::ensure_traceparent(h, || (self.next_id(), self.next_id(), self.next_id()));
        self.retries.deposit();

        // Only a request without a body can be sent twice (the body streams through once).
        let (parts, body) = req.into_parts();
        let mut body = Some(body.boxed());
        let mut last = Failure::CircuitOpen(plan.primary);
        for target in std::iter::once(plan.primary).chain(fallback) {
            if !self.breakers[target].allow() {
                last = Failure::CircuitOpen(target);
                continue;
            }
            // One retry per target at most, and only within the budget.
            let mut retried = false;
            loop {
                let next_body = match body.take() {
                    Some(b) => b,
                    None if replayable => Empty::new().map_err(|never| match never {}).boxed(),
                    None => {
                        return (
                            failure_response(&self.table, last),
                            plan.capability,
                            Some(last.upstream()),
                        );
                    }
                };
                let uri: Uri = match format!("{}{path}", self.table.upstreams[target].url).parse() {
                    Ok(uri) => uri,
                    Err(_) => {
                        let bad = error(
                            StatusCode::BAD_REQUEST,
                            "bad_request_target",
                            "the request target cannot be forwarded",
                            None,
                        );
                        return (bad, plan.capability, None);
                    }
                };
                let mut forward = Request::new(next_body);
                *forward.method_mut() = parts.method.clone();
                *forward.uri_mut() = uri;
                *forward.headers_mut() = parts.headers.clone();
                let outcome = tokio::time::timeout(timeout, self.client.request(forward)).await;
                let (failure, retry) = match outcome {
                    Ok(Ok(answer)) if is_unavailable(answer.status()) => {
                        self.breakers[target].record(false);
                        let retry =
                            answer.status() == StatusCode::SERVICE_UNAVAILABLE && replayable;
                        let can_fall_back = fallback.is_some_and(|f| f != target);
                        if !(retry || can_fall_back) {
                            // Nothing better to offer: the upstream's own answer says most.
                            return (
                                self.pass_on(answer, target, plan),
                                plan.capability,
                                Some(target),
                            );
                        }
                        (Failure::Broken(target), retry)
                    }
                    Ok(Ok(answer)) => {
                        self.breakers[target].record(true);
                        return (
                            self.pass_on(answer, target, plan),
                            plan.capability,
                            Some(target),
                        );
                    }
                    Err(_) => {
                        self.breakers[target].record(false);
                        (Failure::Timeout(target), false)
                    }
                    Ok(Err(e)) if e.is_connect() => {
                        self.breakers[target].record(false);
                        (Failure::Unreachable(target), true)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(upstream = %self.table.upstreams[target].name, error = %e, "upstream failed");
                        self.breakers[target].record(false);
                        (Failure::Broken(target), false)
                    }
                };
                last = failure;
                if retry
                    && replayable
                    && !retried
                    && self.breakers[target].allow()
                    && self.retries.withdraw()
                {
                    retried = true;
                    continue;
                }
                break;
            }
        }
        (
            failure_response(&self.table, last),
            plan.capability,
            Some(last.upstream()),
        )
    }

    fn pass_on(&self, answer: Response<Incoming>, target: usize, plan: Plan) -> Response<Body> {
        let (mut parts, body) = answer.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::add_via(&mut parts.headers, &self.token);
        if let Ok(v) = HeaderValue::from_str(&self.table.upstreams[target].name) {
            parts.headers.insert(UPSTREAM_HEADER, v);
        }
        let reason = if target == plan.primary {
            plan.reason.as_str()
        } else {
            "fallback_to_legacy"
        };
        parts
            .headers
            .insert(REASON_HEADER, HeaderValue::from_static(reason));
        Response::from_parts(parts, body.boxed())
    }
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Idempotent and without a body: safe to send again after a connect failure or a 503.
fn is_replayable(method: &Method, headers: &HeaderMap) -> bool {
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::PUT
    );
    let bodiless = !headers.contains_key(TRANSFER_ENCODING)
        && headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() == "0");
    idempotent && bodiless
}

/// Statuses that mean "not available right now", which count against the breaker.
fn is_unavailable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

fn failure_response(table: &RouteTable, failure: Failure) -> Response<Body> {
    let name = |i: usize| table.upstreams[i].name.as_str();
    match failure {
        Failure::Timeout(u) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            &format!("{} did not answer in time", name(u)),
            Some(name(u)),
        ),
        Failure::Unreachable(u) => error(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            &format!("could not connect to {}", name(u)),
            Some(name(u)),
        ),
        Failure::Broken(u) => error(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            &format!("{} failed to answer", name(u)),
            Some(name(u)),
        ),
        Failure::CircuitOpen(u) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit_open",
            &format!(
                "{} is failing; the router is not sending it requests for now",
                name(u)
            ),
            Some(name(u)),
        ),
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
