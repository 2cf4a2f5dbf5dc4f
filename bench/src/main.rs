//! `outpost-bench`: the benchmark scenarios and their baselines, apart from the operator CLI (as
//! quinn keeps `perf/` apart). Each scenario runs real processes over real sockets and compares
//! against a baseline measured in the same run, so a ratio survives a noisy machine.
//!
//! # Layout
//! - [`players`]: bots against an edge node (relay, arena), with the raw quinn echo baseline.
//! - [`echo_server`], [`echo_direct`]: that baseline, on quinn or driven on quinn-proto directly.
//! - [`wan`]: the userspace delay relay bots use for paths longer than loopback.
//! - [`ingest`], [`forward`]: updates into a core region, directly or through an edge.
//! - [`http`], [`hello_server`]: a closed-loop HTTP load and the minimal hyper server it compares to.
//! - [`beacon`]: a node's probe beacon against a bare UDP echo.

mod beacon;
mod echo_direct;
mod echo_server;
mod forward;
mod hello_server;
mod http;
mod ingest;
mod players;
mod route_probed;
mod wan;

use clap::{Parser, Subcommand};

/// Outpost's benchmarks: each reports JSON with its baseline from the same run.
#[derive(Parser, Debug)]
#[command(name = "outpost-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Drive bots against a node and report throughput, RTT, drops and edge CPU.
    Players(players::Bench),
    /// Stream committed updates into a core region and report the durable rate (and an
    /// append-and-fsync baseline).
    Core(ingest::BenchCore),
    /// Drive commits through an edge into its core and report the durable end-to-end rate and
    /// commit-to-ack latency (and an append-and-fsync baseline).
    Forward(forward::BenchForward),
    /// Compare the round trip `outpost probe` measures to a node's beacon with a bare UDP echo's.
    Probe(beacon::BenchProbe),
    /// Load an HTTP endpoint (closed loop, keep-alive) and report requests/s and latency.
    Http(http::BenchHttp),
    /// Route the way a client does, probing the router's candidates first, and report how long
    /// that takes (p50/p99).
    RouteProbed(route_probed::RouteProbed),
    /// A UDP relay that delays datagrams toward one edge's beacon (the 60 ms probing scenario).
    UdpRelay(route_probed::UdpRelay),
    /// The minimal hyper server `http` compares the router against.
    HelloServer(hello_server::HelloServer),
    /// A raw quinn datagram echo server: the transport baseline for `players --baseline`.
    EchoServer(echo_server::EchoServer),
}

fn main() {
    let cli = Cli::parse();
    outpost_cli::run_command("outpost-bench", || match cli.command {
        Command::Players(b) => b.run(),
        Command::Core(b) => b.run(),
        Command::Forward(b) => b.run(),
        Command::Probe(b) => b.run(),
        Command::Http(b) => b.run(),
        Command::HelloServer(h) => h.run(),
        Command::RouteProbed(b) => b.run(),
        Command::UdpRelay(r) => r.run(),
        Command::EchoServer(e) => e.run(),
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
