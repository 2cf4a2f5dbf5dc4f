//! Configuration: flags, `OUTPOST_*` env, and an optional TOML file (`--config`), in that order of
//! precedence. Everything is validated before anything is bound, and a bad value is one line that
//! names the field.

use crate::host::Allocator;
use crate::host::limits::SandboxLimits;
use crate::room::player::PlayerLimits;
use clap::Parser;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The fastest a room may tick: a millisecond apart is already a worker's whole budget per room
/// (the CPU budget per call defaults to 10 ms), and the epoch ticker that bounds guest calls runs
/// at 1 ms.
pub const MAX_TICK_HZ: u32 = 1000;

/// `edge-node`: hosts WebAssembly game rooms near players.
#[derive(Parser, Debug, Clone, Serialize, Deserialize)]
#[command(name = "edge-node", version, about)]
pub struct Args {
    /// The flags every server takes.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
    /// Node id; generated on first start and kept in the data dir when absent.
    #[arg(long, env = "OUTPOST_ID")]
    pub id: Option<String>,
    /// Player QUIC address (port 0 picks a free port).
    #[arg(long, env = "OUTPOST_LISTEN_QUIC", default_value = "0.0.0.0:7701")]
    pub listen_quic: SocketAddr,
    /// The router's ticket public key, in its text form (base64url of 32 bytes). Without it,
    /// every join is refused.
    #[arg(long, env = "OUTPOST_TICKET_PUBKEY")]
    pub ticket_pubkey: Option<String>,
    /// Largest message a player may send, bytes.
    #[arg(long, env = "OUTPOST_MAX_MESSAGE_BYTES", default_value_t = 64 << 10)]
    pub max_message_bytes: usize,
    /// Messages per second a player may send (reliable and unreliable together).
    #[arg(long, env = "OUTPOST_PLAYER_RATE", default_value_t = 120.0)]
    pub player_rate: f64,
    /// Burst of player messages above the rate.
    #[arg(long, env = "OUTPOST_PLAYER_BURST", default_value_t = 240.0)]
    pub player_burst: f64,
    /// Reliable backlog per player before the slow-consumer clock starts, bytes.
    #[arg(long, env = "OUTPOST_PLAYER_BACKLOG_BYTES", default_value_t = 256 << 10)]
    pub player_backlog_bytes: usize,
    /// How long a player's backlog may stay over its limit before `slow-consumer`.
    #[arg(long, env = "OUTPOST_SLOW_CONSUMER_GRACE", default_value = "2s")]
    pub slow_consumer_grace: String,
    /// Longest a ticket may be valid for when the node checks it. The node remembers each used
    /// ticket's nonce until the ticket expires, so this bounds how long it keeps one.
    #[arg(long, env = "OUTPOST_MAX_TICKET_LIFETIME", default_value = "24h")]
    pub max_ticket_lifetime: String,
    /// Most used-ticket nonces remembered at once; with this many unexpired, new joins are
    /// refused with `node-not-accepting` (about 170 bytes each).
    #[arg(long, env = "OUTPOST_MAX_LIVE_TICKETS", default_value_t = 1_000_000)]
    pub max_live_tickets: usize,
    /// How long a new connection has to send its Join.
    #[arg(long, env = "OUTPOST_JOIN_TIMEOUT", default_value = "5s")]
    pub join_timeout: String,
    /// Most player connections open at once, joined or joining; more are refused before any
    /// handshake work. Bounds the node's memory (40–60 KiB per connection).
    #[arg(long, env = "OUTPOST_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Player packets gathered for one batched send (one `sendmmsg` for many connections) at
    /// most: the transport sends what it has at the end of each turn of its loop, or sooner
    /// when this many are waiting. 0 sends each packet on its own (`sendmsg`, with GSO).
    #[arg(long, env = "OUTPOST_UDP_SEND_QUEUE", default_value_t = 1024)]
    pub udp_send_queue: usize,
    /// Most connections from one IP address that have not joined yet. Players behind one NAT
    /// join one at a time in a round trip or two, so this only holds back a client that opens
    /// connections and never joins.
    #[arg(long, env = "OUTPOST_MAX_JOINING_PER_IP", default_value_t = 64)]
    pub max_joining_per_ip: u32,
    /// QUIC idle timeout for players (keep-alive is a third of it).
    #[arg(long, env = "OUTPOST_IDLE_TIMEOUT", default_value = "30s")]
    pub idle_timeout: String,
    /// How long shutdown waits for players to be told before exiting.
    #[arg(long, env = "OUTPOST_SHUTDOWN_GRACE", default_value = "3s")]
    pub shutdown_grace: String,
    /// On SIGTERM, drain first (move every room and its players to other nodes) for at most
    /// this long, as `POST /v1/drain` does; `off` (the default) stops at once.
    #[arg(long, env = "OUTPOST_DRAIN_ON_SHUTDOWN", default_value = "off")]
    pub drain_on_shutdown: String,
    /// Probe beacon UDP address (port 0 picks a free port).
    #[arg(long, env = "OUTPOST_LISTEN_PROBE", default_value = "0.0.0.0:7702")]
    pub listen_probe: SocketAddr,
    /// Admin HTTP address. Loopback by default: plain HTTP carries the admin token.
    #[arg(long, env = "OUTPOST_LISTEN_ADMIN", default_value = "127.0.0.1:7703")]
    pub listen_admin: SocketAddr,
    /// Room worker threads (default: the cores the runtime threads leave, at least one).
    #[arg(long, env = "OUTPOST_WORKERS")]
    pub workers: Option<usize>,
    /// Async runtime threads for QUIC, HTTP and the links (default: half the cores, at least one).
    #[arg(long, env = "OUTPOST_RUNTIME_THREADS")]
    pub runtime_threads: Option<usize>,
    /// Under load, how long a room worker lets player messages gather before waking for them
    /// (`0s` wakes for every message). Adds at most this much latency to a message.
    /// 5 ms is a tenth of a 20 Hz tick: inputs that wait for the next tick anyway lose nothing,
    /// and the node saves about an eighth of its CPU at 1,000 players (BENCHMARKS.md). Fast-paced
    /// games that answer messages between ticks may want `1ms` or `0s`.
    #[arg(long, env = "OUTPOST_WORKER_COALESCE", default_value = "5ms")]
    pub worker_coalesce: String,
    /// Most rooms on this node; sizes the pooling allocator.
    #[arg(long, env = "OUTPOST_MAX_ROOMS", default_value_t = 1000)]
    pub max_rooms: u32,
    /// Linear memory limit per room, MiB.
    #[arg(long, env = "OUTPOST_ROOM_MEMORY_MIB", default_value_t = 64)]
    pub room_memory_mib: u64,
    /// CPU budget of one guest call (e.g. `10ms`).
    #[arg(long, env = "OUTPOST_CALL_BUDGET", default_value = "10ms")]
    pub call_budget: String,
    /// CPU budget of one `message` call (e.g. `2ms`; `--call-budget` if that is smaller): a room's
    /// spinning message handler takes at most this from its worker per player message.
    #[arg(long, env = "OUTPOST_MESSAGE_BUDGET", default_value = "2ms")]
    pub message_budget: String,
    /// Largest module upload, bytes.
    #[arg(long, env = "OUTPOST_MAX_UPLOAD_BYTES", default_value_t = 16 << 20)]
    pub max_upload_bytes: usize,
    /// Default tick rate of modules uploaded without `tick_hz`.
    #[arg(long, env = "OUTPOST_TICK_HZ", default_value_t = 20)]
    pub tick_hz: u32,
    /// Default player cap of modules uploaded without `max_players`.
    #[arg(long, env = "OUTPOST_MAX_PLAYERS", default_value_t = 16)]
    pub max_players: u32,
    /// Bytes of datagrams quinn may queue from one player before the node reads them; beyond
    /// this it drops the oldest, counted in `outpost_player_datagrams_in_unread_total`.
    #[arg(long, env = "OUTPOST_PLAYER_DATAGRAM_IN_BYTES", default_value_t = 128 << 10)]
    pub player_datagram_in_bytes: usize,
    /// Bytes of datagrams queued to one player (a congested one); beyond this, each is dropped
    /// and counted in `outpost_player_datagrams_dropped_total`.
    #[arg(long, env = "OUTPOST_PLAYER_DATAGRAM_OUT_BYTES", default_value_t = 1 << 20)]
    pub player_datagram_out_bytes: usize,
    /// Largest unreliable payload a guest may send; bigger ones are counted and sent reliably.
    #[arg(long, env = "OUTPOST_DATAGRAM_CAP", default_value_t = 1100)]
    pub datagram_cap: usize,
    /// Probe replies per second per source IP.
    #[arg(long, env = "OUTPOST_PROBE_RATE", default_value_t = 20.0)]
    pub probe_rate: f64,
    /// Probe burst per source IP.
    #[arg(long, env = "OUTPOST_PROBE_BURST", default_value_t = 40.0)]
    pub probe_burst: f64,
    /// The region routers' URLs (`https://host:port`, or `http://` on a private network),
    /// comma-separated: the node heartbeats into each on its own, so one router down delays
    /// none of the others.
    #[arg(long, env = "OUTPOST_ROUTER")]
    pub router: Option<String>,
    /// PEM file of the CA that signed an `https://` router's certificate (default: the public
    /// web's roots).
    #[arg(long, env = "OUTPOST_ROUTER_CA")]
    pub router_ca: Option<PathBuf>,
    /// SHA-256 of an `https://` router's certificate, for a self-signed one.
    #[arg(long, env = "OUTPOST_ROUTER_CERT_SHA256")]
    pub router_cert_sha256: Option<String>,
    /// Region label the router shows (e.g. `eu-west`).
    #[arg(long, env = "OUTPOST_REGION", default_value = "default")]
    pub region: String,
    /// Where this node is, degrees latitude (required with --router).
    #[arg(long, env = "OUTPOST_LAT", allow_hyphen_values = true)]
    pub lat: Option<f64>,
    /// Where this node is, degrees longitude (required with --router).
    #[arg(long, env = "OUTPOST_LON", allow_hyphen_values = true)]
    pub lon: Option<f64>,
    /// Most players the router sends here.
    #[arg(long, env = "OUTPOST_CAPACITY", default_value_t = 1000)]
    pub capacity: u32,
    /// How often to heartbeat; three missed intervals and the router calls the node down.
    #[arg(long, env = "OUTPOST_HEARTBEAT_INTERVAL", default_value = "2s")]
    pub heartbeat_interval: String,
    /// Player QUIC address others reach (default: the bound address).
    #[arg(long, env = "OUTPOST_ADVERTISE_QUIC")]
    pub advertise_quic: Option<SocketAddr>,
    /// Probe beacon address others reach (default: the bound address).
    #[arg(long, env = "OUTPOST_ADVERTISE_PROBE")]
    pub advertise_probe: Option<SocketAddr>,
    /// Admin API URL others reach (default: `http://` + the bound address).
    #[arg(long, env = "OUTPOST_ADVERTISE_ADMIN")]
    pub advertise_admin: Option<String>,
    /// TCP address of the WebSocket player endpoint (`ws://`, path `/v1/ws`), for browsers and
    /// networks without WebTransport; e.g. the player port on TCP. Off unless given.
    #[arg(long, env = "OUTPOST_LISTEN_WEBSOCKET")]
    pub listen_websocket: Option<SocketAddr>,
    /// The WebSocket URL players reach (default: `ws://` + the bound address + `/v1/ws`), e.g.
    /// a `wss://` URL of a TLS proxy in front.
    #[arg(long, env = "OUTPOST_ADVERTISE_WEBSOCKET")]
    pub advertise_websocket: Option<String>,
    /// PEM certificate chain for `wss://` on the WebSocket endpoint (a CA-signed pair: browsers
    /// cannot pin a WebSocket certificate, so a self-signed one cannot work there).
    #[arg(long, env = "OUTPOST_WEBSOCKET_CERT")]
    pub websocket_cert: Option<PathBuf>,
    /// PEM private key for `--websocket-cert`.
    #[arg(long, env = "OUTPOST_WEBSOCKET_KEY")]
    pub websocket_key: Option<PathBuf>,
    /// UDP address of the WebTransport (HTTP/3) endpoint for browsers, `off` for none. Its own
    /// port: the native player port keeps transport limits HTTP/3 cannot live with.
    #[arg(long, env = "OUTPOST_LISTEN_WEBTRANSPORT", default_value = "0.0.0.0:7704")]
    #[serde(default = "default_listen_webtransport")]
    pub listen_webtransport: String,
    /// The WebTransport URL browsers reach (default: `https://` + the advertised player host and
    /// the bound WebTransport port + `/v1/wt`).
    #[arg(long, env = "OUTPOST_ADVERTISE_WEBTRANSPORT")]
    pub advertise_webtransport: Option<String>,
    /// PEM certificate chain for the WebTransport endpoint from a CA browsers trust. Without it
    /// the node makes its own short-lived P-256 certificates and publishes their hashes.
    #[arg(long, env = "OUTPOST_WEBTRANSPORT_CERT")]
    pub webtransport_cert: Option<PathBuf>,
    /// PEM private key for `--webtransport-cert`.
    #[arg(long, env = "OUTPOST_WEBTRANSPORT_KEY")]
    pub webtransport_key: Option<PathBuf>,
    /// Origins whose browser pages may open WebSocket player connections (exact origins like
    /// `https://game.example.com`, repeatable or comma-separated, or `*`). A connection without
    /// an `Origin` (not a browser) needs none. None by default.
    #[arg(long, env = "OUTPOST_CORS_ORIGIN", value_delimiter = ',')]
    #[serde(default)]
    pub cors_origin: Vec<String>,
    /// Core region QUIC addresses (comma-separated), tried in order. Without one, guests' commits
    /// are counted but not kept.
    #[arg(long, env = "OUTPOST_CORE", value_delimiter = ',')]
    #[serde(default)]
    pub core: Vec<SocketAddr>,
    /// The cores' certificate SHA-256s (from their ready files), paired with `--core` by position.
    #[arg(long, env = "OUTPOST_CORE_CERT_SHA256", value_delimiter = ',')]
    #[serde(default)]
    pub core_cert_sha256: Vec<String>,
    /// How long a join waits for the player's saved state from the core before going ahead with
    /// `saved = unavailable`.
    #[arg(long, env = "OUTPOST_CORE_LOAD_TIMEOUT", default_value = "300ms")]
    pub core_load_timeout: String,
    /// How long a room that moved here holds its commits back while the core lacks what the
    /// room committed on its earlier nodes (their links to the core may be cut). Past it they go
    /// anyway, and the core's per-key room epochs keep a late earlier node from overwriting them.
    #[arg(long, env = "OUTPOST_COMMIT_HOLD", default_value = "60s")]
    pub commit_hold: String,
    /// Outbox size at which committing rooms are faulted (`outbox-full`); nothing is dropped.
    #[arg(long, env = "OUTPOST_OUTBOX_MAX_BYTES", default_value_t = 1 << 30)]
    pub outbox_max_bytes: u64,
    /// Outbox size over which the node refuses joins (default: three quarters of the maximum).
    #[arg(long, env = "OUTPOST_OUTBOX_SOFT_BYTES")]
    pub outbox_soft_bytes: Option<u64>,
    /// Instance allocator: `pooling` (default) or `on-demand`.
    #[arg(long, env = "OUTPOST_ALLOCATOR", default_value = "pooling")]
    pub allocator: String,
}

/// Validated settings: parsed values, grouped by the subsystem that uses them, each of which
/// starts from its own module with its own part.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every server has: data dir, ready file, tokens, TLS files.
    pub service: CommonArgs,
    /// The node id, when `--id` gives one (else it is generated and kept in the data dir).
    pub id: Option<String>,
    /// Sandbox limits.
    pub limits: SandboxLimits,
    /// Allocator choice.
    pub allocator: Allocator,
    /// Room worker threads.
    pub workers: usize,
    /// Async runtime threads.
    pub runtime_threads: usize,
    /// Worker wake-up coalescing window.
    pub worker_coalesce: Duration,
    /// The player endpoint.
    pub players: crate::quic::PlayerSettings,
    /// The latency-probe beacon.
    pub probe: crate::beacon::BeaconSettings,
    /// The admin API.
    pub admin: crate::admin::AdminSettings,
    /// Heartbeats to the router, when `--router` is given.
    pub heartbeat: Option<HeartbeatConfig>,
    /// Where committed state goes, when `--core` is given.
    pub forward: Option<crate::forward::ForwardSettings>,
    /// How long a stopping node gives players their close and the core the rest of the outbox.
    pub shutdown_grace: Duration,
    /// Drain on SIGTERM for at most this long (`--drain-on-shutdown`).
    pub drain_on_shutdown: Option<Duration>,
    /// The WebSocket player endpoint, when `--listen-websocket` is given.
    pub websocket: Option<crate::websocket::WsSettings>,
    /// The WebSocket URL to advertise instead of the bound one.
    pub advertise_websocket: Option<String>,
    /// The WebTransport endpoint, unless `--listen-webtransport off`.
    pub webtransport: Option<crate::webtransport::WtSettings>,
    /// The WebTransport URL to advertise instead of the bound one.
    pub advertise_webtransport: Option<String>,
}

fn default_listen_webtransport() -> String {
    "0.0.0.0:7704".into()
}

/// One router the node heartbeats into.
#[derive(Debug, Clone)]
pub struct RouterTarget {
    /// Host and port.
    pub host: String,
    /// TLS, for an `https://` URL.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Most routers a node heartbeats into.
pub const MAX_ROUTERS: usize = 16;

/// Where and how to heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// Each router's `host:port` and TLS (for an `https://` URL).
    pub routers: Vec<RouterTarget>,
    /// The node's position.
    pub lat: f64,
    /// See `lat`.
    pub lon: f64,
    /// Interval.
    pub interval: Duration,
    /// The node's region name.
    pub region: String,
    /// Most players the router sends here.
    pub capacity: u32,
    /// Player address others reach, when not the bound one.
    pub advertise_quic: Option<SocketAddr>,
    /// Probe address others reach, when not the bound one.
    pub advertise_probe: Option<SocketAddr>,
    /// Admin URL others reach, when not the bound one.
    pub advertise_admin: Option<String>,
    /// The ticket key the node was given, in text, to check against the router's.
    pub ticket_pubkey: Option<String>,
}

pub use outpost_net::service::CommonArgs;
use outpost_proto::config::bad;
use outpost_proto::config::{ConfigError, parse_duration};

impl outpost_net::service::Service for Args {
    const NAME: &'static str = "edge-node";
    const DATA_DIR: &'static str = "data/edge";
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
        if let Some(id) = &self.id {
            outpost_proto::ids::check_name("id", id).map_err(|e| bad("id", e.to_string()))?;
        }
        let call_budget = parse_duration("call_budget", &self.call_budget)?;
        if call_budget < Duration::from_millis(1) || call_budget > Duration::from_secs(10) {
            return Err(bad("call_budget", "must be between 1ms and 10s"));
        }
        let message_budget = parse_duration("message_budget", &self.message_budget)?;
        if message_budget < Duration::from_millis(1) || message_budget > Duration::from_secs(10) {
            return Err(bad("message_budget", "must be between 1ms and 10s"));
        }
        // Never more than any other call may take.
        let message_budget = message_budget.min(call_budget);
        if !(1..=65_536).contains(&self.room_memory_mib) {
            return Err(bad("room_memory_mib", "must be between 1 and 65536"));
        }
        if !(1..=100_000).contains(&self.max_rooms) {
            return Err(bad("max_rooms", "must be between 1 and 100000"));
        }
        if !(1..=MAX_TICK_HZ).contains(&self.tick_hz) {
            return Err(bad("tick_hz", format!("must be between 1 and {MAX_TICK_HZ}")));
        }
        if self.max_players == 0 {
            return Err(bad("max_players", "must be at least 1"));
        }
        if !(64..=65_000).contains(&self.datagram_cap) {
            return Err(bad("datagram_cap", "must be between 64 and 65000"));
        }
        // At least a few of the largest datagrams a path carries; at most 64 MiB per player.
        for (field, v) in [
            ("player_datagram_in_bytes", self.player_datagram_in_bytes),
            ("player_datagram_out_bytes", self.player_datagram_out_bytes),
        ] {
            if !((8 << 10)..=(64 << 20)).contains(&v) {
                return Err(bad(field, "must be between 8 KiB and 64 MiB"));
            }
        }
        if self.max_upload_bytes < 1024 {
            return Err(bad("max_upload_bytes", "must be at least 1024"));
        }
        if !(self.probe_rate > 0.0 && self.probe_burst >= 1.0) {
            return Err(bad("probe_rate", "probe_rate must be > 0 and probe_burst >= 1"));
        }
        let allocator = match self.allocator.as_str() {
            "pooling" => Allocator::Pooling,
            "on-demand" => Allocator::OnDemand,
            other => {
                return Err(bad("allocator", format!("{other:?} is not `pooling` or `on-demand`")));
            }
        };
        if matches!(self.runtime_threads, Some(0) | Some(257..)) {
            return Err(bad("runtime_threads", "must be 1..=256"));
        }
        let (default_runtime, default_workers) =
            thread_split(std::thread::available_parallelism().map_or(1, |n| n.get()));
        let workers = match self.workers {
            Some(0) => return Err(bad("workers", "must be at least 1")),
            Some(n) => n.min(256),
            None => default_workers,
        };
        let runtime_threads = self.runtime_threads.unwrap_or(default_runtime);
        let ticket_key = match &self.ticket_pubkey {
            Some(text) => {
                Some(outpost_proto::keys::public_key_from_text(text).map_err(|e| bad("ticket_pubkey", e.to_string()))?)
            }
            None => None,
        };
        if !(16..=16 << 20).contains(&self.max_message_bytes) {
            return Err(bad("max_message_bytes", "must be between 16 and 16777216"));
        }
        if !(self.player_rate > 0.0 && self.player_burst >= 1.0) {
            return Err(bad("player_rate", "player_rate must be > 0 and player_burst >= 1"));
        }
        if self.player_backlog_bytes < 1024 {
            return Err(bad("player_backlog_bytes", "must be at least 1024"));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(bad("max_connections", "must be 1..=1000000"));
        }
        if self.udp_send_queue > 65_536 {
            return Err(bad("udp_send_queue", "must be 0 (no batching) to 65536"));
        }
        if !(1..=100_000).contains(&self.max_joining_per_ip) {
            return Err(bad("max_joining_per_ip", "must be 1..=100000"));
        }
        let ticket_lifetime = parse_duration("max_ticket_lifetime", &self.max_ticket_lifetime)?;
        if !(Duration::from_secs(5)..=Duration::from_secs(30 * 86_400)).contains(&ticket_lifetime) {
            return Err(bad("max_ticket_lifetime", "must be between 5s and 30 days"));
        }
        if !(1..=100_000_000).contains(&self.max_live_tickets) {
            return Err(bad("max_live_tickets", "must be 1..=100000000"));
        }
        let slow_grace = parse_duration("slow_consumer_grace", &self.slow_consumer_grace)?;
        let join_timeout = parse_duration("join_timeout", &self.join_timeout)?;
        let idle_timeout = parse_duration("idle_timeout", &self.idle_timeout)?;
        if idle_timeout < Duration::from_secs(1) {
            return Err(bad("idle_timeout", "must be at least 1s"));
        }
        let shutdown_grace = parse_duration("shutdown_grace", &self.shutdown_grace)?;
        let drain_on_shutdown = match self.drain_on_shutdown.as_str() {
            "off" => None,
            text => {
                let d = parse_duration("drain_on_shutdown", text)?;
                if d.is_zero() || d > Duration::from_secs(3600) {
                    return Err(bad("drain_on_shutdown", "must be `off`, or more than 0 and at most 1h"));
                }
                Some(d)
            }
        };
        let worker_coalesce = parse_duration("worker_coalesce", &self.worker_coalesce)?;
        if worker_coalesce > Duration::from_millis(20) {
            return Err(bad("worker_coalesce", "must be at most 20ms"));
        }
        let heartbeat = match &self.router {
            None => None,
            Some(urls) => {
                use outpost_net::tls::HttpsTrust;
                let trust = match (&self.router_ca, &self.router_cert_sha256) {
                    (Some(_), Some(_)) => {
                        return Err(bad("router_ca", "give --router-ca or --router-cert-sha256, not both"));
                    }
                    (Some(ca), None) => HttpsTrust::CaFile(ca.clone()),
                    (None, Some(pin)) => HttpsTrust::Pins(vec![pin.clone()]),
                    (None, None) => HttpsTrust::PublicRoots,
                };
                let mut routers: Vec<RouterTarget> = Vec::new();
                for url in urls.split(',').map(str::trim) {
                    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
                        (Some(r), _) => (true, Some(r)),
                        (None, r) => (false, r),
                    };
                    let host = rest
                        .map(|r| r.trim_end_matches('/'))
                        .filter(|r| !r.is_empty() && !r.contains('/'))
                        .ok_or_else(|| bad("router", format!("{url:?} is not a URL like https://host:7700")))?
                        .to_string();
                    if !https && !matches!(trust, HttpsTrust::PublicRoots) {
                        return Err(bad("router", "--router-ca and --router-cert-sha256 need https:// routers"));
                    }
                    if routers.iter().any(|r| r.host == host) {
                        return Err(bad("router", format!("{url:?} is listed twice")));
                    }
                    let tls = if https {
                        Some(
                            outpost_net::tls::https_client_config(&trust)
                                .map_err(|e| bad("router_ca", e.to_string()))?,
                        )
                    } else {
                        None
                    };
                    routers.push(RouterTarget { host, tls });
                }
                if routers.len() > MAX_ROUTERS {
                    return Err(bad("router", format!("at most {MAX_ROUTERS} routers")));
                }
                let (Some(lat), Some(lon)) = (self.lat, self.lon) else {
                    return Err(bad("lat", "--lat and --lon are required with --router"));
                };
                if !(lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0) {
                    return Err(bad("lat", format!("({lat}, {lon}) is not a point on Earth")));
                }
                let interval = parse_duration("heartbeat_interval", &self.heartbeat_interval)?;
                if !(Duration::from_millis(50)..=Duration::from_secs(600)).contains(&interval) {
                    return Err(bad("heartbeat_interval", "must be between 50ms and 10m"));
                }
                Some(HeartbeatConfig {
                    routers,
                    lat,
                    lon,
                    interval,
                    region: self.region.clone(),
                    capacity: self.capacity,
                    advertise_quic: self.advertise_quic,
                    advertise_probe: self.advertise_probe,
                    advertise_admin: self.advertise_admin.clone(),
                    ticket_pubkey: self.ticket_pubkey.clone(),
                })
            }
        };
        if self.core.len() != self.core_cert_sha256.len() {
            return Err(bad(
                "core_cert_sha256",
                format!(
                    "{} --core addresses but {} --core-cert-sha256 values; pair them by position",
                    self.core.len(),
                    self.core_cert_sha256.len()
                ),
            ));
        }
        if let Some(pin) =
            self.core_cert_sha256.iter().find(|p| p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad("core_cert_sha256", format!("{pin:?} is not 64 hex digits")));
        }
        let core_load_timeout = parse_duration("core_load_timeout", &self.core_load_timeout)?;
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&core_load_timeout) {
            return Err(bad("core_load_timeout", "must be between 10ms and 10s"));
        }
        let commit_hold = parse_duration("commit_hold", &self.commit_hold)?;
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&commit_hold) {
            return Err(bad("commit_hold", "must be between 100ms and 1h"));
        }
        let soft = self.outbox_soft_bytes.unwrap_or(self.outbox_max_bytes / 4 * 3);
        if self.outbox_max_bytes < 1 << 16 || soft > self.outbox_max_bytes {
            return Err(bad("outbox_max_bytes", "must be at least 65536, and outbox_soft_bytes at most it"));
        }
        let forward = (!self.core.is_empty()).then(|| crate::forward::ForwardSettings {
            cores: self
                .core
                .iter()
                .zip(&self.core_cert_sha256)
                .map(|(addr, pin)| crate::forward::CoreTarget { addr: *addr, cert_sha256: pin.to_lowercase() })
                .collect(),
            outbox: crate::forward::outbox::OutboxLimits {
                soft_bytes: soft,
                hard_bytes: self.outbox_max_bytes,
                segment_bytes: (self.outbox_max_bytes / 16).clamp(4096, 8 << 20),
            },
            load_timeout: core_load_timeout,
            commit_hold,
        });
        if self.region.is_empty() || self.region.len() > 64 || self.region.chars().any(char::is_control) {
            return Err(bad("region", "must be 1 to 64 bytes of printable text"));
        }
        if let Some(url) = &self.advertise_admin
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(bad("advertise_admin", format!("{url:?} is not an http:// or https:// URL")));
        }
        if let Some(url) = &self.advertise_websocket
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            return Err(bad("advertise_websocket", format!("{url:?} is not a ws:// or wss:// URL")));
        }
        for o in &self.cors_origin {
            let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
            if o != "*" && !rest.is_some_and(|r| !r.is_empty() && !r.contains('/')) {
                return Err(bad("cors_origin", format!("{o:?} is not an origin like https://game.example.com")));
            }
        }
        let ws_tls = match (&self.websocket_cert, &self.websocket_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                Some(outpost_net::tls::https_server_config(c, k).map_err(|e| bad("websocket_cert", e.to_string()))?)
            }
            _ => return Err(bad("websocket_cert", "--websocket-cert and --websocket-key go together")),
        };
        if ws_tls.is_some() && self.listen_websocket.is_none() {
            return Err(bad("websocket_cert", "--websocket-cert needs --listen-websocket"));
        }
        // The beacon's per-source limit, which the browsers' probe paths share.
        let probe_limits = crate::beacon::BeaconLimits {
            per_second: self.probe_rate,
            burst: self.probe_burst,
            max_sources: crate::beacon::MAX_SOURCES,
        };
        let wt_tls = match (&self.webtransport_cert, &self.webtransport_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                Some(outpost_net::tls::load_cert_pair(c, k).map_err(|e| bad("webtransport_cert", e.to_string()))?)
            }
            _ => return Err(bad("webtransport_cert", "--webtransport-cert and --webtransport-key go together")),
        };
        let wt_listen = match self.listen_webtransport.trim() {
            "off" => None,
            a => Some(a.parse::<SocketAddr>().map_err(|_| {
                bad("listen_webtransport", format!("{a:?} is not ip:port (or `off` for no WebTransport)"))
            })?),
        };
        if let Some(url) = &self.advertise_webtransport
            && !url.strip_prefix("https://").is_some_and(|rest| rest.split('/').next().is_some_and(|h| h.contains(':')))
        {
            return Err(bad(
                "advertise_webtransport",
                format!("{url:?} is not an https:// URL with an explicit port, like https://203.0.113.7:7704/v1/wt"),
            ));
        }
        if wt_listen.is_none() && (wt_tls.is_some() || self.advertise_webtransport.is_some()) {
            return Err(bad("listen_webtransport", "--webtransport-cert and --advertise-webtransport need it on"));
        }
        let webtransport = wt_listen.map(|listen| crate::webtransport::WtSettings {
            listen,
            origins: self.cors_origin.clone(),
            probe: probe_limits,
            ca_signed: wt_tls,
            send_batch: self.udp_send_queue,
        });
        let websocket = self.listen_websocket.map(|listen| crate::websocket::WsSettings {
            tls: ws_tls.clone(),
            listen,
            origins: self.cors_origin.clone(),
            probe: probe_limits,
        });
        let player_limits = PlayerLimits {
            max_message: self.max_message_bytes,
            rate: self.player_rate,
            burst: self.player_burst,
            backlog_bytes: self.player_backlog_bytes,
            slow_grace,
            datagram_cap: self.datagram_cap,
            datagram_in_bytes: self.player_datagram_in_bytes,
            datagram_out_bytes: self.player_datagram_out_bytes,
        };
        let limits = SandboxLimits {
            memory_bytes: (self.room_memory_mib << 20) as usize,
            call_budget,
            message_budget,
            datagram_cap: self.datagram_cap,
            max_rooms: self.max_rooms,
            ..SandboxLimits::default()
        };
        let admin = crate::admin::AdminSettings {
            listen: self.listen_admin,
            tls: self.common.https()?,
            limits: crate::admin::ApiLimits {
                max_upload_bytes: self.max_upload_bytes,
                max_body_bytes: crate::admin::MAX_BODY_BYTES,
                timeouts: self.common.http_timeouts(crate::admin::HEADER_READ_TIMEOUT)?,
                default_tick_hz: self.tick_hz,
                default_max_players: self.max_players,
                max_tick_hz: MAX_TICK_HZ,
            },
        };
        let players = crate::quic::PlayerSettings {
            listen: self.listen_quic,
            limits: player_limits,
            ticket_key,
            ticket_lifetime,
            max_live_tickets: self.max_live_tickets,
            max_connections: self.max_connections,
            max_joining_per_ip: self.max_joining_per_ip,
            join_timeout,
            idle_timeout,
            send_batch: self.udp_send_queue,
            relay_max_players: self.max_players,
            default_tick_hz: self.tick_hz,
        };
        let probe = crate::beacon::BeaconSettings { listen: self.listen_probe, limits: probe_limits };
        Ok(Config {
            service: self.common,
            id: self.id,
            limits,
            allocator,
            workers,
            runtime_threads,
            worker_coalesce,
            players,
            probe,
            admin,
            heartbeat,
            forward,
            shutdown_grace,
            drain_on_shutdown,
            websocket,
            advertise_websocket: self.advertise_websocket,
            webtransport,
            advertise_webtransport: self.advertise_webtransport,
        })
    }
}

/// Default (runtime threads, room workers) for `cores`: together no more busy threads than
/// cores. Both kinds are busy under load, and one of each per core ran twice as many busy threads
/// as cores: on 2 cores at 1,000 players over a 60 ms path the node spent 1.48× the raw quinn
/// echo's CPU per player-tick with 2 + 2 threads and 1.18× with 1 + 1 (medians of six rounds,
/// BENCHMARKS.md).
pub fn thread_split(cores: usize) -> (usize, usize) {
    let runtime = (cores / 2).max(1);
    (runtime, cores.saturating_sub(runtime).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_threads_never_outnumber_the_cores_and_there_is_one_of_each() {
        assert_eq!(thread_split(1), (1, 1));
        assert_eq!(thread_split(2), (1, 1));
        assert_eq!(thread_split(3), (1, 2));
        assert_eq!(thread_split(8), (4, 4));
        let c = load(&["--runtime-threads", "3", "--workers", "5"]).unwrap();
        assert_eq!((c.runtime_threads, c.workers), (3, 5), "flags win over the split");
    }

    fn load(argv: &[&str]) -> Result<Config, String> {
        let mut full = vec!["edge-node"];
        full.extend_from_slice(argv);
        Args::load_from(full).map_err(|e| e.to_string())?.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(&[]).unwrap();
        assert_eq!(c.limits.call_budget, Duration::from_millis(10));
        assert_eq!(c.limits.memory_bytes, 64 << 20);
    }

    #[test]
    fn bad_values_name_their_field() {
        for (argv, field) in [
            (vec!["--call-budget", "soon"], "call_budget"),
            (vec!["--message-budget", "0ms"], "message_budget"),
            (vec!["--message-budget", "later"], "message_budget"),
            (vec!["--body-read-timeout", "soon"], "body_read_timeout"),
            (vec!["--workers", "0"], "workers"),
            (vec!["--runtime-threads", "0"], "runtime_threads"),
            (vec!["--allocator", "magic"], "allocator"),
            (vec!["--id", "a/b"], "id"),
            (vec!["--tick-hz", "0"], "tick_hz"),
            (vec!["--ticket-pubkey", "nope"], "ticket_pubkey"),
            (vec!["--slow-consumer-grace", "x"], "slow_consumer_grace"),
            (vec!["--max-ticket-lifetime", "1s"], "max_ticket_lifetime"),
            (vec!["--max-ticket-lifetime", "90days"], "max_ticket_lifetime"),
            (vec!["--max-live-tickets", "0"], "max_live_tickets"),
            (vec!["--player-datagram-in-bytes", "100"], "player_datagram_in_bytes"),
            (vec!["--player-datagram-out-bytes", "999999999"], "player_datagram_out_bytes"),
            (vec!["--player-rate", "0"], "player_rate"),
            (vec!["--commit-hold", "10ms"], "commit_hold"),
            (vec!["--commit-hold", "2h"], "commit_hold"),
            (vec!["--commit-hold", "whenever"], "commit_hold"),
            (vec!["--router", "ftp://x"], "router"),
            (vec!["--router", "http://a:1,http://a:1", "--lat", "1", "--lon", "0"], "router"),
            (vec!["--router", "http://a:1,,http://b:1", "--lat", "1", "--lon", "0"], "router"),
            (vec!["--router", "http://127.0.0.1:7700"], "lat"),
            (vec!["--router", "http://r:1", "--lat", "91", "--lon", "0"], "lat"),
            (
                vec!["--router", "http://r:1", "--lat", "1", "--lon", "0", "--heartbeat-interval", "1ms"],
                "heartbeat_interval",
            ),
            (vec!["--advertise-admin", "ftp://x"], "advertise_admin"),
            (vec!["--advertise-websocket", "http://x/v1/ws"], "advertise_websocket"),
            (vec!["--cors-origin", "game.example.com"], "cors_origin"),
            (vec!["--websocket-cert", "/no/such.pem"], "websocket_cert"),
            (vec!["--listen-webtransport", "udp/7704"], "listen_webtransport"),
            (vec!["--advertise-webtransport", "https://203.0.113.7/v1/wt"], "advertise_webtransport"),
            (vec!["--advertise-webtransport", "http://203.0.113.7:7704/v1/wt"], "advertise_webtransport"),
            (vec!["--webtransport-cert", "/a.pem"], "webtransport_cert"),
            (vec!["--webtransport-cert", "/no/such.pem", "--webtransport-key", "/no/such.key"], "webtransport_cert"),
            (
                vec!["--listen-webtransport", "off", "--advertise-webtransport", "https://203.0.113.7:7704/v1/wt"],
                "listen_webtransport",
            ),
            (
                vec!["--listen-websocket", "127.0.0.1:0", "--websocket-cert", "/a.pem", "--websocket-key", "/b.pem"],
                "websocket_cert",
            ),
            (vec!["--router", "http://r:1", "--lat", "1", "--lon", "0", "--router-ca", "/ca.pem"], "router"),
            (
                vec![
                    "--router",
                    "https://r:1",
                    "--lat",
                    "1",
                    "--lon",
                    "0",
                    "--router-ca",
                    "/x",
                    "--router-cert-sha256",
                    "y",
                ],
                "router_ca",
            ),
            (vec!["--router", "https://r:1", "--lat", "1", "--lon", "0", "--router-cert-sha256", "y"], "router_ca"),
            (vec!["--router", "https://r:1", "--lat", "1", "--lon", "0", "--router-ca", "/no/such.pem"], "router_ca"),
            (vec!["--tls-cert", "/c.pem"], "tls_key"),
            (vec!["--tls-key", "/k.pem"], "tls_cert"),
            (vec!["--tls-cert", "/no/c.pem", "--tls-key", "/no/k.pem"], "tls_cert"),
            (vec!["--core", "127.0.0.1:7710"], "core_cert_sha256"),
            (vec!["--core", "127.0.0.1:7710", "--core-cert-sha256", "zz"], "core_cert_sha256"),
            (vec!["--outbox-max-bytes", "10"], "outbox_max_bytes"),
            (vec!["--max-connections", "0"], "max_connections"),
            (vec!["--max-connections", "1000001"], "max_connections"),
            (vec!["--max-connections", "many"], "max-connections"),
            (vec!["--udp-send-queue", "65537"], "udp_send_queue"),
            (vec!["--udp-send-queue", "lots"], "udp-send-queue"),
            (vec!["--max-joining-per-ip", "0"], "max_joining_per_ip"),
            (vec!["--max-joining-per-ip", "100001"], "max_joining_per_ip"),
        ] {
            let e = load(&argv).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn toml_fills_unset_fields_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("edge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edge.toml");
        std::fs::write(&path, "max_rooms = 77\ntick_hz = 30\n").unwrap();
        let p = path.to_str().unwrap();
        let c = Args::load_from(["edge-node", "--config", p, "--tick-hz", "10"]).unwrap();
        assert_eq!(c.max_rooms, 77);
        assert_eq!(c.tick_hz, 10);
        std::fs::write(&path, "bogus = 1\n").unwrap();
        assert!(load(&["--config", p]).unwrap_err().contains("bogus"));
        std::fs::write(&path, "max_rooms = \"many\"\n").unwrap();
        assert!(load(&["--config", p]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
