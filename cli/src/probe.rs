//! `outpost probe`: measures the router's probe candidates for `--module` (or, with `--all`,
//! every node's beacon) in parallel and prints per node min, median, p95, jitter and loss;
//! `--report` tells the router, which learns from it.

use crate::fleet::{RouterOpts, table};
use anyhow::{Context as _, bail};
use clap::Args;
use outpost_proto::api::{CandidateList, NodeList, Route};
use std::net::SocketAddr;
use std::time::Duration;

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
    /// Probe the router's candidates for this module (`GET /v1/candidates`) and mark the node
    /// it would pick.
    #[arg(long)]
    module: Option<String>,
    /// Probe every registered node instead of the module's candidates.
    #[arg(long, conflicts_with = "nodes")]
    all: bool,
    /// Send the results to the router (`POST /v1/probes`).
    #[arg(long)]
    report: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub use outpost_client::probe::{NodeProbe, probe_one, summarize};

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
        let targets: Vec<(String, SocketAddr)> = if !self.nodes.is_empty() {
            self.nodes
                .iter()
                .map(|s| {
                    let (id, addr) = s.split_once('=').unwrap_or((s, s));
                    Ok((id.to_string(), addr.parse().with_context(|| format!("--node {s}: not ip:port"))?))
                })
                .collect::<anyhow::Result<_>>()?
        } else if !self.all {
            let Some(module) = &self.module else {
                bail!("give --module M to probe its candidates, --all for every node, or --node ADDR");
            };
            let qs: String = form_urlencoded::Serializer::new(String::new()).append_pair("module", module).finish();
            let list: CandidateList =
                self.router.resolve()?.get(&format!("/v1/candidates?{qs}")).context("asking for probe candidates")?;
            list.candidates
                .iter()
                .map(|c| Ok((c.node.clone(), c.probe_addr.parse().with_context(|| format!("{}: probe_addr", c.node))?)))
                .collect::<anyhow::Result<_>>()?
        } else {
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
