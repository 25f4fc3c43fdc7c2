//! Reading a service's typed configuration from the environment, through a lookup function so
//! tests pass a map instead of mutating the process environment.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::PoolConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name} is invalid: {detail}")]
    Invalid { name: &'static str, detail: String },
}

/// The environment as a lookup.
pub fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

pub fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    lookup(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or(ConfigError::Missing(name))
}

/// `name` parsed as `T`, or `default` when unset.
pub fn parse<T: FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match lookup(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| ConfigError::Invalid {
            name,
            detail: format!("cannot parse {raw:?}"),
        }),
    }
}

/// A name (a replication pipeline's, say): `name` trimmed, `default` when unset; set but blank is
/// an error.
pub fn name(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<String, ConfigError> {
    match lookup(name) {
        None => Ok(default.to_string()),
        Some(v) if v.trim().is_empty() => Err(ConfigError::Invalid {
            name,
            detail: "must not be blank".into(),
        }),
        Some(v) => Ok(v.trim().to_string()),
    }
}

/// A positive number of milliseconds.
pub fn millis(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    match parse(lookup, name, default)? {
        0 => Err(ConfigError::Invalid {
            name,
            detail: "must be at least 1".into(),
        }),
        ms => Ok(Duration::from_millis(ms)),
    }
}

/// An `http://` or `https://` base URL, if set.
pub fn base_url(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<String>, ConfigError> {
    match lookup(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Ok(Some(url)),
        Some(url) => Err(ConfigError::Invalid {
            name,
            detail: format!("expected an http:// or https:// base URL, got {url:?}"),
        }),
    }
}

/// The environment variable names of a service's [`Basics`].
#[derive(Debug, Clone, Copy)]
pub struct BasicNames {
    pub database_url: &'static str,
    pub listen: &'static str,
    pub migrate: &'static str,
    pub pool_size: &'static str,
    pub workers: &'static str,
}

/// What every service binary is configured with.
#[derive(Debug, Clone)]
pub struct Basics {
    pub database_url: String,
    pub listen: SocketAddr,
    /// Run pending migrations at start. Default true.
    pub migrate: bool,
    pub pool: PoolConfig,
    /// HTTP worker threads. Default 2.
    pub workers: usize,
}

impl Basics {
    /// Reads the basics; the service listens on 127.0.0.1:`default_port` unless told otherwise.
    pub fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
        names: &BasicNames,
        default_port: u16,
    ) -> Result<Basics, ConfigError> {
        let pool_size: u32 = parse(lookup, names.pool_size, 16)?;
        if pool_size == 0 {
            return Err(ConfigError::Invalid {
                name: names.pool_size,
                detail: "must be at least 1".into(),
            });
        }
        Ok(Basics {
            database_url: required(lookup, names.database_url)?,
            listen: parse(
                lookup,
                names.listen,
                SocketAddr::from(([127, 0, 0, 1], default_port)),
            )?,
            migrate: parse(lookup, names.migrate, true)?,
            pool: PoolConfig {
                max_size: pool_size,
                connection_timeout: Duration::from_secs(5),
            },
            workers: parse(lookup, names.workers, 2)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_defaults_and_names_bad_values() {
        let lookup = |k: &str| (k == "N").then(|| "x".to_string());
        assert_eq!(parse(&lookup, "UNSET", 7u32).unwrap(), 7);
        let e = parse(&lookup, "N", 7u32).unwrap_err();
        assert!(e.to_string().contains('N'), "{e}");
        assert!(matches!(
            required(&lookup, "UNSET"),
            Err(ConfigError::Missing("UNSET"))
        ));
    }

    const NAMES: BasicNames = BasicNames {
        database_url: "S_DATABASE_URL",
        listen: "S_LISTEN",
        migrate: "S_MIGRATE",
        pool_size: "S_POOL_SIZE",
        workers: "S_WORKERS",
    };

    fn map(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        let pairs = pairs.to_vec();
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn basics_have_defaults_beside_the_required_url() {
        let b = Basics::from_lookup(&map(&[("S_DATABASE_URL", "postgres://x/y")]), &NAMES, 7009)
            .unwrap();
        assert_eq!(b.listen.to_string(), "127.0.0.1:7009");
        assert!(b.migrate);
        assert_eq!((b.pool.max_size, b.workers), (16, 2));
        assert!(matches!(
            Basics::from_lookup(&map(&[]), &NAMES, 1),
            Err(ConfigError::Missing("S_DATABASE_URL"))
        ));
        let bad_pool = map(&[("S_DATABASE_URL", "u"), ("S_POOL_SIZE", "0")]);
        let e = Basics::from_lookup(&bad_pool, &NAMES, 1).unwrap_err();
        assert!(e.to_string().contains("S_POOL_SIZE"), "{e}");
    }

    #[test]
    fn base_urls_and_millis_are_checked() {
        let lookup = map(&[("U", "host:1"), ("V", "http://h:1"), ("M", "0")]);
        assert!(base_url(&lookup, "U").is_err());
        assert_eq!(
            base_url(&lookup, "V").unwrap().as_deref(),
            Some("http://h:1")
        );
        assert_eq!(base_url(&lookup, "W").unwrap(), None);
        assert_eq!(name(&lookup, "V", "d").unwrap(), "http://h:1");
        assert_eq!(name(&lookup, "W", "d").unwrap(), "d");
        let blank = map(&[("B", " ")]);
        assert!(
            name(&blank, "B", "d")
                .unwrap_err()
                .to_string()
                .contains('B')
        );
        assert!(millis(&lookup, "M", 5).is_err());
        assert_eq!(millis(&lookup, "N", 5).unwrap(), Duration::from_millis(5));
    }
}
