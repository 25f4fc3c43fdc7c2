use actix_web::http::StatusCode;

use platform::ApiError;
use platform::db::{DbError, query_failed};

#[derive(Debug, thiserror::Error)]
pub enum CustomersError {
    #[error("customer not found")]
    NotFound,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
}

impl From<CustomersError> for ApiError {
    fn from(e: CustomersError) -> Self {
        match e {
            CustomersError::NotFound => ApiError::not_found("customer"),
            CustomersError::Invalid { field, message } => ApiError::invalid(field, message),
            CustomersError::EmailTaken => ApiError::new(
                StatusCode::CONFLICT,
                "email_taken",
                "a customer with this email already exists",
            )
            .with_field("email"),
            CustomersError::Db(e) => e.into(),
            CustomersError::Query(e) => query_failed(&e),
        }
    }
}
