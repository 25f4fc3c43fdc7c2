//! The outbox worker's lifetime, against real PostgreSQL, a real monolith on port 0 and a fake
//! catalog service: what a stopping monolith does with the messages it leased.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use localpg::TestDb;
use monolith::platform::PoolConfig;
use monolith::{Backend, Integrations, Options};

/// Long enough that a call to the hanging catalog is still in flight while a test stops the
/// worker, and accepted by `Integrations::check`.
const TIMEOUT: Duration = Duration::from_secs(15);
/// How long a test waits for something that happens in well under a second when all is well;
/// below `TIMEOUT`, so that a call timing out cannot make a test pass.
const PATIENCE: Duration = Duration::from_secs(10);

/// One outbox row as the database holds it.
#[derive(Debug, diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    due: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    last_error: Option<String>,
}

fn rows(db: &TestDb) -> Vec<Row> {
    let mut conn = PgConnection::establish(db.url()).unwrap();
    diesel::sql_query(
        "SELECT id, attempts, next_attempt_at <= now() AS due, last_error
         FROM orders.outbox ORDER BY id",
    )
    .load(&mut conn)
    .unwrap()
}

/// Two confirms owed to the catalog service, oldest first.
fn owe_two_confirms(db: &TestDb) {
    let mut conn = PgConnection::establish(db.url()).unwrap();
    diesel::sql_query(
        r#"INSERT INTO orders.outbox (kind, payload) VALUES
           ('stock.confirm', '{"kind": "stock.confirm", "key": "order-1", "order_id": 1}'),
           ('stock.confirm', '{"kind": "stock.confirm", "key": "order-2", "order_id": 2}')"#,
    )
    .execute(&mut conn)
    .unwrap();
}

/// Polls `done` until it holds or `PATIENCE` runs out; returns whether it held.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A monolith whose stock lives at `catalog`, polling its outbox often.
fn start(db: &TestDb, catalog: &str) -> (TcpListener, monolith::Pool, Options) {
    let pool = monolith::build_pool(
        db.url(),
        PoolConfig {
            max_size: 4,
            ..PoolConfig::default()
        },
    )
    .expect("pool");
    let options = Options {
        workers: 1,
        integrations: Integrations {
            stock: Backend::Remote {
                base_url: catalog.to_string(),
            },
            timeout: TIMEOUT,
            outbox_poll: Duration::from_millis(50),
            ..Integrations::default()
        },
    };
    (TcpListener::bind("127.0.0.1:0").unwrap(), pool, options)
}

/// A catalog service that accepts connections and never answers (the kernel accepts them; nobody
/// reads them).
fn hanging_catalog() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (listener, base)
}

fn first_is_leased(db: &TestDb) -> bool {
    rows(db).first().is_some_and(|r| r.attempts == 1 && !r.due)
}

#[tokio::test]
async fn a_monolith_that_stops_leaves_what_it_leased_due_again() {
    let db = TestDb::new("monolith", monolith::MIGRATIONS);
    owe_two_confirms(&db);
    let (_catalog, catalog_url) = hanging_catalog();
    let (listener, pool, options) = start(&db, &catalog_url);
    let server = monolith::server_with(listener, pool, options).expect("server");
    let handle = server.handle();
    let serving = tokio::spawn(server);
    assert!(
        eventually(|| first_is_leased(&db)).await,
        "the worker never leased the first confirm: {:?}",
        rows(&db)
    );

    // A graceful stop, as on SIGTERM, while the confirm's call hangs.
    handle.stop(true).await;
    serving.await.unwrap().unwrap();
    assert!(
        eventually(|| rows(&db).iter().all(|r| r.due)).await,
        "leased confirms stay hidden after the monolith stopped: {:?}",
        rows(&db)
    );
    let after = rows(&db);
    assert_eq!(after.len(), 2, "nothing was delivered, so nothing is gone");
    assert!(
        after[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("stopped")),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_stopped_worker_has_released_the_message_it_was_delivering() {
    let db = TestDb::new("monolith", monolith::MIGRATIONS);
    owe_two_confirms(&db);
    let (_catalog, catalog_url) = hanging_catalog();
    let (listener, pool, options) = start(&db, &catalog_url);
    let started = monolith::start(listener, pool, options).expect("monolith");
    let handle = started.server.handle();
    let serving = tokio::spawn(started.server);
    assert!(
        eventually(|| first_is_leased(&db)).await,
        "the worker never leased the first confirm: {:?}",
        rows(&db)
    );

    handle.stop(true).await;
    serving.await.unwrap().unwrap();
    let began = Instant::now();
    started.outbox.stop().await;
    // Right after the stop returns, not eventually: another process may take both at once.
    let after = rows(&db);
    assert!(after.iter().all(|r| r.due), "{after:?}");
    assert_eq!(
        after.iter().map(|r| r.attempts).collect::<Vec<_>>(),
        [1, 0],
        "the second confirm was never leased"
    );
    assert!(
        began.elapsed() < TIMEOUT,
        "the stop waited for the call to time out: {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_stopping_worker_finishes_a_delivery_that_completes_within_its_grace() {
    let db = TestDb::new("monolith", monolith::MIGRATIONS);
    owe_two_confirms(&db);
    let second = rows(&db)[1].id;
    // A catalog that answers the first request only when the test says so.
    let catalog = TcpListener::bind("127.0.0.1:0").unwrap();
    let catalog_url = format!("http://{}", catalog.local_addr().unwrap());
    let (got_request, mut requested) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (answer, answer_now) = std::sync::mpsc::channel::<()>();
    let fake = std::thread::spawn(move || {
        let (mut stream, _) = catalog.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header == "\r\n" || header.is_empty() {
                break;
            }
        }
        got_request.send(request_line).unwrap();
        answer_now.recv().unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
            .unwrap();
    });
    let (listener, pool, options) = start(&db, &catalog_url);
    let started = monolith::start(listener, pool, options).expect("monolith");
    let handle = started.server.handle();
    let serving = tokio::spawn(started.server);

    let request = tokio::time::timeout(PATIENCE, requested.recv())
        .await
        .expect("the worker never called the catalog")
        .unwrap();
    assert!(
        request.starts_with("POST /catalog/reservations/order-1/confirm "),
        "{request}"
    );
    // The stop is signalled before the catalog answers; the answer comes within the grace.
    let stopped = started.outbox.stop();
    answer.send(()).unwrap();
    stopped.await;
    fake.join().unwrap();

    let after = rows(&db);
    assert_eq!(
        after.len(),
        1,
        "the confirm in flight was delivered: {after:?}"
    );
    assert_eq!(
        (after[0].id, after[0].attempts, after[0].due),
        (second, 0, true),
        "the next confirm was left alone, due"
    );
    handle.stop(true).await;
    serving.await.unwrap().unwrap();
}
