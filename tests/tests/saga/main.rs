//! Order placement once catalog and wishlist are services: the monolith takes stock through the
//! catalog service's reservations (a saga) and removes purchased albums through the wishlist
//! service (an outbox). Each test runs the real monolith and services on their own databases;
//! a gate in front of a service makes it fail or answer late on purpose.

mod gate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{CatalogService, Monolith, WishlistService, WriteMode, eventually};
use gate::{Gate, Mode};
use monolith::{Backend, Integrations};
use serde_json::json;

/// Remote calls from the monolith give up after this long.
const TIMEOUT: Duration = Duration::from_millis(800);
const PATIENCE: Duration = Duration::from_secs(30);

struct Saga {
    monolith: Monolith,
    catalog: CatalogService,
    wishlist: WishlistService,
    catalog_gate: Gate,
    wishlist_gate: Gate,
}

impl Saga {
    /// Catalog and wishlist services own their writes; the monolith reaches both through gates.
    async fn spawn() -> Saga {
        let catalog = CatalogService::spawn(WriteMode::Owner).await;
        let catalog_gate = Gate::open(&catalog.base);
        // The wishlist service checks customers at the monolith, and the monolith needs the
        // wishlist's URL first: hand it the gate's, and aim the gate once the service is up.
        let wishlist_gate = Gate::open(&e2e::closed_port_url());
        let monolith = Monolith::spawn_with(monolith::Options {
            workers: 2,
            integrations: Integrations {
                stock: Backend::Remote {
                    base_url: catalog_gate.base.clone(),
                },
                wishlist: Backend::Remote {
                    base_url: wishlist_gate.base.clone(),
                },
                timeout: TIMEOUT,
                outbox_poll: Duration::from_millis(100),
                ..Integrations::default()
            },
        })
        .await;
        let wishlist = WishlistService::spawn(
            WriteMode::Owner,
            &catalog.base,
            &monolith.base,
            Duration::from_secs(3),
        )
        .await;
        wishlist_gate.retarget(&wishlist.base);
        Saga {
            monolith,
            catalog,
            wishlist,
            catalog_gate,
            wishlist_gate,
        }
    }

    async fn customer(&self, email: &str) -> i64 {
        self.monolith.client().create_customer(email).await
    }

    async fn album(&self, sku: &str, stock: i32) -> i64 {
        self.catalog.client().album(sku, stock).await
    }

    async fn stock(&self, album: i64) -> i64 {
        self.catalog.client().stock(album).await
    }

    async fn wish(&self, customer: i64, album: i64) {
        self.wishlist
            .client()
            .put(&format!("/wishlists/{customer}/items/{album}"))
            .await
            .ok(201);
    }

    async fn wished(&self, customer: i64) -> usize {
        let list = self
            .wishlist
            .client()
            .get(&format!("/wishlists/{customer}"))
            .await;
        list.ok(200)["items"].as_array().unwrap().len()
    }

    async fn order(&self, customer: i64, album: i64, quantity: i32) -> e2e::Reply {
        self.monolith
            .client()
            .post("/orders", json!({"customer_id": customer, "lines": [{"album_id": album, "quantity": quantity}]}))
            .await
    }

    fn outbox(&self) -> i64 {
        self.monolith
            .count("SELECT count(*) AS n FROM orders.outbox")
    }

    fn orders(&self, status: &str) -> i64 {
        self.monolith.count(&format!(
            "SELECT count(*) AS n FROM orders.orders WHERE status = '{status}'"
        ))
    }

    fn reservations(&self, status: &str) -> i64 {
        self.catalog.count(&format!(
            "SELECT count(*) AS n FROM catalog.reservations WHERE status = '{status}'"
        ))
    }

    async fn outbox_drained(&self) {
        eventually(PATIENCE, "the outbox to drain", || async {
            (self.outbox() == 0).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_purchase_leaves_the_remote_wishlist_once_the_service_answers() {
    let s = Saga::spawn().await;
    let customer = s.customer("up@example.com").await;
    let (bought, kept) = (s.album("UP-1", 3).await, s.album("UP-2", 3).await);
    s.wish(customer, bought).await;
    s.wish(customer, kept).await;

    s.order(customer, bought, 1).await.ok(201);
    eventually(
        PATIENCE,
        "the bought album to leave the wishlist",
        || async { (s.wished(customer).await == 1).then_some(()) },
    )
    .await;
    s.outbox_drained().await;
    let left = s
        .wishlist
        .client()
        .get(&format!("/wishlists/{customer}"))
        .await;
    assert_eq!(left.body["items"][0]["album_id"], kept);
}

#[tokio::test]
async fn with_the_wishlist_service_down_orders_go_through_and_the_outbox_drains_later() {
    let s = Saga::spawn().await;
    let customer = s.customer("down@example.com").await;
    let album = s.album("DOWN-1", 3).await;
    s.wish(customer, album).await;

    s.wishlist_gate.set(Mode::Fail(String::new()));
    s.order(customer, album, 1).await.ok(201);
    // Delivery is being retried, and the item is still there.
    eventually(PATIENCE, "a failed delivery attempt", || async {
        (s.monolith
            .count("SELECT count(*) AS n FROM orders.outbox WHERE attempts >= 2")
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(s.wished(customer).await, 1);

    s.wishlist_gate.set(Mode::Pass);
    s.outbox_drained().await;
    assert_eq!(s.wished(customer).await, 0);
}

#[tokio::test]
async fn a_slow_wishlist_service_does_not_slow_order_placement() {
    let s = Saga::spawn().await;
    let customer = s.customer("slow@example.com").await;
    let album = s.album("SLOW-1", 3).await;
    s.wish(customer, album).await;

    // Slower than the monolith's timeout: every delivery attempt times out.
    s.wishlist_gate
        .set(Mode::AnswerLate("/wishlists/".into(), TIMEOUT * 3));
    let started = Instant::now();
    s.order(customer, album, 1).await.ok(201);
    assert!(
        started.elapsed() < TIMEOUT,
        "placement waited for the wishlist: {:?}",
        started.elapsed()
    );
    eventually(PATIENCE, "a timed-out delivery attempt", || async {
        (s.monolith
            .count("SELECT count(*) AS n FROM orders.outbox WHERE last_error IS NOT NULL")
            == 1)
            .then_some(())
    })
    .await;

    s.wishlist_gate.set(Mode::Pass);
    s.outbox_drained().await;
    assert_eq!(s.wished(customer).await, 0);
}

#[tokio::test]
async fn twenty_concurrent_saga_orders_for_the_last_five_units_sell_exactly_five() {
    let s = Arc::new(Saga::spawn().await);
    let album = s.album("LAST5", 5).await;
    let mut customers = Vec::new();
    for i in 0..20 {
        customers.push(s.customer(&format!("race{i}@example.com")).await);
    }
    let tasks: Vec<_> = customers
        .into_iter()
        .map(|customer| {
            let s = s.clone();
            tokio::spawn(async move { s.order(customer, album, 1).await })
        })
        .collect();
    let mut placed = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status.as_u16() {
            201 => placed += 1,
            _ => reply.assert_error(409, "insufficient_stock", Some("lines[0].quantity")),
        }
    }
    assert_eq!(placed, 5);
    assert_eq!(s.stock(album).await, 0);
    assert_eq!(s.orders("placed"), 5);
    assert_eq!(s.orders("pending"), 0);
    s.outbox_drained().await;
    assert_eq!(s.reservations("confirmed"), 5);
    assert_eq!(
        s.reservations("reserved"),
        0,
        "no reservation left holding stock"
    );
}

#[tokio::test]
async fn a_catalog_failing_between_reserve_and_confirm_loses_no_stock_and_no_order() {
    let s = Saga::spawn().await;
    let customer = s.customer("confirm@example.com").await;
    let album = s.album("CONFIRM-1", 10).await;

    s.catalog_gate.set(Mode::Fail("/confirm".into()));
    let order = s.order(customer, album, 3).await;
    let id = order.ok(201)["id"].as_i64().unwrap();
    // The order stands; its stock is held by the reservation, not lost and not sold twice.
    assert_eq!(s.stock(album).await, 7);
    assert_eq!(s.reservations("reserved"), 1);
    eventually(PATIENCE, "a failed confirm attempt", || async {
        (s.monolith
            .count("SELECT count(*) AS n FROM orders.outbox WHERE attempts >= 2")
            == 1)
            .then_some(())
    })
    .await;

    s.catalog_gate.set(Mode::Pass);
    s.outbox_drained().await;
    assert_eq!(s.reservations("confirmed"), 1);
    assert_eq!(s.stock(album).await, 7);
    s.monolith
        .client()
        .get(&format!("/orders/{id}"))
        .await
        .ok(200);
}

#[tokio::test]
async fn an_unreachable_catalog_places_nothing_and_holds_nothing() {
    let s = Saga::spawn().await;
    let customer = s.customer("unreachable@example.com").await;
    let album = s.album("UNREACH-1", 4).await;

    s.catalog_gate.set(Mode::Fail(String::new()));
    s.order(customer, album, 1)
        .await
        .assert_error(503, "dependency_unavailable", None);
    assert_eq!(
        s.monolith.count("SELECT count(*) AS n FROM orders.orders"),
        0,
        "no order, not even pending"
    );
    assert_eq!(s.outbox(), 1, "a release is owed for the unknown outcome");

    s.catalog_gate.set(Mode::Pass);
    s.outbox_drained().await;
    // The release left a tombstone: the key can never take stock later.
    assert_eq!(s.reservations("released"), 1);
    assert_eq!(s.stock(album).await, 4);
}

#[tokio::test]
async fn a_reservation_whose_answer_was_lost_is_released() {
    let s = Saga::spawn().await;
    let customer = s.customer("lost@example.com").await;
    let album = s.album("LOST-1", 4).await;

    // The catalog reserves, but its answer arrives after the monolith gave up.
    s.catalog_gate.set(Mode::AnswerLate(
        "/catalog/reservations/".into(),
        TIMEOUT * 2,
    ));
    s.order(customer, album, 2)
        .await
        .assert_error(503, "dependency_unavailable", None);
    s.catalog_gate.set(Mode::Pass);
    s.outbox_drained().await;
    assert_eq!(s.stock(album).await, 4, "the held stock came back");
    assert_eq!(s.reservations("reserved"), 0);
    assert_eq!(
        s.monolith.count("SELECT count(*) AS n FROM orders.orders"),
        0
    );
}

#[tokio::test]
async fn refusals_from_the_catalog_are_passed_on_and_leave_nothing_behind() {
    let s = Saga::spawn().await;
    let customer = s.customer("refused@example.com").await;
    let album = s.album("REFUSED-1", 1).await;
    s.order(customer, album, 2).await.assert_error(
        409,
        "insufficient_stock",
        Some("lines[0].quantity"),
    );
    s.order(customer, 999_999, 1).await.assert_error(
        422,
        "unknown_reference",
        Some("lines[0].album_id"),
    );
    s.order(999_999, album, 1)
        .await
        .assert_error(422, "unknown_reference", Some("customer_id"));
    assert_eq!(
        s.monolith.count("SELECT count(*) AS n FROM orders.orders"),
        0
    );
    assert_eq!(s.outbox(), 0);
    assert_eq!(s.stock(album).await, 1);
}

#[tokio::test]
async fn the_same_key_sent_concurrently_places_one_saga_order() {
    let s = Arc::new(Saga::spawn().await);
    let customer = s.customer("samekey@example.com").await;
    let album = s.album("SAMEKEY-1", 10).await;
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                s.monolith
                    .client()
                    .send(
                        reqwest::Method::POST,
                        "/orders",
                        Some(&json!({"customer_id": customer, "lines": [{"album_id": album, "quantity": 1}]})),
                        &[("Idempotency-Key", "saga-same-key")],
                    )
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().ok(201)["id"].as_i64().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(s.stock(album).await, 9);
    assert_eq!(
        s.monolith.count("SELECT count(*) AS n FROM orders.orders"),
        1
    );
}

/// Moves `capability`'s writes from the side at `from` to the side at `to` with the fence alone
/// (no router, no replication: what the flip does to the two databases).
fn hand_over(capability: &str, from: &str, to: &str) {
    use diesel::Connection;
    let mut old = diesel::PgConnection::establish(from).unwrap();
    let mut new = diesel::PgConnection::establish(to).unwrap();
    platform::fence::fence(&mut old, capability).unwrap();
    platform::fence::grant(&mut new, capability).unwrap();
}

#[tokio::test]
async fn orders_take_stock_where_the_fence_says_the_catalog_writes_are() {
    // Same catalog data on both sides (fresh databases draw the same ids); no replication, so
    // each side's stock shows which one an order took from.
    let catalog = CatalogService::spawn(WriteMode::Owner).await;
    let monolith = Monolith::spawn_with(monolith::Options {
        workers: 2,
        integrations: Integrations {
            stock: Backend::Movable {
                base_url: catalog.base.clone(),
            },
            timeout: TIMEOUT,
            outbox_poll: Duration::from_millis(100),
            ..Integrations::default()
        },
    })
    .await;
    let album = catalog.client().album("FENCE-1", 10).await;
    assert_eq!(monolith.client().album("FENCE-1", 10).await, album);
    let customer = monolith.client().create_customer("fence@example.com").await;
    let (monolith_db, catalog_db) = (monolith.db.url().to_string(), catalog.db.url().to_string());
    // The service started as the owner: the monolith starts owning too (first start), so the
    // service is fenced first, as a flip would leave it.
    {
        use diesel::Connection;
        let mut service = diesel::PgConnection::establish(&catalog_db).unwrap();
        platform::fence::fence(&mut service, "catalog").unwrap();
    }
    let order = || async {
        monolith
            .client()
            .post(
                "/orders",
                json!({"customer_id": customer, "lines": [{"album_id": album, "quantity": 1}]}),
            )
            .await
    };
    let stocks = || async {
        (
            monolith.client().stock(album).await,
            catalog.client().stock(album).await,
        )
    };
    let new_artist = json!({"name": "Direct"});

    order().await.ok(201);
    assert_eq!(
        stocks().await,
        (9, 10),
        "the monolith's module took the stock"
    );
    catalog
        .client()
        .post("/catalog/artists", new_artist.clone())
        .await
        .assert_error(503, "not_write_owner", None);

    hand_over("catalog", &monolith_db, &catalog_db);
    order().await.ok(201);
    assert_eq!(
        stocks().await,
        (9, 9),
        "the catalog service took it, through the saga"
    );
    monolith
        .client()
        .post("/catalog/artists", new_artist.clone())
        .await
        .assert_error(503, "not_write_owner", None);
    catalog
        .client()
        .post("/catalog/artists", new_artist.clone())
        .await
        .ok(201);

    hand_over("catalog", &catalog_db, &monolith_db);
    order().await.ok(201);
    assert_eq!(stocks().await, (8, 9), "back to the monolith's module");
    monolith
        .client()
        .post("/catalog/artists", new_artist)
        .await
        .ok(201);
}
