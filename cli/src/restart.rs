//! `outpost fleet restart`: a rolling restart that drops no match. Each node in turn is drained
//! (its rooms and players move to the others, then it stops), its supervisor (systemd's
//! `Restart=`) starts it again, and the command waits until the router sees it healthy with a new
//! boot id before going on to the next.

use crate::fleet::RouterOpts;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use outpost_proto::api::DrainReply;
use std::time::{Duration, Instant};

/// `outpost fleet ...`.
#[derive(Subcommand, Debug)]
pub enum FleetCmd {
    /// Restart nodes one at a time through a drain, so no match is dropped.
    Restart(Restart),
}

impl FleetCmd {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            FleetCmd::Restart(r) => r.run(),
        }
    }
}

/// `outpost fleet restart --nodes A,B,C`.
#[derive(Args, Debug)]
pub struct Restart {
    /// The nodes to restart, in this order (comma-separated ids).
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// Most time each node's drain may take.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    deadline: Duration,
    /// How long to wait for each node to come back healthy with a new boot id.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    wait: Duration,
    #[command(flatten)]
    router: RouterOpts,
}

impl Restart {
    fn run(self) -> anyhow::Result<()> {
        if self.deadline.is_zero() || self.deadline > Duration::from_secs(3600) {
            bail!("--deadline must be more than 0 and at most 1h, got {:?}", self.deadline);
        }
        let api = self.router.resolve()?;
        // Every node is known before the first one goes down.
        let known = api.fleet(&self.nodes)?;
        for id in &self.nodes {
            let Some(node) = known.iter().find(|n| &n.heartbeat.id == id) else { continue };
            let boot = node.heartbeat.boot_id.clone();
            if node.health != "healthy" {
                bail!("node {id} is {}: restart it by hand first", node.health);
            }
            let body = serde_json::json!({ "deadline_ms": self.deadline.as_millis() as u64 });
            let done: DrainReply = api
                .node(&node.heartbeat.admin_url)
                .post_waiting("/v1/drain", &body, self.deadline + Duration::from_secs(30))
                .with_context(|| format!("draining {id}"))?;
            println!(
                "{id}: drained ({} rooms moved, {} not) in {:.0} ms; waiting for it to come back",
                done.moved, done.failed, done.took_ms
            );
            if done.failed > 0 {
                bail!("{id}: {} room(s) could not move; stopping the restart here", done.failed);
            }
            let until = Instant::now() + self.wait;
            loop {
                let now = api.fleet(std::slice::from_ref(id)).ok().and_then(|n| n.into_iter().next());
                if let Some(n) = now
                    && n.health == "healthy"
                    && n.heartbeat.boot_id.is_some()
                    && n.heartbeat.boot_id != boot
                {
                    println!("{id}: back (boot {})", n.heartbeat.boot_id.unwrap_or_default());
                    break;
                }
                if Instant::now() >= until {
                    bail!("{id} did not come back healthy with a new boot id within {:?}", self.wait);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        println!("restarted {} node(s)", self.nodes.len());
        Ok(())
    }
}
