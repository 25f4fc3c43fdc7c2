//! The TLS handshake over an open socket, with errors that say what failed and under which
//! settings.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::{Error, SslMode, TlsSettings};

/// Everything needed to turn a socket into a TLS session with a PostgreSQL server: the rustls
/// configuration, built once (the root certificates read then), and the settings it came from.
/// Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    settings: TlsSettings,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// `None` for `sslmode=disable`. Reads `sslrootcert` now, so a missing or unreadable file
    /// is reported before any connection is tried.
    pub fn new(settings: &TlsSettings) -> Result<Option<Connector>, Error> {
        if settings.mode() == SslMode::Disable {
            return Ok(None);
        }
        Ok(Some(Connector {
            config: Arc::new(crate::verify::client_config(settings)?),
            settings: settings.clone(),
        }))
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Runs the TLS handshake on `stream`, after the server accepted the SSLRequest (`'S'`).
    /// `host` is the name the URL gave (checked against the certificate under `verify-full`).
    pub async fn handshake<S>(&self, host: &str, stream: S) -> Result<TlsStream<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(host.to_string()).map_err(|_| Error::ServerName {
            host: host.to_string(),
        })?;
        TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|source| self.handshake_error(host, source))
    }

    /// The error for a server that answered the SSLRequest with `'N'` under `require` or
    /// stronger.
    pub fn refused(&self, host: &str) -> Error {
        Error::Refused {
            host: host.to_string(),
            settings: self.settings.describe(),
        }
    }

    fn handshake_error(&self, host: &str, source: std::io::Error) -> Error {
        let settings = self.settings.describe();
        match source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(reason)) => Error::Verify {
                reason: reason.to_string(),
                host: host.to_string(),
                settings,
            },
            _ => Error::Handshake {
                host: host.to_string(),
                settings,
                source,
            },
        }
    }
}
