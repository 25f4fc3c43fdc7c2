//! What every bounded context's HTTP layer shares: the error envelope, body and query parsing,
//! and the one way handlers reach the database.

pub mod db;
pub mod error;
pub mod extract;

pub use db::{Pool, PoolConfig, blocking};
pub use error::{ApiError, json_error_handlers};
pub use extract::{JsonBody, QueryMap, path_id};
