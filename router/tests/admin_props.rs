//! The admin API answers every input with a response: never a 5xx, never a dropped connection,
//! and every error in the JSON envelope. Two thousand generated requests (a fixed-seed
//! SplitMix64, so a failure replays) across every admin endpoint, then the reproduced cases one
//! by one. Requests go over raw TCP, so the bytes of a target (`%00`, `%ff`, `..`) are sent as
//! written.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use localpg::TestDb;
use router::RouteTable;
use router::run::{self, Config, Running};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::rng::Rng;

const TOKEN: &str = "props-token-5b1e9c";
/// The fixed seed; `ADMIN_PROPS_SEED=<n>` explores another sequence (and replays a failure).
const SEED: u64 = 0x5eed_0ad0_1f00_2026;
const CASES: usize = 2000;

async fn start(db: &TestDb) -> Running {
    let data = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = Config {
        listen: data.local_addr().unwrap(),
        admin_listen: admin.local_addr().unwrap(),
        database_url: db.url().to_string(),
        token: TOKEN.into(),
        table: RouteTable::musiccorp(),
        instance: "props".into(),
        reload_every: Duration::from_secs(30),
        source: router::sync::Source::Store,
        limits: router::proxy::Limits::default(),
        record: None,
        migrations: None,
    };
    run::start_on(config, data, admin)
        .await
        .expect("router starts")
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One request on its own connection, with the token and the who-and-why headers. `Err` when
/// the connection ends without a whole response.
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Reply, String> {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         X-Actor: props\r\nX-Reason: property test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    let head_only = method == "HEAD";
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // The server may answer (say 413) before reading everything; read its answer anyway.
        if stream.write_all(head.as_bytes()).await.is_ok() {
            let _ = stream.write_all(body).await;
        }
        // Read until the response is whole (not until the server closes: with a body left
        // unread, actix-web waits a second for the client to go first).
        let mut raw = Vec::new();
        let mut chunk = [0; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return parse(&raw, head_only, true)?.ok_or_else(|| cut(&raw)),
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
            if let Some(reply) = parse(&raw, head_only, false)? {
                return Ok(reply);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

fn cut(raw: &[u8]) -> String {
    format!(
        "connection closed after {} bytes, no whole response",
        raw.len()
    )
}

/// The response in `raw`, `None` while it is not whole yet (`eof`: nothing more will come).
fn parse(raw: &[u8], head_only: bool, eof: bool) -> Result<Option<Reply>, String> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let rest = &raw[end + 4..];
    let body = if head_only {
        Some(Vec::new())
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        (rest.len() >= len).then(|| rest[..len].to_vec())
    } else {
        eof.then(|| rest.to_vec()) // ends when the connection does
    };
    Ok(body.map(|body| Reply { status, body }))
}

/// A chunked body, `None` until its last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())?;
        rest = &rest[line + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Names that may exist, so that some generated changes land and later requests meet them.
const NAMES: [&str; 6] = ["p0", "p1", "catalog.reads", "x-y_z.~!*'()", "p2", "A9"];

/// Pieces of a path segment or query value, as they appear in the URL.
const URL_PIECES: [&str; 32] = [
    "a",
    "Z",
    "7",
    "-",
    "_",
    ".",
    "~",
    "!",
    "*",
    "'",
    "(",
    ")",
    "..",
    "%00",
    "%ff",
    "%FF%FE",
    "%2F",
    "%2e",
    "%20",
    "%C3%A9",
    "%F0%9F%98%80",
    "%",
    "%zz",
    "+",
    ":",
    "@",
    "$",
    ",",
    ";",
    "=",
    "%22",
    "%5C",
];

/// Pieces of a JSON string.
const TEXT_PIECES: [&str; 24] = [
    "a",
    "catalog",
    ".",
    "..",
    "-",
    " ",
    "\0",
    "é",
    "😀",
    "/",
    "\"",
    "\\",
    "%00",
    "\u{ffff}",
    "\n",
    "'",
    "(",
    ")",
    "random[1]",
    " or ",
    "1",
    "true",
    "\u{202e}",
    "x",
];

fn url_text(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => String::new(),
        1 => {
            let len = rng.pick(&[99, 100, 101, 500, 3000]);
            (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
        }
        2 | 3 => rng.pick(&NAMES).to_string(),
        4 => rng
            .pick(&[".", "..", "%2e%2e", "%2E", "%00", "%ff"])
            .to_string(),
        _ => (0..1 + rng.below(8))
            .map(|_| rng.pick(&URL_PIECES))
            .collect(),
    }
}

fn text(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => String::new(),
        1 => "é".repeat(rng.pick(&[50, 101, 2000])),
        2 => rng.pick(&NAMES).to_string(),
        _ => (0..1 + rng.below(6))
            .map(|_| rng.pick(&TEXT_PIECES))
            .collect(),
    }
}

fn number(rng: &mut Rng) -> String {
    let n = rng.next() as i64;
    rng.pick(&[
        "0",
        "1",
        "14",
        "-1",
        "200",
        "1000",
        "1001",
        "36500",
        "36501",
        "100000000",
        "106751991167301",
        "9223372036854775807",
        "-9223372036854775808",
        "99999999999999999999",
        "1.5",
        "1e3",
        "0x10",
        "%2B5",
        "%205",
        "abc",
        "",
        "%00",
        "%ff",
        &n.to_string(),
    ])
    .to_string()
}

/// A definition's parts: well-formed ones, or (`wild`) anything the generators make.
fn variants(rng: &mut Rng, wild: bool) -> Value {
    let weights: &[i32] = if wild {
        &[0, 0, 1, 500, 1000, -1, i32::MAX, i32::MIN]
    } else {
        &[0, 1, 500, 1000]
    };
    (0..1 + rng.below(3))
        .map(|i| {
            // A tame list's first weight is never 0, so its total is not either.
            let weight = if i == 0 && !wild {
                1
            } else {
                rng.pick(weights)
            };
            let name = if wild { text(rng) } else { format!("v{i}") };
            let mut v = json!({"name": name, "weight": weight,
                "stickiness": rng.pick(&["default", "userId", "random"])});
            if rng.chance(50) {
                v["weightType"] = json!(rng.pick(&["variable", "fix"]));
            }
            if rng.chance(30) {
                let value = if wild { text(rng) } else { "p".into() };
                v["payload"] = json!({"type": "string", "value": value});
            }
            v
        })
        .collect()
}

fn constraint(rng: &mut Rng, wild: bool) -> Value {
    let tame = [
        ("IN", "1"),
        ("NOT_IN", "1"),
        ("STR_CONTAINS", "1"),
        ("NUM_GT", "-1.5e3"),
        ("DATE_AFTER", "2026-01-31T12:00:00Z"),
        ("SEMVER_EQ", "1.2.3-beta.1"),
        ("REGEX", "^a.*$"),
        ("IN_CIDR", "1"),
    ];
    let (mut operator, mut value) = rng.pick(&tame);
    let text_value;
    if wild {
        operator = rng.pick(&[
            "IN",
            "STR_ENDS_WITH",
            "NUM_EQ",
            "DATE_AFTER",
            "SEMVER_EQ",
            "REGEX",
            "BOGUS",
        ]);
        text_value = text(rng);
        value = rng.pick(&[
            "1 or random[1] < 5",
            "v1 or random[0] < 5",
            &text_value,
            value,
        ]);
    }
    let values: Vec<String> = (0..rng.below(3))
        .map(|i| if wild { text(rng) } else { format!("u{i}") })
        .collect();
    let context = if wild { "custom\"]" } else { "custom" };
    json!({
        "contextName": rng.pick(&["userId", "sessionId", "remoteAddress", "currentTime", context]),
        "operator": operator,
        "values": values,
        "value": value,
        "caseInsensitive": rng.chance(50),
        "inverted": rng.chance(20),
    })
}

fn strategy(rng: &mut Rng, name: &str, wild: bool) -> Value {
    let odd = |rng: &mut Rng, tame: &str| if wild { text(rng) } else { tame.to_string() };
    let mut s = match rng.below(6) {
        0 => json!({"name": "default"}),
        1 => {
            let rollout = if wild {
                rng.pick(&["101", "-1", "x", "50"])
            } else {
                rng.pick(&["0", "25", "100"])
            };
            json!({"name": "flexibleRollout", "parameters": {
                "rollout": rollout,
                "stickiness": rng.pick(&["default", "userId", "random", "sessionId"]),
                "groupId": odd(rng, name)}})
        }
        2 => {
            json!({"name": "userWithId", "parameters": {"userIds": format!("a, {}", odd(rng, "b"))}})
        }
        3 => {
            json!({"name": "remoteAddress", "parameters": {"IPs": format!("10.0.0.0/8, {}", odd(rng, "::1"))}})
        }
        4 => json!({"name": "applicationHostname", "parameters": {"hostNames": odd(rng, "h1,h2")}}),
        _ => {
            let percentage = if wild { number(rng) } else { "30".into() };
            json!({"name": "gradualRolloutRandom", "parameters": {"percentage": percentage}})
        }
    };
    if rng.chance(40) {
        s["constraints"] = (0..1 + rng.below(2))
            .map(|_| constraint(rng, wild))
            .collect();
    }
    if rng.chance(40) {
        s["variants"] = variants(rng, wild);
    }
    if rng.chance(20) {
        // Segments 1 to 3 are sometimes stored; 4 never is, -1 is not an id.
        s["segments"] = (0..1 + rng.below(2))
            .map(|_| json!(rng.pick(&[1, 2, 3, 4, -1])))
            .collect();
    }
    s
}

fn segment(rng: &mut Rng, id: Value) -> Value {
    let wild = rng.chance(30);
    let constraints: Vec<Value> = (0..rng.below(3)).map(|_| constraint(rng, wild)).collect();
    json!({"id": id, "name": "generated", "constraints": constraints})
}

fn segment_id(rng: &mut Rng) -> Value {
    let ids = [
        json!(1),
        json!(2),
        json!(3),
        json!(0),
        json!(-1),
        json!(i64::MAX),
        json!("1"),
    ];
    ids[rng.below(ids.len())].clone()
}

fn definition(rng: &mut Rng, name: &str) -> Value {
    let wild = rng.chance(40);
    let odd = |rng: &mut Rng, tame: &str| if wild { text(rng) } else { tame.to_string() };
    let strategies: Vec<Value> = (0..rng.below(3))
        .map(|_| strategy(rng, name, wild))
        .collect();
    let mut d = json!({"name": name, "enabled": rng.chance(80), "strategies": strategies});
    if rng.chance(40) {
        d["variants"] = variants(rng, wild);
    }
    if rng.chance(25) {
        d["description"] = json!(odd(rng, "what it guards"));
    }
    if rng.chance(15) {
        d["type"] = json!(odd(rng, "release"));
        d["project"] = json!(odd(rng, "default"));
        d["createdAt"] = json!(rng.pick(&["2026-01-01T00:00:00Z", "+262142-12-31T23:59:59Z", "x"]));
    }
    if rng.chance(10) {
        d["dependencies"] = json!([{"feature": rng.pick(&NAMES), "enabled": rng.chance(50)}]);
    }
    d
}

/// Replaces one node, reached by a random walk from the root, with something else.
fn mutate(rng: &mut Rng, root: &mut Value) {
    let mut node = root;
    loop {
        let children = match &*node {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            _ => 0,
        };
        if children == 0 || rng.chance(25) {
            break;
        }
        let i = rng.below(children);
        node = match node {
            Value::Array(a) => &mut a[i],
            Value::Object(o) => o.values_mut().nth(i).unwrap(),
            _ => unreachable!(),
        };
    }
    *node = match rng.below(9) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(1e300),
        5 => json!(text(rng)),
        6 => json!(format!("{}\0", text(rng))),
        7 => json!([text(rng)]),
        _ => json!({"\0": 1, "extra": text(rng)}),
    };
}

/// A JSON body built from `value`, often mutated, sometimes broken as text.
fn body(rng: &mut Rng, mut value: Value) -> Vec<u8> {
    for _ in 0..rng.below(3) {
        if rng.chance(50) {
            mutate(rng, &mut value);
        }
    }
    let text = value.to_string();
    match rng.below(40) {
        0 => text[..text.floor_char_boundary(rng.below(text.len() + 1))].into(),
        1 => {
            let depth = rng.pick(&[129, 1000, 5000]);
            format!("{}{text}{}", "[".repeat(depth), "]".repeat(depth)).into()
        }
        2 => {
            let depth = rng.pick(&[129, 2000]);
            format!(
                r#"{{"name":"p0","enabled":true,"x":{}1{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
            .into()
        }
        3 => rng
            .pick(&[
                "",
                " ",
                "42",
                "null",
                "\"x\"",
                "[]",
                "1e400",
                "{\"percent\": 1e400}",
            ])
            .into(),
        4 => {
            let mut bytes = text.into_bytes();
            let at = rng.below(bytes.len() + 1);
            bytes.splice(at..at, [0xff, 0xfe, 0x00]);
            bytes
        }
        5 => format!("{}{text}", " ".repeat(70_000)).into(),
        6 => text
            .replacen(':', ":99999999999999999999999999999,\"y\":", 1)
            .into(),
        _ => text.into(),
    }
}

fn content_type(rng: &mut Rng) -> Option<&'static str> {
    if rng.chance(75) {
        return Some("application/json");
    }
    rng.pick(&[
        None,
        Some("text/plain"),
        Some("application/merge-patch+json"),
        Some("application/json; charset=utf-8"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        Some(";;;"),
    ])
}

fn context(rng: &mut Rng) -> Value {
    let mut c = json!({});
    for key in [
        "userId",
        "sessionId",
        "remoteAddress",
        "currentTime",
        "environment",
        "appName",
    ] {
        if rng.chance(40) {
            c[key] = json!(text(rng));
        }
    }
    if rng.chance(30) {
        c["properties"] = json!({text(rng): text(rng)});
    }
    if rng.chance(10) {
        c[text(rng)] = json!(text(rng));
    }
    c
}

/// One generated request: method, target, content type, body.
fn request(rng: &mut Rng) -> (String, String, Option<&'static str>, Vec<u8>) {
    let name = url_text(rng);
    let known = rng.pick(&NAMES).to_string();
    let (method, target, body): (&str, String, Vec<u8>) = match rng.below(19) {
        0 => ("GET", "/admin/toggles".into(), vec![]),
        1 => {
            let features: Vec<Value> = (0..rng.below(4))
                .map(|_| {
                    let n = if rng.chance(70) {
                        rng.pick(&NAMES).to_string()
                    } else {
                        text(rng)
                    };
                    definition(rng, &n)
                })
                .collect();
            let mut doc = json!({"version": 2, "features": features});
            if rng.chance(30) {
                doc["segments"] = (0..1 + rng.below(2))
                    .map(|_| {
                        let id = segment_id(rng);
                        segment(rng, id)
                    })
                    .collect();
            }
            ("POST", "/admin/toggles".into(), body(rng, doc))
        }
        2 => ("GET", format!("/admin/toggles/{name}"), vec![]),
        3 | 4 => {
            // Mostly a definition whose name matches a known path, so that some are stored.
            let (path, def_name) = if rng.chance(70) {
                (known.clone(), known.clone())
            } else {
                (name.clone(), text(rng))
            };
            let def = definition(rng, &def_name);
            ("PUT", format!("/admin/toggles/{path}"), body(rng, def))
        }
        5 => ("DELETE", format!("/admin/toggles/{name}"), vec![]),
        6 => {
            let action = rng.pick(&["enable", "disable"]);
            let target = if rng.chance(50) { &known } else { &name };
            ("POST", format!("/admin/toggles/{target}/{action}"), vec![])
        }
        7 => {
            let percents = [
                json!(0),
                json!(50),
                json!(100),
                json!(101),
                json!(-1),
                json!(4294967296u64),
                json!("50"),
                Value::Null,
            ];
            let percent = percents[rng.below(percents.len())].clone();
            let target = if rng.chance(50) { &known } else { &name };
            (
                "POST",
                format!("/admin/toggles/{target}/rollout"),
                body(rng, json!({"percent": percent})),
            )
        }
        8 => {
            let mut q = Vec::new();
            if rng.chance(60) {
                q.push(format!("toggle={}", url_text(rng)));
            }
            if rng.chance(60) {
                q.push(format!("limit={}", number(rng)));
            }
            ("GET", format!("/admin/audit?{}", q.join("&")), vec![])
        }
        9 => ("GET", "/admin/routes".into(), vec![]),
        10 => {
            let mut q = vec![];
            for key in ["method", "path", "user_id", "session_id", "remote_addr"] {
                if rng.chance(70) {
                    let value = match key {
                        "method" => rng
                            .pick(&["get", "POST", "DELETE", "G%20ET", "%00", "%ff", "", "BREW"])
                            .to_string(),
                        "path" => rng
                            .pick(&[
                                "/catalog/albums",
                                "/wishlists/1",
                                "/",
                                "",
                                "catalog",
                                "%ff",
                                "/catalog/..%2f",
                            ])
                            .to_string(),
                        _ => url_text(rng),
                    };
                    q.push(format!("{key}={value}"));
                }
            }
            ("GET", format!("/admin/explain?{}", q.join("&")), vec![])
        }
        11 => {
            let toggle = if rng.chance(75) {
                known.clone()
            } else {
                text(rng)
            };
            let mut e = json!({"toggle": toggle});
            if rng.chance(70) {
                e["context"] = context(rng);
            }
            ("POST", "/admin/evaluate".into(), body(rng, e))
        }
        12 => ("GET", format!("/admin/stale?days={}", number(rng)), vec![]),
        13 => ("GET", "/admin/upstreams".into(), vec![]),
        14 => ("GET", "/metrics".into(), vec![]),
        15 => ("GET", "/api/client/features".into(), vec![]),
        16 => ("GET", "/admin/segments".into(), vec![]),
        17 => {
            let path = match rng.below(4) {
                0 => url_text(rng),
                _ => rng
                    .pick(&["1", "2", "3", "0", "-1", "99999999999", "%31"])
                    .to_string(),
            };
            match rng.below(3) {
                0 => ("GET", format!("/admin/segments/{path}"), vec![]),
                1 => ("DELETE", format!("/admin/segments/{path}"), vec![]),
                _ => {
                    let id = if rng.chance(80) {
                        path.parse().map(|id: i64| json!(id)).unwrap_or(json!(1))
                    } else {
                        segment_id(rng)
                    };
                    let seg = segment(rng, id);
                    ("PUT", format!("/admin/segments/{path}"), body(rng, seg))
                }
            }
        }
        _ => {
            let which = rng.pick(&["register", "metrics"]);
            let report = json!({"appName": text(rng)});
            ("POST", format!("/api/client/{which}"), body(rng, report))
        }
    };
    // Now and then the wrong method, including ones nothing here takes.
    let method = if rng.chance(8) {
        rng.pick(&[
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW",
        ])
    } else {
        method
    };
    (method.to_string(), target, content_type(rng), body)
}

/// Whether a reply keeps the promise: a response, below 500, errors in the envelope.
fn broken(method: &str, reply: &Result<Reply, String>) -> Option<String> {
    let reply = match reply {
        Err(e) => return Some(format!("no response: {e}")),
        Ok(r) => r,
    };
    let text = String::from_utf8_lossy(&reply.body);
    let text = &text[..text.floor_char_boundary(300)];
    if reply.status >= 500 {
        return Some(format!("{} {text}", reply.status));
    }
    if reply.status >= 400 && method != "HEAD" && !reply.json()["error"]["code"].is_string() {
        return Some(format!(
            "{} without the error envelope: {text}",
            reply.status
        ));
    }
    None
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let cut = text.floor_char_boundary(200);
    format!(
        "{:?}{}",
        &text[..cut],
        if cut < text.len() { "…" } else { "" }
    )
}

#[tokio::test]
async fn no_generated_admin_request_gets_a_5xx_or_a_dropped_connection() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let r = start(&db).await;
    let seed = std::env::var("ADMIN_PROPS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let mut rng = Rng(seed);
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    for case in 0..CASES {
        let (method, target, content_type, body) = request(&mut rng);
        let reply = send(r.admin_addr, &method, &target, content_type, &body).await;
        if let Some(problem) = broken(&method, &reply) {
            let target = &target[..target.floor_char_boundary(200)];
            failures.push(format!(
                "seed {seed} case {case}: {method} {target} ({content_type:?}) body {} -> {problem}",
                preview(&body)
            ));
        }
    }
    // The instance still answers after all that.
    let alive = send(r.admin_addr, "GET", "/admin/toggles", None, b"").await;
    assert_eq!(
        alive.as_ref().map(|r| r.status).ok(),
        Some(200),
        "{alive:?}"
    );
    eprintln!(
        "{CASES} generated admin requests in {:?}",
        started.elapsed()
    );
    r.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {CASES} requests broke the promise; the first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Method, target, content type, body; then the status, `error.code` and `error.field` expected.
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    String,
    u16,
    &'a str,
    Option<&'a str>,
);

/// The reproduced defects and the rules that answer them, one request each.
#[tokio::test]
async fn reproduced_cases_are_answered_as_client_errors() {
    let db = TestDb::new("router", router::store::MIGRATIONS);
    let r = start(&db).await;
    let def = |name: &str, extra: Value| {
        let mut d = json!({"name": name, "enabled": true, "strategies": [{"name": "default"}]});
        d.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        d.to_string()
    };
    let constrained = |name: &str, c: Value| {
        json!({"name": name, "enabled": true, "strategies": [{"name": "default", "constraints": [c]}]})
            .to_string()
    };
    let long = |len: usize| -> String {
        let mut rng = Rng(len as u64);
        (0..len).map(|_| rng.pick(b"aQ7-_~") as char).collect()
    };
    let (l100, l101, l4000) = (long(100), long(101), long(4000));
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let nul_import = json!({"version": 2, "features": [{"name": "imp", "enabled": true, "strategies": [
        {"name": "default", "constraints": [{"contextName": "userId", "operator": "IN", "values": ["\0"]}]}]}]})
    .to_string();
    let bad_name_import =
        json!({"version": 2, "features": [{"name": "a/b", "enabled": true}]}).to_string();
    let seg = |id: i32, value: &str| {
        json!({"id": id, "constraints": [{"contextName": "n", "operator": "NUM_GT", "value": value}]})
            .to_string()
    };
    let seg_import = json!({"version": 2, "segments": [{"id": 7, "constraints": []}], "features": [
        {"name": "imp.seg", "enabled": true, "strategies": [{"name": "default", "segments": [8, 7]}]}]})
    .to_string();
    let json_ct = Some("application/json");
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // A NUL, or a byte that is not UTF-8, in a path name.
        ("GET", "/admin/toggles/%00".into(), None, "".into(), 400, "invalid_name", Some("name")),
        ("GET", "/admin/toggles/%ff".into(), None, "".into(), 400, "invalid_name", Some("name")),
        ("DELETE", "/admin/toggles/a%00b".into(), None, "".into(), 400, "invalid_name", Some("name")),
        ("POST", "/admin/toggles/%00/enable".into(), None, "".into(), 400, "invalid_name", Some("name")),
        ("POST", "/admin/toggles/%00/rollout".into(), json_ct, r#"{"percent": 5}"#.into(), 400, "invalid_name", Some("name")),
        ("PUT", "/admin/toggles/x%00".into(), json_ct, def("x\0", json!({})), 400, "invalid_name", Some("name")),
        // A NUL anywhere in a definition.
        ("PUT", "/admin/toggles/nul.description".into(), json_ct, def("nul.description", json!({"description": "a\0b"})), 400, "invalid_toggle", Some("description")),
        ("PUT", "/admin/toggles/nul.value".into(), json_ct, constrained("nul.value", json!({"contextName": "userId", "operator": "IN", "values": ["ok", "a\0"]})), 400, "invalid_toggle", Some("strategies[0].constraints[0].values[1]")),
        ("PUT", "/admin/toggles/nul.key".into(), json_ct, def("nul.key", json!({"strategies": [{"name": "default", "parameters": {"a\0": "b"}}]})), 400, "invalid_toggle", Some("strategies[0].parameters.a\0")),
        ("POST", "/admin/toggles".into(), json_ct, nul_import, 400, "invalid_toggle", Some("features[0].strategies[0].constraints[0].values[0]")),
        ("GET", "/admin/audit?toggle=%00".into(), None, "".into(), 400, "bad_query", None),
        // Days beyond any date.
        ("GET", "/admin/stale?days=100000000".into(), None, "".into(), 422, "invalid_field", Some("days")),
        ("GET", "/admin/stale?days=36501".into(), None, "".into(), 422, "invalid_field", Some("days")),
        ("GET", "/admin/stale?days=-1".into(), None, "".into(), 422, "invalid_field", Some("days")),
        ("GET", "/admin/stale?days=99999999999999999999".into(), None, "".into(), 422, "invalid_field", Some("days")),
        ("GET", "/admin/stale?days=36500".into(), None, "".into(), 200, "", None),
        ("GET", "/admin/audit?limit=99999999999999999999".into(), None, "".into(), 422, "invalid_field", Some("limit")),
        // Unleash's name rules, wherever a name comes in.
        ("PUT", "/admin/toggles/has%20space".into(), json_ct, def("has space", json!({})), 400, "invalid_name", Some("name")),
        ("PUT", "/admin/toggles/..".into(), json_ct, def("..", json!({})), 400, "invalid_name", Some("name")),
        ("PUT", "/admin/toggles/%2e".into(), json_ct, def(".", json!({})), 400, "invalid_name", Some("name")),
        ("PUT", "/admin/toggles/a%2Fb".into(), json_ct, def("a/b", json!({})), 400, "invalid_name", Some("name")),
        ("PUT", "/admin/toggles/caf%C3%A9".into(), json_ct, def("café", json!({})), 400, "invalid_name", Some("name")),
        ("PUT", format!("/admin/toggles/{l101}"), json_ct, def(&l101, json!({})), 400, "invalid_name", Some("name")),
        ("PUT", format!("/admin/toggles/{l4000}"), json_ct, def(&l4000, json!({})), 400, "invalid_name", Some("name")),
        ("GET", format!("/admin/toggles/{l4000}"), None, "".into(), 400, "invalid_name", Some("name")),
        ("PUT", format!("/admin/toggles/{l100}"), json_ct, def(&l100, json!({})), 200, "", None),
        ("PUT", "/admin/toggles/x-y_z.~!*'()".into(), json_ct, def("x-y_z.~!*'()", json!({})), 200, "", None),
        ("POST", "/admin/toggles".into(), json_ct, bad_name_import, 400, "invalid_toggle", Some("features[0].name")),
        ("POST", "/admin/evaluate".into(), json_ct, r#"{"toggle": "a b"}"#.into(), 400, "invalid_name", Some("toggle")),
        ("POST", "/admin/evaluate".into(), json_ct, r#"{"toggle": ""}"#.into(), 400, "invalid_name", Some("toggle")),
        ("GET", "/admin/audit?toggle=a%20b".into(), None, "".into(), 400, "invalid_name", Some("toggle")),
        ("GET", "/admin/audit?toggle=%ff".into(), None, "".into(), 400, "invalid_name", Some("toggle")),
        // Definitions Unleash's engine would compile into a panic.
        ("PUT", "/admin/toggles/w0".into(), json_ct, def("w0", json!({"variants": [{"name": "a", "weight": 0}]})), 400, "invalid_toggle", Some("variants")),
        ("PUT", "/admin/toggles/wneg".into(), json_ct, def("wneg", json!({"variants": [{"name": "a", "weight": 5}, {"name": "b", "weight": -1}]})), 400, "invalid_toggle", Some("variants[1].weight")),
        ("PUT", "/admin/toggles/sw0".into(), json_ct, def("sw0", json!({"strategies": [{"name": "default", "variants": [{"name": "a", "weight": 0}]}]})), 400, "invalid_toggle", Some("strategies[0].variants")),
        ("PUT", "/admin/toggles/inj".into(), json_ct, constrained("inj", json!({"contextName": "userId", "operator": "NUM_EQ", "value": "1 or random[1] < 5"})), 400, "invalid_toggle", Some("strategies[0].constraints[0].value")),
        ("PUT", "/admin/toggles/inj.semver".into(), json_ct, constrained("inj.semver", json!({"contextName": "userId", "operator": "SEMVER_EQ", "value": " v1 or random[1] < 5"})), 400, "invalid_toggle", Some("strategies[0].constraints[0].value")),
        ("PUT", "/admin/toggles/inj.group".into(), json_ct, def("inj.group", json!({"strategies": [{"name": "flexibleRollout", "parameters": {"rollout": "50", "groupId": "g\" or random[0] < 5 or user_id matches_regex \"x"}}]})), 400, "invalid_toggle", Some("strategies[0].parameters.groupId")),
        ("PUT", "/admin/toggles/num.ok".into(), json_ct, constrained("num.ok", json!({"contextName": "userId", "operator": "NUM_GTE", "value": " -1.5e3 "})), 200, "", None),
        // Other shapes of bad input.
        ("GET", "/admin/explain?path=/catalog/albums&method=G%20ET".into(), None, "".into(), 422, "invalid_field", Some("method")),
        ("PATCH", "/admin/toggles/x".into(), json_ct, "{}".into(), 405, "method_not_allowed", None),
        ("POST", "/admin/evaluate".into(), Some("text/plain"), r#"{"toggle": "x"}"#.into(), 415, "unsupported_media_type", Some("Content-Type")),
        ("PUT", "/admin/toggles/x".into(), json_ct, deep, 400, "invalid_toggle", None),
        ("PUT", "/admin/toggles/x".into(), json_ct, "42".into(), 400, "invalid_toggle", Some("body")),
        ("GET", "/admin/toggles/".into(), None, "".into(), 404, "not_found", None),
        // Segments: ids, bodies, and what strategies name.
        ("PUT", "/admin/segments/0".into(), json_ct, seg(0, "1"), 404, "not_found", Some("id")),
        ("PUT", "/admin/segments/abc".into(), json_ct, seg(1, "1"), 404, "not_found", Some("id")),
        ("GET", "/admin/segments/2147483648".into(), None, "".into(), 404, "not_found", Some("id")),
        ("DELETE", "/admin/segments/5".into(), None, "".into(), 404, "not_found", Some("id")),
        ("PUT", "/admin/segments/3".into(), json_ct, seg(4, "1"), 400, "invalid_segment", Some("id")),
        ("PUT", "/admin/segments/3".into(), json_ct, r#"{"id": 3}"#.into(), 400, "invalid_segment", Some("body")),
        ("PUT", "/admin/segments/3".into(), json_ct, seg(3, "1 or true"), 400, "invalid_segment", Some("constraints[0].value")),
        ("PUT", "/admin/segments/3".into(), json_ct, seg(3, "1\0"), 400, "invalid_segment", Some("constraints[0].value")),
        ("PUT", "/admin/segments/3".into(), json_ct, seg(3, "1"), 200, "", None),
        ("PUT", "/admin/toggles/seg.missing".into(), json_ct, def("seg.missing", json!({"strategies": [{"name": "default", "segments": [3, 4]}]})), 400, "invalid_toggle", Some("strategies[0].segments[1]")),
        ("PUT", "/admin/toggles/seg.zero".into(), json_ct, def("seg.zero", json!({"strategies": [{"name": "default", "segments": [0]}]})), 400, "invalid_toggle", Some("strategies[0].segments[0]")),
        ("POST", "/admin/toggles".into(), json_ct, seg_import, 400, "invalid_toggle", Some("features[0].strategies[0].segments[0]")),
        ("PUT", "/admin/toggles/seg.used".into(), json_ct, def("seg.used", json!({"strategies": [{"name": "default", "segments": [3]}]})), 200, "", None),
        ("DELETE", "/admin/segments/3".into(), None, "".into(), 409, "segment_in_use", Some("id")),
        ("GET", "/admin/audit?segment=0".into(), None, "".into(), 422, "invalid_field", Some("segment")),
        ("GET", "/admin/audit?segment=3&toggle=x".into(), None, "".into(), 422, "invalid_field", Some("segment")),
        // An operator this engine does not know is kept, as in Unleash.
        ("PUT", "/admin/toggles/op.future".into(), json_ct, constrained("op.future", json!({"contextName": "userId", "operator": "SOME_FUTURE_OP", "values": ["a\\"]})), 200, "", None),
    ];
    let mut failures = Vec::new();
    for (method, target, ct, body, status, code, field) in cases {
        let reply = send(r.admin_addr, method, &target, ct, body.as_bytes()).await;
        let shown = &target[..target.floor_char_boundary(80)];
        let got = match &reply {
            Ok(reply) => {
                let json = reply.json();
                let e = &json["error"];
                (
                    reply.status,
                    e["code"].as_str().unwrap_or("").to_string(),
                    e["field"].as_str().map(str::to_string),
                )
            }
            Err(e) => (0, e.clone(), None),
        };
        let field_ok = code.is_empty() || field.is_none() || got.2.as_deref() == field;
        if got.0 != status || got.1 != code || !field_ok {
            failures.push(format!(
                "{method} {shown}: expected {status} {code} {field:?}, got {} {} {:?}",
                got.0, got.1, got.2
            ));
        }
    }
    r.stop().await;
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
