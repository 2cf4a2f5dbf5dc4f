//! Configuration: flags, `OUTPOST_*` env, and an optional TOML file (`--config`), validated before
//! anything binds; a bad value is one line naming the field.

use clap::Parser;
use outpost_net::service::CommonArgs;
use outpost_proto::config::{ConfigError, bad, parse_duration};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// `core-region`: keeps the authoritative state the edges commit.
#[derive(Parser, Debug, Clone, Serialize, Deserialize)]
#[command(name = "core-region", version, about)]
pub struct Args {
    /// The flags every server takes.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
    /// Edge link QUIC address (port 0 picks a free port).
    #[arg(long, env = "OUTPOST_LISTEN_QUIC", default_value = "0.0.0.0:7710")]
    pub listen_quic: SocketAddr,
    /// HTTP reads and admin (loopback by default: plain HTTP carries the token).
    #[arg(long, env = "OUTPOST_LISTEN_HTTP", default_value = "127.0.0.1:7711")]
    pub listen_http: SocketAddr,
    /// `embedded` (a single-file store in the data dir) or a PostgreSQL URL
    /// (`postgres://user@host/db`, or a libpq `key=value` string).
    #[arg(long, env = "OUTPOST_STORE", default_value = "embedded", hide_env_values = true)]
    pub store: String,
    /// Memory the embedded store may use to cache its file, MiB. Reads of keys outside it go to
    /// the disk (the page cache). Ignored with PostgreSQL.
    #[arg(long, env = "OUTPOST_STORE_CACHE_MIB", default_value_t = 64)]
    pub store_cache_mib: usize,
    /// Largest link frame (a batch), bytes.
    #[arg(long, env = "OUTPOST_MAX_FRAME_BYTES", default_value_t = 8 << 20)]
    pub max_frame_bytes: usize,
    /// Most keys one prefix read returns.
    #[arg(long, env = "OUTPOST_MAX_SCAN", default_value_t = 1000)]
    pub max_scan: usize,
    /// How long a new link has to say hello.
    #[arg(long, env = "OUTPOST_HELLO_TIMEOUT", default_value = "5s")]
    pub hello_timeout: String,
    /// QUIC idle timeout of edge links.
    #[arg(long, env = "OUTPOST_IDLE_TIMEOUT", default_value = "30s")]
    pub idle_timeout: String,
    /// Most edge links (QUIC connections) at once; more are refused at the handshake.
    #[arg(long, env = "OUTPOST_MAX_LINKS", default_value_t = 1024)]
    pub max_links: usize,
    /// Most links at once that have not yet said a valid hello. Each holds a task and a few KiB
    /// until its hello deadline, and anyone who can reach the port can open one.
    #[arg(long, env = "OUTPOST_MAX_PENDING_LINKS", default_value_t = 64)]
    pub max_pending_links: usize,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The raw arguments.
    pub args: Args,
    /// HTTPS for the reads API, when `--tls-cert`/`--tls-key` are given.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Hello timeout.
    pub hello_timeout: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// How long a reader may take over a request's headers and its body.
    pub http_timeouts: outpost_net::http::Timeouts,
}

impl outpost_net::service::Service for Args {
    const NAME: &'static str = "core-region";
    const DATA_DIR: &'static str = "data/core";
    type Config = Config;
    fn common(&mut self) -> &mut CommonArgs {
        &mut self.common
    }
    fn check(self) -> Result<Config, ConfigError> {
        self.validate()
    }
}

impl Args {
    /// Parses the process arguments (flags, env), then fills unset fields from `--config`.
    pub fn load_from<I, T>(argv: I) -> Result<Args, anyhow::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        outpost_net::service::load_args(argv)
    }

    /// Checks every field.
    pub fn validate(self) -> Result<Config, ConfigError> {
        if self.store != "embedded" && !self.store.starts_with("postgres") && !self.store.contains('=') {
            return Err(bad("store", "must be `embedded` or a PostgreSQL URL (postgres://...)"));
        }
        if !(64 << 10..=256 << 20).contains(&self.max_frame_bytes) {
            return Err(bad("max_frame_bytes", "must be between 65536 and 268435456"));
        }
        if !(1..=100_000).contains(&self.max_scan) {
            return Err(bad("max_scan", "must be between 1 and 100000"));
        }
        if !(1..=1 << 20).contains(&self.store_cache_mib) {
            return Err(bad("store_cache_mib", "must be between 1 and 1048576"));
        }
        if !(1..=100_000).contains(&self.max_links) {
            return Err(bad("max_links", "must be between 1 and 100000"));
        }
        if !(1..=self.max_links).contains(&self.max_pending_links) {
            return Err(bad("max_pending_links", "must be between 1 and max_links"));
        }
        let hello_timeout = parse_duration("hello_timeout", &self.hello_timeout)?;
        let idle_timeout = parse_duration("idle_timeout", &self.idle_timeout)?;
        if idle_timeout < Duration::from_secs(1) {
            return Err(bad("idle_timeout", "must be at least 1s"));
        }
        let tls = self.common.https()?;
        let http_timeouts = self.common.http_timeouts(crate::HEADER_READ_TIMEOUT)?;
        Ok(Config { args: self, tls, hello_timeout, idle_timeout, http_timeouts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        let load = |argv: &[&str]| {
            let mut full = vec!["core-region"];
            full.extend_from_slice(argv);
            Args::load_from(full).map_err(|e| e.to_string())?.validate().map_err(|e| e.to_string())
        };
        assert!(load(&[]).is_ok());
        assert!(load(&["--store", "postgres://u@h/db"]).is_ok());
        for (argv, field) in [
            (vec!["--store", "mysql://x"], "store"),
            (vec!["--max-frame-bytes", "1"], "max_frame_bytes"),
            (vec!["--hello-timeout", "soon"], "hello_timeout"),
            (vec!["--max-scan", "0"], "max_scan"),
            (vec!["--store-cache-mib", "0"], "store_cache_mib"),
            (vec!["--max-links", "0"], "max_links"),
            (vec!["--max-links", "4", "--max-pending-links", "5"], "max_pending_links"),
            (vec!["--max-pending-links", "0"], "max_pending_links"),
            (vec!["--body-read-timeout", "1ms"], "body_read_timeout"),
        ] {
            let e = load(&argv).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
    }
}
