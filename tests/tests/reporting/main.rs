//! The reporting database's aggregates (`migrations/reporting`) against a recomputation from the
//! raw tables: a seeded workload writes the raw tables as the replication engine does (one
//! transaction per source transaction, `session_replication_role = replica`, a cascade as the
//! parent's delete and then its children's), and after every few transactions each
//! `reporting_v1` relation must equal the same figures computed from scratch.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use localpg::TestDb;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/reporting");

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// Each relation of `reporting_v1`, and the same figures from the raw tables.
const CHECKS: [(&str, &str); 4] = [
    (
        "SELECT artist_id, artist_name, day, currency, units, revenue_cents \
         FROM reporting_v1.sales_by_artist_day",
        "SELECT al.artist_id, a.name, (o.placed_at AT TIME ZONE 'UTC')::date, o.currency, \
                sum(l.quantity)::bigint, sum(l.quantity * l.unit_price_cents)::bigint \
           FROM raw_orders.orders o JOIN raw_orders.order_lines l ON l.order_id = o.id \
           LEFT JOIN raw_catalog.albums al ON al.id = l.album_id \
           LEFT JOIN raw_catalog.artists a ON a.id = al.artist_id \
          WHERE o.status = 'placed' \
          GROUP BY 1, 2, 3, 4",
    ),
    (
        "SELECT album_id, title, artist_id, wishes, stock, in_stock \
         FROM reporting_v1.most_wished_albums",
        "SELECT w.album_id, al.title, al.artist_id, count(*)::bigint, al.stock, \
                coalesce(al.stock > 0, false) \
           FROM raw_wishlist.items w LEFT JOIN raw_catalog.albums al ON al.id = w.album_id \
          GROUP BY 1, 2, 3, 5, 6",
    ),
    (
        "SELECT album_id, title, artist_id, wishes, stock FROM reporting_v1.stock_alerts",
        "SELECT w.album_id, al.title, al.artist_id, count(*)::bigint, al.stock \
           FROM raw_wishlist.items w JOIN raw_catalog.albums al ON al.id = w.album_id \
          GROUP BY 1, 2, 3, 5 HAVING count(*) >= 3 AND al.stock <= 5",
    ),
    (
        "SELECT customer_id, name, currency, orders, revenue_cents \
         FROM reporting_v1.customer_lifetime_value",
        "SELECT o.customer_id, c.name, o.currency, count(*)::bigint, sum(o.total_cents)::bigint \
           FROM raw_orders.orders o LEFT JOIN raw_customers.customers c ON c.id = o.customer_id \
          WHERE o.status = 'placed' GROUP BY 1, 2, 3",
    ),
];

#[derive(diesel::QueryableByName)]
struct Rows {
    #[diesel(sql_type = diesel::sql_types::Text)]
    rows: String,
}

/// A query's rows as one sorted text.
fn rows(conn: &mut PgConnection, sql: &str) -> String {
    diesel::sql_query(format!(
        "SELECT coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '') AS rows FROM ({sql}) r"
    ))
    .get_result::<Rows>(conn)
    .unwrap()
    .rows
}

/// What the workload knows of the raw tables, to pick rows that exist.
#[derive(Default)]
struct Known {
    artists: u64,
    albums: u64,
    customers: u64,
    orders: Vec<(u64, u64)>,
    wishes: Vec<(u64, u64)>,
}

/// One source transaction's statements.
fn transaction(rng: &mut Rng, k: &mut Known) -> String {
    let day = |rng: &mut Rng| {
        format!(
            "'2026-12-0{} {:02}:00:00+00'",
            1 + rng.below(3),
            rng.below(24)
        )
    };
    let currency = |rng: &mut Rng| if rng.below(4) == 0 { "EUR" } else { "USD" };
    let mut sql = String::new();
    for _ in 0..1 + rng.below(3) {
        match rng.below(100) {
            _ if k.artists == 0 || k.albums < 3 || k.customers < 3 => {
                k.artists += 1;
                k.albums += 1;
                k.customers += 1;
                sql += &format!(
                    "INSERT INTO raw_catalog.artists VALUES ({a}, 'artist {a}', NULL, now());
                     INSERT INTO raw_catalog.albums VALUES ({b}, 'sku{b}', 'album {b}', {a}, 'rock',
                        2000, 1000, 'USD', {s}, now());
                     INSERT INTO raw_customers.customers VALUES ({c}, 'customer {c}', 'c{c}@x', now());",
                    a = k.artists,
                    b = k.albums,
                    c = k.customers,
                    s = rng.below(10)
                );
            }
            0..8 => {
                k.albums += 1;
                sql += &format!(
                    "INSERT INTO raw_catalog.albums VALUES ({b}, 'sku{b}', 'album {b}', {a}, 'jazz',
                        2001, 1500, 'USD', {s}, now());",
                    b = k.albums,
                    a = 1 + rng.below(k.artists),
                    s = rng.below(10)
                );
            }
            8..11 => {
                sql += &format!(
                    "UPDATE raw_catalog.albums SET artist_id = {}, stock = {} WHERE id = {};",
                    1 + rng.below(k.artists),
                    rng.below(10),
                    1 + rng.below(k.albums)
                );
            }
            11..14 => {
                k.artists += 1;
                k.customers += 1;
                sql += &format!(
                    "INSERT INTO raw_catalog.artists VALUES ({a}, 'artist {a}', 'GB', now());
                     INSERT INTO raw_customers.customers VALUES ({c}, 'customer {c}', 'c{c}@x', now());",
                    a = k.artists,
                    c = k.customers
                );
            }
            14..40 => {
                let id = 1 + k.orders.iter().map(|o| o.0).max().unwrap_or(0);
                let status = if rng.below(3) == 0 {
                    "pending"
                } else {
                    "placed"
                };
                let lines = 1 + rng.below(3);
                sql += &format!(
                    "INSERT INTO raw_orders.orders VALUES ({id}, {}, '{status}', {}, '{}', {});",
                    1 + rng.below(k.customers),
                    100 * (1 + rng.below(50)),
                    currency(rng),
                    day(rng)
                );
                for n in 0..lines {
                    sql += &format!(
                        "INSERT INTO raw_orders.order_lines VALUES ({id}, {n}, {}, {}, {});",
                        1 + rng.below(k.albums),
                        1 + rng.below(3),
                        100 * (1 + rng.below(20))
                    );
                }
                k.orders.push((id, lines));
            }
            40..55 if !k.orders.is_empty() => {
                let (id, _) = k.orders[rng.below(k.orders.len() as u64) as usize];
                let status = ["placed", "pending", "cancelled"][rng.below(3) as usize];
                sql += &format!(
                    "UPDATE raw_orders.orders SET status = '{status}', placed_at = {}, total_cents = {} \
                     WHERE id = {id};",
                    day(rng),
                    100 * (1 + rng.below(50))
                );
            }
            55..60 if !k.orders.is_empty() => {
                // The source's cascade: the order first, then its lines.
                let (id, _) = k.orders.remove(rng.below(k.orders.len() as u64) as usize);
                sql += &format!(
                    "DELETE FROM raw_orders.orders WHERE id = {id};
                     DELETE FROM raw_orders.order_lines WHERE order_id = {id};"
                );
            }
            60..65 if !k.orders.is_empty() => {
                let (id, lines) = k.orders[rng.below(k.orders.len() as u64) as usize];
                let line = rng.below(lines);
                sql += &if rng.below(2) == 0 {
                    format!(
                        "DELETE FROM raw_orders.order_lines WHERE order_id = {id} AND line_no = {line};"
                    )
                } else {
                    format!(
                        "UPDATE raw_orders.order_lines SET quantity = {}, album_id = {} \
                         WHERE order_id = {id} AND line_no = {line};",
                        1 + rng.below(5),
                        1 + rng.below(k.albums)
                    )
                };
            }
            65..85 => {
                let wish = (1 + rng.below(k.customers), 1 + rng.below(k.albums.min(6)));
                if !k.wishes.contains(&wish) {
                    sql += &format!(
                        "INSERT INTO raw_wishlist.items VALUES ({}, {}, now());",
                        wish.0, wish.1
                    );
                    k.wishes.push(wish);
                }
            }
            _ if !k.wishes.is_empty() => {
                let (c, a) = k.wishes.remove(rng.below(k.wishes.len() as u64) as usize);
                sql += &format!(
                    "DELETE FROM raw_wishlist.items WHERE customer_id = {c} AND album_id = {a};"
                );
            }
            _ => {}
        }
    }
    sql
}

#[test]
fn the_aggregates_equal_a_recomputation_after_every_change_for_several_seeds() {
    for seed in [1u64, 7, 42] {
        let db = TestDb::new(&format!("reporting_{seed}"), MIGRATIONS);
        let mut conn = PgConnection::establish(db.url()).unwrap();
        // As the engine applies: ordinary triggers would not fire; these must.
        conn.batch_execute("SET session_replication_role = replica")
            .unwrap();
        let mut rng = Rng(seed);
        let mut known = Known::default();
        let mut compared = 0;
        for step in 0..400 {
            let sql = transaction(&mut rng, &mut known);
            conn.batch_execute(&format!("BEGIN; {sql} COMMIT;"))
                .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}\n{sql}"));
            if step % 20 == 19 {
                for (view, reference) in CHECKS {
                    assert_eq!(
                        rows(&mut conn, view),
                        rows(&mut conn, reference),
                        "seed {seed} step {step}: {view}"
                    );
                }
                compared += 1;
            }
        }
        // The workload produced something to report.
        assert!(
            !rows(&mut conn, CHECKS[0].0).is_empty(),
            "seed {seed}: no sales"
        );
        assert!(
            !rows(&mut conn, CHECKS[1].0).is_empty(),
            "seed {seed}: no wishes"
        );
        assert_eq!(compared, 20);
    }
}

#[test]
fn after_a_bulk_copy_the_aggregates_are_rebuilt_and_kept_from_there() {
    let db = TestDb::new("reporting_copy", MIGRATIONS);
    let mut copy = PgConnection::establish(db.url()).unwrap();
    // The engine's initial copy: a session marked as such, related tables in separate
    // transactions, triggers skipping it all.
    copy.batch_execute("SET session_replication_role = replica; SET fig.copying = on")
        .unwrap();
    let mut rng = Rng(99);
    let mut known = Known::default();
    for _ in 0..200 {
        let sql = transaction(&mut rng, &mut known);
        copy.batch_execute(&format!("BEGIN; {sql} COMMIT;"))
            .unwrap();
    }
    let (view, reference) = CHECKS[0];
    assert_eq!(
        rows(&mut copy, view),
        "",
        "the copy left the aggregates alone"
    );
    let mut conn = PgConnection::establish(db.url()).unwrap();
    conn.batch_execute("SELECT reporting_agg.rebuild(); SET session_replication_role = replica")
        .unwrap();
    for step in 0..200 {
        let sql = transaction(&mut rng, &mut known);
        conn.batch_execute(&format!("BEGIN; {sql} COMMIT;"))
            .unwrap();
        if step % 50 == 0 || step == 199 {
            for (view, reference) in CHECKS {
                assert_eq!(
                    rows(&mut conn, view),
                    rows(&mut conn, reference),
                    "step {step}"
                );
            }
        }
    }
    assert!(!rows(&mut conn, reference).is_empty());
}

/// `reporting_v1` is a public API: its relations, columns and types, as analysts' queries see
/// them. A change here breaks someone's query: make it additive (update this list) or put it in
/// `reporting_v2`.
const REPORTING_V1: &str = "\
customer_lifetime_value.customer_id bigint
customer_lifetime_value.name text
customer_lifetime_value.currency text
customer_lifetime_value.orders bigint
customer_lifetime_value.revenue_cents bigint
most_wished_albums.album_id bigint
most_wished_albums.title text
most_wished_albums.artist_id bigint
most_wished_albums.wishes bigint
most_wished_albums.stock integer
most_wished_albums.in_stock boolean
sales_by_artist_day.artist_id bigint
sales_by_artist_day.artist_name text
sales_by_artist_day.day date
sales_by_artist_day.currency text
sales_by_artist_day.units bigint
sales_by_artist_day.revenue_cents bigint
stock_alerts.album_id bigint
stock_alerts.title text
stock_alerts.artist_id bigint
stock_alerts.wishes bigint
stock_alerts.stock integer";

#[test]
fn reporting_v1_keeps_its_relations_columns_and_types() {
    let db = TestDb::new("reporting_api", MIGRATIONS);
    let mut conn = PgConnection::establish(db.url()).unwrap();
    let columns = diesel::sql_query(
        "SELECT coalesce(string_agg(table_name || '.' || column_name || ' ' || data_type, E'\\n' \
                ORDER BY table_name, ordinal_position), '') AS rows \
           FROM information_schema.columns WHERE table_schema = 'reporting_v1'",
    )
    .get_result::<Rows>(&mut conn)
    .unwrap()
    .rows;
    assert_eq!(columns, REPORTING_V1);
}
