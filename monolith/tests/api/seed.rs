use diesel::{Connection, PgConnection, RunQueryDsl};
use localpg::TestDb;
use monolith::seed::{SeedError, SeedSize, seed, seed_with_progress};

/// A digest of every seeded row except the timestamps the database stamps with now().
fn fingerprint(conn: &mut PgConnection) -> String {
    #[derive(diesel::QueryableByName)]
    struct Digest {
        #[diesel(sql_type = diesel::sql_types::Text)]
        digest: String,
    }
    diesel::sql_query(
        "SELECT md5(concat_ws('|',
            (SELECT string_agg(concat_ws(',', id, name, country), ';' ORDER BY id) FROM catalog.artists),
            (SELECT string_agg(concat_ws(',', id, sku, title, artist_id, genre, release_year, price_cents, currency, stock), ';' ORDER BY id) FROM catalog.albums),
            (SELECT string_agg(concat_ws(',', id, name, email), ';' ORDER BY id) FROM customers.customers),
            (SELECT string_agg(concat_ws(',', customer_id, album_id), ';' ORDER BY customer_id, album_id) FROM wishlist.items),
            (SELECT string_agg(concat_ws(',', id, customer_id, total_cents, placed_at), ';' ORDER BY id) FROM orders.orders),
            (SELECT string_agg(concat_ws(',', order_id, line_no, album_id, quantity, unit_price_cents), ';' ORDER BY order_id, line_no) FROM orders.order_lines)
        )) AS digest",
    )
    .get_result::<Digest>(conn)
    .unwrap()
    .digest
}

#[test]
fn seeding_is_deterministic_sized_and_refuses_a_seeded_database() {
    let size = SeedSize::scaled(0.05);
    let a = TestDb::new("monolith", monolith::MIGRATIONS);
    let b = TestDb::new("monolith", monolith::MIGRATIONS);
    let mut ca = PgConnection::establish(a.url()).unwrap();
    let mut cb = PgConnection::establish(b.url()).unwrap();

    let report = seed(&mut ca, size).unwrap();
    assert_eq!(
        (
            report.artists,
            report.albums,
            report.customers,
            report.orders
        ),
        (10, 100, 50, 250)
    );
    assert!(report.wishlist_items > 0);
    let mut reports = Vec::new();
    seed_with_progress(&mut cb, size, &mut |done, total| {
        reports.push((done, total))
    })
    .unwrap();
    assert_eq!(fingerprint(&mut ca), fingerprint(&mut cb));
    // Progress climbs to the whole (10 + 100 + 50 + 250 rows), never past it.
    assert_eq!(reports.last(), Some(&(410, 410)), "{reports:?}");
    assert!(reports.windows(2).all(|w| w[0].0 < w[1].0), "{reports:?}");
    assert!(reports.len() >= 4, "{reports:?}");
    // Analyzed: the planner knows the sizes at once.
    #[derive(diesel::QueryableByName)]
    struct Estimate {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        rows: i64,
    }
    let albums = diesel::sql_query(
        "SELECT reltuples::bigint AS rows FROM pg_class WHERE oid = 'catalog.albums'::regclass",
    )
    .get_result::<Estimate>(&mut cb)
    .unwrap();
    assert_eq!(albums.rows, 100);

    assert!(matches!(seed(&mut ca, size), Err(SeedError::NotEmpty)));
}
