//! Reservation tables, private to this module.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::domain::{Reservation, ReservationKey, ReservedLine, Status};
use crate::catalog::{AlbumId, Money};

diesel::table! {
    catalog.reservations (id) {
        id -> Int8,
        key -> Text,
        status -> Text,
        request -> Text,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    catalog.reservation_lines (reservation_id, line_no) {
        reservation_id -> Int8,
        line_no -> Int4,
        album_id -> Int8,
        quantity -> Int4,
        unit_price_cents -> Int8,
        currency -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = reservations)]
pub struct Row {
    pub id: i64,
    key: String,
    status: String,
    pub request: String,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl Row {
    pub fn status(&self) -> Status {
        // The CHECK constraint admits only the four names.
        Status::parse(&self.status).unwrap_or(Status::Released)
    }
}

/// Inserts the key's row unless the key exists; a concurrent inserter of the same key waits here
/// for the first transaction and then sees it.
pub fn claim(
    conn: &mut PgConnection,
    key: &ReservationKey,
    status: Status,
    request: &str,
    expires_at: DateTime<Utc>,
) -> QueryResult<Option<i64>> {
    diesel::insert_into(reservations::table)
        .values((
            reservations::key.eq(key.as_str()),
            reservations::status.eq(status.as_str()),
            reservations::request.eq(request),
            reservations::expires_at.eq(expires_at),
        ))
        .on_conflict_do_nothing()
        .returning(reservations::id)
        .get_result(conn)
        .optional()
}

pub fn find_for_update(conn: &mut PgConnection, key: &ReservationKey) -> QueryResult<Option<Row>> {
    reservations::table
        .filter(reservations::key.eq(key.as_str()))
        .select(Row::as_select())
        .for_update()
        .first(conn)
        .optional()
}

pub fn find(conn: &mut PgConnection, key: &ReservationKey) -> QueryResult<Option<Row>> {
    reservations::table
        .filter(reservations::key.eq(key.as_str()))
        .select(Row::as_select())
        .first(conn)
        .optional()
}

pub fn insert_lines(
    conn: &mut PgConnection,
    id: i64,
    lines: &[ReservedLine],
) -> QueryResult<usize> {
    let values: Vec<_> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                reservation_lines::reservation_id.eq(id),
                reservation_lines::line_no.eq(i as i32),
                reservation_lines::album_id.eq(l.album_id.0),
                reservation_lines::quantity.eq(l.quantity),
                reservation_lines::unit_price_cents.eq(l.unit_price.amount_cents),
                reservation_lines::currency.eq(&l.unit_price.currency),
            )
        })
        .collect();
    diesel::insert_into(reservation_lines::table)
        .values(values)
        .execute(conn)
}

pub fn lines(conn: &mut PgConnection, id: i64) -> QueryResult<Vec<ReservedLine>> {
    let rows: Vec<(i64, i32, i64, String)> = reservation_lines::table
        .filter(reservation_lines::reservation_id.eq(id))
        .order(reservation_lines::line_no.asc())
        .select((
            reservation_lines::album_id,
            reservation_lines::quantity,
            reservation_lines::unit_price_cents,
            reservation_lines::currency,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(album_id, quantity, amount_cents, currency)| ReservedLine {
                album_id: AlbumId(album_id),
                quantity,
                unit_price: Money {
                    amount_cents,
                    currency,
                },
            },
        )
        .collect())
}

pub fn load(conn: &mut PgConnection, row: Row) -> QueryResult<Reservation> {
    let lines = lines(conn, row.id)?;
    Ok(Reservation {
        status: row.status(),
        key: row.key,
        lines,
        expires_at: row.expires_at,
        created_at: row.created_at,
    })
}

pub fn set_status(conn: &mut PgConnection, id: i64, status: Status) -> QueryResult<usize> {
    diesel::update(reservations::table.find(id))
        .set((
            reservations::status.eq(status.as_str()),
            reservations::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
}

/// Marks every reservation past its time as expired and returns their ids. Rows a confirm holds
/// locked are waited for and re-checked, so a just-confirmed reservation never expires.
pub fn expire_due(conn: &mut PgConnection) -> QueryResult<Vec<i64>> {
    diesel::update(
        reservations::table
            .filter(reservations::status.eq(Status::Reserved.as_str()))
            .filter(reservations::expires_at.lt(diesel::dsl::now)),
    )
    .set((
        reservations::status.eq(Status::Expired.as_str()),
        reservations::updated_at.eq(diesel::dsl::now),
    ))
    .returning(reservations::id)
    .get_results(conn)
}

/// Reservations currently holding stock, for operators and tests.
pub fn count_held(conn: &mut PgConnection) -> QueryResult<i64> {
    reservations::table
        .filter(reservations::status.eq(Status::Reserved.as_str()))
        .count()
        .get_result(conn)
}
