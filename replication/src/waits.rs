//! A watch over the pipeline's own target sessions, so that none waits for another for good.
//!
//! The main session and the sessions of streamed transactions apply concurrently (ADR 0010).
//! Source order is kept (ordinary transactions commit before a stream block is applied) and row
//! locks on the source keep concurrent transactions off each other's rows, so on the target they
//! do not wait for each other either, as long as the target has no constraint of its own that
//! the source lacks (a unique index only the target has, say). When one does, one session waits
//! for a lock another holds until its commit, and that commit comes later in the stream than
//! the waiting statement: the engine would wait for ever. This task looks for such a wait and
//! cancels the waiting statement: the pipeline then applies again from its position in source
//! commit order, without streaming, where no two of its sessions are open at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the target's sessions are looked at.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// A wait on another of our sessions longer than this is taken as one that never ends. A
/// statement of a live session runs for milliseconds; cancelling a wait that would have ended
/// costs one pass without streaming, not data.
const WAIT_LIMIT: Duration = Duration::from_secs(3);

/// Our sessions waiting on one another's locks for longer than `$2` seconds: the waiting pid,
/// and a description of the wait.
const WAITS_SQL: &str = "
    SELECT w.pid,
           format('session %s (%s) waited %s s for a lock held by session %s (%s, %s): %s',
                  w.pid, w.application_name,
                  round(extract(epoch FROM now() - w.query_start)::numeric, 1),
                  b.pid, b.application_name, b.state, left(w.query, 200))
      FROM pg_stat_activity w
      CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocker(pid)
      JOIN pg_stat_activity b ON b.pid = blocker.pid
     WHERE w.wait_event_type = 'Lock'
       AND w.application_name = ANY($1) AND b.application_name = ANY($1)
       AND w.query_start < now() - make_interval(secs => $2)";

/// The running watch; stops when dropped.
pub struct WaitWatch {
    seen: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WaitWatch {
    /// Watches the sessions named `sessions` (application names) on the target at `url`.
    pub fn spawn(url: &str, sessions: Vec<String>) -> WaitWatch {
        let seen = Arc::new(Mutex::new(None));
        let task = tokio::spawn(watch(url.to_string(), sessions, seen.clone()));
        WaitWatch { seen, task }
    }

    /// The last wait cancelled, described.
    pub fn cancelled(&self) -> Option<String> {
        self.seen.lock().ok()?.clone()
    }
}

impl Drop for WaitWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(url: String, sessions: Vec<String>, seen: Arc<Mutex<Option<String>>>) {
    let mut client = None;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if client.is_none() {
            client = crate::source::connect(&url).await.ok();
        }
        let Some(c) = &client else { continue };
        let waits = match c
            .query(WAITS_SQL, &[&sessions, &WAIT_LIMIT.as_secs_f64()])
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "watching the apply sessions' locks");
                client = None;
                continue;
            }
        };
        for row in waits {
            let (pid, what): (i32, String) = (row.get(0), row.get(1));
            tracing::warn!(wait = %what, "two apply sessions wait on each other: cancelling the waiting statement");
            if let Ok(mut slot) = seen.lock() {
                *slot = Some(what);
            }
            let _ = c.execute("SELECT pg_cancel_backend($1)", &[&pid]).await;
        }
    }
}
