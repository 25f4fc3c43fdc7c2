//! Stock reservations: the catalog's side of the order saga. An order placed elsewhere reserves
//! stock under its own key, then confirms (sold) or releases (given back); a reservation nobody
//! confirms expires and its stock goes back. Every step is safe to retry with the same key.

pub mod domain;
pub mod http;

mod db;
mod error;

use chrono::{Duration, Utc};
use diesel::{Connection, PgConnection};

pub use domain::{Reservation, ReservationKey, ReserveRequest, Status};
pub use error::ReservationError;

use crate::catalog::{self, StockTake};
use domain::{LineRequest, OnConfirm, OnRelease, ReservedLine};

/// Reserves the lines under `key`. Returns the reservation and whether this call created it; a
/// repeated call with the same key and lines returns the reservation as it is now.
pub fn reserve(
    conn: &mut PgConnection,
    key: &ReservationKey,
    request: &ReserveRequest,
) -> Result<(Reservation, bool), ReservationError> {
    let fingerprint = request.fingerprint();
    conn.transaction(|tx| {
        let expires_at = Utc::now() + Duration::seconds(request.ttl_seconds);
        if let Some(id) = db::claim(tx, key, Status::Reserved, &fingerprint, expires_at)? {
            let lines = take_all(tx, &request.lines)?;
            db::insert_lines(tx, id, &lines)?;
            let row = db::find(tx, key)?.ok_or(ReservationError::NotFound)?;
            return Ok((db::load(tx, row)?, true));
        }
        let row = db::find(tx, key)?.ok_or(ReservationError::NotFound)?;
        // A release that arrived first left a tombstone with no request: the reservation is
        // released whatever was asked, so a late reserve never takes stock.
        let tombstone = row.request.is_empty();
        if !tombstone && row.request != fingerprint {
            return Err(ReservationError::KeyReused);
        }
        Ok((db::load(tx, row)?, false))
    })
}

/// Takes stock for every line in album id order; any shortfall fails the whole reservation.
fn take_all(
    tx: &mut PgConnection,
    lines: &[LineRequest],
) -> Result<Vec<ReservedLine>, ReservationError> {
    let mut order: Vec<usize> = (0..lines.len()).collect();
    order.sort_by_key(|&i| lines[i].album_id);
    let mut prices = vec![None; lines.len()];
    for i in order {
        let line = lines[i];
        match catalog::take_stock(tx, line.album_id, line.quantity)? {
            StockTake::Taken { unit_price } => prices[i] = Some(unit_price),
            StockTake::Insufficient { available } => {
                return Err(ReservationError::InsufficientStock {
                    line: i,
                    album: line.album_id,
                    requested: line.quantity,
                    available,
                });
            }
            StockTake::UnknownAlbum => {
                return Err(ReservationError::UnknownAlbum {
                    line: i,
                    album: line.album_id,
                });
            }
        }
    }
    Ok(lines
        .iter()
        .zip(prices)
        .filter_map(|(l, price)| {
            price.map(|unit_price| ReservedLine {
                album_id: l.album_id,
                quantity: l.quantity,
                unit_price,
            })
        })
        .collect())
}

pub fn get(conn: &mut PgConnection, key: &ReservationKey) -> Result<Reservation, ReservationError> {
    let row = db::find(conn, key)?.ok_or(ReservationError::NotFound)?;
    Ok(db::load(conn, row)?)
}

pub fn confirm(
    conn: &mut PgConnection,
    key: &ReservationKey,
) -> Result<Reservation, ReservationError> {
    conn.transaction(|tx| {
        let row = db::find_for_update(tx, key)?.ok_or(ReservationError::NotFound)?;
        match domain::on_confirm(row.status()) {
            OnConfirm::AlreadyConfirmed => {}
            OnConfirm::Confirm => {
                db::set_status(tx, row.id, Status::Confirmed)?;
            }
            OnConfirm::Retake => {
                let held = db::lines(tx, row.id)?;
                let wanted: Vec<LineRequest> = held
                    .iter()
                    .map(|l| LineRequest {
                        album_id: l.album_id,
                        quantity: l.quantity,
                    })
                    .collect();
                take_all(tx, &wanted).map_err(|e| match e {
                    ReservationError::InsufficientStock { .. }
                    | ReservationError::UnknownAlbum { .. } => ReservationError::Expired,
                    other => other,
                })?;
                db::set_status(tx, row.id, Status::Confirmed)?;
            }
            OnConfirm::Refuse => return Err(ReservationError::Released),
        }
        let row = db::find(tx, key)?.ok_or(ReservationError::NotFound)?;
        Ok(db::load(tx, row)?)
    })
}

/// Releases the stock under `key`. Releasing a key nobody reserved leaves a tombstone, so a
/// reserve that arrives late (a retried or delayed request) cannot take stock afterwards.
pub fn release(
    conn: &mut PgConnection,
    key: &ReservationKey,
) -> Result<Reservation, ReservationError> {
    conn.transaction(|tx| {
        let row = match db::find_for_update(tx, key)? {
            Some(row) => row,
            None => {
                db::claim(tx, key, Status::Released, "", Utc::now())?;
                db::find_for_update(tx, key)?.ok_or(ReservationError::NotFound)?
            }
        };
        match domain::on_release(row.status()) {
            OnRelease::AlreadyDone => {}
            OnRelease::ReturnStock => {
                for line in db::lines(tx, row.id)? {
                    catalog::return_stock(tx, line.album_id, line.quantity)?;
                }
                db::set_status(tx, row.id, Status::Released)?;
            }
            OnRelease::Refuse => return Err(ReservationError::Confirmed),
        }
        let row = db::find(tx, key)?.ok_or(ReservationError::NotFound)?;
        Ok(db::load(tx, row)?)
    })
}

/// Expires every reservation past its time and puts its stock back; returns how many.
pub fn expire_due(conn: &mut PgConnection) -> Result<usize, ReservationError> {
    conn.transaction(|tx| {
        let ids = db::expire_due(tx)?;
        for id in &ids {
            for line in db::lines(tx, *id)? {
                catalog::return_stock(tx, line.album_id, line.quantity)?;
            }
        }
        Ok(ids.len())
    })
}

/// How many reservations hold stock right now.
pub fn count_held(conn: &mut PgConnection) -> Result<i64, ReservationError> {
    Ok(db::count_held(conn)?)
}
