//! The CopyBoth stream of a started logical replication.

use std::io;

use bytes::{Buf, Bytes};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::WireError;
use super::connection::ReplicationConnection;
use super::framing::{Backend, describe_byte, log_notice, server_error, unexpected};
use super::lsn::{Lsn, pg_now_micros};

const XLOG_DATA_TAG: u8 = b'w';
const PRIMARY_KEEPALIVE_TAG: u8 = b'k';
const STANDBY_STATUS_UPDATE_TAG: u8 = b'r';
/// Tag, WAL start, WAL end, send time.
const XLOG_DATA_HEADER_LEN: usize = 1 + 8 + 8 + 8;
/// Tag, WAL end, send time, reply flag.
const PRIMARY_KEEPALIVE_LEN: usize = 1 + 8 + 8 + 1;
/// Tag, written, flushed and applied LSNs, client time, reply flag.
pub(crate) const STANDBY_STATUS_UPDATE_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

/// A message from the server during streaming replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL data; for logical replication one output plugin message (decode it with
    /// [`pgoutput`](crate::pgoutput)).
    XLogData {
        /// The WAL position of the data. For pgoutput, a Commit's `wal_start` is the end of
        /// its commit record: the position to confirm once the transaction is durable.
        wal_start: Lsn,
        /// The end of WAL on the server.
        wal_end: Lsn,
        /// Server clock, microseconds since 2000-01-01.
        send_time: i64,
        data: Bytes,
    },
    /// A heartbeat; with `reply_requested` the server wants a status update soon, or it ends the
    /// connection after `wal_sender_timeout`.
    PrimaryKeepAlive {
        /// The end of WAL on the server.
        wal_end: Lsn,
        send_time: i64,
        reply_requested: bool,
    },
}

/// Decodes the payload of a CopyData message received during replication.
///
/// Never panics: empty, truncated, oversized and unknown payloads are protocol errors.
pub fn parse_copy_data(payload: Bytes) -> Result<ReplicationMessage, WireError> {
    let Some(&tag) = payload.first() else {
        return Err(WireError::Protocol(
            "empty CopyData payload during replication; expected XLogData ('w') or a primary \
             keepalive ('k')"
                .into(),
        ));
    };
    match tag {
        XLOG_DATA_TAG => {
            if payload.len() < XLOG_DATA_HEADER_LEN {
                return Err(WireError::Protocol(format!(
                    "truncated XLogData: {} bytes, the header alone is {XLOG_DATA_HEADER_LEN}",
                    payload.len()
                )));
            }
            let mut header = &payload[1..XLOG_DATA_HEADER_LEN];
            let wal_start = header.get_u64();
            let wal_end = header.get_u64();
            let send_time = header.get_i64();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                send_time,
                data: payload.slice(XLOG_DATA_HEADER_LEN..),
            })
        }
        PRIMARY_KEEPALIVE_TAG => {
            // A keepalive has a fixed size; anything else means we lost track of the stream.
            if payload.len() != PRIMARY_KEEPALIVE_LEN {
                return Err(WireError::Protocol(format!(
                    "primary keepalive of {} bytes, expected {PRIMARY_KEEPALIVE_LEN}",
                    payload.len()
                )));
            }
            let mut body = &payload[1..];
            let wal_end = body.get_u64();
            let send_time = body.get_i64();
            let reply_requested = body.get_u8() != 0;
            Ok(ReplicationMessage::PrimaryKeepAlive {
                wal_end,
                send_time,
                reply_requested,
            })
        }
        other => Err(WireError::Protocol(format!(
            "unknown CopyData payload tag {} during replication; expected XLogData ('w') or a \
             primary keepalive ('k')",
            describe_byte(other)
        ))),
    }
}

/// Encodes a standby status update ('r'), the CopyData payload that reports progress.
///
/// `client_time` is microseconds since 2000-01-01 (see [`pg_now_micros`]).
pub fn encode_standby_status_update(
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    client_time: i64,
    reply_requested: bool,
) -> [u8; STANDBY_STATUS_UPDATE_LEN] {
    let mut out = [0u8; STANDBY_STATUS_UPDATE_LEN];
    out[0] = STANDBY_STATUS_UPDATE_TAG;
    out[1..9].copy_from_slice(&write.to_be_bytes());
    out[9..17].copy_from_slice(&flush.to_be_bytes());
    out[17..25].copy_from_slice(&apply.to_be_bytes());
    out[25..33].copy_from_slice(&client_time.to_be_bytes());
    out[33] = u8::from(reply_requested);
    out
}

/// A started logical replication: XLogData and keepalives from the server, status updates to it.
///
/// Dropping the stream closes the socket; the server then ends the walsender (and drops a
/// temporary slot). [`finish`](Self::finish) ends it politely instead.
#[derive(Debug)]
pub struct ReplicationStream {
    connection: ReplicationConnection,
    /// The server sent CopyDone: nothing but the end of the command follows.
    server_done: bool,
    /// We sent CopyDone: the server ignores anything else we send in this copy.
    client_done: bool,
}

impl ReplicationStream {
    pub(crate) fn new(connection: ReplicationConnection) -> Self {
        ReplicationStream {
            connection,
            server_done: false,
            client_done: false,
        }
    }

    /// The next XLogData or keepalive; `None` once the server has ended the copy (CopyDone).
    ///
    /// Cancel-safe: it may lose the race in `tokio::select!` (e.g. against a timer that sends
    /// status updates) without losing or corrupting data, because partial messages stay
    /// buffered until the next call.
    ///
    /// Errors: `Server` when the server reports one (e.g. a dropped slot or
    /// `pg_terminate_backend`); `Io` when the connection breaks or the server hangs up without
    /// ending the copy, which is a failure to recover from, not the end of the stream;
    /// `Protocol` for messages that do not belong here.
    pub async fn next(&mut self) -> Result<Option<ReplicationMessage>, WireError> {
        const EXPECTED: &str = "CopyData or CopyDone";
        if self.server_done {
            return Ok(None);
        }
        loop {
            let Some(message) = self.connection.framed.recv().await? else {
                return Err(WireError::Io {
                    context: "reading the replication stream".into(),
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection without ending the copy (walsender \
                         stopped, e.g. by wal_sender_timeout or a server shutdown)",
                    ),
                });
            };
            match message {
                Backend::Message(Message::CopyData(body)) => {
                    return parse_copy_data(body.into_bytes()).map(Some);
                }
                Backend::Message(Message::CopyDone) => {
                    self.server_done = true;
                    return Ok(None);
                }
                // The server left copy mode without a CopyDone. PostgreSQL 15 does this when a
                // second logical START_REPLICATION runs on the same connection (its copy-done
                // flags are only reset for physical replication): the stream is over.
                Backend::Message(Message::CommandComplete(_)) => {
                    self.server_done = true;
                    return Ok(None);
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(server_error(body.fields()));
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(body.fields()),
                Backend::Message(Message::ParameterStatus(body)) => {
                    self.connection.record_parameter(&body)?;
                }
                other => return Err(unexpected(&other, EXPECTED)),
            }
        }
    }

    /// Sends a standby status update stamped with the current time.
    ///
    /// `write`, `flush` and `apply` are the positions received, durably stored and applied by
    /// the client; the server treats `flush` as confirmed (`confirmed_flush_lsn`) and may recycle
    /// WAL before it, so never report more than is safely stored. With `reply_requested` the
    /// server answers at once with a keepalive.
    ///
    /// A cancelled call leaves the unsent rest of the message buffered; the next send completes
    /// it first, so the byte stream stays intact.
    pub async fn send_status_update(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), WireError> {
        if self.client_done {
            return Err(WireError::InvalidInput(
                "status update after the stream was ended".into(),
            ));
        }
        let payload =
            encode_standby_status_update(write, flush, apply, pg_now_micros(), reply_requested);
        self.connection
            .framed
            .send(|buf| {
                frontend::CopyData::new(&payload[..])?.write(buf);
                Ok(())
            })
            .await
    }

    /// Ends the copy (CopyDone) and waits until the server has ended it too and is ready for
    /// commands again, discarding data still in flight; returns the connection, e.g. to drop
    /// the slot or start again with other options.
    ///
    /// Anything not yet confirmed with a status update is sent again by the next
    /// `START_REPLICATION` on the slot. Bound it with `tokio::time::timeout` if the server might
    /// not answer.
    pub async fn stop(mut self) -> Result<ReplicationConnection, WireError> {
        const EXPECTED: &str = "the end of the replication command";
        if !self.client_done {
            self.connection
                .framed
                .send(|buf| {
                    frontend::copy_done(buf);
                    Ok(())
                })
                .await?;
            self.client_done = true;
        }
        let mut failure = None;
        let mut discarded = 0usize;
        loop {
            let Some(message) = self.connection.framed.recv().await? else {
                // A FATAL error is followed by the server hanging up: report the error.
                return Err(failure.unwrap_or_else(|| WireError::Io {
                    context: format!("waiting for {EXPECTED}"),
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ),
                }));
            };
            match message {
                Backend::Message(Message::CopyData(_)) => discarded += 1,
                Backend::Message(Message::CopyDone) => self.server_done = true,
                Backend::Message(Message::CommandComplete(_)) => {}
                Backend::Message(Message::NoticeResponse(body)) => log_notice(body.fields()),
                Backend::Message(Message::ParameterStatus(body)) => {
                    self.connection.record_parameter(&body)?;
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    failure.get_or_insert(server_error(body.fields()));
                }
                Backend::Message(Message::ReadyForQuery(_)) => {
                    tracing::debug!(discarded, "replication stream ended");
                    return match failure {
                        Some(e) => Err(e),
                        None => Ok(self.connection),
                    };
                }
                other => return Err(unexpected(&other, EXPECTED)),
            }
        }
    }

    /// Ends the copy like [`stop`](Self::stop), then closes the connection (Terminate).
    pub async fn finish(self) -> Result<(), WireError> {
        self.stop().await?.close().await
    }

    /// The process id of the server's walsender, as in `pg_stat_replication.pid`.
    pub fn backend_pid(&self) -> Option<i32> {
        self.connection.backend_pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xlog_data(wal_start: u64, wal_end: u64, send_time: i64, data: &[u8]) -> Vec<u8> {
        let mut out = vec![b'w'];
        out.extend_from_slice(&wal_start.to_be_bytes());
        out.extend_from_slice(&wal_end.to_be_bytes());
        out.extend_from_slice(&send_time.to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_xlog_data() {
        let payload = xlog_data(0x16_B374_D848, 0x16_B374_D900, 1_234_567, b"BEGIN");
        assert_eq!(
            parse_copy_data(Bytes::from(payload)).unwrap(),
            ReplicationMessage::XLogData {
                wal_start: 0x16_B374_D848,
                wal_end: 0x16_B374_D900,
                send_time: 1_234_567,
                data: Bytes::from_static(b"BEGIN"),
            }
        );
    }

    #[test]
    fn parses_xlog_data_with_empty_data_and_negative_time() {
        let payload = xlog_data(1, 2, -5, b"");
        assert_eq!(
            parse_copy_data(Bytes::from(payload)).unwrap(),
            ReplicationMessage::XLogData {
                wal_start: 1,
                wal_end: 2,
                send_time: -5,
                data: Bytes::new(),
            }
        );
    }

    #[test]
    fn parses_keepalive_from_literal_bytes() {
        let payload: &[u8] = &[
            b'k', //
            0, 0, 0, 0x16, 0xB3, 0x74, 0xD8, 0x48, // wal_end
            0, 0, 0, 0, 0, 0, 0x01, 0x00, // send_time 256
            1,    // reply requested
        ];
        assert_eq!(
            parse_copy_data(Bytes::copy_from_slice(payload)).unwrap(),
            ReplicationMessage::PrimaryKeepAlive {
                wal_end: 0x16_B374_D848,
                send_time: 256,
                reply_requested: true,
            }
        );
        let mut no_reply = payload.to_vec();
        no_reply[17] = 0;
        assert!(matches!(
            parse_copy_data(Bytes::from(no_reply)).unwrap(),
            ReplicationMessage::PrimaryKeepAlive {
                reply_requested: false,
                ..
            }
        ));
    }

    fn protocol_error(payload: Vec<u8>) -> String {
        match parse_copy_data(Bytes::from(payload)) {
            Err(WireError::Protocol(message)) => message,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn truncated_and_unknown_payloads_are_errors() {
        assert!(protocol_error(vec![]).contains("empty"));
        let full = xlog_data(1, 2, 3, b"");
        for len in 1..full.len() {
            assert!(
                protocol_error(full[..len].to_vec()).contains("truncated XLogData"),
                "len {len}"
            );
        }
        let keepalive = [b'k'; PRIMARY_KEEPALIVE_LEN];
        for len in 1..PRIMARY_KEEPALIVE_LEN {
            assert!(protocol_error(keepalive[..len].to_vec()).contains("keepalive"));
        }
        let mut long = keepalive.to_vec();
        long.push(0);
        assert!(protocol_error(long).contains("keepalive"));
        let unknown = protocol_error(vec![b'x', 0, 0]);
        assert!(unknown.contains("'x'"), "{unknown}");
        assert!(protocol_error(vec![0x00]).contains("0x00"));
    }

    #[test]
    fn any_bytes_give_a_result_not_a_panic() {
        // A cheap exhaustive sweep over short inputs with every tag byte.
        for tag in 0..=u8::MAX {
            for len in 0..40 {
                let mut payload = vec![0xA5; len];
                if let Some(first) = payload.first_mut() {
                    *first = tag;
                }
                let _ = parse_copy_data(Bytes::from(payload));
            }
        }
    }

    #[test]
    fn encodes_status_update_bytes() {
        let bytes = encode_standby_status_update(
            0x0000_0001_0000_0002,
            0x0000_0003_0000_0004,
            0x0000_0005_0000_0006,
            0x0102_0304_0506_0708,
            true,
        );
        let expected: [u8; 34] = [
            b'r', //
            0, 0, 0, 1, 0, 0, 0, 2, // write
            0, 0, 0, 3, 0, 0, 0, 4, // flush
            0, 0, 0, 5, 0, 0, 0, 6, // apply
            1, 2, 3, 4, 5, 6, 7, 8, // client time
            1, // reply requested
        ];
        assert_eq!(bytes, expected);
        assert_eq!(encode_standby_status_update(0, 0, 0, 0, false)[33], 0);
    }

    #[test]
    fn status_update_goes_out_as_copy_data() {
        let payload = encode_standby_status_update(1, 2, 3, 4, false);
        let mut buf = bytes::BytesMut::new();
        frontend::CopyData::new(&payload[..])
            .unwrap()
            .write(&mut buf);
        assert_eq!(buf[0], b'd');
        assert_eq!(&buf[1..5], &(4 + 34i32).to_be_bytes());
        assert_eq!(&buf[5..], &payload[..]);
    }
}
