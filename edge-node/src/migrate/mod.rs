//! Rooms that move between nodes (issue 26): `POST /v1/rooms/{id}/migrate` on the source, and the
//! node-to-node calls under `/v1/peer/` that the target answers.
//!
//! The calls go between the nodes' admin APIs, authorized by the cluster token that every node
//! of a fleet already holds (never the admin token, never the router's signing key), to the
//! `admin_url` each node heartbeats (so the admin API must listen where the other edges reach
//! it, with TLS across networks; its certificate is pinned by the `admin_tls_sha256` the node
//! heartbeats). The sequence, with the point of no return when the target has accepted:
//! 1. the source pauses the room between ticks and takes its snapshot and host state;
//! 2. it posts them to the target, which fetches the module from the source when it lacks that
//!    version (SHA-256 checked), restores the room under the same id with a held place for each
//!    player, and answers with one [`credentials`] entry per player; any failure here resumes
//!    the room on the source, and the answer's status says why (409, 422, 502);
//! 3. the source hands the room over: each player gets a `Moved` frame with its credential, and
//!    what the players' old connections still deliver goes to the target in order, each
//!    player's stream closed by an end marker ([`crate::room::moving`]).
//!
//! A player whose client does not follow within [`FOLLOW_DEADLINE`] is closed `move-refused` on
//! the source; the target gives up on a player that never rejoined when its credential expires.

pub mod credentials;

use crate::admin::error::ApiError;
use crate::modules::ModuleStore;
use crate::quic::{MovingPlayer, PlayerCtx};
use crate::room::moving::{Forwarded, MAX_HELD, RoomExport};
use crate::room::worker::RoomSpec;
use crate::room::{RoomError, Rooms};
use crate::telemetry::Metrics;
use base64::Engine as _;
use hyper::StatusCode;
use outpost_net::http::Call;
use outpost_proto::api::{
    ForwardBatch, ForwardItem, Handoff, HandoffPlayer, HandoffReply, MigrateReply, NodeList, NodeStatus, StreamMark,
};
use outpost_proto::frame::{Frame, MoveTarget};
use outpost_proto::link::RoomEpoch;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one node-to-node call may take: a target that dies or hangs before it accepts a
/// room costs the room at most this (and the resume) before it runs on the source again, inside
/// the 5 s the issue allows.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(4);
/// How long an old connection may stay after its `Moved` before the source closes it.
pub const FOLLOW_DEADLINE: Duration = Duration::from_secs(10);
/// Largest hand-off body: a snapshot (base64) of a room at the default memory limit, and more.
pub const MAX_HANDOFF_BYTES: usize = 96 << 20;
/// Forwarded items per call.
const FORWARD_BATCH: usize = 512;
/// Most players a hand-off may carry.
const MAX_HANDOFF_PLAYERS: usize = 100_000;
/// Most stream marks a hand-off may carry: a room that moved this many times while every node
/// it left was cut off from the core is better released at the hold's deadline.
const MAX_HANDOFF_MARKS: usize = 64;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// What moving rooms needs from the rest of the node.
pub struct Migrator {
    /// This node's id.
    pub node_id: String,
    /// Rooms.
    pub rooms: Arc<Rooms>,
    /// Modules.
    pub modules: Arc<ModuleStore>,
    /// The player endpoints' shared state (credentials, sessions, limits).
    pub players: Arc<PlayerCtx>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The routers whose registry names the other nodes.
    pub routers: Vec<crate::config::RouterTarget>,
    /// The fleet's cluster token.
    pub cluster_token: String,
    /// This node's admin URL as the other nodes reach it.
    pub admin_url: String,
    /// This node's player endpoints, as a `Moved` frame names them.
    pub here: MoveTarget,
    /// The node's own browser certificates, whose hashes change as they rotate.
    pub browser_certs: Option<Arc<crate::webtransport::cert::BrowserCerts>>,
    /// Largest module a peer may send (the admin API's upload limit).
    pub max_module_bytes: usize,
    /// Set by a drain: the node refuses joins for good (the outbox's admission never lifts it).
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The outbox, whose commits a drain waits to see acked by the core.
    pub outbox: Option<Arc<crate::forward::outbox::Outbox>>,
    /// Commits of moved rooms held until the core has their earlier nodes' ([`crate::forward::holds`]).
    pub holds: Arc<crate::forward::holds::Holds>,
    /// How long such a hold lasts at most.
    pub commit_hold: Duration,
    /// Told once a drain is done: the node then stops.
    pub drained: Arc<tokio::sync::Notify>,
    /// The tasks forwarding moved rooms' old connections to their targets: a drain waits for
    /// them, or the targets would wait for end markers that never come.
    pub forwarders: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Rooms moved at once by a drain.
const DRAIN_PARALLEL: usize = 4;

/// A peer's address for [`outpost_net::http::request`]: `host:port`, and TLS for `https://`.
#[derive(Clone)]
struct Peer {
    host: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Peer {
    fn of(url: &str, pin: Option<&str>) -> Result<Peer, ApiError> {
        let bad = |why: &str| ApiError::new(StatusCode::BAD_GATEWAY, "peer-unreachable", format!("{url:?}: {why}"));
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            let trust = match pin {
                Some(p) => outpost_net::tls::HttpsTrust::Pins(vec![p.to_string()]),
                None => outpost_net::tls::HttpsTrust::PublicRoots,
            };
            (Some(outpost_net::tls::https_client_config(&trust).map_err(|e| bad(&e.to_string()))?), rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (None, rest)
        } else {
            return Err(bad("not an http:// or https:// URL"));
        };
        let host = rest.split('/').next().unwrap_or("").to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Peer { host, tls })
    }

    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(StatusCode, bytes::Bytes), String> {
        let call = Call { method, path, token: Some(token), body, limit, timeout: PEER_TIMEOUT };
        outpost_net::http::request(&self.host, self.tls.as_ref(), PEER_TIMEOUT, call).await.map_err(|e| e.0)
    }
}

/// The `error` of an API error body, or the body itself.
fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
}

impl Migrator {
    /// One call to router `r` with the cluster token.
    async fn ask_router(
        &self,
        r: &crate::config::RouterTarget,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(StatusCode, bytes::Bytes), String> {
        let call = Call { method, path, token: Some(&self.cluster_token), body, limit, timeout: PEER_TIMEOUT };
        outpost_net::http::request(&r.host, r.tls.as_ref(), Duration::from_secs(2), call).await.map_err(|e| e.0)
    }

    /// Every node the routers know (the first router that answers).
    async fn registry(&self) -> Result<Vec<NodeStatus>, ApiError> {
        let mut last = "no --router is configured".to_string();
        for r in &self.routers {
            match self.ask_router(r, hyper::Method::GET, "/v1/nodes", None, 16 << 20).await {
                Ok((StatusCode::OK, body)) => match serde_json::from_slice::<NodeList>(&body) {
                    Ok(list) => return Ok(list.nodes),
                    Err(e) => last = format!("router {}: bad registry: {e}", r.host),
                },
                Ok((status, body)) => last = format!("router {}: {status}: {}", r.host, error_text(&body)),
                Err(e) => last = format!("router {}: {e}", r.host),
            }
        }
        Err(ApiError::new(StatusCode::BAD_GATEWAY, "no-registry", format!("no router named the nodes: {last}")))
    }

    /// Where the routers' match placement would put `room`'s players, given by the addresses they
    /// connect from: the node that minimises the worst player's estimated RTT. `None` when no
    /// router answers with a node (none has the module, the room is larger than a match, a
    /// player is not known here): the caller falls back to the least-loaded node.
    async fn placement(&self, room: &str, module: &str) -> Option<String> {
        let players = self.rooms.room_players(room).await.ok()?;
        let request = outpost_proto::api::MatchRequest {
            module: module.to_string(),
            players: players
                .into_iter()
                .map(|(id, name, ip)| outpost_proto::api::MatchPlayer {
                    id,
                    name,
                    auth: None,
                    ip: ip.map(|ip| ip.to_string()),
                    results: Vec::new(),
                })
                .collect(),
            max_rtt_ms: None,
            room: None,
            max_players: None,
        };
        if request.players.is_empty() {
            return None;
        }
        let body = serde_json::to_vec(&request).ok()?;
        for r in &self.routers {
            match self.ask_router(r, hyper::Method::POST, "/v1/matches", Some(body.clone()), 1 << 20).await {
                Ok((StatusCode::OK, reply)) => {
                    let placed = serde_json::from_slice::<outpost_proto::api::MatchPlacement>(&reply).ok()?;
                    return Some(placed.node.id);
                }
                Ok((status, reply)) => {
                    tracing::info!(room, router = %r.host, %status, error = %error_text(&reply), "no match placement for the room; the least-loaded node takes it");
                    return None;
                }
                Err(e) => tracing::debug!(router = %r.host, error = %e, "router unreachable for a placement"),
            }
        }
        None
    }

    /// The node `to` names: an id, or `auto`: where the routers' match placement serves the
    /// room's players best, else the least-loaded healthy node, other than this one, with room
    /// for `players`, preferring nodes that already have the module.
    async fn target(&self, to: &str, room: &str, module: &str, players: u32) -> Result<NodeStatus, ApiError> {
        if to == self.node_id {
            return Err(ApiError::bad_request(format!("room cannot move to {to}: it is on that node already")));
        }
        let placed = if to == "auto" { self.placement(room, module).await } else { None };
        let nodes = self.registry().await?;
        let healthy = |n: &NodeStatus| n.health == "healthy" && n.heartbeat.accepting;
        if let Some(id) = placed.filter(|id| *id != self.node_id)
            && let Some(n) = nodes.iter().find(|n| n.heartbeat.id == id && healthy(n))
        {
            return Ok(n.clone());
        }
        let healthy = |n: &NodeStatus| n.health == "healthy" && n.heartbeat.accepting;
        if to != "auto" {
            let n = nodes
                .into_iter()
                .find(|n| n.heartbeat.id == to)
                .ok_or_else(|| ApiError::not_found(format!("no node {to:?} in the routers' registry")))?;
            if !healthy(&n) {
                return Err(ApiError::conflict(format!("node {to} is {} and not accepting", n.health)));
            }
            return Ok(n);
        }
        nodes
            .into_iter()
            .filter(|n| healthy(n) && n.heartbeat.id != self.node_id)
            .filter(|n| n.heartbeat.capacity.saturating_sub(n.heartbeat.players) >= players)
            .min_by(|a, b| {
                let has = |n: &NodeStatus| !n.heartbeat.modules.iter().any(|m| m.name == module);
                let load = |n: &NodeStatus| n.heartbeat.players as f64 / f64::from(n.heartbeat.capacity.max(1));
                (has(a), load(a)).partial_cmp(&(has(b), load(b))).unwrap_or(std::cmp::Ordering::Equal)
            })
            .ok_or_else(|| ApiError::conflict("no other healthy node has room for this room's players"))
    }

    /// Moves `room` to the node `to` names (the source's side).
    pub async fn migrate(self: &Arc<Self>, room: &str, to: &str) -> Result<MigrateReply, ApiError> {
        let info = self.rooms.info(room).await?;
        if let Some(f) = &info.fault {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "room-faulted",
                format!("room {room} is faulted ({}): a faulted room does not move", f.kind),
            ));
        }
        let target = self.target(to, room, &info.module, info.players).await?;
        let peer = Peer::of(&target.heartbeat.admin_url, target.heartbeat.admin_tls_sha256.as_deref())?;
        let paused = Instant::now();
        let export = self.rooms.export(room).await?;
        let body = self.handoff(&export);
        let answer = peer
            .call(hyper::Method::POST, "/v1/peer/rooms", &self.cluster_token, Some(body), 1 << 20)
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::BAD_GATEWAY, "target-unreachable", format!("{}: {e}", target.heartbeat.id))
            })
            .and_then(|(status, body)| match status {
                StatusCode::CREATED => serde_json::from_slice::<HandoffReply>(&body).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "target-unreachable",
                        format!("bad answer from the target: {e}"),
                    )
                }),
                StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => Err(ApiError::new(
                    status,
                    "target-refused",
                    format!("{} refused the room: {}", target.heartbeat.id, error_text(&body)),
                )),
                other => Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "target-refused",
                    format!("{} answered {other}: {}", target.heartbeat.id, error_text(&body)),
                )),
            });
        let reply = match answer {
            Ok(r) => r,
            Err(e) => {
                // Before the point of no return: the room goes on here.
                self.rooms.resume(room).await;
                self.abandon_at(&peer, room);
                tracing::warn!(room, to = %target.heartbeat.id, error = %e.message, "room move failed; the room resumes here");
                return Err(e);
            }
        };
        let paused_ms = paused.elapsed().as_secs_f64() * 1e3;
        // The crash tests kill the source here: the target has the room, no player knows.
        outpost_net::failpoint::hit("migrate.after_accept");
        let (forward, rx) = tokio::sync::mpsc::channel(MAX_HELD * 2);
        let links = match self.rooms.hand(room, forward).await {
            Ok(l) => l,
            Err(e) => {
                self.rooms.resume(room).await;
                self.abandon_at(&peer, room);
                return Err(e.into());
            }
        };
        // Credentials this node issued for the room and nobody redeemed lead nowhere now.
        self.players.moves.withdraw(|m| m.room == room);
        let now = Instant::now();
        for link in &links {
            let Some(credential) = reply.credentials.get(&link.id.to_string()) else {
                link.close(outpost_proto::CloseCode::MoveRefused, "the target issued no credential for this player");
                continue;
            };
            let target = MoveTarget { credential: credential.clone(), ..reply.target.clone() };
            link.send_frame(&Frame::Moved { target: Box::new(target) }, now);
        }
        tracing::info!(room, to = %target.heartbeat.id, players = links.len(), paused_ms, "room moved");
        let me = self.clone();
        let (room_id, stragglers) = (room.to_string(), links.clone());
        let task = tokio::spawn(async move { me.forward(peer, room_id, rx).await });
        let mut forwarders = self.forwarders.lock().unwrap_or_else(|e| e.into_inner());
        forwarders.retain(|t| !t.is_finished());
        forwarders.push(task);
        drop(forwarders);
        tokio::spawn(async move {
            tokio::time::sleep(FOLLOW_DEADLINE).await;
            for l in stragglers {
                l.close(
                    outpost_proto::CloseCode::MoveRefused,
                    "the room moved to another node and this client did not follow",
                );
            }
        });
        Ok(MigrateReply {
            room: room.to_string(),
            from: self.node_id.clone(),
            to: target.heartbeat.id.clone(),
            players: links.len() as u32,
            paused_ms,
        })
    }

    fn handoff(&self, e: &RoomExport) -> Vec<u8> {
        let h = Handoff {
            room: e.spec.id.clone(),
            module: e.spec.module.clone(),
            version: e.version.clone(),
            config: b64().encode(&e.spec.config),
            tick_hz: e.spec.tick_hz,
            max_players: e.spec.max_players,
            ephemeral: e.spec.ephemeral,
            reserved: e.spec.reserved,
            snapshot: b64().encode(&e.snapshot),
            rng: e.rng,
            now_ms: e.now_ms,
            ticks: e.ticks,
            players: e.players.iter().map(|(id, name)| HandoffPlayer { id: *id, name: name.clone() }).collect(),
            source: self.node_id.clone(),
            source_admin_url: self.admin_url.clone(),
            lineage: e.epoch.lineage,
            moves: e.epoch.moves,
            commits_after: self.commits_after(e),
        };
        serde_json::to_vec(&h).unwrap_or_default()
    }

    /// What the core must have before the target sends the room's commits: what the room still
    /// waited for here, and where its commits end in this node's stream.
    fn commits_after(&self, e: &RoomExport) -> Vec<StreamMark> {
        let mut after = self.holds.pending(e.epoch.lineage);
        if let Some(o) = &self.outbox
            && e.last_seq > 0
        {
            after.retain(|m| m.stream != o.stream());
            after.push(StreamMark { stream: o.stream().to_string(), seq: e.last_seq });
        }
        let mut seen = std::collections::HashMap::new();
        for m in after {
            let seq = seen.entry(m.stream).or_insert(0);
            *seq = m.seq.max(*seq);
        }
        let mut after: Vec<StreamMark> = seen.into_iter().map(|(stream, seq)| StreamMark { stream, seq }).collect();
        after.sort_by(|a, b| a.stream.cmp(&b.stream));
        after.truncate(MAX_HANDOFF_MARKS);
        after
    }

    /// Tells a target to drop a room it may have accepted but will not get (best effort, in the
    /// background: a hung target must not hold the answer; its credentials expire anyway).
    fn abandon_at(&self, peer: &Peer, room: &str) {
        let (peer, path, token) = (peer.clone(), format!("/v1/peer/rooms/{room}"), self.cluster_token.clone());
        tokio::spawn(async move {
            let _ = peer.call(hyper::Method::DELETE, &path, &token, None, 4096).await;
        });
    }

    /// Sends what the players' old connections deliver to the target, in order, until the last
    /// of them ended.
    async fn forward(&self, peer: Peer, room: String, mut rx: tokio::sync::mpsc::Receiver<Forwarded>) {
        let path = format!("/v1/peer/rooms/{room}/forwarded");
        let mut items = Vec::new();
        while let Some(first) = rx.recv().await {
            items.push(first);
            while items.len() < FORWARD_BATCH {
                match rx.try_recv() {
                    Ok(i) => items.push(i),
                    Err(_) => break,
                }
            }
            let batch = ForwardBatch {
                items: items
                    .drain(..)
                    .map(|i| match i {
                        Forwarded::Message { player, to, data } => {
                            ForwardItem { player, to, data: Some(b64().encode(data)), end: false }
                        }
                        Forwarded::End { player } => ForwardItem { player, to: 0, data: None, end: true },
                    })
                    .collect(),
            };
            let n = batch.items.len();
            let body = serde_json::to_vec(&batch).unwrap_or_default();
            let mut sent = false;
            for attempt in 0..3 {
                match peer.call(hyper::Method::POST, &path, &self.cluster_token, Some(body.clone()), 4096).await {
                    Ok((StatusCode::OK, _)) => {
                        sent = true;
                        break;
                    }
                    Ok((status, b)) => {
                        tracing::warn!(room, %status, error = %error_text(&b), attempt, "forwarding to the target failed")
                    }
                    Err(e) => tracing::warn!(room, error = %e, attempt, "forwarding to the target failed"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if !sent {
                self.metrics.moved_messages_dropped_total.inc_by(n as u64);
            }
        }
    }

    /// Takes a room another node hands over (the target's side): 201 with the players'
    /// credentials, or 409 (the id is taken, no capacity), 422 (restore refused), 502 (the
    /// module could not be fetched).
    pub async fn accept(&self, h: Handoff) -> Result<HandoffReply, ApiError> {
        let bad = |why: String| ApiError::bad_request(format!("bad hand-off: {why}"));
        outpost_proto::ids::check_name("room id", &h.room).map_err(|e| bad(e.to_string()))?;
        outpost_proto::ids::check_name("module name", &h.module).map_err(|e| bad(e.to_string()))?;
        if h.players.len() > MAX_HANDOFF_PLAYERS || h.tick_hz == 0 || h.max_players == 0 {
            return Err(bad(format!(
                "{} players, tick_hz {}, max_players {}",
                h.players.len(),
                h.tick_hz,
                h.max_players
            )));
        }
        if h.commits_after.len() > MAX_HANDOFF_MARKS
            || h.commits_after.iter().any(|m| m.stream.is_empty() || m.stream.len() > outpost_proto::link::MAX_NAME)
        {
            return Err(bad(format!(
                "commits_after: at most {MAX_HANDOFF_MARKS} marks, each stream 1 to {} bytes",
                outpost_proto::link::MAX_NAME
            )));
        }
        let mut ids: Vec<u64> = h.players.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(format!("player {} is listed twice", w[0])));
        }
        let snapshot = b64().decode(&h.snapshot).map_err(|e| bad(format!("snapshot: {e}")))?;
        let config = b64().decode(&h.config).map_err(|e| bad(format!("config: {e}")))?;
        if !self.players.accepting.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ApiError::conflict("this node is not accepting rooms (draining)"));
        }
        let compiled = self.module(&h).await?;
        let export = RoomExport {
            spec: RoomSpec {
                id: h.room.clone(),
                module: h.module.clone(),
                config,
                tick_hz: h.tick_hz,
                max_players: h.max_players,
                seed: 0,
                ephemeral: h.ephemeral,
                reserved: h.reserved,
            },
            version: h.version.clone(),
            snapshot,
            rng: h.rng,
            now_ms: h.now_ms,
            ticks: h.ticks,
            players: h.players.iter().map(|p| (p.id, p.name.clone())).collect(),
            epoch: RoomEpoch { lineage: h.lineage, moves: h.moves },
            last_seq: 0,
        };
        // Held before the room can tick here, so its first commit already waits.
        let arriving = RoomEpoch { lineage: h.lineage, moves: h.moves.saturating_add(1) };
        let held = match &self.outbox {
            Some(o) => {
                let after: Vec<StreamMark> =
                    h.commits_after.iter().filter(|m| m.stream != o.stream()).cloned().collect();
                let new = self.holds.add(arriving, after.clone(), Instant::now() + self.commit_hold);
                if !after.is_empty() {
                    self.metrics.commit_holds_total.inc();
                }
                new
            }
            None => false,
        };
        let imported = self.rooms.import(export, compiled, self.players.session.limits.clone()).await;
        let (worker, links) = imported.map_err(|e| {
            if held {
                self.holds.drop_new(h.lineage);
            }
            match e {
                RoomError::Full(n) => ApiError::conflict(format!("no capacity: this node is at its {n} rooms")),
                RoomError::Refused(why) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "restore-failed", why),
                other => other.into(),
            }
        })?;
        let now = Instant::now();
        let mut credentials = std::collections::BTreeMap::new();
        for link in links {
            let moving = MovingPlayer { link: link.clone(), room: h.room.clone(), worker, tick_hz: h.tick_hz };
            match self.players.moves.issue(moving, now) {
                Ok(c) => {
                    credentials.insert(link.id.to_string(), c);
                }
                Err(e) => {
                    self.abandon(&h.room).await;
                    return Err(ApiError::conflict(e.to_string()));
                }
            }
        }
        tracing::info!(room = %h.room, from = %h.source, players = credentials.len(), "room moved here");
        let mut target = self.here.clone();
        if let (Some(wt), Some(certs)) = (target.webtransport.as_mut(), &self.browser_certs) {
            wt.cert_sha256 = certs.published();
        }
        Ok(HandoffReply { credentials, target })
    }

    /// The hand-off's module version: this node's, or fetched from the source and checked.
    async fn module(&self, h: &Handoff) -> Result<Arc<crate::host::Compiled>, ApiError> {
        let modules = self.modules.clone();
        let (name, version) = (h.module.clone(), h.version.clone());
        let have = tokio::task::spawn_blocking(move || modules.compiled_version(&name, &version))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if let Ok(c) = have {
            return Ok(c);
        }
        let unreachable = |why: String| {
            ApiError::new(StatusCode::BAD_GATEWAY, "module-fetch-failed", format!("fetching {}: {why}", h.module))
        };
        let peer = Peer::of(&h.source_admin_url, None).map_err(|e| unreachable(e.message))?;
        let path = format!("/v1/peer/modules/{}/{}", h.module, h.version);
        let limit = self.max_module_bytes;
        let (status, bytes) =
            peer.call(hyper::Method::GET, &path, &self.cluster_token, None, limit).await.map_err(unreachable)?;
        if status != StatusCode::OK {
            return Err(unreachable(format!("{status}: {}", error_text(&bytes))));
        }
        let modules = self.modules.clone();
        let (name, version) = (h.module.clone(), h.version.clone());
        tokio::task::spawn_blocking(move || modules.add_version(&name, &version, &bytes))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| unreachable(e.to_string()))
    }

    /// What the source forwarded for a room that moved here.
    pub async fn forwarded(&self, room: &str, batch: ForwardBatch) -> Result<(), ApiError> {
        let mut items = Vec::with_capacity(batch.items.len());
        for i in batch.items {
            items.push(match (i.end, i.data) {
                (true, _) => Forwarded::End { player: i.player },
                (false, Some(d)) => Forwarded::Message {
                    player: i.player,
                    to: i.to,
                    data: b64().decode(d).map_err(|e| ApiError::bad_request(format!("bad forwarded data: {e}")))?,
                },
                (false, None) => return Err(ApiError::bad_request("a forwarded item needs data or end")),
            });
        }
        Ok(self.rooms.forwarded(room, items).await?)
    }

    /// Empties the node: refuses joins from now on (heartbeats say so, and the routers stop
    /// sending players), moves every room to the best other node for it, waits until the core
    /// has acked every commit, all within `deadline`, and then has the node stop (what could not
    /// move is closed with `node-shutdown`).
    pub async fn drain(self: &Arc<Self>, deadline: Duration) -> outpost_proto::api::DrainReply {
        use std::sync::atomic::Ordering;
        let started = Instant::now();
        let end = tokio::time::Instant::now() + deadline;
        self.draining.store(true, Ordering::Relaxed);
        self.players.accepting.store(false, Ordering::Relaxed);
        tracing::info!(?deadline, "draining: moving every room to other nodes");
        let rooms = self.rooms.list().await.unwrap_or_default();
        let limit = Arc::new(tokio::sync::Semaphore::new(DRAIN_PARALLEL));
        let mut moving = tokio::task::JoinSet::new();
        for r in rooms {
            let (me, limit) = (self.clone(), limit.clone());
            moving.spawn(async move {
                let _turn = limit.acquire().await;
                let result = tokio::time::timeout_at(end, me.migrate(&r.room, "auto")).await;
                let (to, error) = match result {
                    Ok(Ok(done)) => (Some(done.to), None),
                    Ok(Err(e)) => (None, Some(e.message)),
                    Err(_) => (None, Some("the drain's deadline passed".to_string())),
                };
                outpost_proto::api::DrainedRoom { room: r.room, players: r.players, to, error }
            });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = moving.join_next().await {
            if let Ok(o) = done {
                outcomes.push(o);
            }
        }
        outcomes.sort_by(|a, b| a.room.cmp(&b.room));
        // The players' old connections end as they rejoin on the targets; their last messages
        // and end markers are forwarded before the node stops.
        let forwarders = std::mem::take(&mut *self.forwarders.lock().unwrap_or_else(|e| e.into_inner()));
        for f in forwarders {
            let _ = tokio::time::timeout_at(end, f).await;
        }
        let acked = match &self.outbox {
            Some(o) => tokio::time::timeout_at(end, o.caught_up()).await.is_ok(),
            None => true,
        };
        let moved = outcomes.iter().filter(|o| o.to.is_some()).count() as u32;
        let failed = outcomes.len() as u32 - moved;
        tracing::info!(moved, failed, acked, "drained; stopping");
        self.drained.notify_one();
        outpost_proto::api::DrainReply {
            node: self.node_id.clone(),
            rooms: outcomes,
            moved,
            failed,
            acked,
            took_ms: started.elapsed().as_secs_f64() * 1e3,
        }
    }

    /// Drops a room whose hand-off the source abandoned, and its credentials.
    pub async fn abandon(&self, room: &str) {
        self.players.moves.withdraw(|m| m.room == room);
        if self.rooms.close(room).await.is_ok() {
            tracing::info!(room, "dropped a room whose hand-off the source abandoned");
        }
    }
}
