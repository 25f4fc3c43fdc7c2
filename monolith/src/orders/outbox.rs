//! The transactional outbox: calls to other services that an order's commit obliges us to make.
//! They are written in the order's own transaction and delivered afterwards by a worker that
//! retries with backoff until the other side answers. Every receiver is idempotent (a removal of
//! what is gone, a second confirm), so at-least-once delivery has exactly-once effect.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{Connection, PgConnection};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::{OrderId, OrdersError, db};
use crate::catalog::AlbumId;
use crate::customers::CustomerId;
use crate::integrations::{Integrations, RemoteError, StockClient, WishlistClient};
use crate::wishlist;
use platform::{Pool, blocking};

/// One call owed to another service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Message {
    /// Remove purchased albums from the wishlist service, only if added before the purchase.
    #[serde(rename = "wishlist.remove")]
    WishlistRemove {
        customer_id: i64,
        album_ids: Vec<i64>,
        added_before: DateTime<Utc>,
    },
    /// The order committed: the reserved stock is sold.
    #[serde(rename = "stock.confirm")]
    StockConfirm { key: String, order_id: i64 },
    /// The order did not happen: give the reserved stock back.
    #[serde(rename = "stock.release")]
    StockRelease { key: String },
}

impl Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::WishlistRemove { .. } => "wishlist.remove",
            Message::StockConfirm { .. } => "stock.confirm",
            Message::StockRelease { .. } => "stock.release",
        }
    }
}

/// Adds a message inside the caller's transaction.
pub fn enqueue(tx: &mut PgConnection, message: &Message) -> Result<(), OrdersError> {
    let payload = serde_json::to_value(message).unwrap_or_default();
    db::enqueue(tx, message.kind(), &payload)?;
    Ok(())
}

/// Messages not yet delivered, for operators and tests.
pub fn pending(conn: &mut PgConnection) -> Result<i64, OrdersError> {
    Ok(db::outbox_len(conn)?)
}

/// Wakes the worker after a commit, so delivery does not wait for the next poll. The worker also
/// stops once every `Outbox` is gone: the server holding them has stopped.
#[derive(Debug, Clone)]
pub struct Outbox {
    wake: Arc<Notify>,
    _stop_when_gone: Arc<StopWhenDropped>,
}

impl Outbox {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

#[derive(Debug)]
struct StopWhenDropped(Arc<watch::Sender<bool>>);

impl Drop for StopWhenDropped {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Everything delivery needs.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub pool: Pool,
    pub integrations: Integrations,
    pub stock: Option<StockClient>,
    pub wishlist: Option<WishlistClient>,
}

/// A message that can never be read is parked this long (effectively until an operator acts).
const PARKED: Duration = Duration::from_secs(365 * 86_400);
/// The most remote calls one message makes: a wishlist removal makes one per album, and an order
/// has at most `MAX_LINES` lines; a confirm or a release makes one.
const CALLS_PER_MESSAGE: u32 = super::domain::MAX_LINES as u32;
/// Room in a lease for the database work around one delivery (leasing, then deleting the row or
/// setting its next attempt).
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// How long a stopping worker lets the message in flight finish before it releases it: enough
/// for a receiver that answers, short next to the time a process is given to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long one delivery may take: every call it makes timing out. A delivery still running
/// then is cut off and retried later, so no delivery outlasts its lease.
pub fn delivery_budget(timeout: Duration) -> Duration {
    timeout.saturating_mul(CALLS_PER_MESSAGE)
}

/// How long a leased message is hidden from other workers: one delivery's budget plus a margin.
/// Messages are leased one at a time, just before their delivery, so a worker that dies only
/// delays the message it was delivering, and by at most this much. `Integrations::check` keeps
/// it below the reservation TTL that a `stock.confirm` must beat.
pub fn lease(timeout: Duration) -> Duration {
    delivery_budget(timeout).saturating_add(LEASE_MARGIN)
}

/// Backoff after `attempts` failed deliveries: 200 ms doubling, at most 10 s.
pub fn backoff(attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 16) as u32 - 1;
    Duration::from_millis(200u64.saturating_mul(1 << exp)).min(Duration::from_secs(10))
}

/// The running worker.
#[derive(Debug)]
pub struct Worker {
    stop: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Tells the worker to stop at once, and resolves when it has. It leases nothing more; the
    /// message in flight gets [`STOP_GRACE`] to be delivered, and is otherwise released: due
    /// again at once, for another process or the next start.
    pub fn stop(self) -> impl Future<Output = ()> {
        self.stop.send_replace(true);
        let task = self.task;
        async move {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "outbox: the worker ended abnormally");
            }
        }
    }
}

/// Whether the worker has been told to stop (or everything that could tell it is gone).
#[derive(Debug, Clone)]
struct Stopping(watch::Receiver<bool>);

impl Stopping {
    fn now(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means every sender is gone, which is a stop too.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Resolves `STOP_GRACE` after the stop.
    async fn grace_over(&self) {
        self.wait().await;
        tokio::time::sleep(STOP_GRACE).await;
    }
}

/// Starts the worker on the current Tokio runtime. It runs until [`Worker::stop`], or until the
/// returned `Outbox` and all its clones are dropped, and then stops the same way.
pub fn spawn_worker(delivery: Delivery) -> (Outbox, Worker) {
    let (tx, rx) = watch::channel(false);
    let stop = Arc::new(tx);
    let outbox = Outbox {
        wake: Arc::default(),
        _stop_when_gone: Arc::new(StopWhenDropped(stop.clone())),
    };
    let task = tokio::spawn(run(delivery, outbox.wake.clone(), Stopping(rx)));
    (outbox, Worker { stop, task })
}

/// Delivery and the stale-order sweep run side by side, so that a long delivery round (a
/// receiver that hangs) does not hold up the sweep: a pending order is abandoned within one poll
/// of `abandon_after`, which `Integrations::confirm_bound` counts on.
async fn run(delivery: Delivery, wake: Arc<Notify>, stopping: Stopping) {
    tokio::join!(
        deliver_rounds(&delivery, &wake, &stopping),
        sweep_stale(&delivery, &wake, &stopping)
    );
    tracing::info!("outbox: worker stopped");
}

async fn deliver_rounds(delivery: &Delivery, wake: &Notify, stopping: &Stopping) {
    loop {
        tokio::select! {
            () = stopping.wait() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(delivery.integrations.outbox_poll) => {}
        }
        if let Err(e) = drain(delivery, stopping).await {
            tracing::warn!(error = %e, "outbox: delivery round failed");
        }
    }
}

async fn sweep_stale(delivery: &Delivery, wake: &Notify, stopping: &Stopping) {
    loop {
        tokio::select! {
            () = stopping.wait() => return,
            () = tokio::time::sleep(delivery.integrations.outbox_poll) => {}
        }
        match abandon_stale(delivery).await {
            // Each abandoned order owes a release.
            Ok(0) => {}
            Ok(_) => wake.notify_one(),
            Err(e) => tracing::warn!(error = %e, "outbox: abandoning stale saga orders failed"),
        }
    }
}

/// Delivers the messages that are due, in id order, each at most once per round (a failed one
/// waits for its backoff and a later round), so a receiver that is down cannot keep the worker in
/// one endless round, and cannot hold up messages behind its own. Each message is leased just
/// before its delivery. A stop ends the round before the next message.
async fn drain(delivery: &Delivery, stopping: &Stopping) -> Result<usize, OrdersError> {
    let lease = lease(delivery.integrations.timeout);
    let mut after = 0;
    let mut delivered = 0;
    while !stopping.now() {
        let Some(leased) = blocking(&delivery.pool, move |c| {
            Ok::<_, OrdersError>(db::lease_next(c, after, lease)?)
        })
        .await?
        else {
            break;
        };
        after = leased.id;
        if attempt(delivery, leased, stopping).await? {
            delivered += 1;
        }
    }
    Ok(delivered)
}

/// Delivers one leased message, and deletes it, or sets when it is due again. Returns whether it
/// was delivered.
async fn attempt(
    delivery: &Delivery,
    leased: db::Leased,
    stopping: &Stopping,
) -> Result<bool, OrdersError> {
    let db::Leased {
        id,
        kind,
        payload,
        attempts,
    } = leased;
    let budget = delivery_budget(delivery.integrations.timeout);
    let outcome = match serde_json::from_value::<Message>(payload) {
        Err(e) => Err((format!("unreadable {kind} message, parked: {e}"), PARKED)),
        Ok(message) => {
            let delivering = tokio::time::timeout(budget, deliver(delivery, &message));
            tokio::select! {
                done = delivering => match done {
                    Ok(done) => done.map_err(|e| (e, backoff(attempts))),
                    Err(_) => Err((format!("not delivered within {budget:?}"), backoff(attempts))),
                },
                () = stopping.grace_over() => {
                    // Released, not failed: a later attempt need not wait.
                    let why = "the worker stopped during its delivery; released";
                    tracing::info!(id, kind, "outbox: stopping; released the message in flight");
                    blocking(&delivery.pool, move |c| {
                        Ok::<_, OrdersError>(db::retry_later(c, id, attempts, Duration::ZERO, why)?)
                    })
                    .await?;
                    return Ok(false);
                }
            }
        }
    };
    match outcome {
        Ok(()) => {
            blocking(&delivery.pool, move |c| {
                Ok::<_, OrdersError>(db::delivered(c, id)?)
            })
            .await?;
            Ok(true)
        }
        Err((error, wait)) => {
            tracing::warn!(id, kind, attempts, retry_in_ms = wait.as_millis() as u64, %error, "outbox: delivery failed");
            blocking(&delivery.pool, move |c| {
                Ok::<_, OrdersError>(db::retry_later(c, id, attempts, wait, &error)?)
            })
            .await?;
            Ok(false)
        }
    }
}

/// Performs one message. `Err` means "try again later"; a refusal that retrying cannot change
/// is handled here (compensated or logged) and counts as delivered.
async fn deliver(delivery: &Delivery, message: &Message) -> Result<(), String> {
    match message {
        Message::WishlistRemove {
            customer_id,
            album_ids,
            added_before,
        } => {
            let customer = CustomerId(*customer_id);
            let albums: Vec<AlbumId> = album_ids.iter().copied().map(AlbumId).collect();
            match &delivery.wishlist {
                Some(client) => {
                    for album in &albums {
                        client
                            .remove(customer, *album, *added_before)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
                // The wishlist moved back in: remove locally.
                None => {
                    let before = Some(*added_before);
                    blocking(&delivery.pool, move |c| {
                        wishlist::remove_albums(c, customer, &albums, before)
                            .map_err(OrdersError::from)
                    })
                }
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            }
        }
        Message::StockConfirm { key, order_id } => {
            let client = delivery
                .stock
                .as_ref()
                .ok_or_else(|| "no catalog service configured for stock".to_string())?;
            match client.finish(key, "confirm").await {
                Ok(()) => Ok(()),
                Err(RemoteError::Refused { code, message, .. }) => {
                    // The stock is gone (expired and sold elsewhere, or released): the order
                    // cannot be fulfilled. Compensate by cancelling it, loudly.
                    tracing::error!(
                        order_id,
                        key,
                        code,
                        message,
                        "stock confirm refused; order cancelled"
                    );
                    let id = OrderId(*order_id);
                    blocking(&delivery.pool, move |c| {
                        Ok::<_, OrdersError>(db::set_status(c, id, "cancelled")?)
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
                }
                Err(RemoteError::Unavailable(e)) => Err(e),
            }
        }
        Message::StockRelease { key } => {
            let client = delivery
                .stock
                .as_ref()
                .ok_or_else(|| "no catalog service configured for stock".to_string())?;
            match client.finish(key, "release").await {
                Ok(()) => Ok(()),
                Err(RemoteError::Refused { code, message, .. }) => {
                    tracing::error!(
                        key,
                        code,
                        message,
                        "stock release refused; nothing more to do"
                    );
                    Ok(())
                }
                Err(RemoteError::Unavailable(e)) => Err(e),
            }
        }
    }
}

/// Removes a pending saga order and owes the catalog a release of its reservation, in one
/// transaction: either both happen or neither.
pub fn abandon(conn: &mut PgConnection, order: OrderId) -> Result<(), OrdersError> {
    conn.transaction(|tx| {
        // A request finishing transaction B at this moment wins: its order stays placed with its
        // confirm owed, and no release is sent to undo it.
        if !db::delete_pending(tx, order)? {
            return Ok(());
        }
        enqueue(
            tx,
            &Message::StockRelease {
                key: reservation_key(order),
            },
        )
    })
}

/// The key a saga order reserves stock under; deterministic, so any retry uses the same one.
pub fn reservation_key(order: OrderId) -> String {
    format!("order-{}", order.0)
}

/// Abandons the saga orders left pending for longer than `abandon_after`; returns how many.
async fn abandon_stale(delivery: &Delivery) -> Result<usize, OrdersError> {
    let age = delivery.integrations.abandon_after;
    let stale = blocking(&delivery.pool, move |c| {
        Ok::<_, OrdersError>(db::stale_pending(c, age)?)
    })
    .await?;
    let count = stale.len();
    for order in stale {
        tracing::warn!(
            order_id = order.0,
            "abandoning a saga order its request left pending"
        );
        blocking(&delivery.pool, move |c| abandon(c, order)).await?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::catalog::Money;
    use crate::customers::{self, NewCustomer};

    #[test]
    fn abandoning_removes_only_an_order_still_pending_and_owes_its_release() {
        let test_db = localpg::TestDb::new("monolith", crate::MIGRATIONS);
        let mut c = <PgConnection as Connection>::establish(test_db.url()).unwrap();
        let new = NewCustomer::parse("Ada", "ada@example.com").unwrap();
        let customer = customers::create_customer(&mut c, &new).unwrap().id;

        // Completed (transaction B won the race): the stale sweep must leave it alone.
        let placed = db::insert_pending(&mut c, customer).unwrap();
        let total = Money {
            amount_cents: 100,
            currency: "USD".into(),
        };
        db::mark_placed(&mut c, placed, &total).unwrap();
        abandon(&mut c, placed).unwrap();
        assert_eq!(
            db::status_of(&mut c, placed).unwrap().as_deref(),
            Some("placed")
        );
        assert_eq!(pending(&mut c).unwrap(), 0, "no release for a placed order");

        // Still pending: removed, with its release owed.
        let stale = db::insert_pending(&mut c, customer).unwrap();
        abandon(&mut c, stale).unwrap();
        assert_eq!(db::status_of(&mut c, stale).unwrap(), None);
        assert_eq!(pending(&mut c).unwrap(), 1);
        abandon(&mut c, stale).unwrap();
        assert_eq!(
            pending(&mut c).unwrap(),
            1,
            "abandoning twice owes one release"
        );
    }

    #[test]
    fn a_lease_covers_one_delivery_every_call_of_which_times_out() {
        let ms = Duration::from_millis;
        // (remote timeout, delivery budget = 50 calls, lease = budget + 10 s)
        for (timeout, budget, leased) in [
            (ms(1), ms(50), ms(10_050)),
            (ms(800), ms(40_000), ms(50_000)),
            (ms(2_000), ms(100_000), ms(110_000)),
            (ms(16_559), ms(827_950), ms(837_950)),
            (Duration::MAX, Duration::MAX, Duration::MAX),
        ] {
            assert_eq!(delivery_budget(timeout), budget, "{timeout:?}");
            assert_eq!(lease(timeout), leased, "{timeout:?}");
        }
    }

    #[test]
    fn the_lease_is_shorter_than_the_reservation_it_protects() {
        let defaults = Integrations::default();
        assert_eq!(defaults.reservation_ttl, Duration::from_secs(900));
        assert!(
            lease(defaults.timeout) < defaults.reservation_ttl,
            "a {:?} lease outlives a {:?} reservation",
            lease(defaults.timeout),
            defaults.reservation_ttl
        );
        // Even after the order takes as long as it may to complete and a worker polls once more.
        assert_eq!(
            defaults.confirm_bound(),
            Duration::from_secs(60 + 1 + 110 + 1)
        );
        assert_eq!(defaults.check(), Ok(()));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(4), Duration::from_millis(1600));
        assert_eq!(backoff(60), Duration::from_secs(10));
        assert_eq!(backoff(0), Duration::from_millis(200));
    }

    #[test]
    fn messages_round_trip_with_their_kind() {
        let m = Message::StockConfirm {
            key: "order-7".into(),
            order_id: 7,
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["kind"], "stock.confirm");
        assert_eq!(serde_json::from_value::<Message>(v).unwrap(), m);
        assert_eq!(m.kind(), "stock.confirm");
    }
}
