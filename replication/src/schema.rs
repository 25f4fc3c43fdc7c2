//! What the engine needs to know about a table on either side, and how a source relation maps
//! onto its target: checked once at start against the catalogs and again on every Relation
//! message, so drift stops the pipeline instead of dropping data.

use tokio_postgres::Client;

use crate::config::{QualifiedName, Table};
use crate::error::PipelineError;
use crate::pgoutput::{Relation, ReplicaIdentity};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type` of the column, with its modifier (`character varying(5)`).
    pub type_name: String,
    /// The type without its modifier (`character varying`): what statement parameters are cast
    /// to, so that assigning to the column checks length and precision. An explicit cast to
    /// `character varying(5)` would cut a longer value silently, and could make a key match
    /// another row.
    pub cast_type: String,
    pub in_primary_key: bool,
}

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: QualifiedName,
    pub columns: Vec<ColumnInfo>,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The table's columns in order, or `None` when it does not exist.
pub async fn table_info(
    client: &Client,
    name: &QualifiedName,
) -> Result<Option<TableInfo>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
                    format_type(a.atttypid, -1),
                    COALESCE(a.attnum = ANY(i.indkey), false)
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
              WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
                AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&name.schema, &name.name],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(TableInfo {
        name: name.clone(),
        columns: rows
            .iter()
            .map(|r| ColumnInfo {
                name: r.get(0),
                type_name: r.get(1),
                cast_type: r.get(2),
                in_primary_key: r.get(3),
            })
            .collect(),
    }))
}

/// How one source relation's rows become target rows.
#[derive(Debug, Clone)]
pub struct RelPlan {
    pub source: QualifiedName,
    pub target: QualifiedName,
    /// Per source column (in the Relation message's order): the target column index, if copied.
    pub slots: Vec<Option<usize>>,
    /// Target columns in target order.
    pub target_columns: Vec<ColumnInfo>,
    /// Source column indices identifying a row for UPDATE/DELETE (the replica identity).
    pub key: Vec<usize>,
    /// REPLICA IDENTITY FULL: rows are matched on every column, one row at a time.
    pub full_identity: bool,
}

/// Checks that every source column has somewhere to go (or is deliberately left out) and builds
/// the plan; otherwise the error names the table and the column.
pub fn plan_columns(
    source: QualifiedName,
    source_columns: &[(String, bool)],
    identity: ReplicaIdentity,
    mapping: &Table,
    target: &TableInfo,
) -> Result<RelPlan, PipelineError> {
    let drift = |column: &str, detail: String| PipelineError::Drift {
        table: source.to_string(),
        column: column.to_string(),
        detail,
    };
    if let Some(subset) = &mapping.columns {
        for wanted in subset {
            if !source_columns.iter().any(|(n, _)| n == wanted) {
                return Err(drift(
                    wanted,
                    "is in the pipeline's column list but no longer in the source table".into(),
                ));
            }
        }
    }
    let mut slots = Vec::with_capacity(source_columns.len());
    let mut target_columns: Vec<ColumnInfo> = Vec::new();
    for (name, _) in source_columns {
        match mapping.target_column(name) {
            None => slots.push(None),
            Some(target_name) => {
                let Some(column) = target.column(target_name) else {
                    return Err(drift(
                        name,
                        format!(
                            "has nowhere to go: target table {} has no column {target_name:?} (add it there, or leave the column out with `columns`)",
                            target.name
                        ),
                    ));
                };
                slots.push(Some(target_columns.len()));
                target_columns.push(column.clone());
            }
        }
    }
    let full_identity = identity == ReplicaIdentity::Full;
    let key: Vec<usize> = source_columns
        .iter()
        .enumerate()
        .filter(|(_, (_, is_key))| *is_key)
        .map(|(i, _)| i)
        .collect();
    for &k in &key {
        if slots[k].is_none() {
            return Err(drift(
                &source_columns[k].0,
                "identifies rows for updates and deletes but is not copied".into(),
            ));
        }
    }
    Ok(RelPlan {
        source,
        target: target.name.clone(),
        slots,
        target_columns,
        key,
        full_identity,
    })
}

/// The plan for a Relation message.
pub fn plan_relation(
    relation: &Relation,
    mapping: &Table,
    target: &TableInfo,
) -> Result<RelPlan, PipelineError> {
    let columns: Vec<(String, bool)> = relation
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.is_key()))
        .collect();
    plan_columns(
        QualifiedName {
            schema: relation.namespace.clone(),
            name: relation.name.clone(),
        },
        &columns,
        relation.replica_identity,
        mapping,
        target,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(columns: &[&str]) -> TableInfo {
        TableInfo {
            name: QualifiedName::parse("t.albums").unwrap(),
            columns: columns
                .iter()
                .map(|c| ColumnInfo {
                    name: c.to_string(),
                    type_name: "text".into(),
                    cast_type: "text".into(),
                    in_primary_key: *c == "id",
                })
                .collect(),
        }
    }

    fn mapping(columns: Option<&[&str]>, rename: &[(&str, &str)]) -> Table {
        Table {
            source: "s.albums".into(),
            target: Some("t.albums".into()),
            columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
            rename: rename
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    fn source(columns: &[&str]) -> Vec<(String, bool)> {
        columns
            .iter()
            .map(|c| (c.to_string(), *c == "id"))
            .collect()
    }

    fn plan(src: &[&str], m: &Table, tgt: &TableInfo) -> Result<RelPlan, PipelineError> {
        plan_columns(
            QualifiedName::parse("s.albums").unwrap(),
            &source(src),
            ReplicaIdentity::Default,
            m,
            tgt,
        )
    }

    #[test]
    fn matching_columns_map_by_name() {
        let p = plan(
            &["id", "title"],
            &mapping(None, &[]),
            &target(&["title", "id"]),
        )
        .unwrap();
        assert_eq!(p.slots, [Some(0), Some(1)]);
        assert_eq!(p.target_columns[0].name, "id");
        assert_eq!(p.key, [0]);
    }

    #[test]
    fn a_new_source_column_the_target_lacks_is_drift_naming_it() {
        let err = plan(
            &["id", "title", "colour"],
            &mapping(None, &[]),
            &target(&["id", "title"]),
        )
        .unwrap_err();
        match err {
            PipelineError::Drift { table, column, .. } => {
                assert_eq!((table.as_str(), column.as_str()), ("s.albums", "colour"));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_subset_ignores_other_columns_but_not_its_own_absence() {
        let m = mapping(Some(&["id", "title"]), &[("title", "name")]);
        let p = plan(&["id", "title", "secret"], &m, &target(&["id", "name"])).unwrap();
        assert_eq!(p.slots, [Some(0), Some(1), None]);
        assert_eq!(p.target_columns[1].name, "name");
        let err = plan(&["id", "secret"], &m, &target(&["id", "name"])).unwrap_err();
        assert!(matches!(err, PipelineError::Drift { ref column, .. } if column == "title"));
    }

    #[test]
    fn a_key_column_left_out_is_drift() {
        let m = mapping(Some(&["title"]), &[]);
        let err = plan(&["id", "title"], &m, &target(&["id", "title"])).unwrap_err();
        assert!(matches!(err, PipelineError::Drift { ref column, .. } if column == "id"));
    }
}
