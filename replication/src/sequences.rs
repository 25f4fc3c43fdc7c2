//! Sequences follow their tables. Logical replication carries rows, not sequences: without this,
//! a target that starts drawing ids (after a cutover, or in a two-way pair) would hand out ids
//! the copied rows already hold.
//!
//! For each mapped column whose values come from a sequence on the source, and whose target
//! column takes its values from a sequence too, the target's sequence is moved forward to the
//! source's whenever it is behind, never backwards: a target that owns writes, or the other half
//! of a two-way pair, keeps whatever it has drawn.
//!
//! Reading a source sequence after rows were committed never gives a value behind them: a value
//! is drawn before the row holding it commits, and sequences are not transactional, so any
//! committed (or copied, or applied) row's value is at or below what the sequence says now.

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::{QualifiedName, Table};
use crate::error::{PipelineError, source, target};

/// How the catalogs tie a column to a sequence. A default naming a sequence wins over ownership:
/// it is where the column's values actually come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    /// The column's default calls `nextval` on it.
    Default,
    /// Owned by the column: `serial` (an automatic dependency) or an identity column.
    Owned,
}

/// A table column whose values come from a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceColumn {
    pub table: QualifiedName,
    pub column: String,
    pub sequence: QualifiedName,
    /// Negative for a descending sequence: which way "ahead" is.
    pub increment: i64,
    pub link: Link,
}

/// A source sequence and the target sequence that follows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SequencePair {
    pub source: QualifiedName,
    pub target: QualifiedName,
    pub source_increment: i64,
    pub target_increment: i64,
    /// The source table and column it was found through, for messages.
    pub table: QualifiedName,
    pub column: String,
}

/// A sequence as `SELECT last_value, is_called FROM seq` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub last_value: i64,
    /// Whether `last_value` was handed out (otherwise it is the next value).
    pub is_called: bool,
}

/// Every column of `tables` whose values come from a sequence, one row per link (a `serial`
/// column shows up twice: owned, and named by its default).
pub async fn columns(
    client: &Client,
    tables: &[QualifiedName],
) -> Result<Vec<SequenceColumn>, tokio_postgres::Error> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, a.attname::text,
                    sn.nspname::text, s.relname::text, q.seqincrement, l.link
               FROM unnest($1::text[], $2::text[]) AS want(schema_name, table_name)
               JOIN pg_namespace n ON n.nspname = want.schema_name
               JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = want.table_name
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               JOIN LATERAL (
                    -- owned by the column: serial ('a') or identity ('i')
                    SELECT d.objid AS seq, 'owned' AS link
                      FROM pg_depend d
                     WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                       AND d.refobjid = c.oid AND d.refobjsubid = a.attnum
                       AND d.deptype IN ('a', 'i')
                    UNION ALL
                    -- named by the column's default: the default depends on the sequence
                    SELECT d.refobjid, 'default'
                      FROM pg_attrdef ad
                      JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                                      AND d.refclassid = 'pg_class'::regclass
                     WHERE ad.adrelid = c.oid AND ad.adnum = a.attnum
               ) l ON true
               JOIN pg_class s ON s.oid = l.seq AND s.relkind = 'S'
               JOIN pg_namespace sn ON sn.oid = s.relnamespace
               JOIN pg_sequence q ON q.seqrelid = s.oid",
            &[&schemas, &names],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| SequenceColumn {
            table: QualifiedName {
                schema: r.get(0),
                name: r.get(1),
            },
            column: r.get(2),
            sequence: QualifiedName {
                schema: r.get(3),
                name: r.get(4),
            },
            increment: r.get(5),
            link: if r.get::<_, &str>(6) == "default" {
                Link::Default
            } else {
                Link::Owned
            },
        })
        .collect())
}

/// The sequence `table.column` draws from, by the strongest link (ties: the first by name, so
/// the choice is stable).
fn sequence_of<'a>(
    columns: &'a [SequenceColumn],
    table: &QualifiedName,
    column: &str,
) -> Option<&'a SequenceColumn> {
    columns
        .iter()
        .filter(|c| &c.table == table && c.column == column)
        .min_by(|a, b| (a.link, &a.sequence).cmp(&(b.link, &b.sequence)))
}

/// Pairs each mapped source column's sequence with its target column's: only columns the
/// mapping copies, and only where both sides draw from a sequence. One pair per (source, target)
/// sequence, however many columns share them.
pub fn pair(
    mappings: &[Table],
    source: &[SequenceColumn],
    target: &[SequenceColumn],
) -> Vec<SequencePair> {
    let mut out: Vec<SequencePair> = Vec::new();
    for mapping in mappings {
        let (source_table, target_table) = (mapping.source_name(), mapping.target_name());
        let mut names: Vec<&str> = source
            .iter()
            .filter(|c| c.table == source_table)
            .map(|c| c.column.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let Some(target_column) = mapping.target_column(name) else {
                continue;
            };
            let (Some(s), Some(t)) = (
                sequence_of(source, &source_table, name),
                sequence_of(target, &target_table, target_column),
            ) else {
                continue;
            };
            if out
                .iter()
                .any(|p| p.source == s.sequence && p.target == t.sequence)
            {
                continue;
            }
            out.push(SequencePair {
                source: s.sequence.clone(),
                target: t.sequence.clone(),
                source_increment: s.increment,
                target_increment: t.increment,
                table: source_table.clone(),
                column: name.to_string(),
            });
        }
    }
    out.sort();
    out
}

/// What to set the target sequence to so that it hands out no value the source has drawn, or
/// `None` when it already does not (it is level or ahead: never moved back). Sequences running
/// opposite ways are left alone: no setting of one keeps clear of the other.
pub fn advance(
    source: State,
    source_increment: i64,
    target: State,
    target_increment: i64,
) -> Option<State> {
    if source_increment.signum() != target_increment.signum() || target_increment == 0 {
        return None;
    }
    // i128 and a direction, so "ahead" reads the same for descending sequences and at the ends
    // of the bigint range.
    let direction = i128::from(target_increment.signum());
    let clear_from = if source.is_called {
        i128::from(source.last_value) + direction
    } else {
        i128::from(source.last_value)
    };
    let next = if target.is_called {
        i128::from(target.last_value) + i128::from(target_increment)
    } else {
        i128::from(target.last_value)
    };
    // Set to the source's state, the target's next value is `last_value` (not called) or
    // `last_value` + its own increment (called): at or past `clear_from` either way.
    (next * direction < clear_from * direction).then_some(source)
}

/// A string literal safe whatever `standard_conforming_strings` says.
fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// One statement reading every sequence in `sequences`: rows of (index, last_value, is_called).
fn read_sql(sequences: &[&QualifiedName]) -> String {
    sequences
        .iter()
        .enumerate()
        .map(|(i, s)| format!("SELECT {i}, last_value, is_called FROM {}", s.quoted()))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// One statement moving each sequence to its new state, each only if it is still as read (a
/// value drawn on the target meanwhile means the decision is stale: the next sync decides
/// again). The check and `setval` share a statement, which narrows the window to nothing a
/// caller can act on. Returns a row per sequence moved.
fn setval_sql(moves: &[(&QualifiedName, State, State)]) -> String {
    moves
        .iter()
        .map(|(seq, was, to)| {
            format!(
                "SELECT setval({}::regclass, {}, {}) FROM {} WHERE last_value = {} AND is_called = {}",
                literal(&seq.quoted()),
                to.last_value,
                to.is_called,
                seq.quoted(),
                was.last_value,
                was.is_called,
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The state of each of `sequences`, in order, in one round trip (`None`: no row for it, which a
/// sequence always has; such a pair is left alone).
async fn read(
    client: &Client,
    sequences: &[&QualifiedName],
) -> Result<Vec<Option<State>>, tokio_postgres::Error> {
    let mut states: Vec<Option<State>> = vec![None; sequences.len()];
    for message in client.simple_query(&read_sql(sequences)).await? {
        if let SimpleQueryMessage::Row(row) = message {
            let index: Option<usize> = row.get(0).and_then(|v| v.parse().ok());
            let last_value: Option<i64> = row.get(1).and_then(|v| v.parse().ok());
            if let (Some(i), Some(last_value)) = (index, last_value)
                && let Some(slot) = states.get_mut(i)
            {
                *slot = Some(State {
                    last_value,
                    is_called: row.get(2) == Some("t"),
                });
            }
        }
    }
    Ok(states)
}

/// Reads the sequence pairs of `mappings` from both sides' catalogs.
pub async fn resolve(
    source_client: &Client,
    target_client: &Client,
    mappings: &[Table],
) -> Result<Vec<SequencePair>, PipelineError> {
    let source_tables: Vec<QualifiedName> = mappings.iter().map(Table::source_name).collect();
    let target_tables: Vec<QualifiedName> = mappings.iter().map(Table::target_name).collect();
    let (s, t) = tokio::join!(
        columns(source_client, &source_tables),
        columns(target_client, &target_tables)
    );
    let s = s.map_err(source("reading the tables' sequences"))?;
    let t = t.map_err(target("reading the tables' sequences"))?;
    Ok(pair(mappings, &s, &t))
}

/// Moves every target sequence of `pairs` that is behind its source forward to it: one round
/// trip to each side (concurrently), and one more to the target when something moves. Returns
/// how many target sequences moved.
pub async fn sync(
    source_client: &Client,
    target_client: &Client,
    pairs: &[SequencePair],
) -> Result<usize, PipelineError> {
    if pairs.is_empty() {
        return Ok(0);
    }
    let sources: Vec<&QualifiedName> = pairs.iter().map(|p| &p.source).collect();
    let targets: Vec<&QualifiedName> = pairs.iter().map(|p| &p.target).collect();
    let (s, t) = tokio::join!(read(source_client, &sources), read(target_client, &targets));
    let s = s.map_err(source("reading sequences"))?;
    let t = t.map_err(target("reading sequences"))?;
    let mut moves: Vec<(&QualifiedName, State, State)> = Vec::new();
    for ((p, s), t) in pairs.iter().zip(s).zip(t) {
        let (Some(s), Some(t)) = (s, t) else {
            continue;
        };
        if let Some(to) = advance(s, p.source_increment, t, p.target_increment) {
            // Two source sequences feeding one target sequence: the furthest wins.
            match moves.iter_mut().find(|(seq, ..)| *seq == &p.target) {
                Some(existing) => {
                    if advance(to, p.target_increment, existing.2, p.target_increment).is_some() {
                        existing.2 = to;
                    }
                }
                None => moves.push((&p.target, t, to)),
            }
        }
    }
    if moves.is_empty() {
        return Ok(0);
    }
    let moved = target_client
        .simple_query(&setval_sql(&moves))
        .await
        .map_err(target("advancing sequences"))?
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count();
    Ok(moved)
}

/// [`sync`], a failure logged rather than returned: a sequence left behind for a moment is
/// caught up by the next sync, and is no reason to stop carrying rows.
pub async fn sync_or_warn(
    pipeline: &str,
    source_client: &Client,
    target_client: &Client,
    pairs: &[SequencePair],
) {
    match sync(source_client, target_client, pairs).await {
        Ok(0) => {}
        Ok(moved) => tracing::debug!(pipeline, moved, "target sequences moved forward"),
        Err(e) => {
            tracing::warn!(pipeline, error = %e, "could not synchronise sequences; trying again later")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qn(text: &str) -> QualifiedName {
        QualifiedName::parse(text).unwrap()
    }

    fn col(table: &str, column: &str, sequence: &str, link: Link) -> SequenceColumn {
        SequenceColumn {
            table: qn(table),
            column: column.into(),
            sequence: qn(sequence),
            increment: 1,
            link,
        }
    }

    fn serial(table: &str, column: &str) -> Vec<SequenceColumn> {
        let seq = format!("{table}_{column}_seq");
        vec![
            col(table, column, &seq, Link::Owned),
            col(table, column, &seq, Link::Default),
        ]
    }

    fn mapping(
        source: &str,
        target: Option<&str>,
        columns: Option<&[&str]>,
        rename: &[(&str, &str)],
    ) -> Table {
        Table {
            source: source.into(),
            target: target.map(str::to_string),
            columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
            rename: rename
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    /// (source sequence, target sequence) of each pair.
    fn names(pairs: &[SequencePair]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|p| (p.source.to_string(), p.target.to_string()))
            .collect()
    }

    /// (what, mappings, source columns, target columns, (source, target) sequences paired)
    type PairCase = (
        &'static str,
        Vec<Table>,
        Vec<SequenceColumn>,
        Vec<SequenceColumn>,
        Vec<(&'static str, &'static str)>,
    );

    #[test]
    fn columns_pair_through_the_mapping() {
        let owned_elsewhere = vec![
            col("s.t", "id", "s.by_default", Link::Default),
            col("s.t", "id", "s.owned", Link::Owned),
        ];
        let cases: Vec<PairCase> = vec![
            (
                "serial on both sides, same names",
                vec![mapping("s.t", None, None, &[])],
                serial("s.t", "id"),
                serial("s.t", "id"),
                vec![("s.t_id_seq", "s.t_id_seq")],
            ),
            (
                "identity on the source, serial on the target",
                vec![mapping("s.t", None, None, &[])],
                vec![col("s.t", "id", "s.t_id_seq1", Link::Owned)],
                serial("s.t", "id"),
                vec![("s.t_id_seq1", "s.t_id_seq")],
            ),
            (
                "renamed table and column",
                vec![mapping("s.t", Some("u.v"), None, &[("id", "key")])],
                serial("s.t", "id"),
                serial("u.v", "key"),
                vec![("s.t_id_seq", "u.v_key_seq")],
            ),
            (
                "a column the mapping leaves out",
                vec![mapping("s.t", None, Some(&["name"]), &[])],
                serial("s.t", "id"),
                serial("s.t", "id"),
                vec![],
            ),
            (
                "the target column draws from no sequence",
                vec![mapping("s.t", None, None, &[])],
                serial("s.t", "id"),
                vec![],
                vec![],
            ),
            (
                "the source column draws from no sequence",
                vec![mapping("s.t", None, None, &[])],
                vec![],
                serial("s.t", "id"),
                vec![],
            ),
            (
                "a table outside the mapping",
                vec![mapping("s.t", None, None, &[])],
                serial("s.other", "id"),
                serial("s.other", "id"),
                vec![],
            ),
            (
                "the default's sequence wins over the one the column owns",
                vec![mapping("s.t", None, None, &[])],
                owned_elsewhere.clone(),
                owned_elsewhere,
                vec![("s.by_default", "s.by_default")],
            ),
            (
                "one sequence shared by two tables is one pair",
                vec![
                    mapping("s.a", None, None, &[]),
                    mapping("s.b", None, None, &[]),
                ],
                vec![
                    col("s.a", "id", "s.shared", Link::Default),
                    col("s.b", "id", "s.shared", Link::Default),
                ],
                vec![
                    col("s.a", "id", "s.shared", Link::Default),
                    col("s.b", "id", "s.shared", Link::Default),
                ],
                vec![("s.shared", "s.shared")],
            ),
            (
                "two columns of a table",
                vec![mapping("s.t", None, None, &[])],
                [serial("s.t", "id"), serial("s.t", "n")].concat(),
                [serial("s.t", "id"), serial("s.t", "n")].concat(),
                vec![("s.t_id_seq", "s.t_id_seq"), ("s.t_n_seq", "s.t_n_seq")],
            ),
        ];
        for (what, mappings, source, target, want) in cases {
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(names(&pair(&mappings, &source, &target)), want, "{what}");
        }
    }

    #[test]
    fn a_pair_names_the_source_column_it_came_from() {
        let pairs = pair(
            &[mapping("s.t", Some("u.v"), None, &[("id", "key")])],
            &serial("s.t", "id"),
            &serial("u.v", "key"),
        );
        assert_eq!(
            (pairs[0].table.to_string(), pairs[0].column.as_str()),
            ("s.t".to_string(), "id")
        );
    }

    fn st(last_value: i64, is_called: bool) -> State {
        State {
            last_value,
            is_called,
        }
    }

    #[test]
    fn the_target_moves_forward_only() {
        // (what, source, source increment, target, target increment, the target's new state)
        let cases = [
            (
                "behind",
                st(10, true),
                1,
                st(3, true),
                1,
                Some(st(10, true)),
            ),
            (
                "fresh target",
                st(10, true),
                1,
                st(1, false),
                1,
                Some(st(10, true)),
            ),
            ("level", st(10, true), 1, st(10, true), 1, None),
            ("ahead", st(10, true), 1, st(50, true), 1, None),
            ("fresh source", st(1, false), 1, st(1, false), 1, None),
            (
                "fresh source, target used",
                st(1, false),
                1,
                st(1, true),
                1,
                None,
            ),
            // Its next value (11) is the first the source has not drawn.
            (
                "next value just clear",
                st(10, true),
                1,
                st(11, false),
                1,
                None,
            ),
            (
                "next value taken",
                st(11, true),
                1,
                st(11, false),
                1,
                Some(st(11, true)),
            ),
            // setval(.., 20, false) on the source: 20 is its next, so the target must not be below it.
            (
                "source set, not called",
                st(20, false),
                1,
                st(10, true),
                1,
                Some(st(20, false)),
            ),
            // Its own bigger step already clears the source's last value.
            (
                "bigger step on the target",
                st(10, true),
                1,
                st(9, true),
                5,
                None,
            ),
            (
                "bigger step on the source",
                st(10, true),
                5,
                st(12, true),
                1,
                None,
            ),
            (
                "descending, behind",
                st(-10, true),
                -1,
                st(-3, true),
                -1,
                Some(st(-10, true)),
            ),
            (
                "descending, ahead",
                st(-10, true),
                -1,
                st(-30, true),
                -1,
                None,
            ),
            ("opposite ways", st(-10, true), -1, st(5, true), 1, None),
            (
                "at the top of bigint",
                st(i64::MAX, true),
                1,
                st(i64::MAX - 1, true),
                1,
                Some(st(i64::MAX, true)),
            ),
            (
                "target at the top",
                st(5, true),
                1,
                st(i64::MAX, true),
                1,
                None,
            ),
        ];
        for (what, source, si, target, ti, want) in cases {
            assert_eq!(advance(source, si, target, ti), want, "{what}");
        }
    }

    #[test]
    fn statements_quote_names_and_check_before_setting() {
        let odd = QualifiedName {
            schema: "s".into(),
            name: "it's \"q\"\\".into(),
        };
        assert_eq!(
            read_sql(&[&qn("a.b"), &odd]),
            "SELECT 0, last_value, is_called FROM \"a\".\"b\" UNION ALL \
             SELECT 1, last_value, is_called FROM \"s\".\"it's \"\"q\"\"\\\""
        );
        assert_eq!(
            setval_sql(&[(&odd, st(3, true), st(10, false))]),
            "SELECT setval(E'\"s\".\"it''s \"\"q\"\"\\\\\"'::regclass, 10, false) \
             FROM \"s\".\"it's \"\"q\"\"\\\" WHERE last_value = 3 AND is_called = true"
        );
    }
}
