//! The monolith binary's configuration, from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use platform::PoolConfig;
pub use platform::config::ConfigError;
use platform::config::{env, parse, required};

pub const ENV_DATABASE_URL: &str = "MONOLITH_DATABASE_URL";
pub const ENV_LISTEN: &str = "MONOLITH_LISTEN";
pub const ENV_MIGRATE: &str = "MONOLITH_MIGRATE";
pub const ENV_POOL_SIZE: &str = "MONOLITH_POOL_SIZE";
pub const ENV_WORKERS: &str = "MONOLITH_WORKERS";

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// Default 127.0.0.1:7001.
    pub listen: SocketAddr,
    /// Run pending migrations at start. Default true.
    pub migrate: bool,
    pub pool: PoolConfig,
    /// HTTP worker threads. Default 2.
    pub workers: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let database_url = required(&lookup, ENV_DATABASE_URL)?;
        let pool_size: u32 = parse(&lookup, ENV_POOL_SIZE, 16)?;
        if pool_size == 0 {
            return Err(ConfigError::Invalid {
                name: ENV_POOL_SIZE,
                detail: "must be at least 1".into(),
            });
        }
        Ok(Config {
            database_url,
            listen: parse(
                &lookup,
                ENV_LISTEN,
                SocketAddr::from(([127, 0, 0, 1], 7001)),
            )?,
            migrate: parse(&lookup, ENV_MIGRATE, true)?,
            pool: PoolConfig {
                max_size: pool_size,
                connection_timeout: Duration::from_secs(5),
            },
            workers: parse(&lookup, ENV_WORKERS, 2)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Config::from_lookup(|k| map.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn defaults_apply_beside_the_required_url() {
        let c = config(&[(ENV_DATABASE_URL, "postgres://x/y")]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7001");
        assert!(c.migrate);
        assert_eq!(c.pool.max_size, 16);
    }

    #[test]
    fn missing_and_bad_values_are_named() {
        assert!(matches!(
            config(&[]),
            Err(ConfigError::Missing(ENV_DATABASE_URL))
        ));
        let e = config(&[(ENV_DATABASE_URL, "u"), (ENV_LISTEN, "nope")]).unwrap_err();
        assert!(e.to_string().contains(ENV_LISTEN), "{e}");
        let e = config(&[(ENV_DATABASE_URL, "u"), (ENV_POOL_SIZE, "0")]).unwrap_err();
        assert!(e.to_string().contains(ENV_POOL_SIZE), "{e}");
    }
}
