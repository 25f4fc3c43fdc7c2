//! [`Connector`] as tokio-postgres's TLS implementation.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::Host;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::{Connector, Error, SslMode, TlsSettings};

/// Parses a libpq connection string for tokio-postgres: the TLS parameters it does not know
/// (`verify-ca`, `verify-full`, `sslrootcert`) are taken out and honoured by the returned
/// [`MakeRustlsConnect`]; the rest is parsed by `tokio_postgres::Config`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let (config, tls) = pgtls::tokio_postgres_config(
///     "postgresql://app@db.example.com/shop?sslmode=verify-full&sslrootcert=/etc/ssl/rds.pem",
/// )?;
/// let (client, connection) = config.connect(tls).await?;
/// # Ok(()) }
/// ```
pub fn tokio_postgres_config(
    conninfo: &str,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), Error> {
    let (rest, settings) = TlsSettings::from_conninfo(conninfo)?;
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| Error::Parse(e.to_string()))?;
    config.ssl_mode(ssl_mode(&settings, config.get_hosts()));
    Ok((config, MakeRustlsConnect::new(Connector::new(&settings)?)))
}

/// tokio-postgres knows only disable, prefer and require; the verification is the connector's.
/// PostgreSQL has no TLS on Unix sockets and libpq ignores `sslmode` there, so a connection
/// string naming only socket directories connects in plaintext, whatever it asks.
fn ssl_mode(settings: &TlsSettings, hosts: &[Host]) -> tokio_postgres::config::SslMode {
    use tokio_postgres::config::SslMode as Pg;
    let only_sockets = !hosts.is_empty() && hosts.iter().all(|h| !matches!(h, Host::Tcp(_)));
    match settings.mode() {
        _ if only_sockets => Pg::Disable,
        SslMode::Disable => Pg::Disable,
        SslMode::Prefer => Pg::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
    }
}

/// tokio-postgres's [`MakeTlsConnect`] on rustls, for any `sslmode`.
#[derive(Debug, Clone)]
pub struct MakeRustlsConnect {
    /// `None` under `sslmode=disable`, when tokio-postgres never asks for a handshake.
    connector: Option<Connector>,
}

impl MakeRustlsConnect {
    pub fn new(connector: Option<Connector>) -> Self {
        MakeRustlsConnect { connector }
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, Error> {
        Ok(RustlsConnect {
            connector: self.connector.clone(),
            host: host.to_string(),
        })
    }
}

/// One handshake with one host.
#[derive(Debug)]
pub struct RustlsConnect {
    connector: Option<Connector>,
    host: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = self.connector.ok_or(Error::Disabled)?;
            let tls = connector.handshake(&self.host, stream).await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// A TLS session under a tokio-postgres connection. Boxed: a rustls session is a few kilobytes,
/// and tokio-postgres keeps its plaintext stream in the same enum.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    /// No `tls-server-end-point` binding: SCRAM then runs as `SCRAM-SHA-256` (not `-PLUS`),
    /// which servers accept; `channel_binding=require` is refused by tokio-postgres.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode as Pg;

    #[test]
    fn tokio_postgres_gets_a_mode_it_knows() {
        for (url, want) in [
            ("postgresql://u@h/db", Pg::Prefer),
            ("postgresql://u@h/db?sslmode=disable", Pg::Disable),
            ("postgresql://u@h/db?sslmode=prefer", Pg::Prefer),
            ("postgresql://u@h/db?sslmode=require", Pg::Require),
            (
                "postgresql://u@h/db?sslmode=verify-ca&sslrootcert=Cargo.toml",
                Pg::Require,
            ),
            (
                "postgresql://u@h/db?sslmode=verify-full&sslrootcert=Cargo.toml",
                Pg::Require,
            ),
            (
                "postgresql://u@/db?host=/run/pg&sslmode=require",
                Pg::Disable,
            ),
            (
                "host=/run/pg,db.example user=u sslmode=require",
                Pg::Require,
            ),
        ] {
            let (rest, settings) = TlsSettings::from_conninfo(url).unwrap();
            let config: tokio_postgres::Config = rest.parse().unwrap();
            assert_eq!(ssl_mode(&settings, config.get_hosts()), want, "{url}");
        }
    }

    #[test]
    fn a_root_certificate_that_is_not_one_is_refused_before_connecting() {
        let err =
            tokio_postgres_config("postgresql://u@h/db?sslmode=verify-full&sslrootcert=Cargo.toml")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("sslrootcert Cargo.toml") && err.contains("no usable CA certificate"),
            "{err}"
        );
        let err = tokio_postgres_config(
            "postgresql://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
