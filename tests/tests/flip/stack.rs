//! The stack a flip runs on, in this process: the monolith and both services on their own
//! databases, three router instances on one router database (each able to flip), and the
//! streams following the write owner, as `fig up` runs them.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use e2e::{CatalogService, Client, Monolith, WishlistService, WriteMode, bind};
use localpg::TestDb;
use monolith::{Backend, Integrations};
use router::migrate::follow::{self, Follower};
use router::migrate::{Migrations, Movable};
use router::routes::{RouteTable, WriteOwner};
use serde_json::Value;

pub const TOKEN: &str = "flip-test-token-0123456789";
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Stack {
    pub monolith: Monolith,
    pub catalog: CatalogService,
    pub wishlist: WishlistService,
    pub routers: Vec<router::run::Running>,
    pub router_db: TestDb,
    pub migrations: Migrations,
    pub table: Arc<RouteTable>,
    follower: tokio::sync::Mutex<Option<Follower>>,
    /// The reporting database and its feeds, when asked for.
    pub reporting: Option<Reporting>,
}

/// The reporting database fed from the monolith and the services, as `fig up` runs it.
pub struct Reporting {
    pub db: TestDb,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Reporting {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

const REPORTING_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../migrations/reporting");

/// A router's two listeners, bound before anything starts: the services reach each other
/// through the routers, so their URLs come first.
struct Bound {
    data: TcpListener,
    admin: TcpListener,
    base: String,
}

fn bound() -> Bound {
    let (data, base) = bind();
    let (admin, _) = bind();
    Bound { data, admin, base }
}

impl Stack {
    /// Everything up, the streams copying the monolith's data into the services, the monolith
    /// owning both capabilities' writes.
    pub async fn spawn(settings: router::migrate::Settings) -> Stack {
        Stack::start(settings, false).await
    }

    /// With the reporting database and its feeds; a flip waits for the feeds too.
    pub async fn spawn_with_reporting(settings: router::migrate::Settings) -> Stack {
        Stack::start(settings, true).await
    }

    async fn start(settings: router::migrate::Settings, reporting: bool) -> Stack {
        let bound: Vec<Bound> = (0..3).map(|_| bound()).collect();
        let front = bound[0].base.clone();
        let movable = |url: &str| Backend::Movable {
            base_url: url.to_string(),
        };
        let monolith = Monolith::spawn_with(monolith::Options {
            workers: 2,
            integrations: Integrations {
                stock: movable(&front),
                wishlist: movable(&bound[1].base),
                timeout: Duration::from_secs(3),
                outbox_poll: Duration::from_millis(100),
                ..Integrations::default()
            },
        })
        .await;
        let catalog = CatalogService::spawn(WriteMode::Replica).await;
        let wishlist = WishlistService::spawn(
            WriteMode::Replica,
            &bound[2].base,
            &bound[2].base,
            Duration::from_secs(2),
        )
        .await;
        let router_db = TestDb::new("router", router::store::MIGRATIONS);
        // Slots and origins are cluster-wide: the streams are named like the monolith's
        // database, the capabilities keep their names.
        let unique: String = monolith
            .db
            .name()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let reporting_db = reporting.then(|| TestDb::new("reporting", REPORTING_MIGRATIONS));
        let databases = replication::config::MusicCorp {
            monolith: monolith.db.url().to_string(),
            catalog: catalog.db.url().to_string(),
            wishlist: wishlist.db.url().to_string(),
            reporting: reporting_db
                .as_ref()
                .map(|db| db.url().to_string())
                .unwrap_or_default(),
        };
        let pipelines = databases.pipelines().expect("the MusicCorp pipelines");
        let feeds: Vec<replication::config::Pipeline> = match &reporting_db {
            None => Vec::new(),
            Some(_) => databases
                .reporting_feeds()
                .expect("the reporting feeds")
                .into_iter()
                .map(|p| replication::config::Pipeline {
                    name: format!("{}_{unique}", p.name),
                    // The streams they skip are named like this test's.
                    skip_origins_of: p
                        .skip_origins_of
                        .iter()
                        .map(|s| match s.strip_suffix("_reverse") {
                            Some(forward) => format!("{forward}_{unique}_reverse"),
                            None => format!("{s}_{unique}"),
                        })
                        .collect(),
                    ..p
                })
                .collect(),
        };
        let migrations = Migrations {
            feeds: feeds.clone(),
            movable: pipelines
                .into_iter()
                .map(|p| Movable {
                    capability: p.name.clone(),
                    forward: replication::config::Pipeline {
                        name: format!("{}_{unique}", p.name),
                        ..p
                    },
                })
                .collect(),
            settings,
        };
        let mut table = RouteTable::musiccorp();
        table.set_upstream("monolith", &monolith.base).unwrap();
        table.set_upstream("catalog", &catalog.base).unwrap();
        table.set_upstream("wishlist", &wishlist.base).unwrap();
        let mut routers = Vec::new();
        for (i, b) in bound.into_iter().enumerate() {
            let config = router::run::Config {
                listen: b.data.local_addr().unwrap(),
                admin_listen: b.admin.local_addr().unwrap(),
                database_url: router_db.url().to_string(),
                token: TOKEN.into(),
                table: table.clone(),
                instance: format!("flip-{i}"),
                reload_every: Duration::from_secs(1),
                source: router::sync::Source::Store,
                limits: router::proxy::Limits::default(),
                record: None,
                migrations: Some(migrations.clone()),
            };
            routers.push(
                router::run::start_on(config, b.data, b.admin)
                    .await
                    .expect("router starts"),
            );
        }
        let table = Arc::new(table);
        let stack = Stack {
            monolith,
            catalog,
            wishlist,
            routers,
            router_db,
            migrations,
            table,
            follower: tokio::sync::Mutex::new(None),
            reporting: None,
        };
        stack.follow().await;
        let Some(db) = reporting_db else {
            return stack;
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut metrics = Vec::new();
        for feed in feeds {
            let m = replication::metrics::PipelineMetrics::new(&feed.name);
            metrics.push(m.clone());
            let stopped = stopped.clone();
            tokio::spawn(async move { replication::pipeline::run(&feed, stopped, m).await });
        }
        let deadline = std::time::Instant::now() + PATIENCE;
        while metrics.iter().any(|m| m.phase() != "streaming") {
            assert!(
                std::time::Instant::now() < deadline,
                "the reporting feeds stream"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        e2e::execute_in(db.url(), "SELECT reporting_agg.rebuild()");
        Stack {
            reporting: Some(Reporting { db, stop }),
            ..stack
        }
    }

    /// Starts the streams (again): out of each capability's write owner.
    pub async fn follow(&self) {
        let pool = platform::build_pool(self.router_db.url(), platform::PoolConfig::default())
            .expect("router pool");
        let follower = follow::follow(
            pool,
            self.table.clone(),
            self.migrations.movable.clone(),
            Duration::from_millis(20),
        );
        follower
            .streaming(PATIENCE)
            .await
            .expect("streams streaming");
        *self.follower.lock().await = Some(follower);
    }

    /// Stops the streams (what a flip then waits for never comes).
    pub async fn unfollow(&self) {
        if let Some(f) = self.follower.lock().await.take() {
            f.stop().await;
        }
    }

    /// A client of router instance `i` (0 to 2).
    pub fn front(&self, i: usize) -> Client {
        Client::new(format!("http://{}", self.routers[i % 3].addr))
    }

    /// Asks router instance `i`'s admin API to flip `capability`; the status and the answer.
    pub async fn flip(&self, i: usize, capability: &str, direction: &str) -> (u16, Value) {
        let admin = Client::new(format!("http://{}", self.routers[i % 3].admin_addr));
        let reply = admin
            .send(
                reqwest::Method::POST,
                &format!("/admin/migrations/{capability}/{direction}"),
                None,
                &[
                    ("authorization", &format!("Bearer {TOKEN}")),
                    ("x-actor", "flip-test"),
                    ("x-reason", "the test says so"),
                ],
            )
            .await;
        (reply.status.as_u16(), reply.body)
    }

    /// The capability's status on router instance `i`'s admin API.
    pub async fn status(&self, i: usize, capability: &str) -> Value {
        let admin = Client::new(format!("http://{}", self.routers[i % 3].admin_addr));
        let reply = admin
            .send(
                reqwest::Method::GET,
                &format!("/admin/migrations/{capability}"),
                None,
                &[("authorization", &format!("Bearer {TOKEN}"))],
            )
            .await;
        reply.ok(200).clone()
    }

    pub fn movable(&self, capability: &str) -> &Movable {
        self.migrations
            .find(capability)
            .expect("a movable capability")
    }

    /// The database of `capability`'s `side`.
    pub fn database(&self, capability: &str, side: WriteOwner) -> String {
        self.movable(capability).database(side).to_string()
    }

    /// Whether `side`'s fence admits `capability`'s writes.
    pub fn admits(&self, capability: &str, side: WriteOwner) -> bool {
        use diesel::Connection;
        let mut conn =
            diesel::PgConnection::establish(&self.database(capability, side)).expect("connect");
        platform::fence::read(&mut conn, capability)
            .expect("fence row")
            .owns
    }

    /// Waits until the stream out of `capability`'s current owner has applied everything, then
    /// compares both sides' tables of it.
    pub async fn verify(&self, capability: &str, owner: WriteOwner) -> replication::verify::Report {
        let stream = self.movable(capability).stream_while(owner);
        assert!(
            replication::ops::caught_up(&stream, PATIENCE)
                .await
                .unwrap(),
            "the stream {} did not catch up",
            stream.name
        );
        replication::ops::verify(&stream, 20, PATIENCE)
            .await
            .expect("verify")
    }
}

/// The fixture the load works on, created through the router while the monolith owns
/// everything: albums with plenty of stock, customers who only add to their wishlists, and
/// customers who buy.
pub struct Fixture {
    pub albums: Vec<i64>,
    pub adders: Vec<i64>,
    pub buyers: Vec<i64>,
    pub stock: i64,
}

pub async fn fixture(front: &Client) -> Fixture {
    let stock = 100_000;
    let artist = front.create_artist("Flip Artist").await;
    let mut albums = Vec::new();
    for n in 0..12 {
        albums.push(
            front
                .create_album(artist, &format!("FLIP-{n}"), "Flip", "rock", stock as i32)
                .await,
        );
    }
    let mut adders = Vec::new();
    let mut buyers = Vec::new();
    for n in 0..4 {
        adders.push(
            front
                .create_customer(&format!("adder{n}@example.com"))
                .await,
        );
        buyers.push(
            front
                .create_customer(&format!("buyer{n}@example.com"))
                .await,
        );
    }
    // A wish the buyers' orders clear (locally or through the outbox).
    for b in &buyers {
        front
            .put(&format!("/wishlists/{b}/items/{}", albums[0]))
            .await
            .ok(201);
    }
    Fixture {
        albums,
        adders,
        buyers,
        stock,
    }
}
