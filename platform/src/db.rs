use std::time::Duration;

use actix_web::web;
use diesel::PgConnection;
use diesel::r2d2::{ConnectionManager, PoolError};

use super::ApiError;

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
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!(error = %e, "database plumbing failed");
        match e {
            DbError::Checkout(_) => ApiError::unavailable(),
            DbError::Cancelled => ApiError::internal(),
        }
    }
}

/// Logs a query failure and hides it behind a 500: database text never reaches a client.
pub fn query_failed(e: &diesel::result::Error) -> ApiError {
    tracing::error!(error = %e, "query failed");
    ApiError::internal()
}

/// The one way handlers touch the database: check a connection out of the pool and run `f` on
/// actix's blocking pool, because diesel and r2d2 block the thread.
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
