//! Recording a sample of live requests for the parallel run's replay (`fig replay`): one JSON
//! line per request, the same format as the corpora in `tests/parallel_run/`.
//!
//! What is kept is only what replaying needs, sanitised: method, target (values of query
//! parameters whose names suggest secrets replaced), the two fields that steer routing
//! (`x-user-id`, `x-session-id`), and a JSON body with the values of secret-looking keys
//! replaced. Credentials, cookies and every other field are left out, and so is a body that is
//! not JSON. Lines go to a writer task through a bounded queue: when the disk cannot keep up,
//! lines are dropped and counted, and the data path never waits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::mpsc;

use crate::h1::Head;

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub method: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

/// Where and how much to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSettings {
    pub file: PathBuf,
    /// Requests recorded out of every hundred (1..=100).
    pub percent: u32,
}

/// Request fields kept: they decide where a request is routed.
const KEPT_FIELDS: [&str; 2] = ["x-user-id", "x-session-id"];
/// Names (of query parameters and JSON keys) whose values are not recorded.
const SECRET_NAMES: [&str; 9] = [
    "token",
    "key",
    "secret",
    "password",
    "auth",
    "session",
    "signature",
    "card",
    "cvv",
];
const REDACTED: &str = "REDACTED";
/// Lines waiting for the disk at most.
const QUEUED: usize = 1_024;

fn secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| lower.contains(s))
}

/// `target` with the values of secret-looking query parameters replaced.
pub fn sanitise_target(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(name) => format!("{name}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// `value` with the values of secret-looking keys replaced, at any depth.
pub fn sanitise_body(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if secret(name) {
                    *field = serde_json::Value::String(REDACTED.into());
                } else {
                    sanitise_body(field);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sanitise_body),
        _ => {}
    }
}

/// The line for a request: `None` when its body is not JSON (a replay could not send it as
/// the contract expects, and it might hold anything).
pub fn line(head: &Head, target: &str, body: Option<&[u8]>) -> Option<Line> {
    let body = match body {
        None | Some([]) => None,
        Some(bytes) => {
            let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
            sanitise_body(&mut value);
            Some(value)
        }
    };
    let headers = KEPT_FIELDS
        .iter()
        .filter_map(|name| head.get(name).map(|v| (name.to_string(), v.to_string())))
        .collect();
    Some(Line {
        method: head.method().to_string(),
        target: sanitise_target(target),
        headers,
        body,
    })
}

/// The recorder of one router instance.
pub struct Recorder {
    percent: u64,
    seen: AtomicU64,
    queue: mpsc::SyncSender<String>,
    pub dropped: AtomicU64,
}

impl Recorder {
    /// Opens (appends to) the file and starts the writer, a thread of its own: file writes
    /// block, and must not hold up the data path's runtime.
    pub fn start(settings: &RecordSettings) -> std::io::Result<Arc<Recorder>> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.file)?;
        let (queue, lines) = mpsc::sync_channel::<String>(QUEUED);
        let path = settings.file.display().to_string();
        std::thread::Builder::new()
            .name("router-record".into())
            .spawn(move || {
                for line in lines {
                    if let Err(e) = file.write_all(line.as_bytes()) {
                        tracing::warn!(file = %path, error = %e, "recording stopped: cannot write");
                        return;
                    }
                }
            })?;
        Ok(Arc::new(Recorder {
            percent: u64::from(settings.percent.min(100)),
            seen: AtomicU64::new(0),
            queue,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Whether this request is in the sample: `percent` of every hundred, spread evenly.
    pub fn sampled(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        (n * self.percent) % 100 < self.percent
    }

    /// Queues `line` for the file, or counts it dropped.
    pub fn record(&self, line: &Line) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        if self.queue.try_send(text).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_query_values_are_replaced() {
        let cases = [
            ("/catalog/albums", "/catalog/albums"),
            ("/a?page=2&size=10", "/a?page=2&size=10"),
            (
                "/a?access_token=x&page=2",
                "/a?access_token=REDACTED&page=2",
            ),
            ("/a?flag&API_KEY=1", "/a?flag&API_KEY=REDACTED"),
        ];
        for (target, want) in cases {
            assert_eq!(sanitise_target(target), want);
        }
    }

    #[test]
    fn secret_json_values_are_replaced_at_any_depth() {
        let mut body = serde_json::json!({
            "title": "Blue",
            "password": "hunter2",
            "payment": {"card_number": "4111", "amount": 3},
            "lines": [{"auth_code": 1, "qty": 2}]
        });
        sanitise_body(&mut body);
        assert_eq!(
            body,
            serde_json::json!({
                "title": "Blue",
                "password": "REDACTED",
                "payment": {"card_number": "REDACTED", "amount": 3},
                "lines": [{"auth_code": "REDACTED", "qty": 2}]
            })
        );
    }

    #[test]
    fn the_sample_is_spread_evenly() {
        for (percent, of_hundred) in [(100, 100), (10, 10), (25, 25), (1, 1)] {
            let (queue, _lines) = mpsc::sync_channel(1);
            let r = Recorder {
                percent,
                seen: AtomicU64::new(0),
                queue,
                dropped: AtomicU64::new(0),
            };
            let taken = (0..100).filter(|_| r.sampled()).count();
            assert_eq!(taken, of_hundred, "{percent}%");
        }
    }
}
