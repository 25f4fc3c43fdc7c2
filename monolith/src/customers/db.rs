//! Customer tables, private to this module.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::domain::{Customer, CustomerId, NewCustomer};

diesel::table! {
    customers.customers (id) {
        id -> Int8,
        name -> Text,
        email -> Text,
        created_at -> Timestamptz,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = customers)]
struct CustomerRow {
    id: i64,
    name: String,
    email: String,
    created_at: DateTime<Utc>,
}

impl From<CustomerRow> for Customer {
    fn from(r: CustomerRow) -> Self {
        Customer {
            id: CustomerId(r.id),
            name: r.name,
            email: r.email,
            created_at: r.created_at,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = customers)]
struct NewRow<'a> {
    name: &'a str,
    email: &'a str,
}

impl<'a> From<&'a NewCustomer> for NewRow<'a> {
    fn from(c: &'a NewCustomer) -> Self {
        NewRow {
            name: &c.name,
            email: &c.email,
        }
    }
}

pub fn get(conn: &mut PgConnection, id: CustomerId) -> QueryResult<Option<Customer>> {
    customers::table
        .find(id.0)
        .select(CustomerRow::as_select())
        .first(conn)
        .optional()
        .map(|r| r.map(Customer::from))
}

pub fn exists(conn: &mut PgConnection, id: CustomerId) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(customers::table.find(id.0))).get_result(conn)
}

pub fn insert(conn: &mut PgConnection, new: &NewCustomer) -> QueryResult<Customer> {
    diesel::insert_into(customers::table)
        .values(NewRow::from(new))
        .returning(CustomerRow::as_returning())
        .get_result(conn)
        .map(Customer::from)
}

pub fn insert_bulk(conn: &mut PgConnection, rows: &[NewCustomer]) -> QueryResult<Vec<CustomerId>> {
    let values: Vec<NewRow> = rows.iter().map(NewRow::from).collect();
    diesel::insert_into(customers::table)
        .values(values)
        .returning(customers::id)
        .get_results(conn)
        .map(|ids| ids.into_iter().map(CustomerId).collect())
}
