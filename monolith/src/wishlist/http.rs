//! Wishlist endpoints.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::domain::{AlbumDetails, ItemView, Wishlist};
use crate::catalog::{AlbumId, Money};
use crate::customers::CustomerId;
use platform::{ApiError, Db, QueryMap, path_id};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/wishlists/{customer_id}").route(web::get().to(get_wishlist)))
        .service(
            web::resource("/wishlists/{customer_id}/items/{album_id}")
                .route(web::put().to(add_item))
                .route(web::delete().to(remove_item)),
        );
}

#[derive(Debug, Serialize)]
struct WishlistBody {
    customer_id: i64,
    items: Vec<ItemBody>,
}

#[derive(Debug, Serialize)]
struct ItemBody {
    album_id: i64,
    added_at: DateTime<Utc>,
    album: Option<AlbumBody>,
}

#[derive(Debug, Serialize)]
struct AlbumBody {
    title: String,
    artist: String,
    price: Money,
    in_stock: bool,
}

impl From<AlbumDetails> for AlbumBody {
    fn from(a: AlbumDetails) -> Self {
        AlbumBody {
            title: a.title,
            artist: a.artist,
            price: a.price,
            in_stock: a.in_stock,
        }
    }
}

impl From<ItemView> for ItemBody {
    fn from(i: ItemView) -> Self {
        ItemBody {
            album_id: i.album_id.0,
            added_at: i.added_at,
            album: i.album.map(AlbumBody::from),
        }
    }
}

impl From<Wishlist> for WishlistBody {
    fn from(w: Wishlist) -> Self {
        WishlistBody {
            customer_id: w.customer_id.0,
            items: w.items.into_iter().map(ItemBody::from).collect(),
        }
    }
}

fn ids(path: &(String, String)) -> Result<(CustomerId, AlbumId), ApiError> {
    let customer = CustomerId(path_id(&path.0, "customer")?);
    let album = AlbumId(path_id(&path.1, "album")?);
    Ok((customer, album))
}

async fn get_wishlist(db: Db, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let customer = CustomerId(path_id(&id, "customer")?);
    let wishlist = db.run(move |c| super::get_wishlist(c, customer)).await?;
    Ok(HttpResponse::Ok().json(WishlistBody::from(wishlist)))
}

async fn add_item(db: Db, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (customer, album) = ids(&path)?;
    let (item, created) = db.run(move |c| super::add_item(c, customer, album)).await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(ItemBody::from(item)))
}

/// `?added_before=<RFC 3339>` limits the removal to items added at or before then.
fn added_before(q: &QueryMap) -> Result<Option<DateTime<Utc>>, ApiError> {
    q.parsed::<DateTime<Utc>>("added_before", "an RFC 3339 timestamp")
}

async fn remove_item(
    db: Db,
    path: web::Path<(String, String)>,
    q: QueryMap,
) -> Result<HttpResponse, ApiError> {
    let (customer, album) = ids(&path)?;
    let before = added_before(&q)?;
    db.run(move |c| super::remove_item(c, customer, album, before))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
