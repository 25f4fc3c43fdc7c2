//! Socket, buffers and message framing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorFields, Header, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::WireError;

/// CopyBothResponse, which `postgres-protocol`'s `Message::parse` does not know.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';
/// Smallest read: enough for many small messages (keepalives, rows) per system call.
const MIN_READ: usize = 64 * 1024;
/// Largest single reservation ahead of data actually arriving, so a corrupt or hostile length
/// field cannot make us allocate gigabytes up front; large frames grow in steps as bytes arrive.
const MAX_RESERVE: usize = 1024 * 1024;
/// Spare room worth reading into without a new buffer.
const MIN_SPARE: usize = 8 * 1024;

/// How much to reserve before the next read, when the buffer has `spare` bytes of room and the
/// frame being read needs `missing` more: nothing while the room left will do.
///
/// Messages are split off the buffer and kept (a row's values point into it until its batch is
/// written), so the buffer is shared and a reservation allocates a new one. Reserving before
/// every read would start a fresh 64 KiB buffer for each read, however little it returned, and
/// each of those stays alive for the few rows it holds: a million-row transaction then held
/// hundreds of MB and page-faulted fresh memory on every read.
fn reservation(spare: usize, missing: usize) -> usize {
    if spare >= missing.max(MIN_SPARE) {
        0
    } else {
        missing.clamp(MIN_READ, MAX_RESERVE)
    }
}

/// The socket under a connection. An enum rather than a boxed trait object, so a plaintext
/// connection reads straight from its socket; the TLS session is boxed (a rustls session is a
/// few kilobytes) and decrypts into the same read buffer.
pub(crate) enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<pgtls::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Transport::Unix(s) => f.debug_tuple("Unix").field(s).finish(),
            Transport::Tls(s) => f.debug_tuple("Tls").field(s.get_ref().0).finish(),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// A backend message: what `postgres-protocol` parses, plus CopyBothResponse.
pub(crate) enum Backend {
    Message(Message),
    CopyBothResponse,
}

impl Backend {
    /// A name for error messages (`Message` has no `Debug`).
    pub(crate) fn name(&self) -> &'static str {
        let Backend::Message(message) = self else {
            return "CopyBothResponse";
        };
        match message {
            Message::AuthenticationCleartextPassword => "AuthenticationCleartextPassword",
            Message::AuthenticationGss => "AuthenticationGSS",
            Message::AuthenticationKerberosV5 => "AuthenticationKerberosV5",
            Message::AuthenticationMd5Password(_) => "AuthenticationMD5Password",
            Message::AuthenticationOk => "AuthenticationOk",
            Message::AuthenticationScmCredential => "AuthenticationSCMCredential",
            Message::AuthenticationSspi => "AuthenticationSSPI",
            Message::AuthenticationGssContinue(_) => "AuthenticationGSSContinue",
            Message::AuthenticationSasl(_) => "AuthenticationSASL",
            Message::AuthenticationSaslContinue(_) => "AuthenticationSASLContinue",
            Message::AuthenticationSaslFinal(_) => "AuthenticationSASLFinal",
            Message::BackendKeyData(_) => "BackendKeyData",
            Message::BindComplete => "BindComplete",
            Message::CloseComplete => "CloseComplete",
            Message::CommandComplete(_) => "CommandComplete",
            Message::CopyData(_) => "CopyData",
            Message::CopyDone => "CopyDone",
            Message::CopyInResponse(_) => "CopyInResponse",
            Message::CopyOutResponse(_) => "CopyOutResponse",
            Message::DataRow(_) => "DataRow",
            Message::EmptyQueryResponse => "EmptyQueryResponse",
            Message::ErrorResponse(_) => "ErrorResponse",
            Message::NoData => "NoData",
            Message::NoticeResponse(_) => "NoticeResponse",
            Message::NotificationResponse(_) => "NotificationResponse",
            Message::ParameterDescription(_) => "ParameterDescription",
            Message::ParameterStatus(_) => "ParameterStatus",
            Message::ParseComplete => "ParseComplete",
            Message::PortalSuspended => "PortalSuspended",
            Message::ReadyForQuery(_) => "ReadyForQuery",
            Message::RowDescription(_) => "RowDescription",
            _ => "an unrecognised message",
        }
    }
}

/// The error for a message that has no business arriving now.
pub(crate) fn unexpected(got: &Backend, expected: &str) -> WireError {
    WireError::Protocol(format!(
        "the server sent {} while {expected} was expected",
        got.name()
    ))
}

/// A connection's socket with its read and write buffers.
///
/// Reading is cancel-safe: bytes are only ever appended to `read_buf` by a completed read, and a
/// frame leaves the buffer only when it is complete, so a future dropped at an `.await` (e.g. the
/// losing branch of `tokio::select!`) loses nothing. Writing keeps unsent bytes at the front of
/// `write_buf`, so a cancelled send is completed, in order, by the next one.
pub(crate) struct Framed {
    io: Transport,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl std::fmt::Debug for Framed {
    // Buffer contents can be megabytes of row data; their sizes are what helps when debugging.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framed")
            .field("io", &self.io)
            .field("buffered_in", &self.read_buf.len())
            .field("pending_out", &self.write_buf.len())
            .finish()
    }
}

impl Framed {
    pub(crate) fn new(io: Transport) -> Self {
        Framed {
            io,
            read_buf: BytesMut::with_capacity(MIN_READ),
            write_buf: BytesMut::new(),
        }
    }

    /// The next message, or `None` when the server closed the connection between messages.
    pub(crate) async fn recv(&mut self) -> Result<Option<Backend>, WireError> {
        loop {
            let missing = match self.parse_buffered()? {
                Parsed::Message(message) => return Ok(Some(message)),
                Parsed::Need(missing) => missing,
            };
            let spare = self.read_buf.capacity() - self.read_buf.len();
            self.read_buf.reserve(reservation(spare, missing));
            let read = self
                .io
                .read_buf(&mut self.read_buf)
                .await
                .map_err(WireError::io("reading from the server"))?;
            if read == 0 {
                if self.read_buf.is_empty() {
                    return Ok(None);
                }
                return Err(WireError::Io {
                    context: "reading from the server".into(),
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection in the middle of a message",
                    ),
                });
            }
        }
    }

    /// Like [`Framed::recv`], for places where the server may not hang up.
    pub(crate) async fn recv_expected(&mut self, expected: &str) -> Result<Backend, WireError> {
        self.recv().await?.ok_or_else(|| WireError::Io {
            context: format!("waiting for {expected}"),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ),
        })
    }

    fn parse_buffered(&mut self) -> Result<Parsed, WireError> {
        let header = Header::parse(&self.read_buf)
            .map_err(|e| WireError::Protocol(format!("bad message header from the server: {e}")))?;
        let Some(header) = header else {
            return Ok(Parsed::Need(5 - self.read_buf.len()));
        };
        // Header::parse has checked len >= 4, so the conversion cannot fail on any platform
        // with at least 32-bit usize; the tag byte is not counted in len.
        let frame_len = usize::try_from(header.len())
            .map_err(|_| WireError::Protocol("negative message length".into()))?
            + 1;
        if self.read_buf.len() < frame_len {
            return Ok(Parsed::Need(frame_len - self.read_buf.len()));
        }
        if header.tag() == COPY_BOTH_RESPONSE_TAG {
            let frame = self.read_buf.split_to(frame_len);
            check_copy_both_response(&frame[5..])?;
            return Ok(Parsed::Message(Backend::CopyBothResponse));
        }
        let tag = header.tag();
        match Message::parse(&mut self.read_buf) {
            Ok(Some(message)) => Ok(Parsed::Message(Backend::Message(message))),
            Ok(None) => Err(WireError::Protocol(
                "a complete message could not be parsed".into(),
            )),
            Err(e) => Err(WireError::Protocol(format!(
                "malformed or unknown message (tag {}) from the server: {e}",
                describe_byte(tag)
            ))),
        }
    }

    /// Encodes one or more messages with `encode` and sends them.
    pub(crate) async fn send(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> io::Result<()>,
    ) -> Result<(), WireError> {
        let mark = self.write_buf.len();
        if let Err(e) = encode(&mut self.write_buf) {
            // Half an encoded message would desynchronise the server.
            self.write_buf.truncate(mark);
            return Err(WireError::InvalidInput(format!(
                "cannot encode the message: {e}"
            )));
        }
        self.flush().await
    }

    pub(crate) async fn flush(&mut self) -> Result<(), WireError> {
        self.io
            .write_all_buf(&mut self.write_buf)
            .await
            .map_err(WireError::io("writing to the server"))?;
        self.io
            .flush()
            .await
            .map_err(WireError::io("writing to the server"))
    }

    pub(crate) async fn shutdown(&mut self) -> Result<(), WireError> {
        self.io
            .shutdown()
            .await
            .map_err(WireError::io("closing the connection"))
    }
}

enum Parsed {
    Message(Backend),
    /// At least this many more bytes are needed.
    Need(usize),
}

/// Validates a CopyBothResponse body (overall format, column count, per-column formats); the
/// values themselves are fixed for replication, so only the shape is worth checking.
fn check_copy_both_response(body: &[u8]) -> Result<(), WireError> {
    let malformed =
        || WireError::Protocol(format!("malformed CopyBothResponse ({} bytes)", body.len()));
    let [_format, c1, c2, formats @ ..] = body else {
        return Err(malformed());
    };
    let columns = usize::from(u16::from_be_bytes([*c1, *c2]));
    if formats.len() != columns * 2 {
        return Err(malformed());
    }
    Ok(())
}

/// A byte as a readable tag: `'w'` for printable ASCII, `0x07` otherwise.
pub(crate) fn describe_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("'{}' (0x{byte:02x})", byte as char)
    } else {
        format!("0x{byte:02x}")
    }
}

/// The fields of an ErrorResponse or NoticeResponse that matter to callers.
#[derive(Debug, Default)]
pub(crate) struct ServerFields {
    pub(crate) severity: String,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
    pub(crate) hint: Option<String>,
}

impl ServerFields {
    pub(crate) fn parse(mut fields: ErrorFields<'_>) -> Result<ServerFields, WireError> {
        let mut out = ServerFields::default();
        let mut localized_severity = None;
        while let Some(field) = fields
            .next()
            .map_err(|e| WireError::Protocol(format!("malformed error fields: {e}")))?
        {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'S' => localized_severity = Some(value),
                // The non-localized severity, sent since PostgreSQL 9.6, is the one to match on.
                b'V' => out.severity = value,
                b'C' => out.code = value,
                b'M' => out.message = value,
                b'D' => out.detail = Some(value),
                b'H' => out.hint = Some(value),
                _ => {}
            }
        }
        if out.severity.is_empty() {
            out.severity = localized_severity.unwrap_or_default();
        }
        Ok(out)
    }

    pub(crate) fn into_error(self) -> WireError {
        WireError::Server {
            severity: self.severity,
            code: self.code,
            message: self.message,
            detail: self.detail,
            hint: self.hint,
        }
    }
}

/// The error an ErrorResponse stands for.
pub(crate) fn server_error(fields: ErrorFields<'_>) -> WireError {
    match ServerFields::parse(fields) {
        Ok(fields) => fields.into_error(),
        Err(e) => e,
    }
}

/// Notices are informational (e.g. "slot created"); they go to the log, not to callers.
pub(crate) fn log_notice(fields: ErrorFields<'_>) {
    match ServerFields::parse(fields) {
        Ok(n) => tracing::info!(
            severity = %n.severity,
            code = %n.code,
            detail = n.detail.as_deref(),
            "server notice: {}",
            n.message
        ),
        Err(e) => tracing::warn!("unreadable server notice: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_both_response_shape() {
        assert!(check_copy_both_response(&[0, 0, 0]).is_ok());
        assert!(check_copy_both_response(&[0, 0, 1, 0, 0]).is_ok());
        assert!(check_copy_both_response(&[0, 0, 1]).is_err());
        assert!(check_copy_both_response(&[0, 0]).is_err());
        assert!(check_copy_both_response(&[]).is_err());
    }

    #[test]
    fn a_read_reuses_the_room_left_before_reserving() {
        const KIB: usize = 1024;
        // (spare room, bytes the frame still needs, reservation)
        let cases = [
            (60 * KIB, 5, 0),                            // plenty of room: read into it
            (MIN_SPARE, 5, 0),                           // just enough room
            (MIN_SPARE - 1, 5, MIN_READ),                // too little: a new buffer
            (0, 5, MIN_READ),                            // none
            (100 * KIB, 90 * KIB, 0),                    // a large frame that fits
            (64 * KIB, 90 * KIB, 90 * KIB),              // one that does not: room for all of it
            (0, 10 * 1024 * KIB, MAX_RESERVE),           // a huge one grows in steps
            (MAX_RESERVE, 10 * 1024 * KIB, MAX_RESERVE), // (a no-op for BytesMut)
        ];
        for (spare, missing, want) in cases {
            assert_eq!(
                reservation(spare, missing),
                want,
                "spare {spare}, missing {missing}"
            );
        }
    }

    #[test]
    fn bytes_are_described_readably() {
        assert_eq!(describe_byte(b'w'), "'w' (0x77)");
        assert_eq!(describe_byte(0), "0x00");
        assert_eq!(describe_byte(b' '), "0x20");
    }
}
