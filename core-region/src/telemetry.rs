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
    /// Updates skipped because their key's last writer is a later epoch of the same room (a node
    /// a room moved away from delivered after the room's next node).
    pub updates_stale: Counter,
    /// Batches acknowledged.
    pub batches: Counter,
    /// Links refused (wrong token, malformed frames, gaps).
    pub links_refused: Counter,
    /// Links open now.
    pub links_active: Gauge,
    /// Player-state loads answered.
    pub loads: Counter,
    /// Stream positions answered.
    pub positions: Counter,
    /// Store failures.
    pub store_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let set = MetricSet::default();
        Metrics {
            updates_applied: set.counter("outpost_core_updates_applied_total", "Updates written to the store."),
            updates_replayed: set.counter("outpost_core_updates_replayed_total", "Updates skipped as replays."),
            updates_stale: set.counter(
                "outpost_core_updates_stale_total",
                "Updates skipped: their key was written by a later epoch of the same room.",
            ),
            batches: set.counter("outpost_core_batches_total", "Batches acknowledged."),
            links_refused: set.counter("outpost_core_links_refused_total", "Edge links refused."),
            links_active: set.gauge("outpost_core_links_active", "Edge links open now."),
            loads: set.counter("outpost_core_loads_total", "Player-state loads answered."),
            positions: set.counter("outpost_core_positions_total", "Stream positions answered."),
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
