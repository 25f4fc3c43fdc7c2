//! Catalog endpoints: wire types, parsing into domain types, one call each.

use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::domain::{
    self, Album, AlbumChange, AlbumFilter, AlbumId, Artist, ArtistFilter, ArtistId, Money,
    NewAlbum, NewArtist, Page,
};
use super::error::CatalogError;
use platform::{ApiError, Db, JsonBody, QueryMap, path_id};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/catalog/artists")
            .route(web::get().to(list_artists))
            .route(web::post().to(create_artist)),
    )
    .service(web::resource("/catalog/artists/{artist_id}").route(web::get().to(get_artist)))
    .service(
        web::resource("/catalog/albums")
            .route(web::get().to(list_albums))
            .route(web::post().to(create_album)),
    )
    .service(web::resource("/catalog/albums/batch").route(web::get().to(batch_albums)))
    .service(
        web::resource("/catalog/albums/{album_id}")
            .route(web::get().to(get_album))
            .route(web::patch().to(update_album)),
    );
}

#[derive(Debug, Serialize)]
pub struct ArtistBody {
    pub id: i64,
    pub name: String,
    pub country: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ArtistRef {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct AlbumBody {
    pub id: i64,
    pub sku: String,
    pub title: String,
    pub artist: ArtistRef,
    pub genre: String,
    pub release_year: i32,
    pub price: Money,
    pub stock: i32,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct PageBody<T> {
    items: Vec<T>,
    /// Opaque to clients: pass it back as `cursor`.
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct BatchBody {
    items: Vec<AlbumBody>,
    missing: Vec<i64>,
}

impl From<Artist> for ArtistBody {
    fn from(a: Artist) -> Self {
        ArtistBody {
            id: a.id.0,
            name: a.name,
            country: a.country,
        }
    }
}

impl From<Album> for AlbumBody {
    fn from(a: Album) -> Self {
        AlbumBody {
            id: a.id.0,
            sku: a.sku,
            title: a.title,
            artist: ArtistRef {
                id: a.artist.id.0,
                name: a.artist.name,
            },
            genre: a.genre,
            release_year: a.release_year,
            price: a.price,
            stock: a.stock,
            updated_at: a.updated_at,
        }
    }
}

impl<T, B: From<T>> From<Page<T>> for PageBody<B> {
    fn from(p: Page<T>) -> Self {
        PageBody {
            items: p.items.into_iter().map(B::from).collect(),
            next_cursor: p.next_cursor.map(|c| c.to_string()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateArtist {
    name: String,
    #[serde(default)]
    country: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAlbum {
    sku: String,
    title: String,
    artist_id: i64,
    genre: String,
    release_year: i32,
    price: Money,
    stock: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateAlbum {
    #[serde(default)]
    price: Option<Money>,
    #[serde(default)]
    stock: Option<i32>,
}

impl CreateArtist {
    fn parse(self) -> Result<NewArtist, CatalogError> {
        Ok(NewArtist {
            name: domain::text("name", &self.name, 200)?,
            country: domain::validate_country(self.country)?,
        })
    }
}

impl CreateAlbum {
    fn parse(self) -> Result<NewAlbum, CatalogError> {
        Ok(NewAlbum {
            sku: domain::validate_sku(&self.sku)?,
            title: domain::text("title", &self.title, 200)?,
            artist_id: ArtistId(domain::validate_reference("artist_id", self.artist_id)?),
            genre: domain::text("genre", &self.genre, 50)?,
            release_year: domain::validate_release_year(self.release_year)?,
            price: domain::validate_money("price", self.price)?,
            stock: domain::validate_stock(self.stock)?,
        })
    }
}

fn page(q: &QueryMap) -> Result<domain::PageRequest, ApiError> {
    let after = q.parsed::<i64>("cursor", "a value returned as next_cursor")?;
    let limit = q.parsed::<u32>("limit", "an integer from 1 to 200")?;
    Ok(domain::validate_page(after, limit)?)
}

async fn list_artists(db: Db, q: QueryMap) -> Result<HttpResponse, ApiError> {
    let filter = ArtistFilter {
        text: q.text("q").map(str::to_string),
        page: page(&q)?,
    };
    let found = db.run(move |c| super::list_artists(c, &filter)).await?;
    Ok(HttpResponse::Ok().json(PageBody::<ArtistBody>::from(found)))
}

async fn get_artist(db: Db, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = ArtistId(path_id(&id, "artist")?);
    let artist = db.run(move |c| super::get_artist(c, id)).await?;
    Ok(HttpResponse::Ok().json(ArtistBody::from(artist)))
}

async fn create_artist(db: Db, body: JsonBody<CreateArtist>) -> Result<HttpResponse, ApiError> {
    let new = body.0.parse()?;
    let artist = db.run(move |c| super::create_artist(c, &new)).await?;
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, format!("/catalog/artists/{}", artist.id.0)))
        .json(ArtistBody::from(artist)))
}

async fn list_albums(db: Db, q: QueryMap) -> Result<HttpResponse, ApiError> {
    let filter = AlbumFilter {
        artist_id: q.parsed::<i64>("artist_id", "an artist id")?.map(ArtistId),
        genre: q.text("genre").map(str::to_string),
        text: q.text("q").map(str::to_string),
        page: page(&q)?,
    };
    let found = db.run(move |c| super::list_albums(c, &filter)).await?;
    Ok(HttpResponse::Ok().json(PageBody::<AlbumBody>::from(found)))
}

async fn batch_albums(db: Db, q: QueryMap) -> Result<HttpResponse, ApiError> {
    let ids = domain::parse_batch_ids(q.text("ids"))?;
    let wanted = ids.clone();
    let found = db.run(move |c| super::albums_by_ids(c, &wanted)).await?;
    Ok(HttpResponse::Ok().json(batch_body(&ids, found)))
}

/// Orders the found albums as requested and lists the ids that do not exist.
fn batch_body(ids: &[AlbumId], found: Vec<Album>) -> BatchBody {
    let mut by_id: std::collections::HashMap<AlbumId, Album> =
        found.into_iter().map(|a| (a.id, a)).collect();
    let mut body = BatchBody {
        items: Vec::with_capacity(ids.len()),
        missing: Vec::new(),
    };
    for id in ids {
        match by_id.remove(id) {
            Some(album) => body.items.push(album.into()),
            None => body.missing.push(id.0),
        }
    }
    body
}

async fn get_album(db: Db, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = AlbumId(path_id(&id, "album")?);
    let album = db.run(move |c| super::get_album(c, id)).await?;
    Ok(HttpResponse::Ok().json(AlbumBody::from(album)))
}

async fn create_album(db: Db, body: JsonBody<CreateAlbum>) -> Result<HttpResponse, ApiError> {
    let new = body.0.parse()?;
    let album = db.run(move |c| super::create_album(c, &new)).await?;
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, format!("/catalog/albums/{}", album.id.0)))
        .json(AlbumBody::from(album)))
}

async fn update_album(
    db: Db,
    id: web::Path<String>,
    body: JsonBody<UpdateAlbum>,
) -> Result<HttpResponse, ApiError> {
    let id = AlbumId(path_id(&id, "album")?);
    let change = domain::validate_change(AlbumChange {
        price: body.0.price,
        stock: body.0.stock,
    })?;
    let album = db.run(move |c| super::update_album(c, id, &change)).await?;
    Ok(HttpResponse::Ok().json(AlbumBody::from(album)))
}
