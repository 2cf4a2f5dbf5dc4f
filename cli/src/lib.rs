//! What the `outpost` CLI's commands share with `outpost-bench`: the fleet's HTTP APIs
//! ([`fleet`]), beacon probing ([`probe`]) and tickets ([`ticket`]). The binary (`main.rs`) holds
//! the operator and player commands, one file each.

pub mod fleet;
pub mod probe;
pub mod ticket;

/// How a command-line tool of this project runs a command: logging on stderr at `warn` unless
/// `RUST_LOG` says otherwise, then the command; an error prints its whole chain on one line,
/// after the tool's name, and exits 1.
pub fn run_command(tool: &str, command: impl FnOnce() -> anyhow::Result<()>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,web_transport_quinn=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    if let Err(e) = command() {
        eprintln!("{tool}: {e:#}");
        std::process::exit(1);
    }
}
