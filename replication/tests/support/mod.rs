//! Helpers for pipeline tests: source/target databases on the shared throwaway cluster, a
//! pipeline running in this process, and waiting (by polling) until the target caught up.
#![allow(dead_code)]

pub mod proxy;
pub mod rng;

use std::sync::Arc;
use std::time::{Duration, Instant};

use localpg::TestDb;
use replication::config::{InitialCopy, Pipeline, Table};
use replication::error::PipelineError;
use replication::metrics::PipelineMetrics;
use tokio::sync::watch;
use tokio_postgres::Client;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub async fn client(url: &str) -> Client {
    replication::source::connect(url).await.unwrap()
}

/// A source and a target database with `ddl` run in both.
pub struct Pair {
    pub source: TestDb,
    pub target: TestDb,
    pub src: Client,
    pub dst: Client,
    /// Unique per test: slots and origins are cluster-wide.
    pub name: String,
}

impl Pair {
    pub async fn new(key: &str, ddl: &str) -> Pair {
        Pair::on(localpg::shared(), key, ddl).await
    }

    /// Like [`Pair::new`], both databases on `cluster` (whose URLs then carry its TLS settings).
    pub async fn on(cluster: &'static localpg::Cluster, key: &str, ddl: &str) -> Pair {
        let source = TestDb::empty_on(cluster, &format!("{key}_src"));
        let target = TestDb::empty_on(cluster, &format!("{key}_dst"));
        let src = client(source.url()).await;
        let dst = client(target.url()).await;
        src.batch_execute(ddl).await.unwrap();
        dst.batch_execute(ddl).await.unwrap();
        let name: String = source
            .name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        Pair {
            source,
            target,
            src,
            dst,
            name,
        }
    }

    pub fn pipeline(&self, tables: &[&str]) -> Pipeline {
        Pipeline {
            name: self.name.clone(),
            source: self.source.url().to_string(),
            target: self.target.url().to_string(),
            publication: None,
            slot: None,
            initial_copy: InitialCopy::Snapshot,
            skip_origins_of: Vec::new(),
            batch_rows: 5_000,
            retained_wal_warn_mib: 1_024,
            stream_after_kib: 4_096,
            max_streams: 16,
            tables: tables
                .iter()
                .map(|t| Table {
                    source: t.to_string(),
                    target: None,
                    columns: None,
                    rename: Default::default(),
                })
                .collect(),
        }
    }

    /// Waits until the target has applied everything the source has now.
    pub async fn caught_up(&self) {
        caught_up(&self.src, &self.dst, &self.name).await;
    }

    /// `base` as the forward half of a two-way pair (`<name>_f`), and its reverse (`<name>_r`,
    /// target to source, no copy): each skips what the other applied.
    pub fn two_way(&self, base: Pipeline) -> (Pipeline, Pipeline) {
        let forward_name = format!("{}_f", self.name);
        let reverse_name = format!("{}_r", self.name);
        let mut forward = base;
        forward.name = forward_name.clone();
        forward.skip_origins_of = vec![reverse_name.clone()];
        let mut reverse = forward.clone();
        reverse.name = reverse_name;
        reverse.source = self.target.url().to_string();
        reverse.target = self.source.url().to_string();
        reverse.initial_copy = InitialCopy::None;
        reverse.skip_origins_of = vec![forward_name];
        (forward, reverse)
    }

    /// Starts both halves of [`Pair::two_way`] (forward first, caught up, then reverse).
    pub async fn start_two_way(&self, base: Pipeline) -> (Pipeline, Running, Pipeline, Running) {
        let (forward, reverse) = self.two_way(base);
        let f = start(forward.clone());
        caught_up(&self.src, &self.dst, &forward.name).await;
        let r = start(reverse.clone());
        caught_up(&self.dst, &self.src, &reverse.name).await;
        (forward, f, reverse, r)
    }
}

/// The insert position: with `synchronous_commit = off` (the test clusters) the write position
/// can trail a committed transaction.
pub async fn current_lsn(client: &Client) -> String {
    client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Polls the target's recorded position until it reaches the source's current end of WAL.
pub async fn caught_up(source: &Client, target: &Client, pipeline: &str) {
    let goal = current_lsn(source).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let row = target
            .query_opt(
                "SELECT applied_lsn >= $2::text::pg_lsn, last_error FROM fig_replication.pipelines
                  WHERE name = $1 AND phase = 'streaming'",
                &[&pipeline, &goal],
            )
            .await
            .ok()
            .flatten();
        if let Some(row) = &row {
            let error: Option<String> = row.get(1);
            assert!(error.is_none(), "pipeline failed: {error:?}");
            if row.get::<_, bool>(0) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the target did not reach {goal} in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pipeline running in this process.
pub struct Running {
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<Result<(), PipelineError>>,
    pub metrics: Arc<PipelineMetrics>,
}

pub fn start(pipeline: Pipeline) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (stop, rx) = watch::channel(false);
    let metrics = PipelineMetrics::new(&pipeline.name);
    let m = metrics.clone();
    let task = tokio::spawn(async move { replication::pipeline::run(&pipeline, rx, m).await });
    Running {
        stop,
        task,
        metrics,
    }
}

impl Running {
    /// Waits until the pipeline streams (its copy done, any earlier error cleared).
    pub async fn streaming(&self) {
        let deadline = Instant::now() + DEADLINE;
        while self.metrics.phase() != "streaming" {
            assert!(
                !self.task.is_finished(),
                "the pipeline ended before streaming"
            );
            assert!(
                Instant::now() < deadline,
                "the pipeline did not start streaming"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) -> Result<(), PipelineError> {
        let _ = self.stop.send(true);
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the pipeline stops")
            .unwrap()
    }
}

/// Every row of `table` as text, in `order`.
pub async fn rows(client: &Client, table: &str, order: &str) -> Vec<String> {
    texts(
        client,
        &format!("SELECT t::text FROM {table} t ORDER BY {order}"),
    )
    .await
}

/// The first column of every row `sql` returns, as text.
pub async fn texts(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Polls `sql` (a boolean) until true.
pub async fn until(client: &tokio_postgres::Client, sql: &str, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if client.query_one(sql, &[]).await.unwrap().get::<_, bool>(0) {
            return;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True once the pipeline has a target session with an open transaction that has written:
/// a streamed transaction being applied before its source transaction ended.
pub fn applying_in_progress(name: &str) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
          WHERE application_name = 'fig-replication-{name}-stream' AND backend_xid IS NOT NULL)"
    )
}
