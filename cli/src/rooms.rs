//! `outpost rooms`: every node's rooms, through the admin APIs the router knows; `outpost rooms
//! migrate` moves one to another node.

use crate::fleet::{RouterOpts, print_per_node};
use anyhow::bail;
use clap::{Args, Subcommand};
use outpost_proto::api::{MigrateReply, RoomInfo};

/// `outpost rooms`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Rooms {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    router: RouterOpts,
    /// `all` (default) or node ids, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    nodes: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Moves a live room and its players to another node (its players follow on their own).
    Migrate(Migrate),
}

/// `outpost rooms migrate ROOM --to NODE`.
#[derive(Args, Debug)]
struct Migrate {
    /// The room's id.
    room: String,
    /// The node to move it to, or `auto` (the least-loaded healthy node with room for it).
    #[arg(long)]
    to: String,
    #[command(flatten)]
    router: RouterOpts,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Migrate {
    fn run(self) -> anyhow::Result<()> {
        let api = self.router.resolve()?;
        let all = vec!["all".to_string()];
        let gathered = api.per_node::<Vec<RoomInfo>>(&all, "/v1/rooms")?;
        let Some(id) = gathered.answers.iter().find_map(|(n, r)| {
            r.as_ref().ok().filter(|rooms| rooms.iter().any(|x| x.room == self.room)).map(|_| n.clone())
        }) else {
            bail!("no node lists room {:?}", self.room);
        };
        let Some(node) = api.fleet(&all)?.into_iter().find(|n| n.heartbeat.id == id) else {
            bail!("node {id} left the registry");
        };
        let done: MigrateReply = api
            .node(&node.heartbeat.admin_url)
            .post(&format!("/v1/rooms/{}/migrate", self.room), &serde_json::json!({ "to": self.to }))?;
        if self.json {
            println!("{}", serde_json::to_string(&done)?);
        } else {
            println!(
                "room {} moved from {} to {} with {} players (paused {:.1} ms before the target took it)",
                done.room, done.from, done.to, done.players, done.paused_ms
            );
        }
        Ok(())
    }
}

impl Rooms {
    /// Lists rooms per node; a node that cannot be read is a row with its error and a non-zero exit.
    pub fn run(self) -> anyhow::Result<()> {
        if let Some(Action::Migrate(m)) = self.action {
            return m.run();
        }
        let gathered = self.router.resolve()?.per_node::<Vec<RoomInfo>>(&self.nodes, "/v1/rooms")?;
        let header = ["NODE", "ROOM", "MODULE", "STATE", "PLAYERS", "TICK P99"];
        print_per_node(gathered, self.json, "rooms", &header, |r| {
            vec![
                r.room.clone(),
                r.module.clone(),
                r.state.clone(),
                format!("{}/{}", r.players, r.max_players),
                format!("{:.0} µs", r.tick_p99_us),
            ]
        })
    }
}
