//! Order placement when the catalog service owns stock: a saga instead of one transaction.
//!
//! 1. Transaction A claims the Idempotency-Key and records a `pending` order.
//! 2. The catalog service reserves the stock under the key `order-{id}` (safe to retry).
//! 3. Transaction B completes the order (prices, lines, wishlist removal) and owes the catalog a
//!    confirm through the outbox.
//!
//! A refusal (no stock, unknown album) removes the pending order; a failed or unknown reserve
//! removes it and owes a release (the catalog's release tombstones the key, so a late reserve
//! takes nothing); a request that dies between A and B leaves a pending order that the outbox
//! worker abandons the same way. So an order is either placed with its stock confirmed (now or
//! by the outbox), or absent with its stock released.
//!
//! A dry run (`X-Fig-Dry-Run`) goes through the same steps with every transaction rolled back
//! and a dry-run reserve, and owes nothing.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use diesel::Connection;

use super::outbox::{self, Message, Outbox};
use super::{
    IdempotencyKey, Order, OrderId, OrderLine, OrderRequest, OrdersError, Placement, Removal, db,
    domain,
};
use crate::catalog::{AlbumId, Money};
use crate::customers;
use crate::integrations::{RemoteError, Reservation, StockClient};
use platform::Db;

enum Begun {
    Started(OrderId),
    /// The key belongs to an earlier request.
    Claimed,
}

/// Transaction A: claims the key, checks the customer, records the pending order (under `id` when
/// a dry run does it again).
fn begin(
    conn: &mut diesel::PgConnection,
    key: Option<&IdempotencyKey>,
    body: &str,
    customer: customers::CustomerId,
    id: Option<OrderId>,
) -> Result<Begun, OrdersError> {
    conn.transaction(|tx| {
        if let Some(k) = key
            && !db::claim_key(tx, k, body)?
        {
            return Ok(Begun::Claimed);
        }
        if !customers::customer_exists(tx, customer)? {
            return Err(OrdersError::UnknownCustomer(customer.0));
        }
        let id = match id {
            None => db::insert_pending(tx, customer)?,
            Some(id) => db::insert_pending_as(tx, customer, id)?,
        };
        if let Some(k) = key {
            db::attach_order(tx, k, id)?;
        }
        Ok(Begun::Started(id))
    })
}

/// Places an order through the catalog service's reservations. In a dry run (`X-Fig-Dry-Run`)
/// every transaction is rolled back and the catalog is asked for a dry-run reservation too, so
/// the answer is the one the real request would get (the catalog's refusals and prices
/// included) while nothing is held, owed or written on either side (`dry_run_complete`).
pub async fn place_order(
    database: &Db,
    stock: &StockClient,
    outbox: &Outbox,
    removal: Removal,
    request: OrderRequest,
    key: Option<IdempotencyKey>,
) -> Result<Placement, OrdersError> {
    let body = serde_json::to_string(&request).unwrap_or_default();
    let customer = request.customer_id;
    let (claim_key, claim_body) = (key.clone(), body.clone());
    let begun = database
        .run(move |c| begin(c, claim_key.as_ref(), &claim_body, customer, None))
        .await?;
    let order = match (begun, key.clone()) {
        (Begun::Started(order), _) => order,
        (Begun::Claimed, Some(key)) => return replay(database, key, body).await,
        (Begun::Claimed, None) => return Err(OrdersError::KeyInFlight),
    };

    let reservation_key = outbox::reservation_key(order);
    let lines: Vec<(AlbumId, i32)> = request
        .lines
        .iter()
        .map(|l| (l.album_id, l.quantity))
        .collect();
    let reservation = match stock
        .reserve(&reservation_key, &lines, database.is_dry_run())
        .await
    {
        Ok(r) if r.status == "reserved" => r,
        Ok(r) => {
            return Err(give_up(
                database,
                outbox,
                order,
                format!("reservation came back {}", r.status),
            )
            .await);
        }
        Err(RemoteError::Refused {
            status,
            code,
            message,
            field,
        }) => {
            // A dry run's pending order was never committed: nothing to delete.
            if !database.is_dry_run() {
                database
                    .run(move |c| Ok::<_, OrdersError>(db::delete_pending(c, order)?))
                    .await?;
            }
            return Err(OrdersError::StockRefused {
                status,
                code,
                message,
                field,
            });
        }
        Err(RemoteError::Unavailable(e)) => return Err(give_up(database, outbox, order, e).await),
    };

    if database.is_dry_run() {
        return dry_run_complete(database, order, request, reservation, removal, key, body).await;
    }
    let completed = database
        .run(move |c| complete(c, order, &request, &reservation, removal))
        .await;
    match completed {
        Ok(Some(placed)) => {
            outbox.wake();
            Ok(Placement::Created(placed))
        }
        // Abandoned while we waited for the catalog; its release is already owed.
        Ok(None) => Err(OrdersError::DependencyUnavailable(
            "the order took too long and was abandoned".into(),
        )),
        Err(e) => Err(
            match give_up(database, outbox, order, e.to_string()).await {
                OrdersError::DependencyUnavailable(_) => e,
                other => other,
            },
        ),
    }
}

/// Transaction B of a dry run. Transaction A was rolled back, so there is no pending order to
/// complete: A is done again under the id it drew, then B, in one transaction that is rolled back
/// as well. (The alternative, keeping A's transaction open across the reserve call, would hold a
/// pooled connection and the key's row lock for the length of a remote call, which the saga never
/// does.) If a real request claimed the key meanwhile, the answer is its replay, as it would be
/// for a real request arriving now. No outbox row survives and the worker is not woken: the
/// catalog holds no dry-run reservation to confirm or release.
async fn dry_run_complete(
    database: &Db,
    order: OrderId,
    request: OrderRequest,
    reservation: Reservation,
    removal: Removal,
    key: Option<IdempotencyKey>,
    body: String,
) -> Result<Placement, OrdersError> {
    let (claim_key, claim_body) = (key.clone(), body.clone());
    let customer = request.customer_id;
    let completed = database
        .run(
            move |c| match begin(c, claim_key.as_ref(), &claim_body, customer, Some(order))? {
                Begun::Claimed => Ok(None),
                Begun::Started(order) => {
                    complete(c, order, &request, &reservation, removal).map(Some)
                }
            },
        )
        .await?;
    match (completed, key) {
        (Some(Some(placed)), _) => Ok(Placement::Created(placed)),
        (None, Some(key)) => replay(database, key, body).await,
        // Just recorded in the same transaction, so still pending: cannot happen.
        (Some(None), _) | (None, None) => Err(OrdersError::KeyInFlight),
    }
}

/// Transaction B: the stock is reserved; make the order real and owe the confirm.
fn complete(
    conn: &mut diesel::PgConnection,
    order: OrderId,
    request: &OrderRequest,
    reservation: &Reservation,
    removal: Removal,
) -> Result<Option<Order>, OrdersError> {
    conn.transaction(|tx| {
        let Some(customer) = db::lock_pending(tx, order)? else {
            return Ok(None);
        };
        let mut lines: Vec<OrderLine> = Vec::with_capacity(request.lines.len());
        for (i, line) in request.lines.iter().enumerate() {
            let reserved = reservation
                .lines
                .iter()
                .find(|r| r.album_id == line.album_id.0 && r.quantity == line.quantity)
                .ok_or_else(|| {
                    OrdersError::DependencyUnavailable(format!("reservation is missing line {i}"))
                })?;
            lines.push(OrderLine {
                album_id: line.album_id,
                quantity: line.quantity,
                unit_price: Money {
                    amount_cents: reserved.unit_price.amount_cents,
                    currency: reserved.unit_price.currency.clone(),
                },
            });
        }
        let total = domain::total(&lines)?;
        let placed_at = db::mark_placed(tx, order, &total)?;
        db::insert_lines(tx, order, &lines)?;
        let bought: Vec<AlbumId> = lines.iter().map(|l| l.album_id).collect();
        super::remove_purchased(tx, removal, customer, &bought, placed_at)?;
        outbox::enqueue(
            tx,
            &Message::StockConfirm {
                key: outbox::reservation_key(order),
                order_id: order.0,
            },
        )?;
        Ok(Some(Order {
            id: order,
            customer_id: customer,
            status: "placed".into(),
            lines,
            total,
            placed_at,
        }))
    })
}

/// Removes the pending order and owes a release; the caller gets 503. A dry run committed no
/// pending order and its reserve took nothing, so it only answers the 503.
async fn give_up(database: &Db, outbox: &Outbox, order: OrderId, why: String) -> OrdersError {
    if database.is_dry_run() {
        return OrdersError::DependencyUnavailable(why);
    }
    tracing::warn!(order_id = order.0, reason = %why, "saga: giving up on the order, releasing its stock");
    match database.run(move |c| outbox::abandon(c, order)).await {
        Ok(()) => {
            outbox.wake();
            OrdersError::DependencyUnavailable(why)
        }
        Err(e) => e,
    }
}

/// A concurrent or repeated request with the same key waits for the first to finish.
async fn replay(
    database: &Db,
    key: IdempotencyKey,
    body: String,
) -> Result<Placement, OrdersError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (k, b) = (key.clone(), body.clone());
        let state = database
            .run(move |c| {
                // Gone: the first request failed and freed the key; the client may simply retry.
                let Some((first_body, order)) = db::key_record(c, &k)? else {
                    return Err(OrdersError::KeyInFlight);
                };
                if first_body != b {
                    return Err(OrdersError::KeyReused);
                }
                let Some(order) = order.map(OrderId) else {
                    return Ok(None);
                };
                match db::status_of(c, order)?.as_deref() {
                    Some("pending") | None => Ok(None),
                    Some(_) => super::get_order(c, order).map(Some),
                }
            })
            .await?;
        if let Some(order) = state {
            return Ok(Placement::Replayed(order));
        }
        if Instant::now() >= deadline {
            return Err(OrdersError::KeyInFlight);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The HTTP status a refusal from the catalog maps to.
pub fn refusal_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error())
        .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
}
