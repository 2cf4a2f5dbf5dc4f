//! The player endpoint: QUIC (ALPN `outpost/1`), join by signed ticket, then frames and datagrams
//! between the player and their room.
//!
//! [`driver`] is the socket loop: it runs every connection's QUIC state from one thread (sockets,
//! timers, the connection table). [`carrier`] is one connection: quinn-proto's state machine and
//! the player's [`crate::session::PlayerSession`], which checks every limit before a byte reaches
//! a room (frame size, message rate, datagram size). A misbehaving player is closed with a
//! precise code; nothing they send can take down the node. [`admission`] caps connections before
//! any handshake work. This file is the join itself, run as a task per joining player: verify the
//! ticket offline (signature, expiry, node, single use), take over from the player's older
//! connection, and place the player in a room.

pub mod admission;
pub mod carrier;
pub mod driver;

use crate::modules::ModuleStore;
use crate::room::player::{PlayerLimits, PlayerLink};
use crate::room::worker::RoomSpec;
use crate::room::{Refusal, Rooms};
use crate::session::{Admitted, SessionCtx};
use crate::telemetry::Metrics;
use outpost_proto::CloseCode;
use outpost_proto::frame::SavedState;
use outpost_proto::keys::Ed25519PublicKey;
use outpost_proto::ticket::{self, ReplayGuard, TicketPayload};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Name of the built-in relay room kind.
pub const RELAY: &str = "relay";

/// What every player session shares.
pub struct PlayerCtx {
    /// This node's id (tickets must name it).
    pub node_id: String,
    /// The router's ticket key; `None` refuses every join.
    pub ticket_key: Option<Ed25519PublicKey>,
    /// Nonces of used tickets.
    pub replay: Mutex<ReplayGuard>,
    /// Each joined player's current connection, so that a reconnect can take over from it.
    pub sessions: Mutex<HashMap<u64, Arc<PlayerLink>>>,
    /// Connection caps, checked before any handshake work.
    pub admission: Arc<admission::Admission>,
    /// Rooms.
    pub rooms: Arc<Rooms>,
    /// Modules.
    pub modules: Arc<ModuleStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// False while draining: joins are refused with `node-not-accepting`.
    pub accepting: Arc<AtomicBool>,
    /// Players whose room moved here, by the credential each will rejoin with.
    pub moves: crate::migrate::credentials::MoveCredentials<MovingPlayer>,
    /// Loads joining players' saved state from the core, when the node forwards to one.
    pub loader: Option<Arc<crate::forward::loader::StateLoader>>,
    /// Player cap for relay rooms.
    pub relay_max_players: u32,
    /// Default tick rate (relay rooms report it).
    pub default_tick_hz: u32,
    /// What the player sessions share.
    pub session: SessionCtx,
}

/// The player endpoint's address and limits.
#[derive(Debug, Clone)]
pub struct PlayerSettings {
    /// UDP address to serve players on.
    pub listen: std::net::SocketAddr,
    /// Per-player limits.
    pub limits: PlayerLimits,
    /// The router's ticket key; `None` refuses every join.
    pub ticket_key: Option<Ed25519PublicKey>,
    /// Longest a ticket may be valid for (and so how long a used nonce is remembered).
    pub ticket_lifetime: Duration,
    /// Used nonces remembered at most.
    pub max_live_tickets: usize,
    /// Player connections at once.
    pub max_connections: usize,
    /// Connections still joining from one address at once.
    pub max_joining_per_ip: u32,
    /// How long a connection has to send its `Join`.
    pub join_timeout: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Most packets in one `sendmmsg` (0: one `sendmsg` each).
    pub send_batch: usize,
    /// Player cap of relay rooms.
    pub relay_max_players: u32,
    /// Tick rate relay rooms report.
    pub default_tick_hz: u32,
}

/// What the player endpoint works with, from the rest of the node.
pub struct PlayerNode {
    /// This node's id (tickets must name it).
    pub node_id: String,
    /// Rooms.
    pub rooms: Arc<Rooms>,
    /// Modules.
    pub modules: Arc<ModuleStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Saved-state loads, when the node forwards to a core.
    pub loader: Option<Arc<crate::forward::loader::StateLoader>>,
    /// False while the node refuses joins.
    pub accepting: Arc<AtomicBool>,
}

/// Binds the player socket and starts serving players on it, with `cert` as the node's QUIC
/// certificate.
pub fn start(
    settings: &PlayerSettings,
    cert: &outpost_net::tls::NodeCert,
    node: PlayerNode,
) -> anyhow::Result<driver::PlayerEndpoint> {
    let limits = Arc::new(settings.limits.clone());
    let mut transport = outpost_net::tls::player_transport(settings.idle_timeout, 1);
    let window = limits.receive_window();
    transport
        .stream_receive_window(window.into())
        .receive_window(window.into())
        .datagram_receive_buffer_size(Some(limits.datagram_in_bytes))
        .datagram_send_buffer_size(limits.datagram_out_bytes);
    let server = outpost_net::tls::server_config(cert, outpost_net::tls::ALPN_PLAYER, transport)?;
    let listen = settings.listen;
    let socket = outpost_net::udp::bind_udp(listen, outpost_net::udp::UDP_BUFFER_BYTES)
        .map_err(|e| anyhow::anyhow!("listen_quic: binding {listen}: {e}"))?;
    if settings.ticket_key.is_none() {
        tracing::warn!("no --ticket-pubkey: every player join will be refused");
    }
    let ctx = Arc::new(PlayerCtx {
        loader: node.loader,
        node_id: node.node_id,
        ticket_key: settings.ticket_key,
        replay: Mutex::new(ReplayGuard::new(settings.max_live_tickets, settings.ticket_lifetime.as_secs())),
        sessions: Mutex::default(),
        admission: admission::Admission::new(settings.max_connections, settings.max_joining_per_ip),
        session: SessionCtx {
            rooms: node.rooms.clone(),
            limits,
            metrics: node.metrics.clone(),
            join_timeout: settings.join_timeout,
        },
        rooms: node.rooms,
        modules: node.modules,
        metrics: node.metrics,
        accepting: node.accepting,
        relay_max_players: settings.relay_max_players,
        default_tick_hz: settings.default_tick_hz,
        moves: Default::default(),
    });
    driver::PlayerEndpoint::start(socket, server, ctx, settings.send_batch, driver::Flavor::Native)
        .map_err(|e| anyhow::anyhow!("listen_quic: serving {listen}: {e}"))
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A moving player's place on this node, admitted by the credential the node issued for it.
#[derive(Clone)]
pub struct MovingPlayer {
    /// Its link in the room, detached until it rejoins.
    pub link: Arc<PlayerLink>,
    /// The room.
    pub room: String,
    /// The room's worker.
    pub worker: usize,
    /// The room's tick rate.
    pub tick_hz: u32,
}

/// Verifies the ticket and places the player on `transport`; returns the room, its worker and
/// the tick rate. A move credential instead puts the player back in the room that moved here.
pub(crate) async fn admit(
    ctx: &PlayerCtx,
    ticket_text: &str,
    transport: Arc<dyn crate::room::player::PlayerTransport>,
    remote: std::net::IpAddr,
) -> Result<Admitted, Refusal> {
    if crate::migrate::credentials::is_credential(ticket_text) {
        let admitted = admit_moving(ctx, ticket_text, transport)?;
        admitted.link.set_remote(remote);
        return Ok(admitted);
    }
    let key = ctx
        .ticket_key
        .as_ref()
        .ok_or_else(|| Refusal::node(CloseCode::BadTicket, "this node has no --ticket-pubkey"))?;
    let now = now_unix();
    let t =
        ticket::verify(ticket_text, key, &ctx.node_id, now).map_err(|e| Refusal::player(e.code(), e.to_string()))?;
    if !ctx.accepting.load(Ordering::Relaxed) {
        return Err(Refusal::node(CloseCode::NodeNotAccepting, "the node is not accepting players"));
    }
    if t.module != RELAY && ctx.modules.get(&t.module).is_none() {
        return Err(Refusal::node(CloseCode::UnknownModule, format!("no module {:?} on this node", t.module)));
    }
    if let Some(r) = &t.room {
        outpost_proto::ids::check_name("room", r)
            .map_err(|e| Refusal::player(CloseCode::JoinRefused, e.to_string()))?;
    }
    // Single use is checked last, so a ticket refused for another reason is not burnt.
    {
        let mut guard = ctx.replay.lock().unwrap_or_else(|e| e.into_inner());
        guard.check_and_insert(&t, now).map_err(|e| Refusal::player(e.code(), e.to_string()))?;
    }
    ctx.metrics.tickets_redeemed_total.inc();
    let link = PlayerLink::new(t.player, t.name.clone(), transport, ctx.session.limits.clone(), ctx.metrics.clone());
    link.set_remote(remote);
    let back_to = take_over(ctx, &link).await;
    let placed = place(ctx, &t, &link, back_to).await;
    match placed {
        Ok((room, worker, tick_hz, saved)) => {
            let _ = link.placement.set((room.clone(), worker));
            Ok(Admitted { player: t.player, link, room, worker, tick_hz, saved })
        }
        Err(e) => {
            forget_session(ctx, &link);
            Err(e)
        }
    }
}

/// A player following its room: the credential this node issued when the room moved here puts
/// the new connection on the player's link, which has held its place in the room meanwhile. The
/// guest sees no `leave` or `join`; what the room sent while the player moved waits in the link.
fn admit_moving(
    ctx: &PlayerCtx,
    credential: &str,
    transport: Arc<dyn crate::room::player::PlayerTransport>,
) -> Result<Admitted, Refusal> {
    let m = ctx
        .moves
        .redeem(credential, std::time::Instant::now())
        .map_err(|e| Refusal::player(CloseCode::MoveRefused, e.to_string()))?;
    if m.link.is_closed() {
        return Err(Refusal::player(CloseCode::MoveRefused, "the room closed before the player arrived"));
    }
    m.link.attach(transport);
    if let Some(old) = ctx.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(m.link.id, m.link.clone())
        && !Arc::ptr_eq(&old, &m.link)
    {
        old.close(CloseCode::Replaced, "the player joined again on another connection");
    }
    ctx.metrics.players_moved_in_total.inc();
    Ok(Admitted {
        player: m.link.id,
        link: m.link,
        room: m.room,
        worker: m.worker,
        tick_hz: m.tick_hz,
        saved: SavedState::None,
    })
}

/// Makes `link` its player's current connection. If an older connection of the same player is
/// still open (a client that crashed or changed networks before the node noticed), it is closed
/// with `replaced` and leaves its room before the new one joins: its slot is free again, and the
/// guest sees `leave` before the new `join`. Returns the room the player was in, if any.
async fn take_over(ctx: &PlayerCtx, link: &Arc<PlayerLink>) -> Option<String> {
    let old = ctx.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(link.id, link.clone())?;
    ctx.metrics.players_replaced_total.inc();
    old.close(CloseCode::Replaced, "the player joined again on another connection");
    let (room, worker) = old.placement.get().cloned()?;
    ctx.rooms.leave(worker, room.clone(), old, true).await;
    Some(room)
}

/// Runs the join of a player on a task-based carrier (WebSocket, WebTransport): checks `ticket`,
/// places the player with a link to `transport`, and sends the verdict to `verdict`.
pub(crate) fn spawn_join(
    ctx: &Arc<PlayerCtx>,
    ticket: String,
    transport: Arc<dyn crate::room::player::PlayerTransport>,
    remote: std::net::IpAddr,
    verdict: tokio::sync::mpsc::Sender<Result<Admitted, Refusal>>,
) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let result = admit(&ctx, &ticket, transport, remote).await;
        let _ = verdict.send(result).await;
    });
}

/// How the room side reaches a task-based carrier (WebSocket, WebTransport): a wake-up for
/// frames waiting, and a close to carry out.
#[derive(Default)]
pub(crate) struct TaskSignal {
    wake: tokio::sync::Notify,
    close: Mutex<Option<(CloseCode, String)>>,
}

impl TaskSignal {
    /// Frames wait in the player's backlog.
    pub(crate) fn frames_waiting(&self) {
        self.wake.notify_one();
    }

    /// The room asks for a close.
    pub(crate) fn ask_close(&self, code: CloseCode, reason: String) {
        *self.close.lock().unwrap_or_else(|e| e.into_inner()) = Some((code, reason));
        self.wake.notify_one();
    }

    /// Resolves at the next wake-up.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    /// The close the room asked for, once.
    pub(crate) fn asked_close(&self) -> Option<(CloseCode, String)> {
        self.close.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// What a task-based carrier does when its connection is over: the room hears the player left.
pub(crate) async fn end_session(ctx: &PlayerCtx, session: &mut crate::session::PlayerSession) {
    session.handle_closed();
    if let Some(d) = session.end() {
        ctx.rooms.leave(d.worker, d.room, d.link.clone(), false).await;
        forget_session(ctx, &d.link);
    }
}

/// Forgets `link` as its player's current connection, unless a reconnect has replaced it.
pub(crate) fn forget_session(ctx: &PlayerCtx, link: &Arc<PlayerLink>) {
    let mut sessions = ctx.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if sessions.get(&link.id).is_some_and(|l| Arc::ptr_eq(l, link)) {
        sessions.remove(&link.id);
    }
}

/// Loads the player's saved state and joins them to a room: the one the ticket names, else the
/// one they were in before a reconnect (`back_to`) while it has space, else the fullest open room
/// of the module, else a new one. Returns the room, its worker, its tick rate and the saved state.
async fn place(
    ctx: &PlayerCtx,
    t: &TicketPayload,
    link: &Arc<PlayerLink>,
    back_to: Option<String>,
) -> Result<(String, usize, u32, SavedState), Refusal> {
    let saved = match &ctx.loader {
        Some(l) => l.load(t.player).await,
        None => SavedState::None,
    };
    if t.room.is_none()
        && let Some(room) = back_to
        && let Ok(Some((room, worker))) = ctx.rooms.reserve_player(&t.module, Some(&room), false)
    {
        match ctx.rooms.join(&room, worker, link.clone(), saved.clone()).await {
            Ok(joined) => return Ok((joined.room, worker, joined.tick_hz, saved)),
            // The old room refused (its guest, or it faulted meanwhile): place them afresh.
            Err(r) => {
                tracing::debug!(player = t.player, code = %r.code, reason = r.reason, "could not rejoin the old room")
            }
        }
    }
    // Reserve a slot, creating the room when there is none to join; bounded retries cover the
    // race where another player takes the last slot of a room we just created.
    for _ in 0..4 {
        if let Some((room, worker)) =
            ctx.rooms.reserve_player(&t.module, t.room.as_deref(), t.reserved_room().is_some())?
        {
            let joined = ctx.rooms.join(&room, worker, link.clone(), saved.clone()).await?;
            return Ok((joined.room, worker, joined.tick_hz, saved));
        }
        create_room(ctx, t).await?;
    }
    Err(Refusal::node(CloseCode::RoomFull, "could not find a room with space"))
}

async fn create_room(ctx: &PlayerCtx, t: &TicketPayload) -> Result<(), Refusal> {
    let id = t.room.clone().unwrap_or_else(|| format!("{}-{}", t.module, hex::encode(rand::random::<[u8; 4]>())));
    // A match room holds its match's players, never more than the module allows.
    let cap = |module_max: u32| match t.reserved_room() {
        Some((_, n)) => (n.min(module_max), true),
        None => (module_max, false),
    };
    let result = if t.module == RELAY {
        let (max_players, reserved) = cap(ctx.relay_max_players);
        let spec = RoomSpec {
            id,
            module: RELAY.into(),
            config: Vec::new(),
            tick_hz: ctx.default_tick_hz,
            max_players,
            seed: 0,
            ephemeral: true,
            reserved,
        };
        ctx.rooms.create_relay(spec).await
    } else {
        let modules = ctx.modules.clone();
        let module = t.module.clone();
        let (rec, compiled) = tokio::task::spawn_blocking(move || modules.live(&module))
            .await
            .map_err(|e| Refusal::node(CloseCode::JoinRefused, e.to_string()))?
            .map_err(|e| Refusal::node(CloseCode::UnknownModule, e.to_string()))?;
        let (max_players, reserved) = cap(rec.max_players);
        let spec = RoomSpec {
            id,
            module: rec.name.clone(),
            config: Vec::new(),
            tick_hz: rec.tick_hz,
            max_players,
            seed: rand::random(),
            ephemeral: true,
            reserved,
        };
        ctx.rooms.create(spec, compiled).await
    };
    match result {
        Ok(_) | Err(crate::room::RoomError::Exists(_)) => Ok(()),
        Err(crate::room::RoomError::Full(n)) => {
            Err(Refusal::node(CloseCode::RoomFull, format!("the node is at its limit of {n} rooms")))
        }
        Err(e) => Err(Refusal::node(CloseCode::JoinRefused, e.to_string())),
    }
}
