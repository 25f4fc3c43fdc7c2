//! Pipeline configuration: a TOML file of `[[pipelines]]`, each a source, a target and a table
//! mapping. See docs/replication.md for the format.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The MusicCorp defaults: monolith catalog tables → catalog database, monolith wishlist
/// tables → wishlist database.
pub const MUSICCORP: &str = include_str!("../config/musiccorp.toml");
/// MusicCorp's reporting database's feeds: every source's tables into its `raw_*` schemas.
pub const REPORTING: &str = include_str!("../config/reporting.toml");

/// MusicCorp's databases, by role: what the `${NAME}`s of [`MUSICCORP`] and [`REPORTING`] stand
/// for (`fig up` fills them in with its cluster's; a stack without a reporting database leaves
/// that one empty).
#[derive(Debug, Clone, Default)]
pub struct MusicCorp {
    pub monolith: String,
    pub catalog: String,
    pub wishlist: String,
    pub reporting: String,
}

impl MusicCorp {
    fn lookup(&self, name: &str) -> Option<String> {
        match name {
            "FIG_MONOLITH_DATABASE_URL" => Some(self.monolith.clone()),
            "FIG_CATALOG_DATABASE_URL" => Some(self.catalog.clone()),
            "FIG_WISHLIST_DATABASE_URL" => Some(self.wishlist.clone()),
            "FIG_REPORTING_DATABASE_URL" => Some(self.reporting.clone()),
            _ => None,
        }
    }

    /// The pipelines of the data-first split (monolith -> services).
    pub fn pipelines(&self) -> Result<Vec<Pipeline>, ConfigError> {
        parse(MUSICCORP, |name| self.lookup(name))
    }

    /// The reporting database's feeds.
    pub fn reporting_feeds(&self) -> Result<Vec<Pipeline>, ConfigError> {
        parse(REPORTING, |name| self.lookup(name))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    pipelines: Vec<Pipeline>,
}

/// One source → target stream.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Names the slot, publication and replication origin unless they are given.
    pub name: String,
    /// libpq URL of the database whose changes are captured.
    pub source: String,
    /// libpq URL of the database they are applied to.
    pub target: String,
    pub publication: Option<String>,
    pub slot: Option<String>,
    /// `snapshot` (default): copy the tables at the slot's snapshot first. `none`: stream from
    /// the slot's creation only, for a reverse stream whose target already holds the data.
    #[serde(default)]
    pub initial_copy: InitialCopy,
    /// Pipelines whose applied changes this one ignores: the other half of a two-way pair.
    #[serde(default)]
    pub skip_origins_of: Vec<String>,
    /// Rows buffered per statement batch: memory stays bounded for any transaction size.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Warn when the slot retains more WAL than this (MiB).
    #[serde(default = "default_retained_wal_warn_mib")]
    pub retained_wal_warn_mib: u64,
    /// A source transaction whose decoded changes pass this (KiB) is streamed while still in
    /// progress and applied as it arrives, so its commit on the target follows the source's
    /// closely (the walsender's `logical_decoding_work_mem`). 0 turns streaming off.
    #[serde(default = "default_stream_after_kib")]
    pub stream_after_kib: u32,
    /// Streamed transactions open at once; each holds its own target connection.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    pub tables: Vec<Table>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InitialCopy {
    #[default]
    Snapshot,
    None,
}

fn default_batch_rows() -> usize {
    20_000
}

fn default_retained_wal_warn_mib() -> u64 {
    1_024
}

fn default_stream_after_kib() -> u32 {
    4_096
}

fn default_max_streams() -> usize {
    16
}

/// One table: `schema.table` on each side, optionally a column subset and renames.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub source: String,
    /// Defaults to the source name.
    pub target: Option<String>,
    /// Source columns to copy; all of them when absent. Others are ignored on purpose, so a
    /// new source column outside this list is not drift.
    pub columns: Option<Vec<String>>,
    /// Source column → target column.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
}

/// A `schema.table` name, split.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn parse(text: &str) -> Option<QualifiedName> {
        let (schema, name) = text.split_once('.')?;
        let ok = |s: &str| !s.is_empty() && !s.contains('.');
        (ok(schema) && ok(name)).then(|| QualifiedName {
            schema: schema.to_string(),
            name: name.to_string(),
        })
    }

    /// `"schema"."table"`, safe to put in SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A SQL identifier in double quotes, quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Table {
    pub fn source_name(&self) -> QualifiedName {
        QualifiedName::parse(&self.source).unwrap_or(QualifiedName {
            schema: String::new(),
            name: self.source.clone(),
        })
    }

    pub fn target_name(&self) -> QualifiedName {
        let text = self.target.as_deref().unwrap_or(&self.source);
        QualifiedName::parse(text).unwrap_or(QualifiedName {
            schema: String::new(),
            name: text.to_string(),
        })
    }

    /// The target column a source column lands in, or `None` when it is not copied.
    pub fn target_column<'a>(&'a self, source_column: &'a str) -> Option<&'a str> {
        if let Some(subset) = &self.columns
            && !subset.iter().any(|c| c == source_column)
        {
            return None;
        }
        Some(
            self.rename
                .get(source_column)
                .map(String::as_str)
                .unwrap_or(source_column),
        )
    }
}

impl Pipeline {
    /// The stream in the other direction, named `<name>_reverse`: this pipeline's target tables
    /// back into its source, from its slot's creation on (no copy: the source already holds the
    /// data), ignoring what this pipeline applied. What a write-ownership flip starts when the
    /// target takes over the writes, so that a rollback loses nothing.
    pub fn reversed(&self) -> Pipeline {
        Pipeline {
            name: format!("{}_reverse", self.name),
            source: self.target.clone(),
            target: self.source.clone(),
            publication: None,
            slot: None,
            initial_copy: InitialCopy::None,
            skip_origins_of: vec![self.name.clone()],
            batch_rows: self.batch_rows,
            retained_wal_warn_mib: self.retained_wal_warn_mib,
            stream_after_kib: self.stream_after_kib,
            max_streams: self.max_streams,
            tables: self
                .tables
                .iter()
                .map(|t| Table {
                    source: t.target_name().to_string(),
                    target: Some(t.source.clone()),
                    columns: t.columns.as_ref().map(|cols| {
                        cols.iter()
                            .filter_map(|c| t.target_column(c).map(str::to_string))
                            .collect()
                    }),
                    rename: t
                        .rename
                        .iter()
                        .map(|(from, to)| (to.clone(), from.clone()))
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn publication(&self) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| format!("fig_{}", self.name))
    }

    pub fn slot(&self) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| format!("fig_{}", self.name))
    }

    /// The `application_name` of the pipeline's sessions, on both sides.
    pub fn application_name(&self) -> String {
        format!("fig-replication-{}", self.name)
    }

    /// The replication origin this pipeline's applied changes carry on the target.
    pub fn origin(&self) -> String {
        origin_of(&self.name)
    }

    /// The origin of the pipeline's `n`th streaming session: only one session may use an
    /// origin at a time, and streamed transactions are applied on sessions of their own.
    pub fn stream_origin(&self, n: usize) -> String {
        format!("{}.s{n}", self.origin())
    }
}

/// The replication origin of the pipeline named `name`.
pub fn origin_of(name: &str) -> String {
    format!("fig_{name}")
}

/// Whether `origin` is one the pipeline named `pipeline` applies with: its own or one of its
/// streaming sessions' (pipeline names have no '.', so no other pipeline's can match).
pub fn is_origin_of(origin: &str, pipeline: &str) -> bool {
    let own = origin_of(pipeline);
    origin == own
        || origin
            .strip_prefix(own.as_str())
            .is_some_and(|rest| rest.starts_with(".s"))
}

/// Parses a config file's text, replacing `${NAME}` with `lookup(NAME)`.
pub fn parse(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Pipeline>, ConfigError> {
    let file: File =
        toml::from_str(text).map_err(|e| invalid("config", e.message().to_string()))?;
    let mut pipelines = file.pipelines;
    for (i, p) in pipelines.iter_mut().enumerate() {
        p.source = substitute(&p.source, &lookup)
            .map_err(|m| invalid(format!("pipelines[{i}].source"), m))?;
        p.target = substitute(&p.target, &lookup)
            .map_err(|m| invalid(format!("pipelines[{i}].target"), m))?;
    }
    validate(&pipelines)?;
    Ok(pipelines)
}

/// Reads and parses a config file, with `${NAME}` from the environment.
pub fn load(file: &str) -> Result<Vec<Pipeline>, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_string(),
        source,
    })?;
    parse(&text, |name| std::env::var(name).ok())
}

fn substitute(text: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
        let name = &after[..end];
        let value = lookup(name).ok_or_else(|| format!("{name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_simple_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn validate(pipelines: &[Pipeline]) -> Result<(), ConfigError> {
    if pipelines.is_empty() {
        return Err(invalid("pipelines", "at least one pipeline is needed"));
    }
    for (i, p) in pipelines.iter().enumerate() {
        let at = |field: &str| format!("pipelines[{i}].{field}");
        if !is_simple_name(&p.name) {
            return Err(invalid(
                at("name"),
                "must be 1-40 characters of a-z, 0-9 and _",
            ));
        }
        if pipelines[..i].iter().any(|q| q.name == p.name) {
            return Err(invalid(at("name"), format!("{:?} is used twice", p.name)));
        }
        for (field, value) in [("slot", &p.slot), ("publication", &p.publication)] {
            if let Some(v) = value
                && !is_simple_name(v)
            {
                return Err(invalid(
                    at(field),
                    "must be 1-40 characters of a-z, 0-9 and _",
                ));
            }
        }
        if p.stream_after_kib != 0 && p.stream_after_kib < 64 {
            return Err(invalid(
                at("stream_after_kib"),
                "must be 0 (no streaming) or at least 64 (the server's minimum)",
            ));
        }
        if p.max_streams == 0 {
            return Err(invalid(at("max_streams"), "must be at least 1"));
        }
        if p.batch_rows == 0 {
            return Err(invalid(at("batch_rows"), "must be at least 1"));
        }
        if p.tables.is_empty() {
            return Err(invalid(at("tables"), "at least one table is needed"));
        }
        for (j, t) in p.tables.iter().enumerate() {
            let at = |field: &str| format!("pipelines[{i}].tables[{j}].{field}");
            if QualifiedName::parse(&t.source).is_none() {
                return Err(invalid(at("source"), "must be schema.table"));
            }
            if let Some(target) = &t.target
                && QualifiedName::parse(target).is_none()
            {
                return Err(invalid(at("target"), "must be schema.table"));
            }
            if p.tables[..j].iter().any(|u| u.source == t.source) {
                return Err(invalid(
                    at("source"),
                    format!("{} is mapped twice", t.source),
                ));
            }
            if let Some(columns) = &t.columns {
                if columns.is_empty() {
                    return Err(invalid(at("columns"), "must name at least one column"));
                }
                for renamed in t.rename.keys() {
                    if !columns.contains(renamed) {
                        return Err(invalid(
                            format!("pipelines[{i}].tables[{j}].rename.{renamed}"),
                            "renames a column that is not in `columns`",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        Some(format!("postgresql://x/{}", name.to_lowercase()))
    }

    #[test]
    fn a_pipeline_recognises_its_own_origins_only() {
        let cases = [
            ("fig_catalog", "catalog", true),
            ("fig_catalog.s0", "catalog", true),
            ("fig_catalog.s12", "catalog", true),
            ("fig_catalog_reverse", "catalog", false),
            ("fig_catalog_reverse.s1", "catalog", false),
            ("fig_catalogx", "catalog", false),
            ("fig_catalog.", "catalog", false),
            ("pg_16384", "catalog", false),
        ];
        for (origin, pipeline, want) in cases {
            assert_eq!(
                is_origin_of(origin, pipeline),
                want,
                "{origin} of {pipeline}"
            );
        }
    }

    #[test]
    fn the_musiccorp_defaults_parse() {
        let pipelines = parse(MUSICCORP, env).unwrap();
        let names: Vec<&str> = pipelines.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["catalog", "wishlist"]);
        assert_eq!(
            pipelines[0].source,
            "postgresql://x/fig_monolith_database_url"
        );
        assert_eq!(pipelines[0].slot(), "fig_catalog");
        assert_eq!(
            pipelines[0].tables[1].target_name().to_string(),
            "catalog.albums"
        );
    }

    #[test]
    fn the_reporting_feeds_parse_and_skip_the_echoes() {
        let pipelines = parse(REPORTING, env).unwrap();
        let names: Vec<&str> = pipelines.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "reporting_monolith",
                "reporting_catalog",
                "reporting_wishlist"
            ]
        );
        for p in &pipelines {
            assert_eq!(p.target, "postgresql://x/fig_reporting_database_url");
            for t in &p.tables {
                assert_eq!(
                    t.target_name().to_string(),
                    format!("raw_{}", t.source),
                    "{}",
                    p.name
                );
            }
        }
        // Every other stream out of a source is an echo to skip: the services copy nothing.
        assert_eq!(
            pipelines[0].skip_origins_of,
            ["catalog_reverse", "wishlist_reverse"]
        );
        assert_eq!(pipelines[1].skip_origins_of, ["catalog"]);
        assert_eq!(pipelines[1].initial_copy, InitialCopy::None);
        assert_eq!(pipelines[2].skip_origins_of, ["wishlist"]);
    }

    #[test]
    fn columns_can_be_subset_and_renamed() {
        let text = r#"
            [[pipelines]]
            name = "p"
            source = "s"
            target = "t"
            [[pipelines.tables]]
            source = "a.b"
            target = "c.d"
            columns = ["id", "title"]
            rename = { title = "name" }
        "#;
        let p = &parse(text, env).unwrap()[0];
        let t = &p.tables[0];
        assert_eq!(t.target_column("id"), Some("id"));
        assert_eq!(t.target_column("title"), Some("name"));
        assert_eq!(t.target_column("secret"), None);
    }

    #[test]
    fn mistakes_name_the_field() {
        let base = |extra: &str, table: &str| {
            format!(
                "[[pipelines]]\nname = \"p\"\nsource = \"s\"\ntarget = \"t\"\n{extra}\n[[pipelines.tables]]\n{table}\n"
            )
        };
        let cases = [
            (
                base("", "source = \"nodot\""),
                "pipelines[0].tables[0].source",
            ),
            (
                base("slot = \"Bad-Slot\"", "source = \"a.b\""),
                "pipelines[0].slot",
            ),
            (
                base("batch_rows = 0", "source = \"a.b\""),
                "pipelines[0].batch_rows",
            ),
            (
                base(
                    "",
                    "source = \"a.b\"\ncolumns = [\"x\"]\nrename = { y = \"z\" }",
                ),
                "pipelines[0].tables[0].rename.y",
            ),
            (
                "[[pipelines]]\nname = \"p\"\nsource = \"${NOPE}\"\ntarget = \"t\"\ntables = []"
                    .to_string(),
                "pipelines[0].source",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text, |n| (n != "NOPE").then(|| "x".to_string())).unwrap_err();
            match err {
                ConfigError::Invalid { path, .. } => assert_eq!(path, want, "{text}"),
                other => panic!("{other}"),
            }
        }
    }
}
