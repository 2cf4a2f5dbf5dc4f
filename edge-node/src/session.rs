//! One player's protocol, whatever carries it: the `Join` hand-off, frame decoding, datagrams,
//! the per-player rate, the hand-off to the room's worker, and writing the `Joined`/`Refused`
//! answer and then the player's reliable backlog.
//!
//! A [`PlayerSession`] touches no socket and reads no clock: its carrier (the QUIC loop today,
//! WebTransport and WebSocket next) hands it the bytes of the player's reliable stream, its
//! datagrams and the time, and carries out what it asks for ([`PlayerSession::poll_join`],
//! [`PlayerSession::poll_close`], [`PlayerSession::next_chunk`]). So the same checks and limits
//! hold on every carrier, and the protocol is tested without sockets (`quic/carrier.rs`).
//!
//! What it deliberately does not do: check tickets or place players (the carrier runs the join
//! asynchronously and hands back the verdict), or send datagrams (rooms reach players through
//! [`PlayerLink`]).

use crate::room::player::{PlayerLimits, PlayerLink};
use crate::room::worker::Command;
use crate::room::{Refusal, Rooms};
use crate::telemetry::Metrics;
use bytes::{Buf, Bytes};
use outpost_proto::CloseCode;
use outpost_proto::frame::{self, Frame, FrameDecoder, SavedState};
use outpost_proto::rate::TokenBucket;
use outpost_proto::ticket;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a player's messages go: the room workers' queues, which never block the carrier.
pub trait RoomSink: Send + Sync {
    /// Hands `cmd` to room worker `worker`, or gives it back when that worker's queue is full.
    fn try_tell(&self, worker: usize, cmd: Command) -> Result<(), Command>;
}

impl RoomSink for Rooms {
    fn try_tell(&self, worker: usize, cmd: Command) -> Result<(), Command> {
        Rooms::try_tell(self, worker, cmd)
    }
}

/// What every session of a node shares.
#[derive(Clone)]
pub struct SessionCtx {
    /// The rooms players' messages go to.
    pub rooms: Arc<dyn RoomSink>,
    /// Per-player limits.
    pub limits: Arc<PlayerLimits>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// How long a new connection has to send its `Join`.
    pub join_timeout: Duration,
}

/// A joined player, as the join hand-off returns it.
pub struct Admitted {
    /// The player's id (from the ticket, or kept across a move).
    pub player: u64,
    /// The player's link, already in its room.
    pub link: Arc<PlayerLink>,
    /// The room joined.
    pub room: String,
    /// The worker that runs it.
    pub worker: usize,
    /// The room's tick rate.
    pub tick_hz: u32,
    /// The player's saved state, as the guest was given it.
    pub saved: SavedState,
}

/// A player that left: what its carrier must tell the room.
pub struct Departure {
    /// The player's link.
    pub link: Arc<PlayerLink>,
    /// The room it was in.
    pub room: String,
    /// The worker that runs it.
    pub worker: usize,
    /// Datagrams the session read from the carrier (the carrier compares with what arrived).
    pub datagrams_read: u64,
    /// Datagrams read but held for a full worker queue, never delivered.
    pub datagrams_held: u64,
}

/// Where a session is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the client's `Join`.
    AwaitingJoin,
    /// The carrier is checking the ticket and placing the player.
    Admitting,
    /// In a room.
    Joined,
}

/// One player's protocol state.
pub struct PlayerSession {
    peer: SocketAddr,
    phase: Phase,
    /// Until the client has sent its `Join`.
    join_deadline: Option<Instant>,
    decoder: FrameDecoder,
    bucket: TokenBucket,
    /// A `Join`'s ticket, for the carrier to admit.
    join: Option<String>,
    /// The `Joined` or `Refused` frame, written before anything else.
    preamble: Option<Bytes>,
    /// Frames taken from the player's backlog, being written.
    out: VecDeque<Bytes>,
    /// A message the room worker's full queue did not take; nothing more is read until it goes.
    held: Option<Command>,
    link: Option<Arc<PlayerLink>>,
    placed: Option<(String, usize)>,
    /// Close now.
    close: Option<(CloseCode, String)>,
    /// Close once the preamble is written (a refusal's frame first).
    close_after_flush: Option<(CloseCode, String)>,
    /// The client finished or reset its side of the stream.
    read_done: bool,
    /// Writing failed for good (the client stopped or reset its stream).
    write_dead: bool,
    /// Closed, by the node or the peer: nothing more is read or written.
    closed: bool,
    datagrams_read: u64,
}

impl PlayerSession {
    /// The remote address of the connection.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// A session for a new connection from `peer` at `now`.
    pub fn new(ctx: &SessionCtx, peer: SocketAddr, now: Instant) -> Self {
        PlayerSession {
            peer,
            phase: Phase::AwaitingJoin,
            join_deadline: Some(now + ctx.join_timeout),
            // Nothing but a `Join` is accepted before joining, and a ticket is short.
            decoder: FrameDecoder::new(ticket::MAX_TICKET_LEN + 16),
            bucket: TokenBucket::new(ctx.limits.burst, now),
            join: None,
            preamble: None,
            out: VecDeque::new(),
            held: None,
            link: None,
            placed: None,
            close: None,
            close_after_flush: None,
            read_done: false,
            write_dead: false,
            closed: false,
            datagrams_read: 0,
        }
    }

    /// Where the session is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The player's link, once joined.
    pub fn link(&self) -> Option<&Arc<PlayerLink>> {
        self.link.as_ref()
    }

    /// Whether the carrier should hand over more of the reliable stream: not while the join is
    /// being decided, a message waits for a full worker queue, or after the end.
    pub fn wants_stream_data(&self) -> bool {
        !self.is_closing() && self.phase != Phase::Admitting && self.held.is_none() && !self.read_done
    }

    /// Whether the carrier should hand over datagrams.
    pub fn wants_datagrams(&self) -> bool {
        !self.is_closing() && self.phase == Phase::Joined && self.held.is_none()
    }

    /// Closed, or about to be: nothing more is read.
    pub fn is_closing(&self) -> bool {
        self.closed || self.close.is_some()
    }

    /// Whether a message waits for a full worker queue ([`PlayerSession::retry_held`]).
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// Bytes of the player's reliable stream, as they arrived.
    pub fn handle_stream_data(&mut self, bytes: &[u8]) {
        self.decoder.push(bytes);
    }

    /// The client finished (or reset) its side of the stream.
    pub fn handle_stream_end(&mut self) {
        self.read_done = true;
    }

    /// Decodes and acts on the frames received so far: the `Join` before joining, then messages
    /// for the room. Stops at a message the room's full queue did not take, and at any breach.
    pub fn process_frames(&mut self, ctx: &SessionCtx, now: Instant) {
        if self.is_closing() || self.phase == Phase::Admitting || self.held.is_some() {
            return;
        }
        loop {
            match (self.phase, self.decoder.next_frame()) {
                (Phase::AwaitingJoin, Ok(Some(Frame::Join { ticket }))) => {
                    self.phase = Phase::Admitting;
                    self.join_deadline = None;
                    self.join = Some(ticket);
                    return;
                }
                (Phase::AwaitingJoin, Ok(Some(other))) => {
                    let reason = format!("expected Join, got {}", frame_name(&other));
                    return self.refuse(ctx, CloseCode::FrameMalformed, &reason);
                }
                (Phase::AwaitingJoin, Err(e)) => return self.refuse(ctx, e.code(), &e.to_string()),
                (_, Ok(Some(Frame::Message { peer, data }))) => {
                    if self.over_rate(ctx, now) || !self.hand_to_room(ctx, peer, data, true) {
                        return;
                    }
                }
                (_, Ok(Some(other))) => {
                    let reason = format!("unexpected {} frame after join", frame_name(&other));
                    return self.breach(ctx, CloseCode::FrameMalformed, &reason);
                }
                (_, Err(e)) => return self.breach(ctx, e.code(), &e.to_string()),
                (_, Ok(None)) => break,
            }
        }
        if self.read_done && self.phase == Phase::AwaitingJoin {
            self.refuse(ctx, CloseCode::FrameMalformed, "stream ended before Join");
        }
    }

    /// One datagram from the player. Every datagram counts against the player's rate, the ones
    /// dropped here included, so junk cannot be sent faster than messages.
    pub fn handle_datagram(&mut self, ctx: &SessionCtx, now: Instant, d: &[u8]) {
        self.datagrams_read += 1;
        if self.over_rate(ctx, now) {
            return;
        }
        // The carrier authenticates datagrams, so a short one is the client's own doing.
        let (to, data) = match frame::decode_peer(d) {
            Ok(v) => v,
            Err(e) => return self.breach(ctx, e.code(), &format!("datagram: {e}")),
        };
        // Over the cap is not an error: a client cannot know the node's cap, and the path
        // carried it. Dropped, counted.
        if data.len() > ctx.limits.datagram_cap {
            ctx.metrics.player_datagrams_in_dropped_total.inc();
            return;
        }
        self.hand_to_room(ctx, to, data.to_vec(), false);
    }

    /// The ticket of a `Join` the carrier must now check and place (once).
    pub fn poll_join(&mut self) -> Option<String> {
        self.join.take()
    }

    /// The join's verdict: write `Joined` and start serving, or write `Refused` and close.
    pub fn handle_admitted(&mut self, ctx: &SessionCtx, result: Result<Admitted, Refusal>) {
        match result {
            Err(refusal) => {
                // Counted before the client can read the refusal, so whoever sees it sees it counted.
                ctx.metrics.players_refused_total.inc();
                let remote = self.peer;
                if refusal.is_operators_business() {
                    tracing::warn!(code = %refusal.code, reason = refusal.reason, %remote, "join refused");
                } else {
                    tracing::debug!(code = %refusal.code, blame = ?refusal.blame, reason = refusal.reason, %remote, "join refused");
                }
                let Refusal { code, reason, .. } = refusal;
                self.preamble = Some(Bytes::from(Frame::Refused { code, reason: reason.clone() }.encode()));
                self.close_after_flush = Some((code, reason));
            }
            Ok(a) => {
                let joined =
                    Frame::Joined { player_id: a.player, room: a.room.clone(), tick_hz: a.tick_hz, saved: a.saved };
                self.preamble = Some(Bytes::from(joined.encode()));
                self.phase = Phase::Joined;
                tracing::debug!(player = a.player, room = %a.room, "player joined");
                // A frame body is the type byte, the 8-byte peer and the message.
                self.decoder = FrameDecoder::new(ctx.limits.max_message + 9);
                self.link = Some(a.link);
                self.placed = Some((a.room, a.worker));
            }
        }
    }

    /// The next bytes to write on the player's reliable stream: the preamble, then the player's
    /// backlog. The carrier writes what it can and reports it with [`PlayerSession::wrote`].
    pub fn next_chunk(&mut self) -> Option<&mut Bytes> {
        if self.write_dead || self.closed {
            return None;
        }
        if self.preamble.is_some() {
            return self.preamble.as_mut();
        }
        if self.out.is_empty()
            && self.phase == Phase::Joined
            && let Some(link) = &self.link
        {
            link.take_frames(&mut self.out);
        }
        self.out.front_mut()
    }

    /// `n` bytes of the chunk [`PlayerSession::next_chunk`] gave went onto the stream.
    pub fn wrote(&mut self, n: usize) {
        if let Some(p) = &mut self.preamble {
            p.advance(n.min(p.len()));
            if p.is_empty() {
                self.preamble = None;
            }
            return;
        }
        let Some(front) = self.out.front_mut() else { return };
        front.advance(n.min(front.len()));
        if front.is_empty() {
            self.out.pop_front();
        }
        if let Some(link) = &self.link {
            link.written(n);
        }
    }

    /// Writing failed for good: the client stopped or reset its stream.
    pub fn write_failed(&mut self) {
        self.write_dead = true;
        self.out.clear();
    }

    /// When the session needs [`PlayerSession::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.join_deadline
    }

    /// Time passed: a connection that has not sent its `Join` by its deadline is refused.
    pub fn handle_timeout(&mut self, ctx: &SessionCtx, now: Instant) {
        if self.join_deadline.is_some_and(|d| d <= now) {
            self.join_deadline = None;
            if self.phase == Phase::AwaitingJoin {
                self.refuse(ctx, CloseCode::FrameMalformed, "no Join within the join timeout");
            }
        }
    }

    /// Closes a joined player whose reliable backlog has stayed over its limit past the grace
    /// period while its stream took nothing (a room that stopped sending would never check).
    pub fn check_stalled(&mut self, now: Instant) {
        if self.phase != Phase::Joined || self.closed {
            return;
        }
        if let Some(link) = self.link.as_ref().filter(|l| l.stalled(now)) {
            link.close(CloseCode::SlowConsumer, "reliable backlog stayed over its limit");
            self.close_now(CloseCode::SlowConsumer, "reliable backlog stayed over its limit");
        }
    }

    /// The carrier's periodic look while something waits (a frame to write, a held message):
    /// the slow-consumer clock, and the held message offered again (reading resumes once it went).
    pub fn housekeep(&mut self, ctx: &SessionCtx, now: Instant) {
        self.check_stalled(now);
        if self.is_held() && self.retry_held(ctx) {
            self.process_frames(ctx, now);
        }
    }

    /// Offers the held message to its worker again; true once it went (reading resumes).
    pub fn retry_held(&mut self, ctx: &SessionCtx) -> bool {
        let (Some(cmd), Some((_, worker))) = (self.held.take(), &self.placed) else { return true };
        match ctx.rooms.try_tell(*worker, cmd) {
            Ok(()) => true,
            Err(cmd) => {
                self.held = Some(cmd);
                false
            }
        }
    }

    /// A close the carrier must carry out now, with its code and reason (cut to 200
    /// characters). From then on the session reads and writes nothing.
    pub fn poll_close(&mut self) -> Option<(CloseCode, String)> {
        let (code, reason) = self.close.take()?;
        self.closed = true;
        Some((code, reason.chars().take(200).collect()))
    }

    /// A close that waits for the refusal's frame: the carrier asks once it has put what was
    /// written into packets, so the client reads why before the connection ends.
    pub fn poll_close_after_flush(&mut self) -> Option<(CloseCode, String)> {
        let (code, reason) = self.close_after_flush.take()?;
        self.closed = true;
        Some((code, reason.chars().take(200).collect()))
    }

    /// The carrier closed the connection (or saw it closed): nothing more is read or written.
    pub fn handle_closed(&mut self) {
        self.closed = true;
        if let Some(l) = &self.link {
            l.mark_lost();
        }
    }

    /// Asks for a close from outside the protocol (a room's kick, the node's shutdown).
    pub fn close_now(&mut self, code: CloseCode, reason: &str) {
        if !self.is_closing() {
            self.close = Some((code, reason.to_string()));
        }
    }

    /// The connection ended, by either side. Returns what the room must be told, once.
    pub fn end(&mut self) -> Option<Departure> {
        self.closed = true;
        let link = self.link.clone()?;
        link.mark_lost();
        let (room, worker) = self.placed.take()?;
        let datagrams_held = u64::from(matches!(self.held.take(), Some(Command::Message { reliable: false, .. })));
        Some(Departure { link, room, worker, datagrams_read: self.datagrams_read, datagrams_held })
    }

    /// Takes one message from the player's rate; when it is over, closes the player.
    fn over_rate(&mut self, ctx: &SessionCtx, now: Instant) -> bool {
        if self.bucket.take(now, ctx.limits.rate, ctx.limits.burst) {
            return false;
        }
        let reason = format!("over {} messages per second", ctx.limits.rate);
        self.breach(ctx, CloseCode::RateLimited, &reason);
        true
    }

    /// Hands a message to the room's worker. False when the worker's queue is full: the
    /// message is held, and nothing more is read from this player until it goes.
    fn hand_to_room(&mut self, ctx: &SessionCtx, to: u64, data: Vec<u8>, reliable: bool) -> bool {
        let (Some((room, worker)), Some(link)) = (&self.placed, &self.link) else { return true };
        let cmd = Command::Message { room: room.clone(), player: link.id, to, data, reliable };
        match ctx.rooms.try_tell(*worker, cmd) {
            Ok(()) => true,
            Err(cmd) => {
                self.held = Some(cmd);
                false
            }
        }
    }

    /// Refuses a connection that has not joined: counted, logged, closed with `code`.
    fn refuse(&mut self, ctx: &SessionCtx, code: CloseCode, reason: &str) {
        ctx.metrics.players_refused_total.inc();
        tracing::debug!(code = %code, reason, remote = %self.peer, "join refused");
        self.close_now(code, reason);
    }

    /// Closes a joined player that broke the protocol or its limits, counted once per close.
    fn breach(&mut self, ctx: &SessionCtx, code: CloseCode, reason: &str) {
        if self.is_closing() {
            return;
        }
        ctx.metrics.players_closed_protocol_total.inc();
        self.close_now(code, reason);
    }
}

/// A frame's name, for close reasons.
pub fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Join { .. } => "Join",
        Frame::Joined { .. } => "Joined",
        Frame::Refused { .. } => "Refused",
        Frame::Message { .. } => "Message",
        Frame::Moved { .. } => "Moved",
    }
}
