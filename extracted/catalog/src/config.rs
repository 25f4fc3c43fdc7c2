//! The catalog service's configuration, from the environment.

use std::time::Duration;

use platform::WriteMode;
use platform::config::{BasicNames, Basics, env, name, parse};

pub use platform::config::ConfigError;

pub const NAMES: BasicNames = BasicNames {
    database_url: "CATALOG_DATABASE_URL",
    listen: "CATALOG_LISTEN",
    migrate: "CATALOG_MIGRATE",
    pool_size: "CATALOG_POOL_SIZE",
    workers: "CATALOG_WORKERS",
};
pub const ENV_WRITE_MODE: &str = "CATALOG_WRITE_MODE";
pub const ENV_SWEEP_SECONDS: &str = "CATALOG_RESERVATION_SWEEP_SECONDS";
/// The pipeline whose applied position a replica reports; default `catalog`.
pub const ENV_POSITION_PIPELINE: &str = "CATALOG_POSITION_PIPELINE";
pub use crate::faults::ENV_FAULTS;

#[derive(Debug, Clone)]
pub struct Config {
    /// Database, listen address (default 127.0.0.1:7002), migrations, pool, workers.
    pub basics: Basics,
    pub options: crate::Options,
    /// The pipeline feeding this database while it is a replica (`X-Fig-Db-Position`).
    pub position_pipeline: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let basics = Basics::from_lookup(&lookup, &NAMES, 7002)?;
        let sweep: u64 = parse(&lookup, ENV_SWEEP_SECONDS, 5)?;
        if sweep == 0 {
            return Err(ConfigError::Invalid {
                name: ENV_SWEEP_SECONDS,
                detail: "must be at least 1".into(),
            });
        }
        let faults = match lookup(ENV_FAULTS) {
            None => crate::Faults::default(),
            Some(text) => text.parse().map_err(|e| ConfigError::Invalid {
                name: ENV_FAULTS,
                detail: format!("{e}"),
            })?,
        };
        Ok(Config {
            position_pipeline: name(&lookup, ENV_POSITION_PIPELINE, crate::POSITION_PIPELINE)?,
            options: crate::Options {
                workers: basics.workers,
                // A new service starts as a replica: replication feeds it until cutover.
                write_mode: parse(&lookup, ENV_WRITE_MODE, WriteMode::Replica)?,
                sweep_every: Duration::from_secs(sweep),
                faults,
            },
            basics,
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
        let c = config(&[(NAMES.database_url, "postgres://x/catalog")]).unwrap();
        assert_eq!(c.options.write_mode, WriteMode::Replica);
        assert_eq!(c.basics.listen.to_string(), "127.0.0.1:7002");
        assert_eq!(c.position_pipeline, "catalog");
        assert!(c.options.faults.is_empty(), "no faults unless asked for");
        let c = config(&[(NAMES.database_url, "u"), (ENV_POSITION_PIPELINE, "cat2")]).unwrap();
        assert_eq!(c.position_pipeline, "cat2");
    }

    #[test]
    fn bad_values_are_named() {
        let e = config(&[(NAMES.database_url, "u"), (ENV_WRITE_MODE, "primary")]).unwrap_err();
        assert!(e.to_string().contains(ENV_WRITE_MODE), "{e}");
        let e = config(&[(NAMES.database_url, "u"), (ENV_SWEEP_SECONDS, "0")]).unwrap_err();
        assert!(e.to_string().contains(ENV_SWEEP_SECONDS), "{e}");
        let e = config(&[(NAMES.database_url, "u"), (ENV_POSITION_PIPELINE, "")]).unwrap_err();
        assert!(e.to_string().contains(ENV_POSITION_PIPELINE), "{e}");
        let e = config(&[(NAMES.database_url, "u"), (ENV_FAULTS, "404:x")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("CATALOG_FAULTS is invalid: fault \"404:x\""),
            "{e}"
        );
        assert!(matches!(config(&[]), Err(ConfigError::Missing(_))));
    }

    #[test]
    fn faults_are_taken_only_when_set() {
        let c = config(&[(NAMES.database_url, "u"), (ENV_FAULTS, "404:7; slow:9=5ms")]).unwrap();
        assert_eq!(c.options.faults, "404:7;slow:9=5ms".parse().unwrap());
        assert!(!c.options.faults.is_empty());
    }
}
