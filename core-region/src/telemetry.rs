//! The core's Prometheus metrics (served on `GET /metrics`).

use outpost_net::metrics::{Counter, Gauge, MetricSet};

/// Every metric the core exports.
#[derive(Debug)]
pub struct Metrics {
    set: MetricSet,
    /// Updates written to the store (replays excluded).
    pub updates_applied: Counter,
    /// Updates skipped as replays (at or below their stream's high-water mark).
    pub updates_replayed: Counter,
    /// Batches acknowledged.
    pub batches: Counter,
    /// Links refused (wrong token, malformed frames, gaps).
    pub links_refused: Counter,
    /// Links open now.
    pub links_active: Gauge,
    /// Player-state loads answered.
    pub loads: Counter,
    /// Store failures.
    pub store_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let set = MetricSet::default();
        Metrics {
            updates_applied: set.counter("outpost_core_updates_applied_total", "Updates written to the store."),
            updates_replayed: set.counter("outpost_core_updates_replayed_total", "Updates skipped as replays."),
            batches: set.counter("outpost_core_batches_total", "Batches acknowledged."),
            links_refused: set.counter("outpost_core_links_refused_total", "Edge links refused."),
            links_active: set.gauge("outpost_core_links_active", "Edge links open now."),
            loads: set.counter("outpost_core_loads_total", "Player-state loads answered."),
            store_errors: set.counter("outpost_core_store_errors_total", "Store failures."),
            set,
        }
    }
}

impl Metrics {
    /// Prometheus text (0.0.4).
    pub fn render(&self) -> String {
        self.set.render()
    }
}
