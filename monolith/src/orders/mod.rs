//! Orders: placing an order takes stock from the catalog, records the lines and removes the
//! purchased albums from the customer's wishlist, all in one database transaction.
//!
//! [`place_order`], in that transaction: admit the catalog write (`fence::admit`; refused, nothing
//! is written and the handler runs the [`saga`] instead), claim the `Idempotency-Key`, check the
//! customer, take stock album by album in ascending id order (`catalog::take_stock`, a
//! conditional update that also returns the price charged), total the lines, insert the order and
//! its lines, and `remove_purchased`: the wishlist module deletes the rows while the monolith
//! owns wishlist writes, otherwise a `wishlist.remove` message goes into the [`outbox`]. Any error
//! rolls all of it back, the key's claim included.

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

use platform::db::DbError;

use crate::catalog::{self, StockTake};
use crate::customers;
use crate::integrations::{CATALOG, WISHLIST};
use crate::wishlist;

/// How order placement reaches stock and wishlists (app data). Which way an order goes is
/// decided per order by the write fence in the monolith's database ([`platform::fence`]): the
/// local module while the monolith owns the capability's writes, in the order's transaction
/// (which the fence admits, so a flip waits for it); the service once it owns them.
#[derive(Debug, Clone)]
pub struct OrdersDeps {
    /// The catalog service's reservations, for a saga once the catalog service owns stock;
    /// `None`: there is no catalog service to reach, so orders need the local module.
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

/// How an order may remove purchased albums from the wishlist (branch by abstraction). The
/// wishlist module does it, in the order's transaction, while the monolith owns wishlist writes;
/// once the wishlist service owns them, the service does it through the outbox, if there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Only the wishlist module: there is no wishlist service to reach.
    LocalOnly,
    /// The wishlist module, or the wishlist service through the outbox written in the order's
    /// transaction.
    LocalOrOutbox,
}

/// Admits the order's write to `capability` in its transaction: `Ok(true)` when the monolith's
/// module owns the writes (the admission holds the fence off until the order commits),
/// `Ok(false)` when its service does and the order may go there, an error otherwise.
fn owns(tx: &mut PgConnection, capability: &str, can_go_remote: bool) -> Result<bool, OrdersError> {
    match platform::fence::admit(tx, capability) {
        Ok(()) => Ok(true),
        Err(platform::fence::FenceError::NotOwner { .. }) if can_go_remote => Ok(false),
        Err(e) => Err(DbError::from(e).into()),
    }
}

pub(crate) fn remove_purchased(
    tx: &mut PgConnection,
    removal: Removal,
    customer: customers::CustomerId,
    albums: &[catalog::AlbumId],
    placed_at: DateTime<Utc>,
) -> Result<(), OrdersError> {
    if owns(tx, WISHLIST, removal == Removal::LocalOrOutbox)? {
        wishlist::remove_albums(tx, customer, albums, None)?;
    } else {
        outbox::enqueue(
            tx,
            &outbox::Message::WishlistRemove {
                customer_id: customer.0,
                album_ids: albums.iter().map(|a| a.0).collect(),
                added_before: placed_at,
            },
        )?;
    }
    Ok(())
}

/// Places an order with local stock, in one transaction; refused with
/// [`DbError::NotOwner`] (nothing written) once the catalog service owns stock. With a key, the first request to claim it places the order; every later
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
        // First, before the key is claimed: refused here, the order goes to the saga, which
        // claims the key itself. And the fence waits for this order (or this order sees it).
        owns(tx, CATALOG, false)?;
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
