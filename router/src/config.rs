//! The router binary's configuration, from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use platform::config::{ConfigError, env, parse, required};

use crate::routes::RouteTable;
use crate::run::Config;

pub const ENV_LISTEN: &str = "ROUTER_LISTEN";
pub const ENV_ADMIN_LISTEN: &str = "ROUTER_ADMIN_LISTEN";
pub const ENV_DATABASE_URL: &str = "ROUTER_DATABASE_URL";
pub const ENV_TOKEN: &str = "ROUTER_TOKEN";
/// A route table file (TOML); unset means the MusicCorp table.
pub const ENV_ROUTES: &str = "ROUTER_ROUTES";
/// `ROUTER_UPSTREAM_<NAME>=http://...` repoints an upstream of the table.
pub const UPSTREAM_PREFIX: &str = "ROUTER_UPSTREAM_";
pub const ENV_INSTANCE: &str = "ROUTER_INSTANCE";
pub const ENV_THREADS: &str = "ROUTER_THREADS";
/// Client connections served at once; past it new ones are answered `503 overloaded`.
pub const ENV_MAX_CONNECTIONS: &str = "ROUTER_MAX_CONNECTIONS";
pub const ENV_RELOAD_SECONDS: &str = "ROUTER_RELOAD_SECONDS";
/// How long a write to a capability whose writes are held waits before `503 write_held`.
pub const ENV_WRITE_HOLD_MS: &str = "ROUTER_WRITE_HOLD_MS";
/// The longest `ROUTER_WRITE_HOLD_MS`: a held write keeps its client connection (and the
/// client) waiting, and a hold that long is a stuck flip, which clients should hear of.
pub const MAX_WRITE_HOLD_MS: u64 = 60_000;
/// Take toggles from this Unleash API (e.g. `http://unleash:4242/api`) instead of the database.
pub const ENV_UNLEASH_URL: &str = "ROUTER_UNLEASH_URL";
pub const ENV_UNLEASH_TOKEN: &str = "ROUTER_UNLEASH_TOKEN";
pub const ENV_UNLEASH_POLL_MS: &str = "ROUTER_UNLEASH_POLL_MS";
/// Append a sample of routed requests to this file (JSON lines, what `fig replay` reads)...
pub const ENV_RECORD_FILE: &str = "ROUTER_RECORD_FILE";
/// ...this many out of every hundred (default 10).
pub const ENV_RECORD_PERCENT: &str = "ROUTER_RECORD_PERCENT";
/// A replication pipeline file (the `fig replication` format, `${VAR}`s from the environment):
/// the pipelines named like a capability of the route table copy it from the monolith's database
/// to its service's, and with them this instance can flip the capability's write ownership
/// (`/admin/migrations`); the others are feeds out of those databases (the reporting database's)
/// that a flip waits for too.
pub const ENV_MIGRATIONS: &str = "ROUTER_MIGRATIONS";
/// How long a flip waits for the stream into the new owner to pass the cut (default 1000).
pub const ENV_FLIP_CATCH_UP_MS: &str = "ROUTER_FLIP_CATCH_UP_MS";
/// A pause after each step of a flip, for fault-injection tests only (default 0).
pub const ENV_FLIP_STEP_PAUSE_MS: &str = "ROUTER_FLIP_STEP_PAUSE_MS";

/// [`ENV_MIGRATIONS`]: the file's pipelines, each naming a capability of `table`.
fn migrations(
    path: &str,
    table: &RouteTable,
    lookup: &impl Fn(&str) -> Option<String>,
    read_file: &impl Fn(&str) -> std::io::Result<String>,
) -> Result<crate::migrate::Migrations, ConfigError> {
    let invalid = |detail: String| ConfigError::Invalid {
        name: ENV_MIGRATIONS,
        detail,
    };
    let text = read_file(path).map_err(|e| invalid(format!("cannot read {path}: {e}")))?;
    let pipelines = replication::config::parse(&text, |name| lookup(name))
        .map_err(|e| invalid(format!("{path}: {e}")))?;
    // Pipelines named like a capability move it; the others are feeds the flip waits for.
    let mut migrations = crate::migrate::Migrations::for_table(pipelines, table)
        .map_err(|e| invalid(format!("{path}: {e}")))?;
    migrations.settings.catch_up = platform::config::millis(
        lookup,
        ENV_FLIP_CATCH_UP_MS,
        migrations.settings.catch_up.as_millis() as u64,
    )?;
    migrations.settings.step_pause = match lookup(ENV_FLIP_STEP_PAUSE_MS) {
        None => Duration::ZERO,
        Some(_) => platform::config::millis(lookup, ENV_FLIP_STEP_PAUSE_MS, 0)?,
    };
    Ok(migrations)
}

/// The configuration plus the runtime size (worker threads).
pub fn from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
    read_file: impl Fn(&str) -> std::io::Result<String>,
) -> Result<(Config, usize), ConfigError> {
    let mut table = match lookup(ENV_ROUTES) {
        None => RouteTable::musiccorp(),
        Some(path) => {
            let text = read_file(&path).map_err(|e| ConfigError::Invalid {
                name: ENV_ROUTES,
                detail: format!("cannot read {path}: {e}"),
            })?;
            RouteTable::parse(&text).map_err(|e| ConfigError::Invalid {
                name: ENV_ROUTES,
                detail: e.to_string(),
            })?
        }
    };
    let names: Vec<String> = table.upstreams.iter().map(|u| u.name.clone()).collect();
    for name in names {
        let var = format!("{UPSTREAM_PREFIX}{}", name.to_ascii_uppercase());
        if let Some(url) = lookup(&var) {
            if !url.starts_with("http://") {
                return Err(ConfigError::Invalid {
                    name: UPSTREAM_PREFIX,
                    detail: format!("{var} must be an http:// URL"),
                });
            }
            table
                .set_upstream(&name, &url)
                .map_err(|e| ConfigError::Invalid {
                    name: UPSTREAM_PREFIX,
                    detail: e.to_string(),
                })?;
        }
    }
    let token = required(&lookup, ENV_TOKEN)?;
    if token.len() < 16 {
        return Err(ConfigError::Invalid {
            name: ENV_TOKEN,
            detail: "must be at least 16 characters".into(),
        });
    }
    let threads: usize = parse(&lookup, ENV_THREADS, 2)?;
    let source = match platform::config::base_url(&lookup, ENV_UNLEASH_URL)? {
        None => crate::sync::Source::Store,
        Some(api_url) => crate::sync::Source::Unleash {
            api_url,
            token: required(&lookup, ENV_UNLEASH_TOKEN)?,
            every: platform::config::millis(&lookup, ENV_UNLEASH_POLL_MS, 1_000)?,
        },
    };
    let migrations = match lookup(ENV_MIGRATIONS).filter(|f| !f.trim().is_empty()) {
        None => None,
        Some(path) => Some(migrations(&path, &table, &lookup, &read_file)?),
    };
    let config = Config {
        migrations,
        listen: parse(
            &lookup,
            ENV_LISTEN,
            SocketAddr::from(([127, 0, 0, 1], 7000)),
        )?,
        admin_listen: parse(
            &lookup,
            ENV_ADMIN_LISTEN,
            SocketAddr::from(([127, 0, 0, 1], 7100)),
        )?,
        database_url: required(&lookup, ENV_DATABASE_URL)?,
        token,
        table,
        instance: lookup(ENV_INSTANCE).unwrap_or_else(random_instance),
        source,
        limits: crate::proxy::Limits {
            max_connections: match parse(
                &lookup,
                ENV_MAX_CONNECTIONS,
                crate::proxy::Limits::default().max_connections,
            )? {
                0 => {
                    return Err(ConfigError::Invalid {
                        name: ENV_MAX_CONNECTIONS,
                        detail: "must be at least 1".into(),
                    });
                }
                n => n,
            },
            write_hold: match platform::config::millis(
                &lookup,
                ENV_WRITE_HOLD_MS,
                crate::proxy::Limits::default().write_hold.as_millis() as u64,
            )? {
                hold if hold > Duration::from_millis(MAX_WRITE_HOLD_MS) => {
                    return Err(ConfigError::Invalid {
                        name: ENV_WRITE_HOLD_MS,
                        detail: format!("must be at most {MAX_WRITE_HOLD_MS}"),
                    });
                }
                hold => hold,
            },
            ..crate::proxy::Limits::default()
        },
        record: match lookup(ENV_RECORD_FILE).filter(|f| !f.trim().is_empty()) {
            None => None,
            Some(file) => match parse(&lookup, ENV_RECORD_PERCENT, 10u32)? {
                percent @ 1..=100 => Some(crate::record::RecordSettings {
                    file: file.into(),
                    percent,
                }),
                _ => {
                    return Err(ConfigError::Invalid {
                        name: ENV_RECORD_PERCENT,
                        detail: "must be 1 to 100".into(),
                    });
                }
            },
        },
        reload_every: match parse(&lookup, ENV_RELOAD_SECONDS, 30u64)? {
            0 => {
                return Err(ConfigError::Invalid {
                    name: ENV_RELOAD_SECONDS,
                    detail: "must be at least 1".into(),
                });
            }
            s => Duration::from_secs(s),
        },
    };
    Ok((config, threads.max(1)))
}

/// In containers every process may be pid 1; the time and the pid together are unique enough
/// to tell routers apart in `Via`.
fn random_instance() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{:x}", nanos ^ (u64::from(std::process::id()) << 32))
}

pub fn from_env() -> Result<(Config, usize), ConfigError> {
    from_lookup(env, |p| std::fs::read_to_string(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<(Config, usize), ConfigError> {
        let mut map: HashMap<&str, &str> = HashMap::from([
            (ENV_DATABASE_URL, "postgres://x/router"),
            (ENV_TOKEN, "0123456789abcdef"),
        ]);
        map.extend(pairs.iter().copied());
        from_lookup(
            |k| map.get(k).map(|v| v.to_string()),
            |_| Ok("not toml [".into()),
        )
    }

    #[test]
    fn defaults_and_upstream_overrides() {
        let (c, threads) = load(&[("ROUTER_UPSTREAM_CATALOG", "http://127.0.0.1:9")]).unwrap();
        assert_eq!(threads, 2);
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:7100");
        assert_eq!(c.limits.write_hold, Duration::from_secs(2));
        let catalog = c.table.upstream_named("catalog").unwrap();
        assert_eq!(c.table.upstreams[catalog].url, "http://127.0.0.1:9");
    }

    #[test]
    fn the_write_hold_is_set_in_milliseconds() {
        let (c, _) = load(&[(ENV_WRITE_HOLD_MS, "300")]).unwrap();
        assert_eq!(c.limits.write_hold, Duration::from_millis(300));
        let (c, _) = load(&[(ENV_WRITE_HOLD_MS, "60000")]).unwrap();
        assert_eq!(c.limits.write_hold, Duration::from_secs(60));
    }

    #[test]
    fn recording_is_off_unless_a_file_is_named() {
        let (c, _) = load(&[]).unwrap();
        assert_eq!(c.record, None);
        let (c, _) = load(&[(ENV_RECORD_FILE, "/tmp/sample.jsonl")]).unwrap();
        let record = c.record.unwrap();
        assert_eq!(
            (record.file.to_str(), record.percent),
            (Some("/tmp/sample.jsonl"), 10)
        );
        for bad in ["0", "101", "half"] {
            let e = load(&[(ENV_RECORD_FILE, "/tmp/s"), (ENV_RECORD_PERCENT, bad)]).unwrap_err();
            assert!(e.to_string().contains(ENV_RECORD_PERCENT), "{bad}: {e}");
        }
    }

    #[test]
    fn migrations_come_from_a_pipeline_file_naming_capabilities() {
        let file =
            |text: &'static str| move |_: &str| Ok::<String, std::io::Error>(text.to_string());
        let lookup = |k: &str| match k {
            ENV_DATABASE_URL => Some("postgres://x/router".to_string()),
            ENV_TOKEN => Some("0123456789abcdef".to_string()),
            ENV_MIGRATIONS => Some("pipelines.toml".to_string()),
            ENV_FLIP_CATCH_UP_MS => Some("250".to_string()),
            "CATALOG_URL" => Some("postgres://x/catalog".to_string()),
            _ => None,
        };
        let good = "[[pipelines]]\nname = \"catalog\"\nsource = \"postgres://x/monolith\"\n\
                    target = \"${CATALOG_URL}\"\n[[pipelines.tables]]\nsource = \"catalog.albums\"\n";
        let (config, _) = from_lookup(lookup, file(good)).unwrap();
        let migrations = config.migrations.unwrap();
        let catalog = migrations.find("catalog").unwrap();
        assert_eq!(catalog.forward.target, "postgres://x/catalog");
        assert_eq!(migrations.settings.catch_up, Duration::from_millis(250));
        let feed = "[[pipelines]]\nname = \"orders\"\nsource = \"postgres://x/m\"\n\
                     target = \"postgres://x/o\"\n[[pipelines.tables]]\nsource = \"orders.orders\"\n";
        let e = from_lookup(lookup, file(feed)).unwrap_err().to_string();
        assert!(
            e.contains(ENV_MIGRATIONS) && e.contains("capability"),
            "{e}"
        );
        let both: &'static str = Box::leak(format!("{good}{feed}").into_boxed_str());
        let (config, _) = from_lookup(lookup, file(both)).unwrap();
        let migrations = config.migrations.unwrap();
        assert_eq!(migrations.movable.len(), 1);
        assert_eq!(migrations.feeds[0].name, "orders");
        assert!(load(&[]).unwrap().0.migrations.is_none());
    }

    #[test]
    fn bad_settings_are_named() {
        for (name, value) in [
            (ENV_TOKEN, "short"),
            ("ROUTER_UPSTREAM_MONOLITH", "monolith:7001"),
            (ENV_ROUTES, "/some/file.toml"),
            (ENV_THREADS, "many"),
            (ENV_RELOAD_SECONDS, "0"),
            (ENV_MAX_CONNECTIONS, "0"),
            (ENV_MAX_CONNECTIONS, "lots"),
            (ENV_UNLEASH_URL, "unleash:4242/api"),
            (ENV_WRITE_HOLD_MS, "0"),
            (ENV_WRITE_HOLD_MS, "60001"),
            (ENV_WRITE_HOLD_MS, "2s"),
            (ENV_MIGRATIONS, "/some/pipelines.toml"),
        ] {
            let e = load(&[(name, value)]).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains(name) || text.contains(UPSTREAM_PREFIX),
                "{name}: {text}"
            );
        }
    }
}
