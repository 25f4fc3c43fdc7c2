use crate::catalog::CatalogError;
use crate::customers::CustomersError;
use platform::ApiError;
use platform::db::{DbError, query_failed};

#[derive(Debug, thiserror::Error)]
pub enum WishlistError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("a wishlist holds at most {0} albums")]
    Full(usize),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Customers(#[from] CustomersError),
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
                actix_web::http::StatusCode::CONFLICT,
                "wishlist_full",
                format!("a wishlist holds at most {max} albums; remove one first"),
            )
            .with_field("album_id"),
            WishlistError::Catalog(e) => e.into(),
            WishlistError::Customers(e) => e.into(),
            WishlistError::Db(e) => e.into(),
            WishlistError::Query(e) => query_failed(&e),
        }
    }
}
