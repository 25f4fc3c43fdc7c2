//! The write-ownership fence against a real PostgreSQL: a write admitted before the fence ends
//! before the fence does and lies before its cut; a write that comes while the fence waits, or
//! after it, is refused; and under concurrent writers no acknowledged write is lost and none
//! commits after the fence.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use localpg::TestDb;
use platform::fence::{self, FenceError, Owned};
use platform::parallel_run::{Lsn, wal_insert_lsn};

const CAP: &str = "catalog";

fn connect(db: &TestDb) -> PgConnection {
    PgConnection::establish(db.url()).expect("connect to the test database")
}

/// A database with the fence installed (this side owns `CAP`) and a table to write.
fn setup() -> TestDb {
    let db = TestDb::empty("fence");
    let mut conn = connect(&db);
    let installed = fence::install(&mut conn, CAP, true).unwrap();
    assert_eq!(
        installed,
        Owned {
            owns: true,
            epoch: 0
        }
    );
    diesel::sql_query("CREATE TABLE writes (id bigint PRIMARY KEY, at_lsn pg_lsn)")
        .execute(&mut conn)
        .unwrap();
    db
}

/// One write as a service makes it: admitted first, inside its transaction.
fn write(conn: &mut PgConnection, id: i64) -> Result<(), FenceError> {
    conn.transaction(|conn| {
        fence::admit(conn, CAP)?;
        diesel::sql_query("INSERT INTO writes (id) VALUES ($1)")
            .bind::<BigInt, _>(id)
            .execute(conn)?;
        Ok(())
    })
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM writes")
        .get_result::<Count>(conn)
        .unwrap()
        .n
}

/// Sessions of this database waiting for a lock now (polled, not slept on).
fn waiting(conn: &mut PgConnection) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .get_result::<Count>(conn)
    .unwrap()
    .n
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn install_keeps_what_the_database_already_says() {
    let db = setup();
    let mut conn = connect(&db);
    fence::fence(&mut conn, CAP).unwrap();
    // A restart with a configuration that says "owner" does not undo the flip.
    let again = fence::install(&mut conn, CAP, true).unwrap();
    assert_eq!(
        again,
        Owned {
            owns: false,
            epoch: 1
        }
    );
    assert!(matches!(
        fence::admit(&mut conn, "wishlist"),
        Err(FenceError::Unknown { .. })
    ));
}

#[test]
fn a_write_in_flight_when_the_fence_is_taken_commits_before_the_cut() {
    let db = setup();
    let mut writer = connect(&db);
    let mut fencer = connect(&db);
    let mut watcher = connect(&db);

    // The write is admitted and has written, but not committed.
    diesel::sql_query("BEGIN").execute(&mut writer).unwrap();
    fence::admit(&mut writer, CAP).unwrap();
    diesel::sql_query("INSERT INTO writes (id) VALUES (1)")
        .execute(&mut writer)
        .unwrap();

    let fencing = std::thread::spawn(move || fence::fence(&mut fencer, CAP));
    until("the fence waits for the write", || {
        waiting(&mut watcher) > 0
    });
    assert!(
        !fencing.is_finished(),
        "the fence must wait for the write in flight"
    );

    // The write commits; only then does the fence, and its cut is past the write's commit.
    diesel::sql_query("COMMIT").execute(&mut writer).unwrap();
    let committed_at = wal_insert_lsn(&mut writer).unwrap();
    let fenced = fencing.join().unwrap().unwrap();
    assert_eq!(fenced.epoch, 1);
    assert!(
        fenced.cut >= committed_at,
        "cut {} before the write's commit {}",
        fenced.cut,
        committed_at
    );
    assert_eq!(count(&mut watcher), 1, "the write in flight is kept");
    assert!(matches!(
        write(&mut writer, 2),
        Err(FenceError::NotOwner { .. })
    ));
}

#[test]
fn a_write_that_comes_while_the_fence_waits_is_refused() {
    let db = setup();
    let mut first = connect(&db);
    let mut second = connect(&db);
    let mut fencer = connect(&db);
    let mut watcher = connect(&db);

    // A write in flight makes the fence wait, holding the row's update lock.
    diesel::sql_query("BEGIN").execute(&mut first).unwrap();
    fence::admit(&mut first, CAP).unwrap();
    let fencing = std::thread::spawn(move || fence::fence(&mut fencer, CAP));
    until("the fence waits", || waiting(&mut watcher) > 0);

    // A second write comes now: it queues behind the fence, then reads the fenced row.
    let late = std::thread::spawn(move || write(&mut second, 7));
    until("the late write waits too", || waiting(&mut watcher) >= 2);
    diesel::sql_query("COMMIT").execute(&mut first).unwrap();
    fencing.join().unwrap().unwrap();
    match late.join().unwrap() {
        Err(FenceError::NotOwner { capability }) => assert_eq!(capability, CAP),
        other => panic!("the late write was {other:?}, not refused as not the owner"),
    }
    assert_eq!(count(&mut watcher), 0);
}

#[test]
fn fence_and_grant_are_idempotent_and_counted() {
    let db = setup();
    let mut conn = connect(&db);
    let first = fence::fence(&mut conn, CAP).unwrap();
    let again = fence::fence(&mut conn, CAP).unwrap();
    assert_eq!(
        (first.epoch, again.epoch),
        (1, 1),
        "a second fence changes nothing"
    );
    assert!(again.cut >= first.cut);
    assert_eq!(fence::grant(&mut conn, CAP).unwrap(), 2);
    assert_eq!(fence::grant(&mut conn, CAP).unwrap(), 2);
    write(&mut conn, 1).expect("granted again, the side takes writes");
    assert_eq!(
        fence::read(&mut conn, CAP).unwrap(),
        Owned {
            owns: true,
            epoch: 2
        }
    );
}

/// Writers hammer the side while the fence is taken at a moment picked by a seed: every write
/// that was acknowledged exists, none was lost, and none committed after the fence (the count
/// read right after the fence is the final one). Each write records the end of WAL inside its
/// transaction, which must lie before the cut.
#[test]
fn under_concurrent_writers_nothing_commits_after_the_fence() {
    for seed in 1..=3u64 {
        let db = setup();
        let writers = 4;
        let next_id = Arc::new(AtomicU64::new(1));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(writers + 1));
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                let (url, next_id, acknowledged, stop, start) = (
                    db.url().to_string(),
                    next_id.clone(),
                    acknowledged.clone(),
                    stop.clone(),
                    start.clone(),
                );
                std::thread::spawn(move || {
                    let mut conn = PgConnection::establish(&url).unwrap();
                    start.wait();
                    let mut refused = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let id = next_id.fetch_add(1, Ordering::SeqCst) as i64;
                        let result = conn.transaction(|conn| {
                            fence::admit(conn, CAP)?;
                            diesel::sql_query(
                                "INSERT INTO writes (id, at_lsn) VALUES ($1, pg_current_wal_insert_lsn())",
                            )
                            .bind::<BigInt, _>(id)
                            .execute(conn)?;
                            Ok::<_, FenceError>(())
                        });
                        match result {
                            Ok(()) => {
                                acknowledged.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(FenceError::NotOwner { .. }) => refused += 1,
                            Err(e) => panic!("write {id}: {e}"),
                        }
                    }
                    refused
                })
            })
            .collect();
        let mut fencer = connect(&db);
        start.wait();
        // Fence after a seed-picked number of acknowledged writes.
        let after = 50 + (seed * 7919) % 200;
        until("enough writes before the fence", || {
            acknowledged.load(Ordering::SeqCst) >= after
        });
        let fenced = fence::fence(&mut fencer, CAP).unwrap();
        let at_fence = count(&mut fencer);
        // Let the writers keep trying past the fence until each was refused at least once.
        let refused_before = acknowledged.load(Ordering::SeqCst);
        until("writers keep trying", || {
            next_id.load(Ordering::SeqCst) > refused_before + 200
        });
        stop.store(true, Ordering::SeqCst);
        let refused: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let mut conn = connect(&db);
        let last = count(&mut conn);
        assert_eq!(
            last,
            at_fence,
            "seed {seed}: {} writes committed after the fence",
            last - at_fence
        );
        assert_eq!(
            last as u64,
            acknowledged.load(Ordering::SeqCst),
            "seed {seed}: every acknowledged write exists, no other"
        );
        assert!(
            refused > 0,
            "seed {seed}: writes after the fence were refused"
        );
        #[derive(QueryableByName)]
        struct Latest {
            #[diesel(sql_type = Text)]
            lsn: String,
        }
        let latest: Latest =
            diesel::sql_query("SELECT coalesce(max(at_lsn), '0/0')::text AS lsn FROM writes")
                .get_result(&mut conn)
                .unwrap();
        let latest: Lsn = latest.lsn.parse().unwrap();
        assert!(
            latest < fenced.cut,
            "seed {seed}: a write at {latest} is not before the cut {}",
            fenced.cut
        );
    }
}
