//! `sslmode`, `sslrootcert` and `sslsni` as libpq reads them, and what each combination asks of
//! the server's certificate.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::conninfo;

/// How hard to insist on TLS, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS if the server offers it, plaintext otherwise (libpq's default).
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS with a certificate chain that ends at a CA of `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode, Error> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(Error::Unsupported(
                "sslmode=allow (plaintext first, TLS only if the server insists) is not \
                 supported; use prefer, or require and stronger"
                    .into(),
            )),
            other => Err(Error::Parse(format!(
                "invalid sslmode {other:?}: expected disable, prefer, require, verify-ca or \
                 verify-full"
            ))),
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is checked of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Nothing: the connection is encrypted, but anyone in the path can pose as the server.
    None,
    /// The chain ends at a CA of `sslrootcert`; the host name is not compared.
    Chain,
    /// The chain, and the certificate names the host connected to.
    Full,
}

/// The TLS parameters of one connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    mode: SslMode,
    root_cert: Option<PathBuf>,
    sni: bool,
}

impl Default for TlsSettings {
    /// libpq's defaults: `sslmode=prefer`, no root certificate, SNI on.
    fn default() -> Self {
        TlsSettings {
            mode: SslMode::Prefer,
            root_cert: None,
            sni: true,
        }
    }
}

/// Parameters this crate reads, taken out of the connection string.
const OWN: &[&str] = &["sslmode", "sslrootcert", "sslsni"];

/// libpq parameters for what this client does not do: named here so that the refusal says so,
/// rather than tokio-postgres's "unknown option".
const UNSUPPORTED: &[(&str, &str)] = &[
    ("sslcert", "client certificates"),
    ("sslkey", "client certificates"),
    ("sslpassword", "client certificates"),
    ("sslcertmode", "client certificates"),
    ("sslcrl", "certificate revocation lists"),
    ("sslcrldir", "certificate revocation lists"),
    ("requiressl", "the pre-9.x spelling of sslmode=require"),
];

impl TlsSettings {
    /// Takes `sslmode`, `sslrootcert` and `sslsni` out of a libpq connection string (URL or
    /// key/value form), and returns the rest, which `tokio_postgres::Config` can then parse.
    ///
    /// `verify-ca` and `verify-full` need `sslrootcert` (libpq would fall back on
    /// `~/.postgresql/root.crt`; this client reads no files it was not named).
    pub fn from_conninfo(conninfo: &str) -> Result<(String, TlsSettings), Error> {
        let split = conninfo::split(conninfo, |key| {
            OWN.contains(&key) || UNSUPPORTED.iter().any(|(k, _)| *k == key)
        })?;
        let mut settings = TlsSettings::default();
        for (key, value) in split.taken {
            match key.as_str() {
                "sslmode" => settings.mode = SslMode::parse(&value)?,
                "sslrootcert" if value == "system" => {
                    return Err(Error::Unsupported(
                        "sslrootcert=system (the operating system's CAs) is not supported; name \
                         the file of the CA that signed the server's certificate (managed \
                         services publish theirs)"
                            .into(),
                    ));
                }
                "sslrootcert" => settings.root_cert = (!value.is_empty()).then(|| value.into()),
                "sslsni" => {
                    settings.sni = match value.as_str() {
                        "1" => true,
                        "0" => false,
                        other => {
                            return Err(Error::Parse(format!(
                                "invalid sslsni {other:?}: expected 0 or 1"
                            )));
                        }
                    }
                }
                other => {
                    let what = UNSUPPORTED
                        .iter()
                        .find(|(k, _)| *k == other)
                        .map_or("it", |(_, what)| what);
                    return Err(Error::Unsupported(format!(
                        "{other} is not supported ({what}); the project's own connections \
                         support sslmode, sslrootcert and sslsni"
                    )));
                }
            }
        }
        if settings.mode >= SslMode::VerifyCa && settings.root_cert.is_none() {
            return Err(Error::MissingRootCert {
                mode: settings.mode,
            });
        }
        Ok((split.rest, settings))
    }

    /// Settings without a connection string.
    pub fn new(mode: SslMode, root_cert: Option<PathBuf>) -> Result<TlsSettings, Error> {
        if mode >= SslMode::VerifyCa && root_cert.is_none() {
            return Err(Error::MissingRootCert { mode });
        }
        Ok(TlsSettings {
            mode,
            root_cert,
            sni: true,
        })
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    pub fn root_cert(&self) -> Option<&Path> {
        self.root_cert.as_deref()
    }

    pub fn sni(&self) -> bool {
        self.sni
    }

    /// Whether a server that declines TLS is refused (`require` and stronger).
    pub fn requires_tls(&self) -> bool {
        self.mode >= SslMode::Require
    }

    /// What is checked of the certificate. As libpq: a root certificate given with `prefer` or
    /// `require` makes them check the chain, like `verify-ca`.
    pub fn verification(&self) -> Verification {
        match (self.mode, &self.root_cert) {
            (SslMode::VerifyFull, _) => Verification::Full,
            (SslMode::VerifyCa, _) => Verification::Chain,
            (SslMode::Prefer | SslMode::Require, Some(_)) => Verification::Chain,
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, _) => Verification::None,
        }
    }

    /// `sslmode=..., sslrootcert=...`, for error messages.
    pub fn describe(&self) -> String {
        match &self.root_cert {
            Some(path) => format!("sslmode={}, sslrootcert={}", self.mode, path.display()),
            None => format!("sslmode={}", self.mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_what_they_verify() {
        use SslMode::*;
        use Verification as V;
        for (query, mode, verification, requires) in [
            ("", Prefer, V::None, false),
            ("?sslmode=disable", Disable, V::None, false),
            (
                "?sslmode=disable&sslrootcert=/ca.pem",
                Disable,
                V::None,
                false,
            ),
            ("?sslmode=prefer", Prefer, V::None, false),
            ("?sslrootcert=/ca.pem", Prefer, V::Chain, false),
            ("?sslmode=require", Require, V::None, true),
            (
                "?sslmode=require&sslrootcert=/ca.pem",
                Require,
                V::Chain,
                true,
            ),
            (
                "?sslmode=verify-ca&sslrootcert=/ca.pem",
                VerifyCa,
                V::Chain,
                true,
            ),
            (
                "?sslmode=verify-full&sslrootcert=/ca.pem",
                VerifyFull,
                V::Full,
                true,
            ),
        ] {
            let url = format!("postgresql://u@h/db{query}");
            let (rest, settings) = TlsSettings::from_conninfo(&url).unwrap();
            assert_eq!(rest, "postgresql://u@h/db", "{url}");
            assert_eq!(settings.mode(), mode, "{url}");
            assert_eq!(settings.verification(), verification, "{url}");
            assert_eq!(settings.requires_tls(), requires, "{url}");
        }
    }

    #[test]
    fn key_value_strings_too() {
        let (rest, settings) = TlsSettings::from_conninfo(
            "host=h sslmode=verify-full sslrootcert='/a b.pem' sslsni=0",
        )
        .unwrap();
        assert_eq!(rest, "host='h'");
        assert_eq!(settings.root_cert(), Some(Path::new("/a b.pem")));
        assert!(!settings.sni());
        assert_eq!(
            settings.describe(),
            "sslmode=verify-full, sslrootcert=/a b.pem"
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        for (query, needle) in [
            (
                "sslmode=verify-full",
                "sslmode=verify-full needs sslrootcert",
            ),
            (
                "sslmode=verify-ca&sslrootcert=",
                "sslmode=verify-ca needs sslrootcert",
            ),
            ("sslmode=allow", "sslmode=allow"),
            ("sslmode=verify_full", "invalid sslmode \"verify_full\""),
            ("sslrootcert=system", "sslrootcert=system"),
            ("sslsni=yes", "invalid sslsni"),
            (
                "sslcert=/c.pem",
                "sslcert is not supported (client certificates)",
            ),
            ("sslcrl=/x", "certificate revocation lists"),
        ] {
            let url = format!("postgresql://u@h/db?{query}");
            let err = TlsSettings::from_conninfo(&url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
