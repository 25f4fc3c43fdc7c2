//! The wishlist service's configuration, from the environment.

use platform::WriteMode;
use platform::config::{BasicNames, Basics, base_url, env, millis, name, parse};

pub use platform::config::ConfigError;

use crate::{Options, Upstreams};

pub const NAMES: BasicNames = BasicNames {
    database_url: "WISHLIST_DATABASE_URL",
    listen: "WISHLIST_LISTEN",
    migrate: "WISHLIST_MIGRATE",
    pool_size: "WISHLIST_POOL_SIZE",
    workers: "WISHLIST_WORKERS",
};
pub const ENV_WRITE_MODE: &str = "WISHLIST_WRITE_MODE";
pub const ENV_CATALOG_URL: &str = "WISHLIST_CATALOG_URL";
pub const ENV_CUSTOMERS_URL: &str = "WISHLIST_CUSTOMERS_URL";
pub const ENV_TIMEOUT_MS: &str = "WISHLIST_UPSTREAM_TIMEOUT_MS";
/// The pipeline whose applied position a replica reports; default `wishlist`.
pub const ENV_POSITION_PIPELINE: &str = "WISHLIST_POSITION_PIPELINE";

#[derive(Debug, Clone)]
pub struct Config {
    /// Database, listen address (default 127.0.0.1:7003), migrations, pool, workers.
    pub basics: Basics,
    pub options: Options,
    /// The pipeline feeding this database while it is a replica (`X-Fig-Db-Position`).
    pub position_pipeline: String,
}

fn required_url(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    base_url(lookup, name)?.ok_or(ConfigError::Missing(name))
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let basics = Basics::from_lookup(&lookup, &NAMES, 7003)?;
        Ok(Config {
            position_pipeline: name(&lookup, ENV_POSITION_PIPELINE, crate::POSITION_PIPELINE)?,
            options: Options {
                workers: basics.workers,
                write_mode: parse(&lookup, ENV_WRITE_MODE, WriteMode::Replica)?,
                upstreams: Upstreams {
                    catalog_url: required_url(&lookup, ENV_CATALOG_URL)?,
                    customers_url: required_url(&lookup, ENV_CUSTOMERS_URL)?,
                    timeout: millis(&lookup, ENV_TIMEOUT_MS, 500)?,
                },
            },
            basics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<&str, &str> = HashMap::from([
            (NAMES.database_url, "postgres://x/wishlist"),
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
        assert_eq!(c.basics.listen.to_string(), "127.0.0.1:7003");
        assert_eq!(c.position_pipeline, "wishlist");
        let c = config(&[(ENV_POSITION_PIPELINE, "wish2")]).unwrap();
        assert_eq!(c.position_pipeline, "wish2");
    }

    #[test]
    fn bad_values_are_named() {
        for (name, value) in [
            (ENV_CATALOG_URL, "catalog:7002"),
            (ENV_TIMEOUT_MS, "0"),
            (ENV_WRITE_MODE, "x"),
            (ENV_POSITION_PIPELINE, " "),
        ] {
            let e = config(&[(name, value)]).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
        let e = config(&[(ENV_CUSTOMERS_URL, "")]).unwrap_err();
        assert!(e.to_string().contains(ENV_CUSTOMERS_URL), "{e}");
    }
}
