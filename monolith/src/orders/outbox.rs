//! The transactional outbox: calls to other services that an order's commit obliges us to make.
//! They are written in the order's own transaction and delivered afterwards by a worker that
//! retries with backoff until the other side answers. Every receiver is idempotent (a removal of
//! what is gone, a second confirm), so at-least-once delivery has exactly-once effect.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{Connection, PgConnection};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

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

/// Wakes the worker after a commit, so delivery does not wait for the next poll.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn wake(&self) {
        self.wake.notify_one();
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

const BATCH: i64 = 10;
/// A message that can never be read is parked this long (effectively until an operator acts).
const PARKED: Duration = Duration::from_secs(365 * 86_400);

/// How long a leased batch is hidden from other workers: every call of the batch timing out
/// (a wishlist removal makes one call per album, at most 50), plus slack. A worker that dies
/// mid-batch only delays its messages by this much; one that is merely slow may see another
/// worker deliver the same message too, which idempotent receivers make harmless.
fn lease(timeout: Duration) -> Duration {
    timeout * (BATCH as u32) * 50 + Duration::from_secs(30)
}

/// Backoff after `attempts` failed deliveries: 200 ms doubling, at most 10 s.
pub fn backoff(attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 16) as u32 - 1;
    Duration::from_millis(200u64.saturating_mul(1 << exp)).min(Duration::from_secs(10))
}

/// Starts the worker on the current Tokio runtime; it runs as long as the runtime does.
pub fn spawn_worker(delivery: Delivery) -> Outbox {
    let outbox = Outbox::default();
    let wake = outbox.wake.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(delivery.integrations.outbox_poll) => {}
            }
            if let Err(e) = drain(&delivery).await {
                tracing::warn!(error = %e, "outbox: delivery round failed");
            }
            if let Err(e) = abandon_stale(&delivery).await {
                tracing::warn!(error = %e, "outbox: abandoning stale saga orders failed");
            }
        }
    });
    outbox
}

/// Delivers due messages, batch after batch while every delivery succeeds. A round ends at the
/// first failure (the rest waits for the next round), so a receiver that is down cannot keep the
/// worker in one endless round.
pub async fn drain(delivery: &Delivery) -> Result<usize, OrdersError> {
    let lease = lease(delivery.integrations.timeout);
    let mut delivered = 0;
    loop {
        let batch = blocking(&delivery.pool, move |c| {
            Ok::<_, OrdersError>(db::lease_due(c, BATCH, lease)?)
        })
        .await?;
        let full = batch.len() as i64 == BATCH;
        let mut clean = true;
        for (id, kind, payload, attempts) in batch {
            let outcome = match serde_json::from_value::<Message>(payload) {
                Ok(message) => deliver(delivery, &message)
                    .await
                    .map_err(|e| (e, backoff(attempts))),
                Err(e) => Err((format!("unreadable {kind} message, parked: {e}"), PARKED)),
            };
            match outcome {
                Ok(()) => {
                    blocking(&delivery.pool, move |c| {
                        Ok::<_, OrdersError>(db::delivered(c, id)?)
                    })
                    .await?;
                    delivered += 1;
                }
                Err((error, wait)) => {
                    clean = false;
                    tracing::warn!(id, kind, attempts, retry_in_ms = wait.as_millis() as u64, %error, "outbox: delivery failed");
                    blocking(&delivery.pool, move |c| {
                        Ok::<_, OrdersError>(db::retry_later(c, id, wait, &error)?)
                    })
                    .await?;
                }
            }
        }
        if !(full && clean) {
            return Ok(delivered);
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

async fn abandon_stale(delivery: &Delivery) -> Result<(), OrdersError> {
    let age = delivery.integrations.abandon_after;
    let stale = blocking(&delivery.pool, move |c| {
        Ok::<_, OrdersError>(db::stale_pending(c, age)?)
    })
    .await?;
    for order in stale {
        tracing::warn!(
            order_id = order.0,
            "abandoning a saga order its request left pending"
        );
        blocking(&delivery.pool, move |c| abandon(c, order)).await?;
    }
    Ok(())
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
