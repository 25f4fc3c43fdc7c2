//! Connection settings for a replication connection.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, Host, SslMode};

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
        host: String,
        port: u16,
    },
    /// The socket file itself (`<dir>/.s.PGSQL.<port>`), not the directory the URL names.
    Unix {
        socket: PathBuf,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Brackets keep an IPv6 address readable next to its port.
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix { socket } => write!(f, "{}", socket.display()),
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
/// `port`, `application_name`, `options` and `connect_timeout`. TLS is not supported, so
/// `sslmode=require` and `channel_binding=require` are refused rather than silently ignored.
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
}

impl ReplicationConfig {
    pub fn from_url(url: &str) -> Result<Self, WireError> {
        // tokio-postgres's parse errors name the offending option, never its value.
        let pg = tokio_postgres::Config::from_str(url)
            .map_err(|e| WireError::Config(format!("cannot parse the connection string: {e}")))?;
        Self::from_pg_config(&pg)
    }

    /// Takes the settings of an already parsed `tokio_postgres::Config`.
    pub fn from_pg_config(pg: &tokio_postgres::Config) -> Result<Self, WireError> {
        if pg.get_ssl_mode() == SslMode::Require {
            return Err(WireError::Config(
                "sslmode=require: TLS is not supported on replication connections; \
                 use sslmode=disable or prefer (plaintext), a Unix socket or a TLS tunnel"
                    .into(),
            ));
        }
        if pg.get_channel_binding() == ChannelBinding::Require {
            return Err(WireError::Config(
                "channel_binding=require needs TLS, which replication connections do not support"
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
                (Some(addr), _) => Target::Tcp {
                    host: addr.to_string(),
                    port,
                },
                (None, Some(Host::Tcp(host))) => Target::Tcp {
                    host: host.clone(),
                    port,
                },
                (None, Some(Host::Unix(dir))) => Target::Unix {
                    socket: dir.join(format!(".s.PGSQL.{port}")),
                },
                // count is the longer of the two lists, so one of them has index i.
                (None, None) => Target::Tcp {
                    host: "localhost".into(),
                    port,
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
                port: 5433
            }]
        );
        assert_eq!(c.application_name(), "replication");
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
                    port: 6000
                },
                Target::Tcp {
                    host: "10.0.0.2".into(),
                    port: 6000
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
        assert_eq!(
            c.targets(),
            &[Target::Tcp {
                host: "192.0.2.7".into(),
                port: 5432
            }]
        );
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
            ("postgresql://alice@127.0.0.1/db?sslmode=require", "TLS"),
            (
                "postgresql://alice@127.0.0.1/db?channel_binding=require",
                "TLS",
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
    }
}
