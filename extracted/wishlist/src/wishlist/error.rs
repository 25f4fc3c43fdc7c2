use actix_web::http::StatusCode;

use crate::clients::ClientError;
use platform::ApiError;
use platform::db::{DbError, query_failed};

#[derive(Debug, thiserror::Error)]
pub enum WishlistError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("a wishlist holds at most {0} albums")]
    Full(usize),
    /// A service we must ask before changing anything did not answer.
    #[error(transparent)]
    Dependency(#[from] ClientError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
}

impl From<WishlistError> for ApiError {
    fn from(e: WishlistError) -> Self {
        match e {
            WishlistError::NotFound(what) => ApiError::not_found(what),
            WishlistError::Full(max) => ApiError::new(
                StatusCode::CONFLICT,
                "wishlist_full",
                format!("a wishlist holds at most {max} albums; remove one first"),
            )
            .with_field("album_id"),
            WishlistError::Dependency(e) => {
                tracing::warn!(error = %e, "dependency failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "dependency_unavailable",
                    "a service this request needs did not answer; retry later",
                )
            }
            WishlistError::Db(e) => e.into(),
            WishlistError::Query(e) => query_failed(&e),
        }
    }
}
