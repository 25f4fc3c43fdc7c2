//! A replication connection to PostgreSQL, spoken directly on the wire.
//!
//! Upstream `tokio-postgres` cannot run the CopyBoth sub-protocol that `START_REPLICATION` switches
//! to, so this module implements the small part of the frontend/backend protocol a logical
//! replication client needs, on top of `postgres-protocol`'s message encoders and decoders:
//!
//! - [`ReplicationConfig`]: where and as whom to connect, parsed from a libpq URL;
//! - [`ReplicationConnection`]: startup with `replication=database`, authentication (trust,
//!   cleartext password, MD5, SCRAM-SHA-256), simple queries and the replication commands
//!   `IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`, `DROP_REPLICATION_SLOT`, `START_REPLICATION`;
//! - [`ReplicationStream`]: the CopyBoth stream of XLogData and primary keepalives, and the
//!   standby status updates that tell the server how far the client has got.
//!
//! TLS follows the URL's `sslmode` and `sslrootcert` as libpq does (see [`pgtls`]): over TCP the
//! connection sends an SSLRequest, and wraps the socket in rustls when the server answers `'S'`;
//! `prefer` (the default) stays in plaintext on `'N'`, `require` and stronger refuse. Unix
//! sockets carry no TLS. SCRAM runs without channel binding, so `channel_binding=require` is
//! refused when the configuration is parsed.
//!
//! Nothing here sets timeouts on its own (apart from the optional `connect_timeout` of the URL):
//! wrap calls in `tokio::time::timeout` where a deadline matters. After an `Io` or `Protocol`
//! error the connection's position in the protocol is unknown; drop it and connect again.

mod config;
mod connection;
mod framing;
mod lsn;
mod stream;

pub use config::{ReplicationConfig, Target};
pub use connection::{
    CreatedSlot, ReplicationConnection, Row, SnapshotAction, SystemId, publication_names_option,
    quote_identifier, quote_literal,
};
pub use lsn::{
    Lsn, format_lsn, parse_lsn, pg_micros_to_system_time, pg_now_micros, system_time_to_pg_micros,
};
pub use stream::{
    ReplicationMessage, ReplicationStream, encode_standby_status_update, parse_copy_data,
};

/// Everything that can go wrong on a replication connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed, or the server closed it where the protocol did not allow that.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The server answered with an ErrorResponse.
    #[error("server {severity} {code}: {message}{}", detail_suffix(.detail.as_deref()))]
    Server {
        /// `ERROR`, `FATAL` or `PANIC` (not localized).
        severity: String,
        /// The SQLSTATE, e.g. `42704` for an undefined object.
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },

    /// The server sent something the protocol does not allow at this point, or a malformed
    /// message.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// The server asked for an authentication method this client does not implement.
    #[error("unsupported authentication method: {0}")]
    UnsupportedAuth(String),

    #[error(
        "invalid LSN {input:?}: expected two hexadecimal numbers of 1 to 8 digits, like 16/B374D848"
    )]
    Lsn { input: String },

    /// The connection settings are unusable (bad URL, missing user or password, channel
    /// binding demanded).
    #[error("invalid replication connection settings: {0}")]
    Config(String),

    /// TLS settings that cannot be honoured, a server that declines TLS under `require` or
    /// stronger, a certificate that does not verify, or a failed handshake.
    #[error(transparent)]
    Tls(#[from] pgtls::Error),

    /// An argument cannot be put on the wire (e.g. it contains a NUL byte), or the call does not
    /// fit the state the stream is in.
    #[error("invalid request: {0}")]
    InvalidInput(String),
}

impl WireError {
    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            WireError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WireError {
        let context = context.into();
        move |source| WireError::Io { context, source }
    }
}

fn detail_suffix(detail: Option<&str>) -> String {
    detail.map(|d| format!(" ({d})")).unwrap_or_default()
}

#[cfg(test)]
mod tests;
