//! Reading a service's typed configuration from the environment, through a lookup function so
//! tests pass a map instead of mutating the process environment.

use std::str::FromStr;

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
}
