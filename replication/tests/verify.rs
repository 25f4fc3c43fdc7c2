//! `verify` against a real PostgreSQL (the shared `localpg` test cluster). Every test makes its
//! own source and target databases, so they run in parallel.

use localpg::TestDb;
use replication::verify::{Report, Side, TablePair, TableReport, VerifyError, verify};
use tokio_postgres::{Client, NoTls};

/// A database of its own with a connection to it (the client goes before the database).
struct Db {
    client: Client,
    _db: TestDb,
}

async fn database(setup: &str) -> Db {
    let db = TestDb::empty("verify");
    let (client, connection) = tokio_postgres::connect(db.url(), NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", db.url()));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("sql connection ended: {e}");
        }
    });
    client
        .batch_execute(setup)
        .await
        .unwrap_or_else(|e| panic!("setting up {}: {e}\n{setup}", db.name()));
    Db { client, _db: db }
}

async fn pair(source_setup: &str, target_setup: &str) -> (Db, Db) {
    tokio::join!(database(source_setup), database(target_setup))
}

async fn check(source: &Db, target: &Db, tables: &[TablePair], limit: usize) -> Report {
    let report = verify(&source.client, &target.client, tables, limit)
        .await
        .unwrap_or_else(|e| panic!("verify failed: {e}"));
    println!("{report}");
    assert_eq!(report.tables.len(), tables.len());
    report
}

fn only(report: &Report) -> &TableReport {
    assert_eq!(report.tables.len(), 1, "{report}");
    &report.tables[0]
}

const KITCHEN_SINK: &str = "
    CREATE TABLE things (
        id bigint PRIMARY KEY,
        label text,
        price numeric(12, 2),
        attrs jsonb,
        tags int[],
        seen timestamptz,
        blob bytea
    );";

const KITCHEN_COLUMNS: &[&str] = &["id", "label", "price", "attrs", "tags", "seen", "blob"];

const ROW_1: &str = "(1, 'plain', 9.99, '{\"a\": 1, \"b\": [1, 2]}', '{1,2,3}', '2024-01-02 03:04:05.678+00', '\\x00ff10')";
const ROW_2: &str =
    "(2, 'with, \"quotes\" and (parens)', -0.50, '[]', '{}', '1999-12-31 23:59:59+05', '\\x')";
const ROW_3: &str = "(3, NULL, NULL, NULL, NULL, NULL, NULL)";
const ROW_4: &str = "(4, '', 0, 'null', '{NULL,7}', 'infinity', NULL)";
const ROW_5: &str = "(5, 'ünïcødé ✓', 123456789.01, '{\"nested\": {\"x\": null}}', '{-1}', '2024-06-30 12:00:00-07', '\\xdeadbeef')";

fn inserts(rows: &[&str]) -> String {
    rows.iter()
        .map(|r| format!("INSERT INTO things VALUES {r};\n"))
        .collect()
}

#[tokio::test]
async fn identical_tables_inserted_in_different_orders_are_equal() {
    let source_setup = format!(
        "{KITCHEN_SINK}\n{}",
        inserts(&[ROW_1, ROW_2, ROW_3, ROW_4, ROW_5])
    );
    // Another order, plus an update to the same values and a delete/re-insert, so the physical
    // layout differs too.
    let target_setup = format!(
        "{KITCHEN_SINK}\n{}\
         UPDATE things SET label = label WHERE id = 1;\n\
         DELETE FROM things WHERE id = 4;\n{}",
        inserts(&[ROW_5, ROW_3, ROW_1, ROW_4, ROW_2]),
        inserts(&[ROW_4]),
    );
    let (source, target) = pair(&source_setup, &target_setup).await;
    // Session settings that change the text of values must not change the hash.
    target
        .client
        .batch_execute(
            "SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'German'; \
             SET extra_float_digits = 0; SET bytea_output = 'escape'",
        )
        .await
        .unwrap();

    let tables = [TablePair::same("public", "things", KITCHEN_COLUMNS)];
    let report = check(&source, &target, &tables, 10).await;
    let t = only(&report);
    assert!(report.equal(), "{report}");
    assert!(t.equal);
    assert_eq!((t.source_rows, t.target_rows), (5, 5));
    assert_eq!(t.source_hash, t.target_hash);
    assert_eq!(t.source_hash.len(), 32);
    assert!(t.differing_keys.is_empty());
    assert_eq!((t.only_in_source, t.only_in_target), (0, 0));
    assert_eq!(t.source, "public.things");
    assert!(report.to_string().ends_with("  equal"), "{report}");

    // The session settings are left as they were (the SET LOCALs went with the transaction).
    let zone: String = target
        .client
        .query_one("SHOW TimeZone", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(zone, "Asia/Tokyo");
    // And no transaction is left open.
    target.client.batch_execute("BEGIN; COMMIT").await.unwrap();
}

#[tokio::test]
async fn repeated_calls_agree_and_empty_tables_hash_to_zero() {
    let setup = format!("{KITCHEN_SINK}\n{}", inserts(&[ROW_1, ROW_2, ROW_3]));
    let (source, target) = pair(&setup, &setup).await;
    let tables = [TablePair::same("public", "things", KITCHEN_COLUMNS)];
    let first = check(&source, &target, &tables, 10).await;
    let second = check(&source, &target, &tables, 10).await;
    assert_eq!(first, second);
    // An empty table hashes to zeros on both sides.
    source
        .client
        .batch_execute("DELETE FROM things")
        .await
        .unwrap();
    target
        .client
        .batch_execute("DELETE FROM things")
        .await
        .unwrap();
    let empty = check(&source, &target, &tables, 10).await;
    let t = only(&empty);
    assert!(t.equal);
    assert_eq!(t.source_hash, "0".repeat(32));
    assert_ne!(first.tables[0].source_hash, t.source_hash);
}

#[tokio::test]
async fn changed_missing_and_extra_rows_are_reported_by_key() {
    let source_setup = format!(
        "{KITCHEN_SINK}\n{}",
        inserts(&[ROW_1, ROW_2, ROW_3, ROW_4, ROW_5])
    );
    let target_setup = format!(
        "{KITCHEN_SINK}\n{}\
         UPDATE things SET tags = '{{1,2,4}}' WHERE id = 1;\n\
         INSERT INTO things (id, label) VALUES (42, 'extra');",
        inserts(&[ROW_1, ROW_2, ROW_4, ROW_5]),
    );
    let (source, target) = pair(&source_setup, &target_setup).await;
    let tables = [TablePair::same("public", "things", KITCHEN_COLUMNS)];
    let report = check(&source, &target, &tables, 10).await;
    let t = only(&report);
    assert!(!report.equal());
    assert!(!t.equal);
    assert_eq!((t.source_rows, t.target_rows), (5, 5));
    assert_ne!(t.source_hash, t.target_hash);
    // Byte order of the key text: "(1)" < "(3)" < "(42)".
    assert_eq!(t.differing_keys, ["id=1", "id=3", "id=42"]);
    assert_eq!((t.only_in_source, t.only_in_target), (0, 0));
    assert!(
        report
            .to_string()
            .ends_with("DIFFERENT  keys: id=1, id=3, id=42"),
        "{report}"
    );
}

#[tokio::test]
async fn composite_primary_keys_are_reported_with_every_column() {
    let schema = "CREATE SCHEMA shop;
        CREATE TABLE shop.wishlist (
            customer_id int NOT NULL,
            album_id int NOT NULL,
            note text,
            PRIMARY KEY (customer_id, album_id)
        );";
    let source_setup = format!(
        "{schema}
        INSERT INTO shop.wishlist VALUES (1, 1, 'a'), (1, 2, 'b'), (3, 9, 'c'), (3, 10, 'd'), (4, 1, NULL);"
    );
    let target_setup = format!(
        "{schema}
        INSERT INTO shop.wishlist VALUES (4, 1, NULL), (3, 10, 'd'), (3, 9, 'changed'), (1, 1, 'a'), (7, 7, 'extra');"
    );
    let (source, target) = pair(&source_setup, &target_setup).await;
    let tables = [TablePair::same(
        "shop",
        "wishlist",
        &["customer_id", "album_id", "note"],
    )];
    let report = check(&source, &target, &tables, 100).await;
    let t = only(&report);
    assert!(!t.equal);
    assert_eq!((t.source_rows, t.target_rows), (5, 5));
    assert_eq!(
        t.differing_keys,
        [
            "customer_id=1,album_id=2",
            "customer_id=3,album_id=9",
            "customer_id=7,album_id=7"
        ]
    );
}

#[tokio::test]
async fn text_keys_with_separators_and_quoted_identifiers() {
    let schema = r#"CREATE SCHEMA "we""ird";
        CREATE TABLE "we""ird"."ta ble" ("k""ey" text PRIMARY KEY, "va,l" int);"#;
    let source_setup = format!(
        r#"{schema}
        INSERT INTO "we""ird"."ta ble" VALUES ('a,b', 1), ('a', 2), ('(x)', 3), ('Zürich', 4), ('"q"', 5);"#
    );
    let target_setup = format!(
        r#"{schema}
        INSERT INTO "we""ird"."ta ble" VALUES ('"q"', 5), ('Zürich', 4), ('(x)', 3), ('a', 2), ('a,b', 10);"#
    );
    let (source, target) = pair(&source_setup, &target_setup).await;
    let tables = [TablePair::same("we\"ird", "ta ble", &["k\"ey", "va,l"])];
    let report = check(&source, &target, &tables, 10).await;
    let t = only(&report);
    assert_eq!(t.source, "we\"ird.ta ble");
    assert_eq!(t.differing_keys, ["k\"ey=a,b"]);

    // Equal once fixed.
    target
        .client
        .batch_execute(r#"UPDATE "we""ird"."ta ble" SET "va,l" = 1 WHERE "k""ey" = 'a,b'"#)
        .await
        .unwrap();
    let report = check(&source, &target, &tables, 10).await;
    assert!(report.equal(), "{report}");
}

const HISTORY: &str = "CREATE TABLE pgbench_history (
        tid int, bid int, aid int, delta int, mtime timestamp, filler char(22)
    );";
const HISTORY_COLUMNS: &[&str] = &["tid", "bid", "aid", "delta", "mtime", "filler"];

#[tokio::test]
async fn tables_without_primary_key_compare_as_multisets() {
    let rows = [
        "(1, 1, 17, 100, '2024-01-01 00:00:00', NULL)",
        "(1, 1, 17, 100, '2024-01-01 00:00:00', NULL)", // a duplicate
        "(1, 1, 17, 100, '2024-01-01 00:00:00', NULL)", // and another
        "(2, 1, 18, -5, '2024-01-01 00:00:01', NULL)",
        "(3, 1, 19, 0, NULL, 'x')",
        "(3, 1, 19, 0, NULL, 'x')",
    ];
    let insert = |rows: &[&str]| format!("INSERT INTO pgbench_history VALUES {};", rows.join(", "));
    let mut reversed = rows.to_vec();
    reversed.reverse();
    let source_setup = format!("{HISTORY}\n{}", insert(&rows));
    let equal_setup = format!("{HISTORY}\n{}", insert(&reversed));
    // One duplicate fewer on the target.
    let short_setup = format!("{HISTORY}\n{}", insert(&rows[1..]));
    let ((source, equal_target), short_target) =
        tokio::join!(pair(&source_setup, &equal_setup), database(&short_setup));
    let tables = [TablePair::same(
        "public",
        "pgbench_history",
        HISTORY_COLUMNS,
    )];

    let report = check(&source, &equal_target, &tables, 10).await;
    let t = only(&report);
    assert!(t.equal, "{report}");
    assert_eq!((t.source_rows, t.target_rows), (6, 6));
    assert_eq!(t.source_hash, t.target_hash);

    let report = check(&source, &short_target, &tables, 10).await;
    let t = only(&report);
    assert!(!t.equal);
    assert_eq!((t.source_rows, t.target_rows), (6, 5));
    assert_eq!((t.only_in_source, t.only_in_target), (1, 0));
    assert!(t.differing_keys.is_empty());
    assert!(
        report
            .to_string()
            .ends_with("DIFFERENT  only in source: 1, only in target: 0"),
        "{report}"
    );

    // Same count, but one row changed: one only on each side.
    short_target
        .client
        .batch_execute("INSERT INTO pgbench_history VALUES (9, 9, 9, 9, NULL, NULL)")
        .await
        .unwrap();
    let report = check(&source, &short_target, &tables, 10).await;
    let t = only(&report);
    assert_eq!((t.source_rows, t.target_rows), (6, 6));
    assert!(!t.equal);
    assert_eq!((t.only_in_source, t.only_in_target), (1, 1));
}

#[tokio::test]
async fn renamed_and_subset_columns_are_compared_through_the_mapping() {
    let source_setup = "CREATE TABLE albums (id int PRIMARY KEY, title text, secret text);
        INSERT INTO albums VALUES (1, 'Blue', 's1'), (2, 'Kind of Blue', 's2'), (3, NULL, 's3');";
    let target_setup = "CREATE SCHEMA catalog;
        CREATE TABLE catalog.records (name text, id bigint PRIMARY KEY);
        INSERT INTO catalog.records (id, name) VALUES (3, NULL), (2, 'Kind of Blue'), (1, 'Blue');";
    let (source, target) = pair(source_setup, target_setup).await;
    let tables = [TablePair {
        source: ("public".into(), "albums".into()),
        target: ("catalog".into(), "records".into()),
        columns: vec![("id".into(), "id".into()), ("title".into(), "name".into())],
    }];
    let report = check(&source, &target, &tables, 10).await;
    let t = only(&report);
    assert!(t.equal, "{report}");
    assert_eq!(t.source, "public.albums");
    assert_eq!(t.target, "catalog.records");
    assert!(
        report
            .to_string()
            .starts_with("public.albums -> catalog.records  rows 3/3  hash "),
        "{report}"
    );

    // A change in an unmapped source column is invisible; one in a mapped column is not.
    source
        .client
        .batch_execute("UPDATE albums SET secret = 'changed'")
        .await
        .unwrap();
    assert!(check(&source, &target, &tables, 10).await.equal());
    target
        .client
        .batch_execute("UPDATE catalog.records SET name = 'Green' WHERE id = 2")
        .await
        .unwrap();
    let report = check(&source, &target, &tables, 10).await;
    assert_eq!(only(&report).differing_keys, ["id=2"]);
}

#[tokio::test]
async fn primary_key_on_renamed_columns_is_mapped_back_to_the_source() {
    let source_setup = "CREATE TABLE a (cid int, aid int, qty int);
        INSERT INTO a VALUES (1, 1, 1), (1, 2, 2), (2, 1, 3);";
    let target_setup = "CREATE TABLE b (customer_id int, album_id int, quantity int,
            PRIMARY KEY (customer_id, album_id));
        INSERT INTO b VALUES (1, 1, 1), (1, 2, 20), (2, 1, 3);";
    let (source, target) = pair(source_setup, target_setup).await;
    let tables = [TablePair {
        source: ("public".into(), "a".into()),
        target: ("public".into(), "b".into()),
        columns: vec![
            ("aid".into(), "album_id".into()),
            ("cid".into(), "customer_id".into()),
            ("qty".into(), "quantity".into()),
        ],
    }];
    let report = check(&source, &target, &tables, 10).await;
    assert_eq!(only(&report).differing_keys, ["customer_id=1,album_id=2"]);

    // A target primary key on a column the mapping does not cover: whole rows are compared.
    let tables = [TablePair {
        source: ("public".into(), "a".into()),
        target: ("public".into(), "b".into()),
        columns: vec![
            ("aid".into(), "album_id".into()),
            ("qty".into(), "quantity".into()),
        ],
    }];
    let report = check(&source, &target, &tables, 10).await;
    let t = only(&report);
    assert!(t.differing_keys.is_empty());
    assert_eq!((t.only_in_source, t.only_in_target), (1, 1));
}

#[tokio::test]
async fn missing_tables_and_columns_are_typed_errors() {
    let (source, target) = pair(
        "CREATE TABLE t (id int PRIMARY KEY, x int);",
        "CREATE TABLE t (id int PRIMARY KEY, y int);",
    )
    .await;
    let run = |tables: Vec<TablePair>| {
        let (source, target) = (&source.client, &target.client);
        async move { verify(source, target, &tables, 10).await }
    };

    let pair_of = |s: &str, t: &str, cols: &[(&str, &str)]| TablePair {
        source: ("public".into(), s.into()),
        target: ("public".into(), t.into()),
        columns: cols
            .iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect(),
    };

    match run(vec![pair_of("nope", "t", &[("id", "id")])]).await {
        Err(VerifyError::MissingTable { side, table }) => {
            assert_eq!(side, Side::Source);
            assert_eq!(table, "public.nope");
        }
        other => panic!("expected a missing source table, got {other:?}"),
    }
    match run(vec![pair_of("t", "gone", &[("id", "id")])]).await {
        Err(e @ VerifyError::MissingTable { .. }) => {
            assert_eq!(e.to_string(), "target table public.gone does not exist");
        }
        other => panic!("expected a missing target table, got {other:?}"),
    }
    match run(vec![pair_of("t", "t", &[("id", "id"), ("x", "x")])]).await {
        Err(VerifyError::MissingColumn {
            side,
            table,
            column,
        }) => {
            assert_eq!(
                (side, table.as_str(), column.as_str()),
                (Side::Target, "public.t", "x")
            );
        }
        other => panic!("expected a missing target column, got {other:?}"),
    }
    match run(vec![pair_of("t", "t", &[("id", "id"), ("y", "y")])]).await {
        Err(VerifyError::MissingColumn {
            side,
            table,
            column,
        }) => {
            assert_eq!(
                (side, table.as_str(), column.as_str()),
                (Side::Source, "public.t", "y")
            );
        }
        other => panic!("expected a missing source column, got {other:?}"),
    }
    match run(vec![pair_of("t", "t", &[])]).await {
        Err(VerifyError::NoColumns { .. }) => {}
        other => panic!("expected no columns, got {other:?}"),
    }

    // The error left no transaction behind: the same clients still work.
    let report = run(vec![pair_of("t", "t", &[("id", "id"), ("x", "y")])])
        .await
        .unwrap();
    assert!(report.equal(), "{report}");
    source.client.batch_execute("BEGIN; COMMIT").await.unwrap();
    target.client.batch_execute("BEGIN; COMMIT").await.unwrap();
}

#[tokio::test]
async fn limit_caps_the_differing_keys() {
    let setup = "CREATE TABLE t (id int PRIMARY KEY, v int);
        INSERT INTO t SELECT g, g FROM generate_series(1, 50) g;";
    let (source, target) = pair(setup, setup).await;
    target
        .client
        .batch_execute("UPDATE t SET v = -v WHERE id % 5 = 0")
        .await
        .unwrap();
    let tables = [TablePair::same("public", "t", &["id", "v"])];

    let report = check(&source, &target, &tables, 3).await;
    let t = only(&report);
    assert!(!t.equal);
    // Byte order of "(10)", "(15)", ... "(5)", "(50)".
    assert_eq!(t.differing_keys, ["id=10", "id=15", "id=20"]);

    let all = check(&source, &target, &tables, 1000).await;
    assert_eq!(only(&all).differing_keys.len(), 10);

    let none = check(&source, &target, &tables, 0).await;
    let t = only(&none);
    assert!(!t.equal);
    assert!(t.differing_keys.is_empty());
}

#[tokio::test]
async fn differences_are_found_across_many_fetch_batches() {
    let setup = "CREATE TABLE big (id bigint PRIMARY KEY, payload text);
        INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 35000) g;
        CREATE TABLE heap (id bigint, payload text);
        INSERT INTO heap SELECT g % 1000, 'p' FROM generate_series(1, 25000) g;";
    let (source, target) = pair(setup, setup).await;
    target
        .client
        .batch_execute(
            "DELETE FROM big WHERE id IN (3, 17000, 34999);
             UPDATE big SET payload = 'x' WHERE id = 25000;
             INSERT INTO big VALUES (40000, 'new');
             DELETE FROM heap WHERE ctid IN (SELECT ctid FROM heap WHERE id = 999 LIMIT 2);",
        )
        .await
        .unwrap();
    let tables = [
        TablePair::same("public", "big", &["id", "payload"]),
        TablePair::same("public", "heap", &["id", "payload"]),
    ];
    let report = check(&source, &target, &tables, 100).await;
    let big = &report.tables[0];
    assert_eq!((big.source_rows, big.target_rows), (35000, 34998));
    assert_eq!(
        big.differing_keys,
        ["id=17000", "id=25000", "id=3", "id=34999", "id=40000"]
    );
    let heap = &report.tables[1];
    assert_eq!((heap.source_rows, heap.target_rows), (25000, 24998));
    assert_eq!((heap.only_in_source, heap.only_in_target), (2, 0));
}

#[tokio::test]
async fn one_client_can_serve_as_both_sides() {
    let db = database(
        "CREATE TABLE l (id int PRIMARY KEY, v text);
         CREATE TABLE r (id int PRIMARY KEY, v text);
         INSERT INTO l VALUES (1, 'a'), (2, 'b');
         INSERT INTO r VALUES (2, 'b'), (1, 'A');",
    )
    .await;
    let tables = [TablePair {
        source: ("public".into(), "l".into()),
        target: ("public".into(), "r".into()),
        columns: vec![("id".into(), "id".into()), ("v".into(), "v".into())],
    }];
    let report = verify(&db.client, &db.client, &tables, 10).await.unwrap();
    assert_eq!(only(&report).differing_keys, ["id=1"]);
}

/// The size `fig verify` is meant for (run with `--ignored`; a few seconds).
#[tokio::test]
#[ignore = "slow: a million rows per side"]
async fn a_million_rows() {
    let setup = "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
        INSERT INTO pgbench_accounts SELECT g, 1 + g / 100000, 0, '' FROM generate_series(1, 1000000) g;
        CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
        INSERT INTO pgbench_history SELECT g % 10, 1, g % 5000, g % 7, '2024-01-01', NULL FROM generate_series(1, 1000000) g;
        ANALYZE;";
    let (source, target) = pair(setup, setup).await;
    let tables = [
        TablePair::same(
            "public",
            "pgbench_accounts",
            &["aid", "bid", "abalance", "filler"],
        ),
        TablePair::same("public", "pgbench_history", HISTORY_COLUMNS),
    ];
    let started = std::time::Instant::now();
    assert!(check(&source, &target, &tables, 100).await.equal());
    println!("equal: {:?}", started.elapsed());

    target
        .client
        .batch_execute(
            "UPDATE pgbench_accounts SET abalance = 1 WHERE aid IN (1, 500000, 1000000);
             DELETE FROM pgbench_history WHERE ctid = (SELECT min(ctid) FROM pgbench_history);",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let report = check(&source, &target, &tables, 100).await;
    println!("different: {:?}", started.elapsed());
    assert_eq!(
        report.tables[0].differing_keys,
        ["aid=1", "aid=1000000", "aid=500000"]
    );
    assert_eq!(
        (
            report.tables[1].only_in_source,
            report.tables[1].only_in_target
        ),
        (1, 0)
    );
}
