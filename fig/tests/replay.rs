//! `fig replay` and `fig diff`, the real binary against small fake sides on port 0 whose answers
//! are known, so that every number in the report can be checked: a candidate that changes one
//! field, a field that changes on every call (noise), a side that is behind and catches up
//! (transient), writes that must only ever arrive as dry runs, and a side that does not honour
//! them. (Replaying the corpora against the real monolith and services is in `up.rs`.)

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

const PROBE: &str = ".fig-dry-run-probe";

/// What a fake side does and what it saw.
#[derive(Default)]
struct Fake {
    /// Changes the price of every third album by one cent, and says it is behind (with a wrong
    /// title) every other time album 7 is asked for, caught up the next time. (Album 11 changes
    /// on both sides while it is compared.)
    candidate: bool,
    /// Refuses a malformed `X-Fig-Dry-Run` with `400`, as the monolith and services do.
    honours_dry_run: bool,
    /// Answers so far, every path together (what `served_at` shows: noise); the candidate's
    /// count from a million, so that the two sides never show the same.
    served: AtomicU64,
    /// Asks per path.
    asks: Mutex<HashMap<String, u64>>,
    /// Writes (the probe aside) that came with `X-Fig-Dry-Run: 1`, and without.
    dry_writes: AtomicU64,
    real_writes: AtomicU64,
}

async fn answer(req: HttpRequest, fake: web::Data<Fake>) -> HttpResponse {
    let dry_run = req
        .headers()
        .get("x-fig-dry-run")
        .map(|v| v.to_str().unwrap_or("").to_string());
    if fake.honours_dry_run && dry_run.as_deref().is_some_and(|v| v != "1") {
        return HttpResponse::BadRequest().json(json!({"error": {
            "code": "bad_header", "message": "X-Fig-Dry-Run must be 1", "field": "X-Fig-Dry-Run"
        }}));
    }
    let path = req.path().to_string();
    if path.ends_with(PROBE) {
        return HttpResponse::NotFound().json(json!({"error": {"code": "not_found"}}));
    }
    if req.method() != actix_web::http::Method::GET {
        match dry_run.as_deref() {
            Some("1") => fake.dry_writes.fetch_add(1, Ordering::SeqCst),
            _ => fake.real_writes.fetch_add(1, Ordering::SeqCst),
        };
    }
    let asked = {
        let mut asks = fake.asks.lock().unwrap();
        let n = asks.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let served = fake.served.fetch_add(1, Ordering::SeqCst) + u64::from(fake.candidate) * 1_000_000;
    if path == "/catalog/artists" {
        // A new id on every call, on either side: noise, never a difference.
        return HttpResponse::Created().json(json!({"id": 1000 + served, "name": "A"}));
    }
    let Some(id) = path
        .strip_prefix("/catalog/albums/")
        .and_then(|id| id.parse::<u64>().ok())
    else {
        return HttpResponse::NotFound().json(json!({"error": {"code": "not_found"}}));
    };
    let mut album = json!({
        "id": id,
        "title": format!("Album {id}"),
        "price": {"amount_cents": 1000 + id, "currency": "USD"},
        "served_at": served,
    });
    let mut position = "0/100";
    if fake.candidate {
        if id % 3 == 0 {
            album["price"]["amount_cents"] = json!(1001 + id);
        }
        if id == 7 && asked % 2 == 1 {
            album["title"] = json!("not yet replicated");
            position = "0/50";
        }
    }
    // Album 11 moves on while it is compared: the candidate has seen a change the primary's
    // first answers had not, and the primary, asked again, has moved on once more.
    if id == 11 {
        let (title, at) = match (fake.candidate, asked) {
            (false, 1 | 2) => ("Album 11", "0/100"),
            (true, n) if n % 2 == 1 => ("Album 11 v2", "0/200"),
            _ => ("Album 11 v3", "0/300"),
        };
        album["title"] = json!(title);
        position = at;
    }
    HttpResponse::Ok()
        .insert_header(("x-fig-db-position", position))
        .json(album)
}

/// A fake side on 127.0.0.1:0; its base URL.
fn spawn(fake: web::Data<Fake>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(fake.clone())
            .default_service(web::to(answer))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    base
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn fig(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fig"))
        .args(args)
        .output()
        .await
        .expect("fig runs");
    Run {
        code: out.status.code().expect("fig exited"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Albums 1 to 12 read, two artists created.
fn corpus(dir: &tempfile::TempDir) -> String {
    let mut text = String::new();
    for id in 1..=12 {
        text.push_str(&format!(
            "{{\"method\":\"GET\",\"target\":\"/catalog/albums/{id}\",\"body\":null}}\n"
        ));
    }
    for name in ["One", "Two"] {
        text.push_str(&format!(
            "{{\"method\":\"POST\",\"target\":\"/catalog/artists\",\"body\":{{\"name\":\"{name}\"}}}}\n"
        ));
    }
    let path = dir.path().join("corpus.jsonl");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn sides(candidate_honours: bool) -> (web::Data<Fake>, web::Data<Fake>, String, String) {
    let primary = web::Data::new(Fake {
        honours_dry_run: true,
        ..Fake::default()
    });
    let candidate = web::Data::new(Fake {
        candidate: true,
        honours_dry_run: candidate_honours,
        ..Fake::default()
    });
    let (p, c) = (spawn(primary.clone()), spawn(candidate.clone()));
    (primary, candidate, p, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_field_is_a_real_difference_at_its_path_and_fails_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let file = corpus(&dir);
    let (primary, candidate, p, c) = sides(true);

    let run = fig(&[
        "replay",
        &file,
        "--primary",
        &p,
        "--candidate",
        &c,
        "--json",
    ])
    .await;
    assert_eq!(run.code, 1, "a real difference fails: {}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("--json prints JSON");
    let reads = &report["routes"]["GET /catalog/"];
    // Albums 3, 6, 9 and 12 differ in price; 7 differed only until the candidate caught up, and
    // 11 until each side had been asked again once it was behind the other.
    assert_eq!(
        (
            &reads["compared"],
            &reads["matched"],
            &reads["real"],
            &reads["transient"],
            &reads["failed"]
        ),
        (&json!(12), &json!(6), &json!(4), &json!(2), &json!(0)),
        "{reads}"
    );
    assert_eq!(reads["paths"], json!({"$.price.amount_cents": 4}));
    assert_eq!(reads["statuses"], json!({"200": 12}));
    assert!(
        reads["noise"]
            .as_array()
            .unwrap()
            .contains(&json!("$.served_at")),
        "a field that changes on every call is noise: {reads}"
    );
    assert_eq!(reads["noise_hits"]["$.served_at"], 12, "{reads}");
    let samples = reads["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3, "three samples are kept");
    assert_eq!(samples[0]["line"], 3);
    assert_eq!(samples[0]["request"], "GET /catalog/albums/3");
    assert_eq!(
        samples[0]["differences"],
        json!([{"path": "$.price.amount_cents", "kind": "value", "primary": "1003", "candidate": "1004"}])
    );
    let writes = &report["routes"]["POST /catalog/"];
    assert_eq!(
        (&writes["compared"], &writes["matched"], &writes["real"]),
        (&json!(2), &json!(2), &json!(0)),
        "ids drawn on every call are noise: {writes}"
    );
    assert!(writes["noise"].as_array().unwrap().contains(&json!("$.id")));
    assert_eq!(
        report["totals"],
        json!({"compared": 14, "matched": 8, "real": 4, "transient": 2, "failed": 0})
    );
    assert_eq!(
        (&report["requests"], &report["writes"]),
        (&json!(14), &json!(2))
    );
    // Each write: twice to the primary, once to the candidate, every time as a dry run.
    assert_eq!(primary.dry_writes.load(Ordering::SeqCst), 4);
    assert_eq!(candidate.dry_writes.load(Ordering::SeqCst), 2);
    assert_eq!(primary.real_writes.load(Ordering::SeqCst), 0);
    assert_eq!(candidate.real_writes.load(Ordering::SeqCst), 0);

    let run = fig(&["replay", &file, "--primary", &p, "--candidate", &c]).await;
    assert_eq!(run.code, 1);
    for expected in [
        "GET /catalog/         12        6     4          2       0",
        "  4 real, at:\n         4  $.price.amount_cents\n",
        "  line 3: GET /catalog/albums/3  (200 vs 200)\n    $.price.amount_cents  value  primary 1003  candidate 1004\n",
        "noise, not counted (differs between two answers of the primary): $.served_at (12)",
        "FAIL: 4 real differences and 0 failed requests in 14 compared",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected:?} in\n{}",
            run.stdout
        );
    }

    // The same side on both ends: nothing real, exit 0.
    let run = fig(&["replay", &file, "--primary", &p, "--candidate", &p]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("PASS: 14 compared, no real difference"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_is_sent_to_a_side_that_does_not_honour_dry_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = corpus(&dir);
    let (primary, candidate, p, c) = sides(false);

    let run = fig(&["replay", &file, "--primary", &p, "--candidate", &c]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "the candidate at {c} does not check X-Fig-Dry-Run"
        )) && run.stderr.contains("--reads-only"),
        "{}",
        run.stderr
    );
    let asked = |fake: &Fake| fake.asks.lock().unwrap().len();
    assert_eq!(
        (asked(&primary), asked(&candidate)),
        (0, 0),
        "nothing but the probes was sent"
    );

    let run = fig(&[
        "replay",
        &file,
        "--primary",
        &p,
        "--candidate",
        &c,
        "--reads-only",
        "--json",
    ])
    .await;
    assert_eq!(run.code, 1, "the reads still differ: {}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (&report["skipped_writes"], &report["writes"]),
        (&json!(2), &json!(0))
    );
    assert_eq!(report["totals"]["compared"], 12);
    assert!(report["routes"].get("POST /catalog/").is_none());
    for fake in [&primary, &candidate] {
        assert_eq!(fake.dry_writes.load(Ordering::SeqCst), 0);
        assert_eq!(fake.real_writes.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_io_errors_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = corpus(&dir);
    let (_, _, p, _) = sides(true);
    let p = p.as_str();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"method\":\"GET\",\"target\":\"/a\"}\n{\"method\":\"GET\",\"target\":\"a\"}\n",
    )
    .unwrap();
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let missing = dir.path().join("missing.jsonl");
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, "not a table [").unwrap();
    let cases: [(&str, Vec<&str>, &str); 5] = [
        (
            "a missing corpus",
            vec![missing.to_str().unwrap(), "--primary", p, "--candidate", p],
            "reading",
        ),
        (
            "a bad line, named",
            vec![bad.to_str().unwrap(), "--primary", p, "--candidate", p],
            "line 2",
        ),
        (
            "a base URL with a path",
            vec![&file, "--primary", p, "--candidate", "http://x/catalog"],
            "--candidate",
        ),
        (
            "a side nobody listens on",
            vec![
                &file,
                "--primary",
                p,
                "--candidate",
                &closed,
                "--reads-only",
            ],
            "cannot reach the candidate",
        ),
        (
            "a route table that does not parse",
            vec![
                &file,
                "--primary",
                p,
                "--candidate",
                p,
                "--routes",
                routes.to_str().unwrap(),
            ],
            "routes.toml",
        ),
    ];
    for (what, args, expected) in cases {
        let run = fig(&[&["replay"][..], &args[..]].concat()).await;
        assert_eq!(run.code, 2, "{what}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.starts_with("fig replay: ") && run.stderr.contains(expected),
            "{what}: {}",
            run.stderr
        );
    }
}

/// A router admin API that serves one `GET /admin/diffs` answer to the right token.
fn admin(report: Value) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let body = report.to_string();
    let server = HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            "/admin/diffs",
            web::get().to(move |req: HttpRequest| {
                let body = body.clone();
                async move {
                    let authorised = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v == "Bearer t0k");
                    if authorised {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    } else {
                        HttpResponse::Unauthorized().json(json!({"error": {
                            "code": "unauthorized", "message": "a valid admin token is required"
                        }}))
                    }
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    base
}

fn route(real: u64) -> Value {
    json!({
        "compared": 10, "matched": 10 - real, "real": real, "transient": 0, "dropped": 3,
        "too_large": 1, "failed": 2, "noise": ["$.served_at"], "noise_hits": {"$.served_at": 4},
        "paths": if real > 0 { json!({"$.price.amount_cents": real}) } else { json!({}) },
        "samples": if real > 0 { json!([{
            "request": "GET /catalog/albums/3", "primary_status": 200, "candidate_status": 200,
            "differences": [{"path": "$.price.amount_cents", "kind": "value", "primary": "1003", "candidate": "1004"}],
            "primary_body": "{}", "candidate_body": "{}"
        }]) } else { json!([]) }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fig_diff_prints_the_router_report_and_fails_on_a_real_difference() {
    let report = json!({"limits": {"in_flight": 64},
        "routes": {"GET /catalog/": route(2), "GET /wishlists/": route(0)}});
    let base = admin(report.clone());

    let run = fig(&["diff", "--admin-url", &base, "--token", "t0k"]).await;
    assert_eq!(run.code, 1, "a real difference: {}", run.stderr);
    for expected in [
        "ROUTE            COMPARED  MATCHED  REAL  TRANSIENT  DROPPED  TOO_LARGE  FAILED  TOP PATHS\n",
        "GET /catalog/          10        8     2          0        3          1       2  $.price.amount_cents (2)\n",
        "GET /wishlists/        10       10     0          0        3          1       2\n",
        "  latest real difference: GET /catalog/albums/3  (200 vs 200)\n",
        "    $.price.amount_cents  value  primary 1003  candidate 1004\n",
        "  noise, not counted: $.served_at (4)\n",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected:?} in\n{}",
            run.stdout
        );
    }

    let run = fig(&["diff", "--admin", &base, "--token", "t0k", "--json"]).await;
    assert_eq!(run.code, 1);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        report,
        "--json passes the router's JSON through"
    );

    let run = fig(&["diff", "--admin-url", &base, "--token", "wrong"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("401") && run.stderr.contains("a valid admin token is required"),
        "{}",
        run.stderr
    );

    let clean = admin(json!({"limits": {}, "routes": {"GET /catalog/": route(0)}}));
    let run = fig(&["diff", "--admin-url", &clean, "--token", "t0k"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}
