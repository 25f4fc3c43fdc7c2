//! `fig up` as a user runs it: the real binary, a real cluster, real HTTP, real signals.
//!
//! The banner; the services answering with the monolith's data as replicas; `--cutover` orders
//! taking stock from the catalog service and clearing the remote wishlist through the outbox, and
//! new artists and albums drawing fresh ids on the catalog service, then on the monolith; the
//! router fronting the stack, `fig toggle enable catalog.reads` moving catalog reads (and only
//! those), with `explain` and the audit agreeing; a change through the monolith reaching the
//! catalog service, with `fig replication status`, `fig verify` and the metrics agreeing; data
//! kept with `--data-dir`, and nothing left behind after `SIGKILL`. It also replays the corpora of
//! `tests/parallel_run/` against each replica service (no real difference, every table
//! unchanged) and shadows their reads through the router (`fig diff` agreeing); with
//! `--catalog-faults`, every defect is reported at its path with one count per request, a slow
//! candidate is compared late or counted `failed` while the client is answered at once, and a
//! read right after a write counts as `transient`, never `real`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

struct Stack {
    child: Child,
    lines: mpsc::Receiver<String>,
    banner: Vec<String>,
    /// Everything fig wrote to stderr, when the test asked for it (otherwise inherited).
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Stack {
    /// Starts `fig up` and reads its banner up to the Ctrl-C hint.
    fn start(extra: &[&str]) -> Stack {
        Stack::start_seeded("0.02", extra)
    }

    /// As [`Stack::start`], seeded at `scale`.
    fn start_seeded(scale: &str, extra: &[&str]) -> Stack {
        Stack::launch(scale, extra, false)
    }

    /// As [`Stack::start`], keeping what fig writes to stderr for [`Stack::stderr`].
    fn start_capturing_stderr(extra: &[&str]) -> Stack {
        Stack::launch("0.02", extra, true)
    }

    fn launch(scale: &str, extra: &[&str], capture_stderr: bool) -> Stack {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fig"))
            .args([
                "up",
                "--seed-scale",
                scale,
                "--monolith-addr",
                "127.0.0.1:0",
                "--catalog-addr",
                "127.0.0.1:0",
                "--wishlist-addr",
                "127.0.0.1:0",
                "--router-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--replication-metrics-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("fig starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut err, &mut text);
                text
            })
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stack = Stack {
            child,
            lines,
            banner: Vec::new(),
            stderr,
        };
        loop {
            let line = stack.next_line(Duration::from_secs(120));
            let done = line.starts_with("Press Ctrl-C");
            stack.banner.push(line);
            if done {
                return stack;
            }
        }
    }

    fn next_line(&self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no output from fig ({e})"))
    }

    fn value(&self, label: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .map(|rest| rest.trim().split(' ').next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {label} line in {:?}", self.banner))
    }

    /// Stops fig with SIGINT; what it wrote to stderr, once it exited cleanly.
    fn stop_reading_stderr(mut self) -> String {
        let reader = self.stderr.take().expect("started capturing stderr");
        self.signal(Signal::SIGINT);
        assert!(self.wait(Duration::from_secs(60)).success());
        reader.join().unwrap()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn wait(mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "fig did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Stack {
    /// A failed test must not leave its stack running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn get(url: &str) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = reqwest::get(url).await.expect("request");
        (res.status().as_u16(), res.json().await.expect("json"))
    })
}

fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .expect("request");
        (res.status().as_u16(), res.json().await.expect("json"))
    })
}

fn put(url: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .put(url)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    })
}

fn wait_until_gone(path: &std::path::Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn up_serves_the_seeded_monolith_and_ctrl_c_removes_everything() {
    let stack = Stack::start(&[]);
    assert!(
        stack.banner[0].contains("seeded 4 artists, 40 albums, 20 customers, 100 orders"),
        "{:?}",
        stack.banner
    );
    let monolith = stack.value("monolith");
    let data = PathBuf::from(stack.value("data"));
    assert!(data.join("PG_VERSION").exists());

    let (status, albums) = get(&format!("{monolith}/catalog/albums?limit=5"));
    assert_eq!(status, 200);
    assert_eq!(albums["items"].as_array().unwrap().len(), 5);
    assert_eq!(albums["items"][0]["sku"], "MC-000001");
    let (status, wishlist) = get(&format!("{monolith}/wishlists/1"));
    assert_eq!(status, 200);
    assert_eq!(wishlist["customer_id"], 1);

    // The extracted services answer from their own databases, holding the monolith's data.
    let catalog = stack.value("catalog");
    let wishlist_service = stack.value("wishlist");
    assert_eq!(
        get(&format!("{catalog}/catalog/albums?limit=5")),
        (200, albums)
    );
    assert_eq!(
        get(&format!("{wishlist_service}/wishlists/1")),
        (200, wishlist)
    );
    let (_, status) = get(&format!("{catalog}/status"));
    assert_eq!(status["write_mode"], "replica");
    let (_, status) = get(&format!("{wishlist_service}/status"));
    assert_eq!(status["write_mode"], "replica");

    stack.signal(Signal::SIGINT);
    let status = stack.wait(Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    assert!(!data.exists(), "the throwaway cluster is removed");
}

#[test]
fn cutover_orders_take_stock_from_the_catalog_service_and_clear_the_remote_wishlist() {
    let stack = Stack::start(&["--cutover"]);
    let (monolith, catalog, wishlist) = (
        stack.value("monolith"),
        stack.value("catalog"),
        stack.value("wishlist"),
    );
    assert_eq!(get(&format!("{catalog}/status")).1["write_mode"], "owner");

    let (_, album) = get(&format!("{catalog}/catalog/albums/1"));
    let stock = album["stock"].as_i64().unwrap();
    assert!(stock > 0, "seed album 1 is in stock");
    let (status, customer) = post(
        &format!("{monolith}/customers"),
        serde_json::json!({"name": "Cutover", "email": "cutover@example.com"}),
    );
    assert_eq!(status, 201);
    let customer = customer["id"].as_i64().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let put = rt.block_on(
        reqwest::Client::new()
            .put(format!("{wishlist}/wishlists/{customer}/items/1"))
            .send(),
    );
    assert_eq!(put.unwrap().status().as_u16(), 201);

    let (status, order) = post(
        &format!("{monolith}/orders"),
        serde_json::json!({"customer_id": customer, "lines": [{"album_id": 1, "quantity": 1}]}),
    );
    assert_eq!(status, 201, "{order}");
    assert_eq!(
        get(&format!("{catalog}/catalog/albums/1")).1["stock"],
        stock - 1
    );
    // The outbox removes the album from the wishlist service after the order commits.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = get(&format!("{wishlist}/wishlists/{customer}"));
        if list["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wishlist item not removed: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The catalog service draws ids now: past every id copied from the monolith (its sequences
    // once stayed at 1, and a new album collided with a copied one, reported as "sku taken").
    let (status, artist) = post(
        &format!("{catalog}/catalog/artists"),
        serde_json::json!({"name": "After Cutover"}),
    );
    assert_eq!(status, 201, "{artist}");
    let album = |sku: &str, artist: &serde_json::Value| {
        serde_json::json!({
            "sku": sku, "title": "After Cutover", "artist_id": artist["id"], "genre": "rock",
            "release_year": 2026, "price": {"amount_cents": 1500, "currency": "EUR"}, "stock": 3
        })
    };
    let (status, created) = post(
        &format!("{catalog}/catalog/albums"),
        album("CUTOVER-1", &artist),
    );
    assert_eq!(status, 201, "{created}");
    let album_id = created["id"].as_i64().unwrap();
    // The reverse stream keeps the monolith's sequences following the service's, so an album
    // added on the monolith's own endpoint (say, after rolling back) takes a fresh id too. Rows
    // and sequences travel separately: wait for both (the new album names the new artist).
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&format!("{monolith}/catalog/albums/{album_id}")).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "album {album_id} not in the monolith"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_sequence(&stack.value("postgres"), "catalog.albums_id_seq", album_id);
    // The monolith's own endpoint refuses writes: its fence says the service owns them.
    let (status, refused) = post(
        &format!("{monolith}/catalog/albums"),
        album("CUTOVER-2", &artist),
    );
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "not_write_owner", "{refused}");

    stack.signal(Signal::SIGINT);
    assert!(stack.wait(Duration::from_secs(60)).success());
}

/// Polls (up to 30 s) until `sequence` in the database at `url` has handed out `value` or more.
fn wait_for_sequence(url: &str, sequence: &str, value: i64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = replication::source::connect(url).await.expect("connect");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last: i64 = client
                .query_one(&format!("SELECT last_value FROM {sequence}"), &[])
                .await
                .expect("read the sequence")
                .get(0);
            if last >= value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sequence} is at {last}, not yet {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Runs `fig toggle … --json` against a running stack; returns its printed JSON.
fn fig_toggle(stack: &Stack, args: &[&str]) -> serde_json::Value {
    let text = fig_toggle_text(stack, &[args, &["--json"]].concat());
    serde_json::from_str(&text).expect("fig toggle --json prints JSON")
}

/// Runs `fig toggle …` against a running stack; returns what it printed.
fn fig_toggle_text(stack: &Stack, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fig"))
        .args([
            "toggle",
            "--admin-url",
            &stack.value("admin"),
            "--token",
            &stack.value("token"),
            "--actor",
            "test",
        ])
        .args(args)
        .output()
        .expect("fig toggle runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("fig toggle prints text")
}

fn served_by(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = reqwest::get(url).await.expect("request");
        assert_eq!(res.status().as_u16(), 200);
        res.headers()["x-fig-upstream"]
            .to_str()
            .unwrap()
            .to_string()
    })
}

#[test]
fn the_router_fronts_the_stack_and_fig_toggle_moves_reads() {
    let stack = Stack::start(&[]);
    let router = stack.value("router");
    assert_eq!(
        served_by(&format!("{router}/catalog/albums?limit=2")),
        "monolith"
    );
    assert_eq!(served_by(&format!("{router}/orders/1")), "monolith");

    let listed = fig_toggle(&stack, &["list"]);
    let names: Vec<&str> = listed["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"catalog.reads"), "{names:?}");

    fig_toggle(
        &stack,
        &["enable", "catalog.reads", "--reason", "canary done"],
    );
    assert_eq!(
        served_by(&format!("{router}/catalog/albums?limit=2")),
        "catalog"
    );
    assert_eq!(
        served_by(&format!("{router}/wishlists/1")),
        "monolith",
        "only catalog moved"
    );
    let explained = fig_toggle(&stack, &["explain", "/catalog/albums/1"]);
    assert_eq!(explained["primary"], "catalog");
    let audit = fig_toggle(&stack, &["audit", "catalog.reads"]);
    let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["actor"].as_str(), last["reason"].as_str()),
        (Some("test"), Some("canary done"))
    );

    // Without --json: tables a person reads, with who changed what.
    let row = |text: &str, name: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{text}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    let list = fig_toggle_text(&stack, &["list"]);
    assert!(list.starts_with("  name "), "{list}");
    let catalog = row(&list, "catalog.reads");
    assert_eq!(
        (
            catalog[1].as_str(),
            catalog[2].as_str(),
            catalog[3].as_str()
        ),
        ("on", "default", "100%"),
        "{list}"
    );
    assert_eq!(catalog.last().map(String::as_str), Some("test"), "{list}");
    assert_eq!(row(&list, "wishlist.reads")[1], "off", "{list}");
    assert_eq!(
        row(&list, "wishlist.reads").last().unwrap(),
        "fig",
        "{list}"
    );
    let one = fig_toggle_text(&stack, &["get", "catalog.reads"]);
    assert!(one.contains("by test: canary done"), "{one}");
    let history = fig_toggle_text(&stack, &["audit", "catalog.reads"]);
    assert!(history.contains("off → on"), "{history}");
    assert!(history.contains("created off"), "{history}");
    let stale = fig_toggle_text(&stack, &["stale", "--days", "0"]);
    assert!(
        row(&stale, "wishlist.reads").contains(&"off".to_string()),
        "{stale}"
    );
    let edited = fig_toggle_text(
        &stack,
        &["rollout", "wishlist.reads", "30", "--reason", "canary"],
    );
    assert!(
        edited.starts_with("wishlist.reads: on, flexibleRollout 30%"),
        "{edited}"
    );

    stack.signal(Signal::SIGINT);
    assert!(stack.wait(Duration::from_secs(60)).success());
}

#[test]
fn fig_up_says_what_it_is_doing_phase_by_phase() {
    let stack = Stack::start_capturing_stderr(&["--cutover"]);
    // The banner comes once everything serves: its URLs answer at once.
    let router = stack.value("router");
    assert_eq!(get(&format!("{router}/catalog/albums/1")).0, 200);
    assert!(
        stack.banner[0].starts_with("fig: stack is up"),
        "{:?}",
        stack.banner
    );
    let stderr = stack.stop_reading_stderr();
    // Each phase starts and ends, in order; not on a terminal, as plain lines.
    let phases = [
        "[1/7] starting PostgreSQL",
        "[2/7] migrating databases",
        "[3/7] seeding the monolith",
        "[4/7] copying into the services",
        "[5/7] feeding the reporting database",
        "[6/7] starting the servers",
        "[7/7] cutting over",
    ];
    let mut at = 0;
    for phase in phases {
        for end in ["...", ": "] {
            let line = format!("fig: {phase}{end}");
            let found = stderr[at..]
                .find(&line)
                .unwrap_or_else(|| panic!("no {line:?} after byte {at} in\n{stderr}"));
            at += found + line.len();
        }
    }
    assert!(
        !stderr.contains('\r'),
        "no redrawn lines off a terminal:\n{stderr}"
    );
    let copied = stderr
        .lines()
        .find_map(|l| l.strip_prefix("fig: [4/7] copying into the services: "))
        .unwrap();
    let rows: u64 = copied
        .split(' ')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(rows > 100, "{copied}");
    assert!(stderr.contains("seeded 4 artists, 40 albums"), "{stderr}");
}

/// A `--data-dir` for a cluster kept between runs, inside a temporary directory the `postgres`
/// user can enter (the guard removes it).
fn kept_data_dir() -> (tempfile::TempDir, PathBuf) {
    let keep = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        keep.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = keep.path().join("pg");
    (keep, data)
}

#[test]
fn data_dir_keeps_data_between_runs() {
    let (_keep, data) = kept_data_dir();
    let data_arg = data.to_str().unwrap();

    let first = Stack::start(&["--data-dir", data_arg]);
    assert!(first.banner[0].contains("seeded"), "{:?}", first.banner);
    let (status, created) = post(
        &format!("{}/customers", first.value("monolith")),
        serde_json::json!({"name": "Kept", "email": "kept@example.com"}),
    );
    assert_eq!(status, 201);
    first.signal(Signal::SIGTERM);
    assert!(first.wait(Duration::from_secs(60)).success());
    assert!(data.join("PG_VERSION").exists(), "data kept");

    let second = Stack::start(&["--data-dir", data_arg]);
    assert!(
        second.banner[0].contains("kept existing data"),
        "{:?}",
        second.banner
    );
    let (status, customer) = get(&format!(
        "{}/customers/{}",
        second.value("monolith"),
        created["id"]
    ));
    assert_eq!(status, 200);
    assert_eq!(customer["email"], "kept@example.com");
    second.signal(Signal::SIGINT);
    assert!(second.wait(Duration::from_secs(60)).success());
}

#[test]
fn a_killed_fig_leaves_no_server_behind() {
    let stack = Stack::start(&["--no-seed"]);
    let data = PathBuf::from(stack.value("data"));
    let pid_file = data.join("postmaster.pid");
    let postmaster: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    stack.signal(Signal::SIGKILL);
    stack.wait(Duration::from_secs(10));
    assert!(
        wait_until_gone(&data, Duration::from_secs(60)),
        "watchdog removed {}",
        data.display()
    );
    // The postmaster is gone too (signal 0 only checks existence).
    let deadline = Instant::now() + Duration::from_secs(30);
    while kill(Pid::from_raw(postmaster), None).is_ok() {
        assert!(
            Instant::now() < deadline,
            "postmaster {postmaster} still running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn patch(url: &str, body: serde_json::Value) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .patch(url)
            .json(&body)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    })
}

fn text(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

#[test]
fn the_services_follow_the_monolith_through_replication() {
    let stack = Stack::start(&[]);
    let monolith = stack.value("monolith");
    let catalog = stack.value("catalog");
    assert_eq!(
        patch(
            &format!("{monolith}/catalog/albums/1"),
            serde_json::json!({"stock": 4242})
        ),
        200
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, album) = get(&format!("{catalog}/catalog/albums/1"));
        if album["stock"] == 4242 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the catalog service still shows {album}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let config = stack.value("fig replication status --config");
    let status = Command::new(env!("CARGO_BIN_EXE_fig"))
        .args(["replication", "status", "--config", &config])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{out}");
    for pipeline in ["catalog", "wishlist"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(pipeline) && l.contains("streaming")),
            "{out}"
        );
    }
    let verify = Command::new(env!("CARGO_BIN_EXE_fig"))
        .args(["verify", "--config", &config])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{report}");
    assert!(
        report.contains("catalog.albums -> catalog.albums"),
        "{report}"
    );

    let line = stack
        .banner
        .iter()
        .find(|l| l.contains("/metrics"))
        .expect("a metrics line");
    let start = line.find("http://").unwrap();
    let end = line[start..].find(')').unwrap() + start;
    let metrics = text(&line[start..end]);
    assert!(
        metrics.contains("fig_replication_up{pipeline=\"catalog\",phase=\"streaming\"} 1"),
        "{metrics}"
    );
    stack.signal(Signal::SIGINT);
    assert!(stack.wait(Duration::from_secs(60)).success());
}

/// What every table of a database holds (the engine's own `fig_replication` aside): row count and
/// a hash of the rows, by table.
fn tables(url: &str) -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = replication::source::connect(url).await.expect("connect");
        let names: Vec<String> = client
            .query(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'fig_replication') \
                 ORDER BY 1",
                &[],
            )
            .await
            .expect("list the tables")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut hashes = Vec::new();
        for name in names {
            let hash: String = client
                .query_one(
                    &format!(
                        "SELECT count(*)::text || ' rows, ' || \
                         coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {name} t"
                    ),
                    &[],
                )
                .await
                .expect("hash a table")
                .get(0);
            hashes.push((name, hash));
        }
        hashes
    })
}

/// Runs `fig` with `args`; its exit code, stdout and stderr.
fn fig(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fig"))
        .args(args)
        .output()
        .expect("fig runs");
    (
        out.status.code().expect("fig exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn corpus(name: &str) -> String {
    format!(
        "{}/../tests/parallel_run/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn the_corpora_replay_without_a_real_difference_and_the_router_shadows_agree() {
    // Seeded so that every id the corpora mean to find exists.
    let stack = Stack::start_seeded("0.05", &[]);
    let monolith = stack.value("monolith");
    let postgres = stack.value("postgres");
    let databases: Vec<String> = ["monolith", "catalog", "wishlist"]
        .iter()
        .map(|db| format!("{}/{db}", postgres.rsplit_once('/').unwrap().0))
        .collect();
    // The services serve once the initial copy is done: from then on their tables hold the
    // monolith's rows, and only a write could change any table.
    for service in ["catalog", "wishlist"] {
        assert_eq!(get(&format!("{}/status", stack.value(service))).0, 200);
    }
    let before: Vec<_> = databases.iter().map(|url| tables(url)).collect();

    for (file, service, routes) in [
        (
            "catalog.jsonl",
            "catalog",
            &["GET /catalog/", "POST /catalog/", "PATCH /catalog/"][..],
        ),
        (
            "wishlist.jsonl",
            "wishlist",
            &["GET /wishlists/", "PUT /wishlists/", "DELETE /wishlists/"][..],
        ),
    ] {
        let path = corpus(file);
        let candidate = stack.value(service);
        let (code, stdout, stderr) = fig(&[
            "replay",
            &path,
            "--primary",
            &monolith,
            "--candidate",
            &candidate,
            "--json",
        ]);
        let report: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert_eq!(
            report["totals"],
            serde_json::json!({
                "compared": lines, "matched": lines, "real": 0, "transient": 0, "failed": 0
            }),
            "{file}: {report:#}"
        );
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(report["writes"].as_u64().unwrap() >= 40, "{report:#}");
        // Each route answered with several statuses: successes and errors were both compared.
        for route in routes {
            let statuses = &report["routes"][route]["statuses"];
            assert!(
                statuses.as_object().is_some_and(|s| s.len() >= 2),
                "{file}: {route} answered with one status only: {statuses}"
            );
        }
    }
    let after: Vec<_> = databases.iter().map(|url| tables(url)).collect();
    assert_eq!(after, before, "the replays changed nothing on any side");

    // The router's own parallel run agrees: every bodiless read of the corpora, sent through the
    // router with both shadow toggles on, is compared and matches.
    for toggle in ["catalog.shadow", "wishlist.shadow"] {
        fig_toggle(&stack, &["enable", toggle, "--reason", "parallel run"]);
    }
    let router = stack.value("router");
    let mut sent: std::collections::BTreeMap<&str, u64> = Default::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    for file in ["catalog.jsonl", "wishlist.jsonl"] {
        for line in std::fs::read_to_string(corpus(file)).unwrap().lines() {
            let request: serde_json::Value = serde_json::from_str(line).unwrap();
            if request["method"] != "GET" || !request["body"].is_null() {
                continue;
            }
            let target = request["target"].as_str().unwrap();
            let mut get = client.get(format!("{router}{target}"));
            for (name, value) in request["headers"].as_object().into_iter().flatten() {
                get = get.header(name.as_str(), value.as_str().unwrap());
            }
            rt.block_on(async { get.send().await.expect("routed").bytes().await.unwrap() });
            let route = if target.starts_with("/catalog/") {
                "GET /catalog/"
            } else {
                "GET /wishlists/"
            };
            *sent.entry(route).or_default() += 1;
        }
    }
    let (admin, token) = (stack.value("admin"), stack.value("token"));
    let diff = ["diff", "--admin-url", &admin, "--token", &token];
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let (code, stdout, stderr) = fig(&[&diff[..], &["--json"]].concat());
        assert!(code == 0 || code == 1, "{stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let done = sent.iter().all(|(route, n)| {
            let r = &report["routes"][route];
            ["compared", "failed", "dropped", "too_large"]
                .iter()
                .map(|f| r[f].as_u64().unwrap_or(0))
                .sum::<u64>()
                >= *n
        });
        if done {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "shadows not all compared: {report:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The wishlist service reads albums through the router too: its batch reads are shadowed
    // as well, so the catalog's route compares more than the corpus sent.
    for (route, n) in &sent {
        let r = &report["routes"][route];
        let count = |f: &str| r[f].as_u64().unwrap_or(0);
        assert!(count("compared") >= *n, "{route}: {r:#}");
        assert_eq!(count("matched"), count("compared"), "{route}: {r:#}");
        assert_eq!(
            (count("real"), count("failed"), count("dropped")),
            (0, 0, 0),
            "{route}: {r:#}"
        );
    }
    let (code, table, stderr) = fig(&diff);
    assert_eq!(code, 0, "{table}{stderr}");
    assert!(
        table.starts_with("ROUTE ")
            && table.contains("GET /catalog/")
            && table.contains("GET /wishlists/"),
        "{table}"
    );

    stack.signal(Signal::SIGINT);
    assert!(stack.wait(Duration::from_secs(60)).success());
}

/// The router's parallel run on a running stack, over HTTP: requests through the router, its
/// report from the admin API.
struct ParallelRun {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    router: String,
    admin: String,
    token: String,
}

impl ParallelRun {
    /// Turns `catalog.shadow` on for every request of `stack`.
    fn on(stack: &Stack) -> ParallelRun {
        fig_toggle(
            stack,
            &["enable", "catalog.shadow", "--reason", "parallel run"],
        );
        ParallelRun {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::new(),
            router: stack.value("router"),
            admin: stack.value("admin"),
            token: stack.value("token"),
        }
    }

    /// Sends `method target` through the router: the client's status and how long it waited.
    fn send(
        &self,
        method: reqwest::Method,
        target: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, Duration) {
        self.rt.block_on(async {
            let mut request = self
                .client
                .request(method, format!("{}{target}", self.router));
            if let Some(body) = body {
                request = request.json(&body);
            }
            let started = Instant::now();
            let res = request.send().await.expect("routed");
            let status = res.status().as_u16();
            res.bytes().await.expect("the answer");
            (status, started.elapsed())
        })
    }

    fn get(&self, target: &str) -> (u16, Duration) {
        self.send(reqwest::Method::GET, target, None)
    }

    /// `GET /admin/diffs`: every route's report.
    fn report(&self) -> serde_json::Value {
        self.rt.block_on(async {
            let res = self
                .client
                .get(format!("{}/admin/diffs", self.admin))
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("the report");
            assert_eq!(res.status().as_u16(), 200);
            res.json().await.expect("JSON")
        })
    }

    /// `DELETE /admin/diffs`: forgets every route's report.
    fn forget(&self) {
        self.rt.block_on(async {
            let res = self
                .client
                .delete(format!("{}/admin/diffs", self.admin))
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("forget the reports");
            assert_eq!(res.status().as_u16(), 200);
        })
    }

    /// `route`'s report once `shadows` copies have come to something (compared, failed,
    /// dropped or too large), polled for up to 30 s.
    fn settled(&self, route: &str, shadows: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let report = self.report()["routes"][route].clone();
            let counted: u64 = ["compared", "failed", "dropped", "too_large"]
                .iter()
                .map(|f| report[f].as_u64().unwrap_or(0))
                .sum();
            if counted >= shadows {
                assert_eq!(counted, shadows, "more shadows than requests: {report:#}");
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "{route}: {counted} of {shadows} shadows counted: {report:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Forgets the reports, sends each GET `target` `n` times (the monolith answers `200`), and
    /// returns `GET /catalog/`'s report once every copy is counted, with the client's waits.
    fn phase(&self, requests: &[(&str, u64)]) -> (serde_json::Value, Vec<(String, Duration)>) {
        self.forget();
        let mut waits = Vec::new();
        for (target, n) in requests {
            for _ in 0..*n {
                let (status, waited) = self.get(target);
                assert_eq!(status, 200, "the client's answer to {target}");
                waits.push((target.to_string(), waited));
            }
        }
        let sent = requests.iter().map(|(_, n)| n).sum();
        (self.settled("GET /catalog/", sent), waits)
    }
}

/// A report's counts, `[compared, matched, real, transient, failed, dropped]`.
fn counts(report: &serde_json::Value) -> [u64; 6] {
    [
        "compared",
        "matched",
        "real",
        "transient",
        "failed",
        "dropped",
    ]
    .map(|f| report[f].as_u64().unwrap_or(0))
}

/// A report's `paths`, as (path, count) pairs.
fn paths(report: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    report["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, n)| (path.clone(), n.as_u64().unwrap()))
        .collect()
}

const ALBUM_FIELDS: [&str; 9] = [
    "id",
    "sku",
    "title",
    "artist",
    "genre",
    "release_year",
    "price",
    "stock",
    "updated_at",
];

#[test]
fn a_catalog_service_with_deliberate_defects_is_reported_at_each_path_with_its_count() {
    // Albums 1 to 40; the list's first page (1 to 4) holds no faulted album.
    let stack = Stack::start(&[
        "--catalog-faults",
        "price+1:11,12; drop:genre:13; 404:14; slow:15=1s; slow:16=2500ms; reverse:albums",
    ]);
    let run = ParallelRun::on(&stack);

    // A price off by one: the path of the amount, one count per request, the control matched.
    let (report, _) = run.phase(&[
        ("/catalog/albums/11", 3),
        ("/catalog/albums/12", 2),
        ("/catalog/albums/1", 2),
    ]);
    assert_eq!(counts(&report), [7, 2, 5, 0, 0, 0], "{report:#}");
    assert_eq!(paths(&report), [("$.price.amount_cents".into(), 5)].into());
    let difference = &report["samples"][0]["differences"][0];
    assert_eq!(difference["kind"], "value", "{report:#}");
    let cents = |side: &str| difference[side].as_str().unwrap().parse::<i64>().unwrap();
    assert_eq!(cents("candidate"), cents("primary") + 1, "{report:#}");

    // A missing field.
    let (report, _) = run.phase(&[("/catalog/albums/13", 4), ("/catalog/albums/1", 1)]);
    assert_eq!(counts(&report), [5, 1, 4, 0, 0, 0], "{report:#}");
    assert_eq!(paths(&report), [("$.genre".into(), 4)].into());
    assert_eq!(
        report["samples"][0]["differences"][0]["kind"], "missing_in_candidate",
        "{report:#}"
    );

    // A reordered array: every field of the list's items that differs between albums, under
    // `$.items[*]`, once per request (the seed gives four albums four titles and prices, one
    // `updated_at`); the cursor and the batch (not reordered) agree.
    let (report, _) = run.phase(&[
        ("/catalog/albums?limit=4", 3),
        ("/catalog/albums/batch?ids=1,2,3", 2),
    ]);
    assert_eq!(counts(&report), [5, 2, 3, 0, 0, 0], "{report:#}");
    let found = paths(&report);
    for field in ["id", "sku", "title", "price.amount_cents"] {
        assert_eq!(
            found.get(&format!("$.items[*].{field}")),
            Some(&3),
            "{report:#}"
        );
    }
    assert!(
        found
            .iter()
            .all(|(path, n)| path.starts_with("$.items[*].") && *n == 3),
        "{report:#}"
    );

    // 404 instead of 200: `status`, and the body (every album field missing, the error extra).
    let (report, _) = run.phase(&[("/catalog/albums/14", 2)]);
    assert_eq!(counts(&report), [2, 0, 2, 0, 0, 0], "{report:#}");
    let mut want: std::collections::BTreeMap<String, u64> =
        ALBUM_FIELDS.iter().map(|f| (format!("$.{f}"), 2)).collect();
    want.insert("$.error".into(), 2);
    want.insert("status".into(), 2);
    assert_eq!(paths(&report), want, "{report:#}");
    let sample = &report["samples"][0];
    assert_eq!(
        (&sample["primary_status"], &sample["candidate_status"]),
        (&serde_json::json!(200), &serde_json::json!(404))
    );

    // A slow path: the client is answered by the monolith without the delay. Within the
    // capability's timeout (2 s) the copy is compared late and matches; past it, it is failed.
    let (report, waits) = run.phase(&[("/catalog/albums/15", 3), ("/catalog/albums/16", 2)]);
    assert_eq!(counts(&report), [3, 3, 0, 0, 2, 0], "{report:#}");
    assert!(paths(&report).is_empty(), "{report:#}");
    for (target, waited) in waits {
        assert!(
            waited < Duration::from_secs(1),
            "the client waited {waited:?} for {target}"
        );
    }

    stack.signal(Signal::SIGINT);
    assert!(stack.wait(Duration::from_secs(60)).success());
}

#[test]
fn a_read_right_after_a_write_counts_as_transient_and_a_defect_on_the_route_as_real() {
    let stack = Stack::start(&["--catalog-faults", "price+1:12"]);
    let run = ParallelRun::on(&stack);
    run.forget();
    // Each write (the monolith owns them) is read back at once through the router, before
    // replication has (usually) brought it to the catalog service. The next write waits until
    // both copies are counted: a copy re-asked while the row moves on would differ for real.
    const TRIES: u64 = 8;
    for i in 1..=TRIES {
        let body = serde_json::json!({"stock": 500 + i});
        let (status, _) = run.send(reqwest::Method::PATCH, "/catalog/albums/5", Some(body));
        assert_eq!(status, 200);
        assert_eq!(run.get("/catalog/albums/5").0, 200);
        run.settled("PATCH /catalog/", i);
        run.settled("GET /catalog/", i);
    }
    for _ in 0..2 {
        assert_eq!(run.get("/catalog/albums/12").0, 200);
    }
    let report = run.settled("GET /catalog/", TRIES + 2);
    let [compared, matched, real, transient, failed, dropped] = counts(&report);
    eprintln!("lag: {transient} transient, {matched} matched of {TRIES} reads after a write");
    assert_eq!(
        (compared, real, failed, dropped),
        (TRIES + 2, 2, 0, 0),
        "{report:#}"
    );
    assert_eq!(matched + transient, TRIES, "{report:#}");
    assert!(
        transient >= 1,
        "no read caught replication behind: {report:#}"
    );
    // The real differences are the defect's alone.
    assert_eq!(paths(&report), [("$.price.amount_cents".into(), 2)].into());
    for sample in report["samples"].as_array().unwrap() {
        assert_eq!(sample["request"], "GET /catalog/albums/12", "{report:#}");
    }
    // The writes' dry runs on the replica agree with the monolith's writes.
    let writes = run.settled("PATCH /catalog/", TRIES);
    assert_eq!(counts(&writes)[..3], [TRIES, TRIES, 0], "{writes:#}");

    stack.signal(Signal::SIGINT);
    assert!(stack.wait(Duration::from_secs(60)).success());
}

/// A query's rows as one sorted text, on `url`.
fn sorted_rows(url: &str, sql: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = replication::source::connect(url).await.expect("connect");
        client
            .query_one(
                &format!(
                    "SELECT coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '') \
                     FROM ({sql}) r"
                ),
                &[],
            )
            .await
            .expect("query")
            .get(0)
    })
}

#[test]
fn the_reporting_database_answers_as_the_sources_after_writes_through_the_router() {
    let stack = Stack::start(&[]);
    let (router, reporting, monolith_db) = (
        stack.value("router"),
        stack.value("reporting"),
        stack.value("postgres"),
    );
    let (status, customer) = post(
        &format!("{router}/customers"),
        serde_json::json!({"name": "Analyst's Customer", "email": "reported@example.com"}),
    );
    assert_eq!(status, 201, "{customer}");
    let customer = customer["id"].as_i64().unwrap();
    for album in 1..=3 {
        let status = put(&format!("{router}/wishlists/{customer}/items/{album}"));
        assert!((200..300).contains(&status), "{status}");
    }
    let (status, order) = post(
        &format!("{router}/orders"),
        serde_json::json!({"customer_id": customer, "lines": [
            {"album_id": 1, "quantity": 2}, {"album_id": 2, "quantity": 1}]}),
    );
    assert_eq!(status, 201, "{order}");

    reports_catch_up(&reporting, &monolith_db);
    // `fig report` prints them, as tables and as JSON.
    let (code, tables, stderr) = fig(&["report", "--database-url", &reporting, "--limit", "1000"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(tables.contains("Customers by lifetime value"), "{tables}");
    assert!(tables.contains("Analyst's Customer"), "{tables}");
    let (code, printed, stderr) = fig(&[
        "report",
        "--database-url",
        &reporting,
        "--limit",
        "1000",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert!(
        report["top_customers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["customer"] == "Analyst's Customer"),
        "{report}"
    );
    assert!(
        !report["most_wished"].as_array().unwrap().is_empty(),
        "{report}"
    );
    // The new customer is there, with the order just placed.
    assert_eq!(
        sorted_rows(
            &reporting,
            &format!(
                "SELECT orders FROM reporting_v1.customer_lifetime_value \
                 WHERE customer_id = {customer}"
            )
        ),
        "(1)"
    );
    stack.signal(Signal::SIGINT);
    assert!(stack.wait(Duration::from_secs(60)).success());
}

/// Places an order and adds a wish through the router for a new customer; returns its id.
fn order_and_wish(router: &str, email: &str) -> i64 {
    let (status, customer) = post(
        &format!("{router}/customers"),
        serde_json::json!({"name": "Reported", "email": email}),
    );
    assert_eq!(status, 201, "{customer}");
    let customer = customer["id"].as_i64().unwrap();
    let (status, order) = post(
        &format!("{router}/orders"),
        serde_json::json!({"customer_id": customer, "lines": [{"album_id": 3, "quantity": 1}]}),
    );
    assert_eq!(status, 201, "{order}");
    let status = put(&format!("{router}/wishlists/{customer}/items/4"));
    assert!((200..300).contains(&status), "{status}");
    customer
}

/// Waits until each reporting_v1 relation equals the same figures computed on the monolith's own
/// tables.
fn reports_catch_up(reporting: &str, monolith_db: &str) {
    let checks = [
        (
            "SELECT artist_id, artist_name, day, currency, units, revenue_cents \
             FROM reporting_v1.sales_by_artist_day",
            "SELECT al.artist_id, a.name, (o.placed_at AT TIME ZONE 'UTC')::date, o.currency, \
                    sum(l.quantity)::bigint, sum(l.quantity * l.unit_price_cents)::bigint \
               FROM orders.orders o JOIN orders.order_lines l ON l.order_id = o.id \
               LEFT JOIN catalog.albums al ON al.id = l.album_id \
               LEFT JOIN catalog.artists a ON a.id = al.artist_id \
              WHERE o.status = 'placed' GROUP BY 1, 2, 3, 4",
        ),
        (
            "SELECT album_id, wishes, stock FROM reporting_v1.most_wished_albums",
            "SELECT w.album_id, count(*)::bigint, al.stock FROM wishlist.items w \
               LEFT JOIN catalog.albums al ON al.id = w.album_id GROUP BY 1, 3",
        ),
        (
            "SELECT customer_id, name, currency, orders, revenue_cents \
             FROM reporting_v1.customer_lifetime_value",
            "SELECT o.customer_id, c.name, o.currency, count(*)::bigint, sum(o.total_cents)::bigint \
               FROM orders.orders o LEFT JOIN customers.customers c ON c.id = o.customer_id \
              WHERE o.status = 'placed' GROUP BY 1, 2, 3",
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    for (view, reference) in checks {
        let expected = sorted_rows(monolith_db, reference);
        assert!(!expected.is_empty(), "{reference}");
        loop {
            let got = sorted_rows(reporting, view);
            if got == expected {
                break;
            }
            assert!(Instant::now() < deadline, "{view}:\n{got}\n!=\n{expected}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn the_reporting_feeds_resume_after_their_connections_drop_and_after_fig_is_killed() {
    let (_keep, data) = kept_data_dir();
    let data_arg = data.to_str().unwrap();
    let first = Stack::start(&["--data-dir", data_arg]);
    let (router, reporting, monolith_db) = (
        first.value("router"),
        first.value("reporting"),
        first.value("postgres"),
    );
    order_and_wish(&router, "before@example.com");
    reports_catch_up(&reporting, &monolith_db);

    // The reporting database drops every connection, the feeds' included (as a restart of it
    // would): they start again and go on where they were.
    sorted_rows(
        &monolith_db,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
          WHERE datname = 'reporting' AND pid <> pg_backend_pid()",
    );
    order_and_wish(&router, "dropped@example.com");
    reports_catch_up(&reporting, &monolith_db);

    // The process running the feeds is killed; the next `fig up` on the same data resumes them.
    let pid_file = data.join("postmaster.pid");
    first.signal(Signal::SIGKILL);
    first.wait(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(60);
    while pid_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the cluster did not stop after fig was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = Stack::start(&["--data-dir", data_arg]);
    let (router, reporting, monolith_db) = (
        second.value("router"),
        second.value("reporting"),
        second.value("postgres"),
    );
    order_and_wish(&router, "after@example.com");
    reports_catch_up(&reporting, &monolith_db);
    second.signal(Signal::SIGINT);
    assert!(second.wait(Duration::from_secs(60)).success());
}
