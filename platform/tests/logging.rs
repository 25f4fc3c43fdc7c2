//! A client's malformed request is answered 400 and leaves no ERROR line; the server's own errors
//! still log at ERROR. Its own test binary: the subscriber is process-wide.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};

/// Everything logged, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn fails() -> HttpResponse {
    tracing::error!("the server's own failure");
    HttpResponse::InternalServerError().finish()
}

/// Sends raw bytes on a fresh connection; returns the status line.
fn send(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn malformed_requests_are_not_errors_but_server_failures_are() {
    let captured = Captured::default();
    let writer = captured.clone();
    platform::logging::init_with("info", move || writer.clone(), false).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(|| App::new().route("/fails", web::get().to(fails)))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
    let handle = server.handle();
    let serving = std::thread::spawn(move || actix_web::rt::System::new().block_on(server));

    // A control character in the target: actix answers 400 and logs a "URI error".
    let bad = send(addr, b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let broken = send(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n",
    );
    assert!(broken.starts_with("HTTP/1.1 400"), "{broken}");
    let failed = send(
        addr,
        b"GET /fails HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(failed.starts_with("HTTP/1.1 500"), "{failed}");

    // The server's own error is the last thing logged: once it is there, so is anything the
    // malformed requests logged before it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !captured.text().contains("the server's own failure") {
        assert!(Instant::now() < deadline, "logged: {}", captured.text());
        std::thread::sleep(Duration::from_millis(10));
    }
    let logged = captured.text();
    assert!(
        !logged.contains("actix_http"),
        "a client's mistake logged: {logged}"
    );
    assert!(logged.contains("ERROR"), "{logged}");

    actix_web::rt::System::new().block_on(handle.stop(true));
    serving.join().unwrap().unwrap();
}
