//! Wishlist: the albums a customer wants. It reaches album data only through the catalog
//! module's functions and customer data only through the customers module's functions; after
//! extraction those calls become HTTP calls.

pub mod domain;
pub mod http;

mod db;
mod error;

use chrono::{DateTime, Utc};
use diesel::{Connection, PgConnection};

pub use domain::{AlbumDetails, Item, ItemView, MAX_ITEMS, Wishlist};
pub use error::WishlistError;

use crate::catalog::{self, AlbumId};
use crate::customers::{self, CustomerId};

fn require_customer(conn: &mut PgConnection, customer: CustomerId) -> Result<(), WishlistError> {
    if customers::customer_exists(conn, customer)? {
        Ok(())
    } else {
        Err(WishlistError::NotFound("customer"))
    }
}

/// The wishlist with live album details: one query for the items, one batched catalog call.
pub fn get_wishlist(
    conn: &mut PgConnection,
    customer: CustomerId,
) -> Result<Wishlist, WishlistError> {
    require_customer(conn, customer)?;
    let items = db::list(conn, customer)?;
    let ids: Vec<AlbumId> = items.iter().map(|i| i.album_id).collect();
    let albums = if ids.is_empty() {
        Vec::new()
    } else {
        catalog::albums_by_ids(conn, &ids)?
    };
    Ok(domain::join(customer, items, &albums))
}

/// Adds an album; adding one that is already there changes nothing. Returns the item as shown
/// and whether it was new.
pub fn add_item(
    conn: &mut PgConnection,
    customer: CustomerId,
    album: AlbumId,
) -> Result<(ItemView, bool), WishlistError> {
    require_customer(conn, customer)?;
    let found = catalog::albums_by_ids(conn, &[album])?;
    let Some(details) = found.first().map(AlbumDetails::from) else {
        return Err(WishlistError::NotFound("album"));
    };
    let (item, created) = conn.transaction(|tx| {
        db::lock_customer(tx, customer)?;
        if !db::contains(tx, customer, album)?
            && db::count(tx, customer)? >= domain::MAX_ITEMS as i64
        {
            return Err(WishlistError::Full(domain::MAX_ITEMS));
        }
        Ok(db::add(tx, customer, album)?)
    })?;
    Ok((
        ItemView {
            album_id: item.album_id,
            added_at: item.added_at,
            album: Some(details),
        },
        created,
    ))
}

/// Removes an album; removing one that is not there is not an error (retries are safe).
pub fn remove_item(
    conn: &mut PgConnection,
    customer: CustomerId,
    album: AlbumId,
    added_before: Option<DateTime<Utc>>,
) -> Result<(), WishlistError> {
    require_customer(conn, customer)?;
    db::remove(conn, customer, &[album], added_before)?;
    Ok(())
}

/// Removes purchased albums: by orders inside the order's transaction, or by the outbox for an
/// order placed while the wishlist was remote (then only items added at or before the purchase).
pub fn remove_albums(
    conn: &mut PgConnection,
    customer: CustomerId,
    albums: &[AlbumId],
    added_before: Option<DateTime<Utc>>,
) -> Result<usize, WishlistError> {
    Ok(db::remove(conn, customer, albums, added_before)?)
}

pub(crate) fn insert_items_bulk(
    conn: &mut PgConnection,
    rows: &[(CustomerId, AlbumId)],
) -> Result<usize, WishlistError> {
    Ok(db::insert_bulk(conn, rows)?)
}
