//! TLS for the connections the project opens itself (the replication engine's, the router's
//! `LISTEN`), with libpq's connection parameters and on rustls.
//!
//! libpq (and so diesel) implements `sslmode` and `sslrootcert` itself; tokio-postgres and the
//! replication engine's own protocol code need a TLS implementation handed to them, and
//! tokio-postgres's parser knows only `sslmode=disable|prefer|require`. This crate reads the
//! parameters as libpq does and builds the one rustls configuration both use:
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | if the server offers it | chain, if `sslrootcert` is given |
//! | `require` | always | chain, if `sslrootcert` is given (as libpq) |
//! | `verify-ca` | always | chain up to `sslrootcert` |
//! | `verify-full` | always | chain, and the host name |
//!
//! - [`TlsSettings::from_conninfo`] takes the TLS parameters out of a connection string.
//! - [`Connector`] runs the handshake on a socket the caller opened after its SSLRequest.
//! - [`tokio_postgres_config`] gives a `tokio_postgres::Config` and a [`MakeRustlsConnect`].
//!
//! Not supported, and refused by name: `sslmode=allow`, client certificates (`sslcert`,
//! `sslkey`), revocation lists, `sslrootcert=system`, and channel binding.

mod connector;
mod conninfo;
mod postgres;
mod settings;
mod verify;

use std::path::PathBuf;

pub use connector::Connector;
pub use postgres::{MakeRustlsConnect, RustlsConnect, RustlsStream, tokio_postgres_config};
pub use settings::{SslMode, TlsSettings, Verification};
/// The TLS session type [`Connector::handshake`] returns.
pub use tokio_rustls::client::TlsStream;

/// Everything that can go wrong setting up or running TLS to PostgreSQL. Each says under which
/// settings, so an operator can tell a wrong CA file from a wrong host name.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid connection string: {0}")]
    Parse(String),

    #[error("unsupported connection parameter: {0}")]
    Unsupported(String),

    #[error(
        "sslmode={mode} needs sslrootcert=<PEM file of the CA that signed the server's \
         certificate>"
    )]
    MissingRootCert { mode: SslMode },

    #[error("sslrootcert {}: {detail}", path.display())]
    RootCert { path: PathBuf, detail: String },

    #[error("TLS configuration: {0}")]
    Config(String),

    #[error("TLS: {host:?} is not a valid TLS server name")]
    ServerName { host: String },

    #[error("TLS: the server at {host} does not accept TLS connections ({settings})")]
    Refused { host: String, settings: String },

    #[error("TLS: certificate verify failed: {reason} for {host} ({settings})")]
    Verify {
        reason: String,
        host: String,
        settings: String,
    },

    #[error("TLS handshake with {host} failed ({settings}): {source}")]
    Handshake {
        host: String,
        settings: String,
        #[source]
        source: std::io::Error,
    },

    /// A handshake was asked of a connector made for `sslmode=disable`.
    #[error("TLS was asked for, but sslmode=disable")]
    Disabled,
}

/// An error and what caused it, on one line: tokio-postgres's own text for a failed TLS
/// handshake is only "error performing TLS handshake", the certificate problem is its cause.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}
