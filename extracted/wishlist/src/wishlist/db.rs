//! Wishlist tables, moved from the monolith's wishlist module; private to this module.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::domain::Item;
use super::domain::{AlbumId, CustomerId};

diesel::table! {
    wishlist.items (customer_id, album_id) {
        customer_id -> Int8,
        album_id -> Int8,
        added_at -> Timestamptz,
    }
}

fn item((album_id, added_at): (i64, DateTime<Utc>)) -> Item {
    Item {
        album_id: AlbumId(album_id),
        added_at,
    }
}

pub fn list(conn: &mut PgConnection, customer: CustomerId) -> QueryResult<Vec<Item>> {
    items::table
        .filter(items::customer_id.eq(customer.0))
        .select((items::album_id, items::added_at))
        .order((items::added_at.asc(), items::album_id.asc()))
        .load(conn)
        .map(|rows| rows.into_iter().map(item).collect())
}

/// Inserts the item unless it is already there; returns the stored item and whether it is new.
/// Without writing to an existing row: a concurrent removal between the insert and the re-read
/// just means another round.
pub fn add(
    conn: &mut PgConnection,
    customer: CustomerId,
    album: AlbumId,
) -> QueryResult<(Item, bool)> {
    loop {
        let inserted = diesel::insert_into(items::table)
            .values((
                items::customer_id.eq(customer.0),
                items::album_id.eq(album.0),
            ))
            .on_conflict_do_nothing()
            .returning((items::album_id, items::added_at))
            .get_result(conn)
            .optional()?;
        if let Some(row) = inserted {
            return Ok((item(row), true));
        }
        let existing = items::table
            .find((customer.0, album.0))
            .select((items::album_id, items::added_at))
            .first(conn)
            .optional()?;
        if let Some(row) = existing {
            return Ok((item(row), false));
        }
    }
}

/// Serialises adds for one customer until the transaction ends, so the size cap holds under
/// concurrent adds.
pub fn lock_customer(conn: &mut PgConnection, customer: CustomerId) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('wishlist'), hashtext($1::text))")
        .bind::<diesel::sql_types::BigInt, _>(customer.0)
        .execute(conn)
        .map(|_| ())
}

pub fn contains(
    conn: &mut PgConnection,
    customer: CustomerId,
    album: AlbumId,
) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        items::table.find((customer.0, album.0)),
    ))
    .get_result(conn)
}

pub fn count(conn: &mut PgConnection, customer: CustomerId) -> QueryResult<i64> {
    items::table
        .filter(items::customer_id.eq(customer.0))
        .count()
        .get_result(conn)
}

/// Removes the albums; with `added_before`, only items added at or before then (a late removal for
/// an old purchase must not remove an album the customer wished for again since).
pub fn remove(
    conn: &mut PgConnection,
    customer: CustomerId,
    albums: &[AlbumId],
    added_before: Option<DateTime<Utc>>,
) -> QueryResult<usize> {
    let raw: Vec<i64> = albums.iter().map(|a| a.0).collect();
    let mut query = diesel::delete(items::table)
        .filter(items::customer_id.eq(customer.0))
        .filter(items::album_id.eq_any(raw))
        .into_boxed();
    if let Some(before) = added_before {
        query = query.filter(items::added_at.le(before));
    }
    query.execute(conn)
}
