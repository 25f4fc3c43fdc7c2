//! One pipeline from start to stop: check the mapping, set up publication and slot, copy at the
//! slot's snapshot when starting fresh, then stream and apply, answering the server and moving
//! the slot only past what the target has committed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::watch;

use crate::apply::{Applier, Change};
use crate::config::{InitialCopy, Pipeline, QualifiedName, is_origin_of};
use crate::copy::{self, CopyJob};
use crate::error::{PipelineError, source, target};
use crate::metrics::PipelineMetrics;
use crate::pgoutput::{self, LogicalDecodingMessage, LogicalMessage};
use crate::schema::{self, RelPlan, TableInfo};
use crate::sequences::{self, SequencePair};
use crate::source as src;
use crate::state::{self, Phase};
use crate::streamed::InProgress;
use crate::waits::WaitWatch;
use crate::wire::{
    CreatedSlot, ReplicationConfig, ReplicationConnection, ReplicationMessage, ReplicationStream,
    SnapshotAction, format_lsn, publication_names_option,
};

/// The prefix of a cut marker: a non-transactional logical decoding message (see
/// [`crate::ops::emit_cut`]) on seeing which an idle pipeline commits what it holds and records
/// its position at once, instead of at the next idle record (up to a second on).
/// Sources before PostgreSQL 14 do not send such messages: there the idle record does it.
pub const CUT_PREFIX: &str = "fig.cut";

/// Status updates go out at least this often, so the server never times us out while idle.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// A target transaction spanning several source transactions commits after this long (it adds
/// at most this to the lag of the first)...
const GROUP_COMMIT_AGE: Duration = Duration::from_millis(2);
/// ...or this many rows, whichever comes first.
const GROUP_COMMIT_ROWS: u64 = 50_000;
/// How often an idle pipeline records the end of WAL it confirms.
const IDLE_RECORD_EVERY: Duration = Duration::from_secs(1);
/// How long a stop may take before the pipeline stops without finishing what it was doing.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the slot's retained WAL is checked.
const SLOT_CHECK_EVERY: Duration = Duration::from_secs(10);

/// A process killed a moment ago may hold its slot and origin until the server notices the
/// closed connection: wait this long before calling them in use.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

async fn wait_slot_released(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<(), PipelineError> {
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        match src::slot_status(client, slot)
            .await?
            .and_then(|s| s.active_pid)
        {
            None => return Ok(()),
            Some(pid) if Instant::now() >= deadline => {
                return Err(PipelineError::SlotInUse {
                    slot: slot.to_string(),
                    pid,
                });
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

struct Resolved {
    mapping: crate::config::Table,
    source: TableInfo,
    target: TableInfo,
    plan: RelPlan,
}

/// How one connection's worth of streaming ended, short of failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// `stop` turned true.
    Stopped,
    /// Connect again, streaming in-progress transactions only from `serial_until` on.
    Again { serial_until: u64 },
}

/// Runs `pipeline` until `stop` turns true (a clean stop: Ok) or it fails.
pub async fn run(
    pipeline: &Pipeline,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<PipelineMetrics>,
) -> Result<(), PipelineError> {
    let mut serial_until = 0;
    let result = loop {
        match connect_and_run(pipeline, &mut stop, &metrics, serial_until).await {
            Ok(Ended::Stopped) => break Ok(()),
            Ok(Ended::Again { serial_until: s }) => serial_until = s,
            Err(e) => break Err(e),
        }
    };
    if result.is_ok() {
        // Asked to stop: its metrics (still served, e.g. for a stream the follower retired)
        // must not claim it streams.
        metrics.set_phase("stopped");
    }
    if let Err(e) = &result {
        metrics.set_error(&e.to_string());
        // The applier's connection may be inside a failed transaction: use a fresh one.
        if let Ok(client) = src::connect(&pipeline.target).await {
            state::record_error(&client, &pipeline.name, &e.to_string()).await;
        }
    }
    result
}

async fn connect_and_run(
    pipeline: &Pipeline,
    stop: &mut watch::Receiver<bool>,
    metrics: &Arc<PipelineMetrics>,
    serial_until: u64,
) -> Result<Ended, PipelineError> {
    let target_client = src::connect(&pipeline.target)
        .await
        .map_err(target("connecting"))?;
    state::ensure_schema(&target_client).await?;
    run_with(pipeline, stop, metrics, target_client, serial_until).await
}

async fn run_with(
    pipeline: &Pipeline,
    stop: &mut watch::Receiver<bool>,
    metrics: &Arc<PipelineMetrics>,
    target_client: tokio_postgres::Client,
    serial_until: u64,
) -> Result<Ended, PipelineError> {
    let source_client = connect_source(pipeline).await?;
    let tables = ready_source(pipeline, &source_client, &target_client).await?;
    let sequence_pairs =
        sequences::resolve(&source_client, &target_client, &pipeline.tables).await?;
    prepare_apply_session(
        &target_client,
        &pipeline.application_name(),
        &pipeline.origin(),
    )
    .await?;
    wait_slot_released(&source_client, &pipeline.slot()).await?;

    let slot = pipeline.slot();
    let replication_config = replication_config(pipeline)?;
    let (connection, start_lsn) = match resume_point(&target_client, pipeline).await? {
        Some(applied) => {
            check_slot(&source_client, &slot, applied).await?;
            let connection = ReplicationConnection::connect(&replication_config).await?;
            (connection, applied)
        }
        None => {
            fresh_start(
                pipeline,
                &source_client,
                &target_client,
                &replication_config,
                &tables,
                metrics,
            )
            .await?
        }
    };
    let copied_at = refresh_tables(
        pipeline,
        &source_client,
        &target_client,
        &replication_config,
        &tables,
        metrics,
    )
    .await?;
    // A table just copied is applied in commit order until the position passes its copy: only
    // then is every transaction's commit position known before its changes are applied.
    let serial_until = copied_at.values().fold(serial_until, |a, &b| a.max(b));
    let publication = publication_names_option(&[pipeline.publication().as_str()]);
    let major = connection
        .parameter("server_version")
        .map_or(0, major_version);
    let can_stream = pipeline.stream_after_kib > 0 && major >= 14;
    // After a streamed transaction went wrong, everything up to where it happened is applied
    // again in commit order, one transaction after the other (see `Streamer::run`).
    let stream_again_at = (can_stream && serial_until > start_lsn).then_some(serial_until);
    let streaming = can_stream && stream_again_at.is_none();
    let mut options = vec![("publication_names", publication.as_str())];
    options.extend(if streaming {
        [("proto_version", "2"), ("streaming", "on")].as_slice()
    } else {
        [("proto_version", "1")].as_slice()
    });
    if major >= 14 {
        // Cut markers (see `CUT_PREFIX`): pgoutput sends logical decoding messages only when
        // asked, and knows the option from PostgreSQL 14 on (with either protocol version).
        options.push(("messages", "true"));
    }
    let stream = connection
        .start_logical_replication(&slot, start_lsn, &options)
        .await?;
    tracing::info!(pipeline = %pipeline.name, from = %format_lsn(start_lsn), streaming, "streaming");
    let waits = streaming.then(|| {
        let main = pipeline.application_name();
        WaitWatch::spawn(&pipeline.target, vec![format!("{main}-stream"), main])
    });
    // After the copy (or where a resumed run left off) and before the target sees new rows.
    sequences::sync_or_warn(
        &pipeline.name,
        &source_client,
        &target_client,
        &sequence_pairs,
    )
    .await;
    state::clear_error(&target_client, &pipeline.name).await?;
    metrics.set_phase("streaming");
    let applier = Applier::new(target_client, &pipeline.name, pipeline.batch_rows);
    let mappings: HashMap<QualifiedName, Resolved> = tables
        .into_iter()
        .map(|t| (t.source.name.clone(), t))
        .collect();
    let streamer = Streamer {
        pipeline,
        stream,
        applier,
        mappings,
        metrics: metrics.clone(),
        source_client,
        in_progress: InProgress::new(),
        streaming,
        stream_again_at,
        waits,
        ignored: HashSet::new(),
        copied_at,
        copied_until: HashMap::new(),
        final_lsn: 0,
        block: None,
        received: start_lsn,
        applied: start_lsn,
        durable: start_lsn,
        unflushed: std::collections::VecDeque::new(),
        in_source_transaction: false,
        skipping: false,
        group_started: None,
        last_status: Instant::now(),
        last_idle_record: Instant::now(),
        last_slot_check: Instant::now() - SLOT_CHECK_EVERY,
        sequences: sequence_pairs,
    };
    streamer.run(stop).await
}

/// [`crate::ops::prepare`]: a fresh start without a copy, up to streaming, from the same pieces
/// [`run`] uses, so that `run` resumes where it stopped.
pub(crate) async fn prepare(pipeline: &Pipeline) -> Result<u64, PipelineError> {
    let target_client = src::connect(&pipeline.target)
        .await
        .map_err(target("connecting"))?;
    state::ensure_schema(&target_client).await?;
    let source_client = connect_source(pipeline).await?;
    if let Some(applied) = resume_point(&target_client, pipeline).await? {
        kept_slot(&source_client, &pipeline.slot(), applied).await?;
        return Ok(applied);
    }
    let tables = ready_source(pipeline, &source_client, &target_client).await?;
    // The target session needs no origin yet: nothing is applied until the pipeline runs.
    wait_slot_released(&source_client, &pipeline.slot()).await?;
    let (connection, created) = create_slot(
        pipeline,
        &source_client,
        &target_client,
        &replication_config(pipeline)?,
        SnapshotAction::NoExport,
    )
    .await?;
    record_start(
        pipeline,
        &target_client,
        &tables,
        created.consistent_point,
        0,
    )
    .await?;
    connection.close().await?;
    tracing::info!(pipeline = %pipeline.name, at = %format_lsn(created.consistent_point), "prepared to stream");
    Ok(created.consistent_point)
}

async fn connect_source(pipeline: &Pipeline) -> Result<tokio_postgres::Client, PipelineError> {
    src::connect(&pipeline.source)
        .await
        .map_err(source("connecting"))
}

/// What every start needs on the source: each mapped table checked on both sides, and the
/// publication carrying them.
async fn ready_source(
    pipeline: &Pipeline,
    source_client: &tokio_postgres::Client,
    target_client: &tokio_postgres::Client,
) -> Result<Vec<Resolved>, PipelineError> {
    let tables = resolve(pipeline, source_client, target_client).await?;
    let names: Vec<QualifiedName> = tables.iter().map(|t| t.source.name.clone()).collect();
    src::ensure_publication(source_client, &pipeline.publication(), &names).await?;
    Ok(tables)
}

/// The replication connection's settings for `pipeline`.
fn replication_config(pipeline: &Pipeline) -> Result<ReplicationConfig, PipelineError> {
    let config = ReplicationConfig::from_url(&pipeline.source)?
        .with_application_name(pipeline.application_name());
    // pgoutput writes values as text in the walsender's formats: pin them as on every session.
    let mut options = src::with_pinned_formats(config.options());
    if pipeline.stream_after_kib > 0 {
        // The walsender streams a transaction once its decoded changes pass this.
        options.push_str(&format!(
            " -c logical_decoding_work_mem={}kB",
            pipeline.stream_after_kib
        ));
    }
    Ok(config.with_options(options))
}

/// Where the target says the pipeline streams from, if it streams from the pipeline's slot (a
/// copy not finished, or another slot, means starting afresh).
async fn resume_point(
    target_client: &tokio_postgres::Client,
    pipeline: &Pipeline,
) -> Result<Option<u64>, PipelineError> {
    let slot = pipeline.slot();
    Ok(state::load(target_client, &pipeline.name)
        .await?
        .filter(|s| s.phase == Phase::Streaming && s.slot == slot)
        .map(|s| s.applied_lsn))
}

/// Readies a target session to apply: named `application_name`, applying as a replica,
/// committing asynchronously, its changes marked with `origin` (waiting while a killed
/// predecessor still holds it).
pub(crate) async fn prepare_apply_session(
    client: &tokio_postgres::Client,
    application_name: &str,
    origin: &str,
) -> Result<(), PipelineError> {
    client
        .batch_execute(&format!("SET application_name = '{application_name}'"))
        .await
        .map_err(target("naming the session"))?;
    copy::act_as_replica(client).await;
    // Commits need not wait for the target's disk, as with PostgreSQL's own subscriptions: the
    // source is told to forget a change only once the target has flushed its commit
    // (`Streamer::refresh_durable`), so a crash of the target server loses nothing either.
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .map_err(target("setting synchronous_commit"))?;
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        match src::use_origin(client, origin).await {
            Err(PipelineError::Target { source, .. })
                if source.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// The major version in a `server_version` ("15.4 (Debian 15.4-1)" → 15), 0 if unreadable.
fn major_version(server_version: &str) -> u32 {
    let digits: String = server_version
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(0)
}

/// Checks every mapped table on both sides and plans its columns from the catalogs.
async fn resolve(
    pipeline: &Pipeline,
    source_client: &tokio_postgres::Client,
    target_client: &tokio_postgres::Client,
) -> Result<Vec<Resolved>, PipelineError> {
    let mut out = Vec::new();
    for mapping in &pipeline.tables {
        let source_name = mapping.source_name();
        let target_name = mapping.target_name();
        let missing = |side: &str, name: &QualifiedName| PipelineError::Mapping {
            table: name.to_string(),
            detail: format!("no such table on the {side}"),
        };
        let source_info = schema::table_info(source_client, &source_name)
            .await
            .map_err(source(format!("reading table {source_name}")))?
            .ok_or_else(|| missing("source", &source_name))?;
        let target_info = schema::table_info(target_client, &target_name)
            .await
            .map_err(target(format!("reading table {target_name}")))?
            .ok_or_else(|| missing("target", &target_name))?;
        let columns: Vec<(String, bool)> = source_info
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.in_primary_key))
            .collect();
        let has_key = columns.iter().any(|(_, k)| *k);
        let plan = schema::plan_columns(
            source_name.clone(),
            &columns,
            if has_key {
                pgoutput::ReplicaIdentity::Default
            } else {
                pgoutput::ReplicaIdentity::Full
            },
            mapping,
            &target_info,
        )?;
        out.push(Resolved {
            mapping: mapping.clone(),
            source: source_info,
            target: target_info,
            plan,
        });
    }
    Ok(out)
}

/// The slot a target applied up to `applied` from, refused if it is gone or lost the WAL it
/// kept.
async fn kept_slot(
    client: &tokio_postgres::Client,
    slot: &str,
    applied: u64,
) -> Result<src::SlotStatus, PipelineError> {
    let status =
        src::slot_status(client, slot)
            .await?
            .ok_or_else(|| PipelineError::SlotMissing {
                slot: slot.to_string(),
                applied: format_lsn(applied),
            })?;
    if status.wal_status.as_deref() == Some("lost") {
        return Err(PipelineError::SlotInvalidated {
            slot: slot.to_string(),
        });
    }
    Ok(status)
}

/// Refuses to resume from a slot that cannot continue exactly where the target stopped.
async fn check_slot(
    client: &tokio_postgres::Client,
    slot: &str,
    applied: u64,
) -> Result<(), PipelineError> {
    let status = kept_slot(client, slot, applied).await?;
    if let Some(pid) = status.active_pid {
        return Err(PipelineError::SlotInUse {
            slot: slot.to_string(),
            pid,
        });
    }
    if let Some(confirmed) = status.confirmed_flush
        && confirmed > applied
    {
        return Err(PipelineError::SlotAhead {
            slot: slot.to_string(),
            confirmed: format_lsn(confirmed),
            applied: format_lsn(applied),
        });
    }
    Ok(())
}

/// A new slot, and (unless configured otherwise) the copy at its snapshot. Whatever an
/// interrupted earlier attempt left (a slot, half-copied tables) is discarded first.
async fn fresh_start(
    pipeline: &Pipeline,
    source_client: &tokio_postgres::Client,
    target_client: &tokio_postgres::Client,
    replication_config: &ReplicationConfig,
    tables: &[Resolved],
    metrics: &PipelineMetrics,
) -> Result<(ReplicationConnection, u64), PipelineError> {
    let copy = pipeline.initial_copy == InitialCopy::Snapshot;
    let action = if copy {
        SnapshotAction::Export
    } else {
        SnapshotAction::NoExport
    };
    let (connection, created) = create_slot(
        pipeline,
        source_client,
        target_client,
        replication_config,
        action,
    )
    .await?;
    let mut rows = 0;
    if copy {
        metrics.set_phase("copying");
        let snapshot = created
            .snapshot_name
            .clone()
            .ok_or_else(|| PipelineError::Protocol("the server exported no snapshot".into()))?;
        let jobs = copy_jobs(source_client, tables.iter()).await;
        // The replication connection stays silent until the copy is done: its next command
        // would end the exported snapshot.
        rows = copy::copy_all(&pipeline.source, &pipeline.target, &snapshot, jobs, metrics).await?;
    }
    record_start(
        pipeline,
        target_client,
        tables,
        created.consistent_point,
        rows,
    )
    .await?;
    tracing::info!(pipeline = %pipeline.name, rows, from = %format_lsn(created.consistent_point), "initial copy complete");
    Ok((connection, created.consistent_point))
}

/// The pipeline's new permanent slot, made on a replication connection it returns (with an
/// exported snapshot, that connection must stay silent while the snapshot is in use). Whatever
/// slot an unfinished start left is dropped first, and the target's state starts over.
async fn create_slot(
    pipeline: &Pipeline,
    source_client: &tokio_postgres::Client,
    target_client: &tokio_postgres::Client,
    replication_config: &ReplicationConfig,
    snapshot: SnapshotAction,
) -> Result<(ReplicationConnection, CreatedSlot), PipelineError> {
    let slot = pipeline.slot();
    if src::drop_slot(source_client, &slot).await? {
        tracing::info!(pipeline = %pipeline.name, slot, "dropped the slot of an unfinished start");
    }
    let mut connection = ReplicationConnection::connect(replication_config).await?;
    let created = connection
        .create_logical_slot(&slot, false, snapshot)
        .await?;
    state::start_copy(target_client, &pipeline.name, &slot).await?;
    Ok((connection, created))
}

/// Records on the target that the pipeline streams from `at`, every table taken as of there
/// (`rows` copied at that point, or none).
async fn record_start(
    pipeline: &Pipeline,
    target_client: &tokio_postgres::Client,
    tables: &[Resolved],
    at: u64,
    rows: i64,
) -> Result<(), PipelineError> {
    state::start_streaming(target_client, &pipeline.name, at, rows).await?;
    let copied: Vec<(String, u64)> = tables
        .iter()
        .map(|t| (t.source.name.to_string(), at))
        .collect();
    state::record_tables(target_client, &pipeline.name, &copied, &[]).await
}

async fn copy_jobs<'a>(
    source_client: &tokio_postgres::Client,
    tables: impl Iterator<Item = &'a Resolved>,
) -> Vec<CopyJob> {
    let mut jobs = Vec::new();
    for t in tables {
        jobs.push(CopyJob {
            plan: t.plan.clone(),
            source_columns: t.source.columns.iter().map(|c| c.name.clone()).collect(),
            same_types: same_types(t),
            estimate: estimate(source_client, &t.source.name).await,
        });
    }
    jobs
}

/// Brings the tables the pipeline carries in line with its mapping, on a resumed run: a table
/// taken out is forgotten (its changes still in the slot are ignored), and a table added is
/// copied on its own, at a snapshot of a temporary slot, as PostgreSQL's `REFRESH PUBLICATION`
/// does. Returns, for every table, where its copy was taken: changes of transactions that
/// committed before that are in the copy already.
async fn refresh_tables(
    pipeline: &Pipeline,
    source_client: &tokio_postgres::Client,
    target_client: &tokio_postgres::Client,
    replication_config: &ReplicationConfig,
    tables: &[Resolved],
    metrics: &PipelineMetrics,
) -> Result<HashMap<QualifiedName, u64>, PipelineError> {
    let configured: Vec<String> = tables.iter().map(|t| t.source.name.to_string()).collect();
    let recorded = match state::tables(target_client, &pipeline.name).await? {
        Some(recorded) => recorded,
        None => {
            // Streaming since before the engine recorded its tables: all of them were copied.
            let all: Vec<(String, u64)> = configured.iter().map(|t| (t.clone(), 0)).collect();
            state::record_tables(target_client, &pipeline.name, &all, &[]).await?;
            all.into_iter().collect()
        }
    };
    let removed: Vec<String> = recorded
        .keys()
        .filter(|t| !configured.contains(t))
        .cloned()
        .collect();
    let added: Vec<&Resolved> = tables
        .iter()
        .filter(|t| !recorded.contains_key(&t.source.name.to_string()))
        .collect();
    for table in &removed {
        tracing::info!(pipeline = %pipeline.name, table, "no longer in the mapping: its changes are ignored from now on");
    }
    let mut copied_at = 0;
    if !added.is_empty() && pipeline.initial_copy == InitialCopy::Snapshot {
        metrics.set_phase("copying");
        // A slot of its own, for its snapshot and the position that goes with it; temporary,
        // so the server drops it when this connection ends.
        let mut connection = ReplicationConnection::connect(replication_config).await?;
        let created = connection
            .create_logical_slot(
                &format!("{}_add", pipeline.slot()),
                true,
                SnapshotAction::Export,
            )
            .await?;
        let snapshot = created
            .snapshot_name
            .clone()
            .ok_or_else(|| PipelineError::Protocol("the server exported no snapshot".into()))?;
        let jobs = copy_jobs(source_client, added.iter().copied()).await;
        let rows =
            copy::copy_all(&pipeline.source, &pipeline.target, &snapshot, jobs, metrics).await?;
        copied_at = created.consistent_point;
        let names: Vec<String> = added.iter().map(|t| t.source.name.to_string()).collect();
        tracing::info!(pipeline = %pipeline.name, tables = ?names, rows, at = %format_lsn(copied_at), "copied the tables added to the pipeline");
        connection.close().await?;
    }
    let now: Vec<(String, u64)> = added
        .iter()
        .map(|t| (t.source.name.to_string(), copied_at))
        .collect();
    if !now.is_empty() || !removed.is_empty() {
        state::record_tables(target_client, &pipeline.name, &now, &removed).await?;
    }
    Ok(tables
        .iter()
        .map(|t| {
            let name = t.source.name.to_string();
            let at = recorded.get(&name).copied().unwrap_or(copied_at);
            (t.source.name.clone(), at)
        })
        .collect())
}

fn same_types(t: &Resolved) -> bool {
    t.source
        .columns
        .iter()
        .zip(&t.plan.slots)
        .filter_map(|(c, slot)| slot.map(|s| (c, s)))
        .all(|(c, s)| c.type_name == t.plan.target_columns[s].type_name)
}

async fn estimate(client: &tokio_postgres::Client, table: &QualifiedName) -> i64 {
    client
        .query_opt(
            "SELECT reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&table.schema, &table.name],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get::<_, i64>(0).max(0))
        .unwrap_or(0)
}

struct Streamer<'a> {
    pipeline: &'a Pipeline,
    stream: ReplicationStream,
    applier: Applier,
    mappings: HashMap<QualifiedName, Resolved>,
    metrics: Arc<PipelineMetrics>,
    source_client: tokio_postgres::Client,
    /// Streamed transactions being applied, each on its own session.
    in_progress: InProgress,
    /// This connection asked for in-progress transactions to be streamed.
    streaming: bool,
    /// Not streaming until the position reaches this (then connect again, streaming).
    stream_again_at: Option<u64>,
    /// Keeps the sessions from waiting on each other for good (while streaming).
    waits: Option<WaitWatch>,
    /// Relations published but not in the mapping: their changes are not this pipeline's.
    ignored: HashSet<u32>,
    /// Where each table's copy was taken...
    copied_at: HashMap<QualifiedName, u64>,
    /// ...and, by relation id, for tables whose copy is ahead of the position: changes of
    /// transactions that committed before it are in the copy already.
    copied_until: HashMap<u32, u64>,
    /// The commit position of the ordinary source transaction being received.
    final_lsn: u64,
    /// Inside a stream block: the streamed transaction its changes belong to.
    block: Option<u32>,
    /// The furthest WAL position the server has told us about.
    received: u64,
    /// The position committed on the target (visible there).
    applied: u64,
    /// The position whose commit the target has flushed: all the source may forget.
    durable: u64,
    /// Committed positions not yet known flushed: (source position, target WAL position).
    unflushed: std::collections::VecDeque<(u64, u64)>,
    in_source_transaction: bool,
    /// The current source transaction is not applied (already applied, or an echo).
    skipping: bool,
    group_started: Option<Instant>,
    last_status: Instant,
    last_idle_record: Instant,
    last_slot_check: Instant,
    /// Target sequences that follow the source's (see [`sequences`]).
    sequences: Vec<SequencePair>,
}

impl Streamer<'_> {
    async fn run(mut self, stop: &mut watch::Receiver<bool>) -> Result<Ended, PipelineError> {
        let mut asked = stop.clone();
        let cut_short = async move {
            if asked.wait_for(|stop| *stop).await.is_err() {
                // Nobody can ask any more.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(STOP_GRACE).await;
        };
        let applied = tokio::select! {
            applied = self.apply(stop) => applied,
            // Stuck waiting on the target (a lock another session holds): stop as a crash
            // would. Nothing uncommitted survives, and the slot sends it again next time.
            () = cut_short => {
                tracing::warn!(pipeline = %self.pipeline.name, "stopped while waiting on the target: what was not committed is applied again on the next run");
                return Ok(Ended::Stopped);
            }
        };
        match applied {
            // The target refused something, or two of our sessions waited on each other, while
            // transactions were applied concurrently. Nothing uncommitted survives (the sessions
            // are dropped with `self`, and the server rolls their transactions back): from the
            // applied position up to what was received, apply again in commit order on one
            // session. A refusal that was not about the order comes back then, and stops the
            // pipeline.
            Err(e)
                if self.streaming && self.received > self.applied && retry_in_commit_order(&e) =>
            {
                let wait = self.waits.as_ref().and_then(WaitWatch::cancelled);
                tracing::warn!(pipeline = %self.pipeline.name, error = %e, wait = wait.as_deref().unwrap_or("none"),
                    until = %format_lsn(self.received),
                    "applying again without streaming, one transaction after the other, up to where this happened");
                self.metrics.commit_order_retry();
                Ok(Ended::Again {
                    serial_until: self.received,
                })
            }
            Ok(ended) => {
                self.stream.finish().await?;
                Ok(ended)
            }
            Err(e) => Err(e),
        }
    }

    async fn apply(&mut self, stop: &mut watch::Receiver<bool>) -> Result<Ended, PipelineError> {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        let mut ended = Ended::Stopped;
        loop {
            // Applied in commit order as far as asked: stream again (from a clean stop).
            if let Some(at) = self.stream_again_at
                && self.applied >= at
                && !self.in_source_transaction
                && !self.applier.in_transaction()
            {
                tracing::info!(pipeline = %self.pipeline.name, at = %format_lsn(self.applied), "streaming in-progress transactions again");
                ended = Ended::Again { serial_until: 0 };
                break;
            }
            // Between source transactions with a target transaction open: commit once nothing
            // more is waiting, or the group is big or old enough.
            if !self.in_source_transaction && self.applier.in_transaction() {
                let due = self.applier.rows_in_transaction() >= GROUP_COMMIT_ROWS
                    || self
                        .group_started
                        .is_some_and(|t| t.elapsed() >= GROUP_COMMIT_AGE);
                let next = if due {
                    None
                } else {
                    self.stream.next().now_or_never()
                };
                match next {
                    Some(message) => {
                        self.handle(message?).await?;
                        continue;
                    }
                    None => {
                        self.commit().await?;
                        continue;
                    }
                }
            }
            tokio::select! {
                message = self.stream.next() => self.handle(message?).await?,
                _ = tick.tick() => self.housekeeping().await?,
                _ = stop.changed() => {
                    if *stop.borrow() {
                        break;
                    }
                }
            }
        }
        // A clean stop: keep what is complete, drop a half-applied source transaction (the slot
        // sends it again).
        if !self.in_source_transaction {
            self.commit().await?;
            // The last word before whoever takes over writes on the target (a cutover stops
            // this pipeline first).
            self.sync_sequences().await;
        }
        self.send_status(false).await?;
        Ok(ended)
    }

    async fn commit(&mut self) -> Result<(), PipelineError> {
        let done = self.applier.commit().await?;
        self.committed(done);
        // No status update here: it costs a round trip to the target (to learn what is flushed),
        // and the once-a-second update and keepalive replies keep the slot moving.
        self.group_started = None;
        Ok(())
    }

    /// Bookkeeping after a target commit (`Applier::commit`'s answer): the position applied,
    /// and the commit awaiting the target's disk before the source may forget it.
    fn committed(&mut self, done: Option<(u64, u64)>) {
        if let Some((lsn, target_lsn)) = done {
            self.applied = self.applied.max(lsn);
            self.unflushed.push_back((lsn, target_lsn));
            self.metrics.applied(lsn);
        }
    }

    /// Records `lsn` on the target with nothing applied (the source moved on in tables this
    /// pipeline does not carry, or in transactions it skips).
    async fn record_position(&mut self, lsn: u64) -> Result<(), PipelineError> {
        state::record_idle(self.applier.client(), &self.pipeline.name, lsn).await?;
        let target_lsn = state::target_lsn(self.applier.client(), false).await?;
        self.unflushed.push_back((lsn, target_lsn));
        self.applied = lsn;
        self.last_idle_record = Instant::now();
        Ok(())
    }

    /// A logical decoding message: only a cut marker asks for something (any other is someone
    /// else's, and ignored). A non-transactional message is sent as soon as the walsender
    /// decodes its (flushed) WAL, after every transaction that committed before it: with no
    /// source transaction half received, everything up to the marker is applied once what is
    /// open commits, so the position is recorded there now, for whoever waits on it to see in
    /// milliseconds. Its `lsn` is the end of its record, the position `emit_cut` returned. A
    /// transactional message, or one mid-transaction, is left to the ordinary bookkeeping:
    /// recording past a transaction not yet applied would lose it on a restart.
    async fn message(&mut self, message: &LogicalDecodingMessage) -> Result<(), PipelineError> {
        if message.prefix != CUT_PREFIX || message.transactional || self.in_source_transaction {
            return Ok(());
        }
        // A group commit may hold transactions before the marker: they go first.
        self.commit().await?;
        let at = message.lsn.max(self.received);
        if at > self.applied {
            self.record_position(at).await?;
            tracing::debug!(pipeline = %self.pipeline.name, lsn = %format_lsn(at), "recorded at a cut marker");
        }
        Ok(())
    }

    /// Moves `durable` past every commit the target has flushed since.
    async fn refresh_durable(&mut self) -> Result<(), PipelineError> {
        if self.unflushed.is_empty() {
            return Ok(());
        }
        let flushed = state::target_lsn(self.applier.client(), true).await?;
        if let Some(source) = durable_after(&mut self.unflushed, flushed) {
            self.durable = self.durable.max(source);
        }
        Ok(())
    }

    async fn send_status(&mut self, reply: bool) -> Result<(), PipelineError> {
        self.refresh_durable().await?;
        self.stream
            .send_status_update(self.received, self.durable, self.durable, reply)
            .await?;
        self.last_status = Instant::now();
        Ok(())
    }

    /// Moves the target's sequences up to the source's; a failure is only logged.
    async fn sync_sequences(&self) {
        if !self.sequences.is_empty() {
            sequences::sync_or_warn(
                &self.pipeline.name,
                &self.source_client,
                self.applier.client(),
                &self.sequences,
            )
            .await;
        }
    }

    async fn housekeeping(&mut self) -> Result<(), PipelineError> {
        // Skipped transactions (echoes, already applied) leave nothing to commit: once idle,
        // confirm past them too, or the slot would hold their WAL until the next keepalive.
        let idle = !self.in_source_transaction && !self.applier.in_transaction();
        if idle && self.received > self.applied {
            self.record_position(self.received).await?;
            tracing::debug!(pipeline = %self.pipeline.name, lsn = %format_lsn(self.received), "recorded while idle");
            self.send_status(false).await?;
        }
        if self.last_status.elapsed() >= STATUS_EVERY {
            self.send_status(false).await?;
        }
        // Every tick (STATUS_EVERY), between target transactions: the sync shares the applier's
        // session, and a failed statement must not abort a transaction being applied.
        if idle {
            self.sync_sequences().await;
        }
        if self.last_slot_check.elapsed() >= SLOT_CHECK_EVERY {
            self.last_slot_check = Instant::now();
            if let Some(status) =
                src::slot_status(&self.source_client, &self.pipeline.slot()).await?
            {
                let retained = status.retained_bytes.unwrap_or(0);
                self.metrics.retained_wal(retained);
                let limit = self.pipeline.retained_wal_warn_mib as i64 * 1024 * 1024;
                if retained > limit {
                    tracing::warn!(pipeline = %self.pipeline.name, retained_bytes = retained, limit_bytes = limit,
                        "the slot retains more WAL than the warning threshold: the pipeline is falling behind or stopped");
                }
            }
            if let Ok(lsn) = src::current_lsn(&self.source_client).await {
                self.metrics.source_lsn(lsn);
            }
        }
        Ok(())
    }

    async fn handle(&mut self, message: Option<ReplicationMessage>) -> Result<(), PipelineError> {
        let Some(message) = message else {
            return Err(PipelineError::Protocol(
                "the server ended the replication stream".into(),
            ));
        };
        match message {
            ReplicationMessage::XLogData { wal_end, data, .. } => {
                self.received = self.received.max(wal_end);
                self.metrics.source_lsn(wal_end);
                let decoded = pgoutput::decode_bytes(data, self.block.is_some())?;
                self.logical(decoded).await
            }
            ReplicationMessage::PrimaryKeepAlive {
                wal_end,
                reply_requested,
                ..
            } => {
                self.received = self.received.max(wal_end);
                self.metrics.source_lsn(wal_end);
                // Nothing in flight: everything up to the server's end of WAL is either applied
                // or not ours, so the slot may let it go. Recorded on the target first, so the
                // target never lags what the slot has confirmed.
                let idle = !self.in_source_transaction && !self.applier.in_transaction();
                if idle
                    && wal_end > self.applied
                    && (reply_requested || self.last_idle_record.elapsed() >= IDLE_RECORD_EVERY)
                {
                    self.record_position(wal_end).await?;
                    tracing::debug!(pipeline = %self.pipeline.name, lsn = %format_lsn(wal_end), "recorded the idle end of WAL");
                }
                if reply_requested {
                    self.send_status(false).await?;
                }
                Ok(())
            }
        }
    }

    /// Whether `origin` marks changes this pipeline must not apply (the other half of a pair).
    fn skips_origin(&self, origin: &str) -> bool {
        self.pipeline
            .skip_origins_of
            .iter()
            .any(|p| is_origin_of(origin, p))
    }

    /// A row change, on the main session, or inside a stream block in its transaction's.
    async fn apply_change(
        &mut self,
        relation: u32,
        xid: Option<u32>,
        change: Change,
    ) -> Result<(), PipelineError> {
        if self.ignored.contains(&relation) {
            return Ok(());
        }
        match self.block {
            Some(top) => self.in_progress.change(top, xid, relation, change).await,
            None if self.skipping || self.in_copy(relation) => Ok(()),
            None => self.applier.change(relation, change).await,
        }
    }

    /// Whether the ordinary transaction being received is in `relation`'s copy already (it
    /// committed before the copy's snapshot). Streamed transactions never are: nothing is
    /// streamed until the position has passed every copy (see `run_with`).
    fn in_copy(&self, relation: u32) -> bool {
        self.copied_until
            .get(&relation)
            .is_some_and(|&at| self.final_lsn < at)
    }

    async fn logical(&mut self, message: LogicalMessage) -> Result<(), PipelineError> {
        match message {
            LogicalMessage::Begin(begin) => {
                self.in_source_transaction = true;
                // Applied before a crash: the position committed with it is past this commit.
                self.skipping = begin.final_lsn < self.applied;
                self.final_lsn = begin.final_lsn;
                tracing::debug!(pipeline = %self.pipeline.name, xid = begin.xid, final_lsn = %format_lsn(begin.final_lsn), skipping = self.skipping, "begin");
                if self.group_started.is_none() {
                    self.group_started = Some(Instant::now());
                }
            }
            LogicalMessage::Origin(origin) => {
                tracing::debug!(pipeline = %self.pipeline.name, origin = %origin.name, "origin");
                if self.skips_origin(&origin.name) {
                    match self.block {
                        Some(top) => self.in_progress.skip(top)?,
                        None => self.skipping = true,
                    }
                }
            }
            LogicalMessage::Relation(relation) => {
                let name = QualifiedName {
                    schema: relation.namespace.clone(),
                    name: relation.name.clone(),
                };
                let Some(resolved) = self.mappings.get(&name) else {
                    // A table taken out of the mapping while changes of it were still in the
                    // slot, or one a shared publication carries for another pipeline.
                    if self.ignored.insert(relation.id) {
                        tracing::info!(pipeline = %self.pipeline.name, table = %name, "published but not in the mapping: its changes are ignored");
                    }
                    return Ok(());
                };
                self.ignored.remove(&relation.id);
                match self.copied_at.get(&name) {
                    Some(&at) if at > self.applied => self.copied_until.insert(relation.id, at),
                    _ => self.copied_until.remove(&relation.id),
                };
                let plan = schema::plan_relation(&relation, &resolved.mapping, &resolved.target)?;
                self.in_progress.set_plan(relation.id, &plan).await?;
                self.applier.set_plan(relation.id, plan).await?;
            }
            LogicalMessage::Type(_) => {}
            LogicalMessage::Message(message) => self.message(&message).await?,
            LogicalMessage::Insert(insert) => {
                let change = Change::Insert { new: insert.new };
                self.apply_change(insert.relation_id, insert.xid, change)
                    .await?;
            }
            LogicalMessage::Update(update) => {
                let change = Change::Update {
                    old: update.old,
                    new: update.new,
                };
                self.apply_change(update.relation_id, update.xid, change)
                    .await?;
            }
            LogicalMessage::Delete(delete) => {
                let change = Change::Delete { old: delete.old };
                self.apply_change(delete.relation_id, delete.xid, change)
                    .await?;
            }
            LogicalMessage::Truncate(truncate) => {
                // CASCADE and RESTART IDENTITY stay on the source (see `Applier::truncate`).
                let relations: Vec<u32> = truncate
                    .relation_ids
                    .iter()
                    .copied()
                    .filter(|r| !self.ignored.contains(r))
                    .filter(|r| self.block.is_some() || !self.in_copy(*r))
                    .collect();
                match self.block {
                    Some(top) => {
                        self.in_progress
                            .truncate(top, truncate.xid, &relations)
                            .await?
                    }
                    None if self.skipping => {}
                    None => self.applier.truncate(&relations).await?,
                }
            }
            LogicalMessage::Commit(commit) => {
                self.in_source_transaction = false;
                if self.skipping {
                    self.skipping = false;
                    if !self.applier.in_transaction() {
                        // Nothing of ours is open: the skipped transaction's end is safe to
                        // confirm at the next idle record.
                        return Ok(());
                    }
                }
                self.applier
                    .source_commit(commit.end_lsn, commit.commit_time)
                    .await?;
                self.metrics.commit_seen(commit.commit_time);
            }
            LogicalMessage::StreamStart(start) => {
                // Every transaction the source committed before this block is committed on the
                // target before any of the block is applied: the block may change their rows,
                // and must neither overtake them nor wait for the main session's locks.
                self.commit().await?;
                if start.first_segment {
                    tracing::debug!(pipeline = %self.pipeline.name, xid = start.xid, "streaming an in-progress transaction");
                }
                self.in_progress
                    .start(start.xid, start.first_segment, self.pipeline, &self.applier)
                    .await?;
                self.block = Some(start.xid);
            }
            LogicalMessage::StreamStop => self.block = None,
            LogicalMessage::StreamAbort(abort) => {
                tracing::debug!(pipeline = %self.pipeline.name, xid = abort.xid, subxid = abort.subxid, "streamed transaction aborted");
                self.in_progress.abort(abort.xid, abort.subxid).await?;
            }
            LogicalMessage::StreamCommit(commit) => {
                let mut streamed = self.in_progress.finish(commit.xid)?;
                // Source transactions that committed before it come first on the target too:
                // the position only ever moves forward.
                self.commit().await?;
                if streamed.skipping || commit.commit_lsn < self.applied {
                    streamed.applier.rollback().await?;
                } else if let Some(refused) = streamed.failed.take() {
                    // The source committed what the target refused.
                    return Err(refused);
                } else {
                    streamed
                        .applier
                        .source_commit(commit.end_lsn, commit.commit_time)
                        .await?;
                    let done = streamed.applier.commit().await?;
                    self.committed(done);
                    self.metrics.commit_seen(commit.commit_time);
                }
                tracing::debug!(pipeline = %self.pipeline.name, xid = commit.xid, end_lsn = %format_lsn(commit.end_lsn), skipped = streamed.skipping, "streamed transaction committed");
                self.in_progress.recycle(streamed);
            }
        }
        Ok(())
    }
}

/// Whether an error met while applying streamed transactions concurrently calls for applying
/// the same changes again in commit order: the target refused a statement, or a wait between
/// two of our sessions was cancelled. Anything else (a connection lost, a mapping that does not
/// fit) would fail the same way again.
fn retry_in_commit_order(e: &PipelineError) -> bool {
    e.is_target_refusal()
}

/// Of the commits awaiting the target's disk (source position, target WAL position after the
/// commit, in commit order), removes those the target has flushed (`flushed`) and returns the
/// furthest source position among them: what the source may now forget.
fn durable_after(
    unflushed: &mut std::collections::VecDeque<(u64, u64)>,
    flushed: u64,
) -> Option<u64> {
    let mut durable = None;
    while let Some(&(source, target)) = unflushed.front() {
        if target > flushed {
            break;
        }
        durable = Some(source);
        unflushed.pop_front();
    }
    durable
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (pending commits, the target's flush position, durable source position, commits left)
    type Case<'a> = (&'a [(u64, u64)], u64, Option<u64>, usize);

    #[test]
    fn the_major_version_is_read_from_server_version() {
        let cases = [
            ("15.18 (Debian 15.18-1.pgdg120+1)", 15),
            ("14.0", 14),
            ("13.12", 13),
            ("9.6.24", 9),
            ("17devel", 17),
            ("", 0),
            ("unknown", 0),
        ];
        for (text, want) in cases {
            assert_eq!(major_version(text), want, "{text:?}");
        }
    }

    #[test]
    fn only_commits_the_target_has_flushed_become_durable() {
        let cases: [Case; 4] = [
            (&[], 100, None, 0),
            (&[(10, 200)], 100, None, 1),
            (&[(10, 50), (20, 150), (30, 250)], 150, Some(20), 1),
            (&[(10, 50), (20, 150)], 1_000, Some(20), 0),
        ];
        for (pending, flushed, want, left) in cases {
            let mut queue: std::collections::VecDeque<(u64, u64)> =
                pending.iter().copied().collect();
            assert_eq!(
                durable_after(&mut queue, flushed),
                want,
                "{pending:?} at {flushed}"
            );
            assert_eq!(queue.len(), left);
        }
    }
}
