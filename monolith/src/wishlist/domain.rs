//! Wishlist types. The album details shown on a wishlist belong to the catalog; the wishlist only
//! stores which album and when, and joins the details in at read time.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::catalog::{Album, AlbumId, Money};
use crate::customers::CustomerId;

/// Most albums one wishlist holds: a wishlist read asks the catalog for all its albums in one
/// batch, and a batch holds at most this many.
pub const MAX_ITEMS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub album_id: AlbumId,
    pub added_at: DateTime<Utc>,
}

/// What the wishlist shows of an album, live from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbumDetails {
    pub title: String,
    pub artist: String,
    pub price: Money,
    pub in_stock: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemView {
    pub album_id: AlbumId,
    pub added_at: DateTime<Utc>,
    /// `None` when the catalog has no such album (any more).
    pub album: Option<AlbumDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wishlist {
    pub customer_id: CustomerId,
    pub items: Vec<ItemView>,
}

impl From<&Album> for AlbumDetails {
    fn from(a: &Album) -> Self {
        AlbumDetails {
            title: a.title.clone(),
            artist: a.artist.name.clone(),
            price: a.price.clone(),
            in_stock: a.stock > 0,
        }
    }
}

/// Joins stored items with catalog albums, keeping the items' order and every item, even one
/// whose album the catalog no longer has.
pub fn join(customer_id: CustomerId, items: Vec<Item>, albums: &[Album]) -> Wishlist {
    let by_id: HashMap<AlbumId, &Album> = albums.iter().map(|a| (a.id, a)).collect();
    Wishlist {
        customer_id,
        items: items
            .into_iter()
            .map(|item| ItemView {
                album: by_id.get(&item.album_id).map(|a| AlbumDetails::from(*a)),
                album_id: item.album_id,
                added_at: item.added_at,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Artist, ArtistId};

    fn album(id: i64, stock: i32) -> Album {
        Album {
            id: AlbumId(id),
            sku: format!("S{id}"),
            title: format!("T{id}"),
            artist: Artist {
                id: ArtistId(1),
                name: "A".into(),
                country: None,
            },
            genre: "rock".into(),
            release_year: 2000,
            price: Money {
                amount_cents: 100,
                currency: "USD".into(),
            },
            stock,
            updated_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn join_keeps_order_and_items_without_albums() {
        let items = vec![
            Item {
                album_id: AlbumId(2),
                added_at: DateTime::UNIX_EPOCH,
            },
            Item {
                album_id: AlbumId(9),
                added_at: DateTime::UNIX_EPOCH,
            },
            Item {
                album_id: AlbumId(1),
                added_at: DateTime::UNIX_EPOCH,
            },
        ];
        let w = join(CustomerId(7), items, &[album(1, 0), album(2, 3)]);
        let ids: Vec<i64> = w.items.iter().map(|i| i.album_id.0).collect();
        assert_eq!(ids, [2, 9, 1]);
        assert_eq!(w.items[0].album.as_ref().map(|a| a.in_stock), Some(true));
        assert_eq!(w.items[1].album, None);
        assert_eq!(w.items[2].album.as_ref().map(|a| a.in_stock), Some(false));
    }
}
