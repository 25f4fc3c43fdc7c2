//! Taking parameters out of a libpq connection string, URL or key/value form, and handing the
//! rest on untouched, so that `tokio_postgres::Config` never sees the ones it rejects.

use crate::Error;

/// A connection string with some parameters taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    /// The connection string without them, in the form it came in.
    pub(crate) rest: String,
    /// The parameters taken out, decoded, in the order they appeared.
    pub(crate) taken: Vec<(String, String)>,
}

/// Takes every parameter whose key `take` accepts out of `conninfo`.
pub(crate) fn split(conninfo: &str, take: impl Fn(&str) -> bool) -> Result<Split, Error> {
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        split_url(conninfo, take)
    } else {
        split_key_values(conninfo, take)
    }
}

fn split_url(url: &str, take: impl Fn(&str) -> bool) -> Result<Split, Error> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(Split {
            rest: url.to_string(),
            taken: Vec::new(),
        });
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            // libpq's own words for it; tokio-postgres would say "invalid connection string".
            return Err(Error::Parse(format!(
                "missing \"=\" after {pair:?} in the URL's query"
            )));
        };
        let key = percent_decode(key)?;
        if take(&key) {
            taken.push((key, percent_decode(value)?));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Split { rest, taken })
}

fn percent_decode(text: &str) -> Result<String, Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::Parse(format!("invalid percent-encoding in {text:?} in the URL"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::Parse(format!("{text:?} in the URL does not decode to UTF-8")))
}

/// `key = value` pairs separated by white space; a value may be single-quoted, and a backslash
/// escapes the next character, as libpq reads them.
fn split_key_values(conninfo: &str, take: impl Fn(&str) -> bool) -> Result<Split, Error> {
    let mut chars = conninfo.chars().peekable();
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::Parse(format!(
                "missing \"=\" after {key:?} in the connection string"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(Error::Parse(format!(
                            "unterminated quoted value of {key:?} in the connection string"
                        )));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if take(&key) {
            taken.push((key, value));
        } else {
            kept.push(format!("{key}={}", quote(&value)));
        }
    }
    Ok(Split {
        rest: kept.join(" "),
        taken,
    })
}

/// A value as a quoted key/value token that reads back as `value`.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssl(key: &str) -> bool {
        key.starts_with("ssl")
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn urls() {
        for (url, rest, taken) in [
            ("postgresql://u@h/db", "postgresql://u@h/db", vec![]),
            (
                "postgresql://u@h/db?sslmode=verify-full",
                "postgresql://u@h/db",
                vec![("sslmode", "verify-full")],
            ),
            (
                "postgres://u:p%3Fw@h:5/db?application_name=a%20b&sslrootcert=%2Ftmp%2Fca%20x.pem&port=6",
                "postgres://u:p%3Fw@h:5/db?application_name=a%20b&port=6",
                vec![("sslrootcert", "/tmp/ca x.pem")],
            ),
            (
                "postgresql://u@/db?host=/run/pg&sslmode=require&",
                "postgresql://u@/db?host=/run/pg",
                vec![("sslmode", "require")],
            ),
            ("postgresql://u@h/db?", "postgresql://u@h/db", vec![]),
        ] {
            let got = split(url, ssl).unwrap();
            assert_eq!(got.rest, rest, "{url}");
            assert_eq!(got.taken, pairs(&taken), "{url}");
        }
    }

    #[test]
    fn key_values() {
        for (conninfo, rest, taken) in [
            ("", "", vec![]),
            (
                "host=h user=u sslmode=verify-ca",
                "host='h' user='u'",
                vec![("sslmode", "verify-ca")],
            ),
            (
                "  host = h   sslrootcert = '/tmp/a b\\'c.pem' options='-c x=1' password=p\\ q ",
                "host='h' options='-c x=1' password='p q'",
                vec![("sslrootcert", "/tmp/a b'c.pem")],
            ),
            (
                "password='it\\'s\\\\' sslmode=disable",
                "password='it\\'s\\\\'",
                vec![("sslmode", "disable")],
            ),
        ] {
            let got = split(conninfo, ssl).unwrap();
            assert_eq!(got.rest, rest, "{conninfo}");
            assert_eq!(got.taken, pairs(&taken), "{conninfo}");
        }
    }

    #[test]
    fn the_rest_means_the_same_to_tokio_postgres() {
        let got = split(
            "host=h user=u password='it\\'s \\\\ x' sslmode=require dbname=d",
            ssl,
        )
        .unwrap();
        let config: tokio_postgres::Config = got.rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's \\ x"[..]));
        assert_eq!(config.get_dbname(), Some("d"));
    }

    #[test]
    fn malformed_strings_are_refused_by_name() {
        for (conninfo, needle) in [
            (
                "postgresql://h/db?sslmode",
                "missing \"=\" after \"sslmode\"",
            ),
            ("postgresql://h/db?sslrootcert=%zz", "percent-encoding"),
            ("postgresql://h/db?sslrootcert=%ff", "UTF-8"),
            ("host=h sslmode", "missing \"=\" after \"sslmode\""),
            ("host='h", "unterminated"),
        ] {
            let err = split(conninfo, ssl).unwrap_err().to_string();
            assert!(err.contains(needle), "{conninfo}: {err}");
        }
    }
}
