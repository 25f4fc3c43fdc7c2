//! Harness for end-to-end tests across MusicCorp's monolith and its extracted services.
//!
//! Every process here is the real thing: the monolith and each service run their real actix
//! server on a listener bound to port 0, against a PostgreSQL database of their own
//! ([`localpg::TestDb`], cloned from a migrated template and dropped with the value). Tests run in
//! parallel; nothing uses a fixed port or shares a database.
//!
//! - [`Monolith::spawn`], [`CatalogService::spawn`], [`WishlistService::spawn`] start one process
//!   each (`spawn_with` takes the full options where there are more knobs); [`Stack::spawn`]
//!   wires the extracted services together as after cutover (the monolith still owns customers).
//! - [`Client`] sends requests and returns a [`Reply`] (status, headers, JSON body), with
//!   fixture helpers that create artists, albums and customers through the API.
//! - `count(sql)` / `execute(sql)` on each process reach its database directly, for facts the API
//!   does not expose and for rows an API cannot create (e.g. on a replica).
//! - [`eventually`] polls a condition with a deadline: tests never sleep to synchronise.
//! - `state()` on each process takes a [`DbState`]: a content hash of every table and every
//!   sequence's position, to prove that a request (a dry run) changed nothing.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use diesel::{Connection, PgConnection, RunQueryDsl};
use localpg::TestDb;
use platform::parallel_run::{DB_POSITION, Lsn};
use platform::{Pool, PoolConfig};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use platform::WriteMode;

/// Actix workers per process: enough for the concurrency a test produces, cheap to start.
const WORKERS: usize = 2;
/// Upstream timeout of a wishlist service in a [`Stack`]: generous, so a busy test machine does
/// not turn into degraded answers.
pub const STACK_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// Replies and the client
// ---------------------------------------------------------------------------------------------

/// One HTTP answer. `body` is `Value::Null` when the body was empty (a 204).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts the error envelope: status, code, a message, and the field it names (`None`: the
    /// envelope must not have a `field` key at all).
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        assert!(
            self.body["error"]["message"].is_string(),
            "body: {}",
            self.body
        );
        match field {
            Some(f) => assert_eq!(self.body["error"]["field"], f, "body: {}", self.body),
            None => assert!(
                self.body["error"].get("field").is_none(),
                "no field expected, body: {}",
                self.body
            ),
        }
        self.assert_json();
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        &self.body
    }

    /// Asserts that the response says it is JSON.
    #[track_caller]
    pub fn assert_json(&self) {
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "content-type {ct:?}, body: {}",
            self.body
        );
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `X-Fig-Db-Position`, parsed; panics with the raw value when it is not an LSN.
    #[track_caller]
    pub fn position(&self) -> Option<Lsn> {
        self.header(DB_POSITION).map(|raw| {
            raw.parse()
                .unwrap_or_else(|e| panic!("{DB_POSITION}: {raw:?}: {e}"))
        })
    }

    /// `body[key]` as an id; panics with the body when it is not one.
    #[track_caller]
    pub fn id(&self, key: &str) -> i64 {
        self.body[key]
            .as_i64()
            .unwrap_or_else(|| panic!("no integer {key:?} in {}", self.body))
    }
}

/// An HTTP client bound to one base URL (`http://127.0.0.1:PORT`).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(base: impl Into<String>) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("reqwest client"),
            base: base.into(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `body` (if any) as JSON, with extra headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(body);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read(req.send().await.expect("request sent")).await
    }

    /// Sends raw bytes; `content_type: None` sends no `Content-Type` header.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        read(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(&body), &[]).await
    }

    /// A POST without a body (e.g. reservation confirm/release).
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(Method::POST, path, None, &[]).await
    }

    /// A PUT without a body (e.g. adding a wishlist item).
    pub async fn put(&self, path: &str) -> Reply {
        self.send(Method::PUT, path, None, &[]).await
    }

    pub async fn put_json(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(&body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, Some(&body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, &[]).await
    }

    // --- fixtures, created through the API of whatever this client points at ---

    /// A new artist (country GB); returns its id.
    pub async fn create_artist(&self, name: &str) -> i64 {
        let reply = self
            .post("/catalog/artists", json!({"name": name, "country": "GB"}))
            .await;
        reply.ok(201);
        reply.id("id")
    }

    /// A new album by `artist` at 10.00 USD, released 1999; returns its id.
    pub async fn create_album(
        &self,
        artist: i64,
        sku: &str,
        title: &str,
        genre: &str,
        stock: i32,
    ) -> i64 {
        let reply = self
            .post(
                "/catalog/albums",
                json!({
                    "sku": sku, "title": title, "artist_id": artist, "genre": genre,
                    "release_year": 1999,
                    "price": {"amount_cents": 1000, "currency": "USD"}, "stock": stock
                }),
            )
            .await;
        reply.ok(201);
        reply.id("id")
    }

    /// An album titled `Title {sku}` by a new artist `Artist of {sku}`.
    pub async fn album(&self, sku: &str, stock: i32) -> i64 {
        let artist = self.create_artist(&format!("Artist of {sku}")).await;
        self.create_album(artist, sku, &format!("Title {sku}"), "rock", stock)
            .await
    }

    /// A new customer named "Test Customer"; returns its id.
    pub async fn create_customer(&self, email: &str) -> i64 {
        let reply = self
            .post(
                "/customers",
                json!({"name": "Test Customer", "email": email}),
            )
            .await;
        reply.ok(201);
        reply.id("id")
    }

    /// An album's stock as the catalog reports it.
    pub async fn stock(&self, album: i64) -> i64 {
        let reply = self.get(&format!("/catalog/albums/{album}")).await;
        reply.ok(200);
        reply.id("stock")
    }
}

async fn read(res: reqwest::Response) -> Reply {
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("response body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "non-JSON body ({status}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Reply {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------------------------

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Runs `sql`, which must return one row with a `bigint` column named `n`
/// (`SELECT count(*) AS n FROM ...`).
pub fn count_in(database_url: &str, sql: &str) -> i64 {
    let mut conn = PgConnection::establish(database_url).expect("connect to the test database");
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// Runs a statement; returns the number of rows it affected.
pub fn execute_in(database_url: &str, sql: &str) -> usize {
    let mut conn = PgConnection::establish(database_url).expect("connect to the test database");
    diesel::sql_query(sql)
        .execute(&mut conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// What a database holds, to compare before and after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbState {
    /// Every table outside `pg_catalog` and `information_schema` (`fig_replication`'s too, when
    /// there), by `schema.table`: `"<rows> rows, <md5>"`, the md5 of its rows' text forms joined in
    /// sorted order (`md5(string_agg(t::text, ',' ORDER BY t::text))`).
    pub tables: BTreeMap<String, String>,
    /// Every sequence's `last_value` (`None`: never drawn). Not part of "nothing changed": a
    /// rolled-back transaction keeps the values it drew.
    pub sequences: BTreeMap<String, Option<i64>>,
}

#[derive(diesel::QueryableByName)]
struct Named {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

#[derive(diesel::QueryableByName)]
struct TableHash {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    h: String,
}

#[derive(diesel::QueryableByName)]
struct SequenceValue {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    v: Option<i64>,
}

/// The [`DbState`] of `database_url`, read in one repeatable-read transaction.
/// Every table but the write fence's (which says who owns the writes: not data, and different
/// on an owner and a replica by design).
pub fn db_state_in(database_url: &str) -> DbState {
    let mut conn = PgConnection::establish(database_url).expect("connect to the test database");
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run::<_, diesel::result::Error, _>(|tx| {
            let names = diesel::sql_query(
                "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables \
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'fig_fence') \
                 ORDER BY 1",
            )
            .load::<Named>(tx)?;
            let mut tables = BTreeMap::new();
            for Named { name } in names {
                let hash = diesel::sql_query(format!(
                    "SELECT count(*) AS n, \
                     coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') AS h \
                     FROM {name} t"
                ))
                .get_result::<TableHash>(tx)?;
                tables.insert(name, format!("{} rows, {}", hash.n, hash.h));
            }
            let sequences = diesel::sql_query(
                "SELECT format('%I.%I', schemaname, sequencename) AS name, last_value AS v \
                 FROM pg_sequences",
            )
            .load::<SequenceValue>(tx)?
            .into_iter()
            .map(|s| (s.name, s.v))
            .collect();
            Ok(DbState { tables, sequences })
        })
        .unwrap_or_else(|e| panic!("reading the state of {database_url}: {e}"))
}

fn pool(db: &TestDb) -> Pool {
    platform::build_pool(
        db.url(),
        PoolConfig {
            max_size: 8,
            ..PoolConfig::default()
        },
    )
    .expect("pool")
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Binds 127.0.0.1:0 and returns the listener and its base URL.
pub fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    (listener, base)
}

/// The base URL of a port nothing listens on: bound, then closed again.
pub fn closed_port_url() -> String {
    let (listener, base) = bind();
    drop(listener);
    base
}

/// A running actix server. Dropping it stops the server (forced: listeners closed, workers told
/// to stop); [`Running::stop`] stops it gracefully and waits.
#[derive(Debug)]
pub struct Running {
    handle: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Spawns `server` on the current tokio runtime.
    pub fn spawn(server: Server) -> Running {
        Running {
            handle: server.handle(),
            task: tokio::spawn(server),
        }
    }

    /// Stops accepting, finishes requests in flight, and waits until the server is gone.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Ends every session on `db`, so that dropping it right after does not wait. (`DROP DATABASE
/// ... WITH (FORCE)` signals the sessions and then waits for them in steps of 100 ms; with three
/// databases per test that is most of a small test's time.) Best effort: the drop stays forced.
fn disconnect_all(db: &TestDb) {
    let Ok(mut admin) = db.cluster().admin() else {
        return;
    };
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name().replace('\'', "''")
    );
    for _ in 0..400 {
        match diesel::sql_query(&sql).get_result::<Count>(&mut admin) {
            Ok(Count { n: 0 }) | Err(_) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

macro_rules! process_helpers {
    ($ty:ty) => {
        impl Drop for $ty {
            fn drop(&mut self) {
                // The server and then the database are dropped after this.
                disconnect_all(&self.db);
            }
        }

        impl $ty {
            /// A client for this process.
            pub fn client(&self) -> Client {
                self.client.clone()
            }

            /// `SELECT count(*) AS n ...` on this process's own database.
            pub fn count(&self, sql: &str) -> i64 {
                count_in(self.db.url(), sql)
            }

            /// Runs a statement on this process's own database; returns the rows affected.
            pub fn execute(&self, sql: &str) -> usize {
                execute_in(self.db.url(), sql)
            }

            /// Every table's content hash and every sequence's position.
            pub fn state(&self) -> DbState {
                db_state_in(self.db.url())
            }

            /// Stops the server gracefully; its database stays until the value is dropped.
            pub async fn stop(&self) {
                self.server.stop().await;
            }
        }
    };
}

/// The monolith on its own fresh database.
#[derive(Debug)]
pub struct Monolith {
    // Declared first so the server goes before its database.
    server: Running,
    pub base: String,
    pub db: TestDb,
    client: Client,
}

impl Monolith {
    /// Everything local: orders take stock and clear wishlists in their own transaction.
    pub async fn spawn() -> Monolith {
        Monolith::start(|listener, pool| monolith::server(listener, pool, WORKERS)).await
    }

    /// With explicit options (e.g. integrations reaching the extracted services).
    pub async fn spawn_with(options: monolith::Options) -> Monolith {
        Monolith::start(|listener, pool| monolith::server_with(listener, pool, options)).await
    }

    async fn start(server: impl FnOnce(TcpListener, Pool) -> std::io::Result<Server>) -> Monolith {
        let db = TestDb::new("monolith", monolith::MIGRATIONS);
        let (listener, base) = bind();
        let server = server(listener, pool(&db)).expect("monolith server");
        Monolith {
            server: Running::spawn(server),
            client: Client::new(&base),
            base,
            db,
        }
    }
}

process_helpers!(Monolith);

/// The catalog service on its own fresh database.
#[derive(Debug)]
pub struct CatalogService {
    server: Running,
    pub base: String,
    pub db: TestDb,
    client: Client,
}

impl CatalogService {
    /// With the default options except the write mode.
    pub async fn spawn(write_mode: WriteMode) -> CatalogService {
        CatalogService::spawn_with(catalog_service::Options {
            workers: WORKERS,
            write_mode,
            ..catalog_service::Options::default()
        })
        .await
    }

    /// With explicit options (e.g. a short `sweep_every` for reservation expiry).
    pub async fn spawn_with(options: catalog_service::Options) -> CatalogService {
        CatalogService::spawn_fed_by(options, catalog_service::POSITION_PIPELINE).await
    }

    /// With explicit options; as a replica it reports the applied position of `pipeline`.
    pub async fn spawn_fed_by(options: catalog_service::Options, pipeline: &str) -> CatalogService {
        let db = TestDb::new("catalog", catalog_service::MIGRATIONS);
        let (listener, base) = bind();
        let server = catalog_service::server_fed_by(listener, pool(&db), options, pipeline)
            .expect("catalog server");
        CatalogService {
            server: Running::spawn(server),
            client: Client::new(&base),
            base,
            db,
        }
    }
}

process_helpers!(CatalogService);

/// The wishlist service on its own fresh database, with its upstreams given by URL.
#[derive(Debug)]
pub struct WishlistService {
    server: Running,
    pub base: String,
    pub db: TestDb,
    client: Client,
}

impl WishlistService {
    pub async fn spawn(
        write_mode: WriteMode,
        catalog_url: &str,
        customers_url: &str,
        timeout: Duration,
    ) -> WishlistService {
        let pipeline = wishlist_service::POSITION_PIPELINE;
        WishlistService::spawn_fed_by(write_mode, catalog_url, customers_url, timeout, pipeline)
            .await
    }

    /// As [`WishlistService::spawn`]; as a replica it reports the applied position of `pipeline`.
    pub async fn spawn_fed_by(
        write_mode: WriteMode,
        catalog_url: &str,
        customers_url: &str,
        timeout: Duration,
        pipeline: &str,
    ) -> WishlistService {
        let db = TestDb::new("wishlist", wishlist_service::MIGRATIONS);
        let (listener, base) = bind();
        let options = wishlist_service::Options {
            workers: WORKERS,
            write_mode,
            upstreams: wishlist_service::Upstreams {
                catalog_url: catalog_url.to_string(),
                customers_url: customers_url.to_string(),
                timeout,
            },
        };
        let server = wishlist_service::server_fed_by(listener, pool(&db), options, pipeline)
            .expect("wishlist server");
        WishlistService {
            server: Running::spawn(server),
            client: Client::new(&base),
            base,
            db,
        }
    }

    /// Puts an item straight into the wishlist database, bypassing every check (the PUT needs
    /// the catalog and the customer directory; this does not).
    pub fn insert_item(&self, customer: i64, album: i64) {
        self.execute(&format!(
            "INSERT INTO wishlist.items (customer_id, album_id) VALUES ({customer}, {album})"
        ));
    }
}

process_helpers!(WishlistService);

/// The extracted services as after cutover: the catalog service and the wishlist service own
/// their writes, and the monolith still owns customers (and orders). The wishlist service reads
/// albums from the catalog service and checks customers at the monolith.
#[derive(Debug)]
pub struct Stack {
    pub monolith: Monolith,
    pub catalog: CatalogService,
    pub wishlist: WishlistService,
}

impl Stack {
    pub async fn spawn() -> Stack {
        let monolith = Monolith::spawn().await;
        let catalog = CatalogService::spawn(WriteMode::Owner).await;
        let wishlist = WishlistService::spawn(
            WriteMode::Owner,
            &catalog.base,
            &monolith.base,
            STACK_UPSTREAM_TIMEOUT,
        )
        .await;
        Stack {
            monolith,
            catalog,
            wishlist,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Polls `check` every 50 ms until it returns `Some`, and returns that; panics naming `what`
/// when `deadline` passes first.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
