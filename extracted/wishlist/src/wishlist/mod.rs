//! Wishlist: the albums a customer wants, in its own database. Customers and albums belong to
//! other services: existence checks and album details are HTTP calls (see `crate::clients`).
//!
//! The monolith's module, changed where the join became a call: the functions here are `async`
//! and make their remote calls first, then reach the database through `platform::blocking` (no
//! call inside a transaction); `domain.rs` has its own ids and money, and its join takes the
//! catalog's answer as an option (`None`: degraded); `http.rs` adds `degraded` (left out when
//! false); `error.rs` adds `Dependency` (`503 dependency_unavailable`); `db.rs` has the same
//! queries, without the seed's bulk insert.

pub mod domain;
pub mod http;

mod db;
mod error;

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use diesel::Connection;

pub use domain::{AlbumDetails, AlbumId, CustomerId, Item, ItemView, MAX_ITEMS, Wishlist};
pub use error::WishlistError;

use crate::State;
use platform::Db;

/// A read keeps working when the customer directory is down: the stored items are the answer,
/// and a customer without items reads as an empty list.
async fn customer_known_for_read(state: &State, customer: CustomerId) -> Result<(), WishlistError> {
    match state.customers.exists(customer.0).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(WishlistError::NotFound("customer")),
        Err(e) => {
            tracing::warn!(error = %e, customer = customer.0, "customer check skipped");
            Ok(())
        }
    }
}

/// The wishlist with live album details: one query for the items, one batched catalog call.
/// When the catalog fails or is slow, the items come back without details, marked degraded.
pub async fn get_wishlist(
    state: &State,
    database: &Db,
    customer: CustomerId,
) -> Result<Wishlist, WishlistError> {
    customer_known_for_read(state, customer).await?;
    let items = database
        .run(move |c| db::list(c, customer).map_err(WishlistError::from))
        .await?;
    if items.is_empty() {
        return Ok(domain::join(customer, items, Some(Vec::new())));
    }
    let ids: Vec<AlbumId> = items.iter().map(|i| i.album_id).collect();
    let albums = match state.catalog.albums(&ids).await {
        Ok(albums) => Some(albums),
        Err(e) => {
            state.degraded_reads.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, customer = customer.0, items = ids.len(), "wishlist.degraded: served without album details");
            None
        }
    };
    Ok(domain::join(customer, items, albums))
}

/// Adds an album (idempotent). Both the customer and the album must be confirmed by their
/// owners first, so a write fails with 503 rather than store an unchecked reference.
pub async fn add_item(
    state: &State,
    database: &Db,
    customer: CustomerId,
    album: AlbumId,
) -> Result<(ItemView, bool), WishlistError> {
    if !state.customers.exists(customer.0).await? {
        return Err(WishlistError::NotFound("customer"));
    }
    let details = state
        .catalog
        .albums(&[album])
        .await?
        .into_iter()
        .next()
        .map(|(_, d)| d)
        .ok_or(WishlistError::NotFound("album"))?;
    let (item, created) = database
        .run(move |c| {
            c.transaction(|tx| {
                db::lock_customer(tx, customer)?;
                if !db::contains(tx, customer, album)?
                    && db::count(tx, customer)? >= MAX_ITEMS as i64
                {
                    return Err(WishlistError::Full(MAX_ITEMS));
                }
                Ok(db::add(tx, customer, album)?)
            })
        })
        .await?;
    Ok((
        ItemView {
            album_id: item.album_id,
            added_at: item.added_at,
            album: Some(details),
        },
        created,
    ))
}

/// Removes an album (idempotent). Removal needs no check that could fail: removing what is not
/// there changes nothing, which is what lets the monolith's outbox retry it safely.
pub async fn remove_item(
    state: &State,
    database: &Db,
    customer: CustomerId,
    album: AlbumId,
    added_before: Option<DateTime<Utc>>,
) -> Result<(), WishlistError> {
    customer_known_for_read(state, customer).await?;
    database
        .run(move |c| db::remove(c, customer, &[album], added_before).map_err(WishlistError::from))
        .await?;
    Ok(())
}
