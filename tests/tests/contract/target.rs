//! Where a contract case sends its requests and creates its fixtures.

use e2e::{CatalogService, Client, Monolith, Stack, WriteMode};

/// One side of the contract, with everything it needs running.
pub struct Target {
    side: Side,
}

enum Side {
    /// Everything in the monolith.
    Monolith(Monolith),
    /// The catalog service alone, owning its writes.
    Catalog(CatalogService),
    /// The wishlist service, reading albums from a catalog service and customers from a monolith.
    Services(Box<Stack>),
}

impl Target {
    pub async fn monolith() -> Target {
        Target {
            side: Side::Monolith(Monolith::spawn().await),
        }
    }

    pub async fn catalog_service() -> Target {
        Target {
            side: Side::Catalog(CatalogService::spawn(WriteMode::Owner).await),
        }
    }

    pub async fn wishlist_service() -> Target {
        Target {
            side: Side::Services(Box::new(Stack::spawn().await)),
        }
    }

    /// Serves `/catalog/*`; artists and albums are created here.
    pub fn catalog(&self) -> Client {
        match &self.side {
            Side::Monolith(m) => m.client(),
            Side::Catalog(c) => c.client(),
            Side::Services(s) => s.catalog.client(),
        }
    }

    /// Serves `/customers/*`; customers are created here.
    #[track_caller]
    pub fn customers(&self) -> Client {
        match &self.side {
            Side::Monolith(m) => m.client(),
            Side::Services(s) => s.monolith.client(),
            Side::Catalog(_) => panic!("the catalog service target has no customers"),
        }
    }

    /// Serves `/wishlists/*`.
    #[track_caller]
    pub fn wishlist(&self) -> Client {
        match &self.side {
            Side::Monolith(m) => m.client(),
            Side::Services(s) => s.wishlist.client(),
            Side::Catalog(_) => panic!("the catalog service target has no wishlists"),
        }
    }

    /// `SELECT count(*) AS n ...` on the database holding `catalog.*`.
    pub fn count_catalog(&self, sql: &str) -> i64 {
        match &self.side {
            Side::Monolith(m) => m.count(sql),
            Side::Catalog(c) => c.count(sql),
            Side::Services(s) => s.catalog.count(sql),
        }
    }

    /// `SELECT count(*) AS n ...` on the database holding `wishlist.*`.
    #[track_caller]
    pub fn count_wishlist(&self, sql: &str) -> i64 {
        match &self.side {
            Side::Monolith(m) => m.count(sql),
            Side::Services(s) => s.wishlist.count(sql),
            Side::Catalog(_) => panic!("the catalog service target has no wishlists"),
        }
    }

    /// Puts a wishlist row straight into the database holding `wishlist.*` (the table has the
    /// same shape on both sides), for states the API cannot produce.
    #[track_caller]
    pub fn insert_wishlist_item(&self, customer: i64, album: i64) {
        let sql = format!(
            "INSERT INTO wishlist.items (customer_id, album_id) VALUES ({customer}, {album})"
        );
        match &self.side {
            Side::Monolith(m) => m.execute(&sql),
            Side::Services(s) => s.wishlist.execute(&sql),
            Side::Catalog(_) => panic!("the catalog service target has no wishlists"),
        };
    }
}
