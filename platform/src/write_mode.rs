//! Who may write, as configured: the state a service's fence starts in ([`crate::fence`]). An
//! extracted service starts as a `replica`: replication from the monolith feeds its tables, so a
//! write through its API would be overwritten or, worse, diverge silently. It becomes the `owner`
//! at cutover. Once its database records ownership, that record decides, not this setting: a
//! flip changes the record while the process runs, and a restart keeps what the flip did.

use std::str::FromStr;

use actix_web::http::{Method, StatusCode};
use serde::Serialize;

use crate::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Serves reads; refuses writes with 503 `not_write_owner`.
    Replica,
    /// Serves reads and writes.
    Owner,
}

impl WriteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Replica => "replica",
            WriteMode::Owner => "owner",
        }
    }
}

impl FromStr for WriteMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "replica" => Ok(WriteMode::Replica),
            "owner" => Ok(WriteMode::Owner),
            other => Err(format!("expected replica or owner, got {other:?}")),
        }
    }
}

/// Whether a request with this method changes data.
pub fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The error code of a write this side refused because it does not own the writes.
pub const NOT_WRITE_OWNER: &str = "not_write_owner";
/// Set on that refusal (its value is the code): the side is healthy, it just is not the owner
/// (the router's circuit breaker does not count it).
pub const REFUSED_HEADER: &str = "x-fig-refused";

/// The answer to a write this side may not take (fenced, or never granted the writes).
pub fn not_write_owner(capability: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        NOT_WRITE_OWNER,
        format!(
            "this side does not own {capability}'s writes: send them through the router, \
             which sends them to the write owner"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("Owner".parse::<WriteMode>(), Ok(WriteMode::Owner));
        assert_eq!(" replica ".parse::<WriteMode>(), Ok(WriteMode::Replica));
        assert!("primary".parse::<WriteMode>().is_err());
        assert_eq!(WriteMode::Owner.as_str(), "owner");
    }

    #[test]
    fn only_reads_pass_a_replica() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!is_write(&m), "{m}");
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_write(&m), "{m}");
        }
    }
}
