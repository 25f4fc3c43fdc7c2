//! The monolith's migrations run up, then down, then up again, and leave the same
//! `pg_dump --schema-only` each time: every `down.sql` undoes its `up.sql`.

use diesel::{Connection, PgConnection};
use diesel_migrations::MigrationHarness;
use localpg::{Binaries, TestDb};

fn schema_dump(db: &TestDb) -> String {
    let binaries = match db.cluster().binaries() {
        Some(b) => b.clone(),
        None => Binaries::find(None).expect("pg_dump for an external server"),
    };
    let out = std::process::Command::new(binaries.program("pg_dump"))
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--exclude-table=__diesel_schema_migrations",
        ])
        .arg(db.url())
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pg_dump 15.14+ brackets its output with a random \restrict key; it is not schema.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn migrations_up_down_up_leave_an_identical_schema() {
    let db = TestDb::empty("migrations");
    let empty = schema_dump(&db);
    let mut conn = PgConnection::establish(db.url()).unwrap();

    conn.run_pending_migrations(monolith::MIGRATIONS).unwrap();
    let first = schema_dump(&db);
    assert!(first.contains("CREATE TABLE catalog.albums"), "{first}");
    assert!(first.contains("CREATE TABLE orders.idempotency_keys"));

    conn.revert_all_migrations(monolith::MIGRATIONS).unwrap();
    assert_eq!(
        schema_dump(&db),
        empty,
        "down removes everything up created"
    );

    conn.run_pending_migrations(monolith::MIGRATIONS).unwrap();
    assert_eq!(schema_dump(&db), first);
}
