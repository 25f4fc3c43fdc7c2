use std::path::PathBuf;

use crate::Error;

/// Environment variable naming an existing server to use instead of starting one
/// (`postgres://user:pass@host:port/any_db`; the database part is replaced per use).
pub const ENV_URL: &str = "LOCALPG_URL";
/// Environment variable naming the directory that holds `initdb`, `pg_ctl` and `postgres`.
pub const ENV_BINDIR: &str = "LOCALPG_BINDIR";

/// How the harness finds its server, read from the environment through a lookup function so tests
/// can pass a map instead of mutating the process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Use this existing server instead of starting a throwaway cluster.
    pub url: Option<String>,
    /// Look for the server binaries here first.
    pub bindir: Option<PathBuf>,
}

impl Settings {
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let url = lookup(ENV_URL).filter(|v| !v.trim().is_empty());
        if let Some(url) = &url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(Error::Setting {
                name: ENV_URL,
                detail: format!("expected a postgres:// URL, got {url:?}"),
            });
        }
        let bindir = lookup(ENV_BINDIR)
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from);
        Ok(Settings { url, bindir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn empty_environment_means_start_our_own_cluster() {
        assert_eq!(
            Settings::from_lookup(lookup(&[])).unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn url_and_bindir_are_read() {
        let s = Settings::from_lookup(lookup(&[
            (ENV_URL, "postgres://u@localhost:5433/x"),
            (ENV_BINDIR, "/opt/pg/bin"),
        ]))
        .unwrap();
        assert_eq!(s.url.as_deref(), Some("postgres://u@localhost:5433/x"));
        assert_eq!(s.bindir, Some(PathBuf::from("/opt/pg/bin")));
    }

    #[test]
    fn a_url_that_is_not_postgres_is_rejected_by_name() {
        let err = Settings::from_lookup(lookup(&[(ENV_URL, "mysql://x")])).unwrap_err();
        assert!(err.to_string().contains(ENV_URL), "{err}");
    }
}
