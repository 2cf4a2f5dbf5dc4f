//! `outpost`: the operator and player-side CLI. This file only dispatches; each subcommand lives
//! in its own module as a struct with `run()`. Benchmarks and their baselines are `outpost-bench`.

mod cert;
mod connect;
mod deploy;
mod drain;
mod modules;
mod nodes;
mod play;
mod restart;
mod rooms;
mod route;

use clap::{Parser, Subcommand};
use outpost_cli::{fleet, probe, ticket};

/// Outpost: run multiplayer game servers at the edge.
#[derive(Parser, Debug)]
#[command(name = "outpost", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Probe the candidate nodes for a module (or every node with `--all`); `--report` teaches the router.
    Probe(probe::ProbeCmd),
    /// What the router would choose for a client, and why.
    Route(route::RouteCmd),
    /// The fleet as the router sees it.
    Nodes(nodes::Nodes),
    /// Every node's live modules.
    Modules(modules::Modules),
    /// Every node's rooms (`rooms migrate ROOM --to NODE` moves one).
    Rooms(rooms::Rooms),
    /// Empty a node: move its rooms and players to other nodes, then stop it.
    Drain(drain::Drain),
    /// Fleet-wide operations (`fleet restart`: a rolling restart through drains).
    #[command(subcommand)]
    Fleet(restart::FleetCmd),
    /// Upload a module to the fleet in parallel (optionally proving it on a canary first).
    Deploy(deploy::Deploy),
    /// Join a room through the router as a real player: stdin lines out, messages in.
    Connect(connect::Connect),
    /// Make a fleet CA and the HTTPS certificates it signs for the router and nodes.
    Cert(cert::Cert),
    /// Serve the browser arena page (and the built TypeScript client) on 127.0.0.1.
    Play(play::Play),
    /// Make signing keys and join tickets (development and test helper).
    #[command(subcommand)]
    Ticket(ticket::TicketCmd),
}

fn main() {
    let cli = Cli::parse();
    outpost_cli::run_command("outpost", || match cli.command {
        Command::Ticket(t) => t.run(),
        Command::Cert(c) => c.run(),
        Command::Probe(p) => p.run(),
        Command::Route(r) => r.run(),
        Command::Nodes(n) => n.run(),
        Command::Modules(m) => m.run(),
        Command::Rooms(r) => r.run(),
        Command::Drain(d) => d.run(),
        Command::Fleet(f) => f.run(),
        Command::Deploy(d) => d.run(),
        Command::Connect(c) => c.run(),
        Command::Play(p) => p.run(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
