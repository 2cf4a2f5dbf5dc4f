//! The router's Prometheus metrics (served on `GET /metrics`).

use outpost_net::metrics::{Counter, Gauge, MetricSet};

/// Every metric the router exports.
#[derive(Debug)]
pub struct Metrics {
    set: MetricSet,
    /// Routes answered, by the chosen node's estimate method.
    pub routes_measured_self: Counter,
    /// See `routes_measured_self`.
    pub routes_measured_prefix: Counter,
    /// See `routes_measured_prefix`.
    pub routes_measured_cell: Counter,
    /// See `routes_measured_prefix`.
    pub routes_geo: Counter,
    /// See `routes_measured_prefix`.
    pub routes_none: Counter,
    /// Routes answered 503: no node qualified.
    pub routes_unavailable: Counter,
    /// Probe batches taken.
    pub probe_reports: Counter,
    /// Probe results learned from.
    pub probe_results: Counter,
    /// Probe batches refused (malformed or absurd).
    pub probe_rejected: Counter,
    /// Heartbeats taken.
    pub heartbeats: Counter,
    /// Heartbeats refused (malformed, registry full).
    pub heartbeats_rejected: Counter,
    /// Requests refused for a missing or wrong token or auth.
    pub unauthorized: Counter,
    /// Routes and probe reports refused by the per-client rate limit.
    pub rate_limited: Counter,
    /// Candidate lists answered.
    pub candidate_lists: Counter,
    /// Matches placed.
    pub matches_placed: Counter,
    /// Matches refused: no node could take them, or over `max_rtt_ms`.
    pub matches_refused: Counter,
    /// Reports forwarded to peer routers (delivered).
    pub peer_forwarded: Counter,
    /// Reports not forwarded to a peer: its queue was full or it stayed unreachable.
    pub peer_dropped: Counter,
    /// Reports taken from peer routers.
    pub peer_received: Counter,
    /// Registered nodes: healthy, not accepting, down (set at each scrape).
    nodes: [Gauge; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        let set = MetricSet::default();
        let routes = set.counters_by(
            "outpost_router_routes_total",
            "Routes answered, by estimate method.",
            "method",
            &["measured-self", "measured-prefix", "measured-cell", "geo", "none"],
        );
        let nodes = set.gauges_by(
            "outpost_router_nodes",
            "Registered nodes, by health.",
            "health",
            &["healthy", "not-accepting", "down"],
        );
        let [routes_measured_self, routes_measured_prefix, routes_measured_cell, routes_geo, routes_none] =
            <[Counter; 5]>::try_from(routes).unwrap_or_default();
        Metrics {
            routes_measured_self,
            candidate_lists: set.counter("outpost_router_candidate_lists_total", "Candidate lists answered."),
            matches_placed: set.counter("outpost_router_matches_placed_total", "Matches placed on one node."),
            matches_refused: set.counter(
                "outpost_router_matches_refused_total",
                "Matches refused: no node could take them, or over max_rtt_ms.",
            ),
            peer_forwarded: set.counter(
                "outpost_router_peer_forwarded_total",
                "Probe reports and measured routes delivered to peer routers.",
            ),
            peer_dropped: set.counter(
                "outpost_router_peer_dropped_total",
                "Reports not forwarded to a peer router: its queue was full or it stayed unreachable.",
            ),
            peer_received: set.counter("outpost_router_peer_received_total", "Reports taken from peer routers."),
            routes_measured_prefix,
            routes_measured_cell,
            routes_geo,
            routes_none,
            nodes: <[Gauge; 3]>::try_from(nodes).unwrap_or_default(),
            routes_unavailable: set
                .counter("outpost_router_routes_unavailable_total", "Routes answered 503 because no node qualified."),
            probe_reports: set.counter("outpost_router_probe_reports_total", "Probe batches taken."),
            probe_results: set.counter("outpost_router_probe_results_total", "Probe results learned from."),
            probe_rejected: set.counter("outpost_router_probe_rejected_total", "Probe batches refused."),
            heartbeats: set.counter("outpost_router_heartbeats_total", "Heartbeats taken."),
            heartbeats_rejected: set.counter("outpost_router_heartbeats_rejected_total", "Heartbeats refused."),
            unauthorized: set
                .counter("outpost_router_unauthorized_total", "Requests refused for a missing or wrong token or auth."),
            rate_limited: set.counter(
                "outpost_router_rate_limited_total",
                "Routes and probe reports refused by the per-client rate limit.",
            ),
            set,
        }
    }
}

impl Metrics {
    /// Prometheus text (0.0.4), with the node counts by health (healthy, not accepting, down).
    pub fn render(&self, nodes: (u64, u64, u64)) -> String {
        for (gauge, n) in self.nodes.iter().zip([nodes.0, nodes.1, nodes.2]) {
            gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.set.render()
    }
}
