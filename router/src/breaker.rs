//! A circuit breaker per upstream: after `threshold` consecutive failures it opens and the router
//! stops sending to that upstream (reads fall back, writes fail fast); after `cooldown` one probe
//! is let through, and its outcome closes or re-opens the circuit. Lock-free: one atomic word.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    /// One probe is in flight.
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Packs state (2 bits), consecutive failures (30 bits) and when it opened (ms since `epoch`,
/// 32 bits) into one word, so every transition is a single compare-and-swap.
#[derive(Debug)]
pub struct Breaker {
    word: AtomicU64,
    epoch: Instant,
    pub threshold: u32,
    pub cooldown: Duration,
}

fn pack(state: State, failures: u32, opened_ms: u32) -> u64 {
    let s = match state {
        State::Closed => 0u64,
        State::Open => 1,
        State::HalfOpen => 2,
    };
    s | (u64::from(failures.min(0x3FFF_FFFF)) << 2) | (u64::from(opened_ms) << 32)
}

fn unpack(word: u64) -> (State, u32, u32) {
    let state = match word & 0b11 {
        0 => State::Closed,
        1 => State::Open,
        _ => State::HalfOpen,
    };
    (
        state,
        ((word >> 2) & 0x3FFF_FFFF) as u32,
        (word >> 32) as u32,
    )
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            word: AtomicU64::new(pack(State::Closed, 0, 0)),
            epoch: Instant::now(),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Milliseconds since `epoch`, wrapping every ~49.7 days; only differences are used.
    fn now_ms(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    pub fn state(&self) -> State {
        unpack(self.word.load(Ordering::Acquire)).0
    }

    /// May a request go to this upstream now? In the open state, the first caller after the
    /// cooldown becomes the probe.
    pub fn allow(&self) -> bool {
        self.allow_at(self.now_ms())
    }

    fn allow_at(&self, now: u32) -> bool {
        let current = self.word.load(Ordering::Acquire);
        match unpack(current) {
            (State::Closed, _, _) => true,
            // A probe is in flight; if it never reported (its client went away), another one
            // may go after a further cooldown, so the circuit cannot stay half open for ever.
            (State::Open | State::HalfOpen, failures, since) => {
                if now.wrapping_sub(since) < self.cooldown.as_millis() as u32 {
                    return false;
                }
                let probe = pack(State::HalfOpen, failures, now);
                self.word
                    .compare_exchange(current, probe, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            }
        }
    }

    pub fn record(&self, ok: bool) {
        self.record_at(ok, self.now_ms());
    }

    fn record_at(&self, ok: bool, now: u32) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                let (state, failures, opened) = unpack(current);
                Some(match (ok, state) {
                    (true, _) => pack(State::Closed, 0, 0),
                    (false, State::HalfOpen) => pack(State::Open, failures + 1, now),
                    (false, State::Open) => pack(State::Open, failures + 1, opened),
                    (false, State::Closed) if failures + 1 >= self.threshold => {
                        pack(State::Open, failures + 1, now)
                    }
                    (false, State::Closed) => pack(State::Closed, failures + 1, 0),
                })
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_open_it_and_a_success_resets_the_count() {
        let b = Breaker::new(3, Duration::from_millis(100));
        b.record_at(false, 0);
        b.record_at(false, 0);
        b.record_at(true, 0);
        b.record_at(false, 0);
        b.record_at(false, 0);
        assert_eq!(b.state(), State::Closed, "not three in a row");
        b.record_at(false, 10);
        assert_eq!(b.state(), State::Open);
        assert!(!b.allow_at(50), "cooling down");
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let b = Breaker::new(1, Duration::from_millis(100));
        b.record_at(false, 0);
        assert!(
            b.allow_at(100),
            "the first caller after the cooldown probes"
        );
        assert_eq!(b.state(), State::HalfOpen);
        assert!(!b.allow_at(101), "only one probe at a time");
        assert!(
            b.allow_at(200),
            "a probe that never reported is replaced after a cooldown"
        );
        b.record_at(false, 220);
        assert_eq!(b.state(), State::Open, "a failed probe re-opens");
        assert!(!b.allow_at(250), "and restarts the cooldown");
        assert!(b.allow_at(320));
        b.record_at(true, 321);
        assert_eq!(b.state(), State::Closed, "a good probe closes");
        assert!(b.allow_at(322));
    }

    #[test]
    fn packing_round_trips() {
        for (s, f, o) in [
            (State::Closed, 0, 0),
            (State::Open, 7, 123_456),
            (State::HalfOpen, 0x3FFF_FFFF, u32::MAX),
        ] {
            assert_eq!(unpack(pack(s, f, o)), (s, f, o));
        }
    }
}
