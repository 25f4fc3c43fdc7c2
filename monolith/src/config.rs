//! The monolith binary's configuration, from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use crate::integrations::{Backend, Integrations};
use platform::PoolConfig;
pub use platform::config::ConfigError;
use platform::config::{env, parse, required};

pub const ENV_DATABASE_URL: &str = "MONOLITH_DATABASE_URL";
pub const ENV_LISTEN: &str = "MONOLITH_LISTEN";
pub const ENV_MIGRATE: &str = "MONOLITH_MIGRATE";
pub const ENV_POOL_SIZE: &str = "MONOLITH_POOL_SIZE";
pub const ENV_WORKERS: &str = "MONOLITH_WORKERS";
/// Base URL of the catalog service's reservations; unset means the local catalog module.
pub const ENV_STOCK_URL: &str = "MONOLITH_STOCK_URL";
/// Base URL of the wishlist service; unset means the local wishlist module.
pub const ENV_WISHLIST_URL: &str = "MONOLITH_WISHLIST_URL";
pub const ENV_REMOTE_TIMEOUT_MS: &str = "MONOLITH_REMOTE_TIMEOUT_MS";
pub const ENV_OUTBOX_POLL_MS: &str = "MONOLITH_OUTBOX_POLL_MS";

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// Default 127.0.0.1:7001.
    pub listen: SocketAddr,
    /// Run pending migrations at start. Default true.
    pub migrate: bool,
    pub pool: PoolConfig,
    /// HTTP workers and where order placement reaches stock and wishlists.
    pub options: crate::Options,
}

fn backend(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Backend, ConfigError> {
    match lookup(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(Backend::Local),
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Ok(Backend::Remote { base_url: url })
        }
        Some(url) => Err(ConfigError::Invalid {
            name,
            detail: format!("expected an http:// or https:// base URL, got {url:?}"),
        }),
    }
}

fn millis(
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
            options: crate::Options {
                workers: parse(&lookup, ENV_WORKERS, 2)?,
                integrations: Integrations {
                    stock: backend(&lookup, ENV_STOCK_URL)?,
                    wishlist: backend(&lookup, ENV_WISHLIST_URL)?,
                    timeout: millis(&lookup, ENV_REMOTE_TIMEOUT_MS, 2_000)?,
                    outbox_poll: millis(&lookup, ENV_OUTBOX_POLL_MS, 1_000)?,
                    ..Integrations::default()
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
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Config::from_lookup(|k| map.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn defaults_apply_beside_the_required_url() {
        let c = config(&[(ENV_DATABASE_URL, "postgres://x/y")]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7001");
        assert!(c.migrate);
        assert_eq!(c.pool.max_size, 16);
        assert_eq!(c.options.integrations.stock, Backend::Local);
        assert_eq!(c.options.integrations.wishlist, Backend::Local);
    }

    #[test]
    fn remote_backends_are_chosen_by_url() {
        let c = config(&[
            (ENV_DATABASE_URL, "u"),
            (ENV_STOCK_URL, "http://127.0.0.1:7000"),
            (ENV_WISHLIST_URL, "http://127.0.0.1:7000"),
        ])
        .unwrap();
        let remote = Backend::Remote {
            base_url: "http://127.0.0.1:7000".into(),
        };
        assert_eq!(c.options.integrations.stock, remote);
        assert_eq!(c.options.integrations.wishlist, remote);
        let e =
            config(&[(ENV_DATABASE_URL, "u"), (ENV_WISHLIST_URL, "wishlist:7003")]).unwrap_err();
        assert!(e.to_string().contains(ENV_WISHLIST_URL), "{e}");
        let e = config(&[(ENV_DATABASE_URL, "u"), (ENV_OUTBOX_POLL_MS, "0")]).unwrap_err();
        assert!(e.to_string().contains(ENV_OUTBOX_POLL_MS), "{e}");
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
