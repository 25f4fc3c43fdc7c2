//! The parallel run's shadow traffic: a copy of a request goes to the side that is not answering
//! the client, off the client's critical path, and the two answers are compared.
//!
//! The client is answered by the primary exactly as without shadowing; the data path only keeps
//! a copy of the primary's answer (up to [`ShadowLimits::answer`] bytes) while relaying it. A
//! shadow is admitted before that, within a bound on shadows in flight and on the bytes they
//! hold: when either is reached the shadow is dropped and counted, never queued. The rest happens
//! in a task of its own: the candidate is asked, [`crate::compare`] judges, and the
//! outcome lands in the route's report.
//!
//! Three things keep a difference that is no defect from counting as one:
//! - **Noise**: every [`ShadowLimits::noise_every`]th shadow asks the primary twice; the JSON
//!   paths that differ between two answers of the same side are noise for that route from then
//!   on, reported apart and never counted as mismatches.
//! - **Lag**: each side says where its database is (`x-fig-db-position`, in the writing owner's
//!   WAL terms: the owner's position after answering, a replica's applied position). When the
//!   answers differ and one side had not reached the other's position, that side is asked again
//!   until it has (within [`ShadowLimits::recheck`]): a match then is *transient*, a difference
//!   *real*. This works whichever side answers the client.
//! - **Rules** per route (ignored paths, arrays compared as sets, numeric tolerance), from the
//!   route table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout_at;

use crate::compare::{self, Answer, Difference, Rules};
use crate::h1::{self, Framing, Head};

/// The response header in which a side reports its database position; the router reads it and
/// does not pass it on.
pub const POSITION_HEADER: &str = "x-fig-db-position";
/// Marks a request as a shadow copy (for the upstream's logs; it changes nothing there).
pub const SHADOW_HEADER: &str = "x-fig-shadow";
/// Asks a side to run a write and roll it back, answering as if it had committed: the only way
/// a write is shadowed, so a shadow never changes data on either side.
pub const DRY_RUN_HEADER: &str = "x-fig-dry-run";
/// The largest request body kept (for a shadowed write, or a recorded sample): a larger one is
/// not shadowed (counted `too_large`) or recorded.
pub const REQUEST_BODY: usize = 1024 * 1024;

/// Bounds on shadowing, per router instance.
#[derive(Debug, Clone)]
pub struct ShadowLimits {
    /// Shadows in flight at most.
    pub in_flight: usize,
    /// Bytes the shadows in flight may hold at most (each reserves twice `answer`).
    pub bytes: usize,
    /// The most of one answer kept for comparison; a larger answer is not compared.
    pub answer: usize,
    /// How long a lagging side is waited for before its difference counts as real.
    pub recheck: Duration,
    /// One shadow in this many also asks the primary twice, to learn the route's noise.
    pub noise_every: u64,
}

impl Default for ShadowLimits {
    fn default() -> Self {
        ShadowLimits {
            in_flight: 128,
            bytes: 64 * 1024 * 1024,
            answer: 256 * 1024,
            recheck: Duration::from_secs(2),
            noise_every: 50,
        }
    }
}

/// What one route's shadows came to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteReport {
    /// Pairs of answers compared.
    pub compared: u64,
    pub matched: u64,
    /// Differences that stayed once both sides had seen the same data.
    pub real: u64,
    /// Differences that went away once the lagging side caught up.
    pub transient: u64,
    /// Shadows not sent: too many in flight, or their bytes over budget.
    pub dropped: u64,
    /// Answers too large to keep for comparison.
    pub too_large: u64,
    /// The candidate (or a second ask of the primary) gave no answer.
    pub failed: u64,
    /// Paths learned as noise.
    pub noise: BTreeSet<String>,
    /// How often each noise path differed (never counted as a mismatch).
    pub noise_hits: BTreeMap<String, u64>,
    /// Generalised paths of real differences, with counts.
    pub paths: BTreeMap<String, u64>,
    /// The last few real differences, request and answers abridged.
    pub samples: Vec<Sample>,
}

/// One real difference, for a person to look at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Method and target, values of sensitive query parameters redacted.
    pub request: String,
    pub primary_status: u16,
    pub candidate_status: u16,
    pub differences: Vec<SampleDifference>,
    pub primary_body: String,
    pub candidate_body: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleDifference {
    pub path: String,
    pub kind: String,
    pub primary: Option<String>,
    pub candidate: Option<String>,
}

const SAMPLES_KEPT: usize = 5;

impl RouteReport {
    /// The counters, in one order, for `merge` and `subtract` to walk together.
    fn counts(&mut self) -> [&mut u64; 7] {
        [
            &mut self.compared,
            &mut self.matched,
            &mut self.real,
            &mut self.transient,
            &mut self.dropped,
            &mut self.too_large,
            &mut self.failed,
        ]
    }

    /// The counters' values, in `counts`' order.
    fn values(&self) -> [u64; 7] {
        [
            self.compared,
            self.matched,
            self.real,
            self.transient,
            self.dropped,
            self.too_large,
            self.failed,
        ]
    }

    /// Adds `other` (another instance's report, or this one's since the last flush): counts
    /// add up, noise paths join, the newest samples are kept.
    pub fn merge(&mut self, other: &RouteReport) {
        for (mine, theirs) in self.counts().into_iter().zip(other.values()) {
            *mine += theirs;
        }
        self.noise.extend(other.noise.iter().cloned());
        for (counts, more) in [
            (&mut self.noise_hits, &other.noise_hits),
            (&mut self.paths, &other.paths),
        ] {
            for (path, n) in more {
                *counts.entry(path.clone()).or_default() += n;
            }
        }
        self.samples.extend(other.samples.iter().cloned());
        let excess = self.samples.len().saturating_sub(SAMPLES_KEPT);
        self.samples.drain(..excess);
    }

    /// Takes `other`'s counts back out (what `merge` added; samples and noise stay).
    fn subtract(&mut self, other: &RouteReport) {
        for (mine, theirs) in self.counts().into_iter().zip(other.values()) {
            *mine = mine.saturating_sub(theirs);
        }
        for (counts, less) in [
            (&mut self.noise_hits, &other.noise_hits),
            (&mut self.paths, &other.paths),
        ] {
            for (path, n) in less {
                if let Some(count) = counts.get_mut(path) {
                    *count = count.saturating_sub(*n);
                }
            }
            counts.retain(|_, n| *n > 0);
        }
    }
}
const SAMPLE_BODY: usize = 2 * 1024;
const SAMPLE_DIFFERENCES: usize = 10;

/// Every route's report, with the shadows in flight.
pub struct Shadows {
    limits: ShadowLimits,
    in_flight: AtomicUsize,
    bytes: AtomicUsize,
    started: AtomicU64,
    /// What happened since the reports were last taken (`take`), per route.
    reports: Mutex<BTreeMap<String, RouteReport>>,
    /// What was taken before: with `reports`, this instance's whole story (for its metrics).
    taken: Mutex<BTreeMap<String, RouteReport>>,
    /// Every route's noise paths, learned here or by another instance.
    noise: Mutex<BTreeMap<String, BTreeSet<String>>>,
    links: Links,
    /// Jobs on their way from the data path to the shadows' thread.
    handoff: Arc<Handoff>,
    /// The shadows' own runtime, on a thread of its own (started with the first shadow), so
    /// that their work never delays the data path's tasks on its runtime.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Ends that thread when the shadows go.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Drop for Shadows {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

/// How the data path hands jobs to the shadows' thread without waking it for each one.
///
/// Waking another thread costs the waker a system call and, on a busy machine, a task switch:
/// measured at about 3 us of the data thread's time per shadowed request, a third of what the
/// whole request costs it. So while jobs keep coming the shadows' thread looks for them once per
/// [`TICK`] on its own, and the data path wakes it only after it fell asleep for want of work.
#[derive(Default)]
struct Handoff {
    jobs: Mutex<Vec<Job>>,
    /// The shadows' thread waits on `wake` (set before the last look at `jobs`).
    asleep: AtomicBool,
    wake: tokio::sync::Notify,
}

/// How often the shadows' thread looks for jobs while they keep coming: a shadow starts at most
/// this much later, which no comparison notices.
const TICK: Duration = Duration::from_millis(1);
/// Looks that found nothing before the shadows' thread sleeps until woken.
const IDLE_TICKS: u32 = 5;

impl Handoff {
    fn push(&self, job: Job) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
        // Pairs with the fence in `pick_up`: either it sees this job, or this sees it asleep.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.asleep.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> Vec<Job> {
        std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The shadows' thread's loop: starts each handed-over job as a task of its own.
    async fn pick_up(self: Arc<Self>, shadows: std::sync::Weak<Shadows>) {
        let mut idle = 0;
        loop {
            let jobs = self.take();
            if jobs.is_empty() {
                idle += 1;
            } else {
                idle = 0;
                let Some(shadows) = shadows.upgrade() else {
                    return;
                };
                for job in jobs {
                    let shadows = shadows.clone();
                    tokio::spawn(async move { shadows.run(job).await });
                }
            }
            if idle < IDLE_TICKS {
                tokio::time::sleep(TICK).await;
                continue;
            }
            self.asleep.store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            if !self
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                // A job came in between: no need to sleep (a wake it sent is only spurious).
                self.asleep.store(false, Ordering::SeqCst);
                continue;
            }
            self.wake.notified().await;
            idle = 0;
        }
    }
}

/// A shadow's place within the limits, given back when dropped.
pub struct Ticket {
    shadows: Arc<Shadows>,
    bytes: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.shadows.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.shadows.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A body kept while it streams past, up to a limit.
#[derive(Debug, Default)]
pub struct Tee {
    body: Vec<u8>,
    limit: usize,
    overflow: bool,
}

impl Tee {
    pub fn new(limit: usize) -> Tee {
        Tee {
            body: Vec::new(),
            limit,
            overflow: false,
        }
    }

    /// What was kept: `None` when the body passed the limit.
    pub fn kept(&self) -> Option<&[u8]> {
        (!self.overflow).then_some(self.body.as_slice())
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if self.body.len() + bytes.len() > self.limit {
            self.overflow = true;
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(bytes);
        }
    }
}

/// The primary's answer as the data path relayed it.
pub struct Capture {
    ticket: Ticket,
    pub route: String,
    /// The answer's head, detached from the connection; its fields are made text on the
    /// shadows' thread, not the data path's.
    head: Option<Head>,
    chunked: bool,
    /// The answer's head was seen (from the planned primary, not a fallback).
    answered: bool,
    pub tee: Tee,
}

impl Capture {
    /// Keeps the answer's status and fields (`framing` says how its body comes).
    pub fn head(&mut self, head: &Head, framing: Framing) {
        self.head = Some(head.detached());
        self.chunked = framing == Framing::Chunked;
        self.answered = true;
    }

    pub fn answered(&self) -> bool {
        self.answered
    }
}

/// Where to send one side's copy: the upstream's address and the request's bytes for it.
#[derive(Debug, Clone)]
pub struct Target {
    pub authority: String,
    pub request: Vec<u8>,
}

/// Everything a shadow needs once the client has its answer.
pub struct Job {
    pub capture: Capture,
    pub rules: Arc<Rules>,
    /// Method and target, for the report (redacted there).
    pub method: String,
    pub target: String,
    /// The primary's copy, to ask it again: for a read that learns noise, or whose primary may
    /// lag (it does not own the writes); never for a write, which must not reach it twice.
    pub primary: Option<Target>,
    /// Ask the primary twice, to learn the route's noise (see [`Shadows::learns_noise`]).
    pub learn_noise: bool,
    pub candidate: Target,
    /// Each ask of either side gets this long.
    pub timeout: Duration,
}

/// Which side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Primary,
    Candidate,
}

/// Given the positions two answers report, the side that had not yet seen what the other had,
/// and the position it must reach: `None` when they saw the same, or one cannot tell.
pub fn lagging(primary: Option<u64>, candidate: Option<u64>) -> Option<(Side, u64)> {
    match (primary?, candidate?) {
        (p, c) if c < p => Some((Side::Candidate, p)),
        (p, c) if p < c => Some((Side::Primary, c)),
        _ => None,
    }
}

/// An `X/Y` (hexadecimal) log sequence number.
pub fn parse_position(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// The database position an answer reports ([`POSITION_HEADER`]), if it reports one.
pub fn position(answer: &Answer) -> Option<u64> {
    answer
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(POSITION_HEADER))
        .and_then(|(_, value)| parse_position(value))
}

/// A head's fields, names lower-cased, values as text (lossy).
fn fields(head: &Head) -> Vec<(String, String)> {
    head.fields()
        .map(|(name, value)| {
            (
                String::from_utf8_lossy(name).to_ascii_lowercase(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .collect()
}

/// The request line for a report: query parameters whose names suggest secrets keep their
/// names only.
pub fn redact(method: &str, target: &str) -> String {
    // The same names as the recorded sample's.
    format!("{method} {}", crate::record::sanitise_target(target))
}

/// A request body as the data path kept it, if it is whole: `framing` says how long it should
/// be (an upstream may answer before reading all of it), and a chunked one is joined.
pub fn whole_body(tee: &Tee, framing: Framing) -> Option<Vec<u8>> {
    let kept = tee.kept()?;
    match framing {
        Framing::Length(n) => (kept.len() as u64 == n).then(|| kept.to_vec()),
        Framing::Chunked => dechunk(kept),
        Framing::None => Some(Vec::new()),
        Framing::UntilClose => None,
    }
}

/// The body of a complete chunked message (already checked by the data path's scanner).
fn dechunk(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = raw;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

impl Shadows {
    pub fn new(limits: ShadowLimits) -> Arc<Shadows> {
        let in_flight = limits.in_flight;
        Arc::new(Shadows {
            limits,
            in_flight: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            reports: Mutex::new(BTreeMap::new()),
            taken: Mutex::new(BTreeMap::new()),
            noise: Mutex::new(BTreeMap::new()),
            links: Links {
                idle: Mutex::default(),
                kept_per_upstream: in_flight,
            },
            handoff: Arc::default(),
            runtime: std::sync::OnceLock::new(),
            stop: Mutex::new(None),
        })
    }

    pub fn limits(&self) -> &ShadowLimits {
        &self.limits
    }

    /// A place for one more shadow of `route`, if within the limits; otherwise the drop is
    /// counted.
    pub fn admit(self: &Arc<Self>, route: &str, with_body: bool) -> Option<Capture> {
        let body = if with_body { REQUEST_BODY } else { 0 };
        let bytes = self.limits.answer.saturating_mul(2) + body;
        let counted = self.in_flight.fetch_add(1, Ordering::AcqRel) < self.limits.in_flight;
        let held =
            counted && self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes <= self.limits.bytes;
        // From here the ticket's drop gives back what was taken, admitted or not.
        let ticket = Ticket {
            shadows: self.clone(),
            bytes: if counted { bytes } else { 0 },
        };
        if !held {
            drop(ticket);
            self.with_report(route, |r| r.dropped += 1);
            return None;
        }
        Some(Capture {
            ticket,
            route: route.to_string(),
            head: None,
            chunked: false,
            answered: false,
            tee: Tee::new(self.limits.answer),
        })
    }

    /// Counts a shadow not sent because the request's body was too large to keep.
    pub fn too_large(&self, route: &str) {
        self.with_report(route, |r| r.too_large += 1);
    }

    fn with_report<T>(&self, route: &str, f: impl FnOnce(&mut RouteReport) -> T) -> T {
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        // (The route's name is copied only the first time it is seen.)
        if let Some(report) = reports.get_mut(route) {
            return f(report);
        }
        f(reports.entry(route.to_string()).or_default())
    }

    /// Every route's report, as this instance saw it.
    pub fn reports(&self) -> BTreeMap<String, RouteReport> {
        let mut all = self.taken.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        for (route, report) in reports.iter() {
            all.entry(route.clone()).or_default().merge(report);
        }
        all
    }

    /// Takes what happened since the last take (to add to the stored reports).
    pub fn take(&self) -> BTreeMap<String, RouteReport> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        let deltas = std::mem::take(&mut *reports);
        for (route, report) in &deltas {
            taken.entry(route.clone()).or_default().merge(report);
        }
        deltas
    }

    /// Puts back what `take` took when it could not be stored.
    pub fn give_back(&self, deltas: BTreeMap<String, RouteReport>) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        for (route, delta) in deltas {
            // Counted in `taken` by `take`: moved back, so the whole story stays the same.
            if let Some(t) = taken.get_mut(&route) {
                t.subtract(&delta);
            }
            reports.entry(route).or_default().merge(&delta);
        }
    }

    /// Noise paths another instance learned.
    pub fn learn_noise(&self, route: &str, paths: impl IntoIterator<Item = String>) {
        let mut noise = self.noise.lock().unwrap_or_else(|e| e.into_inner());
        noise.entry(route.to_string()).or_default().extend(paths);
    }

    fn noise_of(&self, route: &str) -> BTreeSet<String> {
        let noise = self.noise.lock().unwrap_or_else(|e| e.into_inner());
        noise.get(route).cloned().unwrap_or_default()
    }

    /// Forgets one route's report (`Some`), or all of them; learned noise goes with it.
    pub fn reset(&self, route: Option<&str>) -> usize {
        {
            let mut noise = self.noise.lock().unwrap_or_else(|e| e.into_inner());
            match route {
                Some(route) => {
                    noise.remove(route);
                }
                None => noise.clear(),
            }
        }
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        match route {
            Some(route) => {
                let known = taken.remove(route).is_some();
                usize::from(reports.remove(route).is_some() || known)
            }
            None => {
                let n = reports
                    .keys()
                    .chain(taken.keys())
                    .collect::<BTreeSet<_>>()
                    .len();
                reports.clear();
                taken.clear();
                n
            }
        }
    }

    /// Whether this shadow also asks the primary a second time, to learn the route's noise
    /// (one in `noise_every`); the data path then makes the primary's copy of the request.
    pub fn learns_noise(&self) -> bool {
        // The `noise_every`th, the `2 × noise_every`th...: `u64::MAX` means never.
        (self.started.fetch_add(1, Ordering::Relaxed) + 1)
            .is_multiple_of(self.limits.noise_every.max(1))
    }

    /// Runs the shadow in a task of its own; the client already has its answer.
    pub fn launch(self: &Arc<Self>, job: Job) {
        if self.runtime().is_some() {
            self.handoff.push(job);
        } else {
            let shadows = self.clone();
            tokio::spawn(async move { shadows.run(job).await });
        }
    }

    /// The shadows' runtime, started on first use; `None` if no thread could be started (the
    /// shadows then share the caller's runtime).
    fn runtime(self: &Arc<Self>) -> Option<&tokio::runtime::Handle> {
        if let Some(handle) = self.runtime.get() {
            return Some(handle);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (handle_to, handle) = std::sync::mpsc::channel();
        // Weak: the thread must not keep the shadows alive, or their drop would never stop it.
        let pick_up = self.handoff.clone().pick_up(Arc::downgrade(self));
        let started = std::thread::Builder::new()
            .name("router-shadows".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let _ = handle_to.send(runtime.handle().clone());
                runtime.block_on(async {
                    tokio::select! {
                        _ = stopped => {}
                        () = pick_up => {}
                    }
                });
            });
        let handle = started.ok().and_then(|_| handle.recv().ok())?;
        let mut slot = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        // If another caller started one first, this thread ends when `stop` drops here.
        if self.runtime.set(handle).is_ok() {
            *slot = Some(stop);
        }
        self.runtime.get()
    }

    async fn run(&self, job: Job) {
        let Job {
            capture,
            rules,
            method,
            target,
            primary: primary_target,
            learn_noise,
            candidate: candidate_target,
            timeout,
        } = job;
        let route = capture.route.clone();
        let _ticket = capture.ticket;
        if capture.tee.overflow {
            self.with_report(&route, |r| r.too_large += 1);
            return;
        }
        let body = if capture.chunked {
            dechunk(&capture.tee.body).unwrap_or_default()
        } else {
            capture.tee.body
        };
        let primary = Answer {
            status: capture.head.as_ref().map_or(0, |h| h.status),
            headers: capture.head.as_ref().map(fields).unwrap_or_default(),
            body: body.into(),
        };
        let limit = self.limits.answer;
        if learn_noise && let Some(primary_target) = &primary_target {
            match self
                .links
                .ask(primary_target, &method, timeout, limit)
                .await
            {
                Ok(again) => {
                    let learned = compare::noise(&primary, &again);
                    if !learned.is_empty() {
                        self.learn_noise(&route, learned.iter().cloned());
                        self.with_report(&route, |r| r.noise.extend(learned));
                    }
                }
                Err(_) => self.with_report(&route, |r| r.failed += 1),
            }
        }
        let candidate = match self
            .links
            .ask(&candidate_target, &method, timeout, limit)
            .await
        {
            Ok(answer) => answer,
            Err(_) => {
                self.with_report(&route, |r| r.failed += 1);
                return;
            }
        };
        let noise = self.noise_of(&route);
        let rules = rules.for_method(&method);
        let (mut real, mut noisy) = split_noise(
            compare::compare(&primary, &candidate, &rules).differences,
            &noise,
        );
        let mut transient = false;
        let mut answers = (primary, candidate);
        if !real.is_empty()
            && let Some((side, goal)) = lagging(position(&answers.0), position(&answers.1))
        {
            let until = Instant::now() + self.limits.recheck;
            let again = match side {
                Side::Primary => primary_target.as_ref(),
                Side::Candidate => Some(&candidate_target),
            };
            while let Some(again) = again
                && Instant::now() < until
            {
                let Ok(fresh) = self.links.ask(again, &method, timeout, limit).await else {
                    break;
                };
                if position(&fresh).is_some_and(|p| p >= goal) {
                    match side {
                        Side::Primary => answers.0 = fresh,
                        Side::Candidate => answers.1 = fresh,
                    }
                    let (r, n) = split_noise(
                        compare::compare(&answers.0, &answers.1, &rules).differences,
                        &noise,
                    );
                    transient = r.is_empty();
                    real = r;
                    noisy = n;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let request = redact(&method, &target);
        self.with_report(&route, |r| {
            r.compared += 1;
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
                return;
            }
            r.real += 1;
            let paths: BTreeSet<String> =
                real.iter().map(|d| compare::generalise(&d.path)).collect();
            for path in paths {
                *r.paths.entry(path).or_default() += 1;
            }
            if r.samples.len() >= SAMPLES_KEPT {
                r.samples.remove(0);
            }
            r.samples
                .push(sample(request, &answers.0, &answers.1, &real));
        });
    }
}

/// Splits differences into those that count and those on the route's noise paths.
pub fn split_noise(
    differences: Vec<Difference>,
    noise: &BTreeSet<String>,
) -> (Vec<Difference>, Vec<Difference>) {
    differences
        .into_iter()
        .partition(|d| !noise.iter().any(|n| compare::covers(n, &d.path)))
}

fn sample(request: String, primary: &Answer, candidate: &Answer, real: &[Difference]) -> Sample {
    let abridged = |body: &[u8]| {
        let text = String::from_utf8_lossy(body);
        text.chars().take(SAMPLE_BODY).collect::<String>()
    };
    Sample {
        request,
        primary_status: primary.status,
        candidate_status: candidate.status,
        differences: real
            .iter()
            .take(SAMPLE_DIFFERENCES)
            .map(|d| SampleDifference {
                path: d.path.clone(),
                kind: d.kind.as_str().to_string(),
                primary: d.primary.clone(),
                candidate: d.candidate.clone(),
            })
            .collect(),
        primary_body: abridged(&primary.body),
        candidate_body: abridged(&candidate.body),
    }
}

/// Why a side gave no answer to compare.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer in time")]
    Timeout,
    #[error("could not connect")]
    Unreachable,
    #[error("the connection broke")]
    Broken,
    #[error("the answer is malformed")]
    Malformed,
    #[error("the answer is larger than the comparison keeps")]
    TooLarge,
}

/// Kept connections to the upstreams, for the shadows' requests: opening one per copy cost the
/// upstreams about four times the CPU of the request itself.
struct Links {
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
    /// Connections kept per upstream at most: as many as shadows may be in flight, since the
    /// hand-off starts them in bursts, and one closed for want of room is one opened again.
    kept_per_upstream: usize,
}

impl Links {
    fn take(&self, authority: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get_mut(authority)?.pop()
    }

    fn keep(&self, authority: &str, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let kept = idle.entry(authority.to_string()).or_default();
        if kept.len() < self.kept_per_upstream {
            kept.push(stream);
        }
    }

    /// `target`'s answer, on a kept connection if there is one (once more on a fresh one if
    /// the kept one turns out closed: a read, or a dry run, may be sent twice).
    async fn ask(
        &self,
        target: &Target,
        method: &str,
        timeout: Duration,
        limit: usize,
    ) -> Result<Answer, FetchError> {
        let deadline = Instant::now() + timeout;
        if let Some(stream) = self.take(&target.authority) {
            match exchange(stream, target, method, deadline, limit).await {
                Ok((answer, reusable)) => {
                    if let Some(stream) = reusable {
                        self.keep(&target.authority, stream);
                    }
                    return Ok(answer);
                }
                Err(Failed::Stale) => {}
                Err(Failed::Other(e)) => return Err(e),
            }
        }
        let stream = connect(&target.authority, deadline).await?;
        match exchange(stream, target, method, deadline, limit).await {
            Ok((answer, reusable)) => {
                if let Some(stream) = reusable {
                    self.keep(&target.authority, stream);
                }
                Ok(answer)
            }
            Err(Failed::Stale) => Err(FetchError::Broken),
            Err(Failed::Other(e)) => Err(e),
        }
    }
}

async fn connect(authority: &str, deadline: Instant) -> Result<TcpStream, FetchError> {
    let stream = timeout_at(deadline.into(), TcpStream::connect(authority))
        .await
        .map_err(|_| FetchError::Timeout)?
        .map_err(|_| FetchError::Unreachable)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

enum Failed {
    /// The connection was closed before any of the answer came: a kept one the upstream let go.
    Stale,
    Other(FetchError),
}

impl From<FetchError> for Failed {
    fn from(e: FetchError) -> Failed {
        Failed::Other(e)
    }
}

/// Sends `target`'s request on `stream` and reads the whole answer (at most `limit` bytes of
/// body) by `deadline`; gives the connection back when another request may follow on it.
async fn exchange(
    mut stream: TcpStream,
    target: &Target,
    method: &str,
    deadline: Instant,
    limit: usize,
) -> Result<(Answer, Option<TcpStream>), Failed> {
    match timeout_at(deadline.into(), stream.write_all(&target.request)).await {
        Err(_) => return Err(FetchError::Timeout.into()),
        Ok(Err(_)) => return Err(Failed::Stale),
        Ok(Ok(())) => {}
    }
    let mut inbound = BytesMut::with_capacity(16 * 1024);
    let head = loop {
        let head = match timeout_at(
            deadline.into(),
            crate::proxy::read_head(&mut stream, &mut inbound),
        )
        .await
        {
            Err(_) => return Err(FetchError::Timeout.into()),
            Ok(Err(crate::proxy::ReadHeadError::Closed { partial: false })) => {
                return Err(Failed::Stale);
            }
            Ok(Err(_)) => return Err(FetchError::Broken.into()),
            Ok(Ok(head)) => head,
        };
        if !(100..200).contains(&head.status) {
            break head;
        }
    };
    let framing = h1::response_framing(&head, method).map_err(|_| FetchError::Malformed)?;
    let mut tee = Tee::new(limit);
    let idle = deadline.saturating_duration_since(Instant::now());
    let unused = AtomicBool::new(false);
    timeout_at(
        deadline.into(),
        crate::proxy::copy_body(
            framing,
            &mut stream,
            &mut inbound,
            &mut tokio::io::sink(),
            &mut Vec::new(),
            idle,
            &unused,
            Some(&mut tee),
        ),
    )
    .await
    .map_err(|_| FetchError::Timeout)?
    .map_err(|_| FetchError::Broken)?;
    if tee.overflow {
        return Err(FetchError::TooLarge.into());
    }
    let reusable = (head.keep_alive()
        && head.minor == 1
        && framing != Framing::UntilClose
        && inbound.is_empty())
    .then_some(stream);
    let body = if framing == Framing::Chunked {
        dechunk(&tee.body).ok_or(FetchError::Malformed)?
    } else {
        tee.body
    };
    let answer = Answer {
        status: head.status,
        headers: fields(&head),
        body: body.into(),
    };
    Ok((answer, reusable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_side_behind_the_other_is_asked_again() {
        let cases = [
            // (primary position, candidate position, expected)
            (Some(10), Some(5), Some((Side::Candidate, 10))),
            (Some(5), Some(10), Some((Side::Primary, 10))),
            (Some(7), Some(7), None),
            (None, Some(7), None),
            (Some(7), None, None),
        ];
        for (p, c, want) in cases {
            assert_eq!(lagging(p, c), want, "{p:?} {c:?}");
        }
    }

    #[test]
    fn positions_read_as_log_sequence_numbers() {
        let cases = [
            ("0/16B3748", Some(0x16B_3748)),
            ("1/0", Some(1 << 32)),
            (" A/FF ", Some((10 << 32) | 0xFF)),
            ("", None),
            ("16B3748", None),
            ("x/1", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_position(text), want, "{text:?}");
        }
    }

    #[test]
    fn sensitive_query_values_are_redacted() {
        let cases = [
            ("/catalog/albums", "GET /catalog/albums"),
            ("/a?page=2", "GET /a?page=2"),
            ("/a?token=abc&page=2", "GET /a?token=REDACTED&page=2"),
            (
                "/a?api_key=1&SessionId=2",
                "GET /a?api_key=REDACTED&SessionId=REDACTED",
            ),
        ];
        for (target, want) in cases {
            assert_eq!(redact("GET", target), want);
        }
    }

    /// Polls `f` until it holds, for at most 10 s.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn a_shadow_handed_over_after_the_thread_fell_asleep_still_runs() {
        let shadows = Shadows::new(ShadowLimits::default());
        // A port nobody listens on: each shadow fails fast, and says so in the report.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = closed.local_addr().unwrap().to_string();
        drop(closed);
        let launch = || {
            let capture = shadows.admit("/r", false).expect("within the limits");
            shadows.launch(Job {
                capture,
                rules: Arc::default(),
                method: "GET".into(),
                target: "/r".into(),
                primary: None,
                learn_noise: false,
                candidate: Target {
                    authority: authority.clone(),
                    request: b"GET /r HTTP/1.1\r\n\r\n".to_vec(),
                },
                timeout: Duration::from_secs(2),
            });
        };
        let failed = || shadows.reports().get("/r").map_or(0, |r| r.failed);
        launch();
        until("the first shadow failed", || failed() == 1).await;
        until("the shadows' thread sleeps", || {
            shadows.handoff.asleep.load(Ordering::SeqCst)
        })
        .await;
        launch();
        launch();
        until("both later shadows failed", || failed() == 3).await;
        assert!(
            shadows.handoff.jobs.lock().unwrap().is_empty(),
            "nothing left behind"
        );
        until("every ticket given back", || {
            shadows.in_flight.load(Ordering::SeqCst) == 0
        })
        .await;
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let cases: [(&[u8], Option<&[u8]>); 4] = [
            (b"0\r\n\r\n", Some(b"")),
            (b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n", Some(b"abcde")),
            (
                b"A\r\n0123456789\r\n0\r\nTrailer: 1\r\n\r\n",
                Some(b"0123456789"),
            ),
            (b"5\r\nab", None),
        ];
        for (raw, want) in cases {
            assert_eq!(dechunk(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn reports_merge_by_adding_counts_and_keeping_the_newest_samples() {
        let sample = |n: u16| Sample {
            request: format!("GET /{n}"),
            primary_status: n,
            candidate_status: n,
            differences: Vec::new(),
            primary_body: String::new(),
            candidate_body: String::new(),
        };
        let mut stored = RouteReport {
            compared: 3,
            matched: 2,
            real: 1,
            noise: ["$.a".to_string()].into(),
            noise_hits: [("$.a".to_string(), 2)].into(),
            paths: [("$.p".to_string(), 1)].into(),
            samples: (1..=4).map(sample).collect(),
            ..RouteReport::default()
        };
        let delta = RouteReport {
            compared: 2,
            transient: 1,
            real: 1,
            dropped: 7,
            noise: ["$.b".to_string()].into(),
            noise_hits: [("$.a".to_string(), 1)].into(),
            paths: [("$.p".to_string(), 1), ("$.q".to_string(), 1)].into(),
            samples: (5..=6).map(sample).collect(),
            ..RouteReport::default()
        };
        stored.merge(&delta);
        assert_eq!(
            (
                stored.compared,
                stored.matched,
                stored.real,
                stored.transient,
                stored.dropped
            ),
            (5, 2, 2, 1, 7)
        );
        assert_eq!(stored.noise, ["$.a".to_string(), "$.b".to_string()].into());
        assert_eq!(stored.noise_hits, [("$.a".to_string(), 3)].into());
        assert_eq!(
            stored.paths,
            [("$.p".to_string(), 2), ("$.q".to_string(), 1)].into()
        );
        let kept: Vec<u16> = stored.samples.iter().map(|s| s.primary_status).collect();
        assert_eq!(kept, [2, 3, 4, 5, 6]);
        let mut empty = RouteReport::default();
        empty.merge(&RouteReport::default());
        assert_eq!(empty, RouteReport::default());
    }

    #[test]
    fn only_a_whole_request_body_is_kept() {
        let tee = |bytes: &[u8], limit: usize| {
            let mut t = Tee::new(limit);
            t.push(bytes);
            t
        };
        let cases: [(Tee, Framing, Option<&[u8]>); 6] = [
            (tee(b"abc", 10), Framing::Length(3), Some(b"abc")),
            // The upstream answered before reading all of it.
            (tee(b"ab", 10), Framing::Length(3), None),
            (
                tee(b"3\r\nabc\r\n0\r\n\r\n", 64),
                Framing::Chunked,
                Some(b"abc"),
            ),
            (tee(b"3\r\nabc\r\n", 64), Framing::Chunked, None),
            (tee(b"abcdef", 4), Framing::Length(6), None),
            (tee(b"", 4), Framing::None, Some(b"")),
        ];
        for (i, (tee, framing, want)) in cases.iter().enumerate() {
            assert_eq!(whole_body(tee, *framing).as_deref(), *want, "case {i}");
        }
    }

    #[test]
    fn a_body_over_the_limit_is_not_kept() {
        let mut tee = Tee::new(4);
        tee.push(b"ab");
        tee.push(b"cd");
        assert!(!tee.overflow);
        assert_eq!(tee.body, b"abcd");
        tee.push(b"e");
        assert!(tee.overflow);
        assert!(tee.body.is_empty());
        tee.push(b"");
        assert!(tee.overflow);
    }
}
