//! Change-data-capture on PostgreSQL's logical replication protocol.
//!
//! Layers, bottom up:
//! - [`wire`]: a replication connection (startup, auth, replication commands, the CopyBoth
//!   stream of XLogData and keepalives, standby status updates);
//! - [`pgoutput`]: decoding the logical messages carried inside XLogData;
//! - [`pipeline`]: one source → target stream: publication, slot, initial copy ([`copy`]),
//!   then applying changes ([`apply`]) with the position kept in the target ([`state`]), large
//!   transactions while still in progress on the source ([`streamed`]);
//! - [`sequences`]: target sequences kept at or past the source's, so the target can draw ids;
//! - [`config`] for the pipeline file, [`verify`] to compare both sides, [`metrics`].

pub mod apply;
pub mod cli;
pub mod config;
pub mod copy;
pub mod error;
pub mod metrics;
pub mod ops;
pub mod pgoutput;
pub mod pipeline;
pub mod schema;
pub mod sequences;
pub mod source;
pub mod state;
pub mod streamed;
pub mod verify;
pub mod waits;
pub mod wire;
