//! `outpost`: the operator and player-side CLI. This file only dispatches; each subcommand lives
//! in its own module as a struct with `run()`.

mod bench;
mod bench_core;
mod bench_forward;
mod bench_http;
mod bench_probe;
mod cert;
mod connect;
mod deploy;
mod echo_direct;
mod echo_server;
mod fleet;
mod hello_server;
mod modules;
mod nodes;
mod probe;
mod rooms;
mod route;
mod ticket;
mod wan;

use clap::{Parser, Subcommand};

/// Outpost: run multiplayer game servers at the edge.
#[derive(Parser, Debug)]
#[command(name = "outpost", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Probe every node's latency beacon; `--report` teaches the router.
    Probe(probe::ProbeCmd),
    /// What the router would choose for a client, and why.
    Route(route::RouteCmd),
    /// The fleet as the router sees it.
    Nodes(nodes::Nodes),
    /// Every node's live modules.
    Modules(modules::Modules),
    /// Every node's rooms.
    Rooms(rooms::Rooms),
    /// Upload a module to the fleet in parallel (optionally proving it on a canary first).
    Deploy(deploy::Deploy),
    /// Join a room through the router as a real player: stdin lines out, messages in.
    Connect(connect::Connect),
    /// Make a fleet CA and the HTTPS certificates it signs for the router and nodes.
    Cert(cert::Cert),
    /// Make signing keys and join tickets (development and test helper).
    #[command(subcommand)]
    Ticket(ticket::TicketCmd),
    /// Drive bots against a node and report throughput, RTT, drops and edge CPU.
    Bench(bench::Bench),
    /// Stream committed updates into a core region and report the durable rate (and an
    /// append-and-fsync baseline).
    BenchCore(bench_core::BenchCore),
    /// Drive commits through an edge into its core and report the durable end-to-end rate and
    /// commit-to-ack latency (and an append-and-fsync baseline).
    BenchForward(bench_forward::BenchForward),
    /// Compare the round trip `outpost probe` measures to a node's beacon with a bare UDP echo's.
    BenchProbe(bench_probe::BenchProbe),
    /// Load an HTTP endpoint (closed loop, keep-alive) and report requests/s and latency.
    BenchHttp(bench_http::BenchHttp),
    /// The minimal hyper server `bench-http` compares the router against.
    #[command(hide = true)]
    HelloServer(hello_server::HelloServer),
    /// A raw quinn datagram echo server: the transport baseline for `bench --baseline`.
    #[command(hide = true)]
    EchoServer(echo_server::EchoServer),
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let result = match cli.command {
        Command::Ticket(t) => t.run(),
        Command::Cert(c) => c.run(),
        Command::Probe(p) => p.run(),
        Command::Route(r) => r.run(),
        Command::Nodes(n) => n.run(),
        Command::Modules(m) => m.run(),
        Command::Rooms(r) => r.run(),
        Command::Deploy(d) => d.run(),
        Command::Connect(c) => c.run(),
        Command::Bench(b) => b.run(),
        Command::EchoServer(e) => e.run(),
        Command::BenchHttp(b) => b.run(),
        Command::BenchCore(b) => b.run(),
        Command::BenchForward(b) => b.run(),
        Command::BenchProbe(b) => b.run(),
        Command::HelloServer(h) => h.run(),
    };
    if let Err(e) = result {
        eprintln!("outpost: {e:#}");
        std::process::exit(1);
    }
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
