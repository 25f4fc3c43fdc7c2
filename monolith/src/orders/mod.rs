//! Orders: placing an order takes stock from the catalog, records the lines and removes the
//! purchased albums from the customer's wishlist, all in one database transaction.

pub mod domain;
pub mod http;
pub mod outbox;
pub mod saga;

mod db;
mod error;

use chrono::{DateTime, Utc};
use diesel::{Connection, PgConnection};

pub use domain::{IdempotencyKey, LineRequest, Order, OrderId, OrderLine, OrderRequest};
pub use error::OrdersError;

use crate::catalog::{self, StockTake};
use crate::customers;
use crate::wishlist;

/// How order placement reaches stock and wishlists, chosen by configuration (app data).
#[derive(Debug, Clone)]
pub struct OrdersDeps {
    /// `None`: the catalog module, in the order's transaction; `Some`: the catalog service's
    /// reservations, as a saga.
    pub stock: Option<crate::integrations::StockClient>,
    pub removal: Removal,
    pub outbox: outbox::Outbox,
}

/// The result of a placement: a new order, or the one an earlier request with the same
/// Idempotency-Key created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Created(Order),
    Replayed(Order),
}

pub fn get_order(conn: &mut PgConnection, id: OrderId) -> Result<Order, OrdersError> {
    db::get_order(conn, id)?.ok_or(OrdersError::NotFound)
}

/// How an order removes purchased albums from the wishlist (branch by abstraction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The wishlist module, in the order's transaction.
    Local,
    /// The wishlist service, through the outbox written in the order's transaction.
    Outbox,
}

pub(crate) fn remove_purchased(
    tx: &mut PgConnection,
    removal: Removal,
    customer: customers::CustomerId,
    albums: &[catalog::AlbumId],
    placed_at: DateTime<Utc>,
) -> Result<(), OrdersError> {
    match removal {
        Removal::Local => {
            wishlist::remove_albums(tx, customer, albums, None)?;
        }
        Removal::Outbox => outbox::enqueue(
            tx,
            &outbox::Message::WishlistRemove {
                customer_id: customer.0,
                album_ids: albums.iter().map(|a| a.0).collect(),
                added_before: placed_at,
            },
        )?,
    }
    Ok(())
}

/// Places an order with local stock, in one transaction. With a key, the first request to claim it places the order; every later
/// request with the same key and body gets that order back (a different body is refused).
pub fn place_order(
    conn: &mut PgConnection,
    request: &OrderRequest,
    key: Option<&IdempotencyKey>,
    removal: Removal,
) -> Result<Placement, OrdersError> {
    // Infallible for these plain types; the text is what a key is bound to.
    let body = serde_json::to_string(request).unwrap_or_default();
    let placed = conn.transaction::<_, OrdersError, _>(|tx| {
        if let Some(key) = key
            && !db::claim_key(tx, key, &body)?
        {
            return Ok(None);
        }
        let order = place_in_transaction(tx, request, removal)?;
        if let Some(key) = key {
            db::attach_order(tx, key, order.id)?;
        }
        Ok(Some(order))
    })?;
    match (placed, key) {
        (Some(order), _) => Ok(Placement::Created(order)),
        (None, Some(key)) => replay(conn, key, &body),
        (None, None) => Err(OrdersError::KeyInFlight),
    }
}

/// Records a historical order without touching stock or wishlists: for the seed generator.
pub(crate) fn record_history(
    conn: &mut PgConnection,
    customer: customers::CustomerId,
    lines: &[OrderLine],
    placed_at: chrono::DateTime<chrono::Utc>,
) -> Result<OrderId, OrdersError> {
    let total = domain::total(lines)?;
    let (id, _) = db::insert_order(
        conn,
        &db::NewOrder {
            customer,
            total: &total,
            placed_at: Some(placed_at),
        },
    )?;
    db::insert_lines(conn, id, lines)?;
    Ok(id)
}

fn replay(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    body: &str,
) -> Result<Placement, OrdersError> {
    match db::key_record(conn, key)? {
        Some((first_body, _)) if first_body != body => Err(OrdersError::KeyReused),
        Some((_, Some(order))) => get_order(conn, OrderId(order)).map(Placement::Replayed),
        // The claim and the order commit together, so a visible key always has its order;
        // answer as if it were still in flight rather than pretend the order is missing.
        _ => Err(OrdersError::KeyInFlight),
    }
}

fn place_in_transaction(
    tx: &mut PgConnection,
    request: &OrderRequest,
    removal: Removal,
) -> Result<Order, OrdersError> {
    if !customers::customer_exists(tx, request.customer_id)? {
        return Err(OrdersError::UnknownCustomer(request.customer_id.0));
    }
    let mut prices = vec![None; request.lines.len()];
    for i in request.lock_order() {
        let line = request.lines[i];
        match catalog::take_stock(tx, line.album_id, line.quantity)? {
            StockTake::Taken { unit_price } => prices[i] = Some(unit_price),
            StockTake::Insufficient { available } => {
                return Err(OrdersError::InsufficientStock {
                    line: i,
                    album: line.album_id,
                    requested: line.quantity,
                    available,
                });
            }
            StockTake::UnknownAlbum => {
                return Err(OrdersError::UnknownAlbum {
                    line: i,
                    album: line.album_id,
                });
            }
        }
    }
    let lines: Vec<OrderLine> = request
        .lines
        .iter()
        .zip(prices)
        .filter_map(|(l, price)| {
            price.map(|unit_price| OrderLine {
                album_id: l.album_id,
                quantity: l.quantity,
                unit_price,
            })
        })
        .collect();
    let total = domain::total(&lines)?;
    let (id, placed_at) = db::insert_order(
        tx,
        &db::NewOrder {
            customer: request.customer_id,
            total: &total,
            placed_at: None,
        },
    )?;
    db::insert_lines(tx, id, &lines)?;
    let bought: Vec<_> = lines.iter().map(|l| l.album_id).collect();
    remove_purchased(tx, removal, request.customer_id, &bought, placed_at)?;
    Ok(Order {
        id,
        customer_id: request.customer_id,
        status: "placed".into(),
        lines,
        total,
        placed_at,
    })
}
