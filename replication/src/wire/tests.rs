//! The client against a scripted fake server on a socket pair: authentication exchanges, error
//! fields, simple queries and the CopyBoth stream, byte for byte, including cases a real server
//! does not produce on demand (split frames, hostile messages).

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::framing::{Framed, Transport};
use super::*;

struct FakeServer {
    socket: UnixStream,
    buf: BytesMut,
}

impl FakeServer {
    async fn fill(&mut self, want: usize) {
        while self.buf.len() < want {
            let read = self.socket.read_buf(&mut self.buf).await.unwrap();
            assert!(read > 0, "client hung up");
        }
    }

    /// The startup message's parameters.
    async fn startup(&mut self) -> Vec<(String, String)> {
        self.fill(4).await;
        let len = usize::try_from(u32::from_be_bytes(self.buf[..4].try_into().unwrap())).unwrap();
        self.fill(len).await;
        let mut body = self.buf.split_to(len);
        body.advance(4);
        assert_eq!(body.get_i32(), 0x0003_0000, "protocol 3.0");
        let mut parts: Vec<String> = body[..]
            .split(|b| *b == 0)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        // Trailing terminator and the empty string after it.
        assert_eq!(parts.pop().as_deref(), Some(""));
        assert_eq!(parts.pop().as_deref(), Some(""));
        parts
            .chunks(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect()
    }

    async fn message(&mut self) -> (u8, Vec<u8>) {
        self.fill(5).await;
        let len = usize::try_from(u32::from_be_bytes(self.buf[1..5].try_into().unwrap())).unwrap();
        self.fill(len + 1).await;
        let frame = self.buf.split_to(len + 1);
        (frame[0], frame[5..].to_vec())
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.unwrap();
    }

    async fn ready(&mut self) {
        let mut out = Vec::new();
        out.extend(auth(0, &[]));
        out.extend(parameter_status("server_version", "15.99"));
        out.extend(message(b'K', &[0, 0, 0x30, 0x39, 0, 0, 0, 7]));
        out.extend(ready_for_query());
        self.send(&out).await;
    }

    async fn expect_eof(&mut self) {
        let read = self.socket.read_buf(&mut self.buf).await.unwrap();
        assert_eq!(read, 0, "expected the client to hang up");
    }
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn auth(code: i32, extra: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(extra);
    message(b'R', &body)
}

fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name);
    cstr(&mut body, value);
    message(b'S', &body)
}

fn ready_for_query() -> Vec<u8> {
    message(b'Z', b"I")
}

fn error_fields(tag: u8, fields: &[(u8, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (code, value) in fields {
        body.push(*code);
        cstr(&mut body, value);
    }
    body.push(0);
    message(tag, &body)
}

fn row_description(names: &[&str]) -> Vec<u8> {
    let mut body = u16::try_from(names.len()).unwrap().to_be_bytes().to_vec();
    for name in names {
        cstr(&mut body, name);
        body.extend_from_slice(&0u32.to_be_bytes()); // table oid
        body.extend_from_slice(&0i16.to_be_bytes()); // column number
        body.extend_from_slice(&25u32.to_be_bytes()); // text
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
    }
    message(b'T', &body)
}

fn data_row(values: &[Option<&str>]) -> Vec<u8> {
    let mut body = u16::try_from(values.len()).unwrap().to_be_bytes().to_vec();
    for value in values {
        match value {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                body.extend_from_slice(v.as_bytes());
            }
        }
    }
    message(b'D', &body)
}

fn command_complete(tag: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, tag);
    message(b'C', &body)
}

fn copy_data(payload: &[u8]) -> Vec<u8> {
    message(b'd', payload)
}

fn xlog_data(wal_start: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = vec![b'w'];
    payload.extend_from_slice(&wal_start.to_be_bytes());
    payload.extend_from_slice(&wal_start.to_be_bytes());
    payload.extend_from_slice(&42i64.to_be_bytes());
    payload.extend_from_slice(data);
    copy_data(&payload)
}

fn config(url: &str) -> ReplicationConfig {
    ReplicationConfig::from_url(url).unwrap()
}

fn with_password() -> ReplicationConfig {
    config("postgresql://alice:secret@/shop?host=/nowhere&application_name=cdc-test")
}

/// Runs the client's handshake against `server`, concurrently; the server's socket stays open
/// until both sides are done.
async fn handshake<F, Fut>(
    config: ReplicationConfig,
    server: F,
) -> Result<ReplicationConnection, WireError>
where
    F: FnOnce(FakeServer) -> Fut,
    Fut: std::future::Future<Output = FakeServer>,
{
    let (client, server_socket) = UnixStream::pair().unwrap();
    let fake = FakeServer {
        socket: server_socket,
        buf: BytesMut::new(),
    };
    let (result, _server) = tokio::join!(
        ReplicationConnection::handshake(Framed::new(Transport::Unix(client)), &config),
        server(fake)
    );
    result
}

/// A connected client and the fake server it talks to.
async fn connected() -> (ReplicationConnection, FakeServer) {
    let (client, server_socket) = UnixStream::pair().unwrap();
    let mut fake = FakeServer {
        socket: server_socket,
        buf: BytesMut::new(),
    };
    let config = with_password();
    let server = async {
        fake.startup().await;
        fake.ready().await;
    };
    let (connection, ()) = tokio::join!(
        ReplicationConnection::handshake(Framed::new(Transport::Unix(client)), &config),
        server
    );
    (connection.unwrap(), fake)
}

#[tokio::test]
async fn startup_sends_replication_database_and_collects_parameters() {
    let (client, server_socket) = UnixStream::pair().unwrap();
    let mut fake = FakeServer {
        socket: server_socket,
        buf: BytesMut::new(),
    };
    let config = with_password().with_options("-c wal_sender_timeout=5s");
    let server = async {
        let params = fake.startup().await;
        fake.ready().await;
        params
    };
    let (connection, params) = tokio::join!(
        ReplicationConnection::handshake(Framed::new(Transport::Unix(client)), &config),
        server
    );
    let connection = connection.unwrap();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("user"), Some("alice"));
    assert_eq!(get("database"), Some("shop"));
    assert_eq!(get("replication"), Some("database"));
    assert_eq!(get("application_name"), Some("cdc-test"));
    assert_eq!(get("client_encoding"), Some("UTF8"));
    assert_eq!(get("options"), Some("-c wal_sender_timeout=5s"));
    assert_eq!(connection.parameter("server_version"), Some("15.99"));
    assert_eq!(connection.backend_pid(), Some(12345));
}

#[tokio::test]
async fn cleartext_password() {
    let connection = handshake(with_password(), |mut s| async move {
        s.startup().await;
        s.send(&auth(3, &[])).await;
        assert_eq!(s.message().await, (b'p', b"secret\0".to_vec()));
        s.ready().await;
        s
    })
    .await;
    assert!(connection.is_ok(), "{connection:?}");
}

#[tokio::test]
async fn md5_password() {
    let salt = [1, 2, 3, 4];
    let connection = handshake(with_password(), |mut s| async move {
        s.startup().await;
        s.send(&auth(5, &salt)).await;
        let (tag, body) = s.message().await;
        assert_eq!(tag, b'p');
        let expected = postgres_protocol::authentication::md5_hash(b"alice", b"secret", salt);
        assert_eq!(body, [expected.as_bytes(), b"\0"].concat());
        assert!(expected.starts_with("md5") && expected.len() == 35);
        s.ready().await;
        s
    })
    .await;
    assert!(connection.is_ok(), "{connection:?}");
}

#[tokio::test]
async fn scram_starts_without_channel_binding_and_reports_a_rejection() {
    let result = handshake(with_password(), |mut s| async move {
        s.startup().await;
        let mut mechanisms = Vec::new();
        cstr(&mut mechanisms, "SCRAM-SHA-256-PLUS");
        cstr(&mut mechanisms, "SCRAM-SHA-256");
        mechanisms.push(0);
        s.send(&auth(10, &mechanisms)).await;
        let (tag, body) = s.message().await;
        assert_eq!(tag, b'p');
        let (mechanism, rest) = body.split_at(body.iter().position(|b| *b == 0).unwrap());
        assert_eq!(mechanism, b"SCRAM-SHA-256");
        let len = usize::try_from(i32::from_be_bytes(rest[1..5].try_into().unwrap())).unwrap();
        let client_first = std::str::from_utf8(&rest[5..]).unwrap();
        assert_eq!(client_first.len(), len);
        // GS2 header "n,,": no channel binding, as there is no TLS.
        assert!(client_first.starts_with("n,,n=,r="), "{client_first}");
        s.send(&error_fields(
            b'E',
            &[
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "28P01"),
                (b'M', "password authentication failed for user \"alice\""),
            ],
        ))
        .await;
        s
    })
    .await;
    match result {
        Err(WireError::Server { code, severity, .. }) => {
            assert_eq!(code, "28P01");
            assert_eq!(severity, "FATAL");
        }
        other => panic!("expected the server's error, got {other:?}"),
    }
}

#[tokio::test]
async fn scram_rejects_a_bogus_server_first_message() {
    let result = handshake(with_password(), |mut s| async move {
        s.startup().await;
        let mut mechanisms = Vec::new();
        cstr(&mut mechanisms, "SCRAM-SHA-256");
        mechanisms.push(0);
        s.send(&auth(10, &mechanisms)).await;
        s.message().await;
        // A nonce that does not extend the client's must be refused.
        s.send(&auth(11, b"r=not-your-nonce,s=QSXCR+Q6sek8bf92,i=4096"))
            .await;
        s
    })
    .await;
    assert!(
        matches!(&result, Err(WireError::Protocol(m)) if m.contains("SCRAM")),
        "{result:?}"
    );
}

#[tokio::test]
async fn unsupported_and_impossible_authentication() {
    let result = handshake(with_password(), |mut s| async move {
        s.startup().await;
        s.send(&auth(7, &[])).await;
        s
    })
    .await;
    assert!(
        matches!(&result, Err(WireError::UnsupportedAuth(m)) if m == "GSSAPI"),
        "{result:?}"
    );

    let result = handshake(with_password(), |mut s| async move {
        s.startup().await;
        let mut mechanisms = Vec::new();
        cstr(&mut mechanisms, "SCRAM-SHA-256-PLUS");
        mechanisms.push(0);
        s.send(&auth(10, &mechanisms)).await;
        s
    })
    .await;
    assert!(
        matches!(&result, Err(WireError::UnsupportedAuth(m)) if m.contains("SCRAM-SHA-256-PLUS")),
        "{result:?}"
    );

    let no_password = config("postgresql://alice@/shop?host=/nowhere");
    let result = handshake(no_password, |mut s| async move {
        s.startup().await;
        s.send(&auth(3, &[])).await;
        s
    })
    .await;
    assert!(
        matches!(&result, Err(WireError::Config(m)) if m.contains("password")),
        "{result:?}"
    );

    let result = handshake(with_password(), |mut s| async move {
        s.startup().await;
        s.send(&auth(99, &[])).await;
        s
    })
    .await;
    assert!(matches!(&result, Err(WireError::Protocol(_))), "{result:?}");
}

#[tokio::test]
async fn server_error_fields_are_parsed() {
    let result = handshake(with_password(), |mut s| async move {
        s.startup().await;
        s.send(&error_fields(
            b'E',
            &[
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "3D000"),
                (b'M', "database \"shop\" does not exist"),
                (b'D', "some detail"),
                (b'H', "some hint"),
                (b'R', "InitPostgres"),
            ],
        ))
        .await;
        s
    })
    .await;
    match result {
        Err(e @ WireError::Server { .. }) => {
            assert_eq!(e.code(), Some("3D000"));
            assert_eq!(
                e.to_string(),
                "server FATAL 3D000: database \"shop\" does not exist (some detail)"
            );
            let WireError::Server { detail, hint, .. } = e else {
                unreachable!()
            };
            assert_eq!(detail.as_deref(), Some("some detail"));
            assert_eq!(hint.as_deref(), Some("some hint"));
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn server_hanging_up_during_startup_is_an_io_error() {
    let (client, server_socket) = UnixStream::pair().unwrap();
    drop(server_socket);
    let result =
        ReplicationConnection::handshake(Framed::new(Transport::Unix(client)), &with_password())
            .await;
    assert!(matches!(result, Err(WireError::Io { .. })), "{result:?}");
}

#[tokio::test]
async fn simple_query_rows_nulls_notices_and_errors() {
    let (mut connection, mut server) = connected().await;
    let server_task = tokio::spawn(async move {
        assert_eq!(
            server.message().await,
            (b'Q', b"SELECT 1 AS a, NULL AS b\0".to_vec())
        );
        let mut out = Vec::new();
        out.extend(row_description(&["a", "b"]));
        out.extend(error_fields(
            b'N',
            &[(b'S', "NOTICE"), (b'C', "00000"), (b'M', "hi")],
        ));
        out.extend(data_row(&[Some("1"), None]));
        out.extend(data_row(&[Some("ü"), Some("")]));
        out.extend(command_complete("SELECT 2"));
        out.extend(ready_for_query());
        server.send(&out).await;

        assert_eq!(server.message().await.0, b'Q');
        let mut out = error_fields(
            b'E',
            &[
                (b'S', "ERROR"),
                (b'V', "ERROR"),
                (b'C', "22012"),
                (b'M', "division by zero"),
            ],
        );
        out.extend(ready_for_query());
        server.send(&out).await;

        assert_eq!(server.message().await, (b'Q', b"\0".to_vec()));
        let mut out = message(b'I', &[]);
        out.extend(ready_for_query());
        server.send(&out).await;
        server
    });

    let rows = connection
        .simple_query("SELECT 1 AS a, NULL AS b")
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].columns(), ["a", "b"]);
    assert_eq!(rows[0].values(), [Some("1".to_string()), None]);
    assert_eq!(rows[1].get("a"), Some("ü"));
    assert_eq!(rows[1].get("b"), Some(""));

    let err = connection.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code(), Some("22012"));

    assert!(connection.simple_query("").await.unwrap().is_empty());
    server_task.await.unwrap();
}

#[tokio::test]
async fn simple_query_refuses_copy_and_bad_input() {
    let (mut connection, mut server) = connected().await;
    let err = connection.simple_query("SELECT '\0'").await.unwrap_err();
    assert!(matches!(err, WireError::InvalidInput(_)), "{err:?}");
    let server_task = tokio::spawn(async move {
        assert_eq!(server.message().await.0, b'Q');
        server.send(&message(b'W', &[0, 0, 0])).await;
        server
    });
    let err = connection
        .simple_query("START_REPLICATION ...")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WireError::Protocol(m) if m.contains("COPY")),
        "{err:?}"
    );
    server_task.await.unwrap();
}

async fn started() -> (ReplicationStream, FakeServer) {
    let (connection, mut server) = connected().await;
    let server_task = tokio::spawn(async move {
        let (tag, body) = server.message().await;
        assert_eq!(tag, b'Q');
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/10 (\"proto_version\" '1')\0"
        );
        server.send(&message(b'W', &[0, 0, 0])).await;
        server
    });
    let stream = connection
        .start_logical_replication("s", 0x10, &[("proto_version", "1")])
        .await
        .unwrap();
    (stream, server_task.await.unwrap())
}

#[tokio::test]
async fn stream_survives_cancellation_mid_frame() {
    let (mut stream, mut server) = started().await;
    let frame = xlog_data(0x20, b"BEGIN-ish payload");
    // Deliver the frame a few bytes at a time; every read attempt in between is cancelled by a
    // short timeout, as a losing `select!` branch would be.
    for chunk in frame.chunks(3) {
        let pending = tokio::time::timeout(Duration::from_millis(5), stream.next()).await;
        assert!(pending.is_err(), "no message before the frame is complete");
        server.send(chunk).await;
    }
    let message = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        message,
        Some(ReplicationMessage::XLogData {
            wal_start: 0x20,
            wal_end: 0x20,
            send_time: 42,
            data: bytes::Bytes::from_static(b"BEGIN-ish payload"),
        })
    );
}

#[tokio::test]
async fn keepalive_status_update_and_clean_finish() {
    let (mut stream, mut server) = started().await;
    let mut keepalive = vec![b'k'];
    keepalive.extend_from_slice(&0x30u64.to_be_bytes());
    keepalive.extend_from_slice(&7i64.to_be_bytes());
    keepalive.push(1);
    let mut out = error_fields(b'N', &[(b'S', "NOTICE"), (b'M', "noise")]);
    out.extend(parameter_status("application_name", "x"));
    out.extend(copy_data(&keepalive));
    server.send(&out).await;
    assert_eq!(
        stream.next().await.unwrap(),
        Some(ReplicationMessage::PrimaryKeepAlive {
            wal_end: 0x30,
            send_time: 7,
            reply_requested: true
        })
    );

    let before = pg_now_micros();
    stream
        .send_status_update(0x30, 0x20, 0x10, true)
        .await
        .unwrap();
    let (tag, payload) = server.message().await;
    assert_eq!(tag, b'd');
    assert_eq!(payload.len(), 34);
    assert_eq!(payload[0], b'r');
    assert_eq!(&payload[1..9], &0x30u64.to_be_bytes());
    assert_eq!(&payload[9..17], &0x20u64.to_be_bytes());
    assert_eq!(&payload[17..25], &0x10u64.to_be_bytes());
    let sent_at = i64::from_be_bytes(payload[25..33].try_into().unwrap());
    assert!(sent_at >= before && sent_at <= pg_now_micros(), "{sent_at}");
    assert_eq!(payload[33], 1);

    let server_task = tokio::spawn(async move {
        assert_eq!(server.message().await, (b'c', vec![]));
        let mut out = xlog_data(0x40, b"in flight");
        out.extend(message(b'c', &[]));
        out.extend(command_complete("COPY 0"));
        out.extend(ready_for_query());
        server.send(&out).await;
        assert_eq!(server.message().await, (b'X', vec![]));
        server.expect_eof().await;
    });
    stream.finish().await.unwrap();
    server_task.await.unwrap();
}

#[tokio::test]
async fn server_copy_done_ends_the_stream_and_stop_returns_the_connection() {
    let (mut stream, mut server) = started().await;
    server.send(&message(b'c', &[])).await;
    assert_eq!(stream.next().await.unwrap(), None);
    assert_eq!(stream.next().await.unwrap(), None, "stays ended");
    let server_task = tokio::spawn(async move {
        assert_eq!(server.message().await, (b'c', vec![]));
        let mut out = command_complete("COPY 0");
        out.extend(ready_for_query());
        server.send(&out).await;
        assert_eq!(server.message().await.0, b'Q');
        let mut out = row_description(&["x"]);
        out.extend(data_row(&[Some("1")]));
        out.extend(command_complete("SELECT 1"));
        out.extend(ready_for_query());
        server.send(&out).await;
    });
    let mut connection = stream.stop().await.unwrap();
    let rows = connection.simple_query("SELECT 1 AS x").await.unwrap();
    assert_eq!(rows[0].get("x"), Some("1"));
    server_task.await.unwrap();
}

#[tokio::test]
async fn stream_errors() {
    let (mut stream, mut server) = started().await;
    server
        .send(&error_fields(
            b'E',
            &[(b'V', "ERROR"), (b'C', "55000"), (b'M', "slot gone")],
        ))
        .await;
    assert_eq!(stream.next().await.unwrap_err().code(), Some("55000"));

    let (mut stream, mut server) = started().await;
    server.send(&ready_for_query()).await;
    let err = stream.next().await.unwrap_err();
    assert!(
        matches!(&err, WireError::Protocol(m) if m.contains("ReadyForQuery") && m.contains("CopyData")),
        "{err:?}"
    );

    let (mut stream, mut server) = started().await;
    server.send(&copy_data(b"?junk")).await;
    let err = stream.next().await.unwrap_err();
    assert!(
        matches!(&err, WireError::Protocol(m) if m.contains("'?'")),
        "{err:?}"
    );

    let (mut stream, mut server) = started().await;
    server.send(&message(b'!', b"")).await;
    let err = stream.next().await.unwrap_err();
    assert!(
        matches!(&err, WireError::Protocol(m) if m.contains("'!'")),
        "{err:?}"
    );

    let (mut stream, server) = started().await;
    drop(server);
    let err = stream.next().await.unwrap_err();
    assert!(
        matches!(&err, WireError::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof),
        "{err:?}"
    );

    let (mut stream, mut server) = started().await;
    let frame = xlog_data(1, b"cut short");
    server.send(&frame[..frame.len() - 2]).await;
    drop(server);
    let err = stream.next().await.unwrap_err();
    assert!(
        matches!(&err, WireError::Io { source, .. } if source.to_string().contains("middle of a message")),
        "{err:?}"
    );

    let (mut stream, mut server) = started().await;
    // A length below the minimum of 4 cannot be framed.
    server.send(&[b'd', 0, 0, 0, 2]).await;
    let err = stream.next().await.unwrap_err();
    assert!(matches!(&err, WireError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn a_huge_declared_length_does_not_allocate_up_front() {
    let (mut stream, mut server) = started().await;
    // Declares ~2 GiB but sends a few bytes: next() must wait for more, not allocate 2 GiB.
    server.send(&[b'd', 0x7F, 0xFF, 0xFF, 0xF0, b'w']).await;
    let pending = tokio::time::timeout(Duration::from_millis(20), stream.next()).await;
    assert!(pending.is_err());
}

#[tokio::test]
async fn command_complete_without_copy_done_ends_the_stream() {
    let (mut stream, mut server) = started().await;
    let mut out = command_complete("COPY 0");
    out.extend(command_complete("START_REPLICATION"));
    out.extend(ready_for_query());
    server.send(&out).await;
    assert_eq!(stream.next().await.unwrap(), None);
    let server_task = tokio::spawn(async move {
        // Outside copy mode the server ignores a CopyDone, so sending one is harmless.
        assert_eq!(server.message().await, (b'c', vec![]));
        server
    });
    let connection = stream.stop().await.unwrap();
    drop(connection);
    server_task.await.unwrap();
}

#[tokio::test]
async fn messages_kept_alive_share_read_buffers_however_small_each_read() {
    // One message per read, every message kept (as decoded rows are until their batch is
    // written). Reserving before every read used to give each read a fresh 64 KiB buffer, so a
    // large transaction held one buffer per read: hundreds of MB, and a page fault per read.
    let (mut stream, mut server) = started().await;
    const MESSAGES: u64 = 2_000;
    let payload = [7u8; 100];
    let mut kept = Vec::new();
    for i in 0..MESSAGES {
        server.send(&xlog_data(i, &payload)).await;
        match stream.next().await.unwrap() {
            Some(ReplicationMessage::XLogData { data, .. }) => kept.push(data),
            other => panic!("expected XLogData, got {other:?}"),
        }
    }
    // Buffers in use: count each payload that does not sit right after the one before it in the
    // same allocation (the CopyData and XLogData headers, 5 + 25 bytes, apart).
    let frame = 5 + 25;
    let buffers = 1 + kept
        .windows(2)
        .filter(|w| w[1].as_ptr() as usize != w[0].as_ptr() as usize + payload.len() + frame)
        .count();
    let bytes = MESSAGES as usize * (payload.len() + frame);
    assert!(
        buffers <= bytes / (56 * 1024) + 2,
        "{MESSAGES} messages of {} bytes were read into {buffers} buffers",
        payload.len() + frame
    );
}
