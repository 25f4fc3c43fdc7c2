//! Catalog: artists and albums, prices and stock, moved out of the monolith with its module
//! layout intact. The HTTP contract is the monolith's (docs/api.md); the contract suite in
//! `tests/` holds both to it. `domain.rs`, `http.rs` and `error.rs` are the monolith's as they
//! are; `db.rs` and this file lose the seed's and the monolith's own helpers, and gain
//! [`return_stock`] for the reservations.

pub mod domain;
pub mod http;

mod db;
mod error;

use diesel::PgConnection;

pub use domain::{
    Album, AlbumChange, AlbumFilter, AlbumId, Artist, ArtistFilter, ArtistId, Money, NewAlbum,
    NewArtist, Page,
};
pub use error::CatalogError;

pub fn list_artists(
    conn: &mut PgConnection,
    filter: &ArtistFilter,
) -> Result<Page<Artist>, CatalogError> {
    Ok(db::list_artists(conn, filter)?)
}

pub fn get_artist(conn: &mut PgConnection, id: ArtistId) -> Result<Artist, CatalogError> {
    db::get_artist(conn, id)?.ok_or(CatalogError::NotFound("artist"))
}

pub fn create_artist(conn: &mut PgConnection, new: &NewArtist) -> Result<Artist, CatalogError> {
    Ok(db::insert_artist(conn, new)?)
}

pub fn list_albums(
    conn: &mut PgConnection,
    filter: &AlbumFilter,
) -> Result<Page<Album>, CatalogError> {
    Ok(db::list_albums(conn, filter)?)
}

pub fn get_album(conn: &mut PgConnection, id: AlbumId) -> Result<Album, CatalogError> {
    db::get_album(conn, id)?.ok_or(CatalogError::NotFound("album"))
}

pub fn albums_by_ids(conn: &mut PgConnection, ids: &[AlbumId]) -> Result<Vec<Album>, CatalogError> {
    Ok(db::albums_by_ids(conn, ids)?)
}

pub fn create_album(conn: &mut PgConnection, new: &NewAlbum) -> Result<Album, CatalogError> {
    let id = db::insert_album(conn, new)?;
    get_album(conn, id)
}

pub fn update_album(
    conn: &mut PgConnection,
    id: AlbumId,
    change: &AlbumChange,
) -> Result<Album, CatalogError> {
    if !db::update_album(conn, id, change)? {
        return Err(CatalogError::NotFound("album"));
    }
    get_album(conn, id)
}

/// What happened when a reservation asked for stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockTake {
    Taken { unit_price: Money },
    Insufficient { available: i32 },
    UnknownAlbum,
}

/// Takes `quantity` units inside the caller's transaction; callers take several albums in
/// ascending id order so concurrent reservations cannot deadlock.
pub fn take_stock(
    conn: &mut PgConnection,
    id: AlbumId,
    quantity: i32,
) -> Result<StockTake, CatalogError> {
    if let Some(unit_price) = db::take_stock(conn, id, quantity)? {
        return Ok(StockTake::Taken { unit_price });
    }
    Ok(match db::stock_of(conn, id)? {
        Some(available) => StockTake::Insufficient { available },
        None => StockTake::UnknownAlbum,
    })
}

/// Puts units back (a released or expired reservation).
pub fn return_stock(
    conn: &mut PgConnection,
    id: AlbumId,
    quantity: i32,
) -> Result<(), CatalogError> {
    db::return_stock(conn, id, quantity)?;
    Ok(())
}
