//! The process running a flip killed (SIGKILL) at random moments, ten times: the capability
//! always has at most one side admitting writes, the router database says the flip was
//! interrupted, and running the command again (on another router process) finishes or undoes
//! it, leaving exactly one owner, the one the state names, with every row the old owner had.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use http::Response;
use localpg::TestDb;
use router::WriteOwner;
use router::migrate::{Migrations, follow};
use serde_json::Value;
use support::full;
use support::rng::Rng;

const TOKEN: &str = "test-token-flip-kill";
const PATIENCE: Duration = Duration::from_secs(60);

fn connect(url: &str) -> PgConnection {
    PgConnection::establish(url).expect("connect")
}

fn admits(url: &str, capability: &str) -> bool {
    platform::fence::read(&mut connect(url), capability)
        .expect("fence row")
        .owns
}

fn count(url: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT count(*) AS n FROM catalog.albums")
        .get_result::<N>(&mut connect(url))
        .expect("count")
        .n
}

/// Writes `rows` more albums on the side that owns the capability, admitted by its fence.
fn write_on_owner(url: &str, capability: &str, from: i64, rows: i64) {
    let mut conn = connect(url);
    platform::db::admitted(&mut conn, capability, |c| {
        diesel::sql_query(format!(
            "INSERT INTO catalog.albums (id, stock) SELECT g, 1 FROM generate_series({from}, {}) g",
            from + rows - 1
        ))
        .execute(c)
        .map_err(|e| platform::db::DbError::Fence(e.into()))
    })
    .expect("an admitted write on the owner");
}

/// A router process with migrations; its admin address, read from its log.
struct Process {
    child: Child,
    admin: String,
}

impl Process {
    fn start(env: &[(&str, String)], name: &str) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_router"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("ROUTER_INSTANCE", name)
            .env("ROUTER_LISTEN", "127.0.0.1:0")
            .env("ROUTER_ADMIN_LISTEN", "127.0.0.1:0")
            .env("ROUTER_THREADS", "1")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("router starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let admin = loop {
            let line = lines
                .next()
                .expect("the router exited before listening")
                .unwrap();
            if let Some(at) = line.find("admin=") {
                let rest = &line[at + "admin=".len()..];
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining its log, or it blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Process {
            child,
            admin: format!("http://{admin}"),
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn flip(admin: &str, capability: &str, direction: &str) -> reqwest::Result<(u16, Value)> {
    let reply = reqwest::Client::new()
        .post(format!("{admin}/admin/migrations/{capability}/{direction}"))
        .bearer_auth(TOKEN)
        .header("x-actor", "kill-test")
        .header("x-reason", "killed on purpose")
        .send()
        .await?;
    let status = reply.status().as_u16();
    Ok((status, reply.json().await.unwrap_or(Value::Null)))
}

async fn status(admin: &str, capability: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{admin}/admin/migrations/{capability}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flip_killed_at_random_steps_ends_with_one_owner_after_the_command_runs_again() {
    let legacy = TestDb::empty("kill_legacy");
    let extracted = TestDb::empty("kill_extracted");
    let router_db = TestDb::new("kill_router", router::store::MIGRATIONS);
    // Slots, origins and the fence's capability are named uniquely: tests share a cluster.
    let capability: String = legacy
        .name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    for db in [&legacy, &extracted] {
        let mut conn = connect(db.url());
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            "CREATE SCHEMA catalog;
             CREATE TABLE catalog.albums (id bigint PRIMARY KEY, stock integer NOT NULL);",
        )
        .unwrap();
        platform::fence::install(&mut conn, &capability, db.url() == legacy.url()).unwrap();
    }
    write_on_owner(legacy.url(), &capability, 1, 50);
    let ready = || {
        support::upstream(|_req| async {
            Response::builder()
                .status(200)
                .body(full(r#"{"status":"ready"}"#.into()))
                .unwrap()
        })
    };
    let (legacy_up, extracted_up) = (ready().await, ready().await);
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "[upstreams]\nmonolith = \"{legacy_up}\"\ncatalog = \"{extracted_up}\"\n\
             [capabilities.{capability}]\nlegacy = \"monolith\"\nextracted = \"catalog\"\n\
             read_toggle = \"kill.reads\"\nshadow_toggle = \"kill.shadow\"\n\
             write_owner = \"legacy\"\n\
             [[routes]]\nprefix = \"/catalog/\"\ncapability = \"{capability}\"\n"
        ),
    )
    .unwrap();
    let pipelines = dir.path().join("pipelines.toml");
    std::fs::write(
        &pipelines,
        format!(
            "[[pipelines]]\nname = \"{capability}\"\nsource = \"{}\"\ntarget = \"{}\"\n\
             [[pipelines.tables]]\nsource = \"catalog.albums\"\n",
            legacy.url(),
            extracted.url()
        ),
    )
    .unwrap();
    let env = [
        ("ROUTER_DATABASE_URL", router_db.url().to_string()),
        ("ROUTER_TOKEN", TOKEN.to_string()),
        ("ROUTER_ROUTES", routes.display().to_string()),
        ("ROUTER_MIGRATIONS", pipelines.display().to_string()),
        ("ROUTER_RELOAD_SECONDS", "1".to_string()),
        // Each step lasts long enough for a kill to land in it.
        ("ROUTER_FLIP_STEP_PAUSE_MS", "80".to_string()),
    ];
    let table =
        Arc::new(router::RouteTable::parse(&std::fs::read_to_string(&routes).unwrap()).unwrap());
    let text = std::fs::read_to_string(&pipelines).unwrap();
    let migrations =
        Migrations::from_pipelines(&replication::config::parse(&text, |_| None).unwrap());
    let movable = migrations.find(&capability).unwrap().clone();
    // The streams follow the owner from this process, as `fig up` runs them beside a router.
    let pool = platform::build_pool(router_db.url(), platform::PoolConfig::default()).unwrap();
    let follower = follow::follow(
        pool,
        table,
        migrations.movable.clone(),
        Duration::from_millis(20),
    );
    follower.streaming(PATIENCE).await.unwrap();

    let mut rng = Rng(0x0F11_9A11);
    let mut interrupted = Vec::new();
    let mut owner = WriteOwner::Legacy;
    let mut next_id = 51;
    for round in 0..10 {
        let direction = match owner {
            WriteOwner::Legacy => "cutover",
            WriteOwner::Extracted => "rollback",
        };
        let to = match owner {
            WriteOwner::Legacy => WriteOwner::Extracted,
            WriteOwner::Extracted => WriteOwner::Legacy,
        };
        write_on_owner(movable.database(owner), &capability, next_id, 10);
        next_id += 10;
        let before = count(movable.database(owner));

        let victim = Process::start(&env, &format!("victim-{round}"));
        let admin = victim.admin.clone();
        let cap = capability.clone();
        let request = tokio::spawn(async move { flip(&admin, &cap, direction).await });
        // The moment of the kill: anywhere from before the flip starts to after it ended.
        tokio::time::sleep(Duration::from_millis(rng.below(700) as u64)).await;
        victim.kill();
        // A dead instance is waited for until it has been silent for a while; this one is
        // known dead, so it is forgotten at once (the next flip does not wait for it).
        forget(router_db.url(), &format!("victim-{round}"));
        let answered = request.await.unwrap();
        // Never two owners, whatever the moment.
        let (l, e) = (
            admits(legacy.url(), &capability),
            admits(extracted.url(), &capability),
        );
        assert!(!(l && e), "round {round}: both sides admit writes");

        // The command again, on another process: it settles what was interrupted and flips.
        let rescuer = Process::start(&env, &format!("rescuer-{round}"));
        let state = status(&rescuer.admin, &capability).await;
        let running = state["flips"][0]["outcome"] == "running";
        let (code, answer) = flip(&rescuer.admin, &capability, direction).await.unwrap();
        assert_eq!(code, 200, "round {round}: {answer}");
        let recovered = &answer["recovered"];
        assert_eq!(
            running,
            recovered.is_object(),
            "round {round}: an interrupted flip is settled by the next command: {answer}"
        );
        interrupted.push(match (&answered, recovered.is_object()) {
            (_, true) => format!(
                "interrupted after {} ({})",
                recovered["step"].as_str().unwrap_or("?"),
                recovered["outcome"].as_str().unwrap_or("?")
            ),
            (Ok(_), false) => "finished before the kill".to_string(),
            (Err(_), false) => "killed before it began".to_string(),
        });
        // Exactly one owner: the new one, as the state says.
        let state = status(&rescuer.admin, &capability).await;
        assert_eq!(state["owner"], to.as_str(), "round {round}: {state}");
        assert_eq!(state["held"], false, "round {round}: {state}");
        assert_eq!(
            state["phase"],
            if to == WriteOwner::Extracted {
                "cutover"
            } else {
                "monolith"
            }
        );
        assert!(admits(movable.database(to), &capability), "round {round}");
        assert!(
            !admits(movable.database(owner), &capability),
            "round {round}"
        );
        // Every row the old owner had is on the new one, which takes writes.
        assert_eq!(count(movable.database(to)), before, "round {round}");
        rescuer.kill();
        forget(router_db.url(), &format!("rescuer-{round}"));
        owner = to;
    }
    eprintln!("kill test: {interrupted:?}");
    // The streams still follow the last owner: its writes reach the other side.
    write_on_owner(movable.database(owner), &capability, next_id, 5);
    let stream = movable.stream_while(owner);
    let deadline = Instant::now() + PATIENCE;
    while count(movable.database(owner)) != count(movable.database(other(owner))) {
        assert!(
            Instant::now() < deadline,
            "the stream {} stopped",
            stream.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    follower.stop().await;
}

fn forget(router_db: &str, instance: &str) {
    diesel::sql_query("DELETE FROM router_instances WHERE instance = $1")
        .bind::<diesel::sql_types::Text, _>(instance)
        .execute(&mut connect(router_db))
        .unwrap();
}

fn other(side: WriteOwner) -> WriteOwner {
    match side {
        WriteOwner::Legacy => WriteOwner::Extracted,
        WriteOwner::Extracted => WriteOwner::Legacy,
    }
}
