//! Learning from client measurements: robust RTT estimates per (network prefix, node) and per
//! (geo cell, node).
//!
//! Robust against a bad sample and a bad client: each source address holds a few recent samples,
//! of which it contributes the median; a path's estimate is the median over sources. One 900 ms
//! spike among thirty-millisecond samples moves nothing, and one client cannot outvote the
//! others in its prefix, since it owns one slot however often it reports. Samples older than
//! `max_age` no longer count, so an estimate decays back to geography when nobody reports.
//! Memory is bounded three ways: keys (moka, `--probe-prefixes` / `--probe-cells`), nodes per key
//! and sources per path.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest RTT the router believes, ms. Anything above is a broken probe, not a path.
pub const MAX_RTT_MS: f64 = 10_000.0;
/// Samples each source keeps per path.
const SAMPLES_PER_SOURCE: usize = 5;

/// Bounds and decay of the learned tables.
#[derive(Debug, Clone)]
pub struct LearnLimits {
    /// Network prefixes kept.
    pub max_prefixes: u64,
    /// Geo cells kept.
    pub max_cells: u64,
    /// Nodes kept per prefix or cell (the stalest is dropped).
    pub nodes_per_key: usize,
    /// Sources kept per (key, node) (the stalest is dropped).
    pub sources_per_path: usize,
    /// Samples older than this no longer count.
    pub max_age: Duration,
    /// Added to the RTT per unit of loss (0.1 loss adds a tenth of it), ms: a lossy path plays
    /// worse than its RTT says.
    pub loss_penalty_ms: f64,
}

impl Default for LearnLimits {
    fn default() -> Self {
        LearnLimits {
            max_prefixes: 100_000,
            max_cells: 20_000,
            nodes_per_key: 32,
            sources_per_path: 16,
            max_age: Duration::from_secs(1800),
            loss_penalty_ms: 200.0,
        }
    }
}

/// A bad measurement.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    /// Not a plausible RTT.
    #[error("rtt_ms must be above 0 and at most {MAX_RTT_MS}, got {0}")]
    Rtt(f64),
    /// Not a fraction.
    #[error("loss must be between 0 and 1, got {0}")]
    Loss(f64),
}

/// Checks one measurement.
pub fn check_sample(rtt_ms: f64, loss: f64) -> Result<(), SampleError> {
    if !(rtt_ms.is_finite() && rtt_ms > 0.0 && rtt_ms <= MAX_RTT_MS) {
        return Err(SampleError::Rtt(rtt_ms));
    }
    if !(loss.is_finite() && (0.0..=1.0).contains(&loss)) {
        return Err(SampleError::Loss(loss));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rtt_ms: f32,
    loss: f32,
    at: Instant,
}

#[derive(Debug, Clone)]
struct Source {
    id: u64,
    samples: [Option<Sample>; SAMPLES_PER_SOURCE],
    next: usize,
    last: Instant,
}

impl Source {
    fn fresh(&self, now: Instant, max_age: Duration) -> impl Iterator<Item = &Sample> {
        self.samples.iter().flatten().filter(move |s| now.saturating_duration_since(s.at) <= max_age)
    }

    /// This source's say: the median of its fresh samples, RTT and loss.
    fn median(&self, now: Instant, max_age: Duration) -> Option<(f64, f64)> {
        let mut rtt: Vec<f64> = self.fresh(now, max_age).map(|s| s.rtt_ms as f64).collect();
        let mut loss: Vec<f64> = self.fresh(now, max_age).map(|s| s.loss as f64).collect();
        Some((median(&mut rtt)?, median(&mut loss)?))
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// What is known of one path (a prefix or cell to one node).
#[derive(Debug, Clone, Default)]
pub struct PathStats {
    sources: Vec<Source>,
}

impl PathStats {
    fn record(&mut self, source: u64, s: Sample, max_sources: usize) {
        if let Some(src) = self.sources.iter_mut().find(|x| x.id == source) {
            src.samples[src.next] = Some(s);
            src.next = (src.next + 1) % SAMPLES_PER_SOURCE;
            src.last = s.at;
            return;
        }
        if self.sources.len() >= max_sources.max(1) {
            let stalest = self.sources.iter().enumerate().min_by_key(|(_, x)| x.last).map(|(i, _)| i);
            if let Some(i) = stalest {
                self.sources.swap_remove(i);
            }
        }
        let mut samples = [None; SAMPLES_PER_SOURCE];
        samples[0] = Some(s);
        self.sources.push(Source { id: source, samples, next: 1, last: s.at });
    }

    /// The path's estimate in ms (RTT plus the loss penalty), or `None` when nothing fresh is
    /// known.
    pub fn estimate(&self, now: Instant, limits: &LearnLimits) -> Option<f64> {
        let per_source: Vec<(f64, f64)> = self.sources.iter().filter_map(|s| s.median(now, limits.max_age)).collect();
        let mut rtt: Vec<f64> = per_source.iter().map(|p| p.0).collect();
        let mut loss: Vec<f64> = per_source.iter().map(|p| p.1).collect();
        Some(median(&mut rtt)? + median(&mut loss)? * limits.loss_penalty_ms)
    }

    fn last(&self) -> Option<Instant> {
        self.sources.iter().map(|s| s.last).max()
    }
}

/// Everything learned under one key (a prefix or a cell): node id → path.
#[derive(Debug, Default)]
pub struct KeyStats {
    paths: Vec<(String, PathStats)>,
}

impl KeyStats {
    fn record(&mut self, node: &str, source: u64, s: Sample, limits: &LearnLimits) {
        if let Some((_, p)) = self.paths.iter_mut().find(|(n, _)| n == node) {
            p.record(source, s, limits.sources_per_path);
            return;
        }
        if self.paths.len() >= limits.nodes_per_key.max(1) {
            let stalest = self.paths.iter().enumerate().min_by_key(|(_, (_, p))| p.last()).map(|(i, _)| i);
            if let Some(i) = stalest {
                self.paths.swap_remove(i);
            }
        }
        let mut p = PathStats::default();
        p.record(source, s, limits.sources_per_path);
        self.paths.push((node.to_string(), p));
    }

    /// Every node with a fresh estimate.
    pub fn estimates(&self, now: Instant, limits: &LearnLimits) -> Vec<(&str, f64)> {
        self.paths.iter().filter_map(|(n, p)| Some((n.as_str(), p.estimate(now, limits)?))).collect()
    }
}

/// One client-measured sample.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    /// Who measured (its slot in the path).
    pub source: IpAddr,
    /// Round trip, ms (checked with [`check_sample`]).
    pub rtt_ms: f64,
    /// Loss fraction.
    pub loss: f64,
}

/// A bounded table of [`KeyStats`].
pub struct Table<K> {
    map: moka::sync::Cache<K, Arc<Mutex<KeyStats>>>,
}

impl<K: Hash + Eq + Send + Sync + Clone + 'static> Table<K> {
    /// A table of at most `cap` keys.
    pub fn new(cap: u64) -> Self {
        Table { map: moka::sync::Cache::new(cap) }
    }

    /// Records one measurement of the path from `key` to `node`.
    pub fn record(&self, key: K, node: &str, m: Measurement, now: Instant, limits: &LearnLimits) {
        let stats = self.map.get_with(key, Default::default);
        let sample = Sample { rtt_ms: m.rtt_ms as f32, loss: m.loss as f32, at: now };
        if let Ok(mut s) = stats.lock() {
            s.record(node, source_id(m.source), sample, limits);
        }
    }

    /// Fresh estimates under `key`, by node id.
    pub fn estimates(&self, key: &K, now: Instant, limits: &LearnLimits) -> Vec<(String, f64)> {
        let Some(stats) = self.map.get(key) else { return Vec::new() };
        let Ok(s) = stats.lock() else { return Vec::new() };
        s.estimates(now, limits).into_iter().map(|(n, e)| (n.to_string(), e)).collect()
    }

    /// Keys held (after pending evictions are applied).
    pub fn len(&self) -> u64 {
        self.map.run_pending_tasks();
        self.map.entry_count()
    }

    /// No keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A source's slot id: its address hashed, so the table holds no client addresses.
fn source_id(ip: IpAddr) -> u64 {
    let mut h = DefaultHasher::new();
    crate::addr::canonical(ip).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    fn limits() -> LearnLimits {
        LearnLimits { max_age: Duration::from_secs(60), ..LearnLimits::default() }
    }

    fn estimate(t: &Table<u32>, now: Instant) -> Option<f64> {
        t.estimates(&1, now, &limits()).into_iter().find(|(n, _)| n == "a").map(|(_, e)| e)
    }

    #[test]
    fn absurd_values_are_rejected() {
        for (rtt, loss) in [(-1.0, 0.0), (0.0, 0.0), (1e6, 0.0), (f64::NAN, 0.0), (f64::INFINITY, 0.0), (30.0, 1.5)] {
            assert!(check_sample(rtt, loss).is_err(), "{rtt} {loss}");
        }
        assert!(check_sample(0.05, 0.0).is_ok());
        assert!(check_sample(MAX_RTT_MS, 1.0).is_ok());
    }

    #[test]
    fn one_spike_among_twenty_samples_moves_the_estimate_under_ten_percent() {
        let now = Instant::now();
        // From twenty distinct clients, then a spike from a twenty-first.
        let t = Table::new(10);
        for i in 0..20 {
            t.record(1, "a", Measurement { source: ip(i), rtt_ms: 30.0, loss: 0.0 }, now, &limits());
        }
        t.record(1, "a", Measurement { source: ip(99), rtt_ms: 900.0, loss: 0.0 }, now, &limits());
        let e = estimate(&t, now).unwrap();
        assert!((e - 30.0).abs() / 30.0 < 0.1, "{e}");
        // From one client reporting again and again.
        let t = Table::new(10);
        for _ in 0..20 {
            t.record(1, "a", Measurement { source: ip(1), rtt_ms: 30.0, loss: 0.0 }, now, &limits());
        }
        t.record(1, "a", Measurement { source: ip(1), rtt_ms: 900.0, loss: 0.0 }, now, &limits());
        let e = estimate(&t, now).unwrap();
        assert!((e - 30.0).abs() / 30.0 < 0.1, "{e}");
    }

    #[test]
    fn one_loud_client_cannot_outvote_the_rest() {
        let now = Instant::now();
        let t = Table::new(10);
        for i in 0..3 {
            t.record(1, "a", Measurement { source: ip(i), rtt_ms: 20.0, loss: 0.0 }, now, &limits());
        }
        for _ in 0..100 {
            t.record(1, "a", Measurement { source: ip(50), rtt_ms: 500.0, loss: 0.0 }, now, &limits());
        }
        assert_eq!(estimate(&t, now), Some(20.0));
    }

    #[test]
    fn estimates_decay_with_age_and_loss_costs() {
        let t0 = Instant::now();
        let t = Table::new(10);
        t.record(1, "a", Measurement { source: ip(1), rtt_ms: 40.0, loss: 0.1 }, t0, &limits());
        assert_eq!(estimate(&t, t0 + Duration::from_secs(59)), Some(40.0 + 0.1f32 as f64 * 200.0));
        assert_eq!(estimate(&t, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn nodes_and_sources_per_key_are_bounded() {
        let now = Instant::now();
        let lim = LearnLimits { nodes_per_key: 4, sources_per_path: 3, ..limits() };
        let t = Table::new(10);
        for n in 0..10 {
            for s in 0..10 {
                t.record(
                    1,
                    &format!("n{n}"),
                    Measurement { source: ip(s), rtt_ms: 10.0 + s as f64, loss: 0.0 },
                    now,
                    &lim,
                );
            }
        }
        let e = t.estimates(&1, now, &lim);
        assert_eq!(e.len(), 4);
        let stats = t.map.get(&1).unwrap();
        assert!(stats.lock().unwrap().paths.iter().all(|(_, p)| p.sources.len() == 3));
    }

    #[test]
    fn a_million_prefixes_stay_within_the_cap() {
        use crate::addr::PrefixKey;
        let now = Instant::now();
        let t: Table<PrefixKey> = Table::new(5_000);
        for i in 0..1_000_000u32 {
            // One client in each of a million /24s.
            let client = IpAddr::V4(std::net::Ipv4Addr::from(i << 8 | 7));
            let m = Measurement { source: client, rtt_ms: 30.0, loss: 0.0 };
            t.record(PrefixKey::of(client, 24, 48), "a", m, now, &limits());
        }
        let n = t.len();
        assert!(n <= 5_000, "{n} keys held");
        assert!(n > 0);
    }
}
