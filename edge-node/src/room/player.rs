//! A connected player as a room sees it: where its reliable frames and datagrams go.
//!
//! Workers push into a [`PlayerLink`] without ever blocking: reliable frames join a byte-counted
//! backlog that the player's writer task drains onto its QUIC stream; datagrams go straight to
//! quinn, or are dropped and counted when its datagram buffer is full (quinn would otherwise drop
//! the oldest silently). A backlog that stays over its limit closes the player as a slow consumer,
//! so one stalled client never grows the node's memory or holds up its room.

use crate::telemetry::Metrics;
use bytes::Bytes;
use outpost_proto::CloseCode;
use outpost_proto::frame::{self, Frame};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

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

#[derive(Debug, Default)]
struct Backlog {
    frames: VecDeque<Bytes>,
    bytes: usize,
    over_since: Option<Instant>,
    closed: bool,
}

/// One player's outbound side.
pub struct PlayerLink {
    /// Player id.
    pub id: u64,
    /// Display name from the ticket.
    pub name: String,
    /// The room and worker it joined, once it has: where a reconnect finds it to take over.
    pub placement: std::sync::OnceLock<(String, usize)>,
    conn: quinn::Connection,
    backlog: Mutex<Backlog>,
    notify: Notify,
    limits: Arc<PlayerLimits>,
    metrics: Arc<Metrics>,
}

impl PlayerLink {
    /// A link over `conn`; start [`PlayerLink::write_loop`] with the connection's send stream.
    pub fn new(
        id: u64,
        name: String,
        conn: quinn::Connection,
        limits: Arc<PlayerLimits>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(PlayerLink {
            id,
            name,
            placement: std::sync::OnceLock::new(),
            conn,
            backlog: Mutex::default(),
            notify: Notify::new(),
            limits,
            metrics,
        })
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a reliable message from `from` (0 = the room).
    pub fn send_reliable(&self, from: u64, data: &[u8]) {
        let bytes = Bytes::from(Frame::Message { peer: from, data: data.to_vec() }.encode());
        let len = bytes.len();
        let slow = {
            let mut b = self.backlog();
            if b.closed {
                return;
            }
            b.frames.push_back(bytes);
            b.bytes += len;
            if b.bytes > self.limits.backlog_bytes {
                let since = *b.over_since.get_or_insert_with(Instant::now);
                // Over the hard cap is slow at once (bounded memory); over the limit gets the
                // grace period, so a burst to a healthy player is not mistaken for a stall.
                b.bytes > self.limits.backlog_hard_bytes() || since.elapsed() > self.limits.slow_grace
            } else {
                false
            }
        };
        self.metrics.messages_out_total.fetch_add(1, Ordering::Relaxed);
        self.metrics.bytes_out_total.fetch_add(len as u64, Ordering::Relaxed);
        if slow {
            self.close(CloseCode::SlowConsumer, "reliable backlog stayed over its limit");
        } else {
            self.notify.notify_one();
        }
    }

    /// Sends an unreliable message, or drops and counts it when the player is congested.
    ///
    /// A broadcast frames once per player on purpose: one shared buffer would have its reference
    /// count touched by every connection's driver thread, which costs more than copying a small
    /// game message.
    pub fn send_unreliable(&self, from: u64, data: &[u8]) {
        let d = Bytes::from(frame::encode_peer(from, data));
        let len = d.len();
        // `send_datagram` would make room in a full buffer by dropping the player's oldest
        // datagram without telling anyone. The waiting variant refuses instead, and polled once
        // it takes the connection's lock once (its driver thread wants that lock too): ready
        // means queued, pending means the buffer is full and this datagram is dropped, counted.
        let mut queued = std::pin::pin!(self.conn.send_datagram_wait(d));
        let polled = queued.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        if let std::task::Poll::Ready(Ok(())) = polled {
            self.metrics.messages_out_total.fetch_add(1, Ordering::Relaxed);
            self.metrics.bytes_out_total.fetch_add(len as u64, Ordering::Relaxed);
        } else {
            // Full, over the path's size, or the connection is gone.
            self.metrics.player_datagrams_dropped_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends as the guest asked, falling back to reliable for payloads over the datagram cap.
    pub fn send(&self, from: u64, data: &[u8], reliable: bool) {
        if reliable || data.len() > self.limits.datagram_cap {
            self.send_reliable(from, data);
        } else {
            self.send_unreliable(from, data);
        }
    }

    /// Closes the player's connection with a code and reason.
    pub fn close(&self, code: CloseCode, reason: &str) {
        {
            let mut b = self.backlog();
            b.closed = true;
            b.frames.clear();
            b.bytes = 0;
        }
        let reason: String = reason.chars().take(200).collect();
        self.conn.close(code.to_u32().into(), reason.as_bytes());
        self.notify.notify_one();
    }

    /// Whether the connection was closed, by the node or the peer.
    pub fn is_closed(&self) -> bool {
        self.backlog().closed || self.conn.close_reason().is_some()
    }

    fn stalled(&self) -> bool {
        let b = self.backlog();
        b.over_since.is_some_and(|t| t.elapsed() > self.limits.slow_grace)
    }

    /// Drains the backlog onto the player's stream until the connection ends.
    pub async fn write_loop(self: Arc<Self>, mut send: quinn::SendStream) {
        let mut batch = Vec::new();
        loop {
            {
                let mut b = self.backlog();
                if b.closed {
                    return;
                }
                batch.extend(b.frames.drain(..));
            }
            if batch.is_empty() {
                self.notify.notified().await;
                continue;
            }
            let mut written = 0;
            for chunk in batch.drain(..) {
                written += chunk.len();
                // A write blocked by flow control is watched, not cancelled: if the backlog stays
                // over its limit past the grace period while the player reads nothing, close it.
                let write = send.write_chunk(chunk);
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        r = &mut write => {
                            if r.is_err() {
                                return;
                            }
                            break;
                        }
                        _ = tokio::time::sleep(self.limits.slow_grace / 2) => {
                            if self.stalled() {
                                self.close(CloseCode::SlowConsumer, "reliable backlog stayed over its limit");
                                return;
                            }
                        }
                    }
                }
            }
            let mut b = self.backlog();
            b.bytes = b.bytes.saturating_sub(written);
            if b.bytes <= self.limits.backlog_bytes {
                b.over_since = None;
            }
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
