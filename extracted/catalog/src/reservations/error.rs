use actix_web::http::StatusCode;

use crate::catalog::{AlbumId, CatalogError};
use platform::ApiError;
use platform::db::{DbError, query_failed};

#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    #[error("reservation not found")]
    NotFound,
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("album {} on line {line} does not exist", album.0)]
    UnknownAlbum { line: usize, album: AlbumId },
    #[error("album {} on line {line}: {available} in stock, {requested} requested", album.0)]
    InsufficientStock {
        line: usize,
        album: AlbumId,
        requested: i32,
        available: i32,
    },
    #[error("this key was used for a reservation of different lines")]
    KeyReused,
    #[error("the reservation was released; it cannot be confirmed")]
    Released,
    #[error("the reservation is confirmed; it cannot be released")]
    Confirmed,
    #[error("the reservation expired and its stock is no longer available")]
    Expired,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
}

impl From<ReservationError> for ApiError {
    fn from(e: ReservationError) -> Self {
        let message = e.to_string();
        let conflict = |code| ApiError::new(StatusCode::CONFLICT, code, message.clone());
        match e {
            ReservationError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message.clone()).with_field("key")
            }
            ReservationError::Invalid { field, message } => ApiError::invalid(field, message),
            ReservationError::UnknownAlbum { line, .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_reference",
                message,
            )
            .with_field(format!("lines[{line}].album_id")),
            ReservationError::InsufficientStock { line, .. } => {
                conflict("insufficient_stock").with_field(format!("lines[{line}].quantity"))
            }
            ReservationError::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            )
            .with_field("key"),
            ReservationError::Released => conflict("reservation_released"),
            ReservationError::Confirmed => conflict("reservation_confirmed"),
            ReservationError::Expired => conflict("reservation_expired"),
            ReservationError::Catalog(e) => e.into(),
            ReservationError::Db(e) => e.into(),
            ReservationError::Query(e) => query_failed(&e),
        }
    }
}
