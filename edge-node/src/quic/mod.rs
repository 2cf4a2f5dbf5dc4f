//! The player endpoint: QUIC (ALPN `outpost/1`), join by signed ticket, then frames and datagrams
//! between the player and their room.
//!
//! Each connection is one task: it reads the `Join`, verifies the ticket offline (signature,
//! expiry, node, single use), places the player, then forwards what the player sends to the room's
//! worker. Every limit is checked here, before a byte reaches a room: frame size, message rate,
//! datagram size. A misbehaving player is closed with a precise code; nothing they send can take
//! down the node.

pub mod admission;

use crate::modules::ModuleStore;
use crate::room::Rooms;
use crate::room::player::{PlayerLimits, PlayerLink};
use crate::room::worker::{Command, RoomSpec};
use crate::telemetry::Metrics;
use outpost_proto::CloseCode;
use outpost_proto::frame::{self, Frame, FrameDecoder, SavedState};
use outpost_proto::keys::Ed25519PublicKey;
use outpost_proto::rate::TokenBucket;
use outpost_proto::ticket::{self, ReplayGuard, TicketPayload};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Per-player limits.
    pub limits: Arc<PlayerLimits>,
    /// False while draining: joins are refused with `node-not-accepting`.
    pub accepting: Arc<AtomicBool>,
    /// Loads joining players' saved state from the core, when the node forwards to one.
    pub loader: Option<Arc<crate::forward::loader::StateLoader>>,
    /// How long a client has to send its `Join`.
    pub join_timeout: Duration,
    /// Player cap for relay rooms.
    pub relay_max_players: u32,
    /// Default tick rate (relay rooms report it).
    pub default_tick_hz: u32,
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Accepts connections until the endpoint is closed.
pub async fn serve(endpoint: quinn::Endpoint, ctx: Arc<PlayerCtx>) {
    while let Some(incoming) = endpoint.accept().await {
        let slot = match ctx.admission.admit(incoming.remote_address().ip(), incoming.remote_address_validated()) {
            admission::Verdict::Accept(slot) => slot,
            admission::Verdict::Retry => {
                ctx.metrics.player_connections_retried_total.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = incoming.retry() {
                    // Only a client that already retried cannot be asked again, and those are
                    // validated, so this is not expected; refusing is the safe answer.
                    e.into_incoming().refuse();
                }
                continue;
            }
            admission::Verdict::Refuse(why) => {
                ctx.metrics.player_connections_refused_total.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(remote = %incoming.remote_address(), why, "player connection refused");
                incoming.refuse();
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => session(conn, ctx, slot).await,
                Err(e) => tracing::debug!(error = %e, "player handshake failed"),
            }
        });
    }
}

fn refuse(ctx: &PlayerCtx, conn: &quinn::Connection, code: CloseCode, reason: &str) {
    ctx.metrics.players_refused_total.fetch_add(1, Ordering::Relaxed);
    close_refused(conn, code, reason);
}

/// Closes a refused connection that has already been counted.
fn close_refused(conn: &quinn::Connection, code: CloseCode, reason: &str) {
    tracing::debug!(code = %code, reason, remote = %conn.remote_address(), "join refused");
    conn.close(code.to_u32().into(), reason.as_bytes());
}

async fn read_join(recv: &mut quinn::RecvStream) -> Result<String, (CloseCode, String)> {
    let mut dec = FrameDecoder::new(ticket::MAX_TICKET_LEN + 16);
    let mut buf = [0u8; 1024];
    loop {
        match dec.next_frame() {
            Ok(Some(Frame::Join { ticket })) => return Ok(ticket),
            Ok(Some(other)) => return Err((CloseCode::FrameMalformed, format!("expected Join, got {other:?}"))),
            Ok(None) => {}
            Err(e) => return Err((e.code(), e.to_string())),
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => dec.push(&buf[..n]),
            _ => return Err((CloseCode::FrameMalformed, "stream ended before Join".into())),
        }
    }
}

/// A player let in: the ticket, its link, where it joined, and the saved state it was given.
struct Admitted {
    ticket: TicketPayload,
    link: Arc<PlayerLink>,
    room: String,
    worker: usize,
    tick_hz: u32,
    saved: SavedState,
}

/// Verifies the ticket and places the player; returns the room, its worker and the tick rate.
async fn admit(
    ctx: &PlayerCtx,
    ticket_text: &str,
    link_for: impl FnOnce(&TicketPayload) -> Arc<PlayerLink>,
) -> Result<Admitted, (CloseCode, String)> {
    let key = ctx.ticket_key.as_ref().ok_or((CloseCode::BadTicket, "this node has no --ticket-pubkey".to_string()))?;
    let now = now_unix();
    let t = ticket::verify(ticket_text, key, &ctx.node_id, now).map_err(|e| (e.code(), e.to_string()))?;
    if !ctx.accepting.load(Ordering::Relaxed) {
        return Err((CloseCode::NodeNotAccepting, "the node is not accepting players".into()));
    }
    if t.module != RELAY && ctx.modules.get(&t.module).is_none() {
        return Err((CloseCode::UnknownModule, format!("no module {:?} on this node", t.module)));
    }
    if let Some(r) = &t.room {
        outpost_proto::ids::check_name("room", r).map_err(|e| (CloseCode::JoinRefused, e.to_string()))?;
    }
    // Single use is checked last, so a ticket refused for another reason is not burnt.
    {
        let mut guard = ctx.replay.lock().unwrap_or_else(|e| e.into_inner());
        guard.check_and_insert(&t, now).map_err(|e| (e.code(), e.to_string()))?;
    }
    let link = link_for(&t);
    let back_to = take_over(ctx, &link).await;
    let placed = place(ctx, &t, &link, back_to).await;
    match placed {
        Ok((room, worker, tick_hz, saved)) => {
            let _ = link.placement.set((room.clone(), worker));
            Ok(Admitted { ticket: t, link, room, worker, tick_hz, saved })
        }
        Err(e) => {
            forget_session(ctx, &link);
            Err(e)
        }
    }
}

/// Makes `link` its player's current connection. If an older connection of the same player is
/// still open (a client that crashed or changed networks before the node noticed), it is closed
/// with `replaced` and leaves its room before the new one joins: its slot is free again, and the
/// guest sees `leave` before the new `join`. Returns the room the player was in, if any.
async fn take_over(ctx: &PlayerCtx, link: &Arc<PlayerLink>) -> Option<String> {
    let old = ctx.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(link.id, link.clone())?;
    ctx.metrics.players_replaced_total.fetch_add(1, Ordering::Relaxed);
    old.close(CloseCode::Replaced, "the player joined again on another connection");
    let (room, worker) = old.placement.get().cloned()?;
    ctx.rooms.leave(worker, room.clone(), old, true).await;
    Some(room)
}

/// Forgets `link` as its player's current connection, unless a reconnect has replaced it.
fn forget_session(ctx: &PlayerCtx, link: &Arc<PlayerLink>) {
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
) -> Result<(String, usize, u32, SavedState), (CloseCode, String)> {
    let saved = match &ctx.loader {
        Some(l) => l.load(t.player).await,
        None => SavedState::None,
    };
    if t.room.is_none()
        && let Some(room) = back_to
        && let Ok(Some((room, worker))) = ctx.rooms.reserve_player(&t.module, Some(&room))
    {
        match ctx.rooms.join(&room, worker, link.clone(), saved.clone()).await {
            Ok(joined) => return Ok((joined.room, worker, joined.tick_hz, saved)),
            // The old room refused (its guest, or it faulted meanwhile): place them afresh.
            Err((code, reason)) => tracing::debug!(player = t.player, %code, reason, "could not rejoin the old room"),
        }
    }
    // Reserve a slot, creating the room when there is none to join; bounded retries cover the
    // race where another player takes the last slot of a room we just created.
    for _ in 0..4 {
        if let Some((room, worker)) = ctx.rooms.reserve_player(&t.module, t.room.as_deref())? {
            let joined = ctx.rooms.join(&room, worker, link.clone(), saved.clone()).await?;
            return Ok((joined.room, worker, joined.tick_hz, saved));
        }
        create_room(ctx, t).await?;
    }
    Err((CloseCode::RoomFull, "could not find a room with space".into()))
}

async fn create_room(ctx: &PlayerCtx, t: &TicketPayload) -> Result<(), (CloseCode, String)> {
    let id = t.room.clone().unwrap_or_else(|| format!("{}-{}", t.module, hex::encode(rand::random::<[u8; 4]>())));
    let result = if t.module == RELAY {
        let spec = RoomSpec {
            id,
            module: RELAY.into(),
            config: Vec::new(),
            tick_hz: ctx.default_tick_hz,
            max_players: ctx.relay_max_players,
            seed: 0,
            ephemeral: true,
        };
        ctx.rooms.create_relay(spec).await
    } else {
        let modules = ctx.modules.clone();
        let module = t.module.clone();
        let (rec, compiled) = tokio::task::spawn_blocking(move || modules.live(&module))
            .await
            .map_err(|e| (CloseCode::JoinRefused, e.to_string()))?
            .map_err(|e| (CloseCode::UnknownModule, e.to_string()))?;
        let spec = RoomSpec {
            id,
            module: rec.name.clone(),
            config: Vec::new(),
            tick_hz: rec.tick_hz,
            max_players: rec.max_players,
            seed: rand::random(),
            ephemeral: true,
        };
        ctx.rooms.create(spec, compiled).await
    };
    match result {
        Ok(_) | Err(crate::room::RoomError::Exists(_)) => Ok(()),
        Err(crate::room::RoomError::Full(n)) => {
            Err((CloseCode::RoomFull, format!("the node is at its limit of {n} rooms")))
        }
        Err(e) => Err((CloseCode::JoinRefused, e.to_string())),
    }
}

/// One player connection from handshake to close; `slot` holds its place in the connection caps
/// for as long as the connection lives.
async fn session(conn: quinn::Connection, ctx: Arc<PlayerCtx>, mut slot: admission::ConnSlot) {
    let opened = tokio::time::timeout(ctx.join_timeout, async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| (CloseCode::FrameMalformed, e.to_string()))?;
        let ticket = read_join(&mut recv).await?;
        Ok::<_, (CloseCode, String)>((send, recv, ticket))
    })
    .await;
    let (mut send, mut recv, ticket_text) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err((code, reason))) => return refuse(&ctx, &conn, code, &reason),
        Err(_) => return refuse(&ctx, &conn, CloseCode::FrameMalformed, "no Join within the join timeout"),
    };
    let make_link = |t: &TicketPayload| {
        PlayerLink::new(t.player, t.name.clone(), conn.clone(), ctx.limits.clone(), ctx.metrics.clone())
    };
    let Admitted { ticket: t, link, room, worker, tick_hz, saved } = match admit(&ctx, &ticket_text, make_link).await {
        Ok(v) => v,
        Err((code, reason)) => {
            // Counted before the client can read the refusal, so whoever sees it sees it counted.
            ctx.metrics.players_refused_total.fetch_add(1, Ordering::Relaxed);
            let _ = send.write_all(&Frame::Refused { code, reason: reason.clone() }.encode()).await;
            return close_refused(&conn, code, &reason);
        }
    };
    let joined = Frame::Joined { player_id: t.player, room: room.clone(), tick_hz, saved };
    if send.write_all(&joined.encode()).await.is_err() {
        ctx.rooms.leave(worker, room, link.clone(), false).await;
        forget_session(&ctx, &link);
        return;
    }
    slot.joined();
    tracing::debug!(player = t.player, room = %room, "player joined");
    tokio::spawn(link.clone().write_loop(send));
    let bucket = Arc::new(Mutex::new(TokenBucket::new(ctx.limits.burst, Instant::now())));
    let read = Arc::new(AtomicU64::new(0));
    let datagrams = tokio::spawn({
        let (conn, ctx, room, link, bucket, read) =
            (conn.clone(), ctx.clone(), room.clone(), link.clone(), bucket.clone(), read.clone());
        async move {
            let datagrams = read_datagrams(conn, &ctx, room, worker, t.player, &bucket, &read).await;
            close_on_breach(&ctx, &link, datagrams);
        }
    });
    let frames = read_frames(&mut recv, &ctx, &room, worker, t.player, &bucket).await;
    close_on_breach(&ctx, &link, frames);
    conn.closed().await;
    datagrams.abort();
    count_unread_datagrams(&ctx, &conn, t.player, read.load(Ordering::Relaxed));
    ctx.rooms.leave(worker, room, link.clone(), false).await;
    forget_session(&ctx, &link);
}

/// Closes the player when one of its readers ended on a breach (an `Err`: the code and reason),
/// counted once per close, whichever reader found it.
fn close_on_breach(ctx: &PlayerCtx, link: &PlayerLink, read: Result<(), (CloseCode, String)>) {
    if let Err((code, reason)) = read {
        ctx.metrics.players_closed_protocol_total.fetch_add(1, Ordering::Relaxed);
        link.close(code, &reason);
    }
}

fn allow(bucket: &Mutex<TokenBucket>, limits: &PlayerLimits) -> bool {
    bucket.lock().map(|mut b| b.take(Instant::now(), limits.rate, limits.burst)).unwrap_or(false)
}

/// Reads reliable frames until the stream ends; an `Err` is why the player must be closed.
async fn read_frames(
    recv: &mut quinn::RecvStream,
    ctx: &PlayerCtx,
    room: &str,
    worker: usize,
    player: u64,
    bucket: &Mutex<TokenBucket>,
) -> Result<(), (CloseCode, String)> {
    // A frame body is the type byte, the 8-byte peer and the message.
    let mut dec = FrameDecoder::new(ctx.limits.max_message + 9);
    loop {
        loop {
            match dec.next_frame() {
                Ok(Some(Frame::Message { peer, data })) => {
                    if !allow(bucket, &ctx.limits) {
                        return Err((CloseCode::RateLimited, format!("over {} messages per second", ctx.limits.rate)));
                    }
                    let cmd = Command::Message { room: room.to_string(), player, to: peer, data, reliable: true };
                    ctx.rooms.tell(worker, cmd).await;
                }
                Ok(Some(other)) => {
                    return Err((
                        CloseCode::FrameMalformed,
                        format!("unexpected {} frame after join", frame_name(&other)),
                    ));
                }
                Ok(None) => break,
                Err(e) => return Err((e.code(), e.to_string())),
            }
        }
        // quinn's own received chunks, not a read buffer of ours: an idle player would keep a
        // buffer of its size for the whole session (16 KiB of the node's memory per player).
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => dec.push(&chunk.bytes),
            Ok(None) | Err(_) => return Ok(()),
        }
    }
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Join { .. } => "Join",
        Frame::Joined { .. } => "Joined",
        Frame::Refused { .. } => "Refused",
        Frame::Message { .. } => "Message",
    }
}

/// Counts the player's datagrams that quinn received but the node never read. quinn keeps at most
/// [`PlayerLimits::datagram_in_bytes`] of them per connection and, when that is full,
/// drops the oldest without telling anyone: this happens when the room worker falls behind (the
/// reader waits for room in the worker's queue) or when a client sends before it has joined. The
/// player's datagrams still queued when it left are counted too: they were dropped as well.
fn count_unread_datagrams(ctx: &PlayerCtx, conn: &quinn::Connection, player: u64, read: u64) {
    let unread = conn.stats().frame_rx.datagram.saturating_sub(read);
    if unread > 0 {
        ctx.metrics.player_datagrams_in_unread_total.fetch_add(unread, Ordering::Relaxed);
        tracing::info!(player, unread, read, "player datagrams dropped unread");
    }
}

/// Reads a player's datagrams until the connection ends; an `Err` is why the player must be
/// closed. Every datagram counts against the player's rate, the ones dropped here included, so
/// junk cannot be sent faster than messages.
async fn read_datagrams(
    conn: quinn::Connection,
    ctx: &PlayerCtx,
    room: String,
    worker: usize,
    player: u64,
    bucket: &Mutex<TokenBucket>,
    read: &AtomicU64,
) -> Result<(), (CloseCode, String)> {
    while let Ok(d) = conn.read_datagram().await {
        read.fetch_add(1, Ordering::Relaxed);
        if !allow(bucket, &ctx.limits) {
            return Err((CloseCode::RateLimited, format!("over {} messages per second", ctx.limits.rate)));
        }
        // QUIC authenticates datagrams, so a short one is the client's own doing, not the path's.
        let (to, data) = frame::decode_peer(&d).map_err(|e| (e.code(), format!("datagram: {e}")))?;
        // Over the cap is not an error: a client cannot know the node's cap, and the path
        // carried it. Dropped, counted.
        if data.len() > ctx.limits.datagram_cap {
            ctx.metrics.player_datagrams_in_dropped_total.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let cmd = Command::Message { room: room.clone(), player, to, data: data.to_vec(), reliable: false };
        ctx.rooms.tell(worker, cmd).await;
    }
    Ok(())
}
