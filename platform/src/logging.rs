//! Logs for every binary that serves HTTP: structured lines, filtered by an environment
//! variable in `RUST_LOG`'s syntax.
//!
//! An ERROR line means the operator has something to fix. actix's HTTP/1 dispatcher logs what
//! a client did wrong on its own connection (a malformed request line, a body shorter than its
//! `Content-Length`, a peer that vanished mid-response) at ERROR, and it answers those clients
//! itself (400, or a closed connection). Those lines are kept out unless the filter asks for
//! debug from `actix_http` (`RUST_LOG=actix_http=debug`, or `debug` everywhere): a client's
//! mistake is debug information.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterExt, ParseError, Targets, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Where actix's HTTP/1 dispatcher logs the errors of one client's connection.
const CLIENT_CONNECTION_TARGET: &str = "actix_http::h1::dispatcher";

/// Where the lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

/// Logs to `output`, filtered by the directives in `env_var` (default `default`), in colour on
/// a terminal. A second call (tests, a host embedding several servers) keeps the first
/// subscriber.
pub fn init(env_var: &str, default: &str, output: Output) {
    let directives = std::env::var(env_var).unwrap_or_else(|_| default.to_string());
    // https://no-color.org: a set NO_COLOR turns colour off even on a terminal.
    let plain = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let start = |directives: &str| match output {
        Output::Stdout => init_with(
            directives,
            std::io::stdout,
            !plain && std::io::stdout().is_terminal(),
        ),
        Output::Stderr => init_with(
            directives,
            std::io::stderr,
            !plain && std::io::stderr().is_terminal(),
        ),
    };
    start(&directives).unwrap_or_else(|e| {
        eprintln!("{env_var}: {e}; logging at {default}");
        let _ = start(default);
    });
}

/// Logs to `writer`, filtered by `directives`, in colour or not; an error if the directives do
/// not parse.
pub fn init_with<W>(directives: &str, writer: W, colour: bool) -> Result<(), ParseError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(directives)?;
    let client_errors = client_errors_wanted(directives);
    let layer = fmt::layer()
        .with_writer(writer)
        .with_ansi(colour)
        .with_filter(filter.and(filter_fn(move |meta| shown(meta, client_errors))));
    let _ = tracing_subscriber::registry().with(layer).try_init();
    Ok(())
}

/// Whether a line passes the client-error rule (the level filter decides the rest).
fn shown(meta: &Metadata<'_>, client_errors_wanted: bool) -> bool {
    client_errors_wanted || !is_client_connection_error(meta.target(), *meta.level())
}

/// A per-connection error from actix's dispatcher, which it logs at ERROR.
fn is_client_connection_error(target: &str, level: Level) -> bool {
    target == CLIENT_CONNECTION_TARGET && level <= Level::WARN
}

/// Whether the directives ask for debug lines from actix's dispatcher. Directives with span
/// filters (which `Targets` does not parse) count as not asking.
fn client_errors_wanted(directives: &str) -> bool {
    Targets::from_str(directives)
        .is_ok_and(|t| t.would_enable(CLIENT_CONNECTION_TARGET, &Level::DEBUG))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_connection_errors_are_debug_information() {
        let table = [
            (CLIENT_CONNECTION_TARGET, Level::ERROR, true),
            (CLIENT_CONNECTION_TARGET, Level::WARN, true),
            (CLIENT_CONNECTION_TARGET, Level::TRACE, false),
            ("actix_http::h1::codec", Level::ERROR, false),
            ("actix_server::worker", Level::ERROR, false),
            ("monolith::orders", Level::ERROR, false),
        ];
        for (target, level, expected) in table {
            assert_eq!(
                is_client_connection_error(target, level),
                expected,
                "{target} {level}"
            );
        }
    }

    #[test]
    fn only_debug_for_actix_shows_them() {
        let table = [
            ("info", false),
            ("warn", false),
            ("error", false),
            ("debug", true),
            ("trace", true),
            ("info,actix_http=debug", true),
            ("info,actix_http::h1::dispatcher=debug", true),
            ("debug,actix_http=info", false),
            ("info,monolith=debug", false),
            // Span filters are beyond `Targets`: not asking.
            ("info,[request{id=1}]=debug", false),
        ];
        for (directives, expected) in table {
            assert_eq!(client_errors_wanted(directives), expected, "{directives}");
        }
    }
}
