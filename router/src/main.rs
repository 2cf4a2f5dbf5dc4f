//! `region-router` entry point: parse and check config, then [`outpost_router::run`] until
//! SIGTERM/SIGINT.

use outpost_net::service;

fn main() {
    let config = service::start::<outpost_router::config::Args>();
    let runtime = service::runtime("region-router", None);
    service::run("region-router", runtime, outpost_router::run(config, service::shutdown_signal()));
}
