//! `outpost-bench route-probed`: how long a client spends before it has a route when it probes
//! the router's candidates first, as `outpost connect` and the client library do. Runs the
//! library's own [`Routers::route_probed`] `--runs` times, paced so the probes stay inside the
//! beacons' default per-source rate limit, and reports p50/p99 of the candidate request, the
//! probing and the whole.
//!
//! `udp-relay` is the other half of the 60 ms scenario: a UDP relay in front of one beacon that
//! holds every datagram toward it for `--delay-ms`.

use anyhow::{Context as _, bail};
use clap::Args;
use outpost_client::router::{RouterOptions, Routers};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `outpost-bench route-probed`.
#[derive(Args, Debug)]
pub struct RouteProbed {
    /// Router URLs (comma-separated).
    #[arg(long)]
    router: String,
    /// Module to route to.
    #[arg(long)]
    module: String,
    /// Routes made.
    #[arg(long, default_value_t = 40)]
    runs: u32,
    /// Time between the starts of two runs (the beacons' default limit is 20 probes/s per
    /// source; three probes per candidate every 200 ms stays inside it).
    #[arg(long, default_value = "200ms")]
    every: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
}

impl RouteProbed {
    /// Runs and prints.
    pub fn run(self) -> anyhow::Result<()> {
        let every = humantime::parse_duration(&self.every).context("--every")?;
        if !(1..=10_000).contains(&self.runs) || every > Duration::from_secs(10) {
            bail!("--runs must be 1..=10000 and --every at most 10s");
        }
        let tls = outpost_net::tls::https_client_config(&outpost_net::tls::HttpsTrust::PublicRoots)?;
        let routers = Routers::new(std::slice::from_ref(&self.router), tls, RouterOptions::default())?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (mut cand, mut probe, mut total, mut self_routed, mut nodes) = (vec![], vec![], vec![], 0u32, 0usize);
        rt.block_on(async {
            let mut next = tokio::time::Instant::now();
            for _ in 0..self.runs {
                tokio::time::sleep_until(next).await;
                next += every;
                let t0 = Instant::now();
                let (route, probed) = routers.route_probed(&self.module, &[("module", &self.module)]).await?;
                total.push(t0.elapsed().as_secs_f64() * 1e3);
                cand.push(probed.candidates_time.as_secs_f64() * 1e3);
                probe.push(probed.probe_time.as_secs_f64() * 1e3);
                nodes = nodes.max(probed.results.len());
                self_routed += u32::from(route.estimate.method == "measured-self");
            }
            anyhow::Ok(())
        })?;
        let v = serde_json::json!({
            "runs": self.runs, "candidates": nodes, "measured_self": self_routed,
            "candidates_p50_ms": pct(&mut cand, 0.5), "candidates_p99_ms": pct(&mut cand, 0.99),
            "probe_p50_ms": pct(&mut probe, 0.5), "probe_p99_ms": pct(&mut probe, 0.99),
            "total_p50_ms": pct(&mut total, 0.5), "total_p99_ms": pct(&mut total, 0.99),
        });
        if self.json {
            println!("{v}");
        } else {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Ok(())
    }
}

/// `outpost-bench udp-relay`.
#[derive(Args, Debug)]
pub struct UdpRelay {
    /// Hold each datagram toward the target this long.
    #[arg(long, default_value_t = 60)]
    delay_ms: u64,
    /// Where to write `{"addr"}` once bound.
    #[arg(long)]
    ready_file: PathBuf,
    /// An edge's ready file: the relay forwards to its `probe` address once the file appears.
    #[arg(long)]
    to_ready_file: PathBuf,
}

impl UdpRelay {
    /// Relays until killed.
    pub fn run(self) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let down = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
            outpost_net::files::write_atomic(
                &self.ready_file,
                serde_json::json!({"addr": down.local_addr()?.to_string()}).to_string().as_bytes(),
            )?;
            // The edge starts after the relay (it advertises the relay's address).
            let target: SocketAddr = loop {
                if let Ok(text) = std::fs::read(&self.to_ready_file)
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text)
                    && let Some(a) = v["probe"].as_str()
                {
                    break a.parse()?;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let up = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
            up.connect(target).await?;
            let delay = Duration::from_millis(self.delay_ms);
            let client = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
            let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(4096);
            let (up2, down2, client2) = (up.clone(), down.clone(), client.clone());
            tokio::spawn(async move {
                while let Some((due, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    let _ = up2.send(&bytes).await;
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok(n) = up.recv(&mut buf).await {
                    let to = *client2.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(to) = to {
                        let _ = down2.send_to(&buf[..n], to).await;
                    }
                }
            });
            let mut buf = vec![0u8; 2048];
            loop {
                let (n, from) = down.recv_from(&mut buf).await?;
                *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                let _ = tx.try_send((tokio::time::Instant::now() + delay, buf[..n].to_vec()));
            }
        })
    }
}
