//! The source side over ordinary SQL: the publication, the slot's health, and the target's
//! replication origin.

use tokio_postgres::Client;

use crate::config::{QualifiedName, quote_ident};
use crate::error::{PipelineError, source, target};
use crate::wire::parse_lsn;

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL's TLS settings cannot be honoured (read before any connection is tried).
    #[error(transparent)]
    Tls(#[from] pgtls::Error),
    /// The connection, its TLS handshake or its authentication failed.
    #[error("{}", crate::error::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

/// Connects with tokio-postgres, over TLS as the URL's `sslmode` and `sslrootcert` say, and
/// drives the connection in the background.
pub async fn connect(url: &str) -> Result<Client, ConnectError> {
    let (mut config, tls) = pgtls::tokio_postgres_config(url)?;
    let options = with_pinned_formats(config.get_options());
    config.options(&options);
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
    Ok(client)
}

/// How every session of the engine (source, copy, target, and the replication connection) writes
/// and reads dates, intervals and floats, whatever the database or role sets: values travel as
/// text, and `03/02/2024` means March 2 to one `DateStyle` and February 3 to another. The same
/// settings PostgreSQL's own subscriber uses; the server's defaults for each.
pub const PINNED_FORMATS: &str =
    "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3";

/// The startup `options` to send: `given` (from the connection string), then the pinned formats,
/// which win over anything `given` says about them.
pub fn with_pinned_formats(given: Option<&str>) -> String {
    match given {
        Some(given) if !given.trim().is_empty() => format!("{given} {PINNED_FORMATS}"),
        _ => PINNED_FORMATS.to_string(),
    }
}

/// Creates the publication for `tables`, or adds the ones it lacks.
pub async fn ensure_publication(
    client: &Client,
    name: &str,
    tables: &[QualifiedName],
) -> Result<(), PipelineError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(source("looking up the publication"))?
        .is_some();
    let list = |ts: &[&QualifiedName]| ts.iter().map(|t| t.quoted()).collect::<Vec<_>>().join(", ");
    if !exists {
        let all: Vec<&QualifiedName> = tables.iter().collect();
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(name),
            list(&all)
        );
        // Two pipelines sharing a publication may start together: the loser finds it created.
        if let Err(e) = client.batch_execute(&sql).await
            && e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT)
        {
            return Err(source(format!("creating publication {name}"))(e));
        }
        return Ok(());
    }
    let published = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(source("reading the publication's tables"))?;
    let missing: Vec<&QualifiedName> = tables
        .iter()
        .filter(|t| {
            !published
                .iter()
                .any(|r| r.get::<_, &str>(0) == t.schema && r.get::<_, &str>(1) == t.name)
        })
        .collect();
    if !missing.is_empty() {
        let sql = format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            quote_ident(name),
            list(&missing)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(source(format!("adding tables to publication {name}")))?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct SlotStatus {
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    pub confirmed_flush: Option<u64>,
    pub restart_lsn: Option<u64>,
    pub active_pid: Option<i32>,
    /// WAL the slot keeps on the source, in bytes.
    pub retained_bytes: Option<i64>,
}

pub async fn slot_status(client: &Client, slot: &str) -> Result<Option<SlotStatus>, PipelineError> {
    let row = client
        .query_opt(
            "SELECT wal_status, confirmed_flush_lsn::text, restart_lsn::text, active_pid,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(source("reading the slot"))?;
    Ok(row.map(|r| SlotStatus {
        wal_status: r.get(0),
        confirmed_flush: r.get::<_, Option<&str>>(1).and_then(|s| parse_lsn(s).ok()),
        restart_lsn: r.get::<_, Option<&str>>(2).and_then(|s| parse_lsn(s).ok()),
        active_pid: r.get(3),
        retained_bytes: r.get(4),
    }))
}

/// Drops the slot if it exists and nobody streams from it.
pub async fn drop_slot(client: &Client, slot: &str) -> Result<bool, PipelineError> {
    let Some(status) = slot_status(client, slot).await? else {
        return Ok(false);
    };
    if let Some(pid) = status.active_pid {
        return Err(PipelineError::SlotInUse {
            slot: slot.to_string(),
            pid,
        });
    }
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(source(format!("dropping slot {slot}")))?;
    Ok(true)
}

pub async fn drop_publication(client: &Client, name: &str) -> Result<(), PipelineError> {
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(name)))
        .await
        .map_err(source(format!("dropping publication {name}")))
}

/// A server's WAL position: the insert position (just past everything committed, even with
/// `synchronous_commit = off`, unlike the write position), or with `flush` what survives a crash
/// of that server. `None` if the server's answer is not an LSN.
pub async fn wal_position(
    client: &Client,
    flush: bool,
) -> Result<Option<u64>, tokio_postgres::Error> {
    let sql = if flush {
        "SELECT pg_current_wal_flush_lsn()::text"
    } else {
        "SELECT pg_current_wal_insert_lsn()::text"
    };
    let row = client.query_one(sql, &[]).await?;
    Ok(parse_lsn(row.get::<_, &str>(0)).ok())
}

/// The source's current end of WAL (its insert position).
pub async fn current_lsn(client: &Client) -> Result<u64, PipelineError> {
    let lsn = wal_position(client, false)
        .await
        .map_err(source("reading the current WAL position"))?;
    Ok(lsn.unwrap_or(0))
}

/// Creates the replication origin if needed and makes this session's changes carry it, so a
/// stream in the opposite direction can recognise (and skip) them.
pub async fn use_origin(client: &Client, origin: &str) -> Result<(), PipelineError> {
    client
        .execute(
            "SELECT pg_replication_origin_create($1)
              WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
            &[&origin],
        )
        .await
        .map_err(target(format!("creating replication origin {origin}")))?;
    client
        .execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
        .await
        .map_err(target(format!(
            "using replication origin {origin} (is another process running this pipeline?)"
        )))?;
    Ok(())
}

/// Drops the replication origin `origin` and those of its streaming sessions (`origin.sN`).
pub async fn drop_origin(client: &Client, origin: &str) -> Result<(), PipelineError> {
    client
        .execute(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin
              WHERE roname = $1 OR left(roname, length($1) + 2) = $1 || '.s'",
            &[&origin],
        )
        .await
        .map_err(target(format!("dropping replication origin {origin}")))?;
    Ok(())
}
