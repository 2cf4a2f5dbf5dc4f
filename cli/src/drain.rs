//! `outpost drain NODE`: empties a node before it is taken down: it refuses joins, moves every
//! room (with its players) to the best other node, waits for the core to have every commit, and
//! stops.

use crate::fleet::{RouterOpts, table};
use anyhow::bail;
use clap::Args;
use outpost_proto::api::DrainReply;
use std::time::Duration;

/// `outpost drain`.
#[derive(Args, Debug)]
pub struct Drain {
    /// The node's id.
    node: String,
    /// Most time the drain may take; what has not moved by then is closed with `node-shutdown`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    deadline: Duration,
    #[command(flatten)]
    router: RouterOpts,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Drain {
    /// Drains the node; a room that could not move makes the exit status non-zero.
    pub fn run(self) -> anyhow::Result<()> {
        if self.deadline.is_zero() || self.deadline > Duration::from_secs(3600) {
            bail!("--deadline must be more than 0 and at most 1h, got {:?}", self.deadline);
        }
        let api = self.router.resolve()?;
        let Some(node) = api.fleet(std::slice::from_ref(&self.node))?.into_iter().next() else {
            bail!("node {:?} is not registered with the router", self.node);
        };
        let body = serde_json::json!({ "deadline_ms": self.deadline.as_millis() as u64 });
        let done: DrainReply = api.node(&node.heartbeat.admin_url).post_waiting(
            "/v1/drain",
            &body,
            self.deadline + Duration::from_secs(30),
        )?;
        if self.json {
            println!("{}", serde_json::to_string(&done)?);
        } else {
            let rows: Vec<Vec<String>> = done
                .rooms
                .iter()
                .map(|r| {
                    vec![
                        r.room.clone(),
                        r.players.to_string(),
                        r.to.clone().unwrap_or_else(|| "-".into()),
                        r.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            println!("{}", table(&["ROOM", "PLAYERS", "MOVED TO", "ERROR"], &rows));
            println!(
                "{}: {} rooms moved, {} not, commits {} acked by the core, in {:.0} ms; the node stopped",
                done.node,
                done.moved,
                done.failed,
                if done.acked { "all" } else { "not all" },
                done.took_ms
            );
        }
        if done.failed > 0 {
            bail!("{} room(s) could not move", done.failed);
        }
        Ok(())
    }
}
