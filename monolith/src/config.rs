//! The monolith binary's configuration, from the environment.

use platform::config::{BasicNames, Basics, base_url, env, millis, name};

pub use platform::config::ConfigError;

use crate::ReversePipelines;
use crate::integrations::{Backend, Integrations};

pub const NAMES: BasicNames = BasicNames {
    database_url: "MONOLITH_DATABASE_URL",
    listen: "MONOLITH_LISTEN",
    migrate: "MONOLITH_MIGRATE",
    pool_size: "MONOLITH_POOL_SIZE",
    workers: "MONOLITH_WORKERS",
};
/// Base URL of the catalog service's reservations (normally the router); unset means the local
/// catalog module, for good.
pub const ENV_STOCK_URL: &str = "MONOLITH_STOCK_URL";
/// Base URL of the wishlist service (normally the router); unset means the local wishlist
/// module, for good.
pub const ENV_WISHLIST_URL: &str = "MONOLITH_WISHLIST_URL";
/// Who owns the writes of a capability whose service has a URL, the first time the monolith
/// starts on its database: `services` (default, as after cutover) or `monolith` (before cutover;
/// a flip moves them later). Afterwards the database's write fence decides.
pub const ENV_FIRST_OWNER: &str = "MONOLITH_FIRST_OWNER";
pub const ENV_REMOTE_TIMEOUT_MS: &str = "MONOLITH_REMOTE_TIMEOUT_MS";
pub const ENV_OUTBOX_POLL_MS: &str = "MONOLITH_OUTBOX_POLL_MS";
/// The pipeline feeding the monolith's catalog tables once the catalog service owns them (its
/// `applied_lsn` is the `X-Fig-Db-Position` of `/catalog/*` then); default `catalog_reverse`.
pub const ENV_CATALOG_POSITION_PIPELINE: &str = "MONOLITH_CATALOG_POSITION_PIPELINE";
/// The same for `wishlist.items` and `/wishlists/*`; default `wishlist_reverse`.
pub const ENV_WISHLIST_POSITION_PIPELINE: &str = "MONOLITH_WISHLIST_POSITION_PIPELINE";

#[derive(Debug, Clone)]
pub struct Config {
    /// Database, listen address (default 127.0.0.1:7001), migrations, pool, workers.
    pub basics: Basics,
    /// HTTP workers and where order placement reaches stock and wishlists.
    pub options: crate::Options,
    /// Which pipelines feed the capabilities the monolith no longer owns.
    pub reverse: ReversePipelines,
}

fn backend(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    monolith_first: bool,
) -> Result<Backend, ConfigError> {
    Ok(match base_url(lookup, name)? {
        None => Backend::Local,
        Some(base_url) if monolith_first => Backend::Movable { base_url },
        Some(base_url) => Backend::Remote { base_url },
    })
}

/// [`ENV_FIRST_OWNER`]: whether the monolith owns the movable capabilities at first start.
fn monolith_first(lookup: &impl Fn(&str) -> Option<String>) -> Result<bool, ConfigError> {
    match lookup(ENV_FIRST_OWNER).as_deref().map(str::trim) {
        None | Some("services") => Ok(false),
        Some("monolith") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            name: ENV_FIRST_OWNER,
            detail: format!("expected monolith or services, got {other:?}"),
        }),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let basics = Basics::from_lookup(&lookup, &NAMES, 7001)?;
        let integrations = Integrations {
            stock: backend(&lookup, ENV_STOCK_URL, monolith_first(&lookup)?)?,
            wishlist: backend(&lookup, ENV_WISHLIST_URL, monolith_first(&lookup)?)?,
            timeout: millis(&lookup, ENV_REMOTE_TIMEOUT_MS, 2_000)?,
            outbox_poll: millis(&lookup, ENV_OUTBOX_POLL_MS, 1_000)?,
            ..Integrations::default()
        };
        // The monolith refuses to start rather than run with a lease that a reservation can
        // outlive (why refuse, not clamp: `Integrations::check`).
        integrations
            .check()
            .map_err(|e| ConfigError::Invalid {
                name: ENV_REMOTE_TIMEOUT_MS,
                detail: format!(
                    "{e}, the TTL the monolith asks the catalog service to hold stock reservations for; \
                     lower {ENV_REMOTE_TIMEOUT_MS} (or {ENV_OUTBOX_POLL_MS})"
                ),
            })?;
        let defaults = ReversePipelines::default();
        let reverse = ReversePipelines {
            catalog: name(&lookup, ENV_CATALOG_POSITION_PIPELINE, &defaults.catalog)?,
            wishlist: name(&lookup, ENV_WISHLIST_POSITION_PIPELINE, &defaults.wishlist)?,
        };
        Ok(Config {
            reverse,
            options: crate::Options {
                workers: basics.workers,
                integrations,
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
    fn everything_is_local_by_default() {
        let c = config(&[(NAMES.database_url, "postgres://x/y")]).unwrap();
        assert_eq!(c.basics.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(c.options.integrations.stock, Backend::Local);
        assert_eq!(c.options.integrations.wishlist, Backend::Local);
        assert_eq!(c.reverse, ReversePipelines::default());
        assert!(matches!(config(&[]), Err(ConfigError::Missing(_))));
    }

    #[test]
    fn reverse_pipelines_are_named_by_the_environment() {
        let c = config(&[
            (NAMES.database_url, "u"),
            (ENV_CATALOG_POSITION_PIPELINE, "cat_back"),
            (ENV_WISHLIST_POSITION_PIPELINE, " wish_back "),
        ])
        .unwrap();
        assert_eq!(
            c.reverse,
            ReversePipelines {
                catalog: "cat_back".into(),
                wishlist: "wish_back".into()
            }
        );
        let e = config(&[
            (NAMES.database_url, "u"),
            (ENV_CATALOG_POSITION_PIPELINE, " "),
        ])
        .unwrap_err();
        assert!(e.to_string().contains(ENV_CATALOG_POSITION_PIPELINE), "{e}");
    }

    #[test]
    fn remote_backends_are_chosen_by_url() {
        let c = config(&[
            (NAMES.database_url, "u"),
            (ENV_STOCK_URL, "http://127.0.0.1:7000"),
            (ENV_WISHLIST_URL, "http://127.0.0.1:7000"),
        ])
        .unwrap();
        let remote = Backend::Remote {
            base_url: "http://127.0.0.1:7000".into(),
        };
        assert_eq!(c.options.integrations.stock, remote);
        assert_eq!(c.options.integrations.wishlist, remote);
        let c = config(&[
            (NAMES.database_url, "u"),
            (ENV_STOCK_URL, "http://127.0.0.1:7000"),
            (ENV_FIRST_OWNER, "monolith"),
        ])
        .unwrap();
        let movable = Backend::Movable {
            base_url: "http://127.0.0.1:7000".into(),
        };
        assert_eq!(c.options.integrations.stock, movable);
        assert_eq!(c.options.integrations.wishlist, Backend::Local);
        let e = config(&[(NAMES.database_url, "u"), (ENV_FIRST_OWNER, "router")]).unwrap_err();
        assert!(e.to_string().contains(ENV_FIRST_OWNER), "{e}");
        let e = config(&[
            (NAMES.database_url, "u"),
            (ENV_WISHLIST_URL, "wishlist:7003"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains(ENV_WISHLIST_URL), "{e}");
        let e = config(&[(NAMES.database_url, "u"), (ENV_OUTBOX_POLL_MS, "0")]).unwrap_err();
        assert!(e.to_string().contains(ENV_OUTBOX_POLL_MS), "{e}");
    }

    #[test]
    fn a_timeout_whose_outbox_lease_could_outlive_a_reservation_is_refused() {
        let ttl = Integrations::default().reservation_ttl;
        // (remote timeout ms, poll ms, accepted): 60 s + poll + (50 × timeout + 10 s) + poll < 900 s
        for (timeout, poll, accepted) in [
            ("2000", "1000", true),    // the defaults: 172 s
            ("16559", "1000", true),   // the longest timeout accepted: 899.95 s
            ("16560", "1000", false),  // 900 s: reaches the TTL
            ("60000", "1000", false),  // 3,072 s
            ("2000", "364999", true),  // 899.998 s
            ("2000", "365000", false), // 900 s
        ] {
            let got = config(&[
                (NAMES.database_url, "u"),
                (ENV_REMOTE_TIMEOUT_MS, timeout),
                (ENV_OUTBOX_POLL_MS, poll),
            ]);
            match got {
                Ok(c) => {
                    assert!(accepted, "{timeout} ms, poll {poll} ms was accepted");
                    let i = c.options.integrations;
                    assert!(crate::orders::outbox::lease(i.timeout) < ttl, "{timeout}");
                    assert!(i.confirm_bound() < ttl, "{timeout} ms, poll {poll} ms");
                }
                Err(e) => {
                    assert!(!accepted, "{timeout} ms, poll {poll} ms: {e}");
                    let e = e.to_string();
                    for named in [ENV_REMOTE_TIMEOUT_MS, ENV_OUTBOX_POLL_MS, "reservation TTL"] {
                        assert!(e.contains(named), "{e}");
                    }
                }
            }
        }
    }
}
