//! Per-pipeline figures, kept in atomics (the stream loop never waits on a reader), rendered as
//! Prometheus text on `/metrics` by a deliberately tiny HTTP responder.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::wire::pg_micros_to_system_time;

#[derive(Debug)]
pub struct PipelineMetrics {
    pub name: String,
    phase: Mutex<&'static str>,
    error: Mutex<Option<String>>,
    source_lsn: AtomicU64,
    applied_lsn: AtomicU64,
    transactions: AtomicU64,
    /// Source commit time (Unix µs) of the last transaction applied.
    last_commit_unix_micros: AtomicI64,
    retained_wal_bytes: AtomicI64,
    /// Times the pipeline applied again in commit order, without streaming, after a streamed
    /// transaction was refused or two sessions waited on each other.
    commit_order_retries: AtomicU64,
    /// Rows the initial copies sent so far, and the planner's estimate of all they will send:
    /// an operator watching a long first copy wants to know how far it got.
    copy_rows: AtomicU64,
    copy_rows_estimated: AtomicU64,
}

fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl PipelineMetrics {
    pub fn new(name: &str) -> Arc<PipelineMetrics> {
        Arc::new(PipelineMetrics {
            name: name.to_string(),
            phase: Mutex::new("starting"),
            error: Mutex::new(None),
            source_lsn: AtomicU64::new(0),
            applied_lsn: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            last_commit_unix_micros: AtomicI64::new(0),
            retained_wal_bytes: AtomicI64::new(0),
            commit_order_retries: AtomicU64::new(0),
            copy_rows: AtomicU64::new(0),
            copy_rows_estimated: AtomicU64::new(0),
        })
    }

    pub fn set_phase(&self, phase: &'static str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }

    pub fn set_error(&self, error: &str) {
        self.set_phase("failed");
        if let Ok(mut e) = self.error.lock() {
            *e = Some(error.to_string());
        }
    }

    pub fn source_lsn(&self, lsn: u64) {
        self.source_lsn.fetch_max(lsn, Ordering::Relaxed);
    }

    pub fn applied(&self, lsn: u64) {
        self.applied_lsn.fetch_max(lsn, Ordering::Relaxed);
    }

    pub fn commit_seen(&self, pg_commit_time: i64) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let unix = unix_micros(pg_micros_to_system_time(pg_commit_time));
        self.last_commit_unix_micros.store(unix, Ordering::Relaxed);
    }

    pub fn retained_wal(&self, bytes: i64) {
        self.retained_wal_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn commit_order_retry(&self) {
        self.commit_order_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of tables holding about `rows` rows is starting.
    pub fn copy_planned(&self, rows: u64) {
        self.copy_rows_estimated.fetch_add(rows, Ordering::Relaxed);
    }

    /// `rows` more rows were copied.
    pub fn copied(&self, rows: u64) {
        self.copy_rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Rows copied so far and the estimate of the whole copy (0 when unknown).
    pub fn copy_progress(&self) -> (u64, u64) {
        (
            self.copy_rows.load(Ordering::Relaxed),
            self.copy_rows_estimated.load(Ordering::Relaxed),
        )
    }

    pub fn commit_order_retries(&self) -> u64 {
        self.commit_order_retries.load(Ordering::Relaxed)
    }

    pub fn phase(&self) -> &'static str {
        self.phase.lock().map(|p| *p).unwrap_or("unknown")
    }

    /// Lag in seconds: how old the last applied source commit is, while the source is ahead.
    fn lag_seconds(&self) -> f64 {
        let applied = self.applied_lsn.load(Ordering::Relaxed);
        let source = self.source_lsn.load(Ordering::Relaxed);
        let last = self.last_commit_unix_micros.load(Ordering::Relaxed);
        if source <= applied || last == 0 {
            return 0.0;
        }
        (unix_micros(SystemTime::now()) - last).max(0) as f64 / 1e6
    }

    fn render_into(&self, out: &mut String) {
        use std::fmt::Write;
        let name = &self.name;
        let applied = self.applied_lsn.load(Ordering::Relaxed);
        let source = self.source_lsn.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "fig_replication_up{{pipeline=\"{name}\",phase=\"{}\"}} {}",
            self.phase(),
            u8::from(self.phase() != "failed")
        );
        let _ = writeln!(
            out,
            "fig_replication_lag_bytes{{pipeline=\"{name}\"}} {}",
            source.saturating_sub(applied)
        );
        let _ = writeln!(
            out,
            "fig_replication_lag_seconds{{pipeline=\"{name}\"}} {:.3}",
            self.lag_seconds()
        );
        let _ = writeln!(
            out,
            "fig_replication_applied_lsn{{pipeline=\"{name}\"}} {applied}"
        );
        let _ = writeln!(
            out,
            "fig_replication_transactions_total{{pipeline=\"{name}\"}} {}",
            self.transactions.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "fig_replication_retained_wal_bytes{{pipeline=\"{name}\"}} {}",
            self.retained_wal_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "fig_replication_commit_order_retries_total{{pipeline=\"{name}\"}} {}",
            self.commit_order_retries()
        );
        let (copied, estimated) = self.copy_progress();
        let _ = writeln!(
            out,
            "fig_replication_copy_rows_total{{pipeline=\"{name}\"}} {copied}"
        );
        let _ = writeln!(
            out,
            "fig_replication_copy_rows_estimated{{pipeline=\"{name}\"}} {estimated}"
        );
    }
}

/// The Prometheus text for every pipeline.
pub fn render(pipelines: &[Arc<PipelineMetrics>]) -> String {
    let mut out = String::from(
        "# TYPE fig_replication_up gauge\n# TYPE fig_replication_lag_bytes gauge\n# TYPE fig_replication_lag_seconds gauge\n# TYPE fig_replication_applied_lsn gauge\n# TYPE fig_replication_transactions_total counter\n# TYPE fig_replication_retained_wal_bytes gauge\n# TYPE fig_replication_commit_order_retries_total counter\n# TYPE fig_replication_copy_rows_total counter\n# TYPE fig_replication_copy_rows_estimated gauge\n",
    );
    for p in pipelines {
        p.render_into(&mut out);
    }
    out
}

/// Answers every request on `listener` with the metrics (any path but `/metrics` is a 404).
pub async fn serve(listener: TcpListener, pipelines: Vec<Arc<PipelineMetrics>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let pipelines = pipelines.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let ok = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
            let (status, body) = if ok {
                ("200 OK", render(&pipelines))
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_string(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
