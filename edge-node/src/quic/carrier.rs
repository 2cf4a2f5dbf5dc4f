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

/// The player protocol over real QUIC, in memory: a real quinn-proto client and the node's side
/// (endpoint, [`QuicPlayer`], its session) exchange packets through this test's hands, on a clock
/// the test moves, as quinn-proto's own tests drive a pair of endpoints. No socket, no process.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::player::{PlayerLimits, PlayerLink, PlayerTransport};
    use crate::room::worker::Command;
    use crate::session::{Phase, RoomSink};
    use crate::telemetry::Metrics;
    use bytes::BytesMut;
    use outpost_net::tls;
    use outpost_proto::frame::{Frame, FrameDecoder, SavedState};
    use outpost_proto::ticket::TicketPayload;
    use quinn_proto::{ConnectionError, DatagramEvent, EndpointConfig};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const NODE: &str = "127.0.0.1:4433";
    const PLAYER: &str = "127.0.0.1:50000";

    /// Room workers as a session sees them: every message it hands over is kept.
    #[derive(Default)]
    struct Rooms(Mutex<Vec<(u64, Vec<u8>, bool)>>);

    impl RoomSink for Rooms {
        fn try_tell(&self, _worker: usize, cmd: Command) -> Result<(), Command> {
            if let Command::Message { to, data, reliable, .. } = cmd {
                self.0.lock().unwrap().push((to, data, reliable));
            }
            Ok(())
        }
    }

    /// The player's link as a room holds it, wired to this test instead of the socket loop.
    #[derive(Default)]
    struct Wire {
        frames: AtomicBool,
        datagrams: Mutex<Vec<Bytes>>,
        close: Mutex<Option<(CloseCode, String)>>,
    }

    impl PlayerTransport for Wire {
        fn frames_waiting(&self) {
            self.frames.store(true, Ordering::Relaxed);
        }
        fn datagram(&self, d: Bytes) {
            self.datagrams.lock().unwrap().push(d);
        }
        fn close(&self, code: CloseCode, reason: String) {
            *self.close.lock().unwrap() = Some((code, reason));
        }
    }

    struct Pair {
        now: Instant,
        node: Endpoint,
        player: Option<(ConnectionHandle, QuicPlayer)>,
        client: Endpoint,
        cch: ConnectionHandle,
        cconn: quinn_proto::Connection,
        stream: Option<StreamId>,
        /// Whether the client reads its stream (a slow reader does not).
        reading: bool,
        received: FrameDecoder,
        frames: Vec<Frame>,
        closed: Option<(u64, String)>,
        ctx: SessionCtx,
        rooms: Arc<Rooms>,
        wire: Arc<Wire>,
        metrics: Arc<Metrics>,
        buf: Vec<u8>,
        _dir: tempfile::TempDir,
    }

    fn limits() -> PlayerLimits {
        PlayerLimits {
            max_message: 1024,
            rate: 100.0,
            burst: 20.0,
            backlog_bytes: 16 << 10,
            slow_grace: Duration::from_secs(2),
            ..PlayerLimits::default()
        }
    }

    impl Pair {
        /// A node and a client whose stream window is `client_window` bytes, connected.
        fn new(client_window: u32) -> Pair {
            let dir = tempfile::tempdir().unwrap();
            let cert = tls::NodeCert::load_or_generate(dir.path(), "node").unwrap();
            let limits = Arc::new(limits());
            let mut transport = tls::player_transport(Duration::from_secs(30), 1);
            transport
                .stream_receive_window(limits.receive_window().into())
                .receive_window(limits.receive_window().into());
            let server = tls::server_config(&cert, tls::ALPN_PLAYER, transport).unwrap();
            let node = Endpoint::new(Arc::new(EndpointConfig::default()), Some(Arc::new(server)), true, None);
            let mut client = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
            let mut ct = tls::player_transport(Duration::from_secs(30), 0);
            ct.stream_receive_window(client_window.into()).receive_window(client_window.into());
            let cfg = tls::pinned_client_config(&cert.sha256(), tls::ALPN_PLAYER, ct).unwrap();
            let now = Instant::now();
            let (cch, cconn) = client.connect(now, cfg, NODE.parse().unwrap(), "outpost.invalid").unwrap();
            let metrics = Arc::new(Metrics::default());
            let rooms = Arc::new(Rooms::default());
            let ctx = SessionCtx {
                rooms: rooms.clone(),
                limits,
                metrics: metrics.clone(),
                join_timeout: Duration::from_secs(5),
            };
            let mut pair = Pair {
                now,
                node,
                player: None,
                client,
                cch,
                cconn,
                stream: None,
                reading: true,
                received: FrameDecoder::new(1 << 20),
                frames: Vec::new(),
                closed: None,
                ctx,
                rooms,
                wire: Arc::default(),
                metrics,
                buf: Vec::new(),
                _dir: dir,
            };
            pair.settle();
            assert!(pair.player.is_some() && !pair.cconn.is_handshaking(), "the handshake completes");
            pair
        }

        fn session(&mut self) -> &mut QuicPlayer {
            &mut self.player.as_mut().unwrap().1
        }

        /// Moves packets and runs both sides until nothing moves at the current time.
        fn settle(&mut self) {
            for _ in 0..10_000 {
                if !self.step() {
                    return;
                }
            }
            panic!("the pair never settled");
        }

        /// Runs for `d` of test time, firing every timer that comes due.
        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            loop {
                self.settle();
                let next = [self.cconn.poll_timeout(), self.player.as_mut().and_then(|(_, p)| p.poll_timeout())]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= end => self.now = self.now.max(t),
                    _ => break,
                }
                let now = self.now;
                self.cconn.handle_timeout(now);
                let ctx = &self.ctx;
                if let Some((_, p)) = &mut self.player {
                    p.handle_timeout(ctx, now);
                }
            }
            self.now = end;
            self.settle();
        }

        fn step(&mut self) -> bool {
            let now = self.now;
            let mut moved = false;
            while let Some(t) = self.cconn.poll_transmit(now, 1, &mut self.buf) {
                moved = true;
                let packet = BytesMut::from(&self.buf[..t.size]);
                self.buf.clear();
                let mut resp = Vec::new();
                match self.node.handle(now, PLAYER.parse().unwrap(), None, None, packet, &mut resp) {
                    Some(DatagramEvent::NewConnection(incoming)) => {
                        let (ch, conn) = self.node.accept(incoming, now, &mut resp, None).unwrap();
                        self.player = Some((ch, QuicPlayer::new(conn, 1, None, &self.ctx, now)));
                    }
                    Some(DatagramEvent::ConnectionEvent(_, ev)) => {
                        if let Some((_, p)) = &mut self.player {
                            p.conn.handle_event(ev);
                        }
                    }
                    _ => {}
                }
            }
            while let Some(ev) = self.cconn.poll_endpoint_events() {
                if let Some(back) = self.client.handle_event(self.cch, ev) {
                    self.cconn.handle_event(back);
                }
            }
            if let Some((ch, p)) = &mut self.player {
                if self.wire.frames.swap(false, Ordering::Relaxed) {
                    p.want_write = true;
                }
                if let Some((code, reason)) = self.wire.close.lock().unwrap().take() {
                    p.close(now, code, &reason);
                }
                p.session.check_stalled(now);
                while p.work(&mut self.node, *ch, &self.ctx, now) {
                    moved = true;
                }
                loop {
                    while let Some(t) = p.conn.poll_transmit(now, 1, &mut self.buf) {
                        moved = true;
                        let packet = BytesMut::from(&self.buf[..t.size]);
                        self.buf.clear();
                        let mut resp = Vec::new();
                        if let Some(DatagramEvent::ConnectionEvent(_, ev)) =
                            self.client.handle(now, NODE.parse().unwrap(), None, None, packet, &mut resp)
                        {
                            self.cconn.handle_event(ev);
                        }
                    }
                    let Some((code, reason)) = p.session.poll_close_after_flush() else { break };
                    p.close(now, code, &reason);
                }
            }
            while let Some(ev) = self.cconn.poll() {
                moved = true;
                if let Event::ConnectionLost { reason } = ev {
                    self.closed = Some(match reason {
                        ConnectionError::ApplicationClosed(c) => {
                            (c.error_code.into_inner(), String::from_utf8_lossy(&c.reason).into_owned())
                        }
                        other => (0, other.to_string()),
                    });
                }
            }
            if self.reading
                && let Some(id) = self.stream
                && let Ok(mut chunks) = self.cconn.recv_stream(id).read(true)
            {
                while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
                    moved = true;
                    self.received.push(&chunk.bytes);
                }
                let _ = chunks.finalize();
                while let Ok(Some(f)) = self.received.next_frame() {
                    self.frames.push(f);
                }
            }
            moved
        }

        /// Writes raw bytes on the client's stream (opening it first).
        fn write(&mut self, bytes: &[u8]) {
            let id = *self.stream.get_or_insert_with(|| self.cconn.streams().open(Dir::Bi).unwrap());
            let n = self.cconn.send_stream(id).write(bytes).unwrap();
            assert_eq!(n, bytes.len(), "the test writes within the stream's window");
            self.settle();
        }

        /// Joins: the client sends its `Join`, the session asks for the ticket to be checked,
        /// and the check (the carrier's join task) says yes.
        fn join(&mut self) -> Arc<PlayerLink> {
            self.write(&Frame::Join { ticket: "ticket-text".into() }.encode());
            assert_eq!(self.session().session.poll_join().as_deref(), Some("ticket-text"));
            assert_eq!(self.session().session.phase(), Phase::Admitting);
            let link =
                PlayerLink::new(7, "ada".into(), self.wire.clone(), self.ctx.limits.clone(), self.metrics.clone());
            let ticket = TicketPayload::new(7, "ada", "node-1", "arena", None, u64::MAX);
            let admitted = Admitted {
                ticket,
                link: link.clone(),
                room: "room-1".into(),
                worker: 0,
                tick_hz: 20,
                saved: SavedState::None,
            };
            let ctx = self.ctx.clone();
            self.session().admitted(&ctx, Ok(admitted));
            self.settle();
            assert_eq!(self.frames.first(), Some(&joined()), "the client reads Joined");
            link
        }

        fn message(&mut self, data: &[u8]) {
            self.write(&Frame::Message { peer: 0, data: data.to_vec() }.encode());
        }

        fn close_code(&self) -> Option<CloseCode> {
            self.closed.as_ref().and_then(|(c, _)| u32::try_from(*c).ok()).and_then(CloseCode::from_u32)
        }
    }

    fn joined() -> Frame {
        Frame::Joined { player_id: 7, room: "room-1".into(), tick_hz: 20, saved: SavedState::None }
    }

    #[test]
    fn a_joined_player_talks_with_its_room_both_ways() {
        let mut p = Pair::new(1 << 20);
        let link = p.join();
        p.message(b"hello");
        let dg = outpost_proto::frame::encode_peer(0, b"fast");
        p.cconn.datagrams().send(Bytes::from(dg), false).unwrap();
        p.settle();
        assert_eq!(*p.rooms.0.lock().unwrap(), vec![(0, b"hello".to_vec(), true), (0, b"fast".to_vec(), false)]);
        link.send_reliable(0, b"welcome", p.now);
        p.settle();
        assert_eq!(p.frames.last(), Some(&Frame::Message { peer: 0, data: b"welcome".to_vec() }));
        assert!(p.closed.is_none());
    }

    #[test]
    fn a_malformed_frame_closes_the_player_with_frame_malformed() {
        let mut p = Pair::new(1 << 20);
        p.join();
        p.write(&[0, 0, 0, 1, 0xee]);
        assert_eq!(p.close_code(), Some(CloseCode::FrameMalformed), "{:?}", p.closed);
        assert_eq!(p.metrics.players_closed_protocol_total.get(), 1);
        assert!(p.rooms.0.lock().unwrap().is_empty());
    }

    #[test]
    fn an_oversized_message_closes_the_player_with_message_too_large() {
        let mut p = Pair::new(1 << 20);
        p.join();
        p.message(&[1; 1024]);
        assert!(p.closed.is_none(), "the largest message allowed passes");
        p.message(&[1; 1025]);
        assert_eq!(p.close_code(), Some(CloseCode::MessageTooLarge), "{:?}", p.closed);
        assert_eq!(p.rooms.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_flood_closes_the_player_with_rate_limited() {
        let mut p = Pair::new(1 << 20);
        p.join();
        // The burst (20) passes at one instant; the next message is over the rate.
        let mut flood = Vec::new();
        for i in 0..21u8 {
            Frame::Message { peer: 0, data: vec![i] }.encode_into(&mut flood);
        }
        p.write(&flood);
        assert_eq!(p.close_code(), Some(CloseCode::RateLimited), "{:?}", p.closed);
        assert_eq!(p.rooms.0.lock().unwrap().len(), 20);
        // After time passes the rate refills; a second player flooding over a second is fine.
        let mut q = Pair::new(1 << 20);
        q.join();
        for i in 0..40u8 {
            q.message(&[i]);
            q.advance(Duration::from_millis(20));
        }
        assert!(q.closed.is_none(), "{:?}", q.closed);
    }

    #[test]
    fn a_slow_reader_is_closed_with_slow_consumer_after_the_grace_period() {
        let mut p = Pair::new(8 << 10);
        let link = p.join();
        p.reading = false;
        // More than the client's window and the backlog limit, less than the hard cap.
        for _ in 0..40 {
            link.send_reliable(0, &[7; 1000], p.now);
        }
        p.settle();
        assert!(p.closed.is_none(), "over the limit, but within the grace period");
        p.advance(Duration::from_secs(1));
        assert!(p.closed.is_none());
        p.advance(Duration::from_millis(1100));
        assert_eq!(p.close_code(), Some(CloseCode::SlowConsumer), "{:?}", p.closed);
        assert!(link.is_closed());
    }

    #[test]
    fn a_connection_that_never_joins_is_refused_at_the_join_timeout() {
        let mut p = Pair::new(1 << 20);
        p.advance(Duration::from_millis(4900));
        assert!(p.closed.is_none());
        p.advance(Duration::from_millis(200));
        assert_eq!(p.close_code(), Some(CloseCode::FrameMalformed), "{:?}", p.closed);
        assert!(p.closed.as_ref().unwrap().1.contains("no Join within the join timeout"));
        assert_eq!(p.metrics.players_refused_total.get(), 1);
    }

    #[test]
    fn a_refused_join_is_read_by_the_client_before_the_close() {
        let mut p = Pair::new(1 << 20);
        p.write(&Frame::Join { ticket: "expired".into() }.encode());
        assert!(p.session().session.poll_join().is_some());
        let ctx = p.ctx.clone();
        p.session().admitted(&ctx, Err(Refusal::player(CloseCode::TicketExpired, "the ticket expired")));
        p.settle();
        assert_eq!(
            p.frames.first(),
            Some(&Frame::Refused { code: CloseCode::TicketExpired, reason: "the ticket expired".into() })
        );
        assert_eq!(p.close_code(), Some(CloseCode::TicketExpired), "{:?}", p.closed);
    }
}
