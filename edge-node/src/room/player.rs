//! A connected player as a room sees it: where its reliable frames and datagrams go.
//!
//! Workers push into a [`PlayerLink`] without ever blocking: reliable frames join a byte-counted
//! backlog that the player's carrier drains onto its reliable stream; datagrams go straight to
//! the carrier ([`PlayerTransport`]), which drops and counts them when the player is congested.
//! A backlog that stays over its limit closes the player as a slow consumer, so one stalled
//! client never grows the node's memory or holds up its room.
//!
//! The room side owns [`PlayerTransport`]: a carrier (QUIC today; WebTransport and WebSocket
//! next) implements it, and a link can be detached from one carrier and attached to another, so
//! a player can change connections while its room keeps the same link. Nothing here reads a
//! clock: callers pass the time.

use crate::telemetry::Metrics;
use bytes::Bytes;
use outpost_proto::CloseCode;
use outpost_proto::frame::{self, Frame};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Per-player limits.
#[derive(Debug, Clone)]
pub struct PlayerLimits {
    /// Largest message a player may send (reliable frame body or datagram payload).
    pub max_message: usize,
    /// Messages per second a player may send, sustained.
    pub rate: f64,
    /// Burst of messages above the rate.
    pub burst: f64,
    /// Reliable backlog a player may have before the slow-consumer clock starts.
    pub backlog_bytes: usize,
    /// How long the backlog may stay over the limit.
    pub slow_grace: Duration,
    /// Largest unreliable payload sent as a datagram.
    pub datagram_cap: usize,
    /// Bytes of datagrams quinn may queue from a player before the node reads them (it drops
    /// the oldest beyond this). The default, 128 KiB, is about a second of datagrams at the cap
    /// and the default rate.
    pub datagram_in_bytes: usize,
    /// Bytes of datagrams queued to a player before further ones are dropped and counted.
    pub datagram_out_bytes: usize,
}

impl PlayerLimits {
    /// The backlog no player may exceed even during the grace period.
    pub fn backlog_hard_bytes(&self) -> usize {
        self.backlog_bytes.saturating_mul(16)
    }

    /// QUIC flow-control window for a player's reliable stream (and so the connection): what
    /// quinn may hold for the player while the node is not reading, for instance while its room
    /// worker's queue is full. quinn's default (1.25 MB per stream, no connection limit) would let
    /// each of thousands of players park over a megabyte; four of the largest frames keep a
    /// player who sends big messages moving at any sane round trip.
    pub fn receive_window(&self) -> u32 {
        let frame = self.max_message.saturating_add(9);
        u32::try_from(frame.saturating_mul(4)).unwrap_or(u32::MAX).max(64 << 10)
    }
}

impl Default for PlayerLimits {
    fn default() -> Self {
        PlayerLimits {
            max_message: 64 << 10,
            rate: 120.0,
            burst: 240.0,
            backlog_bytes: 256 << 10,
            slow_grace: Duration::from_secs(2),
            datagram_cap: 1100,
            datagram_in_bytes: 128 << 10,
            datagram_out_bytes: 1 << 20,
        }
    }
}

/// What a room needs from the connection a player is on. Every call is non-blocking: room
/// workers call it while running a room's turn.
pub trait PlayerTransport: Send + Sync {
    /// The player's reliable backlog went from empty to not: its carrier should take frames.
    fn frames_waiting(&self);
    /// An unreliable message, already framed with its sender; dropped and counted when the
    /// player is congested.
    fn datagram(&self, d: Bytes);
    /// Close the player's connection with `code` and `reason`.
    fn close(&self, code: CloseCode, reason: String);
}

/// A link's carrier while it has none (detached between two connections): datagrams are
/// dropped and counted, frames wait in the backlog, and a close is remembered by the link.
struct Detached(Arc<Metrics>);

impl PlayerTransport for Detached {
    fn frames_waiting(&self) {}
    fn datagram(&self, _: Bytes) {
        self.0.player_datagrams_dropped_total.inc();
    }
    fn close(&self, _: CloseCode, _: String) {}
}

#[derive(Debug, Default)]
struct Backlog {
    frames: VecDeque<Bytes>,
    bytes: usize,
    over_since: Option<Instant>,
}

/// One player's outbound side.
pub struct PlayerLink {
    /// Player id.
    pub id: u64,
    /// Display name from the ticket.
    pub name: String,
    /// The room and worker it joined, once it has: where a reconnect finds it to take over.
    pub placement: std::sync::OnceLock<(String, usize)>,
    /// The carrier the player is on now. A read lock per send: attaching happens once per
    /// connection, sending many times per tick.
    conn: RwLock<Arc<dyn PlayerTransport>>,
    backlog: Mutex<Backlog>,
    /// Set when the node closes the player or the transport sees the connection gone: read on
    /// every send, so it is an atomic rather than the backlog's lock.
    closed: AtomicBool,
    /// On no carrier: detached, or placed here by a move and not rejoined yet.
    detached: AtomicBool,
    /// The address the player's connection comes from: a draining node asks the routers where
    /// the room's players are best served by it.
    remote: Mutex<Option<std::net::IpAddr>>,
    limits: Arc<PlayerLimits>,
    metrics: Arc<Metrics>,
}

impl PlayerLink {
    /// A link to the player on connection `conn`.
    pub fn new(
        id: u64,
        name: String,
        conn: Arc<dyn PlayerTransport>,
        limits: Arc<PlayerLimits>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(PlayerLink {
            id,
            name,
            placement: std::sync::OnceLock::new(),
            conn: RwLock::new(conn),
            backlog: Mutex::default(),
            closed: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            remote: Mutex::new(None),
            limits,
            metrics,
        })
    }

    /// Records where the player's connection comes from.
    pub fn set_remote(&self, ip: std::net::IpAddr) {
        *self.remote.lock().unwrap_or_else(|e| e.into_inner()) = Some(ip);
    }

    /// Where the player's connection comes from, when known.
    pub fn remote(&self) -> Option<std::net::IpAddr> {
        *self.remote.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conn(&self) -> std::sync::RwLockReadGuard<'_, Arc<dyn PlayerTransport>> {
        self.conn.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A link with no carrier yet: a player whose room moved here and who has not rejoined.
    pub fn detached(id: u64, name: String, limits: Arc<PlayerLimits>, metrics: Arc<Metrics>) -> Arc<Self> {
        let link = PlayerLink::new(id, name, Arc::new(Detached(metrics.clone())), limits, metrics);
        link.detached.store(true, Ordering::Relaxed);
        link
    }

    /// Whether the player has no carrier now.
    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }

    /// Takes the player off its carrier: until [`PlayerLink::attach`], datagrams are dropped
    /// (counted) and reliable frames wait in the backlog, under its usual limits.
    pub fn detach(&self) -> Arc<dyn PlayerTransport> {
        let mut conn = self.conn.write().unwrap_or_else(|e| e.into_inner());
        self.detached.store(true, Ordering::Relaxed);
        std::mem::replace(&mut *conn, Arc::new(Detached(self.metrics.clone())))
    }

    /// Puts the player on carrier `conn`; frames already waiting are announced to it.
    pub fn attach(&self, conn: Arc<dyn PlayerTransport>) {
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = conn;
        self.detached.store(false, Ordering::Relaxed);
        if !self.backlog().frames.is_empty() {
            self.conn().frames_waiting();
        }
    }

    /// Queues a reliable message from `from` (0 = the room); `now` starts the slow-consumer
    /// clock when the backlog goes over its limit.
    pub fn send_reliable(&self, from: u64, data: &[u8], now: Instant) {
        self.send_frame(&Frame::Message { peer: from, data: data.to_vec() }, now);
    }

    /// Queues any frame for the player's stream, after what is already queued (a `Moved`).
    pub fn send_frame(&self, frame: &Frame, now: Instant) {
        if self.is_closed() {
            return;
        }
        let bytes = Bytes::from(frame.encode());
        let len = bytes.len();
        let (slow, first) = {
            let mut b = self.backlog();
            let first = b.frames.is_empty();
            b.frames.push_back(bytes);
            b.bytes += len;
            let slow = if b.bytes > self.limits.backlog_bytes {
                let since = *b.over_since.get_or_insert(now);
                // Over the hard cap is slow at once (bounded memory); over the limit gets the
                // grace period, so a burst to a healthy player is not mistaken for a stall.
                b.bytes > self.limits.backlog_hard_bytes()
                    || now.saturating_duration_since(since) > self.limits.slow_grace
            } else {
                false
            };
            (slow, first)
        };
        self.metrics.messages_out_total.inc();
        self.metrics.bytes_out_total.inc_by(len as u64);
        if slow {
            self.close(CloseCode::SlowConsumer, "reliable backlog stayed over its limit");
        } else if first {
            // Frames behind the first are taken with it, so only the first needs telling.
            self.conn().frames_waiting();
        }
    }

    /// Sends an unreliable message; the transport drops and counts it when the player is
    /// congested.
    ///
    /// A broadcast frames once per player on purpose: one shared buffer would have its reference
    /// count touched by two threads per player, which costs more than copying a small game
    /// message.
    pub fn send_unreliable(&self, from: u64, data: &[u8]) {
        if self.is_closed() {
            self.metrics.player_datagrams_dropped_total.inc();
            return;
        }
        self.conn().datagram(Bytes::from(frame::encode_peer(from, data)));
    }

    /// Sends as the guest asked, falling back to reliable for payloads over the datagram cap.
    pub fn send(&self, from: u64, data: &[u8], reliable: bool, now: Instant) {
        if reliable || data.len() > self.limits.datagram_cap {
            self.send_reliable(from, data, now);
        } else {
            self.send_unreliable(from, data);
        }
    }

    /// Closes the player's connection with a code and reason.
    pub fn close(&self, code: CloseCode, reason: &str) {
        let was_closed = self.closed.swap(true, Ordering::Relaxed);
        if code == CloseCode::SlowConsumer && !was_closed {
            self.metrics.players_slow_consumer_total.inc();
        }
        {
            let mut b = self.backlog();
            b.frames.clear();
            b.bytes = 0;
        }
        let reason: String = reason.chars().take(200).collect();
        self.conn().close(code, reason);
    }

    /// Whether the connection was closed, by the node or the peer.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// The carrier saw the connection end.
    pub fn mark_lost(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether, at `now`, the backlog has been over its limit for longer than the grace period.
    pub fn stalled(&self, now: Instant) -> bool {
        let b = self.backlog();
        b.over_since.is_some_and(|t| now.saturating_duration_since(t) > self.limits.slow_grace)
    }

    /// Moves the queued frames to the carrier's writer; their bytes still count against the
    /// backlog until [`PlayerLink::written`] says they are on the stream.
    pub fn take_frames(&self, into: &mut VecDeque<Bytes>) {
        into.extend(self.backlog().frames.drain(..));
    }

    /// `n` bytes of taken frames went onto the player's stream.
    pub fn written(&self, n: usize) {
        let mut b = self.backlog();
        b.bytes = b.bytes.saturating_sub(n);
        if b.bytes <= self.limits.backlog_bytes {
            b.over_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receive_window_holds_four_of_the_largest_frames_within_bounds() {
        let with = |max_message| PlayerLimits { max_message, ..PlayerLimits::default() }.receive_window();
        assert_eq!(with(64 << 10), 4 * ((64 << 10) + 9));
        // Small messages still get a window that does not stall a round trip's worth of input.
        assert_eq!(with(16), 64 << 10);
        // The largest accepted --max-message-bytes (16 MiB) still fits QUIC's window field.
        assert_eq!(with(16 << 20), 4 * ((16 << 20) + 9));
        assert_eq!(with(usize::MAX), u32::MAX);
    }
}
