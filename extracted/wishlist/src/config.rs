//! The wishlist service's configuration, from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use platform::config::{env, parse, required};
use platform::{PoolConfig, WriteMode};

pub use platform::config::ConfigError;

use crate::{Options, Upstreams};

pub const ENV_DATABASE_URL: &str = "WISHLIST_DATABASE_URL";
pub const ENV_LISTEN: &str = "WISHLIST_LISTEN";
pub const ENV_MIGRATE: &str = "WISHLIST_MIGRATE";
pub const ENV_POOL_SIZE: &str = "WISHLIST_POOL_SIZE";
pub const ENV_WORKERS: &str = "WISHLIST_WORKERS";
pub const ENV_WRITE_MODE: &str = "WISHLIST_WRITE_MODE";
pub const ENV_CATALOG_URL: &str = "WISHLIST_CATALOG_URL";
pub const ENV_CUSTOMERS_URL: &str = "WISHLIST_CUSTOMERS_URL";
pub const ENV_TIMEOUT_MS: &str = "WISHLIST_UPSTREAM_TIMEOUT_MS";

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// Default 127.0.0.1:7003.
    pub listen: SocketAddr,
    pub migrate: bool,
    pub pool: PoolConfig,
    pub options: Options,
}

fn base_url(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    let url = required(lookup, name)?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::Invalid {
            name,
            detail: format!("expected an http:// or https:// base URL, got {url:?}"),
        });
    }
    Ok(url)
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let timeout_ms: u64 = parse(&lookup, ENV_TIMEOUT_MS, 500)?;
        if timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                name: ENV_TIMEOUT_MS,
                detail: "must be at least 1".into(),
            });
        }
        Ok(Config {
            database_url: required(&lookup, ENV_DATABASE_URL)?,
            listen: parse(
                &lookup,
                ENV_LISTEN,
                SocketAddr::from(([127, 0, 0, 1], 7003)),
            )?,
            migrate: parse(&lookup, ENV_MIGRATE, true)?,
            pool: PoolConfig {
                max_size: parse(&lookup, ENV_POOL_SIZE, 16)?,
                connection_timeout: Duration::from_secs(5),
            },
            options: Options {
                workers: parse(&lookup, ENV_WORKERS, 2)?,
                write_mode: parse(&lookup, ENV_WRITE_MODE, WriteMode::Replica)?,
                upstreams: Upstreams {
                    catalog_url: base_url(&lookup, ENV_CATALOG_URL)?,
                    customers_url: base_url(&lookup, ENV_CUSTOMERS_URL)?,
                    timeout: Duration::from_millis(timeout_ms),
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<&str, &str> = HashMap::from([
            (ENV_DATABASE_URL, "postgres://x/wishlist"),
            (ENV_CATALOG_URL, "http://127.0.0.1:7000"),
            (ENV_CUSTOMERS_URL, "http://127.0.0.1:7000"),
        ]);
        map.extend(pairs.iter().copied());
        Config::from_lookup(|k| map.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.options.upstreams.timeout, Duration::from_millis(500));
        assert_eq!(c.options.write_mode, WriteMode::Replica);
    }

    #[test]
    fn bad_values_are_named() {
        for (name, value) in [
            (ENV_CATALOG_URL, "catalog:7002"),
            (ENV_TIMEOUT_MS, "0"),
            (ENV_WRITE_MODE, "x"),
        ] {
            let e = config(&[(name, value)]).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}
