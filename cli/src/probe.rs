//! `outpost probe`: measures every node's probe beacon in parallel and prints per node min,
//! median, p95, jitter and loss; `--report` tells the router, which learns from it.

use crate::fleet::{RouterOpts, table};
use anyhow::{Context as _, bail};
use clap::Args;
use outpost_proto::api::{NodeList, Route};
use outpost_proto::beacon::{Probe, encode_request, parse_reply};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `outpost probe`.
#[derive(Args, Debug)]
pub struct ProbeCmd {
    #[command(flatten)]
    router: RouterOpts,
    /// Probe these beacons (`ADDR` or `ID=ADDR`, repeatable) instead of the router's nodes.
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// Probes per node.
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Time between probes to one node.
    #[arg(long, default_value = "20ms")]
    interval: String,
    /// How long to wait for the last replies.
    #[arg(long, default_value = "1s")]
    timeout: String,
    /// Probe size, bytes (16..=1200).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Mark the node the router would pick for this module.
    #[arg(long)]
    module: Option<String>,
    /// Send the results to the router (`POST /v1/probes`).
    #[arg(long)]
    report: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One node's result.
#[derive(Debug, Clone, Serialize)]
pub struct NodeProbe {
    /// Node id.
    pub node: String,
    /// Beacon address.
    pub addr: String,
    /// Fastest round trip, ms.
    pub min_ms: Option<f64>,
    /// Median round trip, ms.
    pub median_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// Mean difference between consecutive round trips, ms.
    pub jitter_ms: Option<f64>,
    /// Fraction of probes without a reply.
    pub loss: f64,
    /// Probes sent.
    pub sent: u32,
    /// The router's pick for `--module` (or, without it, the lowest median).
    pub pick: bool,
}

/// Summarizes round trips (in send order) of `sent` probes.
pub fn summarize(node: &str, addr: &str, rtts_ms: &[f64], sent: u32) -> NodeProbe {
    let mut sorted = rtts_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied();
    let jitter = (rtts_ms.len() > 1)
        .then(|| rtts_ms.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (rtts_ms.len() - 1) as f64);
    NodeProbe {
        node: node.to_string(),
        addr: addr.to_string(),
        min_ms: sorted.first().copied(),
        median_ms: at(0.5),
        p95_ms: at(0.95),
        jitter_ms: jitter.or((rtts_ms.len() == 1).then_some(0.0)),
        loss: if sent == 0 { 0.0 } else { 1.0 - rtts_ms.len() as f64 / sent as f64 },
        sent,
        pick: false,
    }
}

/// Probes one beacon: `count` requests `interval` apart, replies matched by sequence number,
/// round trips in the order the probes were sent.
pub async fn probe_one(addr: SocketAddr, count: u32, interval: Duration, timeout: Duration, size: usize) -> Vec<f64> {
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else { return Vec::new() };
    if sock.connect(addr).await.is_err() {
        return Vec::new();
    }
    let epoch = Instant::now();
    let mut rtts: Vec<Option<f64>> = vec![None; count as usize];
    let mut buf = vec![0u8; 1500];
    let mut next_send = tokio::time::Instant::now();
    let mut sent = 0u32;
    let end = tokio::time::Instant::now() + interval * count + timeout;
    loop {
        let done = sent == count && rtts.iter().all(Option::is_some);
        if done || tokio::time::Instant::now() >= end {
            break;
        }
        let wake = if sent < count { next_send.min(end) } else { end };
        tokio::select! {
            _ = tokio::time::sleep_until(wake), if sent < count => {
                let p = Probe { seq: sent, sent_us: epoch.elapsed().as_micros() as u64 };
                let _ = sock.send(&encode_request(p, size)).await;
                sent += 1;
                next_send += interval;
            }
            r = sock.recv(&mut buf) => {
                let Ok(n) = r else { continue };
                let Some(reply) = parse_reply(&buf[..n]) else { continue };
                let now_us = epoch.elapsed().as_micros() as u64;
                if let Some(slot) = rtts.get_mut(reply.seq as usize)
                    && slot.is_none()
                    && reply.sent_us <= now_us
                {
                    *slot = Some((now_us - reply.sent_us) as f64 / 1000.0);
                }
            }
            _ = tokio::time::sleep_until(end), if sent == count => break,
        }
    }
    rtts.into_iter().flatten().collect()
}

impl ProbeCmd {
    /// Probes and prints.
    pub fn run(self) -> anyhow::Result<()> {
        let interval = humantime::parse_duration(&self.interval).context("--interval")?;
        let timeout = humantime::parse_duration(&self.timeout).context("--timeout")?;
        if !(1..=1000).contains(&self.count) || !(16..=1200).contains(&self.size) {
            bail!("--count must be 1..=1000 and --size 16..=1200");
        }
        if interval > Duration::from_secs(10) || timeout > Duration::from_secs(30) {
            bail!("--interval must be at most 10s and --timeout at most 30s");
        }
        let targets: Vec<(String, SocketAddr)> = if self.nodes.is_empty() {
            let list: NodeList = self.router.resolve()?.get("/v1/nodes").context("listing nodes (or pass --node)")?;
            list.nodes
                .iter()
                .filter(|n| n.health != "down")
                .map(|n| {
                    let addr =
                        n.heartbeat.probe_addr.parse().with_context(|| format!("{}: probe_addr", n.heartbeat.id))?;
                    Ok((n.heartbeat.id.clone(), addr))
                })
                .collect::<anyhow::Result<_>>()?
        } else {
            self.nodes
                .iter()
                .map(|s| {
                    let (id, addr) = s.split_once('=').unwrap_or((s, s));
                    Ok((id.to_string(), addr.parse().with_context(|| format!("--node {s}: not ip:port"))?))
                })
                .collect::<anyhow::Result<_>>()?
        };
        if targets.is_empty() {
            bail!("no nodes to probe");
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let bar = crate::fleet::spinner(interval * self.count + timeout, "probing");
        let mut results: Vec<NodeProbe> = rt.block_on(async {
            let tasks: Vec<_> = targets
                .iter()
                .map(|(id, addr)| {
                    let (id, addr) = (id.clone(), *addr);
                    let (count, size) = (self.count, self.size);
                    tokio::spawn(async move {
                        let rtts = probe_one(addr, count, interval, timeout, size).await;
                        summarize(&id, &addr.to_string(), &rtts, count)
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await?);
            }
            anyhow::Ok(out)
        })?;
        bar.finish_and_clear();
        results.sort_by(|a, b| {
            a.median_ms
                .unwrap_or(f64::INFINITY)
                .total_cmp(&b.median_ms.unwrap_or(f64::INFINITY))
                .then(a.node.cmp(&b.node))
        });
        if self.report {
            let report: Vec<serde_json::Value> = results
                .iter()
                .filter_map(|r| Some(serde_json::json!({"node": r.node, "rtt_ms": r.median_ms?, "loss": r.loss})))
                .collect();
            if report.is_empty() {
                bail!("no beacon answered; nothing to report");
            }
            let ack: serde_json::Value =
                self.router.resolve()?.post("/v1/probes", &serde_json::json!({ "results": report }))?;
            eprintln!("reported {} results to the router ({} unknown nodes)", ack["accepted"], ack["unknown_nodes"]);
        }
        let pick = match &self.module {
            Some(m) => {
                let qs: String = form_urlencoded::Serializer::new(String::new()).append_pair("module", m).finish();
                let route: Route = self.router.resolve()?.get(&format!("/v1/route?{qs}"))?;
                Some(route.node.id)
            }
            None => results.first().filter(|r| r.median_ms.is_some()).map(|r| r.node.clone()),
        };
        for r in &mut results {
            r.pick = pick.as_deref() == Some(r.node.as_str());
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&results)?);
        } else {
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|r| {
                    vec![
                        format!("{}{}", r.node, if r.pick { " *" } else { "" }),
                        r.addr.clone(),
                        ms(r.min_ms),
                        ms(r.median_ms),
                        ms(r.p95_ms),
                        ms(r.jitter_ms),
                        format!("{:.0}%", r.loss * 100.0),
                    ]
                })
                .collect();
            println!("{}", table(&["NODE", "BEACON", "MIN ms", "MEDIAN ms", "P95 ms", "JITTER ms", "LOSS"], &rows));
            let why = if self.module.is_some() { "the router's pick" } else { "lowest median" };
            println!("* {why}");
        }
        if results.iter().all(|r| r.median_ms.is_none()) {
            bail!("no beacon answered");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_of_round_trips() {
        let s = summarize("a", "1.2.3.4:5", &[10.0, 12.0, 11.0, 30.0], 5);
        assert_eq!((s.min_ms, s.median_ms, s.p95_ms), (Some(10.0), Some(12.0), Some(30.0)));
        assert_eq!(s.jitter_ms, Some((2.0 + 1.0 + 19.0) / 3.0));
        assert!((s.loss - 0.2).abs() < 1e-9);
        let none = summarize("b", "x", &[], 3);
        assert_eq!((none.median_ms, none.loss), (None, 1.0));
    }
}
