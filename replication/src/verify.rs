//! `fig verify`: compare a source and a target database table by table.
//!
//! For every [`TablePair`] both sides report a row count and an order-independent content hash,
//! computed inside the database; when they differ, the rows that differ are looked for (by primary
//! key when the target table has one, as multisets of whole rows otherwise).
//!
//! # Snapshots and when to call
//!
//! Each side is read in one `REPEATABLE READ, READ ONLY` transaction covering all tables, so each
//! side is compared as of one snapshot. The two snapshots are of course taken independently: a
//! comparison is only meaningful once replication has caught up with the source. The CDC engine
//! records the LSN it has applied in the target; the caller should stop writes to the source (or
//! note `pg_current_wal_lsn()` there), wait until the applied LSN reaches it, and only then call
//! [`verify`]. This module does none of that waiting.
//!
//! The clients must not be used by anyone else while [`verify`] runs: it issues `BEGIN` on them,
//! declares cursors, and ends with `ROLLBACK` (which also undoes the `SET LOCAL`s below, so the
//! sessions are left as they were). Passing the same client as source and target works too (to
//! compare two tables of one database): the two sides then share one transaction.
//!
//! # The content hash
//!
//! Per row, over the mapped columns in comparison order:
//!
//! ```sql
//! h = md5(ROW(col1, col2, ...)::text)
//! ```
//!
//! and per table, with `a` and `b` the 60-bit numbers spelled by hex digits 1–15 and 16–30 of `h`:
//!
//! ```text
//! hash = hex16(sum(a) mod 2^64) || hex16(sum(b) mod 2^64)     (32 hex digits; sums of no rows are 0)
//! ```
//!
//! Sums commute, so the hash depends neither on row order nor on physical layout, and needs no
//! primary key (duplicate rows count as often as they occur). The sums are taken in `numeric` by
//! the server; only three numbers per table travel. Since the hash is over the *text* of the
//! values, identical data with the same column types hashes identically on both sides; to keep
//! that text independent of session settings, both transactions `SET LOCAL` `TimeZone = UTC`,
//! `DateStyle = ISO, YMD`, `IntervalStyle = postgres`, `extra_float_digits = 1`,
//! `bytea_output = hex`, `lc_monetary = C` and `search_path = pg_catalog` (tables are always
//! schema-qualified). Different but text-compatible types (`int4` vs `int8`, `varchar` vs
//! `text`) hash alike; `numeric(10,2)` vs plain `numeric` may not (`1.50` vs `1.5`).
//!
//! # Finding the differing rows
//!
//! Only for tables whose count or hash differs.
//!
//! - **Target has a primary key** (read from `pg_index`, its columns mapped back to source
//!   columns through [`TablePair::columns`]): each side streams `(sort key, row md5, key values as
//!   text)` through a server-side cursor, `FETCH`ed [`BATCH`] rows at a time. The sort key is
//!   `ROW(key columns)::text` and both sides `ORDER BY` it `COLLATE "C"`, i.e. by bytes, which is
//!   exactly how Rust compares `str`s; so the merge of the two sorted streams agrees with the
//!   order on both servers whatever their collations or key types (a typed `ORDER BY` would need
//!   a Rust comparison mimicking every type's and collation's order). The price is a sort instead
//!   of an index scan. Should a stream ever arrive out of byte order (e.g. a database in a
//!   non-UTF-8 encoding, converted on the way), [`VerifyError::Unordered`] is returned rather than
//!   a wrong answer. Rows with the same key are compared as groups (the source side need not be
//!   unique). The merge stops after `limit` differing keys. Memory: at most [`BATCH`] rows per
//!   side plus the keys reported, independent of table size.
//!   [`TableReport::only_in_source`]/[`TableReport::only_in_target`] stay 0 on this path.
//! - **No primary key** (or one whose columns are not all mapped): each side streams
//!   `(row md5, count)` grouped by md5 and ordered by it, and the merge adds up by how many copies
//!   each distinct row is over-represented on either side into `only_in_source` /
//!   `only_in_target` (whole table, not capped; memory again [`BATCH`] rows per side).
//!   `differing_keys` stays empty: there are no keys.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;

use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

/// Rows fetched per round trip from each side's cursor.
pub const BATCH: usize = 10_000;

/// One table to compare, and how its columns correspond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePair {
    /// (schema, table) on the source.
    pub source: (String, String),
    /// (schema, table) on the target.
    pub target: (String, String),
    /// (source column, target column), in comparison order; the same values must appear on both
    /// sides (a table mapping may rename columns or copy a subset).
    pub columns: Vec<(String, String)>,
}

impl TablePair {
    /// A table with the same schema, name and columns on both sides.
    pub fn same(schema: &str, table: &str, columns: &[&str]) -> TablePair {
        TablePair {
            source: (schema.to_owned(), table.to_owned()),
            target: (schema.to_owned(), table.to_owned()),
            columns: columns
                .iter()
                .map(|c| ((*c).to_owned(), (*c).to_owned()))
                .collect(),
        }
    }
}

/// The comparison of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// "schema.table" on the source.
    pub source: String,
    /// "schema.table" on the target.
    pub target: String,
    pub source_rows: i64,
    pub target_rows: i64,
    /// 32 hex digits; see the module documentation.
    pub source_hash: String,
    pub target_hash: String,
    /// Same row count and same hash.
    pub equal: bool,
    /// Keys (as text, e.g. "aid=17" or "customer_id=3,album_id=9", named after the target's
    /// primary key columns, NULL as `NULL`) of rows that differ: missing on one side, extra on the
    /// other, or with different content; at most `limit` of them, in byte order of the key text.
    pub differing_keys: Vec<String>,
    /// For tables without a primary key on the target: how many rows are only on each side
    /// (compared as multisets of whole rows).
    pub only_in_source: i64,
    pub only_in_target: i64,
}

/// The comparison of all tables, in the order asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub tables: Vec<TableReport>,
}

impl Report {
    /// Whether every table is equal (true for no tables).
    pub fn equal(&self) -> bool {
        self.tables.iter().all(|t| t.equal)
    }
}

/// How many leading hex digits of each hash [`Report`]'s `Display` shows.
const SHORT_HASH: usize = 12;

impl fmt::Display for TableReport {
    /// `catalog.albums -> catalog.albums  rows 2000/2000  hash 1a2b3c4d5e6f/1a2b3c4d5e6f  equal`,
    /// or `... DIFFERENT  keys: id=5, id=9`, or `... DIFFERENT  only in source: 1, only in target: 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |h: &str| h.chars().take(SHORT_HASH).collect::<String>();
        write!(
            f,
            "{} -> {}  rows {}/{}  hash {}/{}  {}",
            self.source,
            self.target,
            self.source_rows,
            self.target_rows,
            short(&self.source_hash),
            short(&self.target_hash),
            if self.equal { "equal" } else { "DIFFERENT" }
        )?;
        if !self.differing_keys.is_empty() {
            write!(f, "  keys: {}", self.differing_keys.join(", "))?;
        }
        if self.only_in_source != 0 || self.only_in_target != 0 {
            write!(
                f,
                "  only in source: {}, only in target: {}",
                self.only_in_source, self.only_in_target
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    /// One line per table (no trailing newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, table) in self.tables.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{table}")?;
        }
        Ok(())
    }
}

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{side} table {table} does not exist")]
    MissingTable { side: Side, table: String },
    #[error("{side} table {table} has no column {column:?}")]
    MissingColumn {
        side: Side,
        table: String,
        column: String,
    },
    /// A [`TablePair`] with an empty column list.
    #[error("no columns to compare for {table}")]
    NoColumns { table: String },
    /// A cursor's rows did not arrive in byte order of their sort key (see the module docs).
    #[error(
        "{side} table {table}: rows did not arrive in byte order of their key \
         (is that database not UTF-8?)"
    )]
    Unordered { side: Side, table: String },
    /// The server sent something this module cannot read (a bug, or a very odd server).
    #[error("{side} table {table}: unexpected {what} {value:?}")]
    UnexpectedValue {
        side: Side,
        table: String,
        what: &'static str,
        value: String,
    },
    #[error("{context}: {source}")]
    Database {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Compares `tables` between `source` and `target`; see the module documentation.
///
/// `limit` caps [`TableReport::differing_keys`] per table (0: don't look for keys at all).
pub async fn verify(
    source: &Client,
    target: &Client,
    tables: &[TablePair],
    limit: usize,
) -> Result<Report, VerifyError> {
    let src = Reader {
        client: source,
        side: Side::Source,
    };
    let tgt = Reader {
        client: target,
        side: Side::Target,
    };
    let result = match tokio::join!(src.begin(), tgt.begin()) {
        (Ok(()), Ok(())) => compare_all(&src, &tgt, tables, limit).await,
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    // Always end both transactions (ROLLBACK of a side whose BEGIN failed is a harmless warning).
    let (src_end, tgt_end) = tokio::join!(src.end(), tgt.end());
    let report = result?;
    src_end?;
    tgt_end?;
    Ok(report)
}

async fn compare_all(
    src: &Reader<'_>,
    tgt: &Reader<'_>,
    tables: &[TablePair],
    limit: usize,
) -> Result<Report, VerifyError> {
    let mut report = Report::default();
    for pair in tables {
        let table = compare_table(src, tgt, pair, limit).await?;
        tracing::debug!(
            source = %table.source,
            target = %table.target,
            rows = table.source_rows,
            equal = table.equal,
            "verified table"
        );
        report.tables.push(table);
    }
    Ok(report)
}

async fn compare_table(
    src: &Reader<'_>,
    tgt: &Reader<'_>,
    pair: &TablePair,
    limit: usize,
) -> Result<TableReport, VerifyError> {
    let source_name = dotted(&pair.source);
    let target_name = dotted(&pair.target);
    if pair.columns.is_empty() {
        return Err(VerifyError::NoColumns {
            table: format!("{source_name} -> {target_name}"),
        });
    }

    let (src_cols, tgt_cols, primary_key) = tokio::try_join!(
        src.columns(&pair.source),
        tgt.columns(&pair.target),
        tgt.primary_key(&pair.target),
    )?;
    for (s, t) in &pair.columns {
        for (side, have, column, table) in [
            (Side::Source, &src_cols, s, &source_name),
            (Side::Target, &tgt_cols, t, &target_name),
        ] {
            if !have.contains(column) {
                return Err(VerifyError::MissingColumn {
                    side,
                    table: table.clone(),
                    column: column.clone(),
                });
            }
        }
    }

    let src_table = Table::new(&pair.source, pair.columns.iter().map(|(s, _)| s.as_str()));
    let tgt_table = Table::new(&pair.target, pair.columns.iter().map(|(_, t)| t.as_str()));
    let (src_sum, tgt_sum) = tokio::try_join!(src.summary(&src_table), tgt.summary(&tgt_table))?;

    let equal = src_sum.rows == tgt_sum.rows && src_sum.hash == tgt_sum.hash;
    let mut report = TableReport {
        source: source_name,
        target: target_name,
        source_rows: src_sum.rows,
        target_rows: tgt_sum.rows,
        source_hash: src_sum.hash,
        target_hash: tgt_sum.hash,
        equal,
        differing_keys: Vec::new(),
        only_in_source: 0,
        only_in_target: 0,
    };
    if equal {
        return Ok(report);
    }

    match map_key(&primary_key, &pair.columns) {
        Some(key) => {
            if limit > 0 {
                report.differing_keys =
                    differing_keys(src, tgt, &src_table, &tgt_table, &key, limit).await?;
            }
        }
        None => {
            if !primary_key.is_empty() {
                tracing::info!(
                    table = %report.target,
                    "primary key not covered by the column mapping; comparing whole rows"
                );
            }
            let (only_src, only_tgt) =
                multiset_difference(src, tgt, &src_table, &tgt_table).await?;
            report.only_in_source = only_src;
            report.only_in_target = only_tgt;
        }
    }
    Ok(report)
}

/// The target's primary key as (source column, target column) pairs, if every key column is
/// mapped.
fn map_key(primary_key: &[String], columns: &[(String, String)]) -> Option<Vec<(String, String)>> {
    if primary_key.is_empty() {
        return None;
    }
    primary_key
        .iter()
        .map(|k| columns.iter().find(|(_, t)| t == k).cloned())
        .collect()
}

/// Walks both sides in key order and returns up to `limit` keys whose rows differ.
async fn differing_keys(
    src: &Reader<'_>,
    tgt: &Reader<'_>,
    src_table: &Table,
    tgt_table: &Table,
    key: &[(String, String)],
    limit: usize,
) -> Result<Vec<String>, VerifyError> {
    let key_names: Vec<&str> = key.iter().map(|(_, t)| t.as_str()).collect();
    let src_key: Vec<&str> = key.iter().map(|(s, _)| s.as_str()).collect();
    let tgt_key: Vec<&str> = key.iter().map(|(_, t)| t.as_str()).collect();
    let (src_query, tgt_query) = (
        src_table.keyed_query(&src_key),
        tgt_table.keyed_query(&tgt_key),
    );
    let (mut s, mut t) = tokio::try_join!(
        Cursor::open(src, &src_query, &src_table.name),
        Cursor::open(tgt, &tgt_query, &tgt_table.name),
    )?;

    let mut keys = Vec::new();
    while keys.len() < limit {
        tokio::try_join!(s.fill(), t.fill())?;
        let Some(order) = merge_order(s.peek_key(), t.peek_key()) else {
            break;
        };
        match order {
            Ordering::Less => keys.push(s.take_group().await?.display(&key_names)),
            Ordering::Greater => keys.push(t.take_group().await?.display(&key_names)),
            Ordering::Equal => {
                let (a, b) = tokio::try_join!(s.take_group(), t.take_group())?;
                if a.hashes != b.hashes {
                    keys.push(a.display(&key_names));
                }
            }
        }
    }
    tokio::try_join!(s.close(), t.close())?;
    Ok(keys)
}

/// Which of two sorted streams' next keys comes first (byte order, as both sides sort);
/// `None` when both are exhausted, and an exhausted side counts as last.
fn merge_order(source: Option<&str>, target: Option<&str>) -> Option<Ordering> {
    match (source, target) {
        (None, None) => None,
        (Some(_), None) => Some(Ordering::Less),
        (None, Some(_)) => Some(Ordering::Greater),
        (Some(a), Some(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
    }
}

/// Compares the multisets of row md5s: (rows only in source, rows only in target).
async fn multiset_difference(
    src: &Reader<'_>,
    tgt: &Reader<'_>,
    src_table: &Table,
    tgt_table: &Table,
) -> Result<(i64, i64), VerifyError> {
    let (src_query, tgt_query) = (src_table.grouped_query(), tgt_table.grouped_query());
    let (mut s, mut t) = tokio::try_join!(
        Cursor::open(src, &src_query, &src_table.name),
        Cursor::open(tgt, &tgt_query, &tgt_table.name),
    )?;
    let (mut only_src, mut only_tgt) = (0i64, 0i64);
    loop {
        tokio::try_join!(s.fill(), t.fill())?;
        let Some(order) = merge_order(s.peek_key(), t.peek_key()) else {
            break;
        };
        match order {
            Ordering::Less => only_src += s.pop_count()?,
            Ordering::Greater => only_tgt += t.pop_count()?,
            Ordering::Equal => {
                let (a, b) = (s.pop_count()?, t.pop_count()?);
                if a > b {
                    only_src += a - b;
                } else {
                    only_tgt += b - a;
                }
            }
        }
    }
    tokio::try_join!(s.close(), t.close())?;
    Ok((only_src, only_tgt))
}

/// A table on one side with the columns to compare, already quoted.
struct Table {
    /// "schema.table" for messages.
    name: String,
    /// `"schema"."table"`.
    relation: String,
    /// `pg_catalog.md5(ROW("c1", "c2")::text)`.
    row_md5: String,
}

impl Table {
    fn new<'c>(table: &(String, String), columns: impl Iterator<Item = &'c str>) -> Table {
        Table {
            name: dotted(table),
            relation: format!("{}.{}", quote_ident(&table.0), quote_ident(&table.1)),
            row_md5: format!("pg_catalog.md5(ROW({})::text)", quoted_list(columns)),
        }
    }

    fn summary_query(&self) -> String {
        let part = |from: u32| {
            format!(
                "coalesce(sum(('x' || substr(h, {from}, 15))::bit(60)::int8) \
                 % 18446744073709551616, 0)::text"
            )
        };
        format!(
            "SELECT count(*)::text, {}, {} FROM (SELECT {} AS h FROM {}) AS v",
            part(1),
            part(16),
            self.row_md5,
            self.relation
        )
    }

    /// Rows `(sort key, md5, key values...)` in byte order of the sort key, then of the md5.
    fn keyed_query(&self, key: &[&str]) -> String {
        let values: String = key
            .iter()
            .enumerate()
            .map(|(i, k)| format!(", {}::text AS k{i}", quote_ident(k)))
            .collect();
        let outer: String = (0..key.len()).map(|i| format!(", k{i}")).collect();
        format!(
            "SELECT sk, h{outer} FROM (SELECT ROW({})::text AS sk, {} AS h{values} FROM {}) AS v \
             ORDER BY sk COLLATE \"C\", h COLLATE \"C\"",
            quoted_list(key.iter().copied()),
            self.row_md5,
            self.relation
        )
    }

    /// Rows `(md5, count)`, one per distinct row, in byte order of the md5.
    fn grouped_query(&self) -> String {
        format!(
            "SELECT h, count(*)::text FROM (SELECT {} AS h FROM {}) AS v \
             GROUP BY h ORDER BY h COLLATE \"C\"",
            self.row_md5, self.relation
        )
    }
}

struct Summary {
    rows: i64,
    hash: String,
}

/// One side's connection.
struct Reader<'a> {
    client: &'a Client,
    side: Side,
}

impl Reader<'_> {
    async fn begin(&self) -> Result<(), VerifyError> {
        self.client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
                 SET LOCAL search_path = pg_catalog; \
                 SET LOCAL TimeZone = 'UTC'; \
                 SET LOCAL DateStyle = 'ISO, YMD'; \
                 SET LOCAL IntervalStyle = 'postgres'; \
                 SET LOCAL extra_float_digits = 1; \
                 SET LOCAL bytea_output = 'hex'; \
                 SET LOCAL lc_monetary = 'C'",
            )
            .await
            .map_err(|source| VerifyError::Database {
                context: format!("starting the {} snapshot", self.side),
                source,
            })
    }

    async fn end(&self) -> Result<(), VerifyError> {
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|source| VerifyError::Database {
                context: format!("ending the {} snapshot", self.side),
                source,
            })
    }

    fn database(
        &self,
        what: &str,
        table: &str,
    ) -> impl FnOnce(tokio_postgres::Error) -> VerifyError {
        let context = format!("{what} {} table {table}", self.side);
        move |source| VerifyError::Database { context, source }
    }

    /// The table's live column names; [`VerifyError::MissingTable`] if there is no such table
    /// (or view, materialized view, foreign or partitioned table).
    async fn columns(&self, table: &(String, String)) -> Result<Vec<String>, VerifyError> {
        let name = dotted(table);
        let rows = self
            .client
            .query(
                "SELECT a.attname::text \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_catalog.pg_attribute a \
                   ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE n.nspname = $1 AND c.relname = $2 \
                   AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                 ORDER BY a.attnum",
                &[&table.0, &table.1],
            )
            .await
            .map_err(self.database("reading the columns of", &name))?;
        if rows.is_empty() {
            return Err(VerifyError::MissingTable {
                side: self.side,
                table: name,
            });
        }
        let mut columns = Vec::with_capacity(rows.len());
        for row in rows {
            let column: Option<String> = row
                .try_get(0)
                .map_err(self.database("reading the columns of", &name))?;
            columns.extend(column);
        }
        Ok(columns)
    }

    /// The table's primary key columns in key order (empty without one).
    async fn primary_key(&self, table: &(String, String)) -> Result<Vec<String>, VerifyError> {
        let name = dotted(table);
        let rows = self
            .client
            .query(
                "SELECT a.attname::text \
                 FROM pg_catalog.pg_index i \
                 JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary \
                 ORDER BY k.ord",
                &[&table.0, &table.1],
            )
            .await
            .map_err(self.database("reading the primary key of", &name))?;
        rows.iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<_, _>>()
            .map_err(self.database("reading the primary key of", &name))
    }

    async fn summary(&self, table: &Table) -> Result<Summary, VerifyError> {
        let rows = self
            .text_rows(&table.summary_query(), "hashing", &table.name)
            .await?;
        let unexpected = |what, value: &str| VerifyError::UnexpectedValue {
            side: self.side,
            table: table.name.clone(),
            what,
            value: value.to_owned(),
        };
        let [row] = rows.as_slice() else {
            return Err(unexpected(
                "number of summary rows",
                &rows.len().to_string(),
            ));
        };
        let cell = |i| {
            row.try_get(i)
                .map_err(self.database("hashing", &table.name))
                .map(|v| v.unwrap_or_default())
        };
        let (count, a, b) = (cell(0)?, cell(1)?, cell(2)?);
        let rows = count
            .parse::<i64>()
            .map_err(|_| unexpected("row count", count))?;
        let a = a.parse::<u64>().map_err(|_| unexpected("hash sum", a))?;
        let b = b.parse::<u64>().map_err(|_| unexpected("hash sum", b))?;
        Ok(Summary {
            rows,
            hash: format!("{a:016x}{b:016x}"),
        })
    }

    /// Runs `sql` with the simple query protocol (all values as text).
    async fn text_rows(
        &self,
        sql: &str,
        what: &str,
        table: &str,
    ) -> Result<Vec<SimpleQueryRow>, VerifyError> {
        let messages = self
            .client
            .simple_query(sql)
            .await
            .map_err(self.database(what, table))?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .collect())
    }

    fn cursor_name(&self) -> &'static str {
        match self.side {
            Side::Source => "\"fig_verify_source\"",
            Side::Target => "\"fig_verify_target\"",
        }
    }
}

/// A server-side cursor over rows whose first column is a non-NULL sort key, fetched
/// [`BATCH`] rows at a time and checked to arrive in byte order.
struct Cursor<'r, 'c> {
    reader: &'r Reader<'c>,
    table: String,
    rows: VecDeque<SimpleQueryRow>,
    exhausted: bool,
    last_key: Option<String>,
}

/// The rows of one key on one side.
struct Group {
    /// The key values as text (None for NULL).
    values: Vec<Option<String>>,
    /// The rows' md5s, sorted.
    hashes: Vec<String>,
}

impl Group {
    fn display(&self, names: &[&str]) -> String {
        names
            .iter()
            .zip(&self.values)
            .map(|(n, v)| format!("{n}={}", v.as_deref().unwrap_or("NULL")))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl<'r, 'c> Cursor<'r, 'c> {
    async fn open(reader: &'r Reader<'c>, query: &str, table: &str) -> Result<Self, VerifyError> {
        reader
            .client
            .batch_execute(&format!(
                "DECLARE {} NO SCROLL CURSOR FOR {query}",
                reader.cursor_name()
            ))
            .await
            .map_err(reader.database("comparing rows of", table))?;
        Ok(Cursor {
            reader,
            table: table.to_owned(),
            rows: VecDeque::new(),
            exhausted: false,
            last_key: None,
        })
    }

    async fn close(&self) -> Result<(), VerifyError> {
        self.reader
            .client
            .batch_execute(&format!("CLOSE {}", self.reader.cursor_name()))
            .await
            .map_err(self.reader.database("comparing rows of", &self.table))
    }

    /// Makes sure a row is buffered unless the cursor is exhausted.
    async fn fill(&mut self) -> Result<(), VerifyError> {
        if self.rows.is_empty() && !self.exhausted {
            let batch = self
                .reader
                .text_rows(
                    &format!("FETCH FORWARD {BATCH} FROM {}", self.reader.cursor_name()),
                    "comparing rows of",
                    &self.table,
                )
                .await?;
            self.exhausted = batch.len() < BATCH;
            self.rows = batch.into();
        }
        Ok(())
    }

    /// The sort key of the next buffered row (call [`Cursor::fill`] first).
    fn peek_key(&self) -> Option<&str> {
        self.rows.front().and_then(|row| row.get(0))
    }

    /// Takes the next buffered row, checking the order of its key.
    fn pop(&mut self) -> Result<SimpleQueryRow, VerifyError> {
        let unexpected = |what| VerifyError::UnexpectedValue {
            side: self.reader.side,
            table: self.table.clone(),
            what,
            value: String::new(),
        };
        let row = self
            .rows
            .pop_front()
            .ok_or_else(|| unexpected("end of rows"))?;
        let key = row.get(0).ok_or_else(|| unexpected("NULL sort key"))?;
        if let Some(last) = &self.last_key
            && key.as_bytes() < last.as_bytes()
        {
            return Err(VerifyError::Unordered {
                side: self.reader.side,
                table: self.table.clone(),
            });
        }
        self.last_key = Some(key.to_owned());
        Ok(row)
    }

    /// Takes all rows of the next key: `(sort key, md5, key values...)`.
    async fn take_group(&mut self) -> Result<Group, VerifyError> {
        let first = self.pop()?;
        let key = first.get(0).unwrap_or_default().to_owned();
        let values = (2..first.len())
            .map(|i| first.get(i).map(str::to_owned))
            .collect();
        let mut hashes = vec![first.get(1).unwrap_or_default().to_owned()];
        loop {
            self.fill().await?;
            if self.peek_key() != Some(key.as_str()) {
                break;
            }
            let row = self.pop()?;
            hashes.push(row.get(1).unwrap_or_default().to_owned());
        }
        Ok(Group { values, hashes })
    }

    /// Takes the next `(md5, count)` row and returns its count.
    fn pop_count(&mut self) -> Result<i64, VerifyError> {
        let row = self.pop()?;
        let count = row.get(1).unwrap_or_default();
        count.parse().map_err(|_| VerifyError::UnexpectedValue {
            side: self.reader.side,
            table: self.table.clone(),
            what: "row count",
            value: count.to_owned(),
        })
    }
}

/// Quotes an SQL identifier, doubling embedded `"`.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quoted_list<'c>(names: impl Iterator<Item = &'c str>) -> String {
    names.map(quote_ident).collect::<Vec<_>>().join(", ")
}

fn dotted(table: &(String, String)) -> String {
    format!("{}.{}", table.0, table.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let table = Table::new(
            &("we\"ird".to_owned(), "t".to_owned()),
            ["id", "x\"y"].into_iter(),
        );
        assert_eq!(table.relation, "\"we\"\"ird\".\"t\"");
        assert_eq!(
            table.row_md5,
            "pg_catalog.md5(ROW(\"id\", \"x\"\"y\")::text)"
        );
    }

    #[test]
    fn key_mapping_needs_every_key_column() {
        let columns = vec![
            ("cid".to_owned(), "customer_id".to_owned()),
            ("aid".to_owned(), "album_id".to_owned()),
        ];
        let pk = ["customer_id".to_owned(), "album_id".to_owned()];
        assert_eq!(map_key(&pk, &columns), Some(columns.clone()));
        assert_eq!(map_key(&["surrogate".to_owned()], &columns), None);
        assert_eq!(map_key(&[], &columns), None);
    }

    #[test]
    fn display_lines() {
        let mut t = TableReport {
            source: "catalog.albums".into(),
            target: "catalog.albums".into(),
            source_rows: 2000,
            target_rows: 2000,
            source_hash: "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d".into(),
            target_hash: "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d".into(),
            equal: true,
            differing_keys: vec![],
            only_in_source: 0,
            only_in_target: 0,
        };
        assert_eq!(
            t.to_string(),
            "catalog.albums -> catalog.albums  rows 2000/2000  hash 1a2b3c4d5e6f/1a2b3c4d5e6f  equal"
        );
        t.equal = false;
        t.differing_keys = vec!["id=5".into(), "id=9".into()];
        let report = Report {
            tables: vec![t.clone(), t],
        };
        assert!(!report.equal());
        let text = report.to_string();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with("DIFFERENT  keys: id=5, id=9"), "{text}");
    }
}
