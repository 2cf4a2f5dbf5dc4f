//! `outpost rooms`: every node's rooms, through the admin APIs the router knows.

use crate::fleet::{RouterOpts, print_per_node};
use clap::Args;
use outpost_proto::api::RoomInfo;

/// `outpost rooms`.
#[derive(Args, Debug)]
pub struct Rooms {
    #[command(flatten)]
    router: RouterOpts,
    /// `all` (default) or node ids, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    nodes: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Rooms {
    /// Lists rooms per node; a node that cannot be read is a row with its error and a non-zero exit.
    pub fn run(self) -> anyhow::Result<()> {
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
