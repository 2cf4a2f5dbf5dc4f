//! `outpost deploy`: uploads a module to the fleet's nodes in parallel through their admin APIs
//! (the addresses the router knows), one result line per node, non-zero exit naming every node
//! that failed. `--canary` first deploys to one node and proves the module there (a room is
//! created, signalled and closed); if that fails, no other node is touched.

use crate::fleet::{Api, RouterOpts, table};
use anyhow::{Context as _, bail};
use clap::Args;
use outpost_proto::api::{ModuleInfo, NodeStatus, RoomCreated};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// `outpost deploy`.
#[derive(Args, Debug)]
pub struct Deploy {
    #[command(flatten)]
    router: RouterOpts,
    /// The component to upload.
    file: PathBuf,
    /// Module name on the nodes.
    #[arg(long)]
    name: String,
    /// `all` (default) or node ids, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    nodes: Vec<String>,
    /// Deploy to the first node first, create and signal a room there, and stop if that fails.
    #[arg(long)]
    canary: bool,
    /// What the canary room is signalled with.
    #[arg(long, default_value = "state")]
    canary_signal: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One node's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct NodeResult {
    /// Node id.
    pub node: String,
    /// Whether the module is live there.
    pub ok: bool,
    /// The live version (sha256), when ok.
    pub version: Option<String>,
    /// Upload + compile time, ms.
    pub ms: f64,
    /// What went wrong.
    pub error: Option<String>,
    /// Whether this was the canary.
    pub canary: bool,
}

fn upload(fleet: &Api, node: &NodeStatus, name: &str, bytes: &[u8]) -> NodeResult {
    let started = Instant::now();
    let api = fleet.node(&node.heartbeat.admin_url);
    let r: anyhow::Result<ModuleInfo> = api.put_bytes(&format!("/v1/modules/{name}"), bytes);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let id = node.heartbeat.id.clone();
    match r {
        Ok(info) => NodeResult { node: id, ok: true, version: Some(info.version), ms, error: None, canary: false },
        Err(e) => NodeResult { node: id, ok: false, version: None, ms, error: Some(format!("{e:#}")), canary: false },
    }
}

/// Proves a module on a node: a room is created, signalled once and closed.
fn prove(fleet: &Api, node: &NodeStatus, name: &str, signal: &str) -> anyhow::Result<()> {
    let api = fleet.node(&node.heartbeat.admin_url);
    let room = format!("canary-{}", hex::encode(rand::random::<[u8; 4]>()));
    let _created: RoomCreated = api
        .post("/v1/rooms", &serde_json::json!({"module": name, "room": room}))
        .context("creating the canary room")?;
    let signalled = api.post_bytes(&format!("/v1/rooms/{room}/signal"), signal.as_bytes()).context("signalling it");
    let closed = api.delete(&format!("/v1/rooms/{room}"));
    signalled?;
    closed.context("closing the canary room")
}

impl Deploy {
    /// Deploys and reports.
    pub fn run(self) -> anyhow::Result<()> {
        outpost_proto::ids::check_name("module name", &self.name)?;
        let bytes = std::fs::read(&self.file).with_context(|| format!("reading {}", self.file.display()))?;
        let fleet = self.router.resolve()?;
        let nodes = fleet.fleet(&self.nodes)?;
        if nodes.is_empty() {
            bail!("no nodes to deploy to");
        }
        let started = Instant::now();
        let mut results = Vec::new();
        let mut rest: &[NodeStatus] = &nodes;
        if self.canary {
            let first = &nodes[0];
            let mut r = upload(&fleet, first, &self.name, &bytes);
            r.canary = true;
            if r.ok
                && let Err(e) = prove(&fleet, first, &self.name, &self.canary_signal)
            {
                r.ok = false;
                r.error = Some(format!("canary room failed: {e:#}"));
            }
            let failed = !r.ok;
            results.push(r);
            if failed {
                self.print(&results, started)?;
                bail!(
                    "canary {} failed; the rollout stopped before {} other node(s)",
                    nodes[0].heartbeat.id,
                    nodes.len() - 1
                );
            }
            rest = &nodes[1..];
        }
        let bar = crate::fleet::spinner(std::time::Duration::from_secs(2), "uploading");
        let (fleet_ref, name, bytes_ref) = (&fleet, self.name.as_str(), bytes.as_slice());
        let parallel: Vec<NodeResult> = std::thread::scope(|s| {
            let handles: Vec<_> = rest.iter().map(|n| s.spawn(move || upload(fleet_ref, n, name, bytes_ref))).collect();
            handles
                .into_iter()
                .zip(rest)
                .map(|(h, n)| {
                    h.join().unwrap_or_else(|_| NodeResult {
                        node: n.heartbeat.id.clone(),
                        ok: false,
                        version: None,
                        ms: 0.0,
                        error: Some("upload thread panicked".into()),
                        canary: false,
                    })
                })
                .collect()
        });
        bar.finish_and_clear();
        results.extend(parallel);
        self.print(&results, started)?;
        let failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.node.as_str()).collect();
        if !failed.is_empty() {
            bail!("deploy failed on {} of {} nodes: {}", failed.len(), results.len(), failed.join(", "));
        }
        Ok(())
    }

    fn print(&self, results: &[NodeResult], started: Instant) -> anyhow::Result<()> {
        if self.json {
            let total_ms = started.elapsed().as_secs_f64() * 1000.0;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"results": results, "total_ms": total_ms}))?
            );
            return Ok(());
        }
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                vec![
                    format!("{}{}", r.node, if r.canary { " (canary)" } else { "" }),
                    if r.ok { "ok".into() } else { "FAILED".into() },
                    r.version.as_deref().map_or("-".into(), |v| v.chars().take(12).collect()),
                    format!("{:.0} ms", r.ms),
                    r.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        println!("{}", table(&["NODE", "RESULT", "VERSION", "TIME", "ERROR"], &rows));
        println!("{} node(s) in {:.2} s", results.len(), started.elapsed().as_secs_f64());
        Ok(())
    }
}
