//! The monolith's HTTP contract against real PostgreSQL and a real server on port 0.
//! Each test gets its own database cloned from the migrated template.

mod support;

mod customers;
mod errors;
mod migrations;
mod orders;
mod seed;
