//! What every side gives the router's parallel run (issue 17, ADR 0011), against the real monolith
//! and services on their own databases:
//!
//! - `dry_run`: `X-Fig-Dry-Run: 1` on every write endpoint of the monolith (local and saga order
//!   placement), the catalog service and the wishlist service leaves every table of every database
//!   involved exactly as it was, and answers what the real request answers; a replica serves dry
//!   runs and still refuses real writes; a bad value is a `400`.
//! - `positions`: `X-Fig-Db-Position` on every answer: an owner's WAL position read after the
//!   answer, a replica's applied position from its pipeline's row, none without one.
//! - `replicated`: the real replication engine feeding a replica catalog service: once the
//!   replica reports a position at or past the owner's, its answer has the owner's write.
//!
//! "Exactly as it was" is [`e2e::DbState::tables`]: every table outside `pg_catalog` and
//! `information_schema`, by row count and `md5(string_agg(t::text, ',' ORDER BY t::text))`.
//! Sequences are compared apart: a dry run that inserts draws an id it never gives back.

mod dry_run;
mod positions;
mod replicated;

use e2e::{Client, DbState, Reply};
use platform::parallel_run::DRY_RUN;
use reqwest::Method;
use serde_json::Value;

/// One write, sent as a dry run and then for real.
pub struct Case {
    pub what: &'static str,
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
    /// The status both answers must have.
    pub status: u16,
    /// The real request creates a row whose id comes from a sequence: the top-level `id` and the
    /// `Location` differ between the two answers (the dry run's id is never used).
    pub fresh_id: bool,
    /// The real request changes a table (so the dry run leaving them alone means something).
    pub changes: bool,
}

impl Case {
    pub fn new(what: &'static str, method: Method, path: impl Into<String>, status: u16) -> Case {
        Case {
            what,
            method,
            path: path.into(),
            body: None,
            headers: Vec::new(),
            status,
            fresh_id: false,
            changes: false,
        }
    }

    pub fn body(mut self, body: Value) -> Case {
        self.body = Some(body);
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Case {
        self.headers.push((name, value.to_string()));
        self
    }

    /// Creates a row with a new id (implies `changes`).
    pub fn fresh(mut self) -> Case {
        self.fresh_id = true;
        self.changes = true;
        self
    }

    pub fn changes(mut self) -> Case {
        self.changes = true;
        self
    }

    pub async fn send(&self, client: &Client, dry_run: bool) -> Reply {
        let mut headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if dry_run {
            headers.push((DRY_RUN, "1"));
        }
        client
            .send(
                self.method.clone(),
                &self.path,
                self.body.as_ref(),
                &headers,
            )
            .await
    }
}

/// The tables of several databases, as one value.
pub fn tables(states: &[DbState]) -> Vec<&std::collections::BTreeMap<String, String>> {
    states.iter().map(|s| &s.tables).collect()
}

/// Sends `case` as a dry run and asserts that no table of `databases` changed; then sends it for
/// real and asserts the same answer (and, where the case says so, that the real one did change a
/// table). Returns both answers.
pub async fn dry_then_real(
    client: &Client,
    databases: &impl Fn() -> Vec<DbState>,
    case: &Case,
) -> (Reply, Reply) {
    let before = databases();
    let dry = case.send(client, true).await;
    let after = databases();
    assert_eq!(
        tables(&before),
        tables(&after),
        "{}: the dry run changed a table",
        case.what
    );
    let real = case.send(client, false).await;
    assert_eq!(
        real.status.as_u16(),
        case.status,
        "{}: real: {}",
        case.what,
        real.body
    );
    assert_same_answer(case, &dry, &real);
    if case.changes {
        assert_ne!(
            tables(&databases()),
            tables(&after),
            "{}: the real request changed nothing, so the case proves nothing",
            case.what
        );
    }
    if case.fresh_id {
        assert_ne!(
            before.iter().map(|s| &s.sequences).collect::<Vec<_>>(),
            after.iter().map(|s| &s.sequences).collect::<Vec<_>>(),
            "{}: the dry run drew its id from a sequence, which a rollback does not give back",
            case.what
        );
        // The dry run showed an id that no row will ever have.
        let location = dry.header("location").expect("a Location").to_string();
        assert_ne!(Some(location.as_str()), real.header("location"));
        client
            .get(&location)
            .await
            .assert_error(404, "not_found", Some(id_field(&location)));
    }
    (dry, real)
}

/// The path parameter a 404 for `location` names (`/catalog/albums/7` → `album_id`).
fn id_field(location: &str) -> &'static str {
    match location.split('/').nth(1) {
        Some("catalog") if location.starts_with("/catalog/artists") => "artist_id",
        Some("catalog") => "album_id",
        Some("customers") => "customer_id",
        Some("orders") => "order_id",
        _ => panic!("unexpected Location {location}"),
    }
}

/// The dry run's answer is the real one's: status, content type, `Location` (up to a fresh id),
/// `Idempotent-Replayed`, and the body, except timestamps (`*_at`, made by `now()`) and a fresh
/// top-level `id`.
pub fn assert_same_answer(case: &Case, dry: &Reply, real: &Reply) {
    assert_eq!(
        dry.status.as_u16(),
        case.status,
        "{}: dry run: {}",
        case.what,
        dry.body
    );
    for header in ["content-type", "idempotent-replayed"] {
        assert_eq!(
            dry.header(header),
            real.header(header),
            "{}: {header}",
            case.what
        );
    }
    let location = |r: &Reply| {
        r.header("location").map(|l| {
            if case.fresh_id {
                l.rsplit_once('/').map_or(l, |(head, _)| head).to_string() + "/<id>"
            } else {
                l.to_string()
            }
        })
    };
    assert_eq!(location(dry), location(real), "{}: Location", case.what);
    assert_eq!(
        normalise(&dry.body, case.fresh_id),
        normalise(&real.body, case.fresh_id),
        "{}: dry run {} vs real {}",
        case.what,
        dry.body,
        real.body
    );
}

/// Timestamps become their JSON type; with `fresh_id`, the top-level `id` too.
fn normalise(body: &Value, fresh_id: bool) -> Value {
    fn walk(v: &Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(_) if k.ends_with("_at") => "<timestamp>".into(),
                            other => walk(other),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(walk).collect()),
            other => other.clone(),
        }
    }
    let mut out = walk(body);
    if fresh_id && let Some(id) = out.get_mut("id") {
        assert!(id.is_i64(), "an id: {body}");
        *id = "<id>".into();
    }
    out
}
