//! Wishlist types. The wishlist stores which album and when; what an album is called and costs
//! belongs to the catalog and is joined in at read time, here in the application rather than in
//! SQL, because the catalog is another service now.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most albums one wishlist holds, equal to the catalog's batch limit: a wishlist read is always
/// exactly one catalog call.
pub const MAX_ITEMS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlbumId(pub i64);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount_cents: i64,
    pub currency: String,
}

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
    /// `None` when the catalog has no such album, or (when `degraded`) did not answer.
    pub album: Option<AlbumDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wishlist {
    pub customer_id: CustomerId,
    pub items: Vec<ItemView>,
    /// The catalog failed or timed out: the items are all there, their details are not.
    pub degraded: bool,
}

/// Joins stored items with the catalog's answer, keeping the items' order and every item.
pub fn join(
    customer_id: CustomerId,
    items: Vec<Item>,
    albums: Option<Vec<(AlbumId, AlbumDetails)>>,
) -> Wishlist {
    let degraded = albums.is_none();
    let mut by_id: HashMap<AlbumId, AlbumDetails> =
        albums.unwrap_or_default().into_iter().collect();
    Wishlist {
        customer_id,
        items: items
            .into_iter()
            .map(|item| ItemView {
                album: by_id.remove(&item.album_id),
                album_id: item.album_id,
                added_at: item.added_at,
            })
            .collect(),
        degraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(title: &str) -> AlbumDetails {
        AlbumDetails {
            title: title.into(),
            artist: "A".into(),
            price: Money {
                amount_cents: 1,
                currency: "USD".into(),
            },
            in_stock: true,
        }
    }

    fn items(ids: &[i64]) -> Vec<Item> {
        ids.iter()
            .map(|&id| Item {
                album_id: AlbumId(id),
                added_at: DateTime::UNIX_EPOCH,
            })
            .collect()
    }

    #[test]
    fn join_keeps_order_and_items_the_catalog_does_not_know() {
        let w = join(
            CustomerId(1),
            items(&[3, 9, 1]),
            Some(vec![
                (AlbumId(1), details("one")),
                (AlbumId(3), details("three")),
            ]),
        );
        let shown: Vec<Option<&str>> = w
            .items
            .iter()
            .map(|i| i.album.as_ref().map(|a| a.title.as_str()))
            .collect();
        assert_eq!(shown, [Some("three"), None, Some("one")]);
        assert!(!w.degraded);
    }

    #[test]
    fn without_a_catalog_answer_every_item_stays_and_the_list_is_marked() {
        let w = join(CustomerId(1), items(&[3, 9]), None);
        assert_eq!(w.items.len(), 2);
        assert!(w.items.iter().all(|i| i.album.is_none()));
        assert!(w.degraded);
    }
}
