//! `outpost modules`: every node's live modules, through the admin APIs the router knows.

use crate::fleet::{RouterOpts, print_per_node};
use clap::Args;
use outpost_proto::api::ModuleInfo;

/// `outpost modules`.
#[derive(Args, Debug)]
pub struct Modules {
    #[command(flatten)]
    router: RouterOpts,
    /// `all` (default) or node ids, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    nodes: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Modules {
    /// Lists modules per node; a node that cannot be read is a row with its error and a non-zero exit.
    pub fn run(self) -> anyhow::Result<()> {
        let gathered = self.router.resolve()?.per_node::<Vec<ModuleInfo>>(&self.nodes, "/v1/modules")?;
        print_per_node(gathered, self.json, "modules", &["NODE", "MODULE", "VERSION", "SIZE", "ROOMS"], |m| {
            vec![m.name.clone(), m.version.chars().take(12).collect(), format!("{} B", m.size), m.rooms.to_string()]
        })
    }
}
