//! Who may write. An extracted service starts as a `replica`: replication from the monolith feeds
//! its tables, so a write through its API would be overwritten or, worse, diverge silently. It
//! becomes the `owner` at cutover. The mode guards every non-read request before any handler runs,
//! except a dry run (`X-Fig-Dry-Run`): it commits nothing, so a replica serves it for the parallel
//! run.

use std::str::FromStr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
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

pub fn not_write_owner(service: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_write_owner",
        format!("this {service} service is a read replica; writes go to the write owner"),
    )
}

/// Service name and mode, as app data for the guard and the status endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Ownership {
    pub service: &'static str,
    pub mode: WriteMode,
}

/// Middleware (`from_fn`): refuses writes unless this instance owns writes or the request is a dry
/// run (whose transaction is rolled back by `Db::run`, so nothing reaches the replica's tables).
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // Without its configuration the guard fails closed: a service that forgot to say it owns
    // writes is treated as a replica.
    let ownership = req
        .app_data::<web::Data<Ownership>>()
        .map(|o| *o.get_ref())
        .unwrap_or(Ownership {
            service: "unconfigured",
            mode: WriteMode::Replica,
        });
    // A bad dry-run header counts as none: refused here, unless the parallel-run middleware
    // outside already answered 400.
    let dry_run = crate::parallel_run::dry_run(req.headers()).unwrap_or(false);
    if ownership.mode == WriteMode::Replica && is_write(req.method()) && !dry_run {
        let response = not_write_owner(ownership.service).error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
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
