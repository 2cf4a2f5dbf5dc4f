//! `outpost nodes`: the fleet as the router sees it.

use crate::fleet::{RouterOpts, table};
use clap::Args;
use outpost_proto::api::NodeList;

/// `outpost nodes`.
#[derive(Args, Debug)]
pub struct Nodes {
    #[command(flatten)]
    router: RouterOpts,
    /// Print the router's JSON.
    #[arg(long)]
    json: bool,
}

impl Nodes {
    /// Prints the registry.
    pub fn run(self) -> anyhow::Result<()> {
        let list: NodeList = self.router.resolve()?.get("/v1/nodes")?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(());
        }
        let rows: Vec<Vec<String>> = list
            .nodes
            .iter()
            .map(|n| {
                let hb = &n.heartbeat;
                vec![
                    hb.id.clone(),
                    hb.region.clone(),
                    n.health.clone(),
                    format!("{:.1}s", n.age_s),
                    format!("{}/{}", hb.players, hb.capacity),
                    hb.rooms.to_string(),
                    format!("{:.2}", hb.cpu),
                    hb.modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(","),
                    hb.quic_addr.clone(),
                    // The first 8 hex digits tell a restarted node apart at a glance.
                    hb.boot_id.as_deref().map_or("-".into(), |b| b.chars().take(8).collect()),
                    hb.version.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                &["NODE", "REGION", "HEALTH", "AGE", "PLAYERS", "ROOMS", "CPU", "MODULES", "QUIC", "BOOT", "VERSION"],
                &rows
            )
        );
        Ok(())
    }
}
