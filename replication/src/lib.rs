//! Change-data-capture on PostgreSQL's logical replication protocol.
//!
//! Layers, bottom up:
//! - [`wire`]: a replication connection (startup, auth, replication commands, the CopyBoth
//!   stream of XLogData and keepalives, standby status updates);
//! - [`pgoutput`]: decoding the logical messages carried inside XLogData.

pub mod pgoutput;
pub mod wire;
