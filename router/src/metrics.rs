//! Prometheus metrics, kept in fixed arrays of atomics indexed by (capability, upstream): no
//! lock and no allocation on the request path, and no process-global registry, so several
//! routers in one process (tests) keep separate counts.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::breaker::Breaker;
use crate::routes::RouteTable;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Status classes counted: 1xx..5xx.
const CLASSES: usize = 5;

#[derive(Debug)]
pub struct Metrics {
    capabilities: usize,
    upstreams: usize,
    requests: Vec<AtomicU64>,
    buckets: Vec<AtomicU64>,
    sum_micros: Vec<AtomicU64>,
    count: Vec<AtomicU64>,
    /// Client connections open now; the data path's connection limit is checked against it.
    pub connections_open: AtomicUsize,
    connections_shed: AtomicU64,
    accept_errors: AtomicU64,
    /// Writes that waited for their capability's hold to end, by capability.
    writes_held: Vec<AtomicU64>,
    /// Of those, the ones still held at the limit (answered `503 write_held`).
    write_hold_timeouts: Vec<AtomicU64>,
}

fn zeros(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Metrics {
    pub fn new(table: &RouteTable) -> Metrics {
        // One extra capability slot for unrouted requests.
        let (c, u) = (table.capabilities.len() + 1, table.upstreams.len());
        Metrics {
            capabilities: c,
            upstreams: u,
            requests: zeros(c * u * CLASSES),
            buckets: zeros(c * u * BUCKETS.len()),
            sum_micros: zeros(c * u),
            count: zeros(c * u),
            connections_open: AtomicUsize::new(0),
            connections_shed: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            writes_held: zeros(c),
            write_hold_timeouts: zeros(c),
        }
    }

    fn slot(&self, capability: Option<usize>, upstream: usize) -> usize {
        capability.unwrap_or(self.capabilities - 1) * self.upstreams + upstream
    }

    /// Counts one answered request.
    pub fn observe(
        &self,
        capability: Option<usize>,
        upstream: usize,
        status: u16,
        elapsed: Duration,
    ) {
        let slot = self.slot(capability, upstream);
        let class = (usize::from(status / 100)).clamp(1, CLASSES) - 1;
        self.requests[slot * CLASSES + class].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        if let Some(b) = BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[slot * BUCKETS.len() + b].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros[slot].fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection answered `503 overloaded` because the limit was reached.
    pub fn shed(&self) {
        self.connections_shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed accept (out of file descriptors, say).
    pub fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    fn capability_slot(&self, capability: Option<usize>) -> usize {
        capability.unwrap_or(self.capabilities - 1)
    }

    /// Counts a write that had to wait because its capability's writes were held.
    pub fn write_held(&self, capability: Option<usize>) {
        self.writes_held[self.capability_slot(capability)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a held write answered `503 write_held` because the hold outlasted the limit.
    pub fn write_hold_timed_out(&self, capability: Option<usize>) {
        self.write_hold_timeouts[self.capability_slot(capability)].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(
        &self,
        table: &RouteTable,
        toggles_version: i64,
        ownership_version: i64,
        breakers: &[Breaker],
    ) -> String {
        let mut out = String::with_capacity(4096);
        let cap_name = |c: usize| {
            table
                .capabilities
                .get(c)
                .map(|c| c.name.as_str())
                .unwrap_or("none")
        };
        let _ = writeln!(
            out,
            "# HELP router_requests_total Requests answered, by capability, upstream and status class."
        );
        let _ = writeln!(out, "# TYPE router_requests_total counter");
        for c in 0..self.capabilities {
            for u in 0..self.upstreams {
                let slot = c * self.upstreams + u;
                for class in 0..CLASSES {
                    let n = self.requests[slot * CLASSES + class].load(Ordering::Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "router_requests_total{{capability=\"{}\",upstream=\"{}\",status=\"{}xx\"}} {n}",
                            cap_name(c),
                            table.upstreams[u].name,
                            class + 1
                        );
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP router_request_duration_seconds Time to the upstream's response head."
        );
        let _ = writeln!(out, "# TYPE router_request_duration_seconds histogram");
        for c in 0..self.capabilities {
            for u in 0..self.upstreams {
                let slot = c * self.upstreams + u;
                let count = self.count[slot].load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let labels = format!(
                    "capability=\"{}\",upstream=\"{}\"",
                    cap_name(c),
                    table.upstreams[u].name
                );
                let mut cumulative = 0;
                for (b, le) in BUCKETS.iter().enumerate() {
                    cumulative += self.buckets[slot * BUCKETS.len() + b].load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "router_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "router_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
                );
                let sum = self.sum_micros[slot].load(Ordering::Relaxed) as f64 / 1e6;
                let _ = writeln!(out, "router_request_duration_seconds_sum{{{labels}}} {sum}");
                let _ = writeln!(
                    out,
                    "router_request_duration_seconds_count{{{labels}}} {count}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP router_toggles_version Version of the toggles this instance applies."
        );
        let _ = writeln!(out, "# TYPE router_toggles_version gauge");
        let _ = writeln!(out, "router_toggles_version {toggles_version}");
        let _ = writeln!(
            out,
            "# HELP router_ownership_version Version of the write ownership this instance applies."
        );
        let _ = writeln!(out, "# TYPE router_ownership_version gauge");
        let _ = writeln!(out, "router_ownership_version {ownership_version}");
        // Every capability, zeros included: a hold is rare, and an alert wants the series there.
        for (name, help, counts) in [
            (
                "router_writes_held_total",
                "Writes that waited because their capability's writes were held (its write owner was changing).",
                &self.writes_held,
            ),
            (
                "router_write_hold_timeouts_total",
                "Held writes answered 503 write_held because the hold outlasted the write hold limit.",
                &self.write_hold_timeouts,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (c, cap) in table.capabilities.iter().enumerate() {
                let n = counts[c].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{capability=\"{}\"}} {n}", cap.name);
            }
        }
        for (name, kind, help, value) in [
            (
                "router_connections_open",
                "gauge",
                "Client connections open now.",
                self.connections_open.load(Ordering::Relaxed) as u64,
            ),
            (
                "router_connections_shed_total",
                "counter",
                "Client connections answered 503 overloaded at the connection limit.",
                self.connections_shed.load(Ordering::Relaxed),
            ),
            (
                "router_accept_errors_total",
                "counter",
                "Failed accepts (for example, no file descriptors left).",
                self.accept_errors.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP router_breaker_open Whether the circuit to an upstream is open (1) or half open (0.5)."
        );
        let _ = writeln!(out, "# TYPE router_breaker_open gauge");
        for (u, b) in breakers.iter().enumerate() {
            let v = match b.state() {
                crate::breaker::State::Closed => "0",
                crate::breaker::State::HalfOpen => "0.5",
                crate::breaker::State::Open => "1",
            };
            let _ = writeln!(
                out,
                "router_breaker_open{{upstream=\"{}\"}} {v}",
                table.upstreams[u].name
            );
        }
        out
    }
}

/// The parallel run's counters, per route and outcome (`Shadows` keeps them with its reports).
pub fn render_shadows(shadows: &crate::shadow::Shadows) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP router_shadow_total Shadow copies by route and outcome (matched, real, transient, dropped, too_large, failed).\n# TYPE router_shadow_total counter"
    );
    for (route, r) in shadows.reports() {
        for (outcome, n) in [
            ("matched", r.matched),
            ("real", r.real),
            ("transient", r.transient),
            ("dropped", r.dropped),
            ("too_large", r.too_large),
            ("failed", r.failed),
        ] {
            let _ = writeln!(
                out,
                "router_shadow_total{{route=\"{}\",outcome=\"{outcome}\"}} {n}",
                route.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histograms_render_as_prometheus_text() {
        let table = RouteTable::musiccorp();
        let m = Metrics::new(&table);
        let catalog = table.capabilities.iter().position(|c| c.name == "catalog");
        let up = table.upstream_named("catalog").unwrap();
        m.observe(catalog, up, 200, Duration::from_millis(3));
        m.observe(catalog, up, 503, Duration::from_millis(30));
        m.observe(
            None,
            table.upstream_named("monolith").unwrap(),
            201,
            Duration::from_secs(9),
        );
        let breakers: Vec<Breaker> = table
            .upstreams
            .iter()
            .map(|_| Breaker::new(1, Duration::from_secs(1)))
            .collect();
        breakers[up].record(false);
        let text = m.render(&table, 7, 3, &breakers);
        assert!(text.contains("router_requests_total{capability=\"catalog\",upstream=\"catalog\",status=\"2xx\"} 1"), "{text}");
        assert!(text.contains(
            "router_requests_total{capability=\"catalog\",upstream=\"catalog\",status=\"5xx\"} 1"
        ));
        assert!(text.contains(
            "router_requests_total{capability=\"none\",upstream=\"monolith\",status=\"2xx\"} 1"
        ));
        assert!(text.contains("router_request_duration_seconds_bucket{capability=\"catalog\",upstream=\"catalog\",le=\"0.005\"} 1"));
        assert!(text.contains("router_request_duration_seconds_bucket{capability=\"catalog\",upstream=\"catalog\",le=\"+Inf\"} 2"));
        assert!(text.contains(
            "router_request_duration_seconds_count{capability=\"none\",upstream=\"monolith\"} 1"
        ));
        assert!(text.contains("router_toggles_version 7"));
        m.shed();
        let text = m.render(&table, 7, 3, &breakers);
        assert!(text.contains("router_connections_shed_total 1"), "{text}");
        assert!(text.contains("router_connections_open 0"), "{text}");
        assert!(text.contains("router_breaker_open{upstream=\"catalog\"} 1"));
    }

    #[test]
    fn held_writes_are_counted_per_capability() {
        let table = RouteTable::musiccorp();
        let m = Metrics::new(&table);
        let catalog = table.capabilities.iter().position(|c| c.name == "catalog");
        m.write_held(catalog);
        m.write_held(catalog);
        m.write_hold_timed_out(catalog);
        let text = m.render(&table, 7, 3, &[]);
        for line in [
            "router_ownership_version 3",
            "router_writes_held_total{capability=\"catalog\"} 2",
            "router_write_hold_timeouts_total{capability=\"catalog\"} 1",
            "router_writes_held_total{capability=\"wishlist\"} 0",
            "router_write_hold_timeouts_total{capability=\"wishlist\"} 0",
            "# TYPE router_writes_held_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }
}
