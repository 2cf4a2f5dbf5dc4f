//! `edge-node` entry point: parse and validate config, then [`edge_node::run`] until SIGTERM/SIGINT.

use edge_node::config::Args;

/// mimalloc instead of glibc's malloc. The node's hot path allocates on one thread and frees on
/// another: a player's message is framed on the async runtime and consumed by a room worker, and
/// a room's datagrams are framed on the worker and freed by quinn on the runtime. glibc handles that
/// pattern poorly. In alternated `outpost bench` runs of the arena scenario, this allocator took
/// the node's CPU per player-tick down by about 7 % (BENCHMARKS.md, session 6).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    edge_node::telemetry::init_logging();
    let config = match Args::load_from(std::env::args_os())
        .map_err(|e| e.to_string())
        .and_then(|a| a.validate().map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            // clap's own errors (--help, --version, unknown flag) print themselves fully.
            eprintln!("edge-node: {}", e.trim_end());
            std::process::exit(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(config.runtime_threads);
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("edge-node: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(edge_node::run(config, shutdown_signal()));
    if let Err(e) = result {
        eprintln!("edge-node: {e:#}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
