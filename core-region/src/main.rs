//! `core-region` entry point: parse, log, validate, run, stop on SIGTERM or Ctrl-C.

use outpost_core::config::Args;

#[tokio::main]
async fn main() {
    outpost_core::telemetry::init_logging();
    let config = match Args::load_from(std::env::args_os()).and_then(|a| Ok(a.validate()?)) {
        Ok(c) => c,
        Err(e) => {
            if let Some(clap_err) = e.downcast_ref::<clap::Error>() {
                clap_err.exit();
            }
            eprintln!("core-region: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = outpost_core::run(config, shutdown_signal()).await {
        eprintln!("core-region: {e:#}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
