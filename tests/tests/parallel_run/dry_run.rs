//! `X-Fig-Dry-Run: 1` on every write endpoint: nothing commits, and the answer is the real one.

use std::time::Duration;

use e2e::{
    CatalogService, DbState, Monolith, Stack, WishlistService, WriteMode, closed_port_url,
    eventually,
};
use monolith::{Backend, Integrations};
use platform::parallel_run::DRY_RUN;
use reqwest::Method;
use serde_json::json;

use crate::{Case, assert_same_answer, dry_then_real};

const PATIENCE: Duration = Duration::from_secs(30);

fn album(sku: &str, artist: i64) -> serde_json::Value {
    json!({
        "sku": sku, "title": format!("Title {sku}"), "artist_id": artist, "genre": "rock",
        "release_year": 2001, "price": {"amount_cents": 1500, "currency": "USD"}, "stock": 4
    })
}

fn order(customer: i64, lines: &[(i64, i32)]) -> serde_json::Value {
    let lines: Vec<_> = lines
        .iter()
        .map(|(a, q)| json!({"album_id": a, "quantity": q}))
        .collect();
    json!({"customer_id": customer, "lines": lines})
}

#[tokio::test]
async fn every_write_of_the_monolith_can_be_tried_without_committing() {
    let m = Monolith::spawn().await;
    let api = m.client();
    let customer = api.create_customer("dry@example.com").await;
    let artist = api.create_artist("Dry Artist").await;
    let plenty = api.create_album(artist, "DRY-1", "Plenty", "rock", 5).await;
    let scarce = api.create_album(artist, "DRY-2", "Scarce", "rock", 1).await;
    let item = |c: i64, a: i64| format!("/wishlists/{c}/items/{a}");
    let cases = [
        Case::new("new artist", Method::POST, "/catalog/artists", 201)
            .body(json!({"name": "Another", "country": "SE"}))
            .fresh(),
        Case::new("new album", Method::POST, "/catalog/albums", 201)
            .body(album("DRY-3", artist))
            .fresh(),
        Case::new("sku taken", Method::POST, "/catalog/albums", 409).body(album("DRY-1", artist)),
        Case::new("unknown artist", Method::POST, "/catalog/albums", 422)
            .body(album("DRY-4", 987_654)),
        Case::new(
            "price and stock",
            Method::PATCH,
            format!("/catalog/albums/{plenty}"),
            200,
        )
        .body(json!({"price": {"amount_cents": 1999, "currency": "USD"}, "stock": 6}))
        .changes(),
        Case::new(
            "unknown album",
            Method::PATCH,
            "/catalog/albums/987654",
            404,
        )
        .body(json!({"stock": 1})),
        Case::new("new customer", Method::POST, "/customers", 201)
            .body(json!({"name": "Other", "email": "other@example.com"}))
            .fresh(),
        Case::new("email taken", Method::POST, "/customers", 409)
            .body(json!({"name": "Again", "email": "dry@example.com"})),
        Case::new("wish", Method::PUT, item(customer, plenty), 201).changes(),
        Case::new("wish again", Method::PUT, item(customer, plenty), 200),
        Case::new(
            "wish for nothing",
            Method::PUT,
            item(customer, 987_654),
            404,
        ),
        Case::new("wish of nobody", Method::PUT, item(987_654, plenty), 404),
        Case::new("unwish", Method::DELETE, item(customer, plenty), 204).changes(),
        Case::new("wish back", Method::PUT, item(customer, scarce), 201).changes(),
        // Takes stock, records the order and its key, and clears the wishlist, all rolled back.
        Case::new("order", Method::POST, "/orders", 201)
            .body(order(customer, &[(scarce, 1), (plenty, 2)]))
            .header("Idempotency-Key", "dry-order-1")
            .fresh(),
        Case::new("replayed order", Method::POST, "/orders", 201)
            .body(order(customer, &[(scarce, 1), (plenty, 2)]))
            .header("Idempotency-Key", "dry-order-1"),
        Case::new("key reused", Method::POST, "/orders", 422)
            .body(order(customer, &[(plenty, 1)]))
            .header("Idempotency-Key", "dry-order-1"),
        Case::new("sold out", Method::POST, "/orders", 409).body(order(customer, &[(scarce, 1)])),
        Case::new("unknown customer", Method::POST, "/orders", 422)
            .body(order(987_654, &[(plenty, 1)])),
        Case::new("order without key", Method::POST, "/orders", 201)
            .body(order(customer, &[(plenty, 1)]))
            .fresh(),
    ];
    for case in &cases {
        dry_then_real(&api, &|| vec![m.state()], case).await;
    }
    // The replay answered the real order, in both.
    assert_eq!(
        m.count("SELECT count(*) AS n FROM orders.orders"),
        2,
        "the two real orders, and only those"
    );
}

/// The catalog and wishlist services own their writes; the monolith reserves stock at the
/// catalog service (saga) and removes wishlist items through its outbox.
struct Saga {
    monolith: Monolith,
    catalog: CatalogService,
    wishlist: WishlistService,
}

impl Saga {
    async fn spawn() -> Saga {
        let catalog = CatalogService::spawn(WriteMode::Owner).await;
        // Items go straight into its database; its removals skip a customer check that fails.
        let wishlist = WishlistService::spawn(
            WriteMode::Owner,
            &catalog.base,
            &closed_port_url(),
            Duration::from_secs(3),
        )
        .await;
        let monolith = Monolith::spawn_with(monolith::Options {
            workers: 2,
            integrations: Integrations {
                stock: Backend::Remote {
                    base_url: catalog.base.clone(),
                },
                wishlist: Backend::Remote {
                    base_url: wishlist.base.clone(),
                },
                timeout: Duration::from_secs(3),
                outbox_poll: Duration::from_millis(100),
                ..Integrations::default()
            },
        })
        .await;
        Saga {
            monolith,
            catalog,
            wishlist,
        }
    }

    fn states(&self) -> Vec<DbState> {
        vec![
            self.monolith.state(),
            self.catalog.state(),
            self.wishlist.state(),
        ]
    }

    /// Waits until the outbox has delivered what the last real order owes, so that the next
    /// dry run starts from databases nobody is changing.
    async fn settled(&self) {
        eventually(PATIENCE, "the outbox to drain", || async {
            let left = self
                .monolith
                .count("SELECT count(*) AS n FROM orders.outbox");
            (left == 0).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn saga_orders_are_tried_with_a_dry_run_reservation_and_owe_nothing() {
    let s = Saga::spawn().await;
    let api = s.monolith.client();
    let customer = api.create_customer("saga@example.com").await;
    let catalog = s.catalog.client();
    let (plenty, scarce) = (
        catalog.album("SG-1", 5).await,
        catalog.album("SG-2", 1).await,
    );
    s.wishlist.insert_item(customer, plenty);
    let cases = [
        // Reserved (dry) at the catalog, whose prices the answer shows; no pending order, no
        // reservation, no confirm or wishlist removal owed.
        Case::new("order", Method::POST, "/orders", 201)
            .body(order(customer, &[(plenty, 2), (scarce, 1)]))
            .header("Idempotency-Key", "saga-1")
            .fresh(),
        Case::new("replayed order", Method::POST, "/orders", 201)
            .body(order(customer, &[(plenty, 2), (scarce, 1)]))
            .header("Idempotency-Key", "saga-1"),
        Case::new("key reused", Method::POST, "/orders", 422)
            .body(order(customer, &[(plenty, 1)]))
            .header("Idempotency-Key", "saga-1"),
        // The catalog's refusals, passed on as in a real order.
        Case::new("sold out", Method::POST, "/orders", 409).body(order(customer, &[(scarce, 1)])),
        Case::new("unknown album", Method::POST, "/orders", 422)
            .body(order(customer, &[(987_654, 1)])),
        Case::new("unknown customer", Method::POST, "/orders", 422)
            .body(order(987_654, &[(plenty, 1)])),
        Case::new("order without key", Method::POST, "/orders", 201)
            .body(order(customer, &[(plenty, 1)]))
            .fresh(),
    ];
    for case in &cases {
        let (dry, _) = dry_then_real(&api, &|| s.states(), case).await;
        if case.what == "order" {
            // The unit prices come from the catalog's (dry-run) reservation: the monolith's own
            // database has no album at all.
            assert_eq!(dry.body["total"]["amount_cents"], 3000, "{}", dry.body);
            assert_eq!(
                s.monolith.count("SELECT count(*) AS n FROM catalog.albums"),
                0
            );
        }
        s.settled().await;
    }
    assert_eq!(
        s.catalog
            .count("SELECT count(*) AS n FROM catalog.reservations WHERE status = 'confirmed'"),
        2,
        "the two real orders' reservations, confirmed by the outbox, and only those"
    );
    assert_eq!(
        s.wishlist.count("SELECT count(*) AS n FROM wishlist.items"),
        0,
        "the real order removed the item"
    );
}

#[tokio::test]
async fn a_dry_run_saga_order_owes_no_release_when_the_catalog_is_unreachable() {
    let m = Monolith::spawn_with(monolith::Options {
        workers: 2,
        integrations: Integrations {
            stock: Backend::Remote {
                base_url: closed_port_url(),
            },
            timeout: Duration::from_millis(500),
            ..Integrations::default()
        },
    })
    .await;
    let api = m.client();
    let customer = api.create_customer("down@example.com").await;
    // A real order gives up and owes a release (which changes the outbox); a dry one owes nothing.
    let case = Case::new("catalog down", Method::POST, "/orders", 503)
        .body(order(customer, &[(1, 1)]))
        .changes();
    let (dry, _) = dry_then_real(&api, &|| vec![m.state()], &case).await;
    dry.assert_error(503, "dependency_unavailable", None);
    assert_eq!(
        m.count("SELECT count(*) AS n FROM orders.outbox WHERE kind = 'stock.release'"),
        1,
        "the real order's release, and only that one"
    );
}

#[tokio::test]
async fn every_write_of_the_catalog_service_can_be_tried_without_committing() {
    let c = CatalogService::spawn(WriteMode::Owner).await;
    let api = c.client();
    let artist = api.create_artist("Service Artist").await;
    let plenty = api.create_album(artist, "CS-1", "Plenty", "rock", 5).await;
    let scarce = api.create_album(artist, "CS-2", "Scarce", "rock", 1).await;
    let reserve = |key: &str| format!("/catalog/reservations/{key}");
    let lines = |l: &[(i64, i32)]| {
        let lines: Vec<_> = l
            .iter()
            .map(|(a, q)| json!({"album_id": a, "quantity": q}))
            .collect();
        json!({"lines": lines})
    };
    let cases = [
        Case::new("new artist", Method::POST, "/catalog/artists", 201)
            .body(json!({"name": "Another"}))
            .fresh(),
        Case::new("new album", Method::POST, "/catalog/albums", 201)
            .body(album("CS-3", artist))
            .fresh(),
        Case::new("sku taken", Method::POST, "/catalog/albums", 409).body(album("CS-1", artist)),
        Case::new("unknown artist", Method::POST, "/catalog/albums", 422)
            .body(album("CS-4", 987_654)),
        Case::new(
            "stock",
            Method::PATCH,
            format!("/catalog/albums/{plenty}"),
            200,
        )
        .body(json!({"stock": 7}))
        .changes(),
        Case::new(
            "unknown album",
            Method::PATCH,
            "/catalog/albums/987654",
            404,
        )
        .body(json!({"price": {"amount_cents": 1, "currency": "USD"}})),
        Case::new("reserve", Method::PUT, reserve("k-1"), 201)
            .body(lines(&[(plenty, 2), (scarce, 1)]))
            .changes(),
        Case::new("reserve again", Method::PUT, reserve("k-1"), 200)
            .body(lines(&[(plenty, 2), (scarce, 1)])),
        Case::new("key reused", Method::PUT, reserve("k-1"), 422).body(lines(&[(plenty, 1)])),
        Case::new("sold out", Method::PUT, reserve("k-2"), 409).body(lines(&[(scarce, 1)])),
        Case::new("confirm", Method::POST, reserve("k-1") + "/confirm", 200).changes(),
        Case::new(
            "confirm again",
            Method::POST,
            reserve("k-1") + "/confirm",
            200,
        ),
        Case::new(
            "release confirmed",
            Method::POST,
            reserve("k-1") + "/release",
            409,
        ),
        Case::new("reserve more", Method::PUT, reserve("k-3"), 201)
            .body(lines(&[(plenty, 1)]))
            .changes(),
        Case::new("release", Method::POST, reserve("k-3") + "/release", 200).changes(),
        // A tombstone.
        Case::new(
            "release unknown",
            Method::POST,
            reserve("k-4") + "/release",
            200,
        )
        .changes(),
        Case::new(
            "confirm unknown",
            Method::POST,
            reserve("k-5") + "/confirm",
            404,
        ),
    ];
    for case in &cases {
        dry_then_real(&api, &|| vec![c.state()], case).await;
    }
}

#[tokio::test]
async fn every_write_of_the_wishlist_service_can_be_tried_without_committing() {
    let s = Stack::spawn().await;
    let customer = s.monolith.client().create_customer("wl@example.com").await;
    let album = s.catalog.client().album("WL-1", 3).await;
    let api = s.wishlist.client();
    let item = |c: i64, a: i64| format!("/wishlists/{c}/items/{a}");
    let cases = [
        Case::new("wish", Method::PUT, item(customer, album), 201).changes(),
        Case::new("wish again", Method::PUT, item(customer, album), 200),
        Case::new(
            "wish for nothing",
            Method::PUT,
            item(customer, 987_654),
            404,
        ),
        Case::new("wish of nobody", Method::PUT, item(987_654, album), 404),
        Case::new(
            "unwish, too early",
            Method::DELETE,
            item(customer, album) + "?added_before=2001-01-01T00:00:00Z",
            204,
        ),
        Case::new("unwish", Method::DELETE, item(customer, album), 204).changes(),
        Case::new("unwish again", Method::DELETE, item(customer, album), 204),
    ];
    let states = || vec![s.wishlist.state(), s.catalog.state(), s.monolith.state()];
    for case in &cases {
        dry_then_real(&api, &states, case).await;
    }
}

/// Rows as replication would leave them, through SQL: ids from the sequences (as the source's
/// would be), fixed timestamps, so that two databases given them are identical.
fn catalog_fixture(c: &CatalogService) {
    c.execute(
        "INSERT INTO catalog.artists (name, country, created_at) \
         VALUES ('Fed', 'GB', '2020-01-01T00:00:00Z')",
    );
    c.execute(
        "INSERT INTO catalog.albums (sku, title, artist_id, genre, release_year, price_cents, \
         currency, stock, updated_at) VALUES \
         ('FED-1', 'Fed One', 1, 'rock', 2000, 1000, 'USD', 5, '2020-01-01T00:00:00Z'), \
         ('FED-2', 'Fed Two', 1, 'jazz', 2001, 2000, 'USD', 1, '2020-01-01T00:00:00Z')",
    );
    for key in ["held", "held-too"] {
        c.execute(&format!(
            "WITH r AS (INSERT INTO catalog.reservations \
             (key, status, request, expires_at, created_at, updated_at) \
             VALUES ('{key}', 'reserved', '[{{\"album_id\":1,\"quantity\":2}}]', \
             '2100-01-01T00:00:00Z', '2020-01-01T00:00:00Z', '2020-01-01T00:00:00Z') \
             RETURNING id) \
             INSERT INTO catalog.reservation_lines \
             (reservation_id, line_no, album_id, quantity, unit_price_cents, currency) \
             SELECT id, 0, 1, 2, 1000, 'USD' FROM r"
        ));
    }
}

#[tokio::test]
async fn a_replica_serves_dry_runs_as_its_owner_answers_real_ones_and_refuses_real_writes() {
    // Two catalog services on identical data: each case is a dry run on the replica and a real
    // request on the owner. No case depends on another's real write.
    let (replica, owner) = tokio::join!(
        CatalogService::spawn(WriteMode::Replica),
        CatalogService::spawn(WriteMode::Owner)
    );
    catalog_fixture(&replica);
    catalog_fixture(&owner);
    assert_eq!(replica.state().tables, owner.state().tables);
    let reservation = json!({"lines": [{"album_id": 2, "quantity": 1}]});
    let cases = [
        Case::new("new artist", Method::POST, "/catalog/artists", 201)
            .body(json!({"name": "New"}))
            .fresh(),
        Case::new("new album", Method::POST, "/catalog/albums", 201)
            .body(album("FED-3", 1))
            .fresh(),
        Case::new("sku taken", Method::POST, "/catalog/albums", 409).body(album("FED-1", 1)),
        Case::new("stock", Method::PATCH, "/catalog/albums/1", 200).body(json!({"stock": 9})),
        // Before the owner's real reserve takes the last unit: the message says what is left.
        Case::new("sold out", Method::PUT, "/catalog/reservations/more", 409)
            .body(json!({"lines": [{"album_id": 2, "quantity": 2}]})),
        Case::new("reserve", Method::PUT, "/catalog/reservations/new", 201).body(reservation),
        Case::new(
            "confirm",
            Method::POST,
            "/catalog/reservations/held/confirm",
            200,
        ),
        Case::new(
            "release",
            Method::POST,
            "/catalog/reservations/held-too/release",
            200,
        ),
        Case::new(
            "release unknown",
            Method::POST,
            "/catalog/reservations/x/release",
            200,
        ),
    ];
    for case in &cases {
        let before = replica.state();
        let dry = case.send(&replica.client(), true).await;
        assert_eq!(
            before.tables,
            replica.state().tables,
            "{}: the dry run changed the replica",
            case.what
        );
        let refused = case.send(&replica.client(), false).await;
        refused.assert_error(503, "not_write_owner", None);
        let real = case.send(&owner.client(), false).await;
        assert_same_answer(case, &dry, &real);
        assert_eq!(
            before.tables,
            replica.state().tables,
            "{}: the refused write changed the replica",
            case.what
        );
    }
    assert_ne!(
        replica.state().tables,
        owner.state().tables,
        "the owner's real writes changed it; the replica's dry runs did not"
    );

    // The same for the wishlist service, against one catalog service and one monolith.
    let upstreams = Stack::spawn().await;
    let customer = upstreams
        .monolith
        .client()
        .create_customer("r@example.com")
        .await;
    let (kept, gone) = (
        upstreams.catalog.client().album("WR-1", 1).await,
        upstreams.catalog.client().album("WR-2", 1).await,
    );
    let spawn = |mode| {
        WishlistService::spawn(
            mode,
            &upstreams.catalog.base,
            &upstreams.monolith.base,
            e2e::STACK_UPSTREAM_TIMEOUT,
        )
    };
    let (replica, owner) = tokio::join!(spawn(WriteMode::Replica), spawn(WriteMode::Owner));
    for w in [&replica, &owner] {
        w.execute(&format!(
            "INSERT INTO wishlist.items (customer_id, album_id, added_at) \
             VALUES ({customer}, {gone}, '2020-01-01T00:00:00Z')"
        ));
    }
    let cases = [
        Case::new(
            "wish",
            Method::PUT,
            format!("/wishlists/{customer}/items/{kept}"),
            201,
        ),
        Case::new(
            "wish for nothing",
            Method::PUT,
            format!("/wishlists/{customer}/items/987654"),
            404,
        ),
        Case::new(
            "unwish",
            Method::DELETE,
            format!("/wishlists/{customer}/items/{gone}"),
            204,
        ),
    ];
    for case in &cases {
        let before = replica.state();
        let dry = case.send(&replica.client(), true).await;
        let refused = case.send(&replica.client(), false).await;
        // The fence is in the write's transaction: a write the service turns down before it
        // gets there (an album the catalog does not have) is refused for that, as on the owner.
        if case.status >= 400 && refused.status.as_u16() == case.status {
            assert_same_answer(case, &dry, &refused);
        } else {
            refused.assert_error(503, "not_write_owner", None);
        }
        assert_eq!(before.tables, replica.state().tables, "{}", case.what);
        let real = case.send(&owner.client(), false).await;
        assert_same_answer(case, &dry, &real);
    }
}

#[tokio::test]
async fn a_dry_run_header_other_than_1_or_true_is_refused_before_anything_runs() {
    let m = Monolith::spawn().await;
    let replica = CatalogService::spawn(WriteMode::Replica).await;
    let customer = json!({"name": "Typo", "email": "typo@example.com"});
    for (client, path, state) in [
        (
            m.client(),
            "/customers",
            Box::new(|| m.state()) as Box<dyn Fn() -> DbState>,
        ),
        (
            replica.client(),
            "/catalog/artists",
            Box::new(|| replica.state()),
        ),
    ] {
        let before = state();
        for value in ["0", "false", "yes", "2"] {
            let reply = client
                .send(Method::POST, path, Some(&customer), &[(DRY_RUN, value)])
                .await;
            // 400, not the replica's 503 or the body's 422: the header is read first.
            reply.assert_error(400, "bad_header", Some(DRY_RUN));
            // Reads too: a caller that meant a dry run learns of its typo at once.
            client
                .send(Method::GET, "/healthz", None, &[(DRY_RUN, value)])
                .await
                .assert_error(400, "bad_header", Some(DRY_RUN));
        }
        // A second field that says no spoils the first.
        let mixed = client
            .send(
                Method::POST,
                path,
                Some(&customer),
                &[(DRY_RUN, "1"), (DRY_RUN, "0")],
            )
            .await;
        mixed.assert_error(400, "bad_header", Some(DRY_RUN));
        assert_eq!(before.tables, state().tables, "{path}");
    }
    // `true` is as good as `1`, and a proxy adding its own `1` to a client's changes nothing.
    let before = m.state();
    for headers in [
        vec![(DRY_RUN, "true")],
        vec![(DRY_RUN, "1"), (DRY_RUN, "1")],
        vec![(DRY_RUN, "TRUE, 1")],
    ] {
        m.client()
            .send(Method::POST, "/customers", Some(&customer), &headers)
            .await
            .ok(201);
    }
    assert_eq!(before.tables, m.state().tables);
}
