//! What `fig up` says while it works: one line per phase, as it starts and as it ends (with
//! what it did and how long it took), and progress within the long ones (seeding, the initial
//! copies). On a terminal, a phase redraws one line with a bar; otherwise (a log, a pipe) it
//! prints plain lines, progress at most every few seconds. All of it goes to stderr: stdout
//! carries the banner that scripts read.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Plain-line progress at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(2);
/// Bar width in characters.
const BAR: usize = 24;

/// The phases of one run.
pub struct Progress {
    terminal: bool,
    phases: usize,
    current: usize,
}

impl Progress {
    /// `phases` phases to come, drawn as a bar when stderr is a terminal.
    pub fn new(phases: usize) -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            phases,
            current: 0,
        }
    }

    /// Starts the next phase.
    pub fn phase(&mut self, what: &str) -> Phase {
        self.current += 1;
        let label = format!("[{}/{}] {what}", self.current, self.phases);
        let mut err = std::io::stderr();
        if self.terminal {
            let _ = write!(err, "fig: {label}...");
            let _ = err.flush();
        } else {
            let _ = writeln!(err, "fig: {label}...");
        }
        Phase {
            label,
            terminal: self.terminal,
            started: Instant::now(),
            last_plain: None,
            open: true,
        }
    }
}

/// One phase under way.
pub struct Phase {
    label: String,
    terminal: bool,
    started: Instant,
    last_plain: Option<Instant>,
    /// On a terminal: the line is not finished yet.
    open: bool,
}

impl Phase {
    /// `done` of `total` `unit`s so far (`total` 0: not known).
    pub fn progress(&mut self, done: u64, total: u64, unit: &str) {
        let mut err = std::io::stderr();
        if self.terminal {
            let _ = write!(
                err,
                "\r\x1b[Kfig: {} {} {}",
                self.label,
                bar(done, total, BAR),
                count(done, total, unit)
            );
            let _ = err.flush();
            return;
        }
        let now = Instant::now();
        if self.last_plain.is_none_or(|t| now - t >= PLAIN_EVERY) {
            self.last_plain = Some(now);
            let _ = writeln!(err, "fig: {} {}", self.label, count(done, total, unit));
        }
    }

    /// Ends the phase: what it did, and how long it took.
    pub fn done(mut self, what: &str) {
        let took = seconds(self.started.elapsed());
        let start = if self.terminal { "\r\x1b[K" } else { "" };
        eprintln!("{start}fig: {}: {what} ({took})", self.label);
        self.open = false;
    }
}

impl Drop for Phase {
    /// A phase that failed ends its line, so the error starts on its own.
    fn drop(&mut self) {
        if self.terminal && self.open {
            eprintln!();
        }
    }
}

/// `[#########...............]`: `done` of `total`, full when `done` passed an estimate that
/// was low, a moving marker when there is no estimate.
fn bar(done: u64, total: u64, width: usize) -> String {
    if total == 0 {
        let at = (done as usize / 1000) % width;
        let cells: String = (0..width)
            .map(|i| if i == at { '#' } else { '.' })
            .collect();
        return format!("[{cells}]");
    }
    let filled = ((done.min(total) as u128 * width as u128) / total as u128) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// `12,345 of ~27,000 rows (45%)`; `12,345 rows` without an estimate.
fn count(done: u64, total: u64, unit: &str) -> String {
    if total == 0 {
        return format!("{} {unit}", thousands(done));
    }
    let percent = (done.min(total) * 100) / total;
    format!(
        "{} of ~{} {unit} ({percent}%)",
        thousands(done),
        thousands(total)
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `0.4 s`, `17.0 s`.
fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_with_their_estimate() {
        let table = [
            (0, 0, "0 rows"),
            (999, 0, "999 rows"),
            (12_345, 0, "12,345 rows"),
            (12_345, 27_000, "12,345 of ~27,000 rows (45%)"),
            (27_000, 27_000, "27,000 of ~27,000 rows (100%)"),
            // The planner's estimate was low: never past 100%.
            (30_000, 27_000, "30,000 of ~27,000 rows (100%)"),
            (1_234_567, 2_000_000, "1,234,567 of ~2,000,000 rows (61%)"),
        ];
        for (done, total, expected) in table {
            assert_eq!(count(done, total, "rows"), expected);
        }
    }

    #[test]
    fn bars_fill_with_the_share_done() {
        let table = [
            (0, 10, "[..........]"),
            (5, 10, "[#####.....]"),
            (10, 10, "[##########]"),
            (11, 10, "[##########]"),
            (1, 3, "[###.......]"),
            // Without an estimate, a marker moves every thousand.
            (0, 0, "[#.........]"),
            (2_500, 0, "[..#.......]"),
        ];
        for (done, total, expected) in table {
            assert_eq!(bar(done, total, 10), expected, "{done}/{total}");
        }
        assert_eq!(seconds(Duration::from_millis(17_049)), "17.0 s");
    }
}
