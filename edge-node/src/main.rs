//! `edge-node` entry point: parse and check config, then [`edge_node::run`] until SIGTERM/SIGINT,
//! on a runtime of `--runtime-threads` workers.

use outpost_net::service;

/// mimalloc instead of glibc's malloc. The node's hot path allocates on one thread and frees on
/// another: a player's message is framed on the async runtime and consumed by a room worker, and
/// a room's datagrams are framed on the worker and freed by quinn on the runtime. glibc handles that
/// pattern poorly. In alternated `outpost bench` runs of the arena scenario, this allocator took
/// the node's CPU per player-tick down by about 7 % (BENCHMARKS.md, session 6).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let config = service::start::<edge_node::config::Args>();
    let runtime = service::runtime("edge-node", Some(config.runtime_threads));
    service::run("edge-node", runtime, edge_node::run(config, service::shutdown_signal()));
}
