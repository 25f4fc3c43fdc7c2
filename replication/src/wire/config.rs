//! Connection settings for a replication connection.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use pgtls::{Connector, TlsSettings};
use tokio_postgres::config::{ChannelBinding, Host, SslNegotiation};

use super::WireError;

/// The port the server listens on when the URL names none (libpq's default too).
const DEFAULT_PORT: u16 = 5432;
const DEFAULT_APPLICATION_NAME: &str = "replication";

/// One place the server may be reached; [`ReplicationConnection::connect`] tries them in order.
///
/// [`ReplicationConnection::connect`]: super::ReplicationConnection::connect
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp {
        /// The name the URL gave: what a TLS certificate must hold under `verify-full`.
        host: String,
        port: u16,
        /// The URL's `hostaddr` for this host: dialled instead of resolving `host`.
        hostaddr: Option<IpAddr>,
    },
    /// The socket file itself (`<dir>/.s.PGSQL.<port>`), not the directory the URL names.
    Unix { socket: PathBuf },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Brackets keep an IPv6 address readable next to its port.
            Target::Tcp { host, port, .. } if host.contains(':') => write!(f, "[{host}]:{port}")?,
            Target::Tcp { host, port, .. } => write!(f, "{host}:{port}")?,
            Target::Unix { socket } => return write!(f, "{}", socket.display()),
        }
        match self {
            Target::Tcp {
                host,
                hostaddr: Some(addr),
                ..
            } if *host != addr.to_string() => write!(f, " (at {addr})"),
            _ => Ok(()),
        }
    }
}

/// Where and as whom to open a replication connection.
///
/// Built from a libpq connection string, either URL (`postgresql://user:pw@127.0.0.1:5432/db`,
/// `postgresql://postgres@/db?host=/run/pg&port=5433`) or key/value (`host=/run/pg user=postgres`),
/// parsed by `tokio_postgres::Config` so both behave as they do for ordinary connections.
/// Recognised: `user` (required), `password`, `dbname` (defaults to the user), `host` (several,
/// comma-separated, tried in order; a leading `/` means a Unix socket directory), `hostaddr`,
/// `port`, `application_name`, `options`, `connect_timeout`, and TLS's `sslmode` (`disable`,
/// `prefer` by default, `require`, `verify-ca`, `verify-full`), `sslrootcert` and `sslsni` as
/// [`pgtls`] reads them. TLS applies to TCP targets; on Unix sockets PostgreSQL has none and, as
/// with libpq, `sslmode` is ignored. Channel binding is not implemented, so
/// `channel_binding=require` is refused rather than silently ignored.
///
/// `Debug` never shows the password.
#[derive(Clone)]
pub struct ReplicationConfig {
    user: String,
    password: Option<Vec<u8>>,
    dbname: String,
    targets: Vec<Target>,
    application_name: String,
    options: Option<String>,
    connect_timeout: Option<Duration>,
    tls: TlsSettings,
    /// Built from `tls` when the URL is read, so a bad `sslrootcert` fails then; `None` under
    /// `sslmode=disable`.
    connector: Option<Connector>,
}

impl ReplicationConfig {
    pub fn from_url(url: &str) -> Result<Self, WireError> {
        // tokio-postgres rejects verify-ca, verify-full and sslrootcert: take them out first.
        let (rest, tls) = TlsSettings::from_conninfo(url)?;
        // tokio-postgres's parse errors name the offending option, never its value.
        let pg = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| WireError::Config(format!("cannot parse the connection string: {e}")))?;
        Self::from_parts(&pg, tls)
    }

    fn from_parts(pg: &tokio_postgres::Config, tls: TlsSettings) -> Result<Self, WireError> {
        if pg.get_channel_binding() == ChannelBinding::Require {
            return Err(WireError::Config(
                "channel_binding=require: replication connections do not implement channel \
                 binding; use sslmode=verify-full to authenticate the server"
                    .into(),
            ));
        }
        if pg.get_ssl_negotiation() == SslNegotiation::Direct {
            return Err(WireError::Config(
                "sslnegotiation=direct is not supported on replication connections; leave it \
                 out (TLS is negotiated with an SSLRequest, which every server accepts)"
                    .into(),
            ));
        }
        let user = pg
            .get_user()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| WireError::Config("no user in the connection string".into()))?
            .to_string();
        let dbname = pg
            .get_dbname()
            .filter(|d| !d.is_empty())
            .unwrap_or(&user)
            .to_string();
        let targets = targets(pg)?;
        Ok(ReplicationConfig {
            password: pg.get_password().map(<[u8]>::to_vec),
            dbname,
            targets,
            application_name: pg
                .get_application_name()
                .unwrap_or(DEFAULT_APPLICATION_NAME)
                .to_string(),
            options: pg.get_options().map(str::to_string),
            connect_timeout: pg.get_connect_timeout().copied(),
            user,
            connector: Connector::new(&tls)?,
            tls,
        })
    }

    /// Reported by the server in `pg_stat_replication.application_name`; the URL's
    /// `application_name`, else `"replication"`.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    pub fn with_password(mut self, password: impl Into<Vec<u8>>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Limits how long opening the socket to each target may take.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Server settings for the session, as libpq's `options` (`-c wal_sender_timeout=10s`).
    pub fn with_options(mut self, options: impl Into<String>) -> Self {
        self.options = Some(options.into());
        self
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }

    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    pub(crate) fn password(&self) -> Option<&[u8]> {
        self.password.as_deref()
    }

    /// The URL's TLS settings.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    pub(crate) fn connector(&self) -> Option<&Connector> {
        self.connector.as_ref()
    }
}

impl FromStr for ReplicationConfig {
    type Err = WireError;

    fn from_str(url: &str) -> Result<Self, WireError> {
        Self::from_url(url)
    }
}

impl fmt::Debug for ReplicationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationConfig")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("targets", &self.targets)
            .field("application_name", &self.application_name)
            .field("options", &self.options)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Pairs hosts, host addresses and ports the way libpq does: `hostaddr[i]` (when given) is what
/// is dialled for `host[i]`, and a single port applies to every host.
fn targets(pg: &tokio_postgres::Config) -> Result<Vec<Target>, WireError> {
    let hosts = pg.get_hosts();
    let hostaddrs = pg.get_hostaddrs();
    let ports = pg.get_ports();
    if !hosts.is_empty() && !hostaddrs.is_empty() && hosts.len() != hostaddrs.len() {
        return Err(WireError::Config(format!(
            "{} hosts but {} hostaddrs; give one hostaddr per host",
            hosts.len(),
            hostaddrs.len()
        )));
    }
    let count = hosts.len().max(hostaddrs.len());
    if count == 0 {
        return Err(WireError::Config(
            "no host in the connection string (name a TCP host or a socket directory, \
             e.g. ?host=/var/run/postgresql)"
                .into(),
        ));
    }
    if ports.len() > 1 && ports.len() != count {
        return Err(WireError::Config(format!(
            "{} ports for {count} hosts; give one port, or one per host",
            ports.len()
        )));
    }
    let targets = (0..count)
        .map(|i| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(DEFAULT_PORT);
            match (hostaddrs.get(i), hosts.get(i)) {
                (Some(addr), Some(Host::Tcp(host))) => Target::Tcp {
                    host: host.clone(),
                    port,
                    hostaddr: Some(*addr),
                },
                (Some(addr), _) => Target::Tcp {
                    host: addr.to_string(),
                    port,
                    hostaddr: Some(*addr),
                },
                (None, Some(Host::Tcp(host))) => Target::Tcp {
                    host: host.clone(),
                    port,
                    hostaddr: None,
                },
                (None, Some(Host::Unix(dir))) => Target::Unix {
                    socket: dir.join(format!(".s.PGSQL.{port}")),
                },
                // count is the longer of the two lists, so one of them has index i.
                (None, None) => Target::Tcp {
                    host: "localhost".into(),
                    port,
                    hostaddr: None,
                },
            }
        })
        .collect();
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_url() {
        let c =
            ReplicationConfig::from_url("postgresql://alice:s3cret@127.0.0.1:5433/shop").unwrap();
        assert_eq!(c.user(), "alice");
        assert_eq!(c.dbname(), "shop");
        assert_eq!(c.password(), Some(&b"s3cret"[..]));
        assert_eq!(
            c.targets(),
            &[Target::Tcp {
                host: "127.0.0.1".into(),
                port: 5433,
                hostaddr: None,
            }]
        );
        assert_eq!(c.application_name(), "replication");
        assert_eq!(c.tls().mode(), pgtls::SslMode::Prefer, "libpq's default");
        assert_eq!(c.targets()[0].to_string(), "127.0.0.1:5433");
    }

    #[test]
    fn unix_socket_url_names_the_socket_file() {
        let c =
            ReplicationConfig::from_url("postgresql://postgres@/db?host=/tmp/x&port=5433").unwrap();
        assert_eq!(
            c.targets(),
            &[Target::Unix {
                socket: PathBuf::from("/tmp/x/.s.PGSQL.5433")
            }]
        );
        assert_eq!(c.dbname(), "db");
        assert!(!c.has_password());
    }

    #[test]
    fn defaults_and_overrides() {
        let c = ReplicationConfig::from_url(
            "host=db.example,10.0.0.2 port=6000 user=bob application_name=cdc connect_timeout=3 \
             options='-c wal_sender_timeout=5s'",
        )
        .unwrap();
        assert_eq!(c.dbname(), "bob", "dbname defaults to the user");
        assert_eq!(
            c.targets(),
            &[
                Target::Tcp {
                    host: "db.example".into(),
                    port: 6000,
                    hostaddr: None,
                },
                Target::Tcp {
                    host: "10.0.0.2".into(),
                    port: 6000,
                    hostaddr: None,
                }
            ]
        );
        assert_eq!(c.application_name(), "cdc");
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(c.options(), Some("-c wal_sender_timeout=5s"));
        let c = c.with_application_name("other");
        assert_eq!(c.application_name(), "other");
    }

    #[test]
    fn hostaddr_is_dialled_and_default_port_applies() {
        let c = ReplicationConfig::from_url("host=db.example hostaddr=192.0.2.7 user=u").unwrap();
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            c.targets(),
            &[Target::Tcp {
                host: "db.example".into(),
                port: 5432,
                hostaddr: Some(addr),
            }]
        );
        assert_eq!(c.targets()[0].to_string(), "db.example:5432 (at 192.0.2.7)");
        let c = ReplicationConfig::from_url("hostaddr=192.0.2.7 user=u").unwrap();
        assert_eq!(c.targets()[0].to_string(), "192.0.2.7:5432");
    }

    #[test]
    fn tls_settings_are_read_as_libpq_does() {
        let c = ReplicationConfig::from_url(
            "postgresql://alice@db.example/shop?sslmode=verify-full&sslrootcert=Cargo.toml\
             &application_name=cdc",
        );
        // The CA file is read with the URL: this one is no PEM file.
        match c {
            Err(WireError::Tls(e)) => assert!(e.to_string().contains("sslrootcert"), "{e}"),
            other => panic!("expected a TLS error, got {other:?}"),
        }
        let c = ReplicationConfig::from_url(
            "host=db.example user=u sslmode=require application_name=cdc",
        )
        .unwrap();
        assert_eq!(c.tls().mode(), pgtls::SslMode::Require);
        assert_eq!(
            c.application_name(),
            "cdc",
            "the other parameters still count"
        );
        assert!(c.connector().is_some());
        let c = ReplicationConfig::from_url("postgresql://u@h/db?sslmode=disable").unwrap();
        assert!(c.connector().is_none());
    }

    #[test]
    fn debug_hides_the_password() {
        let c = ReplicationConfig::from_url("postgresql://alice:hunter2@127.0.0.1/shop").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        for (url, needle) in [
            (
                "postgresql://alice@127.0.0.1/db?channel_binding=require",
                "channel binding",
            ),
            (
                "postgresql://alice@127.0.0.1/db?sslmode=require&sslnegotiation=direct",
                "sslnegotiation=direct",
            ),
            ("postgresql://127.0.0.1/db", "no user"),
            ("postgresql://alice@/db", "no host"),
            ("postgresql://alice@127.0.0.1:notaport/db", "parse"),
        ] {
            match ReplicationConfig::from_url(url) {
                Err(WireError::Config(msg)) => assert!(msg.contains(needle), "{url}: {msg}"),
                other => panic!("{url}: expected a Config error, got {other:?}"),
            }
        }
        for (url, needle) in [
            (
                "postgresql://alice@127.0.0.1/db?sslmode=verify-ca",
                "needs sslrootcert",
            ),
            ("postgresql://alice@127.0.0.1/db?sslmode=allow", "allow"),
        ] {
            match ReplicationConfig::from_url(url) {
                Err(WireError::Tls(e)) => assert!(e.to_string().contains(needle), "{url}: {e}"),
                other => panic!("{url}: expected a TLS error, got {other:?}"),
            }
        }
    }
}
