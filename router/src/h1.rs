//! HTTP/1.1 message framing for the data path (RFC 9112): parsing a head into offsets over its
//! own bytes, deciding how long the body that follows is, and finding the end of a chunked body
//! while its bytes pass through untouched.
//!
//! The proxy never rebuilds a message from a header map: it parses the head once (httparse, the
//! parser hyper uses), writes the head it forwards straight into an output buffer, and copies
//! bodies byte for byte. That is what lets one thread keep up with HAProxy (ADR 0007).

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// The largest head (start line and fields) accepted from a client or an upstream.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in one head.
pub const MAX_FIELDS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed message head: {0}")]
    Malformed(&'static str),
    #[error("the message head is larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("more than {MAX_FIELDS} header fields")]
    TooManyFields,
    #[error("the message framing is ambiguous or invalid: {0}")]
    Framing(&'static str),
    #[error("invalid Host: {0}")]
    Host(&'static str),
}

/// Fields that say how long a message is or where it goes. Every hop needs them, so no
/// `Connection` may name them as belonging to one hop: dropping a request's Content-Length while
/// its body passes on would let the body be read upstream as a second request.
const FRAMING_FIELDS: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// A parsed head: its bytes, and where each part lies in them.
#[derive(Debug, Clone)]
pub struct Head {
    bytes: Bytes,
    /// Request: the method. Response: unused.
    method: Range<usize>,
    /// Request: the target. Response: the reason phrase.
    target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Response status; 0 for requests.
    pub status: u16,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

fn offset(base: &[u8], part: &[u8]) -> Range<usize> {
    // Parts httparse takes from the buffer lie inside it: the difference of their addresses is
    // the offset. An empty part may be a static "" instead (httparse's answer for a missing
    // reason phrase, or one with obs-text), which is the empty range.
    let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= base.len() => start..end,
        _ => 0..0,
    }
}

fn map_parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyFields,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status"),
        httparse::Error::Token => HeadError::Malformed("invalid token"),
        httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
    }
}

/// How long the head at the front of `buf` is, from httparse's answer: `Ok(None)` while it is
/// incomplete (and may still fit).
fn head_length(
    parsed: Result<httparse::Status<usize>, httparse::Error>,
    buffered: usize,
) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buffered >= MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(map_parse_error(e)),
    }
}

/// Takes the head's `len` bytes off `buf`; the offsets were computed against `buf` as it was.
fn take_head(
    buf: &mut BytesMut,
    len: usize,
    start_line: (Range<usize>, Range<usize>),
    minor: u8,
    status: u16,
    fields: Vec<(Range<usize>, Range<usize>)>,
) -> Head {
    Head {
        bytes: buf.split_to(len).freeze(),
        method: start_line.0,
        target: start_line.1,
        minor,
        status,
        fields,
    }
}

fn field_offsets(
    base: &[u8],
    fields: &[httparse::Header<'_>],
) -> Vec<(Range<usize>, Range<usize>)> {
    fields
        .iter()
        .map(|f| (offset(base, f.name.as_bytes()), offset(base, f.value)))
        .collect()
}

/// Parses a request head from the front of `buf`: `Ok(None)` while it is incomplete; on success
/// the head's bytes are taken off `buf` (what follows is body or the next request).
pub fn parse_request(buf: &mut BytesMut) -> Result<Option<Head>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut storage);
    let Some(len) = head_length(req.parse(buf), buf.len())? else {
        return Ok(None);
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let base: &[u8] = buf;
    let start_line = (
        offset(base, method.as_bytes()),
        offset(base, target.as_bytes()),
    );
    let fields = field_offsets(base, req.headers);
    Ok(Some(take_head(buf, len, start_line, minor, 0, fields)))
}

/// Parses a response head from the front of `buf`, like [`parse_request`].
pub fn parse_response(buf: &mut BytesMut) -> Result<Option<Head>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut res = httparse::Response::new(&mut storage);
    let Some(len) = head_length(res.parse(buf), buf.len())? else {
        return Ok(None);
    };
    let (Some(status), Some(minor)) = (res.code, res.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    let base: &[u8] = buf;
    let reason = res
        .reason
        .map(|r| offset(base, r.as_bytes()))
        .unwrap_or(0..0);
    let fields = field_offsets(base, res.headers);
    Ok(Some(take_head(
        buf,
        len,
        (0..0, reason),
        minor,
        status,
        fields,
    )))
}

impl Head {
    /// A copy that shares nothing with the connection's read buffer, to keep past the
    /// exchange: two allocations, where owned fields would take two per field.
    pub fn detached(&self) -> Head {
        Head {
            bytes: Bytes::copy_from_slice(&self.bytes),
            method: self.method.clone(),
            target: self.target.clone(),
            minor: self.minor,
            status: self.status,
            fields: self.fields.clone(),
        }
    }

    fn text(&self, range: &Range<usize>) -> &str {
        // httparse checked these bytes are tokens or visible ASCII.
        std::str::from_utf8(&self.bytes[range.clone()]).unwrap_or("")
    }

    pub fn method(&self) -> &str {
        self.text(&self.method)
    }

    pub fn target(&self) -> &str {
        self.text(&self.target)
    }

    pub fn reason(&self) -> &[u8] {
        &self.bytes[self.target.clone()]
    }

    /// Every field in order, as (name, value). Names stay bytes: httparse checked they are
    /// tokens, and comparing bytes spares a UTF-8 check per field per lookup.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (&self.bytes[n.clone()], &self.bytes[v.clone()]))
    }

    /// Every value of the field `name` (case-insensitive).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name` as text, if it is valid UTF-8.
    pub fn get<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.values(name)
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn has(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// The comma-separated elements of every `name` field, trimmed, empty ones skipped.
    pub fn list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    /// Does `Connection` carry `token`?
    pub fn connection_has(&self, token: &str) -> bool {
        self.list("connection")
            .any(|t| t.eq_ignore_ascii_case(token))
    }

    /// Whether the sender wants the connection kept open after this message.
    pub fn keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.connection_has("keep-alive")
        } else {
            !self.connection_has("close")
        }
    }
}

/// Everything the router checks in a request head before acting on it: exactly one `Host` in
/// HTTP/1.1 (RFC 9112 §3.2; at most one in 1.0), no framing or routing field named in
/// `Connection`, and an unambiguous body length ([`request_framing`]).
pub fn check_request(head: &Head) -> Result<Framing, HeadError> {
    // One pass over the fields: this runs for every request.
    let mut hosts = 0;
    let mut names_framing = false;
    let (mut transfer_encoding, mut length) = (false, false);
    for (name, value) in head.fields() {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            length = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            if !is_authority(value) {
                return Err(HeadError::Host("the Host value is not a host and port"));
            }
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            names_framing |= value.split(|b| *b == b',').any(|token| {
                let token = token.trim_ascii();
                FRAMING_FIELDS
                    .iter()
                    .any(|f| f.as_bytes().eq_ignore_ascii_case(token))
            });
        }
    }
    match (hosts, head.minor) {
        (0, 1) => return Err(HeadError::Host("an HTTP/1.1 request needs a Host field")),
        (0 | 1, _) => {}
        _ => return Err(HeadError::Host("more than one Host field")),
    }
    if names_framing {
        return Err(HeadError::Framing(
            "connection names content-length, transfer-encoding or host",
        ));
    }
    framing_of(head, transfer_encoding, length)
}

/// Whether `value` can be a `Host` value (RFC 9110 §7.2: `uri-host [ ":" port ]`): the
/// characters of a registered name, an IP literal or a port. Not a list: a comma or a space
/// means two hosts to whoever reads it next.
fn is_authority(value: &[u8]) -> bool {
    value
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+;=:[]".contains(b))
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Only for responses: the body runs until the upstream closes the connection.
    UntilClose,
}

/// The body length of a request (RFC 9112 §6.3). Anything a second parser could read
/// differently is refused, so a request cannot smuggle another past us.
pub fn request_framing(head: &Head) -> Result<Framing, HeadError> {
    framing_of(
        head,
        head.has("transfer-encoding"),
        head.has("content-length"),
    )
}

/// [`request_framing`] for a head already known to carry (or not) each framing field.
fn framing_of(head: &Head, transfer_encoding: bool, length: bool) -> Result<Framing, HeadError> {
    if transfer_encoding {
        if head.minor == 0 {
            return Err(HeadError::Framing(
                "transfer-encoding in an HTTP/1.0 request",
            ));
        }
        if length {
            return Err(HeadError::Framing(
                "both transfer-encoding and content-length",
            ));
        }
        return match chunked_last(head)? {
            true => Ok(Framing::Chunked),
            false => Err(HeadError::Framing(
                "transfer-encoding does not end in chunked",
            )),
        };
    }
    if !length {
        return Ok(Framing::None);
    }
    match content_length(head)? {
        Some(0) | None => Ok(Framing::None),
        Some(n) => Ok(Framing::Length(n)),
    }
}

/// Whether the last transfer coding is chunked; chunked anywhere else, or twice, is an error
/// (RFC 9112 §6.1: it is applied once, last).
fn chunked_last(head: &Head) -> Result<bool, HeadError> {
    let mut codings = head.list("transfer-encoding").peekable();
    while let Some(coding) = codings.next() {
        if coding.eq_ignore_ascii_case("chunked") {
            return match codings.peek() {
                None => Ok(true),
                Some(_) => Err(HeadError::Framing(
                    "chunked is not the last transfer coding",
                )),
            };
        }
    }
    Ok(false)
}

/// The body length of a response to a request with `method`.
pub fn response_framing(head: &Head, method: &str) -> Result<Framing, HeadError> {
    let status = head.status;
    if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    if head.has("transfer-encoding") {
        return match chunked_last(head)? {
            true => Ok(Framing::Chunked),
            false => Ok(Framing::UntilClose),
        };
    }
    match content_length(head)? {
        Some(0) => Ok(Framing::None),
        Some(n) => Ok(Framing::Length(n)),
        None => Ok(Framing::UntilClose),
    }
}

/// The message's Content-Length: every value (and list element) must be the same number. The
/// proxy forwards this one number, never the fields as they came (`5, 5` or two fields would be
/// refused, or read differently, by a stricter parser downstream).
pub fn content_length(head: &Head) -> Result<Option<u64>, HeadError> {
    let mut found = None;
    for element in head
        .values("content-length")
        .flat_map(|v| v.split(|b| *b == b','))
    {
        let digits = element.trim_ascii();
        if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Framing("invalid content-length"));
        }
        let n = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(HeadError::Framing("conflicting content-length values"));
        }
        found = Some(n);
    }
    Ok(found)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(&'static str);

/// Finds where a chunked body ends while its bytes are forwarded unchanged. Strict (RFC 9112
/// §7.1): after a size only whitespace and `;` extensions, extensions and trailer values without
/// control characters, and trailer lines that are fields (a name, a colon; no folded lines), so
/// that no parser downstream can end the body somewhere else. Extensions and the trailer section
/// are bounded like a head.
#[derive(Debug, Clone, Default)]
pub struct ChunkedScanner {
    state: ChunkState,
    size: u64,
    digits: u8,
    /// Bytes of extensions and trailer lines seen: bounded by [`MAX_HEAD`].
    metadata: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace after the size, before `;` or the line end.
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// A control character that may not appear in a chunk extension or a field value (HTAB may).
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A `tchar` of RFC 9110 §5.6.2: what field names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl ChunkedScanner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes the bytes of `input` that belong to this body and says how many that was; the
    /// rest (if the body ended) belongs to whatever follows it.
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() && self.state != Done {
            let b = input[i];
            if matches!(self.state, Extension | TrailerName | TrailerValue) {
                self.metadata += 1;
                if self.metadata > MAX_HEAD {
                    return Err(ChunkError("chunk extensions or trailer too large"));
                }
            }
            match self.state {
                Data => {
                    let take =
                        (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == 16 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        let digit = (b as char).to_digit(16).unwrap_or(0);
                        self.size = self.size << 4 | u64::from(digit);
                        self.digits += 1;
                    }
                    b' ' | b'\t' if self.digits > 0 => self.state = SizeSpace,
                    b';' if self.digits > 0 => self.state = Extension,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    _ => return Err(ChunkError("invalid chunk size")),
                },
                SizeSpace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = Extension,
                    b'\r' => self.state = SizeLf,
                    _ => return Err(ChunkError("junk after the chunk size")),
                },
                Extension => match b {
                    b'\r' => self.state = SizeLf,
                    _ if is_control(b) => {
                        return Err(ChunkError("control character in chunk extension"));
                    }
                    _ => {}
                },
                SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk size line not ended by CRLF"));
                    }
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data longer than its size"));
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk data not ended by CRLF"));
                    }
                    self.state = Size;
                    self.size = 0;
                    self.digits = 0;
                }
                TrailerStart => match b {
                    b'\r' => self.state = FinalLf,
                    _ if is_tchar(b) => {
                        self.metadata += 1;
                        self.state = TrailerName;
                    }
                    _ => return Err(ChunkError("trailer line is not a field")),
                },
                TrailerName => match b {
                    b':' => self.state = TrailerValue,
                    _ if is_tchar(b) => {}
                    _ => return Err(ChunkError("invalid trailer field name")),
                },
                TrailerValue => match b {
                    b'\r' => self.state = TrailerLf,
                    _ if is_control(b) => {
                        return Err(ChunkError("control character in trailer field"));
                    }
                    _ => {}
                },
                TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("trailer line not ended by CRLF"));
                    }
                    self.state = TrailerStart;
                }
                FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunked body not ended by CRLF"));
                    }
                    self.state = Done;
                }
                Done => {}
            }
            i += 1;
        }
        Ok(i)
    }
}

/// Is `name` a header that describes one connection and is never forwarded (RFC 9110 §7.6.1,
/// plus the non-standard ones proxies conventionally drop)?
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// The fields [`is_hop_by_hop`] names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Which fields of a head stay on its hop: the hop-by-hop ones, and those its `Connection`
/// field names. Built once per head, then asked per field.
pub struct HopFields<'a> {
    named: Vec<&'a str>,
}

impl<'a> HopFields<'a> {
    pub fn of(head: &'a Head) -> HopFields<'a> {
        HopFields {
            named: head.list("connection").collect(),
        }
    }

    /// Whether `name` is not forwarded. A framing field named in `Connection` is forwarded all
    /// the same (requests that do this are refused; such an answer closes the client's
    /// connection after it).
    pub fn stays(&self, name: &[u8]) -> bool {
        if is_hop_by_hop(name) {
            return true;
        }
        self.named
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
            && !FRAMING_FIELDS
                .iter()
                .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Whether the head's `Connection` names a field that frames or routes the message: the
    /// proxy closes after such an answer.
    pub fn names_framing(&self) -> bool {
        self.named
            .iter()
            .any(|t| FRAMING_FIELDS.iter().any(|f| t.eq_ignore_ascii_case(f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<Option<Head>, HeadError> {
        parse_request(&mut BytesMut::from(text))
    }

    fn req(text: &str) -> Head {
        request(text).unwrap().unwrap()
    }

    fn res(text: &str) -> Head {
        parse_response(&mut BytesMut::from(text)).unwrap().unwrap()
    }

    #[test]
    fn a_head_is_taken_off_the_buffer_and_what_follows_stays() {
        let mut buf = BytesMut::from("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\n\r\nNEXT");
        let head = parse_request(&mut buf).unwrap().unwrap();
        assert_eq!(head.method(), "GET");
        assert_eq!(head.target(), "/a?b=1");
        assert_eq!(head.minor, 1);
        assert_eq!(head.get("host"), Some("x"));
        assert_eq!(head.get("x-two"), Some("1"));
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn an_incomplete_head_waits_and_an_endless_one_is_refused() {
        assert!(request("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(request(&endless).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..=MAX_FIELDS).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            request(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            HeadError::TooManyFields
        );
        assert!(matches!(
            request("GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n").unwrap_err(),
            HeadError::Malformed(_)
        ));
    }

    #[test]
    fn request_framing_follows_rfc_9112_and_refuses_ambiguity() {
        let cases = [
            ("GET / HTTP/1.1\r\n\r\n", Ok(Framing::None)),
            (
                "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                Ok(Framing::None),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n",
                Ok(Framing::Length(12)),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
                Ok(Framing::Length(5)),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                Ok(Framing::Chunked),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Err(()),
            ),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", Err(())),
            ("POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", Err(())),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                Err(()),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Err(()),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Err(()),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                Err(()),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(()),
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(()),
            ),
        ];
        for (text, want) in cases {
            let got = request_framing(&req(text)).map_err(|_| ());
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn response_framing_depends_on_status_method_and_fields() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                "GET",
                Framing::Length(3),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                "HEAD",
                Framing::None,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", "GET", Framing::None),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                "GET",
                Framing::None,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", "POST", Framing::None),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "GET",
                Framing::Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "GET",
                Framing::UntilClose,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", "GET", Framing::UntilClose),
        ];
        for (text, method, want) in cases {
            assert_eq!(response_framing(&res(text), method), Ok(want), "{text:?}");
        }
        let bad = res("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
        assert!(response_framing(&bad, "GET").is_err());
    }

    #[test]
    fn a_request_needs_one_host_and_no_framing_field_named_in_connection() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(Framing::None)),
            ("GET / HTTP/1.0\r\n\r\n", Ok(Framing::None)),
            ("GET / HTTP/1.1\r\nHost:\r\n\r\n", Ok(Framing::None)),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\n\r\n",
                Ok(Framing::None),
            ),
            ("GET / HTTP/1.1\r\n\r\n", Err("Host")),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Err("Host")),
            ("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", Err("Host")),
            ("GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", Err("Host")),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Err("Host")),
            ("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", Err("Host")),
            (
                "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
                Ok(Framing::None),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\nContent-Length: 3\r\n\r\n",
                Err("framing"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: transfer-encoding\r\n\r\n",
                Err("framing"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: HOST\r\n\r\n",
                Err("framing"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                Err("framing"),
            ),
        ];
        for (text, want) in cases {
            let got = check_request(&req(text)).map_err(|e| match e {
                HeadError::Host(_) => "Host",
                _ => "framing",
            });
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn a_framing_field_named_in_connection_is_still_forwarded() {
        let head = res(
            "HTTP/1.1 200 OK\r\nConnection: Content-Length, X-Hop\r\nContent-Length: 2\r\n\r\n",
        );
        let hop = HopFields::of(&head);
        assert!(!hop.stays(b"content-length"));
        assert!(hop.stays(b"x-hop"));
        assert!(hop.names_framing());
    }

    #[test]
    fn a_missing_or_opaque_reason_phrase_is_empty() {
        for (text, reason) in [
            ("HTTP/1.1 200 OK\r\n\r\n", &b"OK"[..]),
            ("HTTP/1.1 200\r\n\r\n", b""),
            ("HTTP/1.1 200 \r\n\r\n", b""),
            ("HTTP/1.1 200 \u{e9}t\u{e9}\r\n\r\n", b""),
        ] {
            let head = res(text);
            assert_eq!(head.status, 200);
            assert_eq!(head.reason(), reason, "{text:?}");
        }
    }

    #[test]
    fn keep_alive_defaults_differ_between_http_1_0_and_1_1() {
        assert!(req("GET / HTTP/1.1\r\n\r\n").keep_alive());
        assert!(!req("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive());
        assert!(!req("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
    }

    #[test]
    fn fields_named_in_connection_stay_on_this_hop() {
        let head = req("GET / HTTP/1.1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n");
        let hop = HopFields::of(&head);
        assert!(hop.stays(b"x-secret"));
        assert!(hop.stays(b"Transfer-Encoding"));
        assert!(!hop.stays(b"x-other"));
    }

    fn scan_all(body: &[u8], step: usize) -> Result<(usize, bool), ChunkError> {
        let mut scanner = ChunkedScanner::new();
        let mut used = 0;
        for piece in body.chunks(step) {
            let n = scanner.scan(piece)?;
            used += n;
            if scanner.is_done() {
                return Ok((used, true));
            }
        }
        Ok((used, scanner.is_done()))
    }

    #[test]
    fn the_end_of_a_chunked_body_is_found_however_it_is_split() {
        let body = b"4;ext=1\r\nWiki\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n";
        let mut with_next = body.to_vec();
        with_next.extend_from_slice(b"GET / HTTP/1.1\r\n");
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(
                scan_all(&with_next, step),
                Ok((body.len(), true)),
                "step {step}"
            );
        }
        assert_eq!(scan_all(b"0\r\n\r\n", 1), Ok((5, true)));
        for body in [
            &b"2 \t;x=\"y z\"\r\nab\r\n0 \r\n\r\n"[..],
            b"0\r\nA: b\tc\r\nD:\r\n\r\n",
        ] {
            assert_eq!(scan_all(body, 3), Ok((body.len(), true)));
        }
        let endless = format!("1;{}", "x".repeat(MAX_HEAD + 1));
        assert!(scan_all(endless.as_bytes(), 4096).is_err());
        let endless = format!("0\r\nX: {}", "x".repeat(MAX_HEAD + 1));
        assert!(scan_all(endless.as_bytes(), 4096).is_err());
        assert_eq!(scan_all(b"5\r\nab", 64), Ok((5, false)));
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"4\nWiki\r\n",
            b"4\r\nWikipedia\r\n",
            b"4\r\nWiki\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n\r\n",
            b"5 junk\r\nhello\r\n0\r\n\r\n",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
            b"0\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            b"0\r\nX-T: a\r\n b\r\n\r\n",
            b"0\r\nX T: a\r\n\r\n",
            b"0\r\nX-T: a\x01\r\n\r\n",
        ] {
            assert!(
                scan_all(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
