//! Why a pipeline stopped. Every variant says what to do about it where there is something to do.

use crate::pgoutput::DecodeError;
use crate::wire::WireError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "schema drift in {table}: column {column:?} {detail}; the pipeline stopped and the slot keeps the changes until the mapping or the target is fixed"
    )]
    Drift {
        table: String,
        column: String,
        detail: String,
    },
    #[error("{table}: {detail}")]
    Mapping { table: String, detail: String },
    #[error(
        "replication slot {slot:?} was invalidated by the server (wal_status lost: it needed WAL that max_slot_wal_keep_size let go); changes are missing. Run `fig replication drop` for this pipeline and start it again to recopy"
    )]
    SlotInvalidated { slot: String },
    #[error(
        "replication slot {slot:?} no longer exists on the source, but the target was streaming from it (applied up to {applied}); changes since then may be lost. Run `fig replication drop` for this pipeline and start it again to recopy"
    )]
    SlotMissing { slot: String, applied: String },
    #[error(
        "replication slot {slot:?} has confirmed {confirmed} but the target has applied only up to {applied}: the slot was recreated or read by another client, so resuming would skip changes. Run `fig replication drop` for this pipeline and start it again to recopy"
    )]
    SlotAhead {
        slot: String,
        confirmed: String,
        applied: String,
    },
    #[error(
        "more than {max} streamed transactions are in progress on the source at once, each needing its own target session; raise max_streams for this pipeline (or stream_after_kib, so fewer transactions are streamed)"
    )]
    TooManyStreams { max: usize },
    #[error(
        "the source truncated {table}, but rows of {referencing} on the target refer to it (foreign key {constraint}); the pipeline stopped and the slot keeps the change: delete or re-point those rows on the target (or drop the constraint), then run the pipeline again"
    )]
    TruncateBlocked {
        table: String,
        referencing: String,
        constraint: String,
    },
    #[error("replication slot {slot:?} is in use by another process (pid {pid})")]
    SlotInUse { slot: String, pid: i32 },
    #[error("source database: {context}: {}", describe(source))]
    Source {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("target database: {context}: {}", describe(source))]
    Target {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A connection URL whose TLS settings cannot be honoured.
    #[error("{side} database: {context}: {source}")]
    Tls {
        side: Side,
        context: String,
        #[source]
        source: pgtls::Error,
    },
    #[error("replication stream: {0}")]
    Wire(#[from] WireError),
    #[error("decoding a pgoutput message: {0}")]
    Decode(#[from] DecodeError),
    #[error("replication stream: {0}")]
    Protocol(String),
}

impl PipelineError {
    /// The target refused a change: its server answered with an error (the connection is
    /// fine), or the engine declined a TRUNCATE that target rows refer to.
    pub fn is_target_refusal(&self) -> bool {
        match self {
            PipelineError::Target { source, .. } => source.as_db_error().is_some(),
            PipelineError::TruncateBlocked { .. } => true,
            _ => false,
        }
    }

    /// A statement cancelled, or a deadlock broken, on the target: between the engine's own
    /// sessions (see `waits.rs`), never the source's doing.
    pub fn is_between_sessions(&self) -> bool {
        use tokio_postgres::error::SqlState;
        matches!(self, PipelineError::Target { source, .. }
            if source.code().is_some_and(|c| *c == SqlState::QUERY_CANCELED || *c == SqlState::T_R_DEADLOCK_DETECTED))
    }
}

/// A database error as the server reported it: tokio-postgres's own text for an error the server
/// sent is only "db error", which tells an operator nothing. Message, SQLSTATE, then whatever
/// the server added (detail, hint, where, and the table, column or constraint concerned).
pub fn describe(error: &tokio_postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        // Not from the server (connection refused, closed...): its text says what happened.
        return match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        };
    };
    let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
    let relation = match (db.schema(), db.table()) {
        (Some(schema), Some(table)) => Some(format!("{schema}.{table}")),
        (None, Some(table)) => Some(table.to_string()),
        _ => None,
    };
    for (label, value) in [
        ("detail", db.detail().map(str::to_string)),
        ("hint", db.hint().map(str::to_string)),
        ("where", db.where_().map(str::to_string)),
        ("table", relation),
        ("column", db.column().map(str::to_string)),
        ("constraint", db.constraint().map(str::to_string)),
    ] {
        if let Some(value) = value {
            text.push_str(&format!("; {label}: {value}"));
        }
    }
    text
}

/// Which end of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// A failure on one side's database: a statement's, or a connection's.
pub trait DatabaseFailure {
    fn on(self, side: Side, context: String) -> PipelineError;
}

impl DatabaseFailure for tokio_postgres::Error {
    fn on(self, side: Side, context: String) -> PipelineError {
        match side {
            Side::Source => PipelineError::Source {
                context,
                source: self,
            },
            Side::Target => PipelineError::Target {
                context,
                source: self,
            },
        }
    }
}

impl DatabaseFailure for crate::source::ConnectError {
    fn on(self, side: Side, context: String) -> PipelineError {
        match self {
            crate::source::ConnectError::Postgres(e) => e.on(side, context),
            crate::source::ConnectError::Tls(source) => PipelineError::Tls {
                side,
                context,
                source,
            },
        }
    }
}

/// Wraps a source-side database error with what was being done.
pub fn source<E: DatabaseFailure>(context: impl Into<String>) -> impl FnOnce(E) -> PipelineError {
    let context = context.into();
    move |e| e.on(Side::Source, context)
}

/// Wraps a target-side database error with what was being done.
pub fn target<E: DatabaseFailure>(context: impl Into<String>) -> impl FnOnce(E) -> PipelineError {
    let context = context.into();
    move |e| e.on(Side::Target, context)
}
