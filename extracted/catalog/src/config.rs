//! The catalog service's configuration, from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use platform::config::{env, parse, required};
use platform::{PoolConfig, WriteMode};

pub use platform::config::ConfigError;

pub const ENV_DATABASE_URL: &str = "CATALOG_DATABASE_URL";
pub const ENV_LISTEN: &str = "CATALOG_LISTEN";
pub const ENV_MIGRATE: &str = "CATALOG_MIGRATE";
pub const ENV_POOL_SIZE: &str = "CATALOG_POOL_SIZE";
pub const ENV_WORKERS: &str = "CATALOG_WORKERS";
pub const ENV_WRITE_MODE: &str = "CATALOG_WRITE_MODE";
pub const ENV_SWEEP_SECONDS: &str = "CATALOG_RESERVATION_SWEEP_SECONDS";

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// Default 127.0.0.1:7002.
    pub listen: SocketAddr,
    /// Run pending migrations at start. Default true.
    pub migrate: bool,
    pub pool: PoolConfig,
    pub options: crate::Options,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let sweep: u64 = parse(&lookup, ENV_SWEEP_SECONDS, 5)?;
        if sweep == 0 {
            return Err(ConfigError::Invalid {
                name: ENV_SWEEP_SECONDS,
                detail: "must be at least 1".into(),
            });
        }
        Ok(Config {
            database_url: required(&lookup, ENV_DATABASE_URL)?,
            listen: parse(
                &lookup,
                ENV_LISTEN,
                SocketAddr::from(([127, 0, 0, 1], 7002)),
            )?,
            migrate: parse(&lookup, ENV_MIGRATE, true)?,
            pool: PoolConfig {
                max_size: parse(&lookup, ENV_POOL_SIZE, 16)?,
                connection_timeout: Duration::from_secs(5),
            },
            options: crate::Options {
                workers: parse(&lookup, ENV_WORKERS, 2)?,
                // A new service starts as a replica: replication feeds it until cutover.
                write_mode: parse(&lookup, ENV_WRITE_MODE, WriteMode::Replica)?,
                sweep_every: Duration::from_secs(sweep),
            },
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
    fn a_new_service_is_a_replica_by_default() {
        let c = config(&[(ENV_DATABASE_URL, "postgres://x/catalog")]).unwrap();
        assert_eq!(c.options.write_mode, WriteMode::Replica);
        assert_eq!(c.listen.to_string(), "127.0.0.1:7002");
    }

    #[test]
    fn bad_values_are_named() {
        let e = config(&[(ENV_DATABASE_URL, "u"), (ENV_WRITE_MODE, "primary")]).unwrap_err();
        assert!(e.to_string().contains(ENV_WRITE_MODE), "{e}");
        let e = config(&[(ENV_DATABASE_URL, "u"), (ENV_SWEEP_SECONDS, "0")]).unwrap_err();
        assert!(e.to_string().contains(ENV_SWEEP_SECONDS), "{e}");
        assert!(matches!(
            config(&[]),
            Err(ConfigError::Missing(ENV_DATABASE_URL))
        ));
    }
}
