use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use diesel::r2d2::{ConnectionManager, PoolError};
use std::sync::Arc;

use diesel::{Connection, PgConnection};
use futures_util::future::{Ready, ready};

use super::ApiError;
use crate::fence::{self, FenceError, Fences};
use crate::parallel_run::{self, Scope};
use crate::write_mode::{is_write, not_write_owner};

pub type Pool = diesel::r2d2::Pool<ConnectionManager<PgConnection>>;

#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    pub max_size: u32,
    pub connection_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 16,
            connection_timeout: Duration::from_secs(5),
        }
    }
}

/// Builds the pool; fails when the database cannot be reached within the timeout, so a
/// misconfigured service stops at start rather than on its first request.
pub fn build_pool(database_url: &str, config: PoolConfig) -> Result<Pool, PoolBuildError> {
    diesel::r2d2::Pool::builder()
        .max_size(config.max_size)
        // Open connections as load needs them; r2d2 would otherwise open max_size up front.
        .min_idle(Some(1))
        .connection_timeout(config.connection_timeout)
        .build(ConnectionManager::new(database_url))
        .map_err(|e| PoolBuildError(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open a database connection pool: {0}")]
pub struct PoolBuildError(String);

/// Failures of the plumbing between a handler and its query (not of the query itself).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database connection available: {0}")]
    Checkout(#[from] PoolError),
    #[error("the blocking task running the query was cancelled")]
    Cancelled,
    /// A dry run's transaction could not be opened or rolled back. Nothing was committed (no
    /// `COMMIT` was sent, and a connection left inside a transaction is discarded by the pool),
    /// but the answer cannot be vouched for.
    #[error("the dry run's transaction failed: {0}")]
    DryRun(diesel::result::Error),
    /// The write was not admitted: this side does not own the capability's writes (503
    /// `not_write_owner`, nothing written).
    #[error("this side does not own {0}'s writes")]
    NotOwner(String),
    /// The admission itself, or the write's transaction around it, failed.
    #[error("the write's transaction failed: {0}")]
    Fence(FenceError),
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if let DbError::NotOwner(capability) = &e {
            // Expected during and after a flip: not an operator's problem.
            tracing::debug!(capability, "write refused: not the write owner");
            return not_write_owner(capability);
        }
        tracing::error!(error = %e, "database plumbing failed");
        match e {
            DbError::Checkout(_) => ApiError::unavailable(),
            DbError::Cancelled | DbError::DryRun(_) | DbError::Fence(_) | DbError::NotOwner(_) => {
                ApiError::internal()
            }
        }
    }
}

impl From<FenceError> for DbError {
    fn from(e: FenceError) -> Self {
        match e {
            FenceError::NotOwner { capability } => DbError::NotOwner(capability),
            other => DbError::Fence(other),
        }
    }
}

/// Logs a query failure and hides it behind a 500: database text never reaches a client.
pub fn query_failed(e: &diesel::result::Error) -> ApiError {
    tracing::error!(error = %e, "query failed");
    ApiError::internal()
}

/// How background work (the outbox worker, the reservation sweeper, the router's admin API)
/// touches the database: check a connection out of the pool and run `f` on actix's blocking pool,
/// because diesel and r2d2 block the thread. Request handlers of the monolith and the services use
/// [`Db`] instead, which adds dry runs and database positions.
pub async fn blocking<T, E, F>(pool: &Pool, f: F) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    let pool = pool.clone();
    web::block(move || {
        let mut conn = pool.get().map_err(|e| E::from(DbError::Checkout(e)))?;
        f(&mut conn)
    })
    .await
    .unwrap_or_else(|_| Err(E::from(DbError::Cancelled)))
}

/// The one way the monolith's and the services' handlers touch the database (an extractor): like
/// [`blocking`], plus the write fence and what the parallel run needs ([`parallel_run`]). In a
/// write request to a fenced capability ([`Fences`] app data) every [`Db::run`] happens inside a
/// transaction that first admits the write ([`fence::admit`]), so no write commits once this side
/// was fenced. In a dry-run request every run happens inside a transaction that is rolled back
/// (and admits nothing: it writes nothing). Each run reads the request's database position on
/// the connection it used.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    scope: Option<Scope>,
    dry_run: bool,
    /// The capability this request's writes must be admitted for.
    fence: Option<Arc<str>>,
}

impl FromRequest for Db {
    type Error = ApiError;
    type Future = Ready<Result<Db, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(pool) = req.app_data::<web::Data<Pool>>() else {
            tracing::error!("no database pool in the app data");
            return ready(Err(ApiError::internal()));
        };
        let scope = req.extensions().get::<Scope>().cloned();
        // Without the middleware's scope the header is read here: a dry run must never commit
        // because an app forgot the middleware.
        let dry_run = match &scope {
            Some(scope) => Ok(scope.is_dry_run()),
            None => parallel_run::dry_run(req.headers()),
        };
        ready(dry_run.map(|dry_run| {
            let fence = (is_write(req.method()) && !dry_run)
                .then(|| req.app_data::<web::Data<Fences>>())
                .flatten()
                .and_then(|fences| fences.for_path(req.path()).cloned());
            Db {
                pool: pool.get_ref().clone(),
                scope,
                dry_run,
                fence,
            }
        }))
    }
}

impl Db {
    /// Whether this request's writes are rolled back (`X-Fig-Dry-Run`). Code that does more than
    /// database work (the order saga's remote calls, the outbox's wake-up) asks this.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Checks a connection out and runs `f` on the blocking pool, as [`blocking`] does. In a dry
    /// run, `f` runs inside a transaction that is always rolled back: its own transactions become
    /// savepoints, and its answer (success or failure) is returned as it would have been. In a
    /// fenced write, `f` runs inside a transaction that admits it first ([`admitted`]).
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (pool, scope, dry_run) = (self.pool.clone(), self.scope.clone(), self.dry_run);
        let fence = self.fence.clone();
        web::block(move || {
            let mut conn = pool.get().map_err(|e| E::from(DbError::Checkout(e)))?;
            if let Some(scope) = &scope {
                scope.before_query(&mut conn);
            }
            let answer = match (dry_run, &fence) {
                (true, _) => rolled_back(&mut conn, f),
                (false, Some(capability)) => admitted(&mut conn, capability, f),
                (false, None) => f(&mut conn),
            };
            if let Some(scope) = &scope {
                scope.after_query(&mut conn);
            }
            answer
        })
        .await
        .unwrap_or_else(|_| Err(E::from(DbError::Cancelled)))
    }
}

/// Runs `f` inside a transaction that first admits a write to `capability` ([`fence::admit`]):
/// refused with [`DbError::NotOwner`] (nothing run) when this side does not own its writes. The
/// transaction commits whatever `f` answered, as `f`'s statements would have committed without
/// it (its own transactions become savepoints and roll back on their own errors): the fence is
/// added, nothing else changes. Background work that writes a capability's tables (the
/// reservation sweeper) uses it too.
pub fn admitted<T, E, F>(conn: &mut PgConnection, capability: &str, f: F) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E>,
    E: From<DbError>,
{
    let mut answer = None;
    let ended = conn.transaction::<(), DbError, _>(|tx| {
        fence::admit(tx, capability)?;
        answer = Some(f(tx));
        Ok(())
    });
    match (ended, answer) {
        // `f`'s own failure is the answer, whether or not the commit after it went through.
        (_, Some(Err(failed))) => Err(failed),
        (Ok(()), Some(Ok(answer))) => Ok(answer),
        (Err(e), _) => Err(E::from(e)),
        // The closure sets the answer whenever it returns `Ok`.
        (Ok(()), None) => Err(E::from(DbError::Cancelled)),
    }
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        DbError::Fence(FenceError::Query(e))
    }
}

/// Ends a dry run's transaction.
enum DryRunEnd {
    RolledBack,
    Failed(diesel::result::Error),
}

impl From<diesel::result::Error> for DryRunEnd {
    fn from(e: diesel::result::Error) -> Self {
        DryRunEnd::Failed(e)
    }
}

/// Runs `f` inside a transaction and rolls it back whatever `f` answered. Sequences drawn inside
/// are not given back (PostgreSQL never does); nothing else `f` wrote survives.
fn rolled_back<T, E, F>(conn: &mut PgConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E>,
    E: From<DbError>,
{
    let mut answer = None;
    let ended = conn.transaction::<(), DryRunEnd, _>(|tx| {
        answer = Some(f(tx));
        Err(DryRunEnd::RolledBack)
    });
    match (ended, answer) {
        (Err(DryRunEnd::RolledBack), Some(answer)) => answer,
        (Err(DryRunEnd::Failed(e)), _) => {
            tracing::error!(error = %e, "dry run: the transaction could not be opened or rolled back");
            Err(E::from(DbError::DryRun(e)))
        }
        // The closure always asks for the rollback, so these cannot happen.
        (Ok(()), _) | (Err(DryRunEnd::RolledBack), None) => Err(E::from(DbError::DryRun(
            diesel::result::Error::RollbackTransaction,
        ))),
    }
}
