//! `outpost bench-core`: how fast a core region makes committed updates durable. Streams
//! `--updates` updates in batches of `--batch` over a real edge link (each batch acked only once
//! the store has fsynced it), then, as the practical limit, appends the same bytes to a file
//! with one fsync per batch, and prints both rates and their ratio.

use anyhow::{Context as _, bail};
use clap::Args;
use outpost_proto::api::CoreReady;
use outpost_proto::link::{CoreFrame, WireUpdate};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `outpost bench-core`.
#[derive(Args, Debug)]
pub struct BenchCore {
    /// The core's ready file (`{"quic","http","cert_sha256"}`).
    #[arg(long)]
    core_ready: PathBuf,
    /// Cluster token.
    #[arg(long, env = "OUTPOST_CLUSTER_TOKEN", hide_env_values = true)]
    token: String,
    /// Updates to send.
    #[arg(long, default_value_t = 200_000)]
    updates: u64,
    /// Updates per batch (one fsync each at the core).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Value size, bytes.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Distinct keys the updates cycle through (ten thousand players' scores by default; as
    /// many as `--updates` makes every update a new key, so the store grows).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Where the append-and-fsync baseline writes its file.
    #[arg(long)]
    baseline_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn update(i: u64, keys: u64, value_bytes: usize) -> WireUpdate {
    // Players' scores: keys repeat, as a game's do.
    WireUpdate {
        room: "bench-room".into(),
        key: format!("player/{}/score", i % keys),
        value: vec![b'x'; value_bytes],
        epoch: Default::default(),
    }
}

impl BenchCore {
    /// Runs both measurements.
    pub fn run(self) -> anyhow::Result<()> {
        if self.updates == 0 || self.updates > 10_000_000 || !(1..=10_000).contains(&self.batch) || self.keys == 0 {
            bail!("--updates must be 1..=10000000, --batch 1..=10000 and --keys at least 1");
        }
        let ready: CoreReady = serde_json::from_slice(
            &std::fs::read(&self.core_ready).with_context(|| format!("reading {}", self.core_ready.display()))?,
        )?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let stream = format!("bench/{}", hex::encode(rand::random::<[u8; 6]>()));
        let bar = outpost_cli::fleet::spinner(Duration::from_secs(2), "streaming updates");
        let (elapsed, mut latencies) = rt.block_on(async {
            let addr = ready.quic.parse().context("core quic address")?;
            let mut link = outpost_net::link::CoreLink::connect(
                addr,
                &ready.cert_sha256,
                &self.token,
                "bench",
                &stream,
                Duration::from_secs(10),
            )
            .await?;
            let started = Instant::now();
            let mut latencies = Vec::new();
            let mut next = 1u64;
            while next <= self.updates {
                let n = (self.batch as u64).min(self.updates - next + 1);
                let batch: Vec<WireUpdate> = (next..next + n).map(|i| update(i, self.keys, self.value_bytes)).collect();
                let t = Instant::now();
                let up_to = link.send_batch(next, batch).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                if up_to != next + n - 1 {
                    bail!("ack {up_to} for a batch ending at {}", next + n - 1);
                }
                next += n;
            }
            anyhow::Ok((started.elapsed(), latencies))
        })?;
        bar.finish_and_clear();
        let rate = self.updates as f64 / elapsed.as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
        let baseline = match &self.baseline_dir {
            Some(dir) => Some(fsync_baseline(dir, self.updates, self.batch, self.keys, self.value_bytes)?),
            None => None,
        };
        let ratio = baseline.map(|b| rate / b);
        if self.json {
            println!(
                "{}",
                serde_json::json!({"updates": self.updates, "batch": self.batch, "value_bytes": self.value_bytes,
                    "updates_per_s": rate, "batch_ack_p50_ms": pct(0.5), "batch_ack_p99_ms": pct(0.99),
                    "baseline_updates_per_s": baseline, "ratio": ratio})
            );
        } else {
            println!(
                "core: {rate:.0} updates/s durable ({} in batches of {}), batch ack p50 {:.2} ms p99 {:.2} ms",
                self.updates,
                self.batch,
                pct(0.5),
                pct(0.99)
            );
            if let (Some(b), Some(r)) = (baseline, ratio) {
                println!("append+fsync baseline: {b:.0} updates/s; ratio {r:.2}");
            }
        }
        Ok(())
    }
}

/// The practical limit of durable ingest: the same encoded batches appended to one file in
/// `dir`, one fsync per batch. Returns updates per second.
pub fn fsync_baseline(
    dir: &std::path::Path,
    updates: u64,
    batch: usize,
    keys: u64,
    value_bytes: usize,
) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("outpost-fsync-baseline-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let started = Instant::now();
    let mut next = 1u64;
    while next <= updates {
        let n = (batch as u64).min(updates - next + 1);
        let frame = CoreFrame::Batch {
            first_seq: next,
            updates: (next..next + n).map(|i| update(i, keys, value_bytes)).collect(),
        };
        f.write_all(&frame.encode())?;
        f.sync_data()?;
        next += n;
    }
    let rate = updates as f64 / started.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}
