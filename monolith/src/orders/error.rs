use actix_web::http::StatusCode;

use crate::catalog::{AlbumId, CatalogError};
use crate::customers::CustomersError;
use crate::wishlist::WishlistError;
use platform::ApiError;
use platform::db::{DbError, query_failed};

#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("order not found")]
    NotFound,
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("customer {0} does not exist")]
    UnknownCustomer(i64),
    #[error("album {} on line {line} does not exist", album.0)]
    UnknownAlbum { line: usize, album: AlbumId },
    #[error("album {} on line {line}: {available} in stock, {requested} requested", album.0)]
    InsufficientStock {
        line: usize,
        album: AlbumId,
        requested: i32,
        available: i32,
    },
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    KeyInFlight,
    /// The catalog service refused the reservation (no stock, unknown album, ...).
    #[error("{message}")]
    StockRefused {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// A service the order needs did not answer; nothing was placed and nothing is held.
    #[error("{0}")]
    DependencyUnavailable(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Customers(#[from] CustomersError),
    #[error(transparent)]
    Wishlist(#[from] WishlistError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
}

impl From<OrdersError> for ApiError {
    fn from(e: OrdersError) -> Self {
        let message = e.to_string();
        match e {
            OrdersError::NotFound => ApiError::not_found("order"),
            OrdersError::Invalid { field, message } => ApiError::invalid(field, message),
            OrdersError::UnknownCustomer(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_reference",
                message,
            )
            .with_field("customer_id"),
            OrdersError::UnknownAlbum { line, .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_reference",
                message,
            )
            .with_field(format!("lines[{line}].album_id")),
            OrdersError::InsufficientStock { line, .. } => {
                ApiError::new(StatusCode::CONFLICT, "insufficient_stock", message)
                    .with_field(format!("lines[{line}].quantity"))
            }
            OrdersError::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            )
            .with_field("Idempotency-Key"),
            OrdersError::KeyInFlight => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_key_in_flight", message)
                    .with_field("Idempotency-Key")
            }
            OrdersError::StockRefused {
                status,
                code,
                message,
                field,
            } => {
                // The catalog speaks the same contract; pass its answer on.
                // Its field paths (lines[i]...) are ours too; anything else is the catalog's own
                // business, reported without its field.
                let known = match code.as_str() {
                    "insufficient_stock" => Some("insufficient_stock"),
                    "unknown_reference" => Some("unknown_reference"),
                    "invalid_field" => Some("invalid_field"),
                    _ => None,
                };
                let status = super::saga::refusal_status(status);
                match (known, field) {
                    (Some(code), Some(f)) => ApiError::new(status, code, message).with_field(f),
                    (Some(code), None) => ApiError::new(status, code, message),
                    (None, _) => ApiError::new(status, "stock_refused", message),
                }
            }
            OrdersError::DependencyUnavailable(why) => {
                tracing::warn!(reason = %why, "order not placed: dependency unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "dependency_unavailable",
                    "the catalog service did not answer; nothing was placed, retry later",
                )
            }
            OrdersError::Catalog(e) => e.into(),
            OrdersError::Customers(e) => e.into(),
            OrdersError::Wishlist(e) => e.into(),
            OrdersError::Db(e) => e.into(),
            OrdersError::Query(e) => query_failed(&e),
        }
    }
}
