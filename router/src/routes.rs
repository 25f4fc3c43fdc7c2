//! The route table: path prefixes to capabilities, capabilities to their two sides, from TOML.
//!
//! [`RouteTable::parse`] refuses unknown fields, non-`http://` upstream URLs, names that resolve
//! to nothing, empty toggle names, a timeout under 1 ms and a prefix routed twice for the same
//! methods, naming the field (`capabilities.catalog.extracted`, `routes[1].prefix`,
//! `routes[0].compare.ignore[1]`). Names then become indices and routes are sorted longest prefix
//! first, so [`RouteTable::route`] is a scan with no allocation. `ROUTER_UPSTREAM_<NAME>` and
//! `fig up` repoint upstreams with [`RouteTable::set_upstream`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::compare::Rules;

/// The table MusicCorp ships with.
pub const MUSICCORP: &str = include_str!("../routes.toml");

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("route table is not valid TOML: {0}")]
    Syntax(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> TableError {
    TableError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOwner {
    /// The monolith (or whatever the capability is moving out of).
    Legacy,
    /// The extracted service.
    Extracted,
}

impl WriteOwner {
    /// The spelling used in the route table, the `write_ownership` table and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOwner::Legacy => "legacy",
            WriteOwner::Extracted => "extracted",
        }
    }

    /// The inverse of [`WriteOwner::as_str`].
    pub fn parse(text: &str) -> Option<WriteOwner> {
        match text {
            "legacy" => Some(WriteOwner::Legacy),
            "extracted" => Some(WriteOwner::Extracted),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default = "default_upstream")]
    default_upstream: String,
    upstreams: BTreeMap<String, String>,
    #[serde(default)]
    capabilities: BTreeMap<String, RawCapability>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

fn default_upstream() -> String {
    "monolith".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapability {
    legacy: String,
    extracted: String,
    read_toggle: String,
    shadow_toggle: String,
    write_owner: WriteOwner,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    capability: String,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    compare: RawCompare,
}

/// How the parallel run compares the two sides' answers on this route; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompare {
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    unordered: Vec<String>,
    #[serde(default)]
    tolerance: f64,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    write_ignore: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    /// `http://host:port`, no trailing slash.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub name: String,
    /// Index into [`RouteTable::upstreams`].
    pub legacy: usize,
    pub extracted: usize,
    pub read_toggle: String,
    pub shadow_toggle: String,
    /// Who owns the capability's writes until the `router` database says otherwise (see
    /// [`crate::ownership`]): the owner at start-up, and for as long as no flip stored one.
    pub write_owner: WriteOwner,
    pub timeout: Duration,
}

// Not `Eq`: the comparison rules hold an `f64` tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub prefix: String,
    pub capability: usize,
    /// Upper-case methods this route is limited to; `None` means all.
    pub methods: Option<Vec<String>>,
    /// Index into [`RouteTable::upstreams`]: every request of this route goes to this side of
    /// its capability, whatever the toggles and the write owner say (an endpoint only one side
    /// has, such as the catalog service's stock reservations). Its writes are still held while
    /// the capability's ownership moves.
    pub pinned: Option<usize>,
    /// How the parallel run compares the two sides' answers to this route's requests (checked;
    /// header names lower-case). The default compares status and body strictly. Shared: each
    /// shadowed request takes a reference, not a copy.
    pub rules: Arc<Rules>,
}

/// A validated table. Indices replace names, so deciding never looks a name up.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTable {
    pub upstreams: Vec<Upstream>,
    pub default_upstream: usize,
    pub capabilities: Vec<Capability>,
    /// Longest prefix first, so the first match is the most specific.
    pub routes: Vec<Route>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl RouteTable {
    pub fn musiccorp() -> RouteTable {
        // The shipped table is tested; a failure here is a build defect, not an input error.
        RouteTable::parse(MUSICCORP).unwrap_or_else(|e| panic!("shipped route table: {e}"))
    }

    pub fn parse(text: &str) -> Result<RouteTable, TableError> {
        let raw: RawTable =
            toml::from_str(text).map_err(|e| TableError::Syntax(e.message().to_string()))?;
        let upstreams: Vec<Upstream> = raw
            .upstreams
            .iter()
            .map(|(name, url)| {
                let ok = url.starts_with("http://") && url.len() > "http://".len();
                if !ok {
                    return Err(invalid(
                        format!("upstreams.{name}"),
                        "must be an http:// URL",
                    ));
                }
                Ok(Upstream {
                    name: name.clone(),
                    url: url.trim_end_matches('/').to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let upstream = |field: String, name: &str| {
            upstreams
                .iter()
                .position(|u| u.name == name)
                .ok_or_else(|| invalid(field, format!("no upstream named {name:?}")))
        };
        let default_upstream = upstream("default_upstream".into(), &raw.default_upstream)?;
        let capabilities: Vec<Capability> = raw
            .capabilities
            .iter()
            .map(|(name, c)| {
                let field = |f: &str| format!("capabilities.{name}.{f}");
                if c.read_toggle.trim().is_empty() {
                    return Err(invalid(field("read_toggle"), "must name a toggle"));
                }
                if c.shadow_toggle.trim().is_empty() {
                    return Err(invalid(field("shadow_toggle"), "must name a toggle"));
                }
                if c.timeout_ms == Some(0) {
                    return Err(invalid(field("timeout_ms"), "must be at least 1"));
                }
                Ok(Capability {
                    name: name.clone(),
                    legacy: upstream(field("legacy"), &c.legacy)?,
                    extracted: upstream(field("extracted"), &c.extracted)?,
                    read_toggle: c.read_toggle.clone(),
                    shadow_toggle: c.shadow_toggle.clone(),
                    write_owner: c.write_owner,
                    timeout: c
                        .timeout_ms
                        .map(Duration::from_millis)
                        .unwrap_or(DEFAULT_TIMEOUT),
                })
            })
            .collect::<Result<_, _>>()?;
        let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.iter().enumerate() {
            let field = |f: &str| format!("routes[{i}].{f}");
            if !r.prefix.starts_with('/') {
                return Err(invalid(field("prefix"), "must start with /"));
            }
            let capability = capabilities
                .iter()
                .position(|c| c.name == r.capability)
                .ok_or_else(|| {
                    invalid(
                        field("capability"),
                        format!("no capability named {:?}", r.capability),
                    )
                })?;
            let methods = r.methods.as_ref().map(|ms| {
                ms.iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect::<Vec<_>>()
            });
            if routes
                .iter()
                .any(|other| other.prefix == r.prefix && other.methods == methods)
            {
                return Err(invalid(
                    field("prefix"),
                    format!("{:?} is routed twice", r.prefix),
                ));
            }
            let pinned = match &r.upstream {
                None => None,
                Some(name) => {
                    let cap = &capabilities[capability];
                    let side = [cap.legacy, cap.extracted]
                        .into_iter()
                        .find(|&u| upstreams[u].name == *name);
                    Some(side.ok_or_else(|| {
                        invalid(
                            field("upstream"),
                            format!("{name:?} is not a side of capability {:?}", cap.name),
                        )
                    })?)
                }
            };
            let c = &r.compare;
            let rules = Rules {
                ignore: c.ignore.clone(),
                unordered: c.unordered.clone(),
                tolerance: c.tolerance,
                headers: c.headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
                write_ignore: c.write_ignore.clone(),
            };
            rules
                .check()
                .map_err(|e| invalid(field(&format!("compare.{}", e.field)), e.message))?;
            routes.push(Route {
                pinned,
                prefix: r.prefix.clone(),
                capability,
                methods,
                rules: Arc::new(rules),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(RouteTable {
            upstreams,
            default_upstream,
            capabilities,
            routes,
        })
    }

    /// The most specific route for this request, if any.
    pub fn route(&self, method: &str, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            path.starts_with(&r.prefix)
                && r.methods
                    .as_ref()
                    .is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)))
        })
    }

    /// The comparison rules for this request: its route's, or the default (strict) rules when
    /// no route matches.
    pub fn rules_for(&self, method: &str, path: &str) -> &Rules {
        // An immutable empty value, so that an unrouted request borrows like a routed one.
        static STRICT: Rules = Rules {
            ignore: Vec::new(),
            unordered: Vec::new(),
            tolerance: 0.0,
            headers: Vec::new(),
            write_ignore: Vec::new(),
        };
        self.route(method, path).map_or(&STRICT, |r| &r.rules)
    }

    pub fn upstream_named(&self, name: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.name == name)
    }

    /// Points the named upstream elsewhere (e.g. the ports `fig up` bound).
    pub fn set_upstream(&mut self, name: &str, url: &str) -> Result<(), TableError> {
        let i = self
            .upstream_named(name)
            .ok_or_else(|| invalid(format!("upstreams.{name}"), "no such upstream"))?;
        self.upstreams[i].url = url.trim_end_matches('/').to_string();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(text: &str) -> String {
        match RouteTable::parse(text).unwrap_err() {
            TableError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    const BASE: &str = r#"
        [upstreams]
        monolith = "http://127.0.0.1:1"
        svc = "http://127.0.0.1:2"
        [capabilities.c]
        legacy = "monolith"
        extracted = "svc"
        read_toggle = "c.reads"
        shadow_toggle = "c.shadow"
        write_owner = "legacy"
    "#;

    #[test]
    fn the_shipped_table_routes_catalog_and_wishlists() {
        let t = RouteTable::musiccorp();
        let cap = |m, p| {
            t.route(m, p)
                .map(|r| t.capabilities[r.capability].name.as_str())
        };
        assert_eq!(cap("GET", "/catalog/albums/1"), Some("catalog"));
        assert_eq!(cap("PUT", "/wishlists/1/items/2"), Some("wishlist"));
        assert_eq!(cap("POST", "/orders"), None);
        assert_eq!(t.upstreams[t.default_upstream].name, "monolith");
    }

    #[test]
    fn the_longest_prefix_and_the_method_decide_the_route() {
        let t = RouteTable::parse(&format!(
            "{BASE}\n[[routes]]\nprefix = \"/a/\"\ncapability = \"c\"\n[[routes]]\nprefix = \"/a/b/\"\ncapability = \"c\"\nmethods = [\"get\"]\n"
        ))
        .unwrap();
        assert_eq!(t.route("GET", "/a/b/x").unwrap().prefix, "/a/b/");
        assert_eq!(t.route("POST", "/a/b/x").unwrap().prefix, "/a/");
        assert!(t.route("GET", "/b").is_none());
    }

    #[test]
    fn bad_tables_name_the_field() {
        assert_eq!(
            field_of(&BASE.replace("http://127.0.0.1:2", "ftp://x")),
            "upstreams.svc"
        );
        assert_eq!(
            field_of(&BASE.replace("extracted = \"svc\"", "extracted = \"nope\"")),
            "capabilities.c.extracted"
        );
        assert_eq!(
            field_of(&format!(
                "{BASE}\n[[routes]]\nprefix = \"a\"\ncapability = \"c\"\n"
            )),
            "routes[0].prefix"
        );
        assert_eq!(
            field_of(&format!(
                "{BASE}\n[[routes]]\nprefix = \"/a\"\ncapability = \"x\"\n"
            )),
            "routes[0].capability"
        );
        assert_eq!(
            field_of(&format!(
                "{BASE}\n[[routes]]\nprefix = \"/a\"\ncapability = \"c\"\n[[routes]]\nprefix = \"/a\"\ncapability = \"c\"\n"
            )),
            "routes[1].prefix"
        );
        assert_eq!(
            field_of(&format!("default_upstream = \"zz\"\n{BASE}")),
            "default_upstream"
        );
        assert!(matches!(
            RouteTable::parse("not toml ["),
            Err(TableError::Syntax(_))
        ));
    }

    fn with_compare(compare: &str) -> String {
        format!("{BASE}\n[[routes]]\nprefix = \"/a\"\ncapability = \"c\"\ncompare = {compare}\n")
    }

    #[test]
    fn a_route_carries_its_comparison_rules() {
        let t = RouteTable::parse(&with_compare(
            r#"{ ignore = ["$.meta", '$["odd key"]'], unordered = ["$.albums"], tolerance = 1, headers = ["Content-Type"] }"#,
        ))
        .unwrap();
        let expected = Rules {
            ignore: vec!["$.meta".into(), r#"$["odd key"]"#.into()],
            unordered: vec!["$.albums".into()],
            tolerance: 1.0,
            headers: vec!["content-type".into()],
            write_ignore: vec![],
        };
        assert_eq!(
            *t.routes[0].rules, expected,
            "every field, header names lower-cased, an integer tolerance"
        );
        assert_eq!(
            t.rules_for("GET", "/a/1"),
            &expected,
            "rules_for finds the route's rules"
        );
        assert_eq!(
            t.rules_for("GET", "/b"),
            &Rules::default(),
            "no route: strict rules"
        );
        let partial = RouteTable::parse(&with_compare(r#"{ tolerance = 0.5 }"#)).unwrap();
        assert_eq!(
            *partial.routes[0].rules,
            Rules {
                tolerance: 0.5,
                ..Rules::default()
            },
            "every field is optional"
        );
        let none = RouteTable::parse(&format!(
            "{BASE}\n[[routes]]\nprefix = \"/a\"\ncapability = \"c\"\n"
        ))
        .unwrap();
        assert_eq!(
            *none.routes[0].rules,
            Rules::default(),
            "no compare table: strict rules"
        );
    }

    #[test]
    fn the_shipped_table_compares_reads_strictly() {
        // Checked against both sides' answers: the catalog service answers with the monolith's
        // code and data, and the wishlist service only adds `degraded`, which is a real
        // difference (its album details are missing) and so is left to be reported. A write's
        // dry run draws its own id and time.
        let t = RouteTable::musiccorp();
        for r in &t.routes {
            let strict = Rules {
                write_ignore: r.rules.write_ignore.clone(),
                ..Rules::default()
            };
            assert_eq!(*r.rules, strict, "{}", r.prefix);
        }
        assert_eq!(
            t.rules_for("POST", "/catalog/albums").write_ignore,
            ["$.id", "$.updated_at"]
        );
        assert_eq!(
            t.rules_for("PUT", "/wishlists/1/items/2").write_ignore,
            ["$.added_at"]
        );
    }

    #[test]
    fn bad_comparison_rules_name_the_route_and_the_field() {
        let cases = [
            (
                "paths start with $",
                r#"{ ignore = ["meta"] }"#,
                "routes[0].compare.ignore[0]",
            ),
            (
                "paths parse",
                r#"{ ignore = ["$.a", "$..b"] }"#,
                "routes[0].compare.ignore[1]",
            ),
            (
                "unordered paths too",
                r#"{ unordered = ["$.x", "albums"] }"#,
                "routes[0].compare.unordered[1]",
            ),
            (
                "tolerance is not negative",
                r#"{ tolerance = -0.5 }"#,
                "routes[0].compare.tolerance",
            ),
            (
                "tolerance is a number",
                r#"{ tolerance = nan }"#,
                "routes[0].compare.tolerance",
            ),
            (
                "tolerance is finite",
                r#"{ tolerance = inf }"#,
                "routes[0].compare.tolerance",
            ),
            (
                "headers are header names",
                r#"{ headers = ["content type"] }"#,
                "routes[0].compare.headers[0]",
            ),
        ];
        for (rule, compare, field) in cases {
            assert_eq!(field_of(&with_compare(compare)), field, "{rule}");
        }
        match RouteTable::parse(&with_compare(r#"{ ignored = ["$.a"] }"#)) {
            Err(TableError::Syntax(message)) => assert!(message.contains("ignored"), "{message}"),
            other => panic!("an unknown field is refused: {other:?}"),
        }
        match RouteTable::parse(&with_compare(r#"{ tolerance = "0.1" }"#)) {
            Err(TableError::Syntax(_)) => {}
            other => panic!("a tolerance that is a string is refused: {other:?}"),
        }
    }

    #[test]
    fn upstreams_can_be_repointed() {
        let mut t = RouteTable::musiccorp();
        t.set_upstream("catalog", "http://127.0.0.1:9/").unwrap();
        assert_eq!(
            t.upstreams[t.upstream_named("catalog").unwrap()].url,
            "http://127.0.0.1:9"
        );
        assert!(t.set_upstream("nope", "http://x").is_err());
    }
}
