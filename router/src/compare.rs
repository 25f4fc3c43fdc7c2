//! The comparison of a parallel run: given the answer of the side that served the client (the
//! primary) and the answer of the side that got a copy (the candidate), what differs, and where.
//!
//! Pure: no I/O, no clock. The router decides what to compare ([`Rules`], per route in the route
//! table); this module only says what differs. JSON bodies are compared structurally, so key
//! order and whitespace never count, and every difference carries a JSONPath-like address:
//! `$`, `$.field`, `$.list[2]`, `$["odd key"]`. A generalised path (`$.list[*].price`) names the
//! same place in every element of an array; rules and noise are written with those.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use serde_json::{Map, Number, Value};

/// At most this many differences are reported per comparison, so that a huge body that differs
/// everywhere costs a bounded report; [`Diff::truncated`] says when more were left out.
pub const MAX_DIFFERENCES: usize = 100;

/// A value shown in a difference is cut to this many characters: the report must stay small
/// even when a whole object differs in type.
const MAX_SHOWN: usize = 200;

/// One side's answer, as much of it as is compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-case, in the order received; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What a route's comparison ignores or relaxes. The default compares the status and the whole
/// body strictly, and no header.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct Rules {
    /// Paths skipped entirely, with everything below them (`$.meta` skips `$.meta.took_ms`).
    pub ignore: Vec<String>,
    /// Arrays (by their generalised path, `$.albums`) whose order does not count.
    pub unordered: Vec<String>,
    /// Numbers within this absolute distance are equal; 0 means exactly equal.
    pub tolerance: f64,
    /// Header names compared (case-insensitive); the others never are, since most headers
    /// (`date`, `server`, `content-length`) differ legitimately between two services.
    pub headers: Vec<String>,
    /// Paths also skipped when the answers are to a write: values each side draws as it writes
    /// (an id from its own sequence, the time of the write), which no two sides share.
    pub write_ignore: Vec<String>,
}

/// Which part of some [`Rules`] is not acceptable, for the route table to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    /// `ignore[1]`, `tolerance`, ...
    pub field: String,
    pub message: String,
}

impl Rules {
    /// The rules for a request made with `method`: a write's also skip `write_ignore`.
    pub fn for_method(&self, method: &str) -> std::borrow::Cow<'_, Rules> {
        if self.write_ignore.is_empty() || matches!(method, "GET" | "HEAD" | "OPTIONS") {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut rules = self.clone();
        rules.ignore.extend(self.write_ignore.iter().cloned());
        std::borrow::Cow::Owned(rules)
    }

    /// Checks what [`compare`] cannot: paths that parse, a usable tolerance, header names that
    /// are tokens. `compare` itself treats an unparsable path as covering nothing.
    pub fn check(&self) -> Result<(), RuleError> {
        let error = |field: String, message: String| RuleError { field, message };
        for (list, paths) in [
            ("ignore", &self.ignore),
            ("unordered", &self.unordered),
            ("write_ignore", &self.write_ignore),
        ] {
            for (i, p) in paths.iter().enumerate() {
                if parse(p).is_none() {
                    return Err(error(
                        format!("{list}[{i}]"),
                        format!(
                            "{p:?} is not a JSON path: it starts with $ and goes on with .field, \
                             [2], [*] or [\"any key\"]"
                        ),
                    ));
                }
            }
        }
        if !self.tolerance.is_finite() || self.tolerance < 0.0 {
            return Err(error(
                "tolerance".into(),
                "must be a finite number, 0 or more".into(),
            ));
        }
        for (i, h) in self.headers.iter().enumerate() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(error(
                    format!("headers[{i}]"),
                    format!("{h:?} is not a header name"),
                ));
            }
        }
        Ok(())
    }
}

/// Everything that differs; empty means the answers match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diff {
    /// In the order found: status, headers, then the body depth-first (object keys sorted).
    pub differences: Vec<Difference>,
    /// More than [`MAX_DIFFERENCES`] were found and the rest were not reported.
    pub truncated: bool,
}

impl Diff {
    pub fn is_match(&self) -> bool {
        self.differences.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// `status`, `header:<name>`, `body` (non-JSON), or a concrete JSON path (`$.albums[3]`).
    pub path: String,
    pub kind: Kind,
    /// The primary's value at `path` (compact JSON, cut to 200 characters); `None` when absent.
    pub primary: Option<String>,
    /// The candidate's value, likewise.
    pub candidate: Option<String>,
}

/// How the two sides differ at a path. "X vs Y" names are primary first, candidate second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The status codes differ.
    Status,
    /// A compared header differs, or is on one side only (that side's value is `None`).
    Header,
    /// The bodies are not both JSON, and their bytes differ.
    Body,
    /// Both JSON values have the same type but differ (numbers beyond the tolerance).
    Value,
    /// The JSON types differ: `1` and `"1"`, `null` and `0`, an object and an array.
    Type,
    /// The field or array element is in the primary only (a `null` field: [`Kind::NullVsMissing`]).
    MissingInCandidate,
    /// The field or array element is in the candidate only (a `null` field: [`Kind::MissingVsNull`]).
    ExtraInCandidate,
    /// The primary has the field, `null`; the candidate has no such field.
    NullVsMissing,
    /// The primary has no such field; the candidate has it, `null`.
    MissingVsNull,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Header => "header",
            Kind::Body => "body",
            Kind::Value => "value",
            Kind::Type => "type",
            Kind::MissingInCandidate => "missing_in_candidate",
            Kind::ExtraInCandidate => "extra_in_candidate",
            Kind::NullVsMissing => "null_vs_missing",
            Kind::MissingVsNull => "missing_vs_null",
        }
    }
}

/// What differs between the primary's and the candidate's answers, under the route's rules.
///
/// A status difference does not stop the comparison: the bodies are compared too (two error
/// bodies can still say the same thing, or not).
pub fn compare(primary: &Answer, candidate: &Answer, rules: &Rules) -> Diff {
    Walk::new(rules, false).run(primary, candidate)
}

/// The generalised paths (sorted, each once) that differ between two answers of the *same* side
/// to the same request: what changes from one call to the next (timestamps, request ids), and so
/// says nothing about the other side. Every header present on either answer is compared, so a
/// noisy header shows as `header:<name>`; a status difference as `status`.
///
/// At most [`MAX_DIFFERENCES`] distinct paths are returned.
pub fn noise(first: &Answer, second: &Answer) -> Vec<String> {
    let mut headers: Vec<String> = first
        .headers
        .iter()
        .chain(&second.headers)
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    headers.sort();
    headers.dedup();
    let rules = Rules {
        headers,
        ..Rules::default()
    };
    let diff = Walk::new(&rules, true).run(first, second);
    let mut paths: Vec<String> = diff.differences.into_iter().map(|d| d.path).collect();
    paths.sort();
    paths
}

/// A concrete path with array indices replaced by `[*]`: `$.albums[3].price` ->
/// `$.albums[*].price`. Keys are written in their shortest form (`$["a"]` -> `$.a`). Anything
/// that is not a JSON path (`status`, `header:date`, `body`) comes back unchanged.
pub fn generalise(path: &str) -> String {
    match parse(path) {
        Some(steps) => render(steps.iter().map(|s| match s {
            Step::Index(_) => Step::Any,
            other => other.clone(),
        })),
        None => path.to_string(),
    }
}

/// Whether `path` (concrete) is covered by `pattern` (a generalised path, or a prefix of one):
/// `$.meta` covers `$.meta.took_ms` but not `$.metadata`; `$.list[*]` covers `$.list[4].x`;
/// `$.list[2]` covers only element 2. Paths that are not JSON paths (`status`, `header:date`,
/// `body`) are covered only by themselves, so noise found by [`noise`] can discount them too.
pub fn covers(pattern: &str, path: &str) -> bool {
    match (parse(pattern), parse(path)) {
        (Some(pattern), Some(path)) => {
            pattern.len() <= path.len()
                && pattern
                    .iter()
                    .zip(&path)
                    .all(|(p, s)| step_matches(p, s.as_ref()))
        }
        (None, None) => pattern == path,
        _ => false,
    }
}

/// One step of a path: how a rule or a report names a place in a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
    /// `[*]`: any element.
    Any,
}

/// A step of the value being walked, borrowing its key from the value (no allocation per node).
#[derive(Debug, Clone, Copy)]
enum At<'v> {
    Key(&'v str),
    Index(usize),
}

impl Step {
    fn as_ref(&self) -> Option<At<'_>> {
        match self {
            Step::Key(k) => Some(At::Key(k)),
            Step::Index(i) => Some(At::Index(*i)),
            Step::Any => None,
        }
    }
}

/// Whether a pattern step matches a path step (`None`: the path's own `[*]`).
fn step_matches(pattern: &Step, at: Option<At>) -> bool {
    match (pattern, at) {
        (Step::Key(k), Some(At::Key(a))) => k == a,
        (Step::Index(i), Some(At::Index(a))) => *i == a,
        (Step::Any, Some(At::Index(_)) | None) => true,
        _ => false,
    }
}

/// `$` then `.ident`, `[2]`, `[*]` or `["any key"]` (a JSON string), or `None`.
fn parse(path: &str) -> Option<Vec<Step>> {
    let mut rest = path.strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let key = &after[..end];
            if !is_identifier(key) {
                return None;
            }
            steps.push(Step::Key(key.to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("[\"") {
            // The closing quote is the first one not escaped by a backslash.
            let mut escaped = false;
            let close = after.char_indices().find_map(|(i, c)| {
                let found = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                found.then_some(i)
            })?;
            let key: String = serde_json::from_str(&rest[1..close + 3]).ok()?;
            steps.push(Step::Key(key));
            rest = after[close + 1..].strip_prefix(']')?;
        } else if let Some(after) = rest.strip_prefix('[') {
            let (inside, tail) = after.split_once(']')?;
            if inside == "*" {
                steps.push(Step::Any);
            } else if !inside.is_empty() && inside.bytes().all(|b| b.is_ascii_digit()) {
                steps.push(Step::Index(inside.parse().ok()?));
            } else {
                return None;
            }
            rest = tail;
        } else {
            return None;
        }
    }
    Some(steps)
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn render(steps: impl IntoIterator<Item = Step>) -> String {
    let mut out = String::from("$");
    for step in steps {
        match step {
            Step::Key(k) => push_key(&mut out, &k),
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Any => out.push_str("[*]"),
        }
    }
    out
}

fn push_key(out: &mut String, key: &str) {
    if is_identifier(key) {
        out.push('.');
        out.push_str(key);
    } else {
        out.push('[');
        // A string always serialises.
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push(']');
    }
}

/// The walk over two answers: where it is, what it found, and when to stop.
struct Walk<'r> {
    ignore: Vec<Vec<Step>>,
    unordered: Vec<Vec<Step>>,
    tolerance: f64,
    headers: &'r [String],
    /// Report generalised paths, each once (for [`noise`]); the cap counts distinct paths.
    generalised: bool,
    seen: BTreeSet<String>,
    diff: Diff,
}

impl<'r> Walk<'r> {
    fn new(rules: &'r Rules, generalised: bool) -> Walk<'r> {
        // Unparsable patterns are dropped: they cover nothing (the route table refuses them).
        let compile = |paths: &[String]| paths.iter().filter_map(|p| parse(p)).collect();
        Walk {
            ignore: compile(&rules.ignore),
            unordered: compile(&rules.unordered),
            tolerance: rules.tolerance,
            headers: &rules.headers,
            generalised,
            seen: BTreeSet::new(),
            diff: Diff::default(),
        }
    }

    fn run(mut self, primary: &Answer, candidate: &Answer) -> Diff {
        if primary.status != candidate.status {
            self.report(
                "status".into(),
                Kind::Status,
                Some(primary.status.to_string()),
                Some(candidate.status.to_string()),
            );
        }
        for name in self.headers {
            let p = header_values(&primary.headers, name);
            let c = header_values(&candidate.headers, name);
            if p != c {
                let joined = |v: Vec<&str>| (!v.is_empty()).then(|| shown(&v.join(", ")));
                let path = format!("header:{}", name.to_ascii_lowercase());
                self.report(path, Kind::Header, joined(p), joined(c));
            }
        }
        let json = |b: &Bytes| serde_json::from_slice::<Value>(b).ok();
        match (json(&primary.body), json(&candidate.body)) {
            (Some(p), Some(c)) => self.value(&mut Vec::new(), &p, &c),
            _ if primary.body != candidate.body => {
                let text = |b: &Bytes| Some(shown(&String::from_utf8_lossy(b)));
                let (p, c) = (text(&primary.body), text(&candidate.body));
                self.report("body".into(), Kind::Body, p, c);
            }
            _ => {}
        }
        self.diff
    }

    fn full(&self) -> bool {
        self.diff.truncated
    }

    fn report(&mut self, path: String, kind: Kind, primary: Option<String>, c: Option<String>) {
        if self.generalised && !self.seen.insert(path.clone()) {
            return;
        }
        if self.diff.differences.len() >= MAX_DIFFERENCES {
            self.diff.truncated = true;
            return;
        }
        self.diff.differences.push(Difference {
            path,
            kind,
            primary,
            candidate: c,
        });
    }

    fn report_at(&mut self, at: &[At], kind: Kind, p: Option<&Value>, c: Option<&Value>) {
        let path = render(at.iter().map(|s| match *s {
            At::Key(k) => Step::Key(k.to_string()),
            At::Index(_) if self.generalised => Step::Any,
            At::Index(i) => Step::Index(i),
        }));
        self.report(path, kind, p.map(show), c.map(show));
    }

    fn ignored(&self, at: &[At]) -> bool {
        self.ignore.iter().any(|pattern| {
            pattern.len() <= at.len()
                && pattern
                    .iter()
                    .zip(at)
                    .all(|(p, s)| step_matches(p, Some(*s)))
        })
    }

    fn is_unordered(&self, at: &[At]) -> bool {
        self.unordered.iter().any(|pattern| {
            pattern.len() == at.len()
                && pattern
                    .iter()
                    .zip(at)
                    .all(|(p, s)| step_matches(p, Some(*s)))
        })
    }

    fn value<'v>(&mut self, at: &mut Vec<At<'v>>, p: &'v Value, c: &'v Value) {
        if self.full() || self.ignored(at) {
            return;
        }
        match (p, c) {
            (Value::Object(p), Value::Object(c)) => self.object(at, p, c),
            (Value::Array(p), Value::Array(c)) if self.is_unordered(at) => self.multiset(at, p, c),
            (Value::Array(p), Value::Array(c)) => self.array(at, p, c),
            (Value::Number(x), Value::Number(y)) => {
                if !same_number(x, y, self.tolerance) {
                    self.report_at(at, Kind::Value, Some(p), Some(c));
                }
            }
            (Value::String(_), Value::String(_))
            | (Value::Bool(_), Value::Bool(_))
            | (Value::Null, Value::Null) => {
                if p != c {
                    self.report_at(at, Kind::Value, Some(p), Some(c));
                }
            }
            _ => self.report_at(at, Kind::Type, Some(p), Some(c)),
        }
    }

    fn object<'v>(
        &mut self,
        at: &mut Vec<At<'v>>,
        p: &'v Map<String, Value>,
        c: &'v Map<String, Value>,
    ) {
        // Sorted keys: the report's order must not depend on either side's key order.
        let mut keys: Vec<&'v String> = p
            .keys()
            .chain(c.keys().filter(|k| !p.contains_key(*k)))
            .collect();
        keys.sort();
        for key in keys {
            if self.full() {
                return;
            }
            at.push(At::Key(key));
            match (p.get(key), c.get(key)) {
                (Some(pv), Some(cv)) => self.value(at, pv, cv),
                (Some(pv), None) if !self.ignored(at) => {
                    let kind = if pv.is_null() {
                        Kind::NullVsMissing
                    } else {
                        Kind::MissingInCandidate
                    };
                    self.report_at(at, kind, Some(pv), None);
                }
                (None, Some(cv)) if !self.ignored(at) => {
                    let kind = if cv.is_null() {
                        Kind::MissingVsNull
                    } else {
                        Kind::ExtraInCandidate
                    };
                    self.report_at(at, kind, None, Some(cv));
                }
                _ => {}
            }
            at.pop();
        }
    }

    fn array<'v>(&mut self, at: &mut Vec<At<'v>>, p: &'v [Value], c: &'v [Value]) {
        for i in 0..p.len().max(c.len()) {
            if self.full() {
                return;
            }
            at.push(At::Index(i));
            match (p.get(i), c.get(i)) {
                (Some(pv), Some(cv)) => self.value(at, pv, cv),
                (Some(pv), None) if !self.ignored(at) => {
                    self.report_at(at, Kind::MissingInCandidate, Some(pv), None)
                }
                (None, Some(cv)) if !self.ignored(at) => {
                    self.report_at(at, Kind::ExtraInCandidate, None, Some(cv))
                }
                _ => {}
            }
            at.pop();
        }
    }

    /// An array whose order does not count: each element is matched with an equal one on the
    /// other side (equal as canonical JSON, ignored paths left out), as many times as it occurs.
    /// Unmatched elements are reported at their own side's index; ignored elements take no part.
    /// The tolerance does not apply here: elements match exactly or not at all.
    fn multiset<'v>(&mut self, at: &mut Vec<At<'v>>, p: &'v [Value], c: &'v [Value]) {
        let canonical_all = |walk: &Self, at: &mut Vec<At<'v>>, values: &'v [Value]| {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    at.push(At::Index(i));
                    let mut out = String::new();
                    let kept = !walk.ignored(at);
                    if kept {
                        walk.canonical(at, v, &mut out);
                    }
                    at.pop();
                    kept.then_some(out)
                })
                .collect::<Vec<Option<String>>>()
        };
        let p_canon = canonical_all(self, at, p);
        let c_canon = canonical_all(self, at, c);
        // Candidate indices per canonical form, last first, so that `pop` matches in order.
        let mut unmatched: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut matched = vec![false; c.len()];
        for (i, canon) in c_canon.iter().enumerate().rev() {
            match canon {
                Some(canon) => unmatched.entry(canon).or_default().push(i),
                None => matched[i] = true,
            }
        }
        for (i, canon) in p_canon.iter().enumerate() {
            let Some(canon) = canon else { continue };
            if self.full() {
                return;
            }
            match unmatched.get_mut(canon.as_str()).and_then(Vec::pop) {
                Some(j) => matched[j] = true,
                None => {
                    at.push(At::Index(i));
                    self.report_at(at, Kind::MissingInCandidate, Some(&p[i]), None);
                    at.pop();
                }
            }
        }
        for (j, was_matched) in matched.into_iter().enumerate() {
            if !was_matched && !self.full() {
                at.push(At::Index(j));
                self.report_at(at, Kind::ExtraInCandidate, None, Some(&c[j]));
                at.pop();
            }
        }
    }

    /// A value's canonical JSON: keys sorted, numbers by value (`1.0` is `1`), ignored paths
    /// left out, so that two values are equal under the rules iff their canonical forms are.
    fn canonical<'v>(&self, at: &mut Vec<At<'v>>, v: &'v Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&'v String> = map.keys().collect();
                keys.sort();
                out.push('{');
                let mut first = true;
                for key in keys {
                    at.push(At::Key(key));
                    if !self.ignored(at) {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        out.push_str(&serde_json::to_string(key).unwrap_or_default());
                        out.push(':');
                        self.canonical(at, &map[key], out);
                    }
                    at.pop();
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    at.push(At::Index(i));
                    if self.ignored(at) {
                        out.push_str("null");
                    } else {
                        self.canonical(at, item, out);
                    }
                    at.pop();
                }
                out.push(']');
            }
            Value::Number(n) => out.push_str(&canonical_number(n)),
            other => out.push_str(&other.to_string()),
        }
    }
}

/// All values of the header `name` (case-insensitive), in order.
fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// An integer as an exact wide integer, whichever of `i64` and `u64` holds it.
fn integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Numbers compare by value: `1` equals `1.0`. Integers compare exactly (an `f64` cannot hold
/// every `i64`), the rest as `f64`; a positive tolerance allows that absolute distance.
fn same_number(x: &Number, y: &Number, tolerance: f64) -> bool {
    if let (Some(a), Some(b)) = (integer(x), integer(y)) {
        return a == b || (tolerance > 0.0 && (a - b).unsigned_abs() as f64 <= tolerance);
    }
    match (x.as_f64(), y.as_f64()) {
        (Some(a), Some(b)) => a == b || (tolerance > 0.0 && (a - b).abs() <= tolerance),
        _ => false,
    }
}

/// The one spelling of a number's value: integral values as integers, the rest as `f64`.
fn canonical_number(n: &Number) -> String {
    if let Some(i) = integer(n) {
        return i.to_string();
    }
    match n.as_f64() {
        // Within ±2^53 an integral f64 is exactly that integer.
        Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => (f as i64).to_string(),
        Some(f) => f.to_string(),
        None => n.to_string(),
    }
}

fn show(v: &Value) -> String {
    shown(&v.to_string())
}

/// At most [`MAX_SHOWN`] characters, with `…` when cut.
fn shown(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        Answer {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn json(body: &str) -> Answer {
        answer(200, &[], body)
    }

    fn rules(ignore: &[&str], unordered: &[&str], tolerance: f64) -> Rules {
        Rules {
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            unordered: unordered.iter().map(|s| s.to_string()).collect(),
            tolerance,
            headers: vec![],
            write_ignore: vec![],
        }
    }

    type Expected<'a> = Vec<(&'a str, Kind, Option<&'a str>, Option<&'a str>)>;

    fn found(diff: &Diff) -> Vec<(&str, Kind, Option<&str>, Option<&str>)> {
        diff.differences
            .iter()
            .map(|d| {
                (
                    d.path.as_str(),
                    d.kind,
                    d.primary.as_deref(),
                    d.candidate.as_deref(),
                )
            })
            .collect()
    }

    #[test]
    fn json_bodies_compare_structurally() {
        use Kind::*;
        let none = Rules::default();
        let cases: Vec<(&str, &str, &str, Rules, Expected)> = vec![
            (
                "equal bodies match",
                r#"{"a":1}"#,
                r#"{"a":1}"#,
                none.clone(),
                vec![],
            ),
            (
                "key order never matters",
                r#"{"a":1,"b":[true]}"#,
                r#"{"b":[true],"a":1}"#,
                none.clone(),
                vec![],
            ),
            (
                "whitespace never matters",
                r#"{"a": [1, 2]}"#,
                "{\"a\":[1,2]}\n",
                none.clone(),
                vec![],
            ),
            (
                "numbers compare by value: 1 is 1.0",
                r#"[1, 100, -0.0]"#,
                r#"[1.0, 1e2, 0]"#,
                none.clone(),
                vec![],
            ),
            (
                "a number is not a string",
                r#"{"a":1}"#,
                r#"{"a":"1"}"#,
                none.clone(),
                vec![("$.a", Type, Some("1"), Some("\"1\""))],
            ),
            (
                "null is a type of its own",
                r#"{"a":null}"#,
                r#"{"a":0}"#,
                none.clone(),
                vec![("$.a", Type, Some("null"), Some("0"))],
            ),
            (
                "an object is not an array",
                r#"{"a":{}}"#,
                r#"{"a":[]}"#,
                none.clone(),
                vec![("$.a", Type, Some("{}"), Some("[]"))],
            ),
            (
                "the root is compared too",
                "[1]",
                r#"{"a":1}"#,
                none.clone(),
                vec![("$", Type, Some("[1]"), Some(r#"{"a":1}"#))],
            ),
            (
                "same type, different value",
                r#"{"a":"x","b":true}"#,
                r#"{"a":"y","b":false}"#,
                none.clone(),
                vec![
                    ("$.a", Value, Some("\"x\""), Some("\"y\"")),
                    ("$.b", Value, Some("true"), Some("false")),
                ],
            ),
            (
                "zero tolerance is exact",
                r#"{"p":0.1}"#,
                r#"{"p":0.1000001}"#,
                none.clone(),
                vec![("$.p", Value, Some("0.1"), Some("0.1000001"))],
            ),
            (
                "integers beyond f64 precision compare exactly",
                "[9007199254740993]",
                "[9007199254740992]",
                none.clone(),
                vec![(
                    "$[0]",
                    Value,
                    Some("9007199254740993"),
                    Some("9007199254740992"),
                )],
            ),
            (
                "a tolerance allows that absolute distance",
                r#"{"p":9.99,"n":10}"#,
                r#"{"p":9.995,"n":11}"#,
                rules(&[], &[], 1.0),
                vec![],
            ),
            (
                "beyond the tolerance numbers differ",
                r#"{"p":1}"#,
                r#"{"p":1.5}"#,
                rules(&[], &[], 0.1),
                vec![("$.p", Value, Some("1"), Some("1.5"))],
            ),
            (
                "a field absent in the candidate is missing",
                r#"{"a":1,"b":{"c":2}}"#,
                r#"{"a":1}"#,
                none.clone(),
                vec![("$.b", MissingInCandidate, Some(r#"{"c":2}"#), None)],
            ),
            (
                "a field only in the candidate is extra",
                r#"{"a":1}"#,
                r#"{"a":1,"b":2}"#,
                none.clone(),
                vec![("$.b", ExtraInCandidate, None, Some("2"))],
            ),
            (
                "null in the primary, absent in the candidate",
                r#"{"a":null}"#,
                "{}",
                none.clone(),
                vec![("$.a", NullVsMissing, Some("null"), None)],
            ),
            (
                "absent in the primary, null in the candidate",
                "{}",
                r#"{"a":null}"#,
                none.clone(),
                vec![("$.a", MissingVsNull, None, Some("null"))],
            ),
            (
                "arrays are ordered unless a rule says otherwise",
                "[1,2]",
                "[2,1]",
                none.clone(),
                vec![
                    ("$[0]", Value, Some("1"), Some("2")),
                    ("$[1]", Value, Some("2"), Some("1")),
                ],
            ),
            (
                "a shorter candidate array misses the primary's last elements",
                "[1,2,3]",
                "[1]",
                none.clone(),
                vec![
                    ("$[1]", MissingInCandidate, Some("2"), None),
                    ("$[2]", MissingInCandidate, Some("3"), None),
                ],
            ),
            (
                "a longer candidate array has extra elements",
                "[1]",
                "[1,null]",
                none.clone(),
                vec![("$[1]", ExtraInCandidate, None, Some("null"))],
            ),
            (
                "paths nest, keys that are not identifiers are quoted",
                r#"{"x":{"a b":[0,{"z":1}]}}"#,
                r#"{"x":{"a b":[0,{"z":2}]}}"#,
                none.clone(),
                vec![(r#"$.x["a b"][1].z"#, Value, Some("1"), Some("2"))],
            ),
            (
                "an unordered array is a multiset",
                r#"{"l":[1,2,2]}"#,
                r#"{"l":[2,1,2]}"#,
                rules(&[], &["$.l"], 0.0),
                vec![],
            ),
            (
                "an unordered array counts each element's occurrences",
                r#"{"l":[1,2,2]}"#,
                r#"{"l":[3,2,1]}"#,
                rules(&[], &["$.l"], 0.0),
                vec![
                    ("$.l[2]", MissingInCandidate, Some("2"), None),
                    ("$.l[0]", ExtraInCandidate, None, Some("3")),
                ],
            ),
            (
                "unordered elements compare canonically: key order and 1.0",
                r#"{"l":[{"a":1,"b":2},{"c":3}]}"#,
                r#"{"l":[{"c":3.0},{"b":2,"a":1}]}"#,
                rules(&[], &["$.l"], 0.0),
                vec![],
            ),
            (
                "an unordered rule by generalised path applies in every element",
                r#"[{"t":[1,2]},{"t":[3,4]}]"#,
                r#"[{"t":[2,1]},{"t":[4,3]}]"#,
                rules(&[], &["$[*].t"], 0.0),
                vec![],
            ),
            (
                "an unordered rule names the array, not what is below it",
                r#"{"l":[[1,2]]}"#,
                r#"{"l":[[2,1]]}"#,
                rules(&[], &["$.l"], 0.0),
                vec![
                    ("$.l[0]", MissingInCandidate, Some("[1,2]"), None),
                    ("$.l[0]", ExtraInCandidate, None, Some("[2,1]")),
                ],
            ),
            (
                "ignored paths inside unordered elements do not count",
                r#"{"l":[{"id":1,"ts":"a"},{"id":2,"ts":"b"}]}"#,
                r#"{"l":[{"id":2,"ts":"c"},{"id":1}]}"#,
                rules(&["$.l[*].ts"], &["$.l"], 0.0),
                vec![],
            ),
            (
                "an ignored path skips its whole subtree",
                r#"{"meta":{"took":1},"a":1}"#,
                r#"{"meta":{"took":2,"x":[]},"a":1}"#,
                rules(&["$.meta"], &[], 0.0),
                vec![],
            ),
            (
                "an ignored field may be missing or extra",
                r#"{"meta":1}"#,
                r#"{"trace":null}"#,
                rules(&["$.meta", "$.trace"], &[], 0.0),
                vec![],
            ),
            (
                "an ignored generalised path is skipped in every element",
                r#"{"l":[{"ts":1,"v":1},{"ts":2,"v":1}]}"#,
                r#"{"l":[{"ts":3,"v":1},{"v":2}]}"#,
                rules(&["$.l[*].ts"], &[], 0.0),
                vec![("$.l[1].v", Value, Some("1"), Some("2"))],
            ),
            (
                "an ignored concrete index covers that element only",
                "[1,2,3]",
                "[9,9,9]",
                rules(&["$[1]"], &[], 0.0),
                vec![
                    ("$[0]", Value, Some("1"), Some("9")),
                    ("$[2]", Value, Some("3"), Some("9")),
                ],
            ),
            (
                "ignoring is by whole steps: $.meta does not cover $.metadata",
                r#"{"metadata":1}"#,
                r#"{"metadata":2}"#,
                rules(&["$.meta"], &[], 0.0),
                vec![("$.metadata", Value, Some("1"), Some("2"))],
            ),
            (
                "ignoring $ skips the whole JSON body",
                r#"{"a":1}"#,
                "[2]",
                rules(&["$"], &[], 0.0),
                vec![],
            ),
        ];
        for (rule, p, c, r, expected) in cases {
            let diff = compare(&json(p), &json(c), &r);
            assert_eq!(found(&diff), expected, "{rule}");
            assert_eq!(diff.is_match(), expected.is_empty(), "{rule}");
            assert!(!diff.truncated, "{rule}");
        }
    }

    #[test]
    fn status_headers_and_raw_bodies() {
        use Kind::*;
        let ct = |names: &[&str]| Rules {
            headers: names.iter().map(|s| s.to_string()).collect(),
            ..Rules::default()
        };
        let cases: Vec<(&str, Answer, Answer, Rules, Expected)> = vec![
            (
                "a status difference is reported, and JSON bodies are still compared",
                answer(200, &[], r#"{"a":1}"#),
                answer(500, &[], r#"{"a":2}"#),
                Rules::default(),
                vec![
                    ("status", Status, Some("200"), Some("500")),
                    ("$.a", Value, Some("1"), Some("2")),
                ],
            ),
            (
                "non-JSON bodies compare by bytes",
                answer(200, &[], "hello"),
                answer(200, &[], "hullo"),
                Rules::default(),
                vec![("body", Body, Some("hello"), Some("hullo"))],
            ),
            (
                "equal non-JSON bodies match",
                answer(404, &[], "<p>no</p>"),
                answer(404, &[], "<p>no</p>"),
                Rules::default(),
                vec![],
            ),
            (
                "empty bodies match",
                answer(204, &[], ""),
                answer(204, &[], ""),
                Rules::default(),
                vec![],
            ),
            (
                "JSON against non-JSON is a body difference",
                answer(200, &[], "{}"),
                answer(200, &[], "{"),
                Rules::default(),
                vec![("body", Body, Some("{}"), Some("{"))],
            ),
            (
                "headers not named in the rules are not compared",
                answer(200, &[("date", "a"), ("server", "x")], "1"),
                answer(200, &[("date", "b")], "1"),
                Rules::default(),
                vec![],
            ),
            (
                "a named header is compared, its name case-insensitively",
                answer(200, &[("content-type", "application/json")], "1"),
                answer(200, &[("Content-Type", "text/plain")], "1"),
                ct(&["Content-Type"]),
                vec![(
                    "header:content-type",
                    Header,
                    Some("application/json"),
                    Some("text/plain"),
                )],
            ),
            (
                "a named header on one side only",
                answer(200, &[("etag", "\"1\"")], "1"),
                answer(200, &[], "1"),
                ct(&["etag"]),
                vec![("header:etag", Header, Some("\"1\""), None)],
            ),
            (
                "a repeated header compares all its values, in order",
                answer(200, &[("vary", "a"), ("vary", "b")], "1"),
                answer(200, &[("vary", "b"), ("vary", "a")], "1"),
                ct(&["vary"]),
                vec![("header:vary", Header, Some("a, b"), Some("b, a"))],
            ),
            (
                "equal named headers match",
                answer(200, &[("etag", "1")], "1"),
                answer(200, &[("ETag", "1")], "1"),
                ct(&["etag"]),
                vec![],
            ),
        ];
        for (rule, p, c, r, expected) in cases {
            assert_eq!(found(&compare(&p, &c, &r)), expected, "{rule}");
        }
    }

    #[test]
    fn a_huge_difference_is_capped_and_says_so() {
        let many = |v: u32| format!("[{}]", vec![v.to_string(); 10_000].join(","));
        let diff = compare(&json(&many(1)), &json(&many(2)), &Rules::default());
        assert_eq!(diff.differences.len(), MAX_DIFFERENCES);
        assert!(diff.truncated);
        assert!(!diff.is_match());
        let long = format!("\"{}\"", "x".repeat(10_000));
        let diff = compare(&json(&long), &json("1"), &Rules::default());
        let shown = diff.differences[0].primary.as_deref().unwrap();
        assert_eq!(
            shown.chars().count(),
            MAX_SHOWN + 1,
            "values are cut, with …"
        );
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn noise_is_the_generalised_paths_that_differ_between_two_calls() {
        let first = answer(
            200,
            &[("date", "Mon"), ("content-type", "application/json")],
            r#"{"at":"10:00","items":[{"id":1,"ts":1},{"id":2,"ts":2}]}"#,
        );
        let second = answer(
            200,
            &[("date", "Tue"), ("content-type", "application/json")],
            r#"{"at":"10:01","items":[{"id":1,"ts":3},{"id":2,"ts":4}]}"#,
        );
        let cases: Vec<(&str, Answer, Answer, Vec<&str>)> = vec![
            (
                "one path per generalised place, sorted, headers included",
                first.clone(),
                second,
                vec!["$.at", "$.items[*].ts", "header:date"],
            ),
            (
                "identical answers have no noise",
                first.clone(),
                first,
                vec![],
            ),
            (
                "a status that changes is noise",
                json("1"),
                answer(503, &[], "1"),
                vec!["status"],
            ),
        ];
        for (rule, a, b, expected) in cases {
            assert_eq!(noise(&a, &b), expected, "{rule}");
        }
        let many = |v: u32| format!("[{}]", vec![v.to_string(); 10_000].join(","));
        assert_eq!(
            noise(&json(&many(1)), &json(&many(2))),
            vec!["$[*]"],
            "the cap counts distinct paths"
        );
    }

    #[test]
    fn generalise_replaces_indices_only() {
        let cases = [
            (
                "array indices become [*]",
                "$.albums[3].price",
                "$.albums[*].price",
            ),
            ("every index", "$[0][12]", "$[*][*]"),
            (
                "brackets inside a quoted key are kept",
                r#"$["a[1]"][2]"#,
                r#"$["a[1]"][*]"#,
            ),
            (
                "keys take their shortest spelling",
                r#"$["meta"]"#,
                "$.meta",
            ),
            ("the root stays the root", "$", "$"),
            ("a status path is unchanged", "status", "status"),
            ("a header path is unchanged", "header:date", "header:date"),
            ("a generalised path is unchanged", "$.l[*]", "$.l[*]"),
        ];
        for (rule, path, expected) in cases {
            assert_eq!(generalise(path), expected, "{rule}");
        }
    }

    #[test]
    fn covers_matches_whole_steps() {
        let cases = [
            (
                "a path covers what is below it",
                "$.meta",
                "$.meta.took_ms",
                true,
            ),
            ("a path covers itself", "$.meta", "$.meta", true),
            (
                "steps are whole: $.meta is not a prefix of $.metadata",
                "$.meta",
                "$.metadata",
                false,
            ),
            ("the root covers every JSON path", "$", "$.a[1]", true),
            ("[*] covers any index", "$.l[*].p", "$.l[4].p", true),
            (
                "a concrete index covers that element",
                "$.l[2]",
                "$.l[2].x",
                true,
            ),
            (
                "a concrete index covers no other",
                "$.l[2]",
                "$.l[4]",
                false,
            ),
            (
                "a concrete index does not cover [*]",
                "$.l[2]",
                "$.l[*]",
                false,
            ),
            (
                "a generalised path is covered like a concrete one",
                "$.l[*]",
                "$.l[*].x",
                true,
            ),
            (
                "a longer pattern covers nothing above it",
                "$.a.b",
                "$.a",
                false,
            ),
            ("a key in either spelling", r#"$["meta"]"#, "$.meta.x", true),
            ("a key is not an index", "$.l[*]", "$.l.x", false),
            ("a non-JSON path covers itself", "status", "status", true),
            (
                "a header covers itself only",
                "header:date",
                "header:server",
                false,
            ),
            ("JSON paths never cover non-JSON paths", "$", "body", false),
            (
                "a pattern that is not a path covers nothing",
                "meta",
                "$.meta",
                false,
            ),
        ];
        for (rule, pattern, path, expected) in cases {
            assert_eq!(covers(pattern, path), expected, "{rule}");
        }
    }

    #[test]
    fn paths_parse_strictly() {
        let cases = [
            ("the root", "$", true),
            ("fields and indices", "$.a_1[0][*].B", true),
            (
                "a quoted key with an escaped quote",
                r#"$["a\"]b"].c"#,
                true,
            ),
            ("must start with $", "a.b", false),
            ("a dot needs a field", "$.", false),
            ("no empty steps", "$..a", false),
            ("fields are identifiers", "$.a-b", false),
            ("fields do not start with a digit", "$.1", false),
            ("an unclosed bracket", "$[0", false),
            ("an unclosed quote", r#"$["a]"#, false),
            ("a quoted key needs its bracket", r#"$["a"x"#, false),
            ("indices are digits", "$[-1]", false),
            ("indices are not empty", "$[]", false),
        ];
        for (rule, path, ok) in cases {
            assert_eq!(parse(path).is_some(), ok, "{rule}: {path}");
        }
        assert_eq!(
            parse(r#"$["a\"]b"].c"#).unwrap(),
            vec![Step::Key("a\"]b".into()), Step::Key("c".into())]
        );
    }

    #[test]
    fn a_write_also_skips_what_each_side_draws_as_it_writes() {
        let rules = Rules {
            ignore: vec!["$.meta".into()],
            write_ignore: vec!["$.id".into()],
            ..Rules::default()
        };
        let cases = [
            ("GET", vec!["$.meta"]),
            ("HEAD", vec!["$.meta"]),
            ("POST", vec!["$.meta", "$.id"]),
            ("PATCH", vec!["$.meta", "$.id"]),
        ];
        for (method, ignored) in cases {
            assert_eq!(rules.for_method(method).ignore, ignored, "{method}");
        }
        let a = answer(201, &[], r#"{"id": 7, "title": "Blue"}"#);
        let b = answer(201, &[], r#"{"id": 8, "title": "Blue"}"#);
        assert!(compare(&a, &b, &rules.for_method("POST")).is_match());
        assert!(!compare(&a, &b, &rules.for_method("GET")).is_match());
    }

    #[test]
    fn rules_are_checked() {
        let good = Rules {
            ignore: vec!["$.meta".into()],
            unordered: vec!["$.albums".into()],
            tolerance: 0.5,
            headers: vec!["Content-Type".into()],
            write_ignore: vec!["$.id".into()],
        };
        let field = |r: Rules| r.check().map_err(|e| e.field);
        let cases = [
            ("good rules pass", good.clone(), Ok(())),
            (
                "ignore paths must parse",
                Rules {
                    ignore: vec!["$.a".into(), "meta".into()],
                    ..good.clone()
                },
                Err("ignore[1]"),
            ),
            (
                "unordered paths must parse",
                Rules {
                    unordered: vec!["albums".into()],
                    ..good.clone()
                },
                Err("unordered[0]"),
            ),
            (
                "tolerance is not negative",
                Rules {
                    tolerance: -0.1,
                    ..good.clone()
                },
                Err("tolerance"),
            ),
            (
                "tolerance is not NaN",
                Rules {
                    tolerance: f64::NAN,
                    ..good.clone()
                },
                Err("tolerance"),
            ),
            (
                "tolerance is finite",
                Rules {
                    tolerance: f64::INFINITY,
                    ..good.clone()
                },
                Err("tolerance"),
            ),
            (
                "headers are header names",
                Rules {
                    headers: vec!["a b".into()],
                    ..good.clone()
                },
                Err("headers[0]"),
            ),
        ];
        for (rule, rules, expected) in cases {
            assert_eq!(field(rules), expected.map_err(String::from), "{rule}");
        }
    }

    #[test]
    fn kinds_have_report_names() {
        use Kind::*;
        let all = [
            Status,
            Header,
            Body,
            Value,
            Type,
            MissingInCandidate,
            ExtraInCandidate,
            NullVsMissing,
            MissingVsNull,
        ];
        let names: BTreeSet<&str> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), all.len(), "each kind has its own name");
    }
}
