//! Configuration: flags, `OUTPOST_*` env, and an optional TOML file (`--config`), in that order of
//! precedence. Everything is validated before anything is bound; a bad value is one line naming
//! the field.

use crate::estimate::GeoModel;
use crate::learn::LearnLimits;
use clap::Parser;
use ipnet::IpNet;
use outpost_net::service::CommonArgs;
use outpost_proto::config::{ConfigError, bad, parse_duration};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `region-router`: sends each player to the healthy edge node with the lowest latency.
#[derive(Parser, Debug, Clone, Serialize, Deserialize)]
#[command(name = "region-router", version, about)]
pub struct Args {
    /// The flags every server takes.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
    /// HTTP address (port 0 picks a free port).
    #[arg(long, env = "OUTPOST_LISTEN_HTTP", default_value = "0.0.0.0:7700")]
    pub listen_http: SocketAddr,
    /// Secret shared with the game's login service: routes then need
    /// `auth=hex(HMAC-SHA256(secret, player))`.
    #[arg(long, env = "OUTPOST_PLAYER_AUTH_SECRET", hide_env_values = true)]
    pub player_auth_secret: Option<String>,
    /// File holding the player-auth secret (kept out of the process list).
    #[arg(long, env = "OUTPOST_PLAYER_AUTH_SECRET_FILE")]
    pub player_auth_secret_file: Option<PathBuf>,
    /// MaxMind DB city file (repeatable; e.g. an IPv4 and an IPv6 file). MaxMind City and the
    /// flat DB-IP / ip-location-db layouts are both read.
    #[arg(long, env = "OUTPOST_GEOIP", value_delimiter = ',')]
    #[serde(default)]
    pub geoip: Vec<PathBuf>,
    /// GeoIP answers cached, addresses.
    #[arg(long, env = "OUTPOST_GEOIP_CACHE", default_value_t = 100_000)]
    pub geoip_cache: u64,
    /// Proxies (CIDR or address, repeatable) whose `X-Forwarded-For` is believed.
    #[arg(long, env = "OUTPOST_TRUSTED_PROXY", value_delimiter = ',')]
    #[serde(default)]
    pub trusted_proxy: Vec<String>,
    /// How long a ticket is valid.
    #[arg(long, env = "OUTPOST_TICKET_TTL", default_value = "60s")]
    pub ticket_ttl: String,
    /// Alternates listed after the chosen node.
    #[arg(long, env = "OUTPOST_ALTERNATES", default_value_t = 2)]
    pub alternates: usize,
    /// Most nodes registered at once.
    #[arg(long, env = "OUTPOST_MAX_NODES", default_value_t = 10_000)]
    pub max_nodes: usize,
    /// Forget a node that has been down this long.
    #[arg(long, env = "OUTPOST_FORGET_AFTER", default_value = "1h")]
    pub forget_after: String,
    /// IPv4 prefix length measurements are learned under.
    #[arg(long, env = "OUTPOST_PREFIX_V4", default_value_t = 24)]
    pub prefix_v4: u8,
    /// IPv6 prefix length measurements are learned under.
    #[arg(long, env = "OUTPOST_PREFIX_V6", default_value_t = 48)]
    pub prefix_v6: u8,
    /// Size of a geo cell, degrees (1° of latitude is about 111 km).
    #[arg(long, env = "OUTPOST_CELL_DEG", default_value_t = 1.0)]
    pub cell_deg: f64,
    /// Measurements older than this no longer count; routes fall back to geography.
    #[arg(long, env = "OUTPOST_PROBE_MAX_AGE", default_value = "30m")]
    pub probe_max_age: String,
    /// Network prefixes with measurements kept.
    #[arg(long, env = "OUTPOST_PROBE_PREFIXES", default_value_t = 100_000)]
    pub probe_prefixes: u64,
    /// Geo cells with measurements kept.
    #[arg(long, env = "OUTPOST_PROBE_CELLS", default_value_t = 20_000)]
    pub probe_cells: u64,
    /// Results in one probe batch.
    #[arg(long, env = "OUTPOST_PROBE_MAX_RESULTS", default_value_t = 64)]
    pub probe_max_results: usize,
    /// Milliseconds added to a measured RTT per unit of loss.
    #[arg(long, env = "OUTPOST_LOSS_PENALTY_MS", default_value_t = 200.0)]
    pub loss_penalty_ms: f64,
    /// How much longer real routes are than the great circle.
    #[arg(long, env = "OUTPOST_PATH_INFLATION", default_value_t = 1.5)]
    pub path_inflation: f64,
    /// Fixed RTT every path pays in the geo model, ms.
    #[arg(long, env = "OUTPOST_GEO_OVERHEAD_MS", default_value_t = 5.0)]
    pub geo_overhead_ms: f64,
    /// Routes and probe reports per second from one client address (admin-token requests are
    /// not limited: tools and aggregators speak for many clients).
    #[arg(long, env = "OUTPOST_CLIENT_RATE", default_value_t = 5.0)]
    pub client_rate: f64,
    /// Burst of routes and probe reports from one client address.
    #[arg(long, env = "OUTPOST_CLIENT_BURST", default_value_t = 20.0)]
    pub client_burst: f64,
    /// Client addresses whose rate is tracked (the least recently seen are forgotten).
    #[arg(long, env = "OUTPOST_CLIENT_TABLE", default_value_t = 200_000)]
    pub client_table: u64,
    /// Routes and probe reports per second from one network (an IPv4 /24 or an IPv6 /64), all
    /// its addresses together: an attacker holding a network has every address in it.
    #[arg(long, env = "OUTPOST_PREFIX_RATE", default_value_t = 50.0)]
    pub prefix_rate: f64,
    /// Burst of routes and probe reports from one network.
    #[arg(long, env = "OUTPOST_PREFIX_BURST", default_value_t = 200.0)]
    pub prefix_burst: f64,
    /// With `--player-auth-secret`: routes per second for one player id, whatever the source
    /// (a valid player/auth pair replayed from many addresses is still one player).
    #[arg(long, env = "OUTPOST_PLAYER_ROUTE_RATE", default_value_t = 0.5)]
    pub player_route_rate: f64,
    /// With `--player-auth-secret`: burst of routes for one player id.
    #[arg(long, env = "OUTPOST_PLAYER_ROUTE_BURST", default_value_t = 10.0)]
    pub player_route_burst: f64,
    /// The most of a node's free places this router's unredeemed tickets may hold (0 to 1). A
    /// route reserves a place until the node reports the ticket redeemed or it expires; with
    /// several routers per fleet, give each its part.
    #[arg(long, env = "OUTPOST_RESERVE_SHARE", default_value_t = 0.5)]
    pub reserve_share: f64,
    /// A client must send a request's headers within this time, or the connection is closed
    /// (so slow or idle half-requests cannot pile up).
    #[arg(long, env = "OUTPOST_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: String,
    /// Origins whose browser pages may call the public routes (route, candidates, probes,
    /// pubkey): exact origins like `https://game.example.com`, repeatable or comma-separated, or
    /// `*` for any. None by default.
    #[arg(long, env = "OUTPOST_CORS_ORIGIN", value_delimiter = ',')]
    #[serde(default)]
    pub cors_origin: Vec<String>,
    /// This router's name among its peers (default: its HTTP address).
    #[arg(long, env = "OUTPOST_ID")]
    pub id: Option<String>,
    /// Nodes a client is asked to measure (`GET /v1/candidates`).
    #[arg(long, env = "OUTPOST_CANDIDATES", default_value_t = 5)]
    pub candidates: usize,
    /// Most candidates from one `region` label, so the list reaches into neighbouring regions
    /// where the estimate may be wrong.
    #[arg(long, env = "OUTPOST_CANDIDATES_PER_REGION", default_value_t = 2)]
    pub candidates_per_region: usize,
    /// Most players in one `POST /v1/matches`.
    #[arg(long, env = "OUTPOST_MAX_MATCH_PLAYERS", default_value_t = 100)]
    pub max_match_players: usize,
    /// File holding the matchmaker's token: it may place matches (`POST /v1/matches`) and
    /// nothing else. Without it, only the admin token places matches.
    #[arg(long, env = "OUTPOST_MATCHMAKER_TOKEN_FILE")]
    pub matchmaker_token_file: Option<PathBuf>,
    /// The ticket signing key (Ed25519, the `outpost ticket keygen` format). Routers of one
    /// fleet share one: generate it once and copy it. Default: `ticket-key` in the data dir,
    /// made on first start.
    #[arg(long, env = "OUTPOST_TICKET_KEY")]
    pub ticket_key: Option<PathBuf>,
    /// The other routers of this fleet (comma-separated URLs): probe reports and measured
    /// routes made here are forwarded to each, so every router learns them.
    #[arg(long, env = "OUTPOST_PEER", value_delimiter = ',')]
    #[serde(default)]
    pub peer: Vec<String>,
    /// File holding the token routers of this fleet forward to each other with (not the
    /// cluster token, which every edge holds). Required with `--peer`; a router without it
    /// takes no forwards.
    #[arg(long, env = "OUTPOST_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed `https://` peers' certificates (default: the public web's
    /// roots).
    #[arg(long, env = "OUTPOST_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
    /// Reports waiting for each peer; beyond it, new ones are dropped and counted.
    #[arg(long, env = "OUTPOST_PEER_QUEUE", default_value_t = 4096)]
    pub peer_queue: usize,
    /// Largest request body (heartbeats, probe batches), bytes.
    #[arg(long, env = "OUTPOST_MAX_BODY_BYTES", default_value_t = 64 << 10)]
    pub max_body_bytes: usize,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The raw arguments.
    pub args: Args,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted: Vec<IpNet>,
    /// Ticket lifetime.
    pub ticket_ttl: Duration,
    /// When a down node is forgotten.
    pub forget_after: Duration,
    /// Learning bounds.
    pub learn: LearnLimits,
    /// The geo RTT model.
    pub geo: GeoModel,
    /// The player-auth secret, if any.
    pub player_auth_secret: Option<Vec<u8>>,
    /// How long a client may take over a request's headers and its body.
    pub http_timeouts: outpost_net::http::Timeouts,
    /// HTTPS, when `--tls-cert`/`--tls-key` are given.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The matchmaker's token, if any.
    pub matchmaker_token: Option<String>,
    /// The token peers forward with, if any.
    pub peer_token: Option<String>,
    /// The peer routers.
    pub peers: Vec<crate::peer::PeerTarget>,
    /// Which pages may call the public routes.
    pub cors: crate::http::Cors,
}

impl outpost_net::service::Service for Args {
    const NAME: &'static str = "region-router";
    const DATA_DIR: &'static str = "data/router";
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

    /// Checks every field and derives the runtime settings.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let tls = self.common.https()?;
        let trusted = crate::addr::parse_cidrs(&self.trusted_proxy).map_err(|e| bad("trusted_proxy", e))?;
        let ticket_ttl = parse_duration("ticket_ttl", &self.ticket_ttl)?;
        if !(Duration::from_secs(5)..=Duration::from_secs(3600)).contains(&ticket_ttl) {
            return Err(bad("ticket_ttl", "must be between 5s and 1h"));
        }
        let forget_after = parse_duration("forget_after", &self.forget_after)?;
        if forget_after < Duration::from_secs(1) {
            return Err(bad("forget_after", "must be at least 1s"));
        }
        let max_age = parse_duration("probe_max_age", &self.probe_max_age)?;
        if max_age < Duration::from_secs(1) {
            return Err(bad("probe_max_age", "must be at least 1s"));
        }
        if self.alternates > 16 {
            return Err(bad("alternates", "must be at most 16"));
        }
        if !(1..=1_000_000).contains(&self.max_nodes) {
            return Err(bad("max_nodes", "must be between 1 and 1000000"));
        }
        if !(8..=32).contains(&self.prefix_v4) {
            return Err(bad("prefix_v4", "must be between 8 and 32"));
        }
        if !(16..=128).contains(&self.prefix_v6) {
            return Err(bad("prefix_v6", "must be between 16 and 128"));
        }
        if !(self.cell_deg.is_finite() && (0.01..=90.0).contains(&self.cell_deg)) {
            return Err(bad("cell_deg", "must be between 0.01 and 90"));
        }
        if self.probe_prefixes == 0 || self.probe_cells == 0 || self.geoip_cache == 0 {
            return Err(bad("probe_prefixes", "probe_prefixes, probe_cells and geoip_cache must be at least 1"));
        }
        if !(1..=1024).contains(&self.probe_max_results) {
            return Err(bad("probe_max_results", "must be between 1 and 1024"));
        }
        if !(self.loss_penalty_ms.is_finite() && self.loss_penalty_ms >= 0.0) {
            return Err(bad("loss_penalty_ms", "must be 0 or more"));
        }
        if !(self.path_inflation.is_finite() && (1.0..=10.0).contains(&self.path_inflation)) {
            return Err(bad("path_inflation", "must be between 1 and 10"));
        }
        if !(self.geo_overhead_ms.is_finite() && (0.0..=1000.0).contains(&self.geo_overhead_ms)) {
            return Err(bad("geo_overhead_ms", "must be between 0 and 1000"));
        }
        if self.max_body_bytes < 1024 {
            return Err(bad("max_body_bytes", "must be at least 1024"));
        }
        let player_auth_secret = match (&self.player_auth_secret_file, &self.player_auth_secret) {
            (Some(path), _) => {
                let s = std::fs::read_to_string(path)
                    .map_err(|e| bad("player_auth_secret_file", format!("reading {}: {e}", path.display())))?;
                Some(s.trim().as_bytes().to_vec())
            }
            (None, Some(s)) => Some(s.trim().as_bytes().to_vec()),
            (None, None) => None,
        };
        if player_auth_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(bad("player_auth_secret", "must be at least 16 bytes"));
        }
        if !(self.client_rate > 0.0 && self.client_burst >= 1.0 && self.client_table >= 1) {
            return Err(bad("client_rate", "client_rate must be > 0, client_burst >= 1 and client_table >= 1"));
        }
        if !(self.prefix_rate > 0.0 && self.prefix_burst >= 1.0) {
            return Err(bad("prefix_rate", "prefix_rate must be > 0 and prefix_burst >= 1"));
        }
        if !(self.player_route_rate > 0.0 && self.player_route_burst >= 1.0) {
            return Err(bad("player_route_rate", "player_route_rate must be > 0 and player_route_burst >= 1"));
        }
        if !(0.0..=1.0).contains(&self.reserve_share) {
            return Err(bad("reserve_share", "must be between 0 and 1"));
        }
        if !(1..=64).contains(&self.candidates) {
            return Err(bad("candidates", "must be between 1 and 64"));
        }
        if self.candidates_per_region == 0 {
            return Err(bad("candidates_per_region", "must be at least 1"));
        }
        if !(1..=10_000).contains(&self.max_match_players) {
            return Err(bad("max_match_players", "must be between 1 and 10000"));
        }
        if !(1..=1_000_000).contains(&self.peer_queue) {
            return Err(bad("peer_queue", "must be between 1 and 1000000"));
        }
        let matchmaker_token =
            secret_file("matchmaker_token_file", self.matchmaker_token_file.as_deref(), "OUTPOST_MATCHMAKER_TOKEN")?;
        let peer_token = secret_file("peer_token_file", self.peer_token_file.as_deref(), "OUTPOST_PEER_TOKEN")?;
        if !self.peer.is_empty() && peer_token.is_none() {
            return Err(bad("peer_token_file", "--peer needs --peer-token-file (or OUTPOST_PEER_TOKEN)"));
        }
        let peers = self
            .peer
            .iter()
            .map(|url| crate::peer::PeerTarget::parse(url, self.peer_ca.as_deref()).map_err(|e| bad("peer", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let cors = crate::http::Cors::new(&self.cors_origin).map_err(|e| bad("cors_origin", e))?;
        let header_read_timeout = parse_duration("header_read_timeout", &self.header_read_timeout)?;
        if !(Duration::from_millis(50)..=Duration::from_secs(300)).contains(&header_read_timeout) {
            return Err(bad("header_read_timeout", "must be between 50ms and 5m"));
        }
        let http_timeouts = self.common.http_timeouts(header_read_timeout)?;
        let learn = LearnLimits {
            max_prefixes: self.probe_prefixes,
            max_cells: self.probe_cells,
            max_age,
            loss_penalty_ms: self.loss_penalty_ms,
            ..LearnLimits::default()
        };
        let geo = GeoModel { path_inflation: self.path_inflation, overhead_ms: self.geo_overhead_ms };
        Ok(Config {
            tls,
            args: self,
            trusted,
            ticket_ttl,
            forget_after,
            learn,
            geo,
            player_auth_secret,
            http_timeouts,
            matchmaker_token,
            peer_token,
            peers,
            cors,
        })
    }
}

/// A token from `file`, else from the env variable `env`; at least 16 bytes.
fn secret_file(field: &str, file: Option<&std::path::Path>, env: &str) -> Result<Option<String>, ConfigError> {
    let token = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| bad(field, format!("reading {}: {e}", path.display())))?
                .trim()
                .to_string(),
        ),
        None => std::env::var(env).ok().map(|t| t.trim().to_string()),
    };
    if token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err(bad(field, "the token must be at least 16 bytes"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(argv: &[&str]) -> Result<Config, String> {
        let mut full = vec!["region-router"];
        full.extend_from_slice(argv);
        Args::load_from(full).map_err(|e| e.to_string())?.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        let c = load(&[]).unwrap();
        assert_eq!(c.ticket_ttl, Duration::from_secs(60));
        assert!(c.player_auth_secret.is_none());
        for (argv, field) in [
            (vec!["--trusted-proxy", "10.0.0.0/99"], "trusted_proxy"),
            (vec!["--reserve-share", "1.5"], "reserve_share"),
            (vec!["--reserve-share=-0.1"], "reserve_share"),
            (vec!["--prefix-rate", "0"], "prefix_rate"),
            (vec!["--prefix-burst", "0.5"], "prefix_rate"),
            (vec!["--player-route-rate", "0"], "player_route_rate"),
            (vec!["--player-route-burst", "0"], "player_route_rate"),
            (vec!["--ticket-ttl", "1s"], "ticket_ttl"),
            (vec!["--prefix-v4", "40"], "prefix_v4"),
            (vec!["--cell-deg", "0"], "cell_deg"),
            (vec!["--probe-max-age", "later"], "probe_max_age"),
            (vec!["--player-auth-secret", "short"], "player_auth_secret"),
            (vec!["--path-inflation", "0.5"], "path_inflation"),
            (vec!["--forget-after", "0s"], "forget_after"),
            (vec!["--client-rate", "0"], "client_rate"),
            (vec!["--alternates", "99"], "alternates"),
            (vec!["--candidates", "0"], "candidates"),
            (vec!["--candidates-per-region", "0"], "candidates_per_region"),
            (vec!["--max-match-players", "0"], "max_match_players"),
            (vec!["--peer-queue", "0"], "peer_queue"),
            (vec!["--cors-origin", "https://game.example.com/"], "cors_origin"),
            (vec!["--cors-origin", "game.example.com"], "cors_origin"),
            (vec!["--peer", "http://127.0.0.1:1"], "peer_token_file"),
            (vec!["--matchmaker-token-file", "/nonexistent/token"], "matchmaker_token_file"),
        ] {
            let e = load(&argv).unwrap_err();
            assert!(e.contains(field), "{argv:?}: {e}");
        }
    }
}
