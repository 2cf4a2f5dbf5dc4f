//! `edge-node` entry point: parse and validate config, then [`edge_node::run`] until SIGTERM/SIGINT.

use edge_node::config::Args;

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
