//! Catalog tables and queries, moved from the monolith's catalog module. Private to this module:
//! reservations use the functions in `catalog/mod.rs`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::domain::{
    Album, AlbumChange, AlbumFilter, AlbumId, Artist, ArtistFilter, ArtistId, Money, NewAlbum,
    NewArtist, Page, like_pattern,
};
use super::error::CatalogError;

diesel::table! {
    catalog.artists (id) {
        id -> Int8,
        name -> Text,
        country -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    catalog.albums (id) {
        id -> Int8,
        sku -> Text,
        title -> Text,
        artist_id -> Int8,
        genre -> Text,
        release_year -> Int4,
        price_cents -> Int8,
        currency -> Text,
        stock -> Int4,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(albums -> artists (artist_id));
diesel::allow_tables_to_appear_in_same_query!(albums, artists);

#[derive(Queryable, Selectable)]
#[diesel(table_name = artists)]
struct ArtistRow {
    id: i64,
    name: String,
    country: Option<String>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = albums)]
struct AlbumRow {
    id: i64,
    sku: String,
    title: String,
    genre: String,
    release_year: i32,
    price_cents: i64,
    currency: String,
    stock: i32,
    updated_at: DateTime<Utc>,
}

impl From<ArtistRow> for Artist {
    fn from(r: ArtistRow) -> Self {
        Artist {
            id: ArtistId(r.id),
            name: r.name,
            country: r.country,
        }
    }
}

fn album((a, artist): (AlbumRow, ArtistRow)) -> Album {
    Album {
        id: AlbumId(a.id),
        sku: a.sku,
        title: a.title,
        artist: artist.into(),
        genre: a.genre,
        release_year: a.release_year,
        price: Money {
            amount_cents: a.price_cents,
            currency: a.currency,
        },
        stock: a.stock,
        updated_at: a.updated_at,
    }
}

pub fn list_artists(conn: &mut PgConnection, f: &ArtistFilter) -> QueryResult<Page<Artist>> {
    let mut q = artists::table
        .select(ArtistRow::as_select())
        .order(artists::id.asc())
        .limit(i64::from(f.page.limit) + 1)
        .into_boxed();
    if let Some(after) = f.page.after {
        q = q.filter(artists::id.gt(after));
    }
    if let Some(text) = &f.text {
        q = q.filter(artists::name.ilike(like_pattern(text)));
    }
    let rows: Vec<Artist> = q.load(conn)?.into_iter().map(Artist::from).collect();
    Ok(Page::from_overfetch(rows, f.page.limit, |a| a.id.0))
}

pub fn get_artist(conn: &mut PgConnection, id: ArtistId) -> QueryResult<Option<Artist>> {
    artists::table
        .find(id.0)
        .select(ArtistRow::as_select())
        .first(conn)
        .optional()
        .map(|r| r.map(Artist::from))
}

pub fn insert_artist(conn: &mut PgConnection, new: &NewArtist) -> QueryResult<Artist> {
    diesel::insert_into(artists::table)
        .values((
            artists::name.eq(&new.name),
            artists::country.eq(&new.country),
        ))
        .returning(ArtistRow::as_returning())
        .get_result(conn)
        .map(Artist::from)
}

pub fn list_albums(conn: &mut PgConnection, f: &AlbumFilter) -> QueryResult<Page<Album>> {
    let mut q = albums::table
        .inner_join(artists::table)
        .select((AlbumRow::as_select(), ArtistRow::as_select()))
        .order(albums::id.asc())
        .limit(i64::from(f.page.limit) + 1)
        .into_boxed();
    if let Some(after) = f.page.after {
        q = q.filter(albums::id.gt(after));
    }
    if let Some(artist) = f.artist_id {
        q = q.filter(albums::artist_id.eq(artist.0));
    }
    if let Some(genre) = &f.genre {
        q = q.filter(albums::genre.eq(genre.clone()));
    }
    if let Some(text) = &f.text {
        let pattern = like_pattern(text);
        q = q.filter(
            albums::title
                .ilike(pattern.clone())
                .or(artists::name.ilike(pattern)),
        );
    }
    let rows: Vec<Album> = q.load(conn)?.into_iter().map(album).collect();
    Ok(Page::from_overfetch(rows, f.page.limit, |a| a.id.0))
}

/// Albums with these ids, in one query, ordered by id; ids that do not exist are absent.
pub fn albums_by_ids(conn: &mut PgConnection, ids: &[AlbumId]) -> QueryResult<Vec<Album>> {
    let raw: Vec<i64> = ids.iter().map(|id| id.0).collect();
    albums::table
        .inner_join(artists::table)
        .filter(albums::id.eq_any(raw))
        .select((AlbumRow::as_select(), ArtistRow::as_select()))
        .order(albums::id.asc())
        .load(conn)
        .map(|rows| rows.into_iter().map(album).collect())
}

pub fn get_album(conn: &mut PgConnection, id: AlbumId) -> QueryResult<Option<Album>> {
    Ok(albums_by_ids(conn, &[id])?.into_iter().next())
}

#[derive(Insertable)]
#[diesel(table_name = albums)]
struct NewAlbumRow<'a> {
    sku: &'a str,
    title: &'a str,
    artist_id: i64,
    genre: &'a str,
    release_year: i32,
    price_cents: i64,
    currency: &'a str,
    stock: i32,
}

impl<'a> From<&'a NewAlbum> for NewAlbumRow<'a> {
    fn from(a: &'a NewAlbum) -> Self {
        NewAlbumRow {
            sku: &a.sku,
            title: &a.title,
            artist_id: a.artist_id.0,
            genre: &a.genre,
            release_year: a.release_year,
            price_cents: a.price.amount_cents,
            currency: &a.price.currency,
            stock: a.stock,
        }
    }
}

pub fn insert_album(conn: &mut PgConnection, new: &NewAlbum) -> Result<AlbumId, CatalogError> {
    diesel::insert_into(albums::table)
        .values(NewAlbumRow::from(new))
        .returning(albums::id)
        .get_result(conn)
        .map(AlbumId)
        .map_err(|e| match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                CatalogError::SkuTaken(new.sku.clone())
            }
            DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                CatalogError::UnknownArtist(new.artist_id)
            }
            other => other.into(),
        })
}

#[derive(AsChangeset)]
#[diesel(table_name = albums)]
struct AlbumChangeset {
    price_cents: Option<i64>,
    currency: Option<String>,
    stock: Option<i32>,
}

/// Applies `change`; returns whether the album exists.
pub fn update_album(
    conn: &mut PgConnection,
    id: AlbumId,
    change: &AlbumChange,
) -> QueryResult<bool> {
    let set = AlbumChangeset {
        price_cents: change.price.as_ref().map(|p| p.amount_cents),
        currency: change.price.as_ref().map(|p| p.currency.clone()),
        stock: change.stock,
    };
    diesel::update(albums::table.find(id.0))
        .set((set, albums::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .map(|n| n == 1)
}

/// Takes `quantity` units if that many are in stock; returns the unit price when it did.
/// The conditional UPDATE row-locks the album, so concurrent takers queue and never oversell.
pub fn take_stock(
    conn: &mut PgConnection,
    id: AlbumId,
    quantity: i32,
) -> QueryResult<Option<Money>> {
    diesel::update(albums::table.find(id.0).filter(albums::stock.ge(quantity)))
        .set((
            albums::stock.eq(albums::stock - quantity),
            albums::updated_at.eq(diesel::dsl::now),
        ))
        .returning((albums::price_cents, albums::currency))
        .get_result::<(i64, String)>(conn)
        .optional()
        .map(|r| {
            r.map(|(amount_cents, currency)| Money {
                amount_cents,
                currency,
            })
        })
}

pub fn return_stock(conn: &mut PgConnection, id: AlbumId, quantity: i32) -> QueryResult<usize> {
    diesel::update(albums::table.find(id.0))
        .set((
            albums::stock.eq(albums::stock + quantity),
            albums::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
}

pub fn stock_of(conn: &mut PgConnection, id: AlbumId) -> QueryResult<Option<i32>> {
    albums::table
        .find(id.0)
        .select(albums::stock)
        .first(conn)
        .optional()
}
