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
    #[error("replication slot {slot:?} is in use by another process (pid {pid})")]
    SlotInUse { slot: String, pid: i32 },
    #[error("source database: {context}: {source}")]
    Source {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("target database: {context}: {source}")]
    Target {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("replication stream: {0}")]
    Wire(#[from] WireError),
    #[error("decoding a pgoutput message: {0}")]
    Decode(#[from] DecodeError),
    #[error("replication stream: {0}")]
    Protocol(String),
}

/// Wraps a source-side database error with what was being done.
pub fn source(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PipelineError {
    let context = context.into();
    move |source| PipelineError::Source { context, source }
}

/// Wraps a target-side database error with what was being done.
pub fn target(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PipelineError {
    let context = context.into();
    move |source| PipelineError::Target { context, source }
}
