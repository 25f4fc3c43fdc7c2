//! Raw HTTP/1.1 over TCP for the data-path tests: upstreams that misbehave exactly as a case
//! needs and count what reached them, and clients that write bytes as they are and read answers
//! off the wire.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a test waits for the router before failing.
pub const LIMIT: Duration = Duration::from_secs(10);

/// A complete, kept-alive `200 ok`.
pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A raw upstream: every accepted connection is handed to `serve` with its number (from 0).
/// Returns the base URL and the number of requests the upstream has read (counted by `serve`
/// through the counter it is given).
pub async fn raw_upstream<F, Fut>(serve: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(TcpStream, Arc<AtomicUsize>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, counter.clone()));
        }
    });
    (base, requests)
}

/// Reads one request head and its Content-Length body off `stream`; `None` at end of stream.
/// `buf` carries bytes read past it to the next call.
pub async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let mut more = [0u8; 4096];
                match stream.read(&mut more).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&more[..n]),
                }
            }
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            return Some((head, body));
        }
        let mut more = [0u8; 4096];
        match stream.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&more[..n]),
        }
    }
}

/// An upstream that answers every request on a kept connection with `answer`.
pub async fn answering(answer: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    raw_upstream(move |mut stream, count| async move {
        let mut buf = Vec::new();
        while read_request(&mut stream, &mut buf).await.is_some() {
            count.fetch_add(1, Ordering::SeqCst);
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await
}

pub fn addr(base: &str) -> &str {
    base.trim_start_matches("http://")
}

pub async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(addr(base)).await.unwrap()
}

/// Writes `bytes` and reads until the router closes the connection.
pub async fn exchange(base: &str, bytes: &[u8]) -> String {
    let mut stream = connect(base).await;
    stream.write_all(bytes).await.unwrap();
    read_to_close(&mut stream).await
}

pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(LIMIT, stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the router kept the connection open: {}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one whole answer (head and Content-Length body) off a kept connection.
pub async fn read_answer(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        let mut more = [0u8; 4096];
        let n = tokio::time::timeout(LIMIT, stream.read(&mut more))
            .await
            .expect("an answer arrives")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&more[..n]);
    }
}

/// The status of every answer in `text`: each `HTTP/1.1 ` followed by three digits (an error
/// message may mention "an HTTP/1.1 request" too).
pub fn statuses(text: &str) -> Vec<&str> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

/// POSTs a body of `size` bytes to `base` while reading whatever comes back until the router
/// closes: the text read, and how the reading ended (an error is a reset).
pub async fn upload_reading(base: &str, size: usize) -> (String, std::io::Result<usize>) {
    let (mut read, mut write) = connect(base).await.into_split();
    let upload = tokio::spawn(async move {
        let head = format!("POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: {size}\r\n\r\n");
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let ended = tokio::time::timeout(LIMIT, read.read_to_end(&mut out))
        .await
        .expect("the answer arrives and the connection ends");
    let _ = upload.await;
    (String::from_utf8_lossy(&out).into_owned(), ended)
}
