//! One player's QUIC connection: quinn-proto's state machine for it and the player's
//! [`PlayerSession`], with what moves between them (stream bytes and datagrams in, the session's
//! chunks out, closes both ways).
//!
//! It touches no socket and reads no clock: the loop in [`super::driver`] hands it packets'
//! events and the time, and sends what quinn-proto has to say. So the whole player protocol over
//! real QUIC is tested here in memory, against a real quinn-proto client, with an injected clock.

use super::admission::ConnSlot;
use crate::room::Refusal;
use crate::session::{Admitted, Departure, PlayerSession, SessionCtx};
use bytes::Bytes;
use outpost_proto::CloseCode;
use quinn_proto::{ConnectionHandle, Dir, Endpoint, Event, ReadError, StreamEvent, StreamId, VarInt, WriteError};
use std::time::Instant;

/// A player's connection and session.
pub(crate) struct QuicPlayer {
    pub(crate) conn: quinn_proto::Connection,
    /// quinn-proto reuses handles; the serial tells a new connection from an old one.
    pub(crate) serial: u64,
    /// The deadline this connection holds in the loop's timer set, so it can be replaced exactly.
    pub(crate) armed: Option<Instant>,
    /// The one bi stream the protocol uses.
    stream: Option<StreamId>,
    pub(crate) session: PlayerSession,
    /// Its place in the node's connection caps, given back when the connection is dropped.
    pub(crate) slot: Option<ConnSlot>,
    /// In the loop's list of connections holding a message for a full worker queue.
    pub(crate) held_listed: bool,
    /// The connection's end was handled (the room told).
    pub(crate) ended: bool,
    pub(crate) want_read: bool,
    pub(crate) want_datagrams: bool,
    pub(crate) want_write: bool,
}

impl QuicPlayer {
    pub(crate) fn new(
        conn: quinn_proto::Connection,
        serial: u64,
        slot: Option<ConnSlot>,
        ctx: &SessionCtx,
        now: Instant,
    ) -> QuicPlayer {
        let session = PlayerSession::new(ctx, conn.remote_address(), now);
        QuicPlayer {
            conn,
            serial,
            armed: None,
            stream: None,
            session,
            slot,
            held_listed: false,
            ended: false,
            want_read: false,
            want_datagrams: false,
            want_write: false,
        }
    }

    /// Closes the connection now with `code` (the reason cut to 200 characters).
    pub(crate) fn close(&mut self, now: Instant, code: CloseCode, reason: &str) {
        let reason: String = reason.chars().take(200).collect();
        self.conn.close(now, VarInt::from_u32(code.to_u32()), Bytes::from(reason));
        self.session.handle_closed();
    }

    /// One pass over what the connection has to do: its endpoint events, its events (the stream
    /// opened, readable or writable, datagrams in), then reading, a close the session asks for,
    /// and writing. Returns whether it did anything, so the caller passes again until it does not.
    pub(crate) fn work(
        &mut self,
        endpoint: &mut Endpoint,
        ch: ConnectionHandle,
        ctx: &SessionCtx,
        now: Instant,
    ) -> bool {
        let mut progressed = false;
        while let Some(ev) = self.conn.poll_endpoint_events() {
            progressed = true;
            if let Some(back) = endpoint.handle_event(ch, ev) {
                self.conn.handle_event(back);
            }
        }
        while let Some(ev) = self.conn.poll() {
            progressed = true;
            match ev {
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    while let Some(id) = self.conn.streams().accept(Dir::Bi) {
                        // The transport allows one bi stream, so this is the protocol's.
                        self.stream.get_or_insert(id);
                    }
                    self.want_read = true;
                }
                Event::Stream(StreamEvent::Readable { .. }) => self.want_read = true,
                Event::Stream(StreamEvent::Writable { .. }) => self.want_write = true,
                Event::Stream(StreamEvent::Stopped { .. }) => self.session.write_failed(),
                Event::DatagramReceived => self.want_datagrams = true,
                Event::ConnectionLost { reason } => {
                    tracing::debug!(reason = %reason, remote = %self.conn.remote_address(), "player connection lost");
                }
                _ => {}
            }
        }
        if std::mem::take(&mut self.want_read) {
            progressed = true;
            self.read_stream(ctx, now);
        }
        if std::mem::take(&mut self.want_datagrams) {
            progressed = true;
            while self.session.wants_datagrams() && !self.conn.is_closed() {
                let Some(d) = self.conn.datagrams().recv() else { break };
                self.session.handle_datagram(ctx, now, &d);
            }
        }
        if let Some((code, reason)) = self.session.poll_close() {
            progressed = true;
            self.close(now, code, &reason);
        }
        if std::mem::take(&mut self.want_write) {
            progressed = true;
            self.write_out();
        }
        progressed
    }

    /// The join's verdict, from the carrier's join task.
    pub(crate) fn admitted(&mut self, ctx: &SessionCtx, result: Result<Admitted, Refusal>) {
        if result.is_ok() {
            if let Some(s) = &mut self.slot {
                s.joined();
            }
            self.want_read = true;
            self.want_datagrams = true;
        }
        self.session.handle_admitted(ctx, result);
        self.want_write = true;
    }

    /// The earliest deadline of the connection and of its session.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        [self.conn.poll_timeout(), self.session.poll_timeout()].into_iter().flatten().min()
    }

    /// A deadline passed.
    pub(crate) fn handle_timeout(&mut self, ctx: &SessionCtx, now: Instant) {
        self.session.handle_timeout(ctx, now);
        self.conn.handle_timeout(now);
    }

    /// The connection ended: what the room must be told, and how many of the player's
    /// datagrams never reached it. quinn-proto keeps at most `datagram_in_bytes` of them and
    /// drops the oldest beyond: while a room worker's queue is full, or before the player joined.
    pub(crate) fn end(&mut self) -> Option<(Departure, u64)> {
        let d = self.session.end()?;
        let unread = self.conn.stats().frame_rx.datagram.saturating_sub(d.datagrams_read) + d.datagrams_held;
        Some((d, unread))
    }

    /// Hands the session what the stream has, as long as it wants more.
    fn read_stream(&mut self, ctx: &SessionCtx, now: Instant) {
        let Some(id) = self.stream else { return };
        loop {
            // Frames already buffered first, so a full room queue stops reading right there.
            self.session.process_frames(ctx, now);
            if !self.session.wants_stream_data() || self.conn.is_closed() {
                return;
            }
            // quinn-proto's own received chunks, not a read buffer of ours: an idle player keeps
            // no buffer of the node's.
            let mut stream = self.conn.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else { return };
            let mut got = false;
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => {
                        got = true;
                        self.session.handle_stream_data(&chunk.bytes);
                    }
                    Ok(None) | Err(ReadError::Reset(_)) => {
                        got = true;
                        self.session.handle_stream_end();
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                }
            }
            let _ = chunks.finalize();
            if !got {
                return;
            }
        }
    }

    /// Writes the session's chunks as far as flow control allows.
    fn write_out(&mut self) {
        let Some(id) = self.stream else { return };
        if self.conn.is_closed() {
            return;
        }
        while let Some(chunk) = self.session.next_chunk() {
            match self.conn.send_stream(id).write(chunk) {
                // Written in part: the loop writes again, so that quinn-proto answers `Blocked`
                // and registers the stream for a `Writable` event when the window opens. A part
                // alone registers nothing, and the backlog would wait for the next frame.
                Ok(n) => self.session.wrote(n),
                Err(WriteError::Blocked) => break,
                Err(_) => {
                    self.session.write_failed();
                    break;
                }
            }
        }
    }
}
