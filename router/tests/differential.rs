//! A randomized differential test of the data path: a generated workload of pipelined requests
//! (methods, escaped paths, end-to-end fields, Content-Length and chunked bodies with
//! extensions and trailers) goes through the router to a recording upstream, and what the
//! upstream received is compared with what the client sent, request by request; what the
//! client received is compared with what the upstream answered. Deterministic: every case comes
//! from a seed, printed on failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

use support::raw::{LIMIT, raw_upstream};
use support::rng::Rng;
use support::{router, table};

/// A token of up to `max` characters that need no escaping anywhere.
fn token(rng: &mut Rng, max: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";
    (0..1 + rng.below(max))
        .map(|_| char::from(rng.pick(CHARS)))
        .collect()
}

/// How a generated body is framed on the wire.
#[derive(Debug, Clone)]
enum Body {
    None,
    Length(Vec<u8>),
    /// The exact chunked bytes (sizes, extensions, trailers) that carry a payload.
    Chunked(Vec<u8>),
}

/// One generated request: what the client sends, and what the upstream must receive.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    method: &'static str,
    target: String,
    /// End-to-end fields, in order: the upstream must receive each, in this order.
    fields: Vec<(String, String)>,
    body: Body,
}

impl Sent {
    fn generate(rng: &mut Rng, id: String) -> Sent {
        let method = ["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"][rng.below(7)];
        let prefix = ["/catalog/", "/wishlists/", "/orders/", "/"][rng.below(4)];
        // A letter first: a segment of only dots is refused, rightly.
        let mut target = format!("{prefix}p{}", token(rng, 12));
        if rng.below(3) == 0 {
            // A valid escape: the upstream must get it as sent, not decoded.
            target.push_str(&format!("/%{:02X}x", 0x41 + rng.below(26)));
        }
        if rng.below(2) == 0 {
            target.push_str(&format!("?q={}&r=%2F{}", token(rng, 8), token(rng, 4)));
        }
        let mut fields: Vec<(String, String)> = (0..rng.below(6))
            .map(|i| (format!("X-Test-{i}"), token(rng, 40)))
            .collect();
        if rng.below(2) == 0 {
            fields.push(("x-user-id".to_string(), token(rng, 10)));
        }
        let body = match (method, rng.below(3)) {
            ("GET" | "HEAD" | "DELETE", _) | (_, 0) => Body::None,
            (_, 1) => {
                let n = rng.below(40_000);
                Body::Length(rng.bytes(n))
            }
            _ => {
                let n = rng.below(40_000);
                let payload = rng.bytes(n);
                let mut wire = Vec::new();
                let mut rest = &payload[..];
                while !rest.is_empty() {
                    let n = (1 + rng.below(9_000)).min(rest.len());
                    wire.extend_from_slice(format!("{n:x}").as_bytes());
                    if rng.below(4) == 0 {
                        wire.extend_from_slice(format!(";ext={}", token(rng, 6)).as_bytes());
                    }
                    wire.extend_from_slice(b"\r\n");
                    wire.extend_from_slice(&rest[..n]);
                    wire.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                wire.extend_from_slice(b"0\r\n");
                if rng.below(3) == 0 {
                    wire.extend_from_slice(format!("X-Trailer: {}\r\n", token(rng, 10)).as_bytes());
                }
                wire.extend_from_slice(b"\r\n");
                Body::Chunked(wire)
            }
        };
        Sent {
            id,
            method,
            target,
            fields,
            body,
        }
    }

    fn wire(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\nHost: shop\r\n", self.method, self.target);
        out.push_str(&format!("x-req-id: {}\r\n", self.id));
        for (name, value) in &self.fields {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        let mut out = out.into_bytes();
        match &self.body {
            Body::None => out.extend_from_slice(b"\r\n"),
            Body::Length(b) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Body::Chunked(wire) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                out.extend_from_slice(wire);
            }
        }
        out
    }
}

/// What the upstream received for one request.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    fields: Vec<(String, String)>,
    /// The body's bytes as they arrived (the chunked framing included).
    body: Vec<u8>,
}

/// Reads exactly `n` bytes into `buf` (beyond what it holds).
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Option<()> {
    while buf.len() < n {
        let mut more = [0u8; 16 * 1024];
        match stream.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&more[..k]),
        }
    }
    Some(())
}

/// Reads until `buf` holds a CRLF-terminated line at `from`; returns where the line ends.
async fn line_end(stream: &mut TcpStream, buf: &mut Vec<u8>, from: usize) -> Option<usize> {
    loop {
        if let Some(i) = buf[from..].windows(2).position(|w| w == b"\r\n") {
            return Some(from + i + 2);
        }
        let want = buf.len() + 1;
        fill(stream, buf, want).await?;
    }
}

/// Reads one request (head, then a Content-Length or chunked body kept as it arrived).
async fn read_one(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Received> {
    let mut end = 0;
    loop {
        let next = line_end(stream, buf, end).await?;
        if next - end == 2 {
            end = next;
            break;
        }
        end = next;
    }
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let (method, target) = (start.next()?.to_string(), start.next()?.to_string());
    let fields: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body_end = if field("transfer-encoding").is_some() {
        let mut at = end;
        loop {
            let size_end = line_end(stream, buf, at).await?;
            let size_text = String::from_utf8_lossy(&buf[at..size_end - 2]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = size_end;
            if size == 0 {
                loop {
                    let trailer_end = line_end(stream, buf, at).await?;
                    let blank = trailer_end - at == 2;
                    at = trailer_end;
                    if blank {
                        break;
                    }
                }
                break at;
            }
            fill(stream, buf, at + size + 2).await?;
            at += size + 2;
        }
    } else {
        let length: usize = field("content-length").map_or(0, |v| v.parse().unwrap());
        fill(stream, buf, end + length).await?;
        end + length
    };
    let body = buf[end..body_end].to_vec();
    buf.drain(..body_end);
    Some(Received {
        method,
        target,
        fields,
        body,
    })
}

/// The answer the upstream gives to request `id`: its size and framing follow from the id.
fn answer_body(id: &str) -> Vec<u8> {
    let n: usize = id.bytes().map(usize::from).sum::<usize>() * 37 % 20_000;
    (0..n)
        .map(|i| b"0123456789abcdef"[(i * 7 + id.len()) % 16])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_upstream_receives_is_what_the_client_sent() {
    let received: Arc<Mutex<HashMap<String, Received>>> = Arc::default();
    let record = received.clone();
    let (up, _) = raw_upstream(move |mut stream, count| {
        let record = record.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(request) = read_one(&mut stream, &mut buf).await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let id = request
                    .fields
                    .iter()
                    .find(|(n, _)| n == "x-req-id")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let body = answer_body(&id);
                let head_only = request.method == "HEAD";
                record.lock().unwrap().insert(id.clone(), request);
                // Alternate the answer's framing: Content-Length, or chunked in two pieces.
                let mut answer = format!("HTTP/1.1 200 OK\r\nx-req-id: {id}\r\n").into_bytes();
                if body.len().is_multiple_of(2) {
                    answer.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    if !head_only {
                        answer.extend_from_slice(&body);
                    }
                } else {
                    answer.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    if !head_only {
                        let half = body.len() / 2;
                        for piece in [&body[..half], &body[half..]] {
                            if !piece.is_empty() {
                                answer
                                    .extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                                answer.extend_from_slice(piece);
                                answer.extend_from_slice(b"\r\n");
                            }
                        }
                        answer.extend_from_slice(b"0\r\n\r\n");
                    }
                }
                if stream.write_all(&answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let (base, _) = router(table(&up, &up, 5_000)).await;

    let seed = std::env::var("DIFFERENTIAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_u64);
    let mut rng = Rng(seed);
    let connections: Vec<Vec<Sent>> = (0..100)
        .map(|c| {
            (0..1 + rng.below(8))
                .map(|r| Sent::generate(&mut rng, format!("c{c}r{r}")))
                .collect()
        })
        .collect();
    let clients = connections.iter().cloned().map(|requests| {
        let base = base.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(base.trim_start_matches("http://"))
                .await
                .unwrap();
            // Pipelined: every request in one go, then every answer in order.
            let wire: Vec<u8> = requests.iter().flat_map(Sent::wire).collect();
            let (mut read, mut write) = stream.split();
            let send = async { write.write_all(&wire).await.unwrap() };
            let receive = async {
                let mut answers = Vec::new();
                let mut buf = Vec::new();
                for request in &requests {
                    let mut end = 0;
                    loop {
                        while !buf[end..].windows(2).any(|w| w == b"\r\n") {
                            let mut more = [0u8; 16 * 1024];
                            let n = read.read(&mut more).await.unwrap();
                            assert!(n > 0, "{}: the router closed early", request.id);
                            buf.extend_from_slice(&more[..n]);
                        }
                        let i = end + buf[end..].windows(2).position(|w| w == b"\r\n").unwrap();
                        let blank = i == end;
                        end = i + 2;
                        if blank {
                            break;
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end);
                    let id = head
                        .lines()
                        .find_map(|l| l.strip_prefix("x-req-id: "))
                        .unwrap_or("?")
                        .to_string();
                    // The router re-frames nothing: the upstream's framing arrives as it was.
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map(|v| v.trim().parse::<usize>().unwrap());
                    let body = if request.method == "HEAD" {
                        Vec::new()
                    } else if let Some(length) = length {
                        while buf.len() < length {
                            let mut more = [0u8; 16 * 1024];
                            let n = read.read(&mut more).await.unwrap();
                            assert!(n > 0, "{}: body cut short", request.id);
                            buf.extend_from_slice(&more[..n]);
                        }
                        buf.drain(..length).collect()
                    } else {
                        let mut body = Vec::new();
                        loop {
                            while !buf.windows(2).any(|w| w == b"\r\n") {
                                let mut more = [0u8; 16 * 1024];
                                let n = read.read(&mut more).await.unwrap();
                                assert!(n > 0, "{}: chunks cut short", request.id);
                                buf.extend_from_slice(&more[..n]);
                            }
                            let i = buf.windows(2).position(|w| w == b"\r\n").unwrap();
                            let size = usize::from_str_radix(
                                std::str::from_utf8(&buf[..i]).unwrap().trim(),
                                16,
                            )
                            .unwrap();
                            let need = i + 2 + size + 2;
                            while buf.len() < need {
                                let mut more = [0u8; 16 * 1024];
                                let n = read.read(&mut more).await.unwrap();
                                assert!(n > 0, "{}: chunk cut short", request.id);
                                buf.extend_from_slice(&more[..n]);
                            }
                            body.extend_from_slice(&buf[i + 2..i + 2 + size]);
                            buf.drain(..need);
                            if size == 0 {
                                break;
                            }
                        }
                        body
                    };
                    answers.push((head, id, body));
                }
                answers
            };
            let ((), answers) = tokio::time::timeout(LIMIT, async { tokio::join!(send, receive) })
                .await
                .expect("every answer arrives");
            answers
        })
    });
    let mut all_answers = Vec::new();
    for client in clients.collect::<Vec<_>>() {
        all_answers.push(client.await.unwrap());
    }

    let received = received.lock().unwrap();
    let mut compared = 0;
    for (requests, answers) in connections.iter().zip(&all_answers) {
        for (sent, (head, id, body)) in requests.iter().zip(answers) {
            let context = format!("seed {seed}, {}: {sent:?}", sent.id);
            assert!(head.starts_with("http/1.1 200 "), "{context}: {head}");
            assert_eq!(id, &sent.id, "{context}: answers out of order");
            if sent.method != "HEAD" {
                assert_eq!(body, &answer_body(&sent.id), "{context}: the answer's body");
            }
            let got = received
                .get(&sent.id)
                .unwrap_or_else(|| panic!("{context}: never reached the upstream"));
            assert_eq!(got.method, sent.method, "{context}");
            assert_eq!(got.target, sent.target, "{context}: the target, as sent");
            let end_to_end: Vec<(String, String)> = got
                .fields
                .iter()
                .filter(|(n, _)| n.starts_with("x-test-") || n == "x-user-id")
                .cloned()
                .collect();
            let expected: Vec<(String, String)> = sent
                .fields
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect();
            assert_eq!(end_to_end, expected, "{context}: end-to-end fields");
            let lengths = got
                .fields
                .iter()
                .filter(|(n, _)| n == "content-length")
                .count();
            let chunked = got.fields.iter().any(|(n, _)| n == "transfer-encoding");
            match &sent.body {
                Body::None => {
                    assert!(got.body.is_empty() && !chunked, "{context}");
                    assert_eq!(lengths, 0, "{context}");
                }
                Body::Length(b) => {
                    assert_eq!(&got.body, b, "{context}: the body");
                    assert_eq!(lengths, 1, "{context}: one Content-Length");
                    assert!(!chunked, "{context}");
                }
                Body::Chunked(wire) => {
                    assert_eq!(&got.body, wire, "{context}: the chunks, as sent");
                    assert!(chunked && lengths == 0, "{context}");
                }
            }
            compared += 1;
        }
    }
    let sent_total: usize = connections.iter().map(Vec::len).sum();
    assert_eq!(compared, sent_total);
    assert_eq!(
        received.len(),
        sent_total,
        "the upstream got exactly what was sent"
    );
}
