use std::path::PathBuf;

/// Everything that can go wrong while finding, starting or using a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; looked in: {searched}. \
         Install the server (Debian: `apt-get install -y postgresql`), set LOCALPG_BINDIR to the \
         directory holding them, or set LOCALPG_URL to use an existing server"
    )]
    BinariesNotFound { searched: String },

    #[error(
        "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` system \
         user to run it as; create one (`useradd --system postgres`) or run as a non-root user"
    )]
    NoPostgresUser,

    #[error(
        "data directory {path} is owned by another user than the one PostgreSQL runs as ({user})"
    )]
    DataDirOwner { path: PathBuf, user: String },

    #[error(
        "PostgreSQL runs as `{user}` and cannot reach {path}: {blocked_at} is not searchable by \
         other users; choose a data directory elsewhere (e.g. under /var/tmp) or `chmod o+x {blocked_at}`"
    )]
    DataDirUnreachable {
        path: PathBuf,
        blocked_at: PathBuf,
        user: String,
    },

    #[error("{step} failed: {detail}")]
    Command { step: &'static str, detail: String },

    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("could not connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: diesel::ConnectionError,
    },

    #[error("database statement failed: {0}")]
    Query(#[from] diesel::result::Error),

    #[error("migrating database {database} failed: {detail}")]
    Migration { database: String, detail: String },

    #[error("invalid setting {name}: {detail}")]
    Setting { name: &'static str, detail: String },
}

impl Error {
    pub(crate) fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { step, source }
    }
}
