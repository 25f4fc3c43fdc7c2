//! The data path: accept, read the head, decide, forward, stream back.
//!
//! One task per client connection does everything for it: it parses each request head once
//! ([`crate::h1`]), writes the head it forwards straight into a buffer, keeps its own idle
//! connection to each upstream, and copies bodies byte for byte in both directions at once. No
//! header map, no per-request task, channel or pool lock: ADR 0007 has the measurements that
//! led here from hyper.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout_at;

use crate::breaker::Breaker;
use crate::decide::{Plan, Reason, RequestHead, decide};
use crate::h1::{self, Framing, Head, HeadError};
use crate::headers;
use crate::metrics::Metrics;
use crate::ownership::LiveOwners;
use crate::record::{self, Recorder};
use crate::routes::RouteTable;
use crate::shadow::{self, Capture, Job, ShadowLimits, Shadows, Tee};
use crate::toggles::LiveToggles;

mod heads;
mod io;
mod parallel;

use io::write_within;
pub(crate) use io::{CopyError, ReadHeadError, copy_body, read_head};

/// Header naming the user for sticky rollouts.
pub const USER_HEADER: &str = "x-user-id";
pub const SESSION_HEADER: &str = "x-session-id";
/// Response headers saying which side answered and why (for clients, tests and debugging).
pub const UPSTREAM_HEADER: &str = "x-fig-upstream";
pub const REASON_HEADER: &str = "x-fig-reason";
/// How long an unrouted request (to the default upstream) may wait for response headers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to an upstream may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Room kept free in a read buffer: one socket read at most this large.
const READ_SIZE: usize = 16 * 1024;
/// A request's attempts (retry, fallback) each get the capability's timeout, and all of them
/// together at most this many times it: a fallback is not starved by a slow primary, and a
/// client never waits for an unbounded chain of attempts.
const ATTEMPT_BUDGETS: u32 = 2;
/// The longest pause between accepts after the process ran out of file descriptors (or
/// memory): accepting again at once would only fail again, at full speed.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The data path's limits. The defaults suit production; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Client connections served at once. Past it, a new connection is answered `503
    /// overloaded` and closed: each connection costs file descriptors (its own, and a kept one
    /// per upstream), and running out of them would fail every client, not just the newest.
    pub max_connections: usize,
    /// How long a client connection may sit idle between requests, or take to send a head.
    pub client_idle: Duration,
    /// How long a body may make no progress (nothing read from its sender, or nothing written to
    /// its receiver) before the exchange is cut: a client that stops reading its answer would
    /// otherwise hold an upstream connection for ever.
    pub body_idle: Duration,
    /// How long a closing connection keeps reading (and discarding) what its client still sends,
    /// after the answer went out. Closing on unread input makes the kernel send a reset, which
    /// can destroy the answer before the client has read it (an early `413`, say).
    pub linger: Duration,
    /// How long a write to a capability whose writes are held (its ownership is moving) waits
    /// for the hold to end before it is answered `503 write_held`. It waits unread and is sent
    /// nowhere meanwhile; a flip's hold should end well within it.
    pub write_hold: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            client_idle: Duration::from_secs(60),
            body_idle: Duration::from_secs(30),
            linger: Duration::from_secs(2),
            write_hold: Duration::from_secs(2),
        }
    }
}

/// Retries may add at most this share of requests (plus a small burst): a failing upstream is
/// not hit harder because it fails.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a retry.
    tokens: AtomicI64,
}

const DEPOSIT: i64 = 100; // each request earns 0.1 retry
const RETRY_COST: i64 = 1_000;
const MAX_TOKENS: i64 = 10_000; // a burst of 10 retries

impl RetryBudget {
    fn new() -> Self {
        RetryBudget {
            tokens: AtomicI64::new(MAX_TOKENS),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout(usize),
    Unreachable(usize),
    Broken(usize),
    CircuitOpen(usize),
    /// The router could not open a connection to the upstream for want of its own resources
    /// (file descriptors): not the upstream's failure, and not booked on its breaker.
    Exhausted(usize),
}

impl Failure {
    fn upstream(self) -> usize {
        match self {
            Failure::Timeout(u)
            | Failure::Unreachable(u)
            | Failure::Broken(u)
            | Failure::CircuitOpen(u)
            | Failure::Exhausted(u) => u,
        }
    }
}

/// Where an upstream listens, split once from its URL.
#[derive(Debug, Clone)]
struct Address {
    /// `host:port`, to connect to and to send as `Host`.
    authority: String,
    /// A path prefix the URL carries (usually empty), put before every forwarded path.
    base: String,
}

impl Address {
    fn of(url: &str) -> Address {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Address {
            authority,
            base: base.to_string(),
        }
    }
}

/// One router instance: the table, the live toggles and write ownership, breakers and counters.
pub struct Router {
    pub table: Arc<RouteTable>,
    pub toggles: Arc<LiveToggles>,
    /// Who owns each capability's writes now, and whether they are held.
    pub owners: Arc<LiveOwners>,
    /// One per upstream, by index.
    pub breakers: Vec<Breaker>,
    pub metrics: Metrics,
    retries: RetryBudget,
    limits: Limits,
    addresses: Vec<Address>,
    /// This instance's name in `Via`, to recognise its own requests coming back (loops).
    token: String,
    /// `1.1 <token>`, the element this hop adds to `Via`.
    via: String,
    trace_ids: AtomicU64,
    /// The parallel run's shadow copies and their reports.
    pub shadows: Arc<Shadows>,
    /// Writes a sample of routed requests to a file, for replaying.
    recorder: Option<Arc<Recorder>>,
}

impl Router {
    pub fn new(table: Arc<RouteTable>, toggles: Arc<LiveToggles>, instance: &str) -> Router {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let breakers = table
            .upstreams
            .iter()
            .map(|_| Breaker::new(5, Duration::from_secs(5)))
            .collect();
        let token = format!("fig-router-{instance}");
        Router {
            metrics: Metrics::new(&table),
            addresses: table
                .upstreams
                .iter()
                .map(|u| Address::of(&u.url))
                .collect(),
            owners: Arc::new(LiveOwners::new(table.clone())),
            table,
            toggles,
            breakers,
            retries: RetryBudget::new(),
            limits: Limits::default(),
            via: format!("1.1 {token}"),
            token,
            trace_ids: AtomicU64::new(seed),
            shadows: Shadows::new(ShadowLimits::default()),
            recorder: None,
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

    /// Follows `owners` (which must be indexed by this router's table) instead of the table's
    /// configured write owners.
    pub fn with_owners(mut self, owners: Arc<LiveOwners>) -> Router {
        self.owners = owners;
        self
    }

    /// Replaces the data path's limits.
    pub fn with_limits(mut self, limits: Limits) -> Router {
        self.limits = limits;
        self
    }

    /// Replaces the shadowing limits (and forgets the reports so far).
    pub fn with_shadow_limits(mut self, limits: ShadowLimits) -> Router {
        self.shadows = Shadows::new(limits);
        self
    }

    /// Records a sample of routed requests with `recorder`.
    pub fn with_recorder(mut self, recorder: Arc<Recorder>) -> Router {
        self.recorder = Some(recorder);
        self
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.metrics.connections_open.load(Ordering::Relaxed)
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

    /// The plan for a request head, with the toggles and the write ownership as they are now.
    pub fn plan(&self, head: &RequestHead) -> Plan {
        self.plan_at(head).0
    }

    /// The plan, and the version of the write ownership it was decided with.
    fn plan_at(&self, head: &RequestHead) -> (Plan, i64) {
        // A guard, dropped before anything is awaited: one atomic load, no reference count.
        let owners = self.owners.load();
        let plan = decide(head, self.toggles.load().as_ref(), &owners, &self.table);
        (plan, owners.version)
    }

    /// Waits while `plan`'s write is held, deciding again each time the ownership changes,
    /// until it may go (the plan to follow) or `Limits::write_hold` has passed (`None`). The
    /// request's body stays unread meanwhile, and nothing is sent anywhere.
    async fn hold(&self, head: &RequestHead<'_>, mut plan: Plan, mut version: i64) -> Option<Plan> {
        self.metrics.write_held(plan.capability);
        let until = Instant::now() + self.limits.write_hold;
        loop {
            if !self.owners.changed_after(version, until).await {
                self.metrics.write_hold_timed_out(plan.capability);
                return None;
            }
            (plan, version) = self.plan_at(head);
            if plan.reason != Reason::WriteHeld {
                return Some(plan);
            }
        }
    }

    /// Serves one client connection until it closes, goes idle or breaks.
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let mut conn = Conn {
            client: stream,
            inbound: BytesMut::with_capacity(READ_SIZE),
            client_ip: peer.ip().to_string(),
            idle: (0..self.table.upstreams.len()).map(|_| None).collect(),
            to_upstream: Vec::with_capacity(1024),
            to_client: Vec::with_capacity(1024),
            answered: false,
            shadow: None,
            request_body: None,
            write_idle: self.limits.body_idle,
        };
        loop {
            let head = match conn.read_request_head(self.limits.client_idle).await {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(Some(e)) => {
                    let status = match e {
                        HeadError::TooLarge | HeadError::TooManyFields => 431,
                        _ => 400,
                    };
                    let message = e.to_string();
                    conn.answer_error(status, "bad_request", &message, None, true)
                        .await;
                    return conn.linger(self.limits.linger).await;
                }
                Err(None) => return,
            };
            conn.answered = false;
            // A bug in the router must not look like an upstream failure, nor drop the
            // connection without an answer: a panic becomes a 500 that says the router is at
            // fault.
            let exchanged = std::panic::AssertUnwindSafe(self.exchange(&mut conn, &head))
                .catch_unwind()
                .await;
            match exchanged {
                Ok(Next::KeepAlive) => {}
                Ok(Next::Close) => return conn.linger(self.limits.linger).await,
                Ok(Next::Drop) => return,
                Err(_) => {
                    tracing::error!("router fault: request handling panicked");
                    if !conn.answered {
                        conn.answer_error(
                            500,
                            "router_fault",
                            "the router failed to handle this request",
                            None,
                            true,
                        )
                        .await;
                    }
                    return;
                }
            }
        }
    }

    /// One request and its answer.
    async fn exchange(&self, conn: &mut Conn, head: &Head) -> Next {
        let started = Instant::now();
        let framing = match h1::check_request(head) {
            Ok(framing) => framing,
            Err(e) => {
                let code = match e {
                    HeadError::Host(_) => "bad_request",
                    _ => "bad_framing",
                };
                let message = e.to_string();
                return conn.answer_error(400, code, &message, None, true).await;
            }
        };
        // Until its body is read, the connection cannot carry another request.
        let keep_alive = head.keep_alive();
        let close_after_error = framing != Framing::None || !keep_alive;
        if headers::has_passed(head.list("via"), &self.token) {
            return conn
                .answer_error(
                    508,
                    "loop_detected",
                    "this request already passed through this router",
                    None,
                    close_after_error,
                )
                .await;
        }
        let target = match headers::routing_target(head.target()) {
            Ok(target) => target,
            Err(e) => {
                let message = e.to_string();
                return conn
                    .answer_error(400, "bad_request_target", &message, None, close_after_error)
                    .await;
            }
        };
        let request_head = RequestHead {
            method: head.method(),
            path: &target.path,
            user_id: head.get(USER_HEADER),
            session_id: head.get(SESSION_HEADER),
            remote_addr: Some(&conn.client_ip),
        };
        let (mut plan, version) = self.plan_at(&request_head);
        // When the upstream's clock starts: at arrival, or when a held write is let go (its
        // wait is not the upstream's time).
        let mut released = started;
        if plan.reason == Reason::WriteHeld {
            match self.hold(&request_head, plan, version).await {
                Some(next) => {
                    plan = next;
                    released = Instant::now();
                }
                None => {
                    let cap = plan
                        .capability
                        .map_or("", |c| self.table.capabilities[c].name.as_str());
                    let message = format!(
                        "writes to {cap} are held while its write owner changes; try again shortly"
                    );
                    // A body, if any, was never read: then the connection closes after this.
                    return conn
                        .answer_error(503, "write_held", &message, None, close_after_error)
                        .await;
                }
            }
        }
        let timeout = plan
            .capability
            .map(|c| self.table.capabilities[c].timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        // A read the extracted side cannot answer falls back to the monolith's copy, while the
        // monolith still owns writes (live: after cutover its copy goes stale).
        let fallback = plan.capability.and_then(|c| {
            let cap = &self.table.capabilities[c];
            (request_head.is_read()
                && plan.owner == Some(cap.legacy)
                && plan.primary == cap.extracted
                && cap.legacy != cap.extracted)
                .then_some(cap.legacy)
        });
        self.retries.deposit();
        let request = Request {
            head,
            keep_alive,
            framing,
            target: target.forwarded,
            plan,
            started,
            // Only a request without a body can be sent twice (the body streams through once),
            // and only if sending it twice does what sending it once does.
            replayable: is_idempotent(head.method()) && framing == Framing::None,
            timeout,
            spent_by: released + timeout * ATTEMPT_BUDGETS,
        };

        // A copy for the parallel run: admitted now (or dropped and counted), so the primary's
        // answer, and a write's body, are kept while they are relayed.
        conn.shadow = match (plan.shadow, plan.route) {
            (Some(_), Some(route)) => {
                let route = &self.table.routes[route];
                self.shadows.admit(
                    &format!("{} {}", head.method(), route.prefix),
                    framing != Framing::None,
                )
            }
            _ => None,
        };
        // In the recorded sample: a body is kept (up to a limit) as it streams to the upstream.
        let recording = self
            .recorder
            .as_ref()
            .filter(|r| plan.capability.is_some() && r.sampled());
        conn.request_body = ((recording.is_some() || conn.shadow.is_some())
            && framing != Framing::None)
            .then(|| Tee::new(shadow::REQUEST_BODY));

        let mut last = Failure::CircuitOpen(plan.primary);
        let mut body_spent = false;
        let mut attempts = 0;
        for (n, upstream) in std::iter::once(plan.primary).chain(fallback).enumerate() {
            if n > 0 && (body_spent || Instant::now() >= request.spent_by) {
                break;
            }
            if !self.breakers[upstream].allow() {
                last = Failure::CircuitOpen(upstream);
                continue;
            }
            let mut retried = false;
            loop {
                let can_fall_back = fallback.is_some_and(|f| f != upstream);
                // Decided when an unavailable answer is in hand: pass it on, or try again
                // (this upstream once more within the budget, or the fallback).
                let mut retry_granted = false;
                let mut pass_on = |status: u16| {
                    retry_granted = status == 503
                        && request.replayable
                        && !retried
                        && self.breakers[upstream].allow()
                        && self.retries.withdraw();
                    !(retry_granted || can_fall_back)
                };
                // The first attempt starts with the request: no second clock read.
                let at = if attempts == 0 {
                    released
                } else {
                    Instant::now()
                };
                attempts += 1;
                let outcome = self
                    .attempt(conn, &request, upstream, at, &mut pass_on)
                    .await;
                body_spent = framing != Framing::None;
                let failure = match outcome {
                    Attempt::Done(next) => {
                        self.answered(conn, &request, recording);
                        return next;
                    }
                    Attempt::Failed(failure) => failure,
                };
                last = failure;
                let retry_connect = matches!(failure, Failure::Unreachable(_))
                    && request.replayable
                    && !retried
                    && self.breakers[upstream].allow()
                    && self.retries.withdraw();
                if (retry_granted || retry_connect) && Instant::now() < request.spent_by {
                    retried = true;
                    continue;
                }
                break;
            }
        }
        // No answer from the primary: nothing to compare (and the place is given back).
        conn.shadow = None;
        self.fail(conn, &request, last, close_after_error || body_spent)
            .await
    }

    /// Answers with the JSON error for `failure`, counted under its upstream.
    async fn fail(
        &self,
        conn: &mut Conn,
        request: &Request<'_>,
        failure: Failure,
        close: bool,
    ) -> Next {
        let upstream = failure.upstream();
        let name = self.table.upstreams[upstream].name.as_str();
        let (status, code, message, blamed) = match failure {
            Failure::Timeout(_) => (
                504,
                "upstream_timeout",
                format!("{name} did not answer in time"),
                true,
            ),
            Failure::Unreachable(_) => (
                502,
                "upstream_unreachable",
                format!("could not connect to {name}"),
                true,
            ),
            Failure::Broken(_) => (
                502,
                "upstream_error",
                format!("{name} failed to answer"),
                true,
            ),
            Failure::CircuitOpen(_) => (
                503,
                "circuit_open",
                format!("{name} is failing; the router is not sending it requests for now"),
                true,
            ),
            Failure::Exhausted(_) => (
                503,
                "router_overloaded",
                "the router is out of connections; try again shortly".to_string(),
                false,
            ),
        };
        self.metrics.observe(
            request.plan.capability,
            upstream,
            status,
            request.started.elapsed(),
        );
        conn.answer_error(
            status,
            code,
            &message,
            blamed.then_some(name),
            close || !request.keep_alive,
        )
        .await
    }

    /// Sends the request to `upstream` and, unless its answer is an unavailable status that
    /// `pass_on` declines, relays the answer to the client. The attempt has the request's
    /// timeout of its own, within what is left of the request's overall budget.
    async fn attempt(
        &self,
        conn: &mut Conn,
        request: &Request<'_>,
        upstream: usize,
        at: Instant,
        pass_on: &mut (dyn FnMut(u16) -> bool + Send),
    ) -> Attempt {
        let own_deadline = at + request.timeout;
        let deadline = own_deadline.min(request.spent_by);
        // A timeout cut short by the request's overall budget is not proof the upstream is slow.
        let timeout_counts = deadline == own_deadline;
        let mut fresh_only = false;
        loop {
            let (mut link, reused) = match conn.idle[upstream].take() {
                Some(link) if !fresh_only && link.usable() => (link, true),
                _ => match self.connect(upstream, deadline).await {
                    Ok(link) => (link, false),
                    Err(failure) => {
                        let blamed = match failure {
                            Failure::Exhausted(_) => false,
                            Failure::Timeout(_) => timeout_counts,
                            _ => true,
                        };
                        if blamed {
                            self.breakers[upstream].record(false);
                        }
                        return Attempt::Failed(failure);
                    }
                },
            };
            self.write_request_head(&mut conn.to_upstream, request, upstream, &conn.client_ip);
            match self
                .relay(conn, &mut link, request, upstream, deadline, pass_on)
                .await
            {
                Relayed::Answered { next, reusable } => {
                    if reusable {
                        conn.idle[upstream] = Some(link);
                    }
                    return Attempt::Done(next);
                }
                // A kept connection the upstream closed as we sent on it (the race every
                // keep-alive client has): not a failure of the upstream. The upstream may have
                // read the request before closing, so it goes again only if it may be sent
                // twice, and within the retry budget.
                Relayed::Stale if reused => {
                    if request.replayable && self.retries.withdraw() {
                        fresh_only = true;
                        continue;
                    }
                    return Attempt::Failed(Failure::Broken(upstream));
                }
                Relayed::Stale => {
                    self.breakers[upstream].record(false);
                    return Attempt::Failed(Failure::Broken(upstream));
                }
                Relayed::Failed(failure) => {
                    if timeout_counts || !matches!(failure, Failure::Timeout(_)) {
                        self.breakers[upstream].record(false);
                    }
                    if let Failure::Broken(_) = failure {
                        tracing::warn!(upstream = %self.table.upstreams[upstream].name, "upstream failed to answer");
                    }
                    return Attempt::Failed(failure);
                }
                Relayed::Declined => {
                    self.breakers[upstream].record(false);
                    return Attempt::Failed(Failure::Broken(upstream));
                }
                // The client stopped sending its body: its fault, not the upstream's (which
                // was waiting for it), so nothing is booked on the breaker.
                Relayed::ClientStalled => {
                    let next = conn
                        .answer_error(
                            408,
                            "request_timeout",
                            "the request body did not arrive in time",
                            None,
                            true,
                        )
                        .await;
                    return Attempt::Done(next);
                }
                Relayed::ClientGone => return Attempt::Done(Next::Drop),
            }
        }
    }

    async fn connect(&self, upstream: usize, deadline: Instant) -> Result<Link, Failure> {
        let connect_by = deadline.min(Instant::now() + CONNECT_TIMEOUT);
        let addr = self.addresses[upstream].authority.as_str();
        match timeout_at(connect_by.into(), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(Link {
                    stream,
                    inbound: BytesMut::with_capacity(READ_SIZE),
                })
            }
            Ok(Err(e)) if is_resource_exhaustion(&e) => Err(Failure::Exhausted(upstream)),
            Ok(Err(_)) => Err(Failure::Unreachable(upstream)),
            Err(_) if connect_by < deadline => Err(Failure::Unreachable(upstream)),
            Err(_) => Err(Failure::Timeout(upstream)),
        }
    }

    /// Sends the prepared head and the request body to the upstream while reading its answer,
    /// then relays the answer's head and body to the client; both bodies flow at once, so an
    /// upstream that answers while still reading (an echo) works.
    async fn relay(
        &self,
        conn: &mut Conn,
        link: &mut Link,
        request: &Request<'_>,
        upstream: usize,
        deadline: Instant,
        pass_on: &mut (dyn FnMut(u16) -> bool + Send),
    ) -> Relayed {
        let head = request.head;
        let idle = self.limits.body_idle;
        let Conn {
            client,
            inbound,
            to_upstream,
            to_client,
            answered,
            shadow: capture,
            request_body,
            ..
        } = conn;
        let (mut client_read, mut client_write) = client.split();
        let (mut up_read, mut up_write) = link.stream.split();
        // Whether the request body is waiting for the client (rather than for the upstream to
        // take it): tells a stalled client from a slow upstream when the deadline passes.
        let waiting_for_client = AtomicBool::new(false);
        let send = copy_body(
            request.framing,
            &mut client_read,
            inbound,
            &mut up_write,
            to_upstream,
            idle,
            &waiting_for_client,
            request_body.as_mut(),
        );
        tokio::pin!(send);
        let mut sent: Option<Result<(), CopyError>> = None;
        let mut received_any = false;

        // Until the final head: interim (1xx) answers pass to the client as they come.
        let answer = loop {
            tokio::select! {
                result = &mut send, if sent.is_none() => {
                    match result {
                        Ok(()) => sent = Some(Ok(())),
                        Err(CopyError::Read | CopyError::Truncated) => return Relayed::ClientGone,
                        Err(CopyError::Stalled) => return Relayed::ClientStalled,
                        Err(CopyError::Malformed) => {
                            *answered = true;
                            let malformed = ErrorAnswer { status: 400, code: "bad_framing", message: "the chunked request body is malformed", upstream: None };
                            let _ = write_error(&mut client_write, &self.via, &malformed, true, idle).await;
                            return Relayed::ClientGone;
                        }
                        // The upstream stopped reading the body; its answer (a 413, say) may
                        // still come, and tells the client more than a 502 would.
                        Err(CopyError::Write) => sent = Some(Err(CopyError::Write)),
                    }
                }
                read = timeout_at(deadline.into(), read_head(&mut up_read, &mut link.inbound)) => {
                    match read {
                        Err(_) if sent.is_none() && waiting_for_client.load(Ordering::Relaxed) => return Relayed::ClientStalled,
                        Err(_) => return Relayed::Failed(Failure::Timeout(upstream)),
                        Ok(Err(ReadHeadError::Closed { partial: false })) if !received_any => return Relayed::Stale,
                        Ok(Err(_)) => return Relayed::Failed(Failure::Broken(upstream)),
                        Ok(Ok(answer)) => {
                            received_any = true;
                            match answer.status {
                                101 => return Relayed::Failed(Failure::Broken(upstream)),
                                100..=199 => {
                                    if head.minor == 1 {
                                        let _ = self.write_response_head(to_client, &answer, Framing::None, upstream, request, false);
                                        if write_within(&mut client_write, to_client, idle).await.is_err() {
                                            return Relayed::ClientGone;
                                        }
                                    }
                                }
                                _ => break answer,
                            }
                        }
                    }
                }
            }
        };
        let unavailable = is_unavailable(&answer);
        if unavailable && !pass_on(answer.status) {
            return Relayed::Declined;
        }
        self.breakers[upstream].record(!unavailable);
        let Ok(framing) = h1::response_framing(&answer, head.method()) else {
            return Relayed::Failed(Failure::Broken(upstream));
        };
        // Whether the client connection can carry another request afterwards (the answer may
        // add a reason of its own: see `write_response_head`).
        let close = self.write_response_head(
            to_client,
            &answer,
            framing,
            upstream,
            request,
            !request.keep_alive || framing == Framing::UntilClose || matches!(sent, Some(Err(_))),
        );
        *answered = true;
        // Kept for the parallel run only when the planned primary answers (not a fallback).
        let mut tee = match capture {
            Some(kept) if upstream == request.plan.primary => {
                kept.head(&answer, framing);
                Some(&mut kept.tee)
            }
            _ => {
                *capture = None;
                None
            }
        };
        self.metrics.observe(
            request.plan.capability,
            upstream,
            answer.status,
            request.started.elapsed(),
        );
        let received = {
            let unused = AtomicBool::new(false);
            let receive = copy_body(
                framing,
                &mut up_read,
                &mut link.inbound,
                &mut client_write,
                to_client,
                idle,
                &unused,
                tee.take(),
            );
            tokio::pin!(receive);
            loop {
                tokio::select! {
                    result = &mut send, if sent.is_none() => sent = Some(result),
                    result = &mut receive => break result,
                }
            }
        };
        let request_body_done = matches!(sent, Some(Ok(())));
        match received {
            Ok(()) => Relayed::Answered {
                next: if close || !request_body_done {
                    Next::Close
                } else {
                    Next::KeepAlive
                },
                reusable: request_body_done
                    && !close
                    && answer.keep_alive()
                    && answer.minor == 1
                    && link.inbound.is_empty(),
            },
            // Head already sent: all that is left is to cut the connection, so the client sees
            // a truncated answer rather than a complete wrong one.
            Err(CopyError::Write) => Relayed::Answered {
                next: Next::Drop,
                reusable: false,
            },
            Err(_) => {
                tracing::warn!(upstream = %self.table.upstreams[upstream].name, "upstream broke off its answer");
                self.breakers[upstream].record(false);
                Relayed::Answered {
                    next: Next::Drop,
                    reusable: false,
                }
            }
        }
    }
}

/// What the client connection does after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    /// Close once the client has had the chance to read the answer.
    Close,
    /// Close at once: the client is gone, or its answer was cut short anyway.
    Drop,
}

enum Attempt {
    Done(Next),
    Failed(Failure),
}

enum Relayed {
    Answered {
        next: Next,
        reusable: bool,
    },
    /// The upstream answered with an unavailable status that the caller will retry elsewhere.
    Declined,
    /// A kept connection closed before any answer.
    Stale,
    Failed(Failure),
    /// The client stopped sending the request body before the upstream answered.
    ClientStalled,
    ClientGone,
}

/// One request in flight.
#[derive(Clone, Copy)]
struct Request<'a> {
    head: &'a Head,
    /// Whether the client wants its connection kept after this exchange.
    keep_alive: bool,
    framing: Framing,
    /// The origin-form target, forwarded unchanged.
    target: &'a str,
    plan: Plan,
    /// When the request arrived (its answer's time is measured from here).
    started: Instant,
    /// Whether the request may be sent again after its bytes may have reached an upstream.
    replayable: bool,
    /// Each attempt's time to get the answer's head started.
    timeout: Duration,
    /// When the time of all attempts together is up.
    spent_by: Instant,
}

/// A client connection's state between requests.
struct Conn {
    client: TcpStream,
    /// Bytes read from the client and not yet used (the next request, or a body).
    inbound: BytesMut,
    client_ip: String,
    /// An idle kept connection per upstream, by index.
    idle: Vec<Option<Link>>,
    to_upstream: Vec<u8>,
    to_client: Vec<u8>,
    /// Whether any of the answer to the current request has been written.
    answered: bool,
    /// The current request's copy of the primary's answer, for the parallel run.
    shadow: Option<Capture>,
    /// The current request's body, kept for the recorded sample or a shadowed write.
    request_body: Option<Tee>,
    /// How long a write to the client may make no progress (see [`Limits::body_idle`]).
    write_idle: Duration,
}

impl Conn {
    /// The next request head: `Ok(None)` when the client closed or went idle between requests,
    /// `Err(Some)` for a head it must be told is bad, `Err(None)` when it broke off.
    async fn read_request_head(
        &mut self,
        idle: Duration,
    ) -> Result<Option<Head>, Option<HeadError>> {
        let deadline = Instant::now() + idle;
        loop {
            if !self.inbound.is_empty() {
                match h1::parse_request(&mut self.inbound) {
                    Ok(Some(head)) => return Ok(Some(head)),
                    Ok(None) => {}
                    Err(e) => return Err(Some(e)),
                }
            }
            self.inbound.reserve(READ_SIZE);
            match timeout_at(deadline.into(), self.client.read_buf(&mut self.inbound)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) if self.inbound.is_empty() => return Ok(None),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn answer_error(
        &mut self,
        status: u16,
        code: &str,
        message: &str,
        upstream: Option<&str>,
        close: bool,
    ) -> Next {
        self.answered = true;
        let error = ErrorAnswer {
            status,
            code,
            message,
            upstream,
        };
        let _ = write_error(&mut self.client, "", &error, close, self.write_idle).await;
        if close { Next::Close } else { Next::KeepAlive }
    }

    /// Closes after an answer: the client's end is told no more is coming, then whatever it
    /// still sends (the rest of a body the upstream did not want, pipelined requests) is read
    /// and dropped until it closes too, or for `linger` at most.
    async fn linger(mut self, linger: Duration) {
        drop(std::mem::take(&mut self.idle));
        close_gently(&mut self.client, linger).await;
    }
}

/// Tells the client no more is coming, then reads and drops what it still sends until it
/// closes too, for `linger` at most: closing on unread input would make the kernel reset the
/// connection, which can destroy an answer the client has not read yet.
async fn close_gently(stream: &mut TcpStream, linger: Duration) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = vec![0u8; READ_SIZE];
    let _ = tokio::time::timeout(linger, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// A kept connection to an upstream.
struct Link {
    stream: TcpStream,
    inbound: BytesMut,
}

impl Link {
    /// Whether this idle connection can take a request: it must show no end-of-stream and no
    /// unsolicited bytes. Bytes that arrived while it was idle belong to no request; sent on,
    /// the next request would take them for its answer.
    fn usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// An answer the router makes itself.
struct ErrorAnswer<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    /// The upstream that failed; `None` when the router itself is at fault.
    upstream: Option<&'a str>,
}

/// A JSON error that says who failed: the router itself (`upstream` absent) or an upstream.
/// A client that reads nothing gets `idle` to take it.
async fn write_error<W: AsyncWrite + Unpin>(
    dst: &mut W,
    via: &str,
    error: &ErrorAnswer<'_>,
    close: bool,
    idle: Duration,
) -> Result<(), CopyError> {
    let ErrorAnswer {
        status,
        code,
        message,
        upstream,
    } = *error;
    let mut body = serde_json::json!({"error": {"code": code, "message": message}});
    if let Some(u) = upstream {
        body["error"]["upstream"] = serde_json::Value::from(u);
    }
    let body = body.to_string();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !via.is_empty() {
        out.push_str(&format!("via: {via}\r\n"));
    }
    if status == 503 {
        // Every 503 the router makes is a passing state (overloaded, a circuit cooling down).
        out.push_str("retry-after: 1\r\n");
    }
    if close {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    write_within(dst, out.as_bytes(), idle).await
}

fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "DELETE" | "PUT")
}

/// Answers that mean "not available right now", which count against the breaker and may be
/// retried: 502 to 504, except a 503 an upstream marks as a deliberate refusal (a write to the
/// side that does not own it, during or after a flip): that side is healthy, and asking it again
/// changes nothing.
fn is_unavailable(answer: &Head) -> bool {
    match answer.status {
        502 | 504 => true,
        503 => answer.get(platform::write_mode::REFUSED_HEADER).is_none(),
        _ => false,
    }
}

/// Serves connections from `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, router: Arc<Router>) {
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                router.metrics.accept_failed();
                match accept_backoff(&e, backoff) {
                    None => tracing::debug!(error = %e, "accept failed"),
                    Some(wait) => {
                        // One line per doubling of the pause: a few per second at most, however
                        // long the shortage lasts.
                        if wait > backoff {
                            tracing::warn!(error = %e, pause_ms = wait.as_millis() as u64, "accept failed; pausing accepts");
                        }
                        backoff = wait;
                        tokio::time::sleep(wait).await;
                    }
                }
                continue;
            }
        };
        backoff = Duration::ZERO;
        let _ = stream.set_nodelay(true);
        let open = OpenConnection::count(router.clone());
        if open.over_limit() {
            router.metrics.shed();
            tokio::spawn(shed(stream, open));
        } else {
            tokio::spawn(async move {
                let router = open.router.clone();
                router.connection(stream, client).await;
                drop(open);
            });
        }
    }
}

/// A client connection counted as open until dropped.
struct OpenConnection {
    router: Arc<Router>,
    total: usize,
}

impl OpenConnection {
    fn count(router: Arc<Router>) -> OpenConnection {
        let total = router
            .metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        OpenConnection { router, total }
    }

    fn over_limit(&self) -> bool {
        self.total > self.router.limits.max_connections
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.router
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection over the limit with `503 overloaded` and closes it, without reading a
/// request: the client learns to come back, rather than waiting or seeing a reset.
async fn shed(mut stream: TcpStream, open: OpenConnection) {
    let overloaded = ErrorAnswer {
        status: 503,
        code: "overloaded",
        message: "the router is serving as many connections as it may; try again shortly",
        upstream: None,
    };
    let _ = write_error(&mut stream, "", &overloaded, true, Duration::from_secs(1)).await;
    // Shorter than a served connection's: shedding happens under load.
    let linger = open.router.limits.linger.min(Duration::from_millis(500));
    close_gently(&mut stream, linger).await;
    drop(open);
}

/// How long to pause before accepting again after `error`, given the last pause: none for a
/// connection the client gave up on before it was accepted; for anything else (above all, no
/// file descriptors left) a pause that doubles up to a second, so the accept loop never spins.
fn accept_backoff(error: &std::io::Error, previous: Duration) -> Option<Duration> {
    use std::io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) {
        return None;
    }
    Some(
        (previous * 2)
            .max(Duration::from_millis(5))
            .min(MAX_ACCEPT_BACKOFF),
    )
}

/// Whether an error opening a connection means this process ran out of something (file
/// descriptors, buffers, memory), rather than the peer refusing.
fn is_resource_exhaustion(error: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_split_into_authority_and_base() {
        let a = Address::of("http://127.0.0.1:8080");
        assert_eq!(
            (a.authority.as_str(), a.base.as_str()),
            ("127.0.0.1:8080", "")
        );
        let b = Address::of("http://svc/api/");
        assert_eq!((b.authority.as_str(), b.base.as_str()), ("svc:80", "/api"));
    }

    #[test]
    fn accept_errors_pause_accepting_except_a_client_giving_up() {
        use std::io::{Error, ErrorKind};
        let emfile = Error::from_raw_os_error(24);
        let ms = Duration::from_millis;
        let cases = [
            (Error::from(ErrorKind::ConnectionAborted), ms(0), None),
            (Error::from(ErrorKind::ConnectionReset), ms(40), None),
            (Error::from_raw_os_error(24), ms(0), Some(ms(5))),
            (Error::from_raw_os_error(24), ms(5), Some(ms(10))),
            (Error::from_raw_os_error(23), ms(800), Some(ms(1000))),
            (Error::from_raw_os_error(24), ms(1000), Some(ms(1000))),
            (Error::other("unknown"), ms(0), Some(ms(5))),
        ];
        for (error, previous, want) in cases {
            assert_eq!(
                accept_backoff(&error, previous),
                want,
                "{error} after {previous:?}"
            );
        }
        assert!(is_resource_exhaustion(&emfile));
        assert!(!is_resource_exhaustion(&Error::from(
            ErrorKind::ConnectionRefused
        )));
    }
}
