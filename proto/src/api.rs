//! JSON types of the HTTP APIs and the ready files. Field names here are the public contract.

use serde::{Deserialize, Serialize};

/// Every error reply: `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable, precise reason.
    pub error: String,
    /// Stable machine-readable code (e.g. `not-a-component`, `unauthorized`).
    pub code: String,
}

/// The edge node's ready file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeReady {
    /// Node id.
    pub id: String,
    /// Player QUIC address.
    pub quic: String,
    /// Probe beacon address.
    pub probe: String,
    /// Admin HTTP address.
    pub admin: String,
    /// Lowercase hex SHA-256 of the node's QUIC certificate (DER).
    pub cert_sha256: String,
    /// The admin API's base URL (`https://` when it serves TLS).
    #[serde(default)]
    pub admin_url: String,
    /// SHA-256 of the admin API's TLS certificate, when it serves TLS (what `outpost --pin-sha256`
    /// takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tls_sha256: Option<String>,
    /// The WebSocket player endpoint's URL, when the node serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<String>,
    /// The WebTransport player endpoint with the certificate hashes published at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webtransport: Option<WebTransportEndpoint>,
}

/// A module as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// SHA-256 of the component bytes.
    pub version: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Time to make it live: compile, or load from the disk cache.
    pub compile_ms: f64,
    /// Default tick rate for new rooms.
    pub tick_hz: u32,
    /// Default player cap for new rooms.
    pub max_players: u32,
    /// Rooms currently on any version of this module.
    #[serde(default)]
    pub rooms: u32,
}

/// `POST /v1/rooms` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// Module name.
    pub module: String,
    /// Room id; generated when absent.
    #[serde(default)]
    pub room: Option<String>,
    /// Opaque guest config: a JSON string is passed as its UTF-8 bytes, any other JSON value as
    /// its serialized text.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Tick rate, overriding the module default.
    #[serde(default)]
    pub tick_hz: Option<u32>,
    /// Player cap, overriding the module default.
    #[serde(default)]
    pub max_players: Option<u32>,
}

impl CreateRoom {
    /// The config bytes handed to the guest's `init`.
    pub fn config_bytes(&self) -> Vec<u8> {
        match &self.config {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
            Some(v) => v.to_string().into_bytes(),
        }
    }
}

/// `POST /v1/rooms` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCreated {
    /// Room id.
    pub room: String,
    /// Module name.
    pub module: String,
    /// Module version the room runs.
    pub version: String,
}

/// Why a room stopped running its guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// `cpu-budget`, `memory-limit`, `trap`, `bad-output` or `outbox-full`.
    pub kind: String,
    /// Detail, e.g. the guest's panic message.
    pub message: String,
}

/// `GET /v1/rooms/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Room id.
    pub room: String,
    /// Module name.
    pub module: String,
    /// Module version the room runs.
    pub version: String,
    /// `running`, `faulted` or `closed`.
    pub state: String,
    /// Players in the room.
    pub players: u32,
    /// Tick rate.
    pub tick_hz: u32,
    /// Player cap.
    pub max_players: u32,
    /// Ticks run so far.
    pub ticks: u64,
    /// Median tick duration, microseconds.
    pub tick_p50_us: f64,
    /// 99th percentile tick duration, microseconds.
    pub tick_p99_us: f64,
    /// Guest calls made so far (all exports).
    pub calls: u64,
    /// Wall time spent inside guest calls, microseconds.
    pub guest_us: u64,
    /// Epoch deadlines hit that were forgiven because the thread had not really used its budget.
    pub epoch_preemptions_forgiven: u64,
    /// Guest linear memory in bytes.
    pub memory_bytes: u64,
    /// Why the room faulted, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The newest lines the guest logged or printed.
    #[serde(default)]
    pub log: Vec<String>,
}

/// The core region's ready file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreReady {
    /// Edge link QUIC address.
    pub quic: String,
    /// HTTP address.
    pub http: String,
    /// Lowercase hex SHA-256 of the core's certificate (DER), which edges pin.
    pub cert_sha256: String,
}

/// The router's ready file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterReady {
    /// HTTP address.
    pub http: String,
    /// The API's base URL (`https://` when it serves TLS).
    #[serde(default)]
    pub url: String,
    /// SHA-256 of the API's TLS certificate, when it serves TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sha256: Option<String>,
    /// Ticket public key, text form.
    pub pubkey: String,
}

/// A module a node has, as the heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeModule {
    /// Module name.
    pub name: String,
    /// SHA-256 of the live version.
    pub version: String,
}

/// `POST /v1/nodes/heartbeat`: an edge node's self-report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Node id.
    pub id: String,
    /// Region label (free text, for operators).
    pub region: String,
    /// Where the node is, degrees.
    pub lat: f64,
    /// Where the node is, degrees.
    pub lon: f64,
    /// Player QUIC address others can reach.
    pub quic_addr: String,
    /// Probe beacon address others can reach.
    pub probe_addr: String,
    /// Admin API URL.
    pub admin_url: String,
    /// SHA-256 of the admin API's TLS certificate, which the other nodes pin when they move a
    /// room here. Absent over plain HTTP and from nodes older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tls_sha256: Option<String>,
    /// The QUIC certificate's hash, which players pin.
    pub cert_sha256: String,
    /// Most players the node takes.
    pub capacity: u32,
    /// Players now.
    pub players: u32,
    /// Rooms now.
    pub rooms: u32,
    /// Live modules.
    pub modules: Vec<NodeModule>,
    /// CPU use of the node process, in cores (1.0 = one core busy).
    pub cpu: f64,
    /// The node's heartbeat interval; three missed intervals make it `down`.
    pub interval_ms: u64,
    /// False while the node refuses joins.
    pub accepting: bool,
    /// Random per process start: a new value means the node restarted (its counters, such as
    /// `redeemed`, start again from zero). Absent from nodes older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The node binary's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Tickets the node has redeemed (joins that spent a ticket) since `boot_id` started: the
    /// router releases the places it reserved for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeemed: Option<u64>,
    /// What the node supports beyond the first contracts ([`FEATURE_MATCH_TICKETS`], ...). The
    /// router only relies on what a node lists here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// The node's WebSocket player endpoint, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocketEndpoint>,
    /// The node's WebTransport player endpoint, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webtransport: Option<WebTransportEndpoint>,
}

/// A node's WebSocket player endpoint (heartbeats, routes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSocketEndpoint {
    /// `ws://host:port/v1/ws` or `wss://...`.
    pub url: String,
    /// Where a browser measures its RTT to the node: a WebSocket that echoes beacon probes
    /// (the UDP beacon's format), rate-limited per source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_url: Option<String>,
}

/// A node's WebTransport (HTTP/3) player endpoint (heartbeats, routes, candidates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebTransportEndpoint {
    /// `https://host:port/v1/wt`, the port always explicit.
    pub url: String,
    /// Lowercase hex SHA-256 of every certificate the node may present while a route is in use
    /// (the served one and the next, published a day before it is served), for a browser's
    /// `serverCertificateHashes`. Empty when the node has a CA-signed pair.
    #[serde(default)]
    pub cert_sha256: Vec<String>,
    /// A WebTransport session that echoes beacon probes sent as datagrams, rate-limited per
    /// source: where a browser measures its RTT to the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_url: Option<String>,
}

/// Heartbeat feature: the node takes rooms other nodes move to it (`/v1/peer/rooms`).
pub const FEATURE_MIGRATION: &str = "migration";
/// Heartbeat feature: the node serves browsers over WebTransport.
pub const FEATURE_WEBTRANSPORT: &str = "webtransport";

/// Heartbeat feature: the node places v2 tickets that name a reserved room with its
/// `max_players` (match placement, `POST /v1/matches`).
pub const FEATURE_MATCH_TICKETS: &str = "match-tickets";

/// The router's reply to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The router's ticket public key, so an edge can check it was configured with the right one.
    pub pubkey: String,
}

/// A node in `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// `healthy`, `not-accepting` or `down`.
    pub health: String,
    /// Seconds since the last heartbeat.
    pub age_s: f64,
    /// Places held for this router's tickets the node has not redeemed yet (unexpired).
    #[serde(default)]
    pub reserved: u32,
    /// The last heartbeat.
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    /// Every known node.
    pub nodes: Vec<NodeStatus>,
}

/// A node as a route names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteNode {
    /// Node id.
    pub id: String,
    /// Player QUIC address.
    pub quic_addr: String,
    /// Certificate hash to pin.
    pub cert_sha256: String,
    /// Region label.
    pub region: String,
    /// The node's probe beacon, so a client can measure it and report back.
    pub probe_addr: String,
    /// The node's WebSocket player endpoint, when it has one (browsers without WebTransport).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocketEndpoint>,
    /// The node's WebTransport player endpoint and certificate hashes, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webtransport: Option<WebTransportEndpoint>,
}

/// How the router estimated the chosen node's RTT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteEstimate {
    /// Estimated RTT, ms; absent when nothing is known (`method` = `none`).
    pub rtt_ms: Option<f64>,
    /// `measured-self`, `measured-prefix`, `measured-cell`, `geo` or `none`.
    pub method: String,
}

/// Where the router thinks the client is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteClient {
    /// The client address the route was made for.
    pub ip: String,
    /// ISO country code, when GeoIP knows it.
    pub country: Option<String>,
    /// City name, when GeoIP knows it.
    pub city: Option<String>,
    /// Latitude, when GeoIP knows it.
    pub lat: Option<f64>,
    /// Longitude, when GeoIP knows it.
    pub lon: Option<f64>,
}

/// `GET /v1/route`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// The chosen node.
    pub node: RouteNode,
    /// The next best nodes, best first (no tickets: ask again to fail over).
    pub alternates: Vec<RouteNode>,
    /// Join ticket for `node`.
    pub ticket: String,
    /// When the ticket expires, RFC 3339 UTC.
    pub expires_at: String,
    /// The player id the ticket is for.
    pub player: u64,
    /// The estimate behind the choice.
    pub estimate: RouteEstimate,
    /// The client as the router saw it.
    pub client: RouteClient,
}

/// One client-measured path in `POST /v1/probes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Node id.
    pub node: String,
    /// Measured round trip, ms.
    pub rtt_ms: f64,
    /// Fraction of probes lost, 0..=1.
    #[serde(default)]
    pub loss: f64,
}

/// `POST /v1/probes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeBatch {
    /// The measurements.
    pub results: Vec<ProbeResult>,
    /// The client that measured them; only honoured with the admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// The router's reply to a probe batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAck {
    /// Results learned from.
    pub accepted: u32,
    /// Results for nodes the router does not know, skipped.
    pub unknown_nodes: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_room_config_is_opaque_bytes() {
        let c: CreateRoom = serde_json::from_str(r#"{"module":"m","config":"hi"}"#).unwrap();
        assert_eq!(c.config_bytes(), b"hi");
        let c: CreateRoom = serde_json::from_str(r#"{"module":"m","config":{"a":1}}"#).unwrap();
        assert_eq!(c.config_bytes(), br#"{"a":1}"#);
        let c: CreateRoom = serde_json::from_str(r#"{"module":"m"}"#).unwrap();
        assert!(c.config_bytes().is_empty());
        assert!(serde_json::from_str::<CreateRoom>(r#"{"module":"m","bogus":1}"#).is_err());
    }

    #[test]
    fn heartbeats_from_newer_edges_still_parse() {
        let hb = r#"{"id":"a","region":"r","lat":1.0,"lon":2.0,"quic_addr":"127.0.0.1:1","probe_addr":"127.0.0.1:2",
            "admin_url":"http://x","cert_sha256":"00","capacity":1,"players":0,"rooms":0,"modules":[],"cpu":0.0,
            "interval_ms":2000,"accepting":true,"gpu":"a field a later edge may send"}"#;
        assert_eq!(serde_json::from_str::<Heartbeat>(hb).unwrap().id, "a");
    }
}

/// One node a client should measure, in `GET /v1/candidates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeCandidate {
    /// Node id.
    pub node: String,
    /// Region label.
    pub region: String,
    /// The node's UDP probe beacon.
    pub probe_addr: String,
    /// Where a browser probes the node (a WebSocket echoing beacon probes), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_probe: Option<String>,
    /// Where a browser probes the node over WebTransport (`probe_url`, with the hashes to pin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webtransport: Option<WebTransportEndpoint>,
    /// The router's estimate for this client, ms (absent when nothing is known).
    pub rtt_ms: Option<f64>,
    /// How the estimate was made.
    pub method: String,
}

/// `GET /v1/candidates`: the nodes to measure, lowest estimate first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateList {
    /// The candidates.
    pub candidates: Vec<ProbeCandidate>,
}

/// `POST /v1/route`: the client's own measurements, made just now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteBody {
    /// The measurements.
    pub results: Vec<ProbeResult>,
}

/// One player of a match in `POST /v1/matches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchPlayer {
    /// Player id (as a string or a number in JSON; a whole number).
    pub id: u64,
    /// Display name.
    pub name: String,
    /// hex(HMAC-SHA256(secret, id)) when the router has a player-auth secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The player's address, for geography and learned measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The player's own measurements, made just now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ProbeResult>,
}

/// `POST /v1/matches`: place a whole match on one node, in one room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRequest {
    /// Module to run.
    pub module: String,
    /// Everyone in the match.
    pub players: Vec<MatchPlayer>,
    /// Refuse (503) when the worst player's estimate would be above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rtt_ms: Option<f64>,
    /// The room id (default: made up by the router).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The room's player cap (default: the number of players).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_players: Option<u32>,
}

/// One player's estimate in a match reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerEstimate {
    /// Estimated RTT to the chosen node, ms (absent when nothing is known).
    pub rtt_ms: Option<f64>,
    /// How it was made.
    pub method: String,
}

/// The reply to `POST /v1/matches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchPlacement {
    /// The node every player joins.
    pub node: RouteNode,
    /// The room they all join.
    pub room: String,
    /// Player id (as text) → join ticket.
    pub tickets: std::collections::BTreeMap<String, String>,
    /// Player id (as text) → that player's estimate to `node`.
    pub estimates: std::collections::BTreeMap<String, PlayerEstimate>,
    /// The worst player's estimate, ms.
    pub worst_rtt_ms: Option<f64>,
    /// When the tickets expire, RFC 3339 UTC.
    pub expires_at: String,
}

/// `POST /v1/rooms/{id}/migrate` (admin token): where the room goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// A node id from the routers' registry, or `auto` (the least-loaded healthy node with the
    /// module and room for the players).
    pub to: String,
}

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrateReply {
    /// The room.
    pub room: String,
    /// The node it left.
    pub from: String,
    /// The node it is on now.
    pub to: String,
    /// Players told to follow it.
    pub players: u32,
    /// From the pause on this node to the target's acceptance, ms.
    pub paused_ms: f64,
}

/// Where a room's commits end in one node's outbox stream: its next node holds the room's
/// commits until the core has the stream at least this far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMark {
    /// The outbox stream (`node-id/incarnation`).
    pub stream: String,
    /// The room's last sequence number in it.
    pub seq: u64,
}

/// A moving player, by id and display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffPlayer {
    /// Player id.
    pub id: u64,
    /// Display name.
    pub name: String,
}

/// `POST /v1/peer/rooms` (cluster token), source to target: a room to restore under the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// Room id.
    pub room: String,
    /// Module name.
    pub module: String,
    /// Module version (the SHA-256 of its bytes), fetched from the source when the target lacks it.
    pub version: String,
    /// `init`'s config, base64.
    #[serde(default)]
    pub config: String,
    /// Tick rate.
    pub tick_hz: u32,
    /// Player cap.
    pub max_players: u32,
    /// Made for joining players (closed when empty).
    pub ephemeral: bool,
    /// Reserved for one match.
    pub reserved: bool,
    /// The guest's snapshot, base64.
    pub snapshot: String,
    /// The host's `random` state.
    pub rng: u64,
    /// The room's clock at the pause, ms.
    pub now_ms: u64,
    /// Ticks so far.
    pub ticks: u64,
    /// Its players.
    pub players: Vec<HandoffPlayer>,
    /// The source node's id.
    pub source: String,
    /// The source's admin URL, where the target fetches the module when it lacks it.
    pub source_admin_url: String,
    /// The room's lineage (random, fixed for its life; 0 from a source that predates it).
    #[serde(default)]
    pub lineage: u64,
    /// How many times it had moved before this move.
    #[serde(default)]
    pub moves: u32,
    /// Where its commits end in the streams of the nodes it has been on, which the core must
    /// have before the target sends what the room commits there.
    #[serde(default)]
    pub commits_after: Vec<StreamMark>,
}

/// The target's acceptance: one credential per player, and where the players go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffReply {
    /// Credentials by player id (as a string: JSON object keys).
    pub credentials: std::collections::BTreeMap<String, String>,
    /// The target's player endpoints (its `credential` is empty; each player gets its own).
    pub target: crate::frame::MoveTarget,
}

/// One thing a moved player's old connection delivered, forwarded to the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardItem {
    /// Player id.
    pub player: u64,
    /// Addressee of a relay message (0: everyone / the guest).
    #[serde(default)]
    pub to: u64,
    /// A reliable message, base64; absent on the end marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The end of the player's old stream: nothing more comes from it.
    #[serde(default)]
    pub end: bool,
}

/// `POST /v1/peer/rooms/{id}/forwarded` (cluster token): what old connections delivered, in
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardBatch {
    /// The items, in the order the source read them.
    pub items: Vec<ForwardItem>,
}

/// `POST /v1/drain` (admin token): how long the node may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Most milliseconds the drain may take (default 60,000).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

/// One room's outcome in a drain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainedRoom {
    /// Room id.
    pub room: String,
    /// Its players when the drain began.
    pub players: u32,
    /// The node it moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why it did not move (it is closed with `node-shutdown` when the node stops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a drain did; the node stops after answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainReply {
    /// The drained node.
    pub node: String,
    /// Each room's outcome.
    pub rooms: Vec<DrainedRoom>,
    /// Rooms moved.
    pub moved: u32,
    /// Rooms that could not move.
    pub failed: u32,
    /// Whether the core acked every commit before the deadline.
    pub acked: bool,
    /// How long it took, ms.
    pub took_ms: f64,
}
