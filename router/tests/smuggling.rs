//! Request smuggling and desync through the router's data path (RFC 9112 §6.3 message body
//! length, §11.2 request smuggling, and the published desync classes).
//!
//! Every case writes raw bytes to a router on port 0 in front of a *recording upstream*: a raw
//! TCP server with a deliberately strict HTTP/1.1 parser of its own (neither the router's `h1`
//! nor httparse). It records every request it parsed and every byte it received, refuses (and
//! records) anything a second parser could read differently, and answers each request with an
//! `x-seq: <n>` field, so the client side can count the answers that came from it. Each case
//! asserts on both ends, what the client got (statuses read from its raw bytes) and what the
//! upstream got, and on invariants that hold whatever the verdict:
//! - the upstream never receives a request with both Content-Length and Transfer-Encoding, nor
//!   two Content-Lengths, nor anything else its strict parser refuses;
//! - the upstream never answers more requests than the client saw answers from it, nor more
//!   than the client's bytes hold (either is a request smuggled past the router);
//! - bytes an upstream sends after a complete answer never reach a client as an answer.
//!
//! Each case is its own test in `router_verdicts` (`cargo test -p router --test smuggling
//! router_verdicts::cl_te_classic`); a failure prints both ends of the exchange, bytes escaped.
//!
//! `compare_with_haproxy_and_nginx` puts HAProxy and nginx (where installed: PATH or /usr/sbin)
//! in front of the same kind of upstream, runs every case through them and prints the verdicts
//! side by side (`-- --nocapture`; `SMUGGLING_DETAIL=case,case` adds both ends of those cases);
//! it asserts only the router's invariants.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout};

mod support;

use support::{router, table};

/// Every socket read and write in this file gives up after this long.
const IO_LIMIT: Duration = Duration::from_secs(5);
/// Once the client has sent everything and had some answer, this much silence ends the case.
const QUIET: Duration = Duration::from_millis(1500);
/// No case takes longer than this, whatever the proxy does.
const CASE_LIMIT: Duration = Duration::from_secs(20);
/// The largest body the recording upstream reads.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// The body an upstream refuses early.
const BIG_BODY: usize = 5 * 1024 * 1024;
/// An answer nobody asked for: what an upstream sends after a complete answer.
const STRAY: &[u8] = b"HTTP/1.1 200 OK\r\nx-seq: stray\r\ncontent-length: 5\r\n\r\nstray";

// ---------------------------------------------------------------------------------------------
// The recording upstream.

/// How the recording upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `200 OK`, `x-seq` and a Content-Length.
    Normal,
    /// `HTTP/1.1 200\r\n`: no reason phrase (RFC 9112 §4 lets it be empty).
    NoReason,
    /// A reason phrase with obs-text bytes.
    NonAsciiReason,
    /// Neither Content-Length nor Transfer-Encoding: the body runs until the upstream closes.
    CloseDelimited,
    /// After each complete answer, the bytes of an answer nobody asked for, `after_ms` later.
    Stray { after_ms: u64 },
    /// `100 Continue` before every final answer.
    Interim,
    /// Every answer has this status (204 or 304), a Content-Length, and no body.
    Bodiless(u16),
    /// A request with a body is answered `413` and the connection closed before the body is read.
    Early413,
    /// The answer's Connection names this framing field.
    ConnectionNames(&'static str),
    /// The second request on a connection is read, then the connection closed unanswered.
    SilentCloseOnSecond,
}

/// One request the upstream parsed.
#[derive(Debug, Clone)]
struct Recorded {
    conn: usize,
    seq: usize,
    method: String,
    target: String,
    version: String,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// Whether the upstream answered it.
    answered: bool,
}

impl Recorded {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn has(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }
}

/// Everything the upstream saw.
#[derive(Debug, Clone, Default)]
struct Log {
    requests: Vec<Recorded>,
    /// What the strict parser refused, and why.
    refusals: Vec<String>,
    /// Requests that broke off (end of stream or silence) before they were complete.
    incomplete: usize,
    /// The raw bytes received, per connection.
    raw: Vec<Vec<u8>>,
}

impl Log {
    fn raw_len(&self) -> usize {
        self.raw.iter().map(Vec::len).sum()
    }
}

/// A recording upstream on port 0; its accept loop stops when it is dropped.
struct Upstream {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Upstream {
    async fn start(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        let seq = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = {
                    let mut log = shared.lock().unwrap();
                    log.raw.push(Vec::new());
                    log.raw.len() - 1
                };
                let wire = Wire {
                    stream,
                    buf: Vec::new(),
                    log: shared.clone(),
                    conn,
                };
                tokio::spawn(serve_connection(wire, mode, seq.clone()));
            }
        });
        Upstream { addr, log, accept }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> Log {
        self.log.lock().unwrap().clone()
    }
}

/// Why the upstream stopped reading a request.
#[derive(Debug)]
enum Stop {
    Refused(String),
    /// The stream ended, failed, or went silent for [`IO_LIMIT`].
    Ended,
}

fn refuse<T>(why: impl Into<String>) -> Result<T, Stop> {
    Err(Stop::Refused(why.into()))
}

/// One upstream connection: its socket and the bytes read from it and not yet parsed.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    log: Arc<Mutex<Log>>,
    conn: usize,
}

impl Wire {
    async fn more(&mut self) -> Result<(), Stop> {
        let mut chunk = [0u8; 64 * 1024];
        match timeout(IO_LIMIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.log.lock().unwrap().raw[self.conn].extend_from_slice(&chunk[..n]);
                Ok(())
            }
            _ => Err(Stop::Ended),
        }
    }

    /// The next line, without its CRLF. A line ended by a bare LF, or holding a bare CR, is
    /// refused: RFC 9112 §2.2 lets a recipient accept them, which is exactly the latitude two
    /// parsers can disagree on.
    async fn line(&mut self) -> Result<Vec<u8>, Stop> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.pop() != Some(b'\r') {
                    return refuse(format!("bare LF after {:?}", show(&line, 60)));
                }
                if line.contains(&b'\r') {
                    return refuse(format!("bare CR in {:?}", show(&line, 60)));
                }
                return Ok(line);
            }
            if self.buf.len() > 64 * 1024 {
                return refuse("a line longer than 64 KiB");
            }
            self.more().await?;
        }
    }

    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, Stop> {
        while self.buf.len() < n {
            self.more().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn record(&self, head: &Head, seq: usize, body: Vec<u8>, answered: bool) {
        self.log.lock().unwrap().requests.push(Recorded {
            conn: self.conn,
            seq,
            method: head.method.clone(),
            target: head.target.clone(),
            version: head.version.clone(),
            fields: head.fields.clone(),
            body,
            answered,
        });
    }

    async fn stopped(mut self, stop: Stop) {
        match stop {
            Stop::Refused(why) => {
                self.log.lock().unwrap().refusals.push(why);
                let _ = timeout(
                    IO_LIMIT,
                    self.stream.write_all(
                        b"HTTP/1.1 400 Bad Request\r\nx-seq: refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    ),
                )
                .await;
            }
            Stop::Ended => self.log.lock().unwrap().incomplete += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(usize),
    Chunked,
}

/// A request head as the strict parser read it.
#[derive(Debug, Clone)]
struct Head {
    method: String,
    target: String,
    version: String,
    fields: Vec<(String, Vec<u8>)>,
    body: Body,
}

impl Head {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The comma-separated elements of every `name` field, trimmed and lower-cased.
    fn list(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(|e| String::from_utf8_lossy(e.trim_ascii()).to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect()
    }

    fn wants_close(&self) -> bool {
        let connection = self.list("connection");
        connection.iter().any(|t| t == "close")
            || (self.version == "HTTP/1.0" && !connection.iter().any(|t| t == "keep-alive"))
    }

    fn expects_continue(&self) -> bool {
        self.list("expect").iter().any(|e| e == "100-continue")
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A field line: `token ":" OWS value OWS`, the value VCHAR, obs-text, SP and HTAB only.
fn field_line(line: &[u8]) -> Result<(String, Vec<u8>), String> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(format!("obs-fold: {:?}", show(line, 60)));
    }
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return Err(format!(
            "a field line without a colon: {:?}",
            show(line, 60)
        ));
    };
    let name = &line[..colon];
    if name.is_empty() || !name.iter().copied().all(is_tchar) {
        return Err(format!("an invalid field name: {:?}", show(name, 60)));
    }
    let value = line[colon + 1..].trim_ascii();
    if let Some(bad) = value
        .iter()
        .find(|b| !(**b == b'\t' || (0x20..0x7f).contains(*b) || **b >= 0x80))
    {
        return Err(format!(
            "byte {bad:#04x} in the value of {}",
            String::from_utf8_lossy(name)
        ));
    }
    Ok((String::from_utf8_lossy(name).into_owned(), value.to_vec()))
}

/// Reads a request head: `Ok(None)` when the connection ends (or goes quiet) between requests.
async fn read_head(wire: &mut Wire) -> Result<Option<Head>, Stop> {
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    let line = loop {
        if wire.buf.is_empty() && wire.more().await.is_err() {
            return Ok(None);
        }
        let line = wire.line().await?;
        if !line.is_empty() {
            break line;
        }
    };
    let parts: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return refuse(format!(
            "a request line that is not three words: {:?}",
            show(&line, 80)
        ));
    };
    if method.is_empty() || !method.iter().copied().all(is_tchar) {
        return refuse(format!("an invalid method: {:?}", show(method, 40)));
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..0x7f).contains(b)) {
        return refuse(format!("an invalid request target: {:?}", show(target, 80)));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return refuse(format!("an invalid version: {:?}", show(version, 20)));
    }
    let mut fields = Vec::new();
    loop {
        let line = wire.line().await?;
        if line.is_empty() {
            break;
        }
        fields.push(field_line(&line).map_err(Stop::Refused)?);
        if fields.len() > 200 {
            return refuse("more than 200 fields");
        }
    }
    let mut head = Head {
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        version: String::from_utf8_lossy(version).into_owned(),
        fields,
        body: Body::None,
    };
    let hosts = head.values("host").count();
    if hosts > 1 || (head.version == "HTTP/1.1" && hosts == 0) {
        return refuse(format!("{hosts} Host fields"));
    }
    let lengths: Vec<&[u8]> = head.values("content-length").collect();
    let has_te = head.values("transfer-encoding").next().is_some();
    if has_te && !lengths.is_empty() {
        return refuse("both Content-Length and Transfer-Encoding");
    }
    if lengths.len() > 1 {
        return refuse("two Content-Length fields");
    }
    head.body = if has_te {
        if head.version == "HTTP/1.0" {
            return refuse("Transfer-Encoding in HTTP/1.0");
        }
        let codings = head.list("transfer-encoding");
        let chunked = codings.iter().filter(|c| *c == "chunked").count();
        if chunked != 1 || codings.last().map(String::as_str) != Some("chunked") {
            return refuse(format!(
                "transfer codings {codings:?}: not one final chunked"
            ));
        }
        let known = [
            "chunked",
            "gzip",
            "x-gzip",
            "deflate",
            "compress",
            "x-compress",
        ];
        if let Some(unknown) = codings.iter().find(|c| !known.contains(&c.as_str())) {
            return refuse(format!("an unknown transfer coding {unknown:?}"));
        }
        Body::Chunked
    } else if let Some(length) = lengths.first() {
        if length.is_empty() || length.len() > 18 || !length.iter().all(u8::is_ascii_digit) {
            return refuse(format!("an invalid Content-Length {:?}", show(length, 40)));
        }
        let n: usize = std::str::from_utf8(length).unwrap().parse().unwrap();
        if n > MAX_BODY {
            return refuse("a body larger than this upstream reads");
        }
        if n == 0 { Body::None } else { Body::Length(n) }
    } else {
        Body::None
    };
    Ok(Some(head))
}

async fn read_body(wire: &mut Wire, body: Body) -> Result<Vec<u8>, Stop> {
    match body {
        Body::None => Ok(Vec::new()),
        Body::Length(n) => wire.exact(n).await,
        Body::Chunked => {
            let mut data = Vec::new();
            loop {
                let line = wire.line().await?;
                // chunk-size [ BWS ";" chunk-ext ] CRLF
                let (size, ext) = match line.iter().position(|b| *b == b';') {
                    Some(i) => (line[..i].trim_ascii_end(), Some(&line[i + 1..])),
                    None => (&line[..], None),
                };
                if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
                    return refuse(format!("an invalid chunk size line {:?}", show(&line, 60)));
                }
                if ext.is_some_and(|e| e.contains(&0)) {
                    return refuse("NUL in a chunk extension");
                }
                let size = usize::from_str_radix(std::str::from_utf8(size).unwrap(), 16)
                    .unwrap_or(usize::MAX);
                if size == 0 {
                    break;
                }
                if size > MAX_BODY - data.len() {
                    return refuse("a chunked body larger than this upstream reads");
                }
                data.extend(wire.exact(size).await?);
                if wire.exact(2).await? != b"\r\n" {
                    return refuse("chunk data not followed by CRLF");
                }
            }
            loop {
                let line = wire.line().await?;
                if line.is_empty() {
                    return Ok(data);
                }
                field_line(&line).map_err(|why| Stop::Refused(format!("trailer: {why}")))?;
            }
        }
    }
}

fn answer(mode: Mode, seq: usize, head: &Head, close: bool) -> Vec<u8> {
    let body = format!("seq {seq}");
    let mut out: Vec<u8> = match mode {
        Mode::NoReason => b"HTTP/1.1 200\r\n".to_vec(),
        Mode::NonAsciiReason => b"HTTP/1.1 200 \xc3\x96k \xe9\r\n".to_vec(),
        Mode::Bodiless(204) => b"HTTP/1.1 204 No Content\r\n".to_vec(),
        Mode::Bodiless(status) => format!("HTTP/1.1 {status} Not Modified\r\n").into_bytes(),
        _ => b"HTTP/1.1 200 OK\r\n".to_vec(),
    };
    let _ = write!(
        Text(&mut out),
        "x-seq: {seq}\r\ncontent-type: text/plain\r\n"
    );
    let mut connection = Vec::new();
    if let Mode::ConnectionNames(field) = mode {
        connection.push(field);
    }
    if close {
        connection.push("close");
    } else if head.version == "HTTP/1.0" {
        connection.push("keep-alive");
    }
    if !connection.is_empty() {
        let _ = write!(Text(&mut out), "connection: {}\r\n", connection.join(", "));
    }
    let chunked = mode == Mode::ConnectionNames("transfer-encoding");
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if mode != Mode::CloseDelimited {
        let _ = write!(Text(&mut out), "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    if head.method != "HEAD" && !matches!(mode, Mode::Bodiless(_)) {
        if chunked {
            let _ = write!(Text(&mut out), "{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
        } else {
            out.extend_from_slice(body.as_bytes());
        }
    }
    out
}

/// `write!` into a byte buffer.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

async fn write(wire: &mut Wire, bytes: &[u8]) -> bool {
    matches!(
        timeout(IO_LIMIT, wire.stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

async fn serve_connection(mut wire: Wire, mode: Mode, seq: Arc<AtomicUsize>) {
    let mut served = 0;
    loop {
        let head = match read_head(&mut wire).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(stop) => return wire.stopped(stop).await,
        };
        served += 1;
        if mode == Mode::Early413 && head.body != Body::None {
            let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
            wire.record(&head, n, Vec::new(), true);
            let answer = format!(
                "HTTP/1.1 413 Payload Too Large\r\nx-seq: {n}\r\nconnection: close\r\ncontent-length: 9\r\n\r\ntoo large"
            );
            write(&mut wire, answer.as_bytes()).await;
            // Closed with the body unread.
            return;
        }
        if head.body != Body::None && head.expects_continue() {
            write(&mut wire, b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        let body = match read_body(&mut wire, head.body).await {
            Ok(body) => body,
            Err(stop) => return wire.stopped(stop).await,
        };
        let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
        if mode == Mode::SilentCloseOnSecond && served == 2 {
            wire.record(&head, n, body, false);
            return;
        }
        wire.record(&head, n, body, true);
        let close = head.wants_close() || mode == Mode::CloseDelimited;
        if mode == Mode::Interim {
            write(&mut wire, b"HTTP/1.1 100 Continue\r\n\r\n").await;
            sleep(Duration::from_millis(20)).await;
        }
        let mut out = answer(mode, n, &head, close);
        if mode == (Mode::Stray { after_ms: 0 }) {
            out.extend_from_slice(STRAY);
        }
        if !write(&mut wire, &out).await {
            return;
        }
        if let Mode::Stray { after_ms } = mode
            && after_ms > 0
        {
            sleep(Duration::from_millis(after_ms)).await;
            if !write(&mut wire, STRAY).await {
                return;
            }
        }
        if close {
            let _ = wire.stream.shutdown().await;
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client side.

#[derive(Debug, Clone)]
enum Part {
    Bytes(Vec<u8>),
    /// Wait this many milliseconds before the next part.
    Pause(u64),
    /// This many bytes of `x`, written as the proxy takes them.
    Filler(usize),
}

/// How the client's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Reset,
    /// Still open when the client stopped waiting.
    Open,
}

/// Sends `parts` (while reading, so the proxy is never stuck writing) and reads until the proxy
/// closes the connection, or it is quiet.
async fn drive(addr: SocketAddr, parts: &[Part]) -> (Vec<u8>, End) {
    let stream = match timeout(IO_LIMIT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        _ => return (Vec::new(), End::Reset),
    };
    let (mut read, mut write) = stream.into_split();
    let written = Arc::new(AtomicBool::new(false));
    let done = written.clone();
    let parts = parts.to_vec();
    // The write half is handed back rather than dropped: dropping it would half-close the
    // connection, which some proxies take as the client going away.
    let writer = tokio::spawn(async move {
        let mut ok = true;
        for part in parts {
            match part {
                Part::Bytes(bytes) => {
                    ok = matches!(timeout(IO_LIMIT, write.write_all(&bytes)).await, Ok(Ok(())));
                }
                Part::Pause(ms) => sleep(Duration::from_millis(ms)).await,
                Part::Filler(n) => {
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut left = n;
                    while ok && left > 0 {
                        let take = left.min(chunk.len());
                        ok = matches!(
                            timeout(IO_LIMIT, write.write_all(&chunk[..take])).await,
                            Ok(Ok(()))
                        );
                        left -= take;
                    }
                }
            }
            if !ok {
                break;
            }
        }
        done.store(true, Ordering::SeqCst);
        write
    });
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        let wait = if written.load(Ordering::SeqCst) && !raw.is_empty() {
            QUIET
        } else {
            IO_LIMIT
        };
        match timeout(wait, read.read(&mut chunk)).await {
            Err(_) => break End::Open,
            Ok(Ok(0)) => break End::Closed,
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => break End::Reset,
        }
    };
    writer.abort();
    (raw, end)
}

/// One answer the client received.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    /// The upstream's `x-seq`, if the answer came from it.
    seq: Option<String>,
}

/// Every status line in the client's bytes, with its `x-seq`. No body in this file holds
/// `HTTP/1.`: the upstream's are `seq <n>`, and the proxies' error pages do not quote it. Answers
/// need not start a line: a body without a final newline runs straight into the next status line.
fn answers(raw: &[u8]) -> Vec<Answer> {
    (0..raw.len())
        .filter_map(|i| {
            let rest = &raw[i..];
            let version = rest.starts_with(b"HTTP/1.1 ") || rest.starts_with(b"HTTP/1.0 ");
            if !version || rest.len() < 12 || !rest[9..12].iter().all(u8::is_ascii_digit) {
                return None;
            }
            let status = std::str::from_utf8(&rest[9..12]).ok()?.parse().ok()?;
            let end = find(rest, b"\r\n\r\n").unwrap_or(rest.len());
            let seq = rest[..end].split(|b| *b == b'\n').find_map(|line| {
                let colon = line.iter().position(|b| *b == b':')?;
                line[..colon]
                    .eq_ignore_ascii_case(b"x-seq")
                    .then(|| String::from_utf8_lossy(line[colon + 1..].trim_ascii()).into_owned())
            });
            Some(Answer { status, seq })
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes for a message: escaped, at most `max` characters.
fn show(bytes: &[u8], max: usize) -> String {
    let text = bytes.escape_ascii().to_string();
    if text.len() > max {
        format!("{}…", &text[..max])
    } else {
        text
    }
}

// ---------------------------------------------------------------------------------------------
// Cases.

/// What the router must do with a case.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The client gets this status from the proxy; the upstream receives nothing.
    Refused(u16),
    /// The upstream parses this many requests and the client gets each one's answer.
    Forwarded(usize),
    /// The client gets these final statuses; the upstream parses this many requests.
    Answered(&'static [u16], usize),
    /// Where the RFC lets a recipient either refuse or repair: refused (any 4xx or 5xx, nothing
    /// upstream), or forwarded as `Forwarded(n)` with the case's checks.
    Either(usize),
}

type Check = Arc<dyn Fn(&Outcome) -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct Case {
    name: &'static str,
    class: &'static str,
    parts: Vec<Part>,
    mode: Mode,
    expect: Expect,
    /// How many requests the client's bytes hold (the upstream must never parse more).
    intended: Option<usize>,
    /// The interim (1xx) statuses the client must get.
    interim: Option<&'static [u16]>,
    /// Whether the proxy must close the client's connection at the end (a clean close: a reset
    /// can destroy an answer the client has not read yet).
    closes: bool,
    checks: Vec<Check>,
}

fn case(class: &'static str, bytes: impl Into<Vec<u8>>) -> Case {
    staged(class, vec![Part::Bytes(bytes.into())])
}

fn staged(class: &'static str, parts: Vec<Part>) -> Case {
    Case {
        name: "",
        class,
        parts,
        mode: Mode::Normal,
        expect: Expect::Forwarded(1),
        intended: None,
        interim: None,
        closes: false,
        checks: Vec::new(),
    }
}

impl Case {
    fn refused(mut self, status: u16) -> Case {
        self.expect = Expect::Refused(status);
        self
    }

    fn forwarded(mut self, n: usize) -> Case {
        self.expect = Expect::Forwarded(n);
        self
    }

    fn answered(mut self, statuses: &'static [u16], forwarded: usize) -> Case {
        self.expect = Expect::Answered(statuses, forwarded);
        self
    }

    fn mode(mut self, mode: Mode) -> Case {
        self.mode = mode;
        self
    }

    fn intended(mut self, n: usize) -> Case {
        self.intended = Some(n);
        self
    }

    fn interim(mut self, statuses: &'static [u16]) -> Case {
        self.interim = Some(statuses);
        self
    }

    fn closes(mut self) -> Case {
        self.closes = true;
        self
    }

    fn check(
        mut self,
        check: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static,
    ) -> Case {
        self.checks.push(Arc::new(check));
        self
    }

    fn either(mut self) -> Case {
        if let Expect::Forwarded(n) = self.expect {
            self.expect = Expect::Either(n);
        }
        self
    }

    fn intended_requests(&self) -> usize {
        self.intended.unwrap_or(match self.expect {
            Expect::Refused(_) => 1,
            Expect::Forwarded(n) | Expect::Answered(_, n) | Expect::Either(n) => n.max(1),
        })
    }

    /// The expected verdict, written as [`Outcome::verdict`] writes one.
    fn expected(&self) -> String {
        let mut statuses = self.interim.unwrap_or_default().to_vec();
        match self.expect {
            Expect::Refused(status) => summary(0, &[status], "closed"),
            Expect::Forwarded(n) => {
                statuses.extend(std::iter::repeat_n(200, n));
                summary(n, &statuses, "closed")
            }
            Expect::Answered(finals, n) => {
                statuses.extend_from_slice(finals);
                summary(n, &statuses, "closed")
            }
            Expect::Either(n) => {
                statuses.extend(std::iter::repeat_n(200, n));
                format!("4xx|{}", summary(n, &statuses, "closed"))
            }
        }
    }

    fn sent(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Bytes(bytes) => show(bytes, 400),
                Part::Pause(ms) => format!(" <pause {ms} ms> "),
                Part::Filler(n) => format!("<{n} bytes of x>"),
            })
            .collect()
    }
}

/// `400`, `fwd 2`, `fwd 1: 100 200`: what reached the upstream (`fwd n`, when anything did) and
/// every status the client got, unless those are one 200 per forwarded request.
fn summary(parsed: usize, statuses: &[u16], ending: &str) -> String {
    let shown = if statuses.is_empty() {
        ending.to_string()
    } else {
        join(statuses)
    };
    if parsed == 0 {
        shown
    } else if statuses.len() == parsed && statuses.iter().all(|s| *s == 200) {
        format!("fwd {parsed}")
    } else {
        format!("fwd {parsed}: {shown}")
    }
}

fn join(statuses: &[u16]) -> String {
    statuses
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

// Checks on what the upstream received.

fn body_is(i: usize, expected: &'static [u8]) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| match o.log.requests.get(i) {
        Some(r) if r.body == expected => Ok(()),
        Some(r) => Err(format!(
            "request {i}'s body upstream is {:?}",
            show(&r.body, 120)
        )),
        None => Err(format!("the upstream has no request {i}")),
    }
}

fn lacks_fields(names: &'static [&'static str]) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        for r in &o.log.requests {
            if let Some(name) = names.iter().find(|n| r.has(n)) {
                return Err(format!(
                    "{name} reached the upstream in {} {}",
                    r.method, r.target
                ));
            }
        }
        Ok(())
    }
}

fn target_is(i: usize, expected: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| match o.log.requests.get(i) {
        Some(r) if r.target == expected => Ok(()),
        Some(r) => Err(format!("request {i}'s target upstream is {:?}", r.target)),
        None => Err(format!("the upstream has no request {i}")),
    }
}

fn one_content_length(expected: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        for r in &o.log.requests {
            let values: Vec<&[u8]> = r.values("content-length").collect();
            if values != [expected.as_bytes()] {
                let shown: Vec<String> = values.iter().map(|v| show(v, 40)).collect();
                return Err(format!("the upstream got Content-Length {shown:?}"));
            }
        }
        Ok(())
    }
}

/// The answers the client saw came from the upstream's requests 1, 2, … in order.
fn in_order(o: &Outcome) -> Result<(), String> {
    let seqs: Vec<Option<String>> = o
        .answers
        .iter()
        .filter(|a| a.status >= 200)
        .map(|a| a.seq.clone())
        .collect();
    let want: Vec<Option<String>> = (1..=seqs.len()).map(|n| Some(n.to_string())).collect();
    if seqs == want {
        Ok(())
    } else {
        Err(format!("the client got the answers {seqs:?}"))
    }
}

/// The final answers the client saw carry these `x-seq` values.
fn in_order_from(expected: &'static [&'static str]) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        let seqs: Vec<Option<&str>> = o
            .answers
            .iter()
            .filter(|a| a.status >= 200)
            .map(|a| a.seq.as_deref())
            .collect();
        let want: Vec<Option<&str>> = expected.iter().map(|s| Some(*s)).collect();
        if seqs == want {
            Ok(())
        } else {
            Err(format!("the client got the answers {seqs:?}, not {want:?}"))
        }
    }
}

fn client_got(text: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        if find(&o.raw, text.as_bytes()).is_some() {
            Ok(())
        } else {
            Err(format!("the client never got {text:?}"))
        }
    }
}

fn sent_at_most_once(method: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        let n = o.log.requests.iter().filter(|r| r.method == method).count();
        if n <= 1 {
            Ok(())
        } else {
            Err(format!("the upstream received the {method} {n} times"))
        }
    }
}

/// A request with a Content-Length and a body that a TE-reading parser would split in two: a
/// last chunk, then a whole request. `fields` are the lines that obfuscate Transfer-Encoding.
fn smuggle(fields: &str) -> Vec<u8> {
    let body = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n";
    format!(
        "POST /x HTTP/1.1\r\nHost: shop\r\nContent-Length: {}\r\n{fields}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A POST with `fields` and a chunked body `hello`.
fn chunked(fields: &str) -> Vec<u8> {
    format!("POST /x HTTP/1.1\r\nHost: shop\r\n{fields}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n").into_bytes()
}

/// A POST with `Transfer-Encoding: chunked` and the raw chunked body `body`.
fn chunked_body(body: &[u8]) -> Vec<u8> {
    let mut out = b"POST /x HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    out.extend_from_slice(body);
    out
}

/// A POST with the Content-Length line `length` and the body `body`.
fn with_length(length: &str, body: &str) -> Vec<u8> {
    format!("POST /x HTTP/1.1\r\nHost: shop\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{body}").into_bytes()
}

/// A GET with the extra field lines `fields` (each ending in CRLF).
fn get_with(fields: &[u8]) -> Vec<u8> {
    let mut out = b"GET /x HTTP/1.1\r\nHost: shop\r\n".to_vec();
    out.extend_from_slice(fields);
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

const TWO_GETS: &[u8] = b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\nGET /b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n";

/// Defines the case table (`all_cases`) and one router test per case, named after it.
macro_rules! cases {
    ($(($name:ident, $case:expr)),* $(,)?) => {
        fn all_cases() -> Vec<Case> {
            vec![$({
                let mut case: Case = $case;
                case.name = stringify!($name);
                case
            }),*]
        }

        mod router_verdicts {
            $(
                #[tokio::test]
                async fn $name() {
                    super::router_case(stringify!($name)).await;
                }
            )*
        }
    };
}

cases!(
    // Baselines: what must pass through unharmed.
    (baseline_get, case("baseline", b"GET /x HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice())
        .check(target_is(0, "/x"))),
    (baseline_content_length, case("RFC 9112 §6.3 (6) Content-Length", with_length("5", "hello"))
        .check(body_is(0, b"hello"))),
    (baseline_chunked, case("RFC 9112 §7.1 chunked", chunked_body(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"))
        .check(body_is(0, b"hello world"))),
    (baseline_keep_alive, case("RFC 9112 §9.3 persistence", TWO_GETS).forwarded(2).check(in_order)),

    // RFC 9112 §6.1, §6.3 (3), §11.2: both framings at once, and Transfer-Encoding obfuscated
    // so that one parser sees it and another does not.
    (cl_te_classic, case("§6.3 (3) CL.TE", smuggle("Transfer-Encoding: chunked")).refused(400)),
    (te_cl_classic, case("§6.3 (3) TE.CL", b"POST /x HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n".as_slice()).refused(400)),
    (te_cl_zero, case("§6.3 (3) TE with CL 0", b"POST /x HTTP/1.1\r\nHost: shop\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n".as_slice()).refused(400)),
    (te_space_before_colon, case("§5.1 TE obfuscation: space before colon", smuggle("Transfer-Encoding : chunked")).refused(400)),
    (te_xchunked, case("TE obfuscation: xchunked", smuggle("Transfer-Encoding: xchunked")).refused(400)),
    (te_tab_before_value, case("TE obfuscation: HTAB as OWS", smuggle("Transfer-Encoding:\tchunked")).refused(400)),
    (te_duplicated, case("TE obfuscation: duplicated field", smuggle("Transfer-Encoding: chunked\r\nTransfer-Encoding: x")).refused(400)),
    (te_vertical_tab, case("TE obfuscation: VT before value", smuggle("Transfer-Encoding:\x0bchunked")).refused(400)),
    (te_quoted, case("TE obfuscation: quoted coding", smuggle("Transfer-Encoding: \"chunked\"")).refused(400)),
    (te_leading_comma, case("TE obfuscation: empty list element", smuggle("Transfer-Encoding: ,chunked")).refused(400)),
    (te_identity, case("TE obfuscation: identity", smuggle("Transfer-Encoding: identity")).refused(400)),
    (te_mixed_case_name, case("TE obfuscation: name case", smuggle("tRaNsFeR-eNcOdInG: chunked")).refused(400)),
    (te_non_ascii, case("TE obfuscation: obs-text in value", smuggle("Transfer-Encoding: chunk\u{e9}d")).refused(400)),

    // RFC 9112 §6.1: Transfer-Encoding alone.
    (te_tab_alone, case("§5.1 HTAB as OWS", chunked("Transfer-Encoding:\tchunked")).check(body_is(0, b"hello"))),
    (te_uppercase, case("§7 codings are case-insensitive", chunked("Transfer-Encoding: CHUNKED")).check(body_is(0, b"hello"))),
    (te_gzip_chunked, case("§6.1 codings then chunked", chunked("Transfer-Encoding: gzip, chunked")).either().check(body_is(0, b"hello"))),
    (te_chunked_twice_one_field, case("§6.1 chunked applied twice", chunked("Transfer-Encoding: chunked, chunked")).refused(400)),
    (te_chunked_twice_two_fields, case("§6.1 chunked applied twice (two fields)", chunked("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked")).refused(400)),
    (te_chunked_not_last, case("§6.3 (4) chunked not final", chunked("Transfer-Encoding: chunked, gzip")).refused(400)),
    (te_unknown_alone, case("§6.3 (4) unknown coding", chunked("Transfer-Encoding: xchunked")).refused(400)),
    (te_http10, case("§6.1 Transfer-Encoding in HTTP/1.0", b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".as_slice()).refused(400)),

    // RFC 9112 §6.3 (5), RFC 9110 §8.6: Content-Length.
    (cl_plus, case("§6.3 (5) CL with sign", with_length("+5", "hello")).refused(400)),
    (cl_negative, case("§6.3 (5) negative CL", with_length("-5", "hello")).refused(400)),
    (cl_hex, case("§6.3 (5) hex CL", with_length("0x5", "hello")).refused(400)),
    (cl_leading_zeros, case("§6.3 (5) CL with leading zeros (valid)", with_length("005", "hello")).check(body_is(0, b"hello"))),
    (cl_trailing_space, case("§5.1 CL with trailing OWS (valid)", with_length("5 ", "hello")).check(body_is(0, b"hello"))),
    (cl_list_differing, case("§6.3 (5) CL list 5, 6", with_length("5, 6", "hello!")).refused(400)),
    (cl_list_equal, case("RFC 9110 §8.6 CL list 5, 5", with_length("5, 5", "hello")).either().check(one_content_length("5"))),
    (cl_two_fields_equal, case("RFC 9110 §8.6 two equal CLs", b"POST /x HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".as_slice()).either().check(one_content_length("5"))),
    (cl_two_fields_differing, case("§6.3 (5) two different CLs", b"POST /x HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!".as_slice()).refused(400)),
    (cl_space_inside, case("§6.3 (5) CL with a space inside", with_length("1 0", "helloworld")).refused(400)),
    (cl_overflow, case("§6.3 (5) CL past 2^64", with_length("99999999999999999999", "hello")).refused(400)),
    (cl_empty, case("§6.3 (5) empty CL", with_length("", "hello")).refused(400)),
    (cl_hides_request, case("§11.2 request hidden in a CL body", with_length("38", "GET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n"))
        .check(body_is(0, b"GET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n"))),
    (cl_on_get, case("§6.3 GET with a body (CL.0 class)", b"GET /a HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice())
        .forwarded(2).check(body_is(0, b"hello")).check(in_order)),
    (cl_zero_then_request, case("§6.3 CL 0 then the next request", b"POST /a HTTP/1.1\r\nHost: shop\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice())
        .forwarded(2).check(in_order)),

    // RFC 9112 §7.1: chunk-size abuse.
    (chunk_size_huge, case("§7.1 chunk size past 2^64", chunked_body(b"FFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n")).refused(400)),
    (chunk_size_negative, case("§7.1 negative chunk size", chunked_body(b"-5\r\nhello\r\n0\r\n\r\n")).refused(400)),
    (chunk_size_0x, case("§7.1 chunk size 0x5", chunked_body(b"0x5\r\nhello\r\n0\r\n\r\n")).refused(400)),
    (chunk_size_leading_space, case("§7.1 space before chunk size", chunked_body(b" 5\r\nhello\r\n0\r\n\r\n")).refused(400)),
    (chunk_size_then_junk, case("§7.1 chunk size, space, junk (no ';')", chunked_body(b"5 junk\r\nhello\r\n0\r\n\r\n")).refused(400)),
    (chunk_size_bare_lf, case("§7.1 bare LF after chunk size", chunked_body(b"5\nhello\r\n0\r\n\r\n")).refused(400)),
    (chunk_ext_bare_lf, case("§7.1.1 bare LF in chunk extension", chunked_body(b"5;ext\nhello\r\n0\r\n\r\n")).refused(400)),
    (chunk_ext_bws, case("§7.1.1 BWS before chunk extension (valid)", chunked_body(b"5 ;a=b\r\nhello\r\n0\r\n\r\n")).check(body_is(0, b"hello"))),
    (chunk_data_missing_crlf, case("§7.1 no CRLF after chunk data", chunked_body(b"5\r\nhello0\r\n\r\n")).refused(400)),
    (chunk_longer_than_declared, case("§7.1 chunk longer than its size", chunked_body(b"3\r\nhello\r\n0\r\n\r\n")).refused(400)),
    (chunk_data_bare_lf, case("§7.1 bare LF after chunk data", chunked_body(b"5\r\nhello\n0\r\n\r\n")).refused(400)),
    (chunk_last_bare_lf, case("§7.1 bare LF after the last chunk", chunked_body(b"5\r\nhello\r\n0\n\n")).refused(400)),
    (chunk_trailer_not_a_field, case("§7.1.2 a request line as trailer", chunked_body(b"0\r\nGET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n")).refused(400)),
    (chunk_trailer_obs_fold, case("§7.1.2 obs-fold in the trailer", chunked_body(b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n")).refused(400)),
    (chunk_hides_request, case("§11.2 request hidden in a chunked body", chunked_body(b"26\r\nGET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n\r\n0\r\n\r\n"))
        .check(body_is(0, b"GET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n"))),

    // RFC 9112 §5.2, §2.2, RFC 9110 §5.5: obs-fold, CR, LF and NUL in heads.
    (obs_fold_sp, case("§5.2 obs-fold (SP)", get_with(b"X-A: 1\r\n continued\r\n")).refused(400)),
    (obs_fold_htab_te, case("§5.2 obs-fold hiding TE (HTAB)", smuggle("X-A: 1\r\n\tTransfer-Encoding: chunked")).refused(400)),
    (obs_fold_te_value, case("§5.2 obs-fold inside TE", smuggle("Transfer-Encoding: gzip,\r\n chunked")).refused(400)),
    (whitespace_before_first_field, case("§2.2 whitespace before the first field", b"GET /x HTTP/1.1\r\n Host: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (cr_in_value, case("RFC 9110 §5.5 CR in a value", get_with(b"X-A: a\rb\r\n")).refused(400)),
    (cr_as_line_end, case("§2.2 bare CR as line end", get_with(b"X-A: a\rTransfer-Encoding: chunked\r\n")).refused(400)),
    (bare_lf_hides_te, case("§2.2 bare LF hiding TE beside CL", smuggle("X-A: a\nTransfer-Encoding: chunked")).refused(400)),
    (bare_lf_line_endings, case("§2.2 bare LF line endings (MAY accept)", b"GET /x HTTP/1.1\nHost: shop\nConnection: close\n\n".as_slice()).either().check(target_is(0, "/x"))),
    (nul_in_value, case("RFC 9110 §5.5 NUL in a value", get_with(b"X-A: a\0b\r\n")).refused(400)),
    (nul_in_name, case("RFC 9110 §5.1 NUL in a name", get_with(b"X-A\0B: c\r\n")).refused(400)),
    (space_in_name, case("RFC 9110 §5.1 space in a name", get_with(b"X A: b\r\n")).refused(400)),
    (empty_name, case("RFC 9110 §5.1 empty name", get_with(b": b\r\n")).refused(400)),
    (del_in_value, case("RFC 9110 §5.5 DEL in a value", get_with(b"X-A: a\x7fb\r\n")).refused(400)),
    (obs_text_in_value, case("RFC 9110 §5.5 obs-text in a value (valid)", get_with(b"X-A: caf\xe9\r\n"))),
    (huge_head, case("RFC 6585 §5 head too large", get_with(format!("X-Big: {}\r\n", "a".repeat(70_000)).as_bytes())).refused(431)),

    // RFC 9112 §3: the request line.
    (space_in_target, case("§3 space in the target", b"GET /a b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (double_space_request_line, case("§3 two spaces in the request line", b"GET  /x HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (lowercase_version, case("§2.3 lower-case version", b"GET /x http/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (nul_in_target, case("§3.2 NUL in the target", b"GET /a\0b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (percent_plus, case("RFC 3986 §2.1 broken escape %+1", b"GET /x/%+1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (percent_bad_hex, case("RFC 3986 §2.1 broken escape %zz", b"GET /x/%zz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (dot_segments, case("RFC 3986 §5.2.4 dot segments", b"GET /x/../admin HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (encoded_dot_segments, case("RFC 3986 §5.2.4 encoded dot segments", b"GET /x/%2e%2e/admin HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (absolute_form, case("§3.2.2 absolute form", b"GET http://evil/x HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice())
        .check(target_is(0, "/x"))),
    (connect_authority_form, case("§3.2.3 CONNECT authority form", b"CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (options_asterisk, case("§3.2.4 asterisk form", b"OPTIONS * HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),

    // RFC 9110 §7.6.1: fields Connection names stay on their hop; framing ones cannot.
    (connection_content_length, case("§7.6.1 Connection: Content-Length", b"POST /x HTTP/1.1\r\nHost: shop\r\nConnection: Content-Length\r\nContent-Length: 38\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n".as_slice()).refused(400)),
    (connection_transfer_encoding, case("§7.6.1 Connection: Transfer-Encoding", chunked("Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked")).refused(400)),
    (connection_host, case("§7.6.1 Connection: Host", b"GET /x HTTP/1.1\r\nHost: shop\r\nConnection: Host, close\r\n\r\n".as_slice()).refused(400)),
    (connection_list_content_length, case("§7.6.1 Connection list naming CL", b"POST /x HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, content-length\r\nContent-Length: 5\r\n\r\nhello".as_slice()).refused(400)),
    (connection_x_foo, case("§7.6.1 Connection: X-Foo", b"GET /x HTTP/1.1\r\nHost: shop\r\nConnection: X-Foo, close\r\nX-Foo: secret\r\n\r\n".as_slice())
        .check(lacks_fields(&["x-foo"]))),

    // RFC 9112 §3.2: Host.
    (two_hosts, case("§3.2 two Host fields", b"GET /x HTTP/1.1\r\nHost: shop\r\nHost: evil\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (two_equal_hosts, case("§3.2 two equal Host fields", b"GET /x HTTP/1.1\r\nHost: shop\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (missing_host, case("§3.2 HTTP/1.1 without Host", b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),
    (missing_host_http10, case("§3.2 HTTP/1.0 without Host (valid)", b"GET /x HTTP/1.0\r\n\r\n".as_slice()).check(target_is(0, "/x"))),
    (host_list, case("§3.2 Host with a list value", b"GET /x HTTP/1.1\r\nHost: shop, evil\r\nConnection: close\r\n\r\n".as_slice()).refused(400)),

    // RFC 9112 §9.3.2: pipelining, and requests inside requests.
    (pipelined_three, case("§9.3.2 pipelining", b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\nPOST /b HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice())
        .forwarded(3).check(in_order).check(body_is(1, b"hello"))),
    (pipelined_ten, case("§9.3.2 ten requests in one write", {
        let mut bytes = b"GET /n HTTP/1.1\r\nHost: shop\r\n\r\n".repeat(9);
        bytes.extend_from_slice(b"GET /n HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
        bytes
    }).forwarded(10).check(in_order)),
    (pipelined_chunked_then_get, case("§9.3.2 chunked body then a request", b"POST /a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice())
        .forwarded(2).check(in_order).check(body_is(0, b"hello"))),
    (pipelined_then_smuggle, case("§11.2 a valid request, then CL.TE", {
        let mut bytes = b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n".to_vec();
        bytes.extend(smuggle("Transfer-Encoding: chunked"));
        bytes
    }).answered(&[200, 400], 1).intended(2)),
    (pipelined_after_refusal, case("§11.2 nothing after a refused request", b"POST /a HTTP/1.1\r\nHost: shop\r\nContent-Length: +5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: shop\r\n\r\n".as_slice())
        .answered(&[400], 0).intended(2).closes()),

    // RFC 9110 §7.8, §10.1.1: Upgrade and Expect.
    (upgrade_websocket, case("RFC 9110 §7.8 Upgrade: websocket", b"GET /x HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".as_slice())
        .check(lacks_fields(&["upgrade"]))),
    (upgrade_h2c, case("RFC 9110 §7.8 Upgrade: h2c", b"GET /x HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n".as_slice())
        .check(lacks_fields(&["upgrade", "http2-settings"]))),
    (expect_100_continue, staged("RFC 9110 §10.1.1 Expect: 100-continue", vec![
        Part::Bytes(b"POST /x HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".to_vec()),
        Part::Pause(300),
        Part::Bytes(b"hello".to_vec()),
    ]).interim(&[100]).check(body_is(0, b"hello"))),
    (expect_100_with_body, case("RFC 9110 §10.1.1 Expect with the body at once", b"POST /x HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello".as_slice())
        .interim(&[100]).check(body_is(0, b"hello"))),

    // HTTP/1.0.
    (http10_keep_alive, case("RFC 1945 + keep-alive, pipelined", b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n".as_slice())
        .forwarded(2).check(in_order)),

    // Odd answers from the upstream.
    (answer_without_reason, case("RFC 9112 §4 empty reason phrase", TWO_GETS).mode(Mode::NoReason).forwarded(2).check(in_order)),
    (answer_non_ascii_reason, case("RFC 9112 §4 obs-text reason phrase", b"GET /x HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice()).mode(Mode::NonAsciiReason)),
    (answer_close_delimited, case("§6.3 (8) answer delimited by close", TWO_GETS).mode(Mode::CloseDelimited)
        .answered(&[200], 1).intended(2).closes().check(client_got("seq 1"))),
    (answer_stray_bytes, case("§9.3.2 bytes after a complete answer", TWO_GETS).mode(Mode::Stray { after_ms: 0 }).forwarded(2).check(in_order)),
    (answer_stray_bytes_later, staged("§9.3.2 bytes on an idle kept connection", vec![
        Part::Bytes(b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n".to_vec()),
        Part::Pause(500),
        Part::Bytes(b"GET /b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".to_vec()),
    ]).mode(Mode::Stray { after_ms: 100 }).forwarded(2).check(in_order)),
    (answer_interim_then_final, case("RFC 9110 §15.2 1xx then 200", b"GET /x HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice())
        .mode(Mode::Interim).interim(&[100])),
    (answer_head_with_length, case("§6.3 (1) HEAD answer with Content-Length", b"HEAD /a HTTP/1.1\r\nHost: shop\r\n\r\nGET /b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".as_slice())
        .forwarded(2).check(in_order)),
    (answer_204_with_length, case("§6.3 (1) 204 with Content-Length", TWO_GETS).mode(Mode::Bodiless(204)).answered(&[204, 204], 2).check(in_order)),
    (answer_304_with_length, case("§6.3 (1) 304 with Content-Length", TWO_GETS).mode(Mode::Bodiless(304)).answered(&[304, 304], 2).check(in_order)),
    (answer_early_413, staged("§9.6 early 413 + close, 5 MiB unread", vec![
        Part::Bytes(format!("POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: {BIG_BODY}\r\n\r\n").into_bytes()),
        Part::Filler(BIG_BODY),
    ]).mode(Mode::Early413).answered(&[413], 1).closes().check(client_got("too large"))),
    (answer_connection_content_length, case("RFC 9110 §7.6.1 answer's Connection names CL", TWO_GETS)
        .mode(Mode::ConnectionNames("content-length")).answered(&[200], 1).intended(2).closes().check(client_got("seq 1"))),
    (answer_connection_transfer_encoding, case("RFC 9110 §7.6.1 answer's Connection names TE", TWO_GETS)
        .mode(Mode::ConnectionNames("transfer-encoding")).answered(&[200], 1).intended(2).closes().check(client_got("seq 1"))),
    (post_never_sent_twice, case("RFC 9110 §9.2.2 non-idempotent retry", b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\nPOST /b HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".as_slice())
        .mode(Mode::SilentCloseOnSecond).answered(&[200, 502], 2).check(sent_at_most_once("POST"))),
    (post_without_body_never_sent_twice, case("RFC 9110 §9.2.2 non-idempotent retry, no body", b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\nPOST /b HTTP/1.1\r\nHost: shop\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".as_slice())
        .mode(Mode::SilentCloseOnSecond).answered(&[200, 502], 2).check(sent_at_most_once("POST"))),
    (get_resent_after_stale_connection, case("RFC 9110 §9.2.2 idempotent retry", TWO_GETS)
        .mode(Mode::SilentCloseOnSecond).answered(&[200, 200], 3).intended(2).check(in_order_from(&["1", "3"]))),
);

// ---------------------------------------------------------------------------------------------
// Running a case and judging it.

/// What happened to one case: both ends.
struct Outcome {
    raw: Vec<u8>,
    end: End,
    answers: Vec<Answer>,
    log: Log,
}

impl Outcome {
    fn finals(&self) -> Vec<u16> {
        self.answers
            .iter()
            .map(|a| a.status)
            .filter(|s| *s >= 200)
            .collect()
    }

    fn interims(&self) -> Vec<u16> {
        self.answers
            .iter()
            .map(|a| a.status)
            .filter(|s| *s < 200)
            .collect()
    }

    /// Final answers the client got that the upstream wrote.
    fn upstream_answers(&self) -> usize {
        self.answers
            .iter()
            .filter(|a| {
                a.status >= 200 && a.seq.as_deref().is_some_and(|s| s.parse::<usize>().is_ok())
            })
            .count()
    }

    /// What must hold whatever the proxy decides.
    fn violations(&self, case: &Case) -> Vec<String> {
        let mut out = Vec::new();
        for why in &self.log.refusals {
            out.push(format!(
                "the upstream's strict parser refused what it got: {why}"
            ));
        }
        for r in &self.log.requests {
            if r.has("content-length") && r.has("transfer-encoding") {
                out.push(format!(
                    "{} {} reached the upstream with both CL and TE",
                    r.method, r.target
                ));
            }
            if r.values("content-length").count() > 1 {
                out.push(format!(
                    "{} {} reached the upstream with two CLs",
                    r.method, r.target
                ));
            }
        }
        let answered = self.log.requests.iter().filter(|r| r.answered).count();
        let seen = self.upstream_answers();
        if answered > seen {
            out.push(format!(
                "the upstream answered {answered} requests, the client saw {seen} of those answers"
            ));
        }
        // Answered, not parsed: a request resent after a kept connection closed unanswered
        // is parsed twice, and answered once.
        if answered > case.intended_requests() {
            out.push(format!(
                "the upstream answered {answered} requests from bytes holding {}",
                case.intended_requests()
            ));
        }
        if self
            .answers
            .iter()
            .any(|a| a.seq.as_deref() == Some("stray"))
        {
            out.push(
                "bytes the upstream sent after an answer reached the client as an answer".into(),
            );
        }
        out
    }

    /// Where the router's outcome differs from what the case expects.
    fn misses(&self, case: &Case) -> Vec<String> {
        let mut out = Vec::new();
        let finals = self.finals();
        let parsed = self.log.requests.len();
        let expect = match case.expect {
            Expect::Either(_) if parsed == 0 && self.log.raw_len() == 0 => {
                if !matches!(finals[..], [400..=599]) {
                    out.push(format!("the client got {finals:?}, not one refusal"));
                }
                return out;
            }
            Expect::Either(n) => Expect::Forwarded(n),
            expect => expect,
        };
        match expect {
            Expect::Either(_) => unreachable!("resolved above"),
            Expect::Refused(status) => {
                if finals != [status] {
                    out.push(format!("the client got {finals:?}, not [{status}]"));
                }
                if parsed > 0 || self.log.raw_len() > 0 {
                    out.push(format!(
                        "the upstream received {} bytes, {parsed} requests; it should have received nothing",
                        self.log.raw_len()
                    ));
                }
            }
            Expect::Forwarded(n) => {
                if parsed != n {
                    out.push(format!("the upstream parsed {parsed} requests, not {n}"));
                }
                if finals.len() != n || self.upstream_answers() != n {
                    out.push(format!(
                        "the client got {finals:?}, {} of them from the upstream, not {n} answers from it",
                        self.upstream_answers()
                    ));
                }
            }
            Expect::Answered(statuses, n) => {
                if finals != statuses {
                    out.push(format!("the client got {finals:?}, not {statuses:?}"));
                }
                if parsed != n {
                    out.push(format!("the upstream parsed {parsed} requests, not {n}"));
                }
            }
        }
        if let Some(interim) = case.interim
            && self.interims() != interim
        {
            out.push(format!(
                "the client got the interim answers {:?}, not {interim:?}",
                self.interims()
            ));
        }
        if case.closes && self.end != End::Closed {
            out.push(format!("the connection ended {:?}, not closed", self.end));
        }
        for check in &case.checks {
            if let Err(e) = check(self) {
                out.push(e);
            }
        }
        out
    }

    /// A short verdict for the comparison table: `400`, `fwd 1`, `fwd 2 desync!`, `reset`, ….
    fn verdict(&self, case: &Case) -> String {
        let parsed = self.log.requests.len();
        let statuses: Vec<u16> = self.answers.iter().map(|a| a.status).collect();
        let ending = match self.end {
            End::Closed => "closed",
            End::Reset => "reset",
            End::Open => "no answer",
        };
        let mut out = summary(parsed, &statuses, ending);
        let violations = self.violations(case);
        if !self.log.refusals.is_empty() {
            out.push_str(" ambiguous!");
        }
        if violations
            .iter()
            .any(|v| v.contains("parsed") || v.contains("answered"))
        {
            out.push_str(" desync!");
        }
        if violations.iter().any(|v| v.contains("after an answer")) {
            out.push_str(" stray!");
        }
        out
    }

    fn describe(&self, case: &Case) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "  sent:     {}", case.sent());
        let _ = writeln!(out, "  got ({:?}): {}", self.end, show(&self.raw, 1200));
        for r in &self.log.requests {
            let _ = writeln!(
                out,
                "  upstream parsed (conn {}, seq {}): {} {} {} {} body {:?}",
                r.conn,
                r.seq,
                r.method,
                r.target,
                r.version,
                r.fields
                    .iter()
                    .map(|(n, v)| format!("{n}: {}", show(v, 60)))
                    .collect::<Vec<_>>()
                    .join(" | "),
                show(&r.body, 80)
            );
        }
        for why in &self.log.refusals {
            let _ = writeln!(out, "  upstream refused: {why}");
        }
        for (conn, raw) in self
            .log
            .raw
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
        {
            let _ = writeln!(out, "  upstream conn {conn} got: {}", show(raw, 1200));
        }
        if self.log.incomplete > 0 {
            let _ = writeln!(
                out,
                "  upstream incomplete requests: {}",
                self.log.incomplete
            );
        }
        out
    }
}

/// Runs `case` against a proxy listening at `proxy`, in front of `upstream`.
async fn run(case: &Case, proxy: SocketAddr, upstream: &Upstream) -> Outcome {
    let (raw, end) = timeout(CASE_LIMIT, drive(proxy, &case.parts))
        .await
        .unwrap_or((Vec::new(), End::Open));
    // Let the upstream's tasks record what was in flight when the client stopped.
    sleep(Duration::from_millis(100)).await;
    Outcome {
        answers: answers(&raw),
        raw,
        end,
        log: upstream.log(),
    }
}

async fn through_router(case: &Case) -> Outcome {
    let upstream = Upstream::start(case.mode).await;
    let (base, _) = router(table(&upstream.url(), &upstream.url(), 2000)).await;
    let proxy = base.trim_start_matches("http://").parse().unwrap();
    run(case, proxy, &upstream).await
}

async fn router_case(name: &str) {
    let case = all_cases()
        .into_iter()
        .find(|c| c.name == name)
        .expect("the case is in the table");
    let outcome = through_router(&case).await;
    let mut problems = outcome.misses(&case);
    problems.extend(outcome.violations(&case));
    assert!(
        problems.is_empty(),
        "{} ({}): expected {}, got {}\n  - {}\n{}",
        case.name,
        case.class,
        case.expected(),
        outcome.verdict(&case),
        problems.join("\n  - "),
        outcome.describe(&case)
    );
}

#[test]
fn the_table_is_large_and_its_names_unique() {
    let cases = all_cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len());
    assert!(cases.len() >= 60, "{} cases", cases.len());
}

#[test]
fn the_client_side_reads_statuses_and_sequence_numbers() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Seq: 1\r\ncontent-length: 5\r\n\r\nseq 1HTTP/1.1 400 Bad Request\r\n\r\n";
    let got: Vec<(u16, Option<String>)> = answers(raw)
        .into_iter()
        .map(|a| (a.status, a.seq))
        .collect();
    assert_eq!(got, [(100, None), (200, Some("1".into())), (400, None)]);
}

// ---------------------------------------------------------------------------------------------
// The same cases through HAProxy and nginx, where installed.

fn find_binary(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// `n` distinct ports nothing listens on now: each bound on 127.0.0.1:0, then all released
/// together (released one by one, the kernel may hand out the same port twice, and two
/// frontends on one port would answer each other's cases).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn scratch_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "fig-smuggling-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A path the proxies answer themselves, with the field [`READY`]: a probe that reaches a port the
/// proxy failed to bind (taken by another process between release and bind) gets no such answer.
const READY_PATH: &str = "/fig-smuggling-ready";
const READY: &str = "x-fig-smuggling-ready";

/// Whether the proxy itself answers on `port`.
async fn answers_itself(port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request =
            format!("GET {READY_PATH} HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.to_ascii_lowercase())
    };
    matches!(timeout(IO_LIMIT, probe).await, Ok(Some(answer)) if find(&answer, READY.as_bytes()).is_some())
}

fn haproxy_config(upstreams: &[SocketAddr], ports: &[u16]) -> String {
    let mut out = String::from(
        "global\n    maxconn 4096\n\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n    timeout http-request 5s\n    http-reuse always\n",
    );
    for (i, (upstream, port)) in upstreams.iter().zip(ports).enumerate() {
        let _ = write!(
            out,
            "\nfrontend case{i}\n    bind 127.0.0.1:{port}\n    http-request return status 204 hdr {READY} haproxy if {{ path {READY_PATH} }}\n    default_backend up{i}\n\nbackend up{i}\n    server s{i} {upstream}\n"
        );
    }
    out
}

fn nginx_config(dir: &Path, upstreams: &[SocketAddr], ports: &[u16]) -> String {
    let d = dir.display();
    let mut out = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n    access_log off;\n    client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
         client_max_body_size 16m;\n    proxy_connect_timeout 2s;\n    proxy_read_timeout 5s;\n    proxy_send_timeout 5s;\n"
    );
    for (i, (upstream, port)) in upstreams.iter().zip(ports).enumerate() {
        let _ = write!(
            out,
            "    upstream up{i} {{ server {upstream}; keepalive 4; }}\n\
             server {{ listen 127.0.0.1:{port}; location = {READY_PATH} {{ add_header {READY} nginx always; return 204; }} location / {{ proxy_pass http://up{i}; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n"
        );
    }
    out.push_str("}\n");
    out
}

/// A proxy process this test started, listening on `ports` (one per case).
struct External {
    child: Child,
    dir: PathBuf,
    ports: Vec<u16>,
}

impl External {
    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_external(
    name: &str,
    binary: &Path,
    upstreams: &[SocketAddr],
) -> Result<External, String> {
    let mut last = String::new();
    // A released port can be taken again before the proxy binds it: try a few times.
    for _ in 0..3 {
        let ports = free_ports(upstreams.len());
        let dir = scratch_dir(name);
        let config = dir.join(format!("{name}.conf"));
        let mut command = Command::new(binary);
        if name == "haproxy" {
            std::fs::write(&config, haproxy_config(upstreams, &ports)).unwrap();
            command.arg("-f").arg(&config).arg("-db");
        } else {
            std::fs::write(&config, nginx_config(&dir, upstreams, &ports)).unwrap();
            command
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&config)
                .arg("-e")
                .arg(dir.join("error.log"));
        }
        let output = std::fs::File::create(dir.join("output.log")).unwrap();
        command
            .stdin(std::process::Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("{name} did not start: {e}"))?;
        let ready = async {
            for port in &ports {
                loop {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("{name} exited: {status}"));
                    }
                    if answers_itself(*port).await {
                        break;
                    }
                    sleep(Duration::from_millis(20)).await;
                }
            }
            Ok(())
        };
        match timeout(Duration::from_secs(10), ready).await {
            Ok(Ok(())) => return Ok(External { child, dir, ports }),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("{name} did not listen within 10 s"),
        }
        let log = std::fs::read_to_string(dir.join("output.log")).unwrap_or_default();
        let errors = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        last = format!("{last}\n{log}{errors}");
        let _ = child.kill().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
    Err(last)
}

/// Runs every case through `name` (HAProxy or nginx), each in front of its own upstream.
async fn through_external(name: &str, cases: &[Case]) -> Option<Vec<Outcome>> {
    let Some(binary) = find_binary(name) else {
        println!("{name}: not installed; its column stays empty");
        return None;
    };
    let mut upstreams = Vec::new();
    for case in cases {
        upstreams.push(Upstream::start(case.mode).await);
    }
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.addr).collect();
    let proxy = match start_external(name, &binary, &addrs).await {
        Ok(proxy) => proxy,
        Err(e) => {
            println!("{name} ({}) could not be started: {e}", binary.display());
            return None;
        }
    };
    let outcomes = stream::iter(cases.iter().zip(&upstreams).zip(&proxy.ports))
        .map(|((case, upstream), port)| {
            run(case, SocketAddr::from(([127, 0, 0, 1], *port)), upstream)
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await;
    proxy.stop().await;
    Some(outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_with_haproxy_and_nginx() {
    let cases = all_cases();
    let routed: Vec<Outcome> = stream::iter(&cases)
        .map(through_router)
        .buffered(8)
        .collect()
        .await;
    let haproxy = through_external("haproxy", &cases).await;
    let nginx = through_external("nginx", &cases).await;
    if haproxy.is_none() && nginx.is_none() {
        println!(
            "neither haproxy nor nginx is installed: only the router's invariants are checked"
        );
    }

    let column = |outcomes: &Option<Vec<Outcome>>, i: usize| {
        outcomes
            .as_ref()
            .map_or_else(|| "-".to_string(), |o| o[i].verdict(&cases[i]))
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<38} {:<46} {:<16} {:<24} {:<24} nginx",
        "case", "class", "expected", "router", "haproxy"
    );
    for (i, case) in cases.iter().enumerate() {
        let _ = writeln!(
            table,
            "{:<38} {:<46} {:<16} {:<24} {:<24} {}",
            case.name,
            case.class,
            case.expected(),
            routed[i].verdict(case),
            column(&haproxy, i),
            column(&nginx, i)
        );
    }
    let _ = writeln!(
        table,
        "\nverdicts: a status list is what the client got with nothing reaching the upstream; \
         `fwd n` = the upstream parsed n requests (statuses follow when not all 200); \
         `ambiguous!` = the upstream's strict parser refused what the proxy sent; \
         `desync!` = the upstream parsed more requests than the client sent, or answered more \
         than the client saw; `stray!` = an upstream's unsolicited bytes reached the client."
    );
    for (name, outcomes) in [("haproxy", &haproxy), ("nginx", &nginx)] {
        let Some(outcomes) = outcomes else { continue };
        let forwarded = |o: &Outcome| !o.log.requests.is_empty();
        let stricter: Vec<&str> = cases
            .iter()
            .enumerate()
            .filter(|(i, _)| forwarded(&routed[*i]) && !forwarded(&outcomes[*i]))
            .map(|(_, c)| c.name)
            .collect();
        let looser: Vec<&str> = cases
            .iter()
            .enumerate()
            .filter(|(i, _)| !forwarded(&routed[*i]) && forwarded(&outcomes[*i]))
            .map(|(_, c)| c.name)
            .collect();
        let unsafe_: Vec<&str> = cases
            .iter()
            .enumerate()
            .filter(|(i, c)| !outcomes[*i].violations(c).is_empty())
            .map(|(_, c)| c.name)
            .collect();
        let _ = writeln!(
            table,
            "\n{name} forwards nothing where the router forwards: {stricter:?}"
        );
        let _ = writeln!(
            table,
            "{name} forwards where the router forwards nothing: {looser:?}"
        );
        let _ = writeln!(table, "{name} breaks an invariant: {unsafe_:?}");
    }
    println!("{table}");
    // SMUGGLING_DETAIL=case,case prints both ends of those cases for every proxy.
    let detail = std::env::var("SMUGGLING_DETAIL").unwrap_or_default();
    for (i, case) in cases.iter().enumerate() {
        if !detail.split(',').any(|name| name == case.name) {
            continue;
        }
        for (name, outcome) in [
            ("router", Some(&routed[i])),
            ("haproxy", haproxy.as_ref().map(|o| &o[i])),
            ("nginx", nginx.as_ref().map(|o| &o[i])),
        ] {
            if let Some(outcome) = outcome {
                println!("{} through {name}:\n{}", case.name, outcome.describe(case));
            }
        }
    }

    let broken: Vec<String> = cases
        .iter()
        .zip(&routed)
        .filter_map(|(case, outcome)| {
            let v = outcome.violations(case);
            (!v.is_empty()).then(|| {
                format!(
                    "{}: {}\n{}",
                    case.name,
                    v.join("; "),
                    outcome.describe(case)
                )
            })
        })
        .collect();
    assert!(
        broken.is_empty(),
        "the router broke invariants:\n{}",
        broken.join("\n")
    );
}
