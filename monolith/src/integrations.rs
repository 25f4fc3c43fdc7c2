//! How the monolith reaches capabilities that may have moved out (branch by abstraction): each
//! is `Local` (the module in this process, inside the caller's transaction, for good),
//! `Movable` (the module while the monolith owns the writes, the service once a flip hands them
//! over) or `Remote` (the service from the first start on), the service at a base URL that is
//! normally the router's. Which way each order goes is the write fence's to say, per order.
//!
//! [`StockClient`] and [`WishlistClient`] share one HTTP client that follows no redirects. Every
//! answer is classified: [`RemoteError::Refused`] (a 4xx with the error envelope: the request is
//! at fault, retrying will not help) or [`RemoteError::Unavailable`] (anything else: the outcome
//! is unknown, retry).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::catalog::{AlbumId, Money};
use crate::customers::CustomerId;

/// The capabilities that can move out, as their write fences name them (the services' own
/// names).
pub const CATALOG: &str = "catalog";
pub const WISHLIST: &str = "wishlist";

/// Where a capability's service is, and who owns its writes on a first start. After that, the
/// write fence in the monolith's database says who owns them ([`platform::fence`]), and a flip
/// changes it while the monolith runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The monolith's module, for good: there is no service to hand the writes to.
    Local,
    /// The monolith's module owns the writes on a first start; once a flip hands them to the
    /// service, it is reached at `base_url` (normally the router).
    Movable { base_url: String },
    /// The service owns the writes on a first start (as after cutover), at `base_url`.
    Remote { base_url: String },
}

impl Backend {
    /// Where the service is reached, if there is one.
    pub fn base_url(&self) -> Option<&str> {
        match self {
            Backend::Local => None,
            Backend::Movable { base_url } | Backend::Remote { base_url } => Some(base_url),
        }
    }

    /// Whether the monolith owns the writes on a first start.
    pub fn monolith_owns_at_start(&self) -> bool {
        !matches!(self, Backend::Remote { .. })
    }
}

#[derive(Debug, Clone)]
pub struct Integrations {
    /// Where order placement takes stock: the catalog module, or the catalog service's
    /// reservations (a saga).
    pub stock: Backend,
    /// Where order placement removes purchased albums from the wishlist: the wishlist module, or
    /// the wishlist service (through the outbox).
    pub wishlist: Backend,
    /// Per remote call.
    pub timeout: Duration,
    /// How often the outbox worker looks for due calls when nobody woke it.
    pub outbox_poll: Duration,
    /// A saga order still pending after this long was abandoned by a crashed request: its
    /// reservation is released and the order removed.
    pub abandon_after: Duration,
    /// How long the catalog service holds a reservation that nobody confirmed (sent as
    /// `ttl_seconds`, whole seconds). Its confirm must arrive before then, which is what
    /// [`Integrations::check`] guarantees for the outbox's lease.
    pub reservation_ttl: Duration,
}

impl Default for Integrations {
    fn default() -> Self {
        Integrations {
            stock: Backend::Local,
            wishlist: Backend::Local,
            timeout: Duration::from_secs(2),
            outbox_poll: Duration::from_secs(1),
            abandon_after: Duration::from_secs(60),
            // The catalog's own default, so sending it changes nothing there.
            reservation_ttl: Duration::from_secs(900),
        }
    }
}

/// A configuration whose outbox lease could outlast the reservation it protects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a remote timeout of {timeout:?} makes an outbox lease of {lease:?} (every call of one \
     delivery timing out, plus a margin), so a stock.confirm whose delivery is cut short by a \
     crash could wait {bound:?} after its reservation was made ({abandon_after:?} and a {poll:?} \
     poll until the order completes, then the lease, then another poll): that is not below the \
     reservation TTL of {ttl:?}"
)]
pub struct LeaseOutlivesReservation {
    pub timeout: Duration,
    pub lease: Duration,
    pub abandon_after: Duration,
    pub poll: Duration,
    pub bound: Duration,
    pub ttl: Duration,
}

impl Integrations {
    /// How late a `stock.confirm` can be, counted from its reservation, when the process that
    /// leased it dies mid-delivery: the order completes within `abandon_after` and one poll of
    /// being started (the stale-order sweep runs every poll, and a later transaction B finds the
    /// order abandoned), the confirm then stays hidden for one lease, and a worker finds it at its
    /// next poll.
    pub fn confirm_bound(&self) -> Duration {
        self.abandon_after
            .saturating_add(self.outbox_poll)
            .saturating_add(crate::orders::outbox::lease(self.timeout))
            .saturating_add(self.outbox_poll)
    }

    /// The outbox lease must end before the reservation it protects expires. Refused rather
    /// than clamped: a shorter lease than one delivery's worst case would let a slow but working
    /// delivery be taken over (and a shorter cut-off would fail deliveries that would succeed),
    /// and quietly changing what an operator set hides the mistake. Lower the timeout instead.
    pub fn check(&self) -> Result<(), LeaseOutlivesReservation> {
        let bound = self.confirm_bound();
        if bound < self.reservation_ttl {
            return Ok(());
        }
        Err(LeaseOutlivesReservation {
            timeout: self.timeout,
            lease: crate::orders::outbox::lease(self.timeout),
            abandon_after: self.abandon_after,
            poll: self.outbox_poll,
            bound,
            ttl: self.reservation_ttl,
        })
    }
}

/// What a remote call came back with.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The service answered and refused: the request itself is at fault; retrying won't help.
    #[error("{status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// No answer, a timeout or a server error: the outcome is unknown, retry later.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
    field: Option<String>,
}

async fn refusal_or_unavailable(reply: reqwest::Response) -> RemoteError {
    let status = reply.status().as_u16();
    if reply.status().is_server_error() {
        return RemoteError::Unavailable(format!("answered {status}"));
    }
    match reply.json::<ErrorEnvelope>().await {
        Ok(e) => RemoteError::Refused {
            status,
            code: e.error.code,
            message: e.error.message,
            field: e.error.field,
        },
        Err(e) => {
            RemoteError::Unavailable(format!("answered {status} with an unreadable body: {e}"))
        }
    }
}

fn transport(e: reqwest::Error) -> RemoteError {
    RemoteError::Unavailable(e.to_string())
}

/// A reservation as the catalog service reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Reservation {
    pub status: String,
    pub lines: Vec<ReservedLine>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReservedLine {
    pub album_id: i64,
    pub quantity: i32,
    pub unit_price: Money,
}

/// The catalog service's reservations API.
#[derive(Debug, Clone)]
pub struct StockClient {
    http: reqwest::Client,
    base: String,
    ttl_seconds: u64,
}

impl StockClient {
    /// Reservations it makes last `reservation_ttl` (whole seconds, at least one).
    pub fn new(http: reqwest::Client, base: &str, reservation_ttl: Duration) -> Self {
        StockClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            ttl_seconds: reservation_ttl.as_secs().max(1),
        }
    }

    /// Reserves stock under `key`. With `dry_run`, the catalog service runs the reservation in a
    /// transaction it rolls back (`X-Fig-Dry-Run: 1`): the answer is the one a real reserve would
    /// get, and nothing is held.
    pub async fn reserve(
        &self,
        key: &str,
        lines: &[(AlbumId, i32)],
        dry_run: bool,
    ) -> Result<Reservation, RemoteError> {
        let lines: Vec<_> = lines
            .iter()
            .map(|(album, quantity)| json!({"album_id": album.0, "quantity": quantity}))
            .collect();
        let mut request = self
            .http
            .put(format!("{}/catalog/reservations/{key}", self.base))
            .json(&json!({"lines": lines, "ttl_seconds": self.ttl_seconds}));
        if dry_run {
            request = request.header(platform::parallel_run::DRY_RUN, "1");
        }
        let reply = request.send().await.map_err(transport)?;
        if !reply.status().is_success() {
            return Err(refusal_or_unavailable(reply).await);
        }
        reply.json().await.map_err(transport)
    }

    /// Confirms or releases (`action`), idempotently on the catalog's side.
    pub async fn finish(&self, key: &str, action: &str) -> Result<(), RemoteError> {
        let reply = self
            .http
            .post(format!("{}/catalog/reservations/{key}/{action}", self.base))
            .send()
            .await
            .map_err(transport)?;
        if reply.status().is_success() {
            return Ok(());
        }
        Err(refusal_or_unavailable(reply).await)
    }
}

/// The wishlist service's API, as the outbox uses it.
#[derive(Debug, Clone)]
pub struct WishlistClient {
    http: reqwest::Client,
    base: String,
}

impl WishlistClient {
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        WishlistClient {
            http,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// Removes an album added before `added_before` (so an album the customer wishes for again
    /// after buying it is not removed by a late retry). Removing what is not there is success.
    pub async fn remove(
        &self,
        customer: CustomerId,
        album: AlbumId,
        added_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), RemoteError> {
        let reply = self
            .http
            .delete(format!(
                "{}/wishlists/{}/items/{}?added_before={}",
                self.base,
                customer.0,
                album.0,
                // UTC with a Z: nothing in it needs escaping in a query string.
                added_before.format("%Y-%m-%dT%H:%M:%S%.6fZ")
            ))
            .send()
            .await
            .map_err(transport)?;
        match reply.status().as_u16() {
            // 404: the wishlist service has no such customer, so nothing to remove.
            204 | 404 => Ok(()),
            _ => Err(refusal_or_unavailable(reply).await),
        }
    }
}

/// Builds the HTTP client the remote backends share: no redirects, the configured timeout.
pub fn http_client(timeout: Duration) -> std::io::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(std::io::Error::other)
}
