//! `core-region` entry point: parse and check config, then [`outpost_core::run`] until
//! SIGTERM/SIGINT.

use outpost_net::service;

fn main() {
    let config = service::start::<outpost_core::config::Args>();
    let runtime = service::runtime("core-region", None);
    service::run("core-region", runtime, outpost_core::run(config, service::shutdown_signal()));
}
