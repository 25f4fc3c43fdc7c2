//! `fig replay`: a corpus of requests sent to two sides, and their answers compared the way the
//! router's parallel run compares shadow copies.
//!
//! A corpus is JSON Lines, one request a line, the format the router's recorder writes
//! ([`router::record::Line`]):
//!
//! ```text
//! {"method":"GET","target":"/catalog/albums/3","headers":{"x-user-id":"42"},"body":null}
//! ```
//!
//! `headers` is optional; `body` is a JSON value (sent as `application/json` unless the line
//! names another `content-type`) or `null`/absent for none. Every request goes to the primary
//! (twice) and to the candidate; a write (any method but `GET`, `HEAD` and `OPTIONS`) always
//! carries `X-Fig-Dry-Run: 1`, so that neither side keeps it. Before any write is sent, each side
//! must show that it checks that header (see [`probe_dry_run`]): a side that ignores it would
//! commit the corpus's writes.
//!
//! Each pair of answers is judged as the router judges a shadow: [`compare::compare`] under the
//! route's rules from the route table; the paths that differ between the primary's own two answers
//! are that route's noise from then on and never count; when the answers differ and one side's
//! `x-fig-db-position` is behind the other's, that side is asked again until it has caught up,
//! and again while the data moves on (at most [`RECHECK`] in all); a match then is `transient`,
//! not `real`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::header::{HeaderName, HeaderValue};
use router::RouteTable;
use router::compare::{self, Answer};
use router::record::Line;
use router::shadow::{self, Side};
use serde::Serialize;
use serde_json::Value;

/// The request header that asks a side to roll its write back.
pub const DRY_RUN: &str = "x-fig-dry-run";
/// How long a side that is behind the other is waited for, as the router waits.
pub const RECHECK: Duration = Duration::from_secs(2);
/// Real differences kept per route for a person to look at.
const SAMPLES_KEPT: usize = 3;
/// Differences shown per sample.
const SAMPLE_DIFFERENCES: usize = 5;
/// Failures kept per route.
const FAILURES_KEPT: usize = 3;
/// Request fields the HTTP client sets itself; a corpus's values for them are not sent.
const CLIENT_FIELDS: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The corpus: JSON Lines, one request a line (`-` reads standard input).
    file: PathBuf,
    /// Base URL of the side whose answers are right (the monolith): http://host:port.
    #[arg(long)]
    primary: String,
    /// Base URL of the side under test (the extracted service).
    #[arg(long)]
    candidate: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// A route table (TOML, as the router reads it) for route names and comparison rules;
    /// default: MusicCorp's.
    #[arg(long)]
    routes: Option<PathBuf>,
    /// Send only the reads (GET, HEAD, OPTIONS); the writes are counted as skipped.
    #[arg(long)]
    reads_only: bool,
    /// How long each side gets to answer one request, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// Runs `fig replay`: `Ok(true)` when nothing real differed and every request was compared.
pub fn run(args: ReplayArgs) -> anyhow::Result<bool> {
    let name = args.file.display().to_string();
    let text = if args.file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the corpus from standard input")?;
        text
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {name}"))?
    };
    let corpus = parse_corpus(&text).with_context(|| format!("{name} is not a corpus"))?;
    let table = match &args.routes {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            RouteTable::parse(&text).with_context(|| format!("{}", path.display()))?
        }
        None => RouteTable::musiccorp(),
    };
    let sides = Sides {
        primary: base_url("--primary", &args.primary)?,
        candidate: base_url("--candidate", &args.candidate)?,
    };
    let options = Options {
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        recheck: RECHECK,
        reads_only: args.reads_only,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut report = runtime.block_on(replay(&corpus, &table, &sides, &options))?;
    report.corpus = name;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(report.passed())
}

/// `url` without a trailing slash, if it is an `http://` base URL.
fn base_url(flag: &str, url: &str) -> anyhow::Result<String> {
    let base = url.trim_end_matches('/');
    let rest = base.strip_prefix("http://").unwrap_or("");
    if rest.is_empty() || rest.contains(['/', '?', '#']) {
        bail!("{flag} {url:?}: give a base URL such as http://127.0.0.1:7001 (http only, no path)");
    }
    Ok(base.to_string())
}

/// One request of a corpus and the line it came from (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub line: usize,
    pub request: Line,
}

impl Entry {
    pub fn is_write(&self) -> bool {
        is_write(&self.request.method)
    }

    /// The target's path, without its query.
    pub fn path(&self) -> &str {
        let target = &self.request.target;
        target.split(['?', '#']).next().unwrap_or(target)
    }
}

/// Whether a method writes: all but `GET`, `HEAD` and `OPTIONS` (case-sensitive, as the router
/// and the services decide).
pub fn is_write(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// A corpus's requests, blank lines skipped; the first bad line is an error naming it.
pub fn parse_corpus(text: &str) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let request: Line =
            serde_json::from_str(raw).with_context(|| format!("line {line}: not a request"))?;
        check(&request).with_context(|| format!("line {line}"))?;
        entries.push(Entry { line, request });
    }
    if entries.is_empty() {
        bail!("it holds no requests");
    }
    Ok(entries)
}

/// What the HTTP client could not send as it is written.
fn check(request: &Line) -> anyhow::Result<()> {
    if reqwest::Method::from_bytes(request.method.as_bytes()).is_err() {
        bail!("method {:?} is not an HTTP method", request.method);
    }
    let target = &request.target;
    if !target.starts_with('/') || target.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("target {target:?} must start with / and hold no spaces or control characters");
    }
    for (name, value) in &request.headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            bail!("header name {name:?} is not a header name");
        }
        if HeaderValue::from_str(value).is_err() {
            bail!("header {name}: {value:?} is not a header value");
        }
    }
    Ok(())
}

/// The two base URLs.
#[derive(Debug, Clone)]
pub struct Sides {
    pub primary: String,
    pub candidate: String,
}

impl Sides {
    fn url(&self, side: Side) -> &str {
        match side {
            Side::Primary => &self.primary,
            Side::Candidate => &self.candidate,
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Primary => "primary",
        Side::Candidate => "candidate",
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Each ask of either side gets this long.
    pub timeout: Duration,
    /// How long a side that is behind is waited for.
    pub recheck: Duration,
    /// Skip the writes.
    pub reads_only: bool,
}

/// What a replay came to, as `--json` prints it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The corpus, as named on the command line.
    pub corpus: String,
    pub primary: String,
    pub candidate: String,
    /// Requests in the corpus.
    pub requests: usize,
    /// Writes sent (as dry runs).
    pub writes: usize,
    /// Writes not sent (`--reads-only`).
    pub skipped_writes: usize,
    pub totals: Totals,
    /// Per route, as the router names it: `METHOD prefix` (`METHOD (no route)` when none).
    pub routes: BTreeMap<String, RouteReport>,
}

impl Report {
    /// Nothing real differed and every request sent was compared.
    pub fn passed(&self) -> bool {
        self.totals.real == 0 && self.totals.failed == 0
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub compared: u64,
    pub matched: u64,
    pub real: u64,
    pub transient: u64,
    pub failed: u64,
}

/// One route's outcome; the names are those of the router's `GET /admin/diffs`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteReport {
    /// Pairs of answers compared: `matched` + `real` + `transient`.
    pub compared: u64,
    pub matched: u64,
    /// Differences that stayed once both sides had seen the same data.
    pub real: u64,
    /// Differences that went away once the side that was behind caught up.
    pub transient: u64,
    /// Requests a side did not answer (in time); not compared.
    pub failed: u64,
    /// How many of the compared requests the primary answered with each status: what the
    /// corpus exercised.
    pub statuses: BTreeMap<u16, u64>,
    /// Paths that differed between two answers of the primary to the same request.
    pub noise: BTreeSet<String>,
    /// How often each noise path differed between the sides (never counted as a difference).
    pub noise_hits: BTreeMap<String, u64>,
    /// Generalised paths of real differences, with the number of requests they differed in.
    pub paths: BTreeMap<String, u64>,
    /// The first few real differences.
    pub samples: Vec<Sample>,
    /// The first few requests a side did not answer.
    pub failures: Vec<Failure>,
}

impl RouteReport {
    /// `paths`, most frequent first (then by path), at most `n`.
    pub fn top_paths(&self, n: usize) -> Vec<(&str, u64)> {
        let mut top: Vec<(&str, u64)> = self.paths.iter().map(|(p, c)| (p.as_str(), *c)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        top.truncate(n);
        top
    }
}

/// One request whose answers differed for real.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// The corpus line.
    pub line: usize,
    /// Method and target, values of secret-looking query parameters redacted.
    pub request: String,
    pub primary_status: u16,
    pub candidate_status: u16,
    pub differences: Vec<SampleDifference>,
    /// Differences found beyond those listed.
    pub more: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleDifference {
    pub path: String,
    pub kind: &'static str,
    pub primary: Option<String>,
    pub candidate: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub line: usize,
    pub request: String,
    /// `primary` or `candidate`.
    pub side: &'static str,
    pub error: String,
}

/// Why one ask of a side gave no answer.
#[derive(Debug)]
enum AskError {
    /// Nothing listens there: the replay cannot go on.
    Unreachable(String),
    /// This request got no answer (timeout, broken connection, unreadable body).
    Failed(String),
}

/// Replays `corpus` against both sides. An error means a side could not be reached at all, or
/// does not honour dry runs while the corpus has writes to send.
pub async fn replay(
    corpus: &[Entry],
    table: &RouteTable,
    sides: &Sides,
    options: &Options,
) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .timeout(options.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")?;
    let mut report = Report {
        primary: sides.primary.clone(),
        candidate: sides.candidate.clone(),
        requests: corpus.len(),
        ..Report::default()
    };
    let writes: Vec<&Entry> = corpus.iter().filter(|e| e.is_write()).collect();
    if options.reads_only {
        report.skipped_writes = writes.len();
    } else if !writes.is_empty() {
        let probes: BTreeSet<String> = writes
            .iter()
            .map(|e| probe_path(table, &e.request.method, e.path()))
            .collect();
        for side in [Side::Primary, Side::Candidate] {
            for path in &probes {
                probe_dry_run(&client, side, sides.url(side), path, writes.len()).await?;
            }
        }
    }
    for entry in corpus {
        if options.reads_only && entry.is_write() {
            continue;
        }
        report.writes += usize::from(entry.is_write());
        one(&client, table, sides, options, entry, &mut report).await?;
    }
    report.totals = report
        .routes
        .values()
        .fold(Totals::default(), |t, r| Totals {
            compared: t.compared + r.compared,
            matched: t.matched + r.matched,
            real: t.real + r.real,
            transient: t.transient + r.transient,
            failed: t.failed + r.failed,
        });
    Ok(report)
}

/// The route's name as the router reports it.
pub fn route_name(table: &RouteTable, method: &str, path: &str) -> String {
    match table.route(method, path) {
        Some(route) => format!("{method} {}", route.prefix),
        None => format!("{method} (no route)"),
    }
}

/// Where a side is asked whether it honours dry runs for writes on this route: under the route's
/// prefix, at a path no API serves (`/catalog/.fig-dry-run-probe`), so that a side which ignores
/// the header answers `404`, `405` or `503` and changes nothing.
pub fn probe_path(table: &RouteTable, method: &str, path: &str) -> String {
    let prefix = table.route(method, path).map_or("", |r| r.prefix.as_str());
    format!("{}/.fig-dry-run-probe", prefix.trim_end_matches('/'))
}

/// Sends a `POST` with a malformed `X-Fig-Dry-Run` to `path`: a side that honours the header
/// refuses it (`400`, `field: "X-Fig-Dry-Run"`) before anything else runs; any other answer
/// means the header is not checked there, and the replay stops before it sends a write.
async fn probe_dry_run(
    client: &reqwest::Client,
    side: Side,
    base: &str,
    path: &str,
    writes: usize,
) -> anyhow::Result<()> {
    let name = side_name(side);
    let res = client
        .post(format!("{base}{path}"))
        .header(DRY_RUN, "fig-replay-probe")
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the {name} at {base}: {}", error_text(&e)))?;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let field = body["error"]["field"].as_str().unwrap_or("");
    if status == 400 && field.eq_ignore_ascii_case(DRY_RUN) {
        return Ok(());
    }
    bail!(
        "the {name} at {base} does not check X-Fig-Dry-Run (POST {path} with a malformed value \
         answered {status}, not 400 naming the header): it may commit the corpus's {writes} \
         writes. Replay the reads only with --reads-only, or use a side that honours dry runs"
    )
}

/// Asks one side; the answer as the comparison reads it.
async fn ask(client: &reqwest::Client, base: &str, entry: &Entry) -> Result<Answer, AskError> {
    let request = &entry.request;
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|e| AskError::Failed(e.to_string()))?;
    let mut builder = client.request(method, format!("{base}{}", request.target));
    let dry_run = entry.is_write();
    let mut typed = false;
    for (name, value) in &request.headers {
        let lower = name.to_ascii_lowercase();
        if CLIENT_FIELDS.contains(&lower.as_str()) || (dry_run && lower == DRY_RUN) {
            continue;
        }
        typed |= lower == "content-type";
        builder = builder.header(name.as_str(), value.as_str());
    }
    if dry_run {
        builder = builder.header(DRY_RUN, "1");
    }
    if let Some(body) = &request.body {
        if !typed {
            builder = builder.header("content-type", "application/json");
        }
        let bytes = serde_json::to_vec(body).map_err(|e| AskError::Failed(e.to_string()))?;
        builder = builder.body(bytes);
    }
    let res = builder.send().await.map_err(|e| {
        if e.is_connect() {
            AskError::Unreachable(error_text(&e))
        } else {
            AskError::Failed(error_text(&e))
        }
    })?;
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = res
        .bytes()
        .await
        .map_err(|e| AskError::Failed(error_text(&e)))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// An error with its causes, on one line.
fn error_text(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "no answer in time".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Replays one request and adds its outcome to its route's report.
async fn one(
    client: &reqwest::Client,
    table: &RouteTable,
    sides: &Sides,
    options: &Options,
    entry: &Entry,
    report: &mut Report,
) -> anyhow::Result<()> {
    let request = &entry.request;
    let route = route_name(table, &request.method, entry.path());
    // A write is a dry run on both sides: what each draws as it writes is left out too.
    let rules = table
        .rules_for(&request.method, entry.path())
        .for_method(&request.method)
        .into_owned();
    let shown = shadow::redact(&request.method, &request.target);
    let asked = |side: Side| ask(client, sides.url(side), entry);
    let fail = |report: &mut Report, side: Side, error: String| {
        let r = report.routes.entry(route.clone()).or_default();
        r.failed += 1;
        if r.failures.len() < FAILURES_KEPT {
            r.failures.push(Failure {
                line: entry.line,
                request: shown.clone(),
                side: side_name(side),
                error,
            });
        }
    };
    let mut answers = Vec::with_capacity(3);
    // The primary twice (its noise), then the candidate.
    for side in [Side::Primary, Side::Primary, Side::Candidate] {
        match asked(side).await {
            Ok(answer) => answers.push(answer),
            Err(AskError::Unreachable(e)) => {
                bail!(
                    "cannot reach the {} at {} (line {}): {e}",
                    side_name(side),
                    sides.url(side),
                    entry.line
                )
            }
            Err(AskError::Failed(e)) => {
                fail(report, side, e);
                return Ok(());
            }
        }
    }
    let [primary, again, candidate]: [Answer; 3] = answers
        .try_into()
        .map_err(|_| anyhow::anyhow!("line {}: an answer went missing", entry.line))?;
    let noise = {
        let r = report.routes.entry(route.clone()).or_default();
        r.noise.extend(compare::noise(&primary, &again));
        r.noise.clone()
    };
    let (mut real, mut noisy) = shadow::split_noise(
        compare::compare(&primary, &candidate, &rules).differences,
        &noise,
    );
    // While they differ and one side had not seen what the other had, that side is asked again
    // until it has. The router does this once; here it goes on while the data moves (the side
    // asked again may then be ahead), within the same bound.
    let mut transient = false;
    let mut pair = (primary, candidate);
    let until = Instant::now() + options.recheck;
    'recheck: while !real.is_empty() {
        let Some((side, goal)) =
            shadow::lagging(shadow::position(&pair.0), shadow::position(&pair.1))
        else {
            break;
        };
        let fresh = loop {
            if Instant::now() >= until {
                break 'recheck;
            }
            let Ok(fresh) = asked(side).await else {
                break 'recheck;
            };
            if shadow::position(&fresh).is_some_and(|p| p >= goal) {
                break fresh;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        match side {
            Side::Primary => pair.0 = fresh,
            Side::Candidate => pair.1 = fresh,
        }
        (real, noisy) = shadow::split_noise(
            compare::compare(&pair.0, &pair.1, &rules).differences,
            &noise,
        );
        transient = real.is_empty();
    }
    let r = report.routes.entry(route).or_default();
    r.compared += 1;
    *r.statuses.entry(pair.0.status).or_default() += 1;
    for d in &noisy {
        *r.noise_hits
            .entry(compare::generalise(&d.path))
            .or_default() += 1;
    }
    if real.is_empty() {
        if transient {
            r.transient += 1;
        } else {
            r.matched += 1;
        }
        return Ok(());
    }
    r.real += 1;
    let paths: BTreeSet<String> = real.iter().map(|d| compare::generalise(&d.path)).collect();
    for path in paths {
        *r.paths.entry(path).or_default() += 1;
    }
    if r.samples.len() < SAMPLES_KEPT {
        r.samples.push(Sample {
            line: entry.line,
            request: shown,
            primary_status: pair.0.status,
            candidate_status: pair.1.status,
            more: real.len().saturating_sub(SAMPLE_DIFFERENCES),
            differences: real
                .iter()
                .take(SAMPLE_DIFFERENCES)
                .map(|d| SampleDifference {
                    path: d.path.clone(),
                    kind: d.kind.as_str(),
                    primary: d.primary.clone(),
                    candidate: d.candidate.clone(),
                })
                .collect(),
        });
    }
    Ok(())
}

/// Rows under a header, each column as wide as its widest cell; numbers right-aligned.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric = |i: usize| {
        rows.iter()
            .all(|row| row.get(i).is_none_or(|c| c.parse::<u64>().is_ok()))
            && i > 0
    };
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            if numeric(i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if i < last {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The report for a person.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let reads = report.requests - report.writes - report.skipped_writes;
    let skipped = if report.skipped_writes > 0 {
        format!(", {} writes skipped (--reads-only)", report.skipped_writes)
    } else {
        String::new()
    };
    out.push_str(&format!(
        "fig replay {}: {} requests ({reads} reads, {} writes as dry runs{skipped})\n",
        report.corpus, report.requests, report.writes
    ));
    out.push_str(&format!("  primary    {}\n", report.primary));
    out.push_str(&format!("  candidate  {}\n\n", report.candidate));
    let row = |name: &str, t: Totals| {
        vec![
            name.to_string(),
            t.compared.to_string(),
            t.matched.to_string(),
            t.real.to_string(),
            t.transient.to_string(),
            t.failed.to_string(),
        ]
    };
    let mut rows: Vec<Vec<String>> = report
        .routes
        .iter()
        .map(|(name, r)| {
            row(
                name,
                Totals {
                    compared: r.compared,
                    matched: r.matched,
                    real: r.real,
                    transient: r.transient,
                    failed: r.failed,
                },
            )
        })
        .collect();
    rows.push(row("total", report.totals));
    out.push_str(&table(
        &[
            "ROUTE",
            "COMPARED",
            "MATCHED",
            "REAL",
            "TRANSIENT",
            "FAILED",
        ],
        &rows,
    ));
    for (name, r) in &report.routes {
        out.push_str(&format!("\n{name}\n"));
        let statuses: Vec<String> = r
            .statuses
            .iter()
            .map(|(status, n)| format!("{status} ({n})"))
            .collect();
        out.push_str(&format!("  statuses: {}\n", statuses.join(", ")));
        // Headers are compared only when a rule names them: their noise says nothing here.
        let noise: Vec<String> = r
            .noise
            .iter()
            .filter(|p| !p.starts_with("header:"))
            .map(|p| match r.noise_hits.get(p) {
                Some(n) => format!("{p} ({n})"),
                None => p.clone(),
            })
            .collect();
        if !noise.is_empty() {
            out.push_str(&format!(
                "  noise, not counted (differs between two answers of the primary): {}\n",
                noise.join(", ")
            ));
        }
        if r.real > 0 {
            out.push_str(&format!("  {} real, at:\n", r.real));
            for (path, n) in r.top_paths(10) {
                out.push_str(&format!("    {n:>6}  {path}\n"));
            }
            for s in &r.samples {
                out.push_str(&format!(
                    "  line {}: {}  ({} vs {})\n",
                    s.line, s.request, s.primary_status, s.candidate_status
                ));
                for d in &s.differences {
                    let value = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
                    out.push_str(&format!(
                        "    {}  {}  primary {}  candidate {}\n",
                        d.path,
                        d.kind,
                        value(&d.primary),
                        value(&d.candidate)
                    ));
                }
                if s.more > 0 {
                    out.push_str(&format!("    … and {} more\n", s.more));
                }
            }
        }
        for f in &r.failures {
            out.push_str(&format!(
                "  line {}: {}  no answer from the {}: {}\n",
                f.line, f.request, f.side, f.error
            ));
        }
    }
    let t = report.totals;
    out.push('\n');
    if report.passed() {
        out.push_str(&format!(
            "PASS: {} compared, no real difference ({} transient)\n",
            t.compared, t.transient
        ));
    } else {
        out.push_str(&format!(
            "FAIL: {} real differences and {} failed requests in {} compared\n",
            t.real, t.failed, t.compared
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_file(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/parallel_run")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn corpus_lines_parse_and_bad_ones_are_named() {
        let good = concat!(
            r#"{"method":"GET","target":"/catalog/albums/3","headers":{"x-user-id":"42"},"body":null}"#,
            "\n\n",
            r#"{"method":"PATCH","target":"/catalog/albums/3","body":{"stock":1}}"#,
            "\n"
        );
        let entries = parse_corpus(good).unwrap();
        assert_eq!(entries.len(), 2, "the blank line is skipped");
        assert_eq!(entries[0].line, 1);
        assert_eq!(entries[0].request.headers["x-user-id"], "42");
        assert_eq!(entries[0].request.body, None);
        assert!(!entries[0].is_write());
        assert_eq!(entries[1].line, 3);
        assert!(entries[1].is_write());
        assert_eq!(
            entries[1].request.body,
            Some(serde_json::json!({"stock": 1}))
        );

        let cases = [
            ("not JSON", "{", "line 1"),
            ("no target", r#"{"method":"GET"}"#, "line 1"),
            (
                "a relative target",
                r#"{"method":"GET","target":"catalog"}"#,
                "must start with /",
            ),
            (
                "a space in the target",
                r#"{"method":"GET","target":"/a b"}"#,
                "must start with /",
            ),
            (
                "a method that is no token",
                r#"{"method":"G T","target":"/"}"#,
                "not an HTTP method",
            ),
            (
                "a bad header name",
                r#"{"method":"GET","target":"/","headers":{"a b":"1"}}"#,
                "not a header name",
            ),
            ("nothing at all", "\n \n", "no requests"),
        ];
        for (what, text, expected) in cases {
            let error = format!("{:#}", parse_corpus(text).unwrap_err());
            assert!(error.contains(expected), "{what}: {error}");
        }
        let later = format!("{good}{{\"method\":\"GET\"}}\n");
        let error = format!("{:#}", parse_corpus(&later).unwrap_err());
        assert!(error.contains("line 4"), "{error}");
    }

    #[test]
    fn writes_are_every_method_but_the_three_reads() {
        for (method, write) in [
            ("GET", false),
            ("HEAD", false),
            ("OPTIONS", false),
            ("POST", true),
            ("PUT", true),
            ("PATCH", true),
            ("DELETE", true),
            ("get", true),
        ] {
            assert_eq!(is_write(method), write, "{method}");
        }
    }

    #[test]
    fn routes_are_named_as_the_router_names_them_and_probes_stay_under_them() {
        let table = RouteTable::musiccorp();
        assert_eq!(
            route_name(&table, "GET", "/catalog/albums/3"),
            "GET /catalog/"
        );
        assert_eq!(
            route_name(&table, "PUT", "/wishlists/1/items/2"),
            "PUT /wishlists/"
        );
        assert_eq!(route_name(&table, "GET", "/healthz"), "GET (no route)");
        assert_eq!(
            probe_path(&table, "PATCH", "/catalog/albums/3"),
            "/catalog/.fig-dry-run-probe"
        );
        assert_eq!(probe_path(&table, "POST", "/orders"), "/.fig-dry-run-probe");
    }

    #[test]
    fn base_urls_are_http_without_a_path() {
        assert_eq!(
            base_url("--primary", "http://127.0.0.1:7001/").unwrap(),
            "http://127.0.0.1:7001"
        );
        for bad in [
            "127.0.0.1:7001",
            "https://x",
            "http://",
            "http://x/catalog",
            "http://x?a",
        ] {
            assert!(base_url("--primary", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_align_and_numbers_go_right() {
        let rows = vec![
            vec!["GET /catalog/".into(), "120".into(), "paths".into()],
            vec!["total".into(), "7".into(), "".into()],
        ];
        assert_eq!(
            table(&["ROUTE", "N", "TOP"], &rows),
            "ROUTE            N  TOP\nGET /catalog/  120  paths\ntotal            7\n"
        );
    }

    #[test]
    fn a_report_reads_as_a_table_with_its_differences() {
        let mut route = RouteReport {
            compared: 4,
            matched: 2,
            real: 1,
            transient: 1,
            noise: ["$.updated_at".to_string(), "header:date".to_string()].into(),
            noise_hits: [("$.updated_at".to_string(), 3)].into(),
            paths: [("$.items[*].price".to_string(), 1)].into(),
            statuses: [(200, 3), (404, 1)].into(),
            ..RouteReport::default()
        };
        route.samples.push(Sample {
            line: 7,
            request: "GET /catalog/albums".into(),
            primary_status: 200,
            candidate_status: 200,
            differences: vec![SampleDifference {
                path: "$.items[2].price".into(),
                kind: "value",
                primary: Some("1".into()),
                candidate: None,
            }],
            more: 2,
        });
        let mut report = Report {
            corpus: "c.jsonl".into(),
            primary: "http://p".into(),
            candidate: "http://c".into(),
            requests: 5,
            writes: 1,
            routes: [("GET /catalog/".to_string(), route)].into(),
            ..Report::default()
        };
        report.totals = Totals {
            compared: 4,
            matched: 2,
            real: 1,
            transient: 1,
            failed: 0,
        };
        let text = render(&report);
        for expected in [
            "fig replay c.jsonl: 5 requests (4 reads, 1 writes as dry runs)",
            "ROUTE          COMPARED  MATCHED  REAL  TRANSIENT  FAILED",
            "GET /catalog/         4        2     1          1       0",
            "\nGET /catalog/\n  statuses: 200 (3), 404 (1)\n",
            "noise, not counted (differs between two answers of the primary): $.updated_at (3)\n",
            "  1 real, at:\n         1  $.items[*].price\n",
            "  line 7: GET /catalog/albums  (200 vs 200)\n",
            "    $.items[2].price  value  primary 1  candidate (absent)\n    … and 2 more\n",
            "FAIL: 1 real differences and 0 failed requests in 4 compared\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
        assert!(!text.contains("header:date"), "header noise is not shown");
        assert!(!report.passed());
        report.totals.real = 0;
        assert!(render(&report).contains("PASS: 4 compared, no real difference (1 transient)"));
    }

    /// Every endpoint of the contract's section, by method and path shape.
    fn covered(entries: &[Entry], method: &str, shape: &str) -> usize {
        let segments: Vec<&str> = shape.split('/').collect();
        entries
            .iter()
            .filter(|e| e.request.method == method)
            .filter(|e| {
                let path: Vec<&str> = e.path().split('/').collect();
                path.len() == segments.len()
                    && path.iter().zip(&segments).all(|(p, s)| *s == "*" || p == s)
            })
            .count()
    }

    #[test]
    fn the_corpora_cover_every_endpoint_of_their_contract() {
        let cases: [(&str, &[(&str, &str)]); 2] = [
            (
                "catalog.jsonl",
                &[
                    ("GET", "/catalog/artists"),
                    ("GET", "/catalog/artists/*"),
                    ("POST", "/catalog/artists"),
                    ("GET", "/catalog/albums"),
                    ("GET", "/catalog/albums/batch"),
                    ("GET", "/catalog/albums/*"),
                    ("POST", "/catalog/albums"),
                    ("PATCH", "/catalog/albums/*"),
                ],
            ),
            (
                "wishlist.jsonl",
                &[
                    ("GET", "/wishlists/*"),
                    ("PUT", "/wishlists/*/items/*"),
                    ("DELETE", "/wishlists/*/items/*"),
                ],
            ),
        ];
        let table = RouteTable::musiccorp();
        for (file, endpoints) in cases {
            let entries = parse_corpus(&corpus_file(file)).unwrap();
            assert!(entries.len() >= 200, "{file}: {} requests", entries.len());
            for (method, shape) in endpoints {
                let n = covered(&entries, method, shape);
                assert!(n >= 5, "{file}: {method} {shape} only {n} times");
            }
            let writes = entries.iter().filter(|e| e.is_write()).count();
            assert!(writes >= 40, "{file}: {writes} writes");
            for e in &entries {
                assert!(
                    table.route(&e.request.method, e.path()).is_some(),
                    "{file} line {}: {} is routed to the capability",
                    e.line,
                    e.request.target
                );
            }
        }
    }
}
