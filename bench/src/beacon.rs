//! `outpost bench-probe`: how much the beacon adds to the round trip `outpost probe` reports. The
//! same probe code measures a node's beacon and a bare UDP echo loop (a thread with a blocking
//! socket that only flips the reply magic) on loopback, in alternating rounds so that drift on a
//! noisy machine hits both alike, and prints both and their difference.

use anyhow::{Context as _, bail};
use clap::Args;
use outpost_cli::probe::{probe_one, summarize};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// `outpost bench-probe`.
#[derive(Args, Debug)]
pub struct BenchProbe {
    /// The node's beacon address (`probe` in its ready file).
    #[arg(long)]
    node: SocketAddr,
    /// Probes per round to each target.
    #[arg(long, default_value_t = 200)]
    count: u32,
    /// Rounds (each probes the echo, then the beacon).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Time between probes.
    #[arg(long, default_value = "2ms")]
    interval: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A bare UDP echo: every datagram back to its sender, as the beacon would answer it.
fn spawn_echo(bind: SocketAddr) -> anyhow::Result<SocketAddr> {
    let sock = UdpSocket::bind(bind).context("binding the echo socket")?;
    let addr = sock.local_addr()?;
    std::thread::Builder::new().name("udp-echo".into()).spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if outpost_proto::beacon::make_reply(&mut buf[..n]) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    })?;
    Ok(addr)
}

impl BenchProbe {
    /// Runs the rounds and prints the comparison.
    pub fn run(self) -> anyhow::Result<()> {
        let interval = humantime::parse_duration(&self.interval).context("--interval")?;
        if !(1..=10_000).contains(&self.count) || !(1..=100).contains(&self.rounds) || interval > Duration::from_secs(1)
        {
            bail!("--count must be 1..=10000, --rounds 1..=100 and --interval at most 1s");
        }
        let bind: SocketAddr = if self.node.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }.parse()?;
        let echo = spawn_echo(bind)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let timeout = Duration::from_secs(1);
        let (mut beacon, mut bare) = (Vec::new(), Vec::new());
        let bar = outpost_cli::fleet::spinner(interval * self.count * self.rounds * 2, "probing");
        rt.block_on(async {
            for _ in 0..self.rounds {
                bare.extend(probe_one(echo, self.count, interval, timeout, 64).await);
                beacon.extend(probe_one(self.node, self.count, interval, timeout, 64).await);
            }
        });
        bar.finish_and_clear();
        let sent = self.count * self.rounds;
        let b = summarize("beacon", &self.node.to_string(), &beacon, sent);
        let e = summarize("udp-echo", &echo.to_string(), &bare, sent);
        let (Some(bm), Some(em)) = (b.median_ms, e.median_ms) else {
            bail!("no replies (beacon loss {:.0}%, echo loss {:.0}%)", b.loss * 100.0, e.loss * 100.0);
        };
        let diff = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| x - y);
        if self.json {
            println!(
                "{}",
                serde_json::json!({"beacon": b, "udp_echo": e, "median_diff_ms": bm - em,
                    "min_diff_ms": diff(b.min_ms, e.min_ms), "p95_diff_ms": diff(b.p95_ms, e.p95_ms)})
            );
        } else {
            for r in [&b, &e] {
                println!(
                    "{:<9} min {:.3} ms  median {:.3} ms  p95 {:.3} ms  loss {:.1}%",
                    r.node,
                    r.min_ms.unwrap_or(f64::NAN),
                    r.median_ms.unwrap_or(f64::NAN),
                    r.p95_ms.unwrap_or(f64::NAN),
                    r.loss * 100.0
                );
            }
            println!("the beacon adds {:.3} ms at the median ({} probes each)", bm - em, sent);
        }
        Ok(())
    }
}
