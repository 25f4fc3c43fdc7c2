//! Customers: who can keep a wishlist and place orders. Other modules use only these functions.

pub mod domain;
pub mod http;

mod db;
mod error;

use diesel::PgConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

pub use domain::{Customer, CustomerId, NewCustomer};
pub use error::CustomersError;

pub fn get_customer(conn: &mut PgConnection, id: CustomerId) -> Result<Customer, CustomersError> {
    db::get(conn, id)?.ok_or(CustomersError::NotFound)
}

pub fn customer_exists(conn: &mut PgConnection, id: CustomerId) -> Result<bool, CustomersError> {
    Ok(db::exists(conn, id)?)
}

pub fn create_customer(
    conn: &mut PgConnection,
    new: &NewCustomer,
) -> Result<Customer, CustomersError> {
    db::insert(conn, new).map_err(|e| match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            CustomersError::EmailTaken
        }
        other => other.into(),
    })
}

pub(crate) fn insert_customers_bulk(
    conn: &mut PgConnection,
    rows: &[NewCustomer],
) -> Result<Vec<CustomerId>, CustomersError> {
    Ok(db::insert_bulk(conn, rows)?)
}
