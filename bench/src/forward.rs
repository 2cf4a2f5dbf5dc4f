//! `outpost bench-forward`: the whole edge → core path, durable on both sides. An `echo` room on a
//! real edge commits batches (`commit-bulk`, driven through the admin API); the edge's outbox
//! fsyncs them, forwards them, and the core acks them once its store has fsynced them. The rate is
//! updates acked by the core per second of wall time; the latency is the edge's own
//! commit-to-ack histogram over a run at half that rate. The append-and-fsync loop of the same
//! bytes and batch size runs in the same invocation, as the practical limit.

use crate::players::scrape_url;
use anyhow::{Context as _, bail};
use clap::Args;
use outpost_cli::fleet::Api;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `outpost bench-forward`.
#[derive(Args, Debug)]
pub struct BenchForward {
    /// The edge's admin API URL (it must run with `--core` and have the `echo` module).
    #[arg(long)]
    edge: String,
    /// Admin token of the edge.
    #[arg(long, env = "OUTPOST_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The core's HTTP URL, to read `core_updates_applied_total` before and after.
    #[arg(long)]
    core: Option<String>,
    /// Updates to commit in the peak run.
    #[arg(long, default_value_t = 200_000)]
    updates: u64,
    /// Updates per guest call (one `commit-bulk` signal); at most 4000, under the per-call limit.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Value size, bytes.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Concurrent signal senders in the peak run.
    #[arg(long, default_value_t = 2)]
    senders: usize,
    /// Seconds of the half-peak latency run (0 skips it).
    #[arg(long, default_value_t = 5)]
    latency_seconds: u64,
    /// Where the append-and-fsync baseline writes its file.
    #[arg(long)]
    baseline_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

const ACKED: &str = "outpost_outbox_acked_seq";
const APPLIED: &str = "outpost_core_updates_applied_total";
const LATENCY: &str = "outpost_outbox_commit_to_ack_seconds";
/// How long the oldest commit of each outbox group waited for its fsync.
const GROUP_COMMIT: &str = "outpost_outbox_group_commit_seconds";

impl BenchForward {
    /// Runs the peak run, the half-peak latency run and the baseline.
    pub fn run(self) -> anyhow::Result<()> {
        if self.updates == 0 || self.updates > 10_000_000 || !(1..=4000).contains(&self.batch) {
            bail!("--updates must be 1..=10000000 and --batch 1..=4000");
        }
        if !(1..=64).contains(&self.senders) || self.value_bytes > 65_536 || self.latency_seconds > 600 {
            bail!("--senders must be 1..=64, --value-bytes at most 65536, --latency-seconds at most 600");
        }
        let edge = Api::plain(&self.edge, self.token.clone())?;
        let room: serde_json::Value = edge.post("/v1/rooms", &serde_json::json!({"module": "echo"}))?;
        let room = room["room"].as_str().context("no room id in the reply")?.to_string();
        let applied_before = self.core.as_deref().map(scrape_url).transpose()?;

        // Peak: as fast as the senders can push, until the core has acked every update.
        let bar = outpost_cli::fleet::spinner(Duration::from_secs(2), "committing at full rate");
        let acked0 = self.edge_metrics()?.get(ACKED).copied().unwrap_or(0.0) as u64;
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let senders: Vec<_> = (0..self.senders)
            .map(|_| {
                let (edge, room, next) = (edge.clone(), room.clone(), next.clone());
                let (updates, batch, bytes) = (self.updates, self.batch, self.value_bytes);
                std::thread::spawn(move || -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let first = i * batch;
                        if first >= updates {
                            return Ok(());
                        }
                        let n = batch.min(updates - first);
                        signal(&edge, &room, i, n, bytes)?;
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        }
        self.wait_acked(acked0 + self.updates, Duration::from_secs(120))?;
        let elapsed = started.elapsed();
        bar.finish_and_clear();
        let rate = self.updates as f64 / elapsed.as_secs_f64();
        let applied = match (&self.core, applied_before) {
            (Some(core), Some(before)) => {
                let after = scrape_url(core)?;
                Some(after.get(APPLIED).copied().unwrap_or(0.0) - before.get(APPLIED).copied().unwrap_or(0.0))
            }
            _ => None,
        };

        // Half of peak, paced, for the commit-to-durable-at-core latency.
        let latency = if self.latency_seconds > 0 {
            let bar = outpost_cli::fleet::spinner(Duration::from_secs(self.latency_seconds), "committing at half rate");
            let before = self.edge_metrics()?;
            let acked_start = before.get(ACKED).copied().unwrap_or(0.0) as u64;
            let interval = Duration::from_secs_f64(self.batch as f64 / (rate / 2.0));
            let deadline = Instant::now() + Duration::from_secs(self.latency_seconds);
            let mut due = Instant::now();
            let mut sent = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                signal(&edge, &room, i, self.batch, self.value_bytes)?;
                sent += self.batch;
                i += 1;
                due += interval;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            self.wait_acked(acked_start + sent, Duration::from_secs(60))?;
            let after = self.edge_metrics()?;
            bar.finish_and_clear();
            let ack = quantiles(LATENCY, &before, &after)?;
            // The window in which players may see a call's effects before its commits are on disk.
            let group = quantiles(GROUP_COMMIT, &before, &after).ok();
            Some((sent as f64 / self.latency_seconds as f64, ack, group))
        } else {
            None
        };

        let baseline = match &self.baseline_dir {
            Some(dir) => {
                Some(crate::ingest::fsync_baseline(dir, self.updates, self.batch as usize, 10_000, self.value_bytes)?)
            }
            None => None,
        };
        let ratio = baseline.map(|b| rate / b);
        let (half_rate, p50, p99, group) = match latency {
            Some((r, (p50, p99), group)) => (Some(r), Some(p50 * 1000.0), Some(p99 * 1000.0), group),
            None => (None, None, None, None),
        };
        let (group_p50, group_p99) = (group.map(|g| g.0 * 1000.0), group.map(|g| g.1 * 1000.0));
        if self.json {
            println!(
                "{}",
                serde_json::json!({"updates": self.updates, "batch": self.batch, "value_bytes": self.value_bytes,
                    "updates_per_s": rate, "core_applied": applied, "half_peak_updates_per_s": half_rate,
                    "commit_to_ack_p50_ms": p50, "commit_to_ack_p99_ms": p99,
                    "group_commit_p50_ms": group_p50, "group_commit_p99_ms": group_p99,
                    "baseline_updates_per_s": baseline, "ratio": ratio})
            );
        } else {
            println!(
                "edge → core: {rate:.0} updates/s durable on both sides ({} in calls of {}, {:.2} s)",
                self.updates,
                self.batch,
                elapsed.as_secs_f64()
            );
            if let Some(a) = applied {
                println!("core applied {a:.0} updates in that run");
            }
            if let (Some(r), Some(p50), Some(p99)) = (half_rate, p50, p99) {
                println!("at half peak ({r:.0} updates/s): commit → core ack p50 {p50:.2} ms, p99 {p99:.2} ms");
            }
            if let (Some(p50), Some(p99)) = (group_p50, group_p99) {
                println!("group commit (a commit waiting for its fsync): p50 {p50:.3} ms, p99 {p99:.3} ms");
            }
            if let (Some(b), Some(r)) = (baseline, ratio) {
                println!("append+fsync baseline: {b:.0} updates/s; ratio {r:.2}");
            }
        }
        Ok(())
    }

    fn edge_metrics(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        scrape_url(&self.edge)
    }

    /// Polls the edge until the core has acked `target`, or fails naming how far it got.
    fn wait_acked(&self, target: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let acked = self.edge_metrics()?.get(ACKED).copied().unwrap_or(0.0) as u64;
            if acked >= target {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the core acked up to {acked}, not {target}, within {limit:?}: is the edge running with --core?");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// One `commit-bulk` call: `n` updates to keys `k{call % 10}/{0..n}`, so keys repeat as a game's do.
fn signal(edge: &Api, room: &str, call: u64, n: u64, bytes: usize) -> anyhow::Result<()> {
    let reply = edge.post_bytes(
        &format!("/v1/rooms/{room}/signal"),
        format!("commit-bulk k{}/ {n} {bytes}", call % 10).as_bytes(),
    )?;
    if !reply.starts_with(b"committed") {
        bail!("the echo room answered {:?}", String::from_utf8_lossy(&reply));
    }
    Ok(())
}

/// p50 and p99 (seconds) of histogram `name` between two scrapes, interpolated linearly inside a
/// bucket, as Prometheus' `histogram_quantile` does.
fn quantiles(name: &str, before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> anyhow::Result<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((bound, v - before.get(k).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        bail!("the edge has no {name} observations (is it forwarding to a core?)");
    }
    let q = |p: f64| {
        let rank = p * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return lower.0;
                }
                let share = if count > lower.1 { (rank - lower.1) / (count - lower.1) } else { 1.0 };
                return lower.0 + (bound - lower.0) * share;
            }
            lower = (bound, count);
        }
        lower.0
    };
    Ok((q(0.5), q(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let series = |v: &[(&str, f64)]| -> BTreeMap<String, f64> {
            v.iter().map(|(le, c)| (format!("{LATENCY}_bucket{{le=\"{le}\"}}"), *c)).collect()
        };
        let before = series(&[("0.001", 0.0), ("0.002", 0.0), ("0.004", 0.0), ("+Inf", 0.0)]);
        let after = series(&[("0.001", 0.0), ("0.002", 50.0), ("0.004", 100.0), ("+Inf", 100.0)]);
        let (p50, p99) = quantiles(LATENCY, &before, &after).unwrap();
        assert!((p50 - 0.002).abs() < 1e-9, "{p50}");
        assert!((p99 - 0.00396).abs() < 1e-9, "{p99}");
        assert!(quantiles(LATENCY, &before, &before).is_err(), "no observations is an error, not zero");
    }
}
