//! Prometheus metrics for every server, through `prometheus-client` (the Prometheus project's own
//! Rust client), served as the Prometheus text format 0.0.4: what every scraper reads, without
//! OpenMetrics' `# EOF` and content type.
//!
//! [`MetricSet`] takes each metric by the name it is exposed under, so the names in the code are
//! the names on dashboards: the library's own conventions (it appends `_total` to counters, and a
//! period to help texts) are undone here, once. Handles ([`Counter`], [`Gauge`]...) are cheap
//! clones of one atomic; labelled series are looked up once, when a service starts, never per
//! message.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Metric, Registry};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

/// A gauge of a measured quantity (seconds, bytes), read at scrape time.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// One label, as the series of a labelled metric are told apart.
pub type Label = [(&'static str, &'static str); 1];

/// The `Content-Type` of what [`MetricSet::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The metrics one service exposes.
#[derive(Debug, Default)]
pub struct MetricSet {
    /// Locked only to register (at start) and to render (per scrape), never to count.
    registry: Mutex<Registry>,
}

impl MetricSet {
    fn register(&self, name: &str, help: &str, metric: impl Metric) {
        let help = help.trim().trim_end_matches('.');
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, metric);
    }

    /// A counter exposed as `name`, which ends in `_total`.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let c = Counter::default();
        self.register(counter_base(name), help, c.clone());
        c
    }

    /// A counter family exposed as `name` (ending in `_total`), one series per value of `label`;
    /// returns a handle on each series, in the order of `values`.
    pub fn counters_by(&self, name: &str, help: &str, label: &'static str, values: &[&'static str]) -> Vec<Counter> {
        let family = Family::<Label, Counter>::default();
        let series = values.iter().map(|v| family.get_or_create(&[(label, *v)]).clone()).collect();
        self.register(counter_base(name), help, family);
        series
    }

    /// A whole-number gauge (things open now).
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let g = Gauge::default();
        self.register(name, help, g.clone());
        g
    }

    /// A gauge family, one series per value of `label`, in the order of `values`.
    pub fn gauges_by(&self, name: &str, help: &str, label: &'static str, values: &[&'static str]) -> Vec<Gauge> {
        let family = Family::<Label, Gauge>::default();
        let series = values.iter().map(|v| family.get_or_create(&[(label, *v)]).clone()).collect();
        self.register(name, help, family);
        series
    }

    /// A gauge of a measured quantity.
    pub fn float_gauge(&self, name: &str, help: &str) -> FloatGauge {
        let g = FloatGauge::default();
        self.register(name, help, g.clone());
        g
    }

    /// A histogram of durations in seconds, with these bucket bounds.
    pub fn histogram(&self, name: &str, help: &str, bounds: &[f64]) -> Histogram {
        let h = Histogram::new(bounds.iter().copied());
        self.register(name, help, h.clone());
        h
    }

    /// Exposes a histogram made elsewhere (by a part that owns it, such as the edge's outbox).
    pub fn add_histogram(&self, name: &str, help: &str, h: Histogram) {
        self.register(name, help, h);
    }

    /// The Prometheus text (0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// The library appends `_total` to a counter's name (and some versions refuse a name that
/// already ends in it), so it is given the name without.
fn counter_base(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_help_come_out_as_given_in_prometheus_text() {
        let m = MetricSet::default();
        let c = m.counter("outpost_things_total", "Things done.");
        let by = m.counters_by("outpost_routes_total", "Routes, by method.", "method", &["geo", "none"]);
        let g = m.gauge("outpost_links_active", "Links open now.");
        let f = m.float_gauge("outpost_cpu_seconds", "CPU time.");
        let h = m.histogram("outpost_tick_seconds", "Tick time.", &[0.001, 0.01]);
        c.inc_by(3);
        by[0].inc();
        g.inc();
        f.set(1.5);
        h.observe(0.005);
        let text = m.render();
        for line in [
            "# HELP outpost_things_total Things done.\n",
            "# TYPE outpost_things_total counter\n",
            "outpost_things_total 3\n",
            "# TYPE outpost_routes_total counter\n",
            "outpost_routes_total{method=\"geo\"} 1\n",
            "outpost_routes_total{method=\"none\"} 0\n",
            "# TYPE outpost_links_active gauge\noutpost_links_active 1\n",
            "outpost_cpu_seconds 1.5\n",
            "# TYPE outpost_tick_seconds histogram\n",
            "outpost_tick_seconds_bucket{le=\"0.001\"} 0\n",
            "outpost_tick_seconds_bucket{le=\"0.01\"} 1\n",
            "outpost_tick_seconds_bucket{le=\"+Inf\"} 1\n",
            "outpost_tick_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
        assert!(!text.contains("# EOF") && !text.contains(".."), "{text}");
    }
}
