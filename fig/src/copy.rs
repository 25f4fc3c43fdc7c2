//! A one-time copy of a module's tables from the monolith's database into an extracted
//! service's database, so a fresh `fig up` shows the services holding the monolith's data.
//! It stands in for the replication engine's initial copy until that runs the default pipelines;
//! it copies only into empty tables, so it never duplicates or overwrites.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use localpg::{Binaries, Cluster};

/// Copies every table of `schema` from `from_db` to `to_db` when `probe_table` in `to_db` is
/// empty. Returns whether it copied.
pub fn seed_service_copy(
    cluster: &Cluster,
    schema: &str,
    from_db: &str,
    to_db: &str,
    probe_table: &str,
) -> anyhow::Result<bool> {
    if !target_is_empty(cluster, to_db, probe_table)? {
        return Ok(false);
    }
    let binaries = match cluster.binaries() {
        Some(b) => b.clone(),
        None => Binaries::find(None)?,
    };
    let dump = Command::new(binaries.program("pg_dump"))
        .args([
            "--data-only",
            "--no-owner",
            "--no-privileges",
            "--schema",
            schema,
        ])
        .arg(cluster.url(from_db))
        .output()
        .context("running pg_dump")?;
    if !dump.status.success() {
        bail!(
            "pg_dump of {schema} failed: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
    }
    let mut psql = Command::new(binaries.program("psql"))
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "--single-transaction"])
        .arg(cluster.url(to_db))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running psql")?;
    psql.stdin
        .take()
        .context("psql stdin")?
        .write_all(&dump.stdout)
        .context("feeding psql")?;
    let out = psql.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "loading {schema} into {to_db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(true)
}

fn target_is_empty(cluster: &Cluster, db: &str, table: &str) -> anyhow::Result<bool> {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    // `table` is one of our own constants, never user input.
    let row: Found = diesel::sql_query(format!("SELECT EXISTS (SELECT 1 FROM {table}) AS found"))
        .get_result(&mut cluster.connect(db)?)?;
    Ok(!row.found)
}
