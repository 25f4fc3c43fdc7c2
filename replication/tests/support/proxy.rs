//! A TCP proxy in front of a server that can hold back what the server sends: everything the
//! server writes while paused is kept (without limit, so the server never waits) and delivered
//! at once on resume, as when the engine is busy and the stream piles up behind it.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

/// Where the proxy forwards to.
#[derive(Clone)]
pub enum Upstream {
    Tcp(String),
    /// A server's Unix socket file.
    Unix(std::path::PathBuf),
}

impl Upstream {
    /// The server a libpq URL names (TCP host and port, or socket directory and port).
    pub fn of_url(url: &str) -> Upstream {
        let config: tokio_postgres::Config = url.parse().unwrap();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => Upstream::Tcp(format!("{host}:{port}")),
            tokio_postgres::config::Host::Unix(dir) => {
                Upstream::Unix(dir.join(format!(".s.PGSQL.{port}")))
            }
        }
    }
}

pub struct Proxy {
    pub port: u16,
    paused: Arc<watch::Sender<bool>>,
}

impl Proxy {
    /// Listens on a free port and forwards every connection to `upstream`.
    pub async fn start(upstream: Upstream) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (paused, _) = watch::channel(false);
        let paused = Arc::new(paused);
        let subscribe = paused.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let hold = subscribe.subscribe();
                match &upstream {
                    Upstream::Tcp(addr) => {
                        if let Ok(server) = TcpStream::connect(addr).await {
                            tokio::spawn(forward(client, server, hold));
                        }
                    }
                    Upstream::Unix(path) => {
                        if let Ok(server) = UnixStream::connect(path).await {
                            tokio::spawn(forward(client, server, hold));
                        }
                    }
                }
            }
        });
        Proxy { port, paused }
    }

    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

async fn forward<S>(client: TcpStream, server: S, mut hold: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = tokio::io::split(server);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
    });
    let mut held = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = from_server.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                held.extend_from_slice(&buf[..n]);
            }
            changed = hold.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        if !*hold.borrow() && !held.is_empty() {
            // Whatever the server has written by now goes out together with the rest.
            while let Some(Ok(n)) =
                futures_util::FutureExt::now_or_never(from_server.read(&mut buf))
            {
                if n == 0 {
                    break;
                }
                held.extend_from_slice(&buf[..n]);
            }
            if to_client.write_all(&held).await.is_err() {
                return;
            }
            held.clear();
        }
    }
    let _ = to_client.write_all(&held).await;
    let _ = to_client.shutdown().await;
}
