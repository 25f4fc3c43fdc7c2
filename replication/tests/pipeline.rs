//! Pipelines end to end against real PostgreSQL: initial copy, streaming every kind of change,
//! TOAST, types, drift, loops.

mod support;

use support::{Pair, rows, start};

const ALBUMS: &str = "
CREATE SCHEMA shop;
CREATE TABLE shop.albums (
    id        bigint PRIMARY KEY,
    title     text NOT NULL,
    price     numeric(10, 2),
    tags      text[],
    extra     jsonb,
    cover     bytea,
    released  timestamptz,
    in_stock  boolean,
    rating    double precision,
    notes     text,
    stock     integer
);";

#[tokio::test]
async fn copies_then_streams_every_kind_of_change() {
    let pair = Pair::new("kinds", ALBUMS).await;
    pair.src
        .batch_execute(
            "INSERT INTO shop.albums VALUES
               (1, 'Abbey Road', 19.99, '{rock,uk}', '{\"a\": [1, 2]}', '\\x00ff10', '1969-09-26 10:00+02', true, 4.5, NULL, 7),
               (2, 'Tab\there\nnewline\\back', NULL, '{}', 'null', NULL, NULL, NULL, 'NaN', repeat('long ', 20000), -1);",
        )
        .await
        .unwrap();
    let running = start(pair.pipeline(&["shop.albums"]));
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.albums", "id").await,
        rows(&pair.src, "shop.albums", "id").await,
        "after the copy"
    );

    pair.src
        .batch_execute(
            "INSERT INTO shop.albums (id, title, price, tags, cover)
               VALUES (3, 'Kind of Blue: it''s \\ \"so\" blue', 9.5, '{jazz}', '\\x00ff');
             UPDATE shop.albums SET price = 21.00 WHERE id = 1;
             -- the TOASTed neighbour of this column is unchanged and must survive
             UPDATE shop.albums SET in_stock = false WHERE id = 2;
             UPDATE shop.albums SET id = 10 WHERE id = 3;
             DELETE FROM shop.albums WHERE id = 1;
             -- batches large enough for COPY, and for the staging table (typed like the target)
             BEGIN;
             INSERT INTO shop.albums
               SELECT g, 'bulk ' || g, g / 7.0, ARRAY['t' || g, 'a\tb'], jsonb_build_object('g', g),
                      int4send(g), '2024-01-01 00:00+00'::timestamptz + g * interval '1 minute',
                      g % 2 = 0, g / 3.0, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n\\' || g END, g
               FROM generate_series(100, 1099) g;
             COMMIT;
             UPDATE shop.albums SET title = title || '!', price = price + 1, tags = tags || '{x}',
               extra = extra || '{\"u\": true}', cover = cover || '\\x01'::bytea,
               released = released + interval '1 day', in_stock = NOT in_stock, rating = -rating
               WHERE id >= 100;
             -- keys spread over three times the batch's rows: probed row by row, not as a range
             DELETE FROM shop.albums WHERE id >= 100 AND id % 3 = 0;
             UPDATE shop.albums SET stock = stock + 1, notes = 'sparse' WHERE id >= 100 AND id % 3 = 1;
             -- dense again (two thirds of the stretch)
             DELETE FROM shop.albums WHERE id >= 600;
             -- a staged batch that changes the key: joined on the old keys' stretch
             UPDATE shop.albums SET id = id + 100000 WHERE id >= 100;",
        )
        .await
        .unwrap();
    pair.caught_up().await;
    let want = rows(&pair.src, "shop.albums", "id").await;
    assert_eq!(rows(&pair.dst, "shop.albums", "id").await, want);
    let toast: i32 = pair
        .dst
        .query_one("SELECT length(notes) FROM shop.albums WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(toast, 100_000, "the unchanged TOAST value is kept");

    pair.src.batch_execute("TRUNCATE shop.albums; INSERT INTO shop.albums (id, title) VALUES (7, 'after truncate');").await.unwrap();
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.albums", "id").await,
        ["(7,\"after truncate\",,,,,,,,,)"]
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn schema_drift_stops_the_pipeline_naming_the_column_and_loses_nothing() {
    let pair = Pair::new("drift", ALBUMS).await;
    let running = start(pair.pipeline(&["shop.albums"]));
    pair.caught_up().await;
    pair.src
        .batch_execute(
            "ALTER TABLE shop.albums ADD COLUMN colour text;
             INSERT INTO shop.albums (id, title, colour) VALUES (1, 'Blue Train', 'blue');",
        )
        .await
        .unwrap();
    let error = stopped_by_itself(running).await;
    match &error {
        replication::error::PipelineError::Drift { table, column, .. } => {
            assert_eq!((table.as_str(), column.as_str()), ("shop.albums", "colour"));
        }
        other => panic!("expected drift, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("schema drift in shop.albums: column \"colour\""),
        "{message}"
    );
    assert_eq!(
        last_error(&pair).await.as_deref(),
        Some(message.as_str()),
        "status shows why it stopped"
    );
    assert_eq!(
        rows(&pair.dst, "shop.albums", "id").await.len(),
        0,
        "nothing half-applied"
    );

    // Fixed on the target: the slot kept the change, so it arrives.
    fixed_on_the_target_it_catches_up(&pair, "ALTER TABLE shop.albums ADD COLUMN colour text")
        .await;
}

/// The error the target's status table records for the pair's pipeline.
async fn last_error(pair: &Pair) -> Option<String> {
    pair.dst
        .query_one("SELECT last_error FROM fig_replication.pipelines", &[])
        .await
        .unwrap()
        .get(0)
}

/// The error a pipeline stopped with by itself.
async fn stopped_by_itself(running: support::Running) -> replication::error::PipelineError {
    tokio::time::timeout(support::DEADLINE, running.task)
        .await
        .expect("the pipeline stops by itself")
        .unwrap()
        .expect_err("it stops with an error")
}

/// After `fix` on the target, a restarted pipeline brings the target level with the source.
async fn fixed_on_the_target_it_catches_up(pair: &Pair, fix: &str) {
    pair.dst.batch_execute(fix).await.unwrap();
    let running = start(pair.pipeline(&["shop.albums"]));
    running.streaming().await;
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.albums", "id").await,
        rows(&pair.src, "shop.albums", "id").await
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_two_way_pair_converges_without_echo() {
    let pair = Pair::new("twoway", ALBUMS).await;
    pair.src
        .batch_execute("INSERT INTO shop.albums (id, title) VALUES (1, 'from the monolith')")
        .await
        .unwrap();
    let (forward, f, reverse, r) = pair.start_two_way(pair.pipeline(&["shop.albums"])).await;
    let (forward_name, reverse_name) = (forward.name, reverse.name);

    let writes = [
        (
            &pair.dst,
            "INSERT INTO shop.albums (id, title) VALUES (2, 'from the service')",
        ),
        (
            &pair.src,
            "UPDATE shop.albums SET title = 'edited in the monolith' WHERE id = 2",
        ),
        (
            &pair.dst,
            "UPDATE shop.albums SET price = 9.99 WHERE id = 1",
        ),
        (&pair.src, "DELETE FROM shop.albums WHERE id = 2"),
    ];
    for (side, sql) in writes {
        side.batch_execute(sql).await.unwrap();
        support::caught_up(&pair.src, &pair.dst, &forward_name).await;
        support::caught_up(&pair.dst, &pair.src, &reverse_name).await;
    }
    let both = rows(&pair.src, "shop.albums", "id").await;
    assert_eq!(both, rows(&pair.dst, "shop.albums", "id").await);
    assert_eq!(both, ["(1,\"from the monolith\",9.99,,,,,,,,)"]);
    // Each side applied exactly the other side's own changes: an echo would add to these
    // counts (and never stop).
    assert_eq!(
        applied(&pair.dst, &forward_name).await,
        2,
        "monolith → service"
    );
    assert_eq!(
        applied(&pair.src, &reverse_name).await,
        2,
        "service → monolith"
    );
    f.stop().await.unwrap();
    r.stop().await.unwrap();
}

#[tokio::test]
async fn busy_unpublished_tables_do_not_make_the_slot_retain_wal() {
    let pair = Pair::new(
        "idlewal",
        "CREATE TABLE published (id int PRIMARY KEY); CREATE TABLE busy (id bigserial PRIMARY KEY, pad text);",
    )
    .await;
    let pipeline = pair.pipeline(&["public.published"]);
    let slot = pipeline.slot();
    let running = start(pipeline);
    pair.caught_up().await;
    let before = support::current_lsn(&pair.src).await;
    for _ in 0..8 {
        pair.src
            .batch_execute(
                "INSERT INTO busy (pad) SELECT repeat('x', 200) FROM generate_series(1, 20000)",
            )
            .await
            .unwrap();
    }
    let written: i64 = pair
        .src
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
            &[&before],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        written > 32 * 1024 * 1024,
        "the busy table wrote {written} bytes of WAL"
    );
    // The slot's restart position follows the confirmed one once the server logs the running
    // transactions (a checkpoint does): poll, checkpointing, until it has moved past the burst.
    let bound: i64 = 8 * 1024 * 1024;
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        pair.src.batch_execute("CHECKPOINT").await.unwrap();
        let retained: i64 = pair
            .src
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
                   FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if retained < bound {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot still retains {retained} bytes after a {written}-byte burst elsewhere"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    running.stop().await.unwrap();
}

async fn applied(client: &tokio_postgres::Client, name: &str) -> i64 {
    client
        .query_one(
            "SELECT rows_applied FROM fig_replication.pipelines WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

/// Every index and index-backed constraint of the `shop` tables, as their definitions.
async fn index_definitions(client: &tokio_postgres::Client) -> Vec<String> {
    support::texts(
        client,
        "SELECT tablename || ': ' || indexdef || coalesce(' -- ' || obj_description(
                (schemaname || '.' || indexname)::regclass, 'pg_class'), '')
           FROM pg_indexes WHERE schemaname = 'shop' ORDER BY 1",
    )
    .await
}

/// Each `shop` index's name and oid (a rebuilt index has a new oid).
async fn index_oids(client: &tokio_postgres::Client) -> Vec<(String, u32)> {
    client
        .query(
            "SELECT c.relname::text, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'shop' AND c.relkind = 'i' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn the_copy_rebuilds_the_indexes_it_drops_and_keeps_the_others() {
    let ddl = "
        CREATE SCHEMA shop;
        CREATE TABLE shop.labels (id bigint PRIMARY KEY, name text UNIQUE);
        CREATE TABLE shop.records (
            id bigint PRIMARY KEY,
            label_id bigint REFERENCES shop.labels (id),
            title text NOT NULL,
            year integer,
            CONSTRAINT one_title_a_year UNIQUE (title, year));
        CREATE INDEX records_by_year ON shop.records (year) WHERE year IS NOT NULL;
        CREATE INDEX records_by_lower_title ON shop.records (lower(title)) WITH (fillfactor = 70);
        COMMENT ON INDEX shop.records_by_lower_title IS 'search';";
    let pair = Pair::new("loadidx", ddl).await;
    pair.src
        .batch_execute(
            "INSERT INTO shop.labels SELECT g, 'label ' || g FROM generate_series(1, 50) g;
             INSERT INTO shop.records SELECT g, 1 + g % 50, 'record ' || g, 1950 + g % 70
               FROM generate_series(1, 20000) g;",
        )
        .await
        .unwrap();
    let before = index_definitions(&pair.dst).await;
    assert_eq!(before.len(), 6, "{before:#?}");
    let oids_before = index_oids(&pair.dst).await;
    let running = start(pair.pipeline(&["shop.labels", "shop.records"]));
    running.streaming().await;
    pair.caught_up().await;
    // shop.labels is referred to (loaded as it is); shop.records is not (its indexes are
    // rebuilt, but the commented one, which a rebuild would lose the comment of, is kept).
    assert_eq!(index_definitions(&pair.dst).await, before);
    let oids_after = index_oids(&pair.dst).await;
    let rebuilt: Vec<&str> = oids_before
        .iter()
        .filter(|(name, oid)| oids_after.iter().any(|(n, o)| n == name && o != oid))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        rebuilt,
        ["one_title_a_year", "records_by_year", "records_pkey"],
        "rebuilt after the rows"
    );
    for table in ["shop.labels", "shop.records"] {
        assert_eq!(
            rows(&pair.dst, table, "id").await,
            rows(&pair.src, table, "id").await,
            "{table}"
        );
    }
    // The rebuilt constraints still hold.
    let duplicate = pair
        .dst
        .batch_execute("INSERT INTO shop.records (id, title, year) VALUES (1, 'again', 2000)")
        .await;
    assert!(duplicate.is_err(), "the primary key is back");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_value_too_long_for_the_target_column_stops_the_pipeline_instead_of_being_cut() {
    let pair = Pair::new("narrow", ALBUMS).await;
    // The target's title is narrower than the source's: a mismatch no Relation message shows.
    pair.dst
        .batch_execute("ALTER TABLE shop.albums ALTER COLUMN title TYPE varchar(8)")
        .await
        .unwrap();
    let running = start(pair.pipeline(&["shop.albums"]));
    running.streaming().await;
    pair.src
        .batch_execute("INSERT INTO shop.albums (id, title) VALUES (1, 'Help!')")
        .await
        .unwrap();
    pair.caught_up().await;
    pair.src
        .batch_execute(
            "INSERT INTO shop.albums (id, title) VALUES (2, 'Sgt. Pepper''s Lonely Hearts Club Band')",
        )
        .await
        .unwrap();
    let error = stopped_by_itself(running).await;
    match &error {
        replication::error::PipelineError::Target { source, .. } => {
            let db = source.as_db_error().expect("the target refused it");
            assert!(db.message().contains("value too long"), "{}", db.message());
        }
        other => panic!("expected the target's refusal, got {other}"),
    }
    // The operator reads the server's reason and the table, not tokio-postgres's "db error".
    let message = error.to_string();
    assert!(
        message.contains("applying changes to shop.albums: value too long for type character varying(8) (SQLSTATE 22001)"),
        "{message}"
    );
    assert_eq!(last_error(&pair).await.as_deref(), Some(message.as_str()));
    assert_eq!(
        rows(&pair.dst, "shop.albums", "id").await,
        ["(1,Help!,,,,,,,,,)"],
        "the first row arrived, the second was neither cut nor lost"
    );

    // Widened on the target: the slot kept the row, and it arrives whole.
    fixed_on_the_target_it_catches_up(
        &pair,
        "ALTER TABLE shop.albums ALTER COLUMN title TYPE text",
    )
    .await;
}

#[tokio::test]
async fn values_keep_their_meaning_whatever_date_interval_and_float_formats_the_source_uses() {
    let pair = Pair::new(
        "formats",
        "CREATE SCHEMA shop; CREATE TABLE shop.moments (id int PRIMARY KEY, d date, ts timestamp, i interval,
                                    x float8, r real);",
    )
    .await;
    // Every new session on the source writes values day first, intervals SQL-style and floats
    // rounded, unless told otherwise (the walsender, though, keeps the server's defaults).
    pair.src
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" SET DateStyle = 'SQL, DMY';
             ALTER DATABASE \"{db}\" SET IntervalStyle = 'sql_standard';
             ALTER DATABASE \"{db}\" SET extra_float_digits = -3;",
            db = pair.source.name()
        ))
        .await
        .unwrap();
    // And the target reads them month first.
    pair.dst
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET DateStyle = 'SQL, MDY'",
            pair.target.name()
        ))
        .await
        .unwrap();
    let rows_sql = "INSERT INTO shop.moments VALUES
        ({a}, '2024-02-03', '2024-02-03 04:05:06.789', '1 day -02:03:04.5', 0.1::float8 + 0.2, 1.1),
        ({b}, '2024-02-13', '2024-12-31 23:59:59', '-3 years 2 mons', 1e300, 3.4028235e38)";
    pair.src
        .batch_execute(&rows_sql.replace("{a}", "1").replace("{b}", "2"))
        .await
        .unwrap();
    // The connection string may ask for other formats too (it reaches the replication
    // connection as well).
    let mut pipeline = pair.pipeline(&["shop.moments"]);
    let separator = if pipeline.source.contains('?') {
        '&'
    } else {
        '?'
    };
    pipeline.source.push(separator);
    pipeline.source.push_str(
        "options=-c%20datestyle%3DSQL%2CDMY%20-c%20intervalstyle%3Dsql_standard%20-c%20extra_float_digits%3D-3",
    );
    let running = start(pipeline);
    running.streaming().await;
    pair.src
        .batch_execute(&rows_sql.replace("{a}", "3").replace("{b}", "4"))
        .await
        .unwrap();
    pair.src
        .batch_execute("UPDATE shop.moments SET d = d + 9, x = x / 3 WHERE id IN (1, 4)")
        .await
        .unwrap();
    pair.caught_up().await;
    // Compared as text in one fixed format (these test sessions predate the database setting).
    let order = "id";
    assert_eq!(
        rows(&pair.dst, "shop.moments", order).await,
        rows(&pair.src, "shop.moments", order).await
    );
    assert_eq!(rows(&pair.dst, "shop.moments", order).await.len(), 4);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_truncate_empties_only_the_pipelines_tables_and_never_rows_the_target_refers_to() {
    let pair = Pair::new(
        "truncate",
        "CREATE SCHEMA shop;
         CREATE TABLE shop.artists (id bigserial PRIMARY KEY, name text NOT NULL);
         CREATE TABLE shop.albums (id bigint PRIMARY KEY,
                                   artist_id bigint REFERENCES shop.artists (id),
                                   title text NOT NULL);",
    )
    .await;
    // Only on the target: holds on albums, as the catalog service's reservations are.
    pair.dst
        .batch_execute(
            "CREATE TABLE shop.holds (id serial PRIMARY KEY,
                                      album_id bigint REFERENCES shop.albums (id))",
        )
        .await
        .unwrap();
    let fill = "INSERT INTO shop.artists (name) SELECT 'artist ' || n FROM generate_series(1, 3) n;
                INSERT INTO shop.albums SELECT a.id, a.id, 'album ' || a.id FROM shop.artists a
                  ON CONFLICT DO NOTHING;";
    pair.src.batch_execute(fill).await.unwrap();
    let running = start(pair.pipeline(&["shop.artists", "shop.albums"]));
    running.streaming().await;
    pair.caught_up().await;
    let target_sequence = "SELECT last_value FROM shop.artists_id_seq";
    pair.dst
        .batch_execute("SELECT setval('shop.artists_id_seq', 500)")
        .await
        .unwrap();

    // No hold refers to an album: the albums go, the target's sequence stays its own.
    pair.src
        .batch_execute("TRUNCATE shop.artists RESTART IDENTITY CASCADE")
        .await
        .unwrap();
    pair.caught_up().await;
    assert!(rows(&pair.dst, "shop.albums", "id").await.is_empty());
    assert!(rows(&pair.dst, "shop.artists", "id").await.is_empty());
    let last: i64 = pair
        .dst
        .query_one(target_sequence, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, 500, "RESTART IDENTITY is not replayed");

    // A hold refers to an album: the truncate must not empty the holds, nor leave them
    // dangling. The pipeline stops, saying why, and nothing of the truncate is applied.
    pair.src.batch_execute(fill).await.unwrap();
    pair.caught_up().await;
    pair.dst
        .batch_execute("INSERT INTO shop.holds (album_id) SELECT min(id) FROM shop.albums")
        .await
        .unwrap();
    let albums = rows(&pair.dst, "shop.albums", "id").await;
    assert_eq!(albums.len(), 3);
    pair.src
        .batch_execute("TRUNCATE shop.albums")
        .await
        .unwrap();
    let error = stopped_by_itself(running).await;
    let message = error.to_string();
    assert!(
        matches!(
            error,
            replication::error::PipelineError::TruncateBlocked { .. }
        ),
        "{message}"
    );
    assert!(
        message.contains("truncated shop.albums, but rows of shop.holds")
            && message.contains("holds_album_id_fkey"),
        "{message}"
    );
    assert_eq!(rows(&pair.dst, "shop.holds", "id").await.len(), 1);
    assert_eq!(rows(&pair.dst, "shop.albums", "id").await, albums);

    // The hold released on the target: the kept change applies.
    pair.dst
        .batch_execute("DELETE FROM shop.holds")
        .await
        .unwrap();
    let running = start(pair.pipeline(&["shop.artists", "shop.albums"]));
    running.streaming().await;
    pair.caught_up().await;
    assert!(rows(&pair.dst, "shop.albums", "id").await.is_empty());
    assert_eq!(rows(&pair.dst, "shop.artists", "id").await.len(), 3);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn chained_key_changes_and_swaps_in_one_transaction_arrive_in_order() {
    let pair = Pair::new(
        "rekey",
        "CREATE SCHEMA shop;
         CREATE TABLE shop.items (id bigint PRIMARY KEY, label text NOT NULL);",
    )
    .await;
    pair.src
        .batch_execute(
            "INSERT INTO shop.items SELECT n, 'item ' || n FROM generate_series(1, 600) n",
        )
        .await
        .unwrap();
    let running = start(pair.pipeline(&["shop.items"]));
    running.streaming().await;
    // Big enough for the staged, set-based path: the second statement changes rows the first
    // one just gave their keys.
    pair.src
        .batch_execute(
            "BEGIN;
             UPDATE shop.items SET id = id + 10000 WHERE id <= 300;
             UPDATE shop.items SET id = id + 10000 WHERE id > 10000;
             COMMIT;",
        )
        .await
        .unwrap();
    pair.caught_up().await;
    assert_eq!(
        rows(&pair.dst, "shop.items", "id").await,
        rows(&pair.src, "shop.items", "id").await,
        "chained key changes"
    );
    // The two halves swap keys, through negative ones.
    pair.src
        .batch_execute(
            "BEGIN;
             UPDATE shop.items SET id = -id WHERE id > 20000;
             UPDATE shop.items SET id = id + 19700 WHERE id BETWEEN 301 AND 600;
             UPDATE shop.items SET id = -id - 19700 WHERE id < 0;
             COMMIT;",
        )
        .await
        .unwrap();
    pair.caught_up().await;
    let source = rows(&pair.src, "shop.items", "id").await;
    assert_eq!(source.len(), 600);
    assert_eq!(
        rows(&pair.dst, "shop.items", "id").await,
        source,
        "a key swap"
    );
    running.stop().await.unwrap();
}
