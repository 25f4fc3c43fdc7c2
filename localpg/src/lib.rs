//! Throwaway local PostgreSQL clusters.
//!
//! `fig up` and every test in the workspace get their database server from here, so nobody has to
//! install or start PostgreSQL by hand. A [`Cluster`] is either one we own (initdb into a temporary
//! directory, started on a private Unix socket and optionally a free loopback TCP port, stopped and
//! removed on drop) or an existing server named by a URL.
//!
//! Tests share one cluster per test process ([`shared`]) and get a fresh database per test, cloned
//! from a migrated template ([`TestDb`]), so they run in parallel without seeing each other's data.
//!
//! With the `tls` feature, a cluster can serve TLS with a certificate from a throwaway CA
//! ([`ClusterOptions::tls`], `shared_tls`), for tests of TLS clients; [`shared_tcp`] is its
//! counterpart with `ssl = off`.

mod binaries;
mod cluster;
mod error;
mod settings;
mod testdb;
mod tls;

pub use binaries::Binaries;
pub use cluster::{Cluster, ClusterOptions, Listen};
pub use error::Error;
pub use settings::Settings;
#[cfg(feature = "tls")]
pub use testdb::{RootCert, TlsOutcome, shared_tls, tls_test_url};
pub use testdb::{TestDb, shared, shared_tcp};
pub use tls::{ClusterTls, TlsOptions};

/// Quotes an SQL identifier (database names come from callers, so never splice them raw).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn quote_ident_doubles_embedded_quotes() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
