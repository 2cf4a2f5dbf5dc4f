//! The router's Prometheus metrics: plain atomics, rendered on `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter the router exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Routes answered, by the chosen node's estimate method.
    pub routes_measured_prefix: AtomicU64,
    /// See `routes_measured_prefix`.
    pub routes_measured_cell: AtomicU64,
    /// See `routes_measured_prefix`.
    pub routes_geo: AtomicU64,
    /// See `routes_measured_prefix`.
    pub routes_none: AtomicU64,
    /// Routes answered 503: no node qualified.
    pub routes_unavailable: AtomicU64,
    /// Probe batches taken.
    pub probe_reports: AtomicU64,
    /// Probe results learned from.
    pub probe_results: AtomicU64,
    /// Probe batches refused (malformed or absurd).
    pub probe_rejected: AtomicU64,
    /// Heartbeats taken.
    pub heartbeats: AtomicU64,
    /// Heartbeats refused (malformed, registry full).
    pub heartbeats_rejected: AtomicU64,
    /// Requests refused for a missing or wrong token or auth.
    pub unauthorized: AtomicU64,
    /// Routes and probe reports refused by the per-client rate limit.
    pub rate_limited: AtomicU64,
}

impl Metrics {
    /// Bumps a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text, with the node counts by health (healthy, not accepting, down).
    pub fn render(&self, nodes: (u64, u64, u64)) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP outpost_router_routes_total Routes answered, by estimate method.");
        let _ = writeln!(out, "# TYPE outpost_router_routes_total counter");
        for (method, c) in [
            ("measured-prefix", &self.routes_measured_prefix),
            ("measured-cell", &self.routes_measured_cell),
            ("geo", &self.routes_geo),
            ("none", &self.routes_none),
        ] {
            let _ = writeln!(out, "outpost_router_routes_total{{method=\"{method}\"}} {}", load(c));
        }
        let _ = writeln!(out, "# HELP outpost_router_nodes Registered nodes, by health.");
        let _ = writeln!(out, "# TYPE outpost_router_nodes gauge");
        for (health, n) in [("healthy", nodes.0), ("not-accepting", nodes.1), ("down", nodes.2)] {
            let _ = writeln!(out, "outpost_router_nodes{{health=\"{health}\"}} {n}");
        }
        for (name, help, c) in [
            ("routes_unavailable_total", "Routes answered 503 because no node qualified.", &self.routes_unavailable),
            ("probe_reports_total", "Probe batches taken.", &self.probe_reports),
            ("probe_results_total", "Probe results learned from.", &self.probe_results),
            ("probe_rejected_total", "Probe batches refused.", &self.probe_rejected),
            ("heartbeats_total", "Heartbeats taken.", &self.heartbeats),
            ("heartbeats_rejected_total", "Heartbeats refused.", &self.heartbeats_rejected),
            ("unauthorized_total", "Requests refused for a missing or wrong token or auth.", &self.unauthorized),
            (
                "rate_limited_total",
                "Routes and probe reports refused by the per-client rate limit.",
                &self.rate_limited,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP outpost_router_{name} {help}\n# TYPE outpost_router_{name} counter\noutpost_router_{name} {}",
                load(c)
            );
        }
        out
    }
}
