//! What every MusicCorp service (the monolith and each extracted service) shares: the error
//! envelope, body and query parsing, the one way handlers reach the database (with the write
//! fence, dry runs and database positions for the parallel run), and health checks. One copy, so the services cannot
//! drift apart in how they fail.

pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod fence;
pub mod head;
pub mod health;
pub mod logging;
pub mod parallel_run;
pub mod serve;
pub mod write_mode;

pub use db::{Db, Pool, PoolConfig, blocking, build_pool};
pub use error::{ApiError, json_error_handlers};
pub use extract::{JsonBody, QueryMap, path_id};
pub use write_mode::WriteMode;
