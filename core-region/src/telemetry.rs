//! The core's Prometheus metrics: plain atomics, rendered on `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter the core exports, with its help text.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Updates written to the store (replays excluded).
    pub updates_applied: AtomicU64,
    /// Updates skipped as replays (at or below their stream's high-water mark).
    pub updates_replayed: AtomicU64,
    /// Batches acknowledged.
    pub batches: AtomicU64,
    /// Links refused (wrong token, malformed frames, gaps).
    pub links_refused: AtomicU64,
    /// Links open now.
    pub links_active: AtomicU64,
    /// Player-state loads answered.
    pub loads: AtomicU64,
    /// Store failures.
    pub store_errors: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, c) in [
            ("core_updates_applied_total", "counter", "Updates written to the store.", &self.updates_applied),
            ("core_updates_replayed_total", "counter", "Updates skipped as replays.", &self.updates_replayed),
            ("core_batches_total", "counter", "Batches acknowledged.", &self.batches),
            ("core_links_refused_total", "counter", "Edge links refused.", &self.links_refused),
            ("core_links_active", "gauge", "Edge links open now.", &self.links_active),
            ("core_loads_total", "counter", "Player-state loads answered.", &self.loads),
            ("core_store_errors_total", "counter", "Store failures.", &self.store_errors),
        ] {
            let _ = writeln!(
                out,
                "# HELP outpost_{name} {help}\n# TYPE outpost_{name} {kind}\noutpost_{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out
    }
}
