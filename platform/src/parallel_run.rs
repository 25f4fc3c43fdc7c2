//! What the router's parallel run needs from every side (issue 17, [ADR 0011]): a write that can
//! be tried without committing anything (`X-Fig-Dry-Run`), and, on every answer, the database
//! position that answer reflects (`X-Fig-Db-Position`), in the WAL terms of the capability's
//! write owner, so that a mismatch can be fetched again once the lagging side has caught up.
//!
//! [`middleware`] reads the dry-run header (a bad value is a `400`), puts a [`Scope`] into the
//! request, and sets the position header on the way out. Handlers reach the database through
//! [`crate::Db`], which runs a dry-run request's work in a transaction that is rolled back, and
//! reads the position on the connection the handler's query used:
//!
//! - on the **owner** ([`Source::Owner`]), `pg_current_wal_insert_lsn()` *after* the work (and
//!   after the dry run's rollback);
//! - on a **replica** ([`Source::Replica`]), the feeding pipeline's `applied_lsn` *before* it.
//!
//! [ADR 0011]: ../../docs/adr/0011-dry-run-writes-and-database-positions.md

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};
use diesel::sql_types::Text;
use diesel::{OptionalExtension, PgConnection, QueryableByName, RunQueryDsl};

use crate::{ApiError, Pool, WriteMode};

/// Request header: `1` or `true` runs the request's writes in a transaction that is rolled back.
pub const DRY_RUN: &str = "X-Fig-Dry-Run";
/// Response header: the database position the answer reflects, `X/Y` in hex like PostgreSQL's
/// `pg_lsn`.
pub const DB_POSITION: &str = "X-Fig-Db-Position";

/// How long a replica's applied position read by one request is reused by the next ones. It can
/// only make the reported position older than the data (never newer), which costs the router at
/// most a needless re-fetch; it saves a round trip per request under load.
pub const REPLICA_POSITION_REUSE: Duration = Duration::from_millis(5);

/// A WAL position (PostgreSQL's `pg_lsn`): printed and parsed as `X/Y`, the high and low 32 bits
/// in hex, like `16/B374D848`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("not an LSN (X/Y in hex): {s:?}"));
            }
            u32::from_str_radix(h, 16).map_err(|e| format!("not an LSN: {s:?}: {e}"))
        };
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("not an LSN (X/Y in hex): {s:?}"))?;
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

/// Whether the request asks for a dry run: no header, or `1` / `true` (any case). The field may
/// come more than once or as a comma-separated list (a proxy adding its own `1` to a client's),
/// and every element must say yes. Anything else is a `400 bad_header` naming it: a request the
/// caller meant as a dry run must never commit because of a typo.
pub fn dry_run(headers: &HeaderMap) -> Result<bool, ApiError> {
    let mut present = false;
    for value in headers.get_all(DRY_RUN) {
        present = true;
        let yes = value.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .all(|e| e == "1" || e.eq_ignore_ascii_case("true"))
        });
        if !yes {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_header",
                format!("{DRY_RUN} must be 1 or true when present"),
            )
            .with_field(DRY_RUN));
        }
    }
    Ok(present)
}

/// Where a side's position comes from, for one capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// This database takes the capability's writes: its own WAL insert position.
    Owner,
    /// This database is fed by replication: the `applied_lsn` of `pipeline` in
    /// `fig_replication.pipelines` (in the source's WAL terms). No row, no header.
    Replica { pipeline: String },
}

impl Source {
    /// A service's source: its own WAL as the owner, else the `pipeline` feeding it.
    pub fn of_service(mode: WriteMode, pipeline: &str) -> Source {
        match mode {
            WriteMode::Owner => Source::Owner,
            WriteMode::Replica => Source::Replica {
                pipeline: pipeline.to_string(),
            },
        }
    }
}

/// App data: the position source of each capability, by path prefix, and the replica caches.
#[derive(Debug)]
pub struct Positions {
    fallback: Arc<Feed>,
    by_prefix: Vec<(String, Arc<Feed>)>,
}

impl Positions {
    /// One source for every path (a service: one capability).
    pub fn single(source: Source) -> Positions {
        Positions {
            fallback: Feed::new(source),
            by_prefix: Vec::new(),
        }
    }

    /// Paths equal to `prefix` or under `prefix/` take their position from `source` (the
    /// monolith, whose capabilities move one at a time).
    pub fn with_prefix(mut self, prefix: &str, source: Source) -> Positions {
        self.by_prefix.push((prefix.to_string(), Feed::new(source)));
        self
    }

    pub fn source_for(&self, path: &str) -> &Source {
        &self.feed_for(path).source
    }

    fn feed_for(&self, path: &str) -> &Arc<Feed> {
        self.by_prefix
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map_or(&self.fallback, |(_, feed)| feed)
    }
}

/// One source, with a replica's last read applied position.
#[derive(Debug)]
struct Feed {
    source: Source,
    last_applied: Mutex<Option<(Instant, Option<Lsn>)>>,
}

impl Feed {
    fn new(source: Source) -> Arc<Feed> {
        Arc::new(Feed {
            source,
            last_applied: Mutex::new(None),
        })
    }

    fn last_applied(&self) -> MutexGuard<'_, Option<(Instant, Option<Lsn>)>> {
        // A panic elsewhere cannot leave the value half-written: use it anyway.
        self.last_applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A replica's position read less than [`REPLICA_POSITION_REUSE`] ago, if any.
    fn recent_applied(&self) -> Option<Option<Lsn>> {
        match *self.last_applied() {
            Some((at, applied)) if at.elapsed() < REPLICA_POSITION_REUSE => Some(applied),
            _ => None,
        }
    }

    /// The replica's applied position: a recent one, or read now on `conn`.
    fn applied(&self, conn: &mut PgConnection, pipeline: &str) -> Option<Lsn> {
        if let Some(recent) = self.recent_applied() {
            return recent;
        }
        // Stamped before the read: the value is at least this old.
        let at = Instant::now();
        let applied = applied_position(conn, pipeline);
        *self.last_applied() = Some((at, applied));
        applied
    }
}

#[derive(QueryableByName)]
struct LsnRow {
    #[diesel(sql_type = Text)]
    lsn: String,
}

/// This database's WAL insert position. The insert position, not the flush or write one: a
/// transaction committed with `synchronous_commit = off` (the replication engine's apply
/// sessions, or a test cluster) is visible before its commit record is flushed, but never before
/// it is inserted, so the insert position read after an answer is at or past every commit the
/// answer can reflect.
pub fn wal_insert_position(conn: &mut PgConnection) -> Option<Lsn> {
    wal_insert_lsn(conn)
        .map_err(|e| tracing::warn!(error = %e, "reading the WAL insert position failed"))
        .ok()
}

/// [`wal_insert_position`], saying why when it cannot be read.
pub fn wal_insert_lsn(conn: &mut PgConnection) -> Result<Lsn, String> {
    diesel::sql_query("SELECT pg_current_wal_insert_lsn()::text AS lsn")
        .get_result::<LsnRow>(conn)
        .map_err(|e| e.to_string())?
        .lsn
        .parse()
}

/// The `applied_lsn` the replication engine recorded for `pipeline` in this database; `None`
/// when the table or the row is absent. The engine moves it in the same transaction as the rows
/// it accounts for, so every statement that starts after this read sees at least those rows.
pub fn applied_position(conn: &mut PgConnection, pipeline: &str) -> Option<Lsn> {
    let row = diesel::sql_query(
        "SELECT applied_lsn::text AS lsn FROM fig_replication.pipelines WHERE name = $1",
    )
    .bind::<Text, _>(pipeline)
    .get_result::<LsnRow>(conn)
    .optional();
    match row {
        Ok(row) => row.and_then(|r| r.lsn.parse().ok()),
        // No schema yet: the engine creates it when it first applies here.
        Err(e) => {
            tracing::debug!(error = %e, pipeline, "no applied position");
            None
        }
    }
}

/// One request's dry-run flag and position, shared by the middleware and every [`crate::Db`]
/// the handler uses (request extensions).
#[derive(Debug, Clone)]
pub struct Scope(Arc<ScopeInner>);

#[derive(Debug)]
struct ScopeInner {
    dry_run: bool,
    feed: Option<Arc<Feed>>,
    /// `None`: not read yet. `Some(None)`: read, and there is none (replica without a row).
    position: Mutex<Option<Option<Lsn>>>,
}

impl Scope {
    fn new(dry_run: bool, feed: Option<Arc<Feed>>) -> Scope {
        Scope(Arc::new(ScopeInner {
            dry_run,
            feed,
            position: Mutex::new(None),
        }))
    }

    pub fn is_dry_run(&self) -> bool {
        self.0.dry_run
    }

    fn position(&self) -> MutexGuard<'_, Option<Option<Lsn>>> {
        self.0
            .position
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Called by `Db::run` on the handler's connection, before its work. A replica's position is
    /// taken once, before the request's first query: every query after it sees at least what it
    /// accounts for, so the position is never ahead of the answer's data.
    pub(crate) fn before_query(&self, conn: &mut PgConnection) {
        let Some(feed) = &self.0.feed else { return };
        let Source::Replica { pipeline } = &feed.source else {
            return;
        };
        if self.position().is_some() {
            return;
        }
        let applied = feed.applied(conn, pipeline);
        self.position().get_or_insert(applied);
    }

    /// Called by `Db::run` on the handler's connection, after its work (and after a dry run's
    /// rollback). An owner's position is read after every query of the request and the highest
    /// kept, so it is at or past every commit the answer reflects.
    pub(crate) fn after_query(&self, conn: &mut PgConnection) {
        let Some(feed) = &self.0.feed else { return };
        if feed.source != Source::Owner {
            return;
        }
        if let Some(now) = wal_insert_position(conn) {
            let mut position = self.position();
            let highest = position.flatten().map_or(now, |seen| seen.max(now));
            *position = Some(Some(highest));
        }
    }

    /// The position for the answer, once the handler is done. A request that never reached the
    /// database through `Db` (a refused body, an unknown path, a health check) read no data, so
    /// any position is safe for it: one is read now on a connection of its own.
    async fn settle(&self, pool: Option<web::Data<Pool>>) -> Option<Lsn> {
        let feed = self.0.feed.clone()?;
        if let Some(position) = *self.position() {
            return position;
        }
        if let Source::Replica { .. } = feed.source
            && let Some(recent) = feed.recent_applied()
        {
            return recent;
        }
        let pool = pool?;
        web::block(move || {
            let mut conn = pool.get().ok()?;
            match &feed.source {
                Source::Owner => wal_insert_position(&mut conn),
                Source::Replica { pipeline } => feed.applied(&mut conn, pipeline),
            }
        })
        .await
        .ok()
        .flatten()
    }
}

/// Middleware (`from_fn`), the outermost layer of the monolith and of each service: refuses a bad
/// `X-Fig-Dry-Run` with `400 bad_header`, hands the handlers their [`Scope`], and sets
/// `X-Fig-Db-Position` on every answer it can (without [`Positions`] app data, on none).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let positions = req.app_data::<web::Data<Positions>>().cloned();
    let pool = req.app_data::<web::Data<Pool>>().cloned();
    let feed = positions.map(|p| Arc::clone(p.feed_for(req.path())));
    let (mut response, scope) = match dry_run(req.headers()) {
        Err(refused) => {
            let scope = Scope::new(false, feed);
            let response = req.into_response(refused.error_response());
            (response.map_into_right_body(), scope)
        }
        Ok(dry_run) => {
            let scope = Scope::new(dry_run, feed);
            // A replica position read by a recent request is older than anything this request
            // will read: take it now and spare the handler's connection the round trip.
            if let Some(feed) = &scope.0.feed
                && let Source::Replica { .. } = feed.source
                && let Some(recent) = feed.recent_applied()
            {
                *scope.position() = Some(recent);
            }
            req.extensions_mut().insert(scope.clone());
            let response = next.call(req).await?;
            (response.map_into_left_body(), scope)
        }
    };
    if let Some(lsn) = scope.settle(pool).await
        && let Ok(value) = HeaderValue::from_str(&lsn.to_string())
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-fig-db-position"), value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn lsns_print_and_parse_like_postgres() {
        for (text, value) in [
            ("0/0", 0u64),
            ("16/B374D848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
            ("0/1", 1),
        ] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn, Lsn(value), "{text}");
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!("16/b374d848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        for bad in [
            "",
            "0",
            "/0",
            "0/",
            "1/2/3",
            "G/0",
            "100000000/0",
            "+1/0",
            " 0/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
        assert!(Lsn(0x1_0000_0000) > Lsn(0xFFFF_FFFF));
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                HeaderName::from_static("x-fig-dry-run"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn only_one_and_true_ask_for_a_dry_run() {
        assert_eq!(dry_run(&headers(&[])), Ok(false));
        for yes in ["1", "true", "TRUE", "True", "1, true", "1,1"] {
            assert_eq!(dry_run(&headers(&[yes])), Ok(true), "{yes}");
        }
        assert_eq!(dry_run(&headers(&["1", "true"])), Ok(true));
        for no in ["0", "false", "", "yes", "2", "1,", "1, 0", "truee"] {
            let e = dry_run(&headers(&[no])).unwrap_err();
            assert_eq!(
                (e.status, e.code, e.field.as_deref()),
                (StatusCode::BAD_REQUEST, "bad_header", Some(DRY_RUN)),
                "{no:?}"
            );
        }
        assert!(dry_run(&headers(&["1", "0"])).is_err());
    }

    #[test]
    fn prefixes_pick_a_capability_by_whole_segments() {
        let replica = |p: &str| Source::Replica {
            pipeline: p.to_string(),
        };
        let positions = Positions::single(Source::Owner)
            .with_prefix("/catalog", replica("catalog_reverse"))
            .with_prefix("/wishlists", replica("wishlist_reverse"));
        for (path, expected) in [
            ("/catalog", replica("catalog_reverse")),
            ("/catalog/albums/7", replica("catalog_reverse")),
            ("/wishlists/3/items/4", replica("wishlist_reverse")),
            ("/catalogue", Source::Owner),
            ("/customers/1", Source::Owner),
            ("/orders", Source::Owner),
            ("/healthz", Source::Owner),
        ] {
            assert_eq!(positions.source_for(path), &expected, "{path}");
        }
    }
}
