use actix_web::http::StatusCode;

use super::domain::ArtistId;
use platform::ApiError;
use platform::db::{DbError, query_failed};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("sku {0} is already taken")]
    SkuTaken(String),
    #[error("artist {} does not exist", .0.0)]
    UnknownArtist(ArtistId),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(what) => ApiError::not_found(what),
            CatalogError::Invalid { field, message } => ApiError::invalid(field, message),
            CatalogError::SkuTaken(sku) => ApiError::new(
                StatusCode::CONFLICT,
                "sku_taken",
                format!("an album with sku {sku} already exists"),
            )
            .with_field("sku"),
            CatalogError::UnknownArtist(id) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_reference",
                format!("artist {} does not exist", id.0),
            )
            .with_field("artist_id"),
            CatalogError::Db(e) => e.into(),
            CatalogError::Query(e) => query_failed(&e),
        }
    }
}
