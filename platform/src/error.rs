//! The error envelope every side answers with ([`ApiError`]), and [`json_error_handlers`], which
//! rewrites actix's own error responses (404, 405, 413, …) into it.

use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The one error shape every endpoint answers with:
/// `{"error": {"code": "...", "message": "...", "field": "..."}}`.
///
/// Each bounded context has its own error enum and converts it into this in one place (its
/// `error.rs`); nothing else builds error responses, so no database text can leak by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 422: a well-formed request whose `field` is not acceptable.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with_field(field)
    }

    /// 404 for a path id; `field` names the path parameter (`album_id`), so a client can tell
    /// which of two ids in `/wishlists/{customer_id}/items/{album_id}` is unknown.
    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
        .with_field(format!("{what}_id"))
    }

    /// 500 without detail: the cause is logged, never sent.
    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    pub fn unavailable() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable; retry later",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let mut response = HttpResponse::build(self.status);
        if self.code == crate::write_mode::NOT_WRITE_OWNER {
            // Marks a deliberate refusal: the side is up and answering, so a proxy's circuit
            // breaker must not count it as failing (a flip sends it such writes by design).
            response.insert_header((crate::write_mode::REFUSED_HEADER, self.code));
        }
        response.json(Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        })
    }
}

/// Turns every error response that is not already our JSON envelope (actix's own 404, 405,
/// extractor failures, a panic's 500) into the envelope, so clients see one shape everywhere.
pub fn json_error_handlers<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json = res
            .response()
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let error = match status {
            StatusCode::NOT_FOUND => ApiError::new(status, "not_found", "no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
                status,
                "method_not_allowed",
                "method not allowed on this resource",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(status, "payload_too_large", "request body too large")
            }
            s if s.is_server_error() => ApiError::internal(),
            s => ApiError::new(s, "bad_request", "the request could not be processed"),
        };
        let (req, _) = res.into_parts();
        let response = error.error_response().map_into_right_body();
        Ok(ErrorHandlerResponse::Response(ServiceResponse::new(
            req, response,
        )))
    })
}
