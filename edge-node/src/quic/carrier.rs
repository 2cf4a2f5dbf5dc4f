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
use crate::webtransport::h3::WtConn;
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
    /// The HTTP/3 layer of a browser's WebTransport connection; none for native players.
    wt: Option<Box<WtConn>>,
}

impl QuicPlayer {
    pub(crate) fn new(
        conn: quinn_proto::Connection,
        serial: u64,
        slot: Option<ConnSlot>,
        ctx: &SessionCtx,
        now: Instant,
        wt: Option<WtConn>,
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
            wt: wt.map(Box::new),
        }
    }

    /// Closes the connection now with `code` (the reason cut to 200 characters).
    /// A WebTransport session closes by its capsule, after the player's stream is read. Its place
    /// in the connection caps is given back now: what is left is the close's bounded wait.
    pub(crate) fn close(&mut self, now: Instant, code: CloseCode, reason: &str) {
        self.slot = None;
        match &mut self.wt {
            Some(wt) => wt.close(&mut self.conn, self.stream, now, code.to_u32(), reason),
            None => {
                let reason: String = reason.chars().take(200).collect();
                self.conn.close(now, VarInt::from_u32(code.to_u32()), Bytes::from(reason));
            }
        }
        self.session.handle_closed();
    }

    /// Queues a datagram for the player (with a WebTransport session's prefix); false when it
    /// does not fit the player's send buffer, is over the path's size, or the connection is gone.
    pub(crate) fn send_datagram(&mut self, d: Bytes) -> bool {
        if self.conn.is_closed() {
            return false;
        }
        let d = match &self.wt {
            Some(wt) => match wt.frame_datagram(&d) {
                Some(d) => d,
                None => return false,
            },
            None => d,
        };
        let mut dg = self.conn.datagrams();
        // `send` with `drop` would make room by dropping the player's oldest datagram without
        // telling anyone; refusing lets us count the drop.
        dg.send_buffer_space() >= d.len() && dg.send(d, false).is_ok()
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
                Event::Connected => {
                    if let Some(wt) = &mut self.wt {
                        wt.connected(&mut self.conn);
                    }
                }
                Event::Stream(StreamEvent::Opened { dir }) => match &mut self.wt {
                    Some(wt) => wt.opened(&mut self.conn, dir),
                    None => {
                        while let Some(id) = self.conn.streams().accept(Dir::Bi) {
                            // The transport allows one bi stream, so this is the protocol's.
                            self.stream.get_or_insert(id);
                        }
                        self.want_read = true;
                    }
                },
                Event::Stream(StreamEvent::Readable { id }) => match &mut self.wt {
                    Some(wt) if self.stream != Some(id) => wt.dirty = true,
                    _ => self.want_read = true,
                },
                Event::Stream(StreamEvent::Writable { id }) => match &mut self.wt {
                    Some(wt) if self.stream != Some(id) => wt.dirty = true,
                    _ => self.want_write = true,
                },
                Event::Stream(StreamEvent::Stopped { id, .. }) => match &mut self.wt {
                    Some(wt) if self.stream == Some(id) => {
                        self.session.write_failed();
                        wt.stream_done(now);
                    }
                    Some(_) => {}
                    None => self.session.write_failed(),
                },
                Event::Stream(StreamEvent::Finished { id }) => {
                    if let Some(wt) = &mut self.wt
                        && self.stream == Some(id)
                    {
                        wt.stream_done(now);
                    }
                }
                Event::DatagramReceived => self.want_datagrams = true,
                Event::ConnectionLost { reason } => {
                    tracing::debug!(reason = %reason, remote = %self.conn.remote_address(), "player connection lost");
                }
                _ => {}
            }
        }
        if let Some(wt) = self.wt.as_mut().filter(|w| w.dirty) {
            progressed = true;
            let had = self.stream.is_some();
            wt.work(&mut self.conn, &mut self.stream, &mut self.session, ctx, now);
            if !had && self.stream.is_some() {
                self.want_read = true;
            }
        }
        if std::mem::take(&mut self.want_read) {
            progressed = true;
            self.read_stream(ctx, now);
        }
        if std::mem::take(&mut self.want_datagrams) {
            progressed = true;
            self.read_datagrams(ctx, now);
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
    /// A probe session has no join deadline, only its own.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let probe = self.wt.as_ref().is_some_and(|w| w.is_probe());
        let session = if probe { None } else { self.session.poll_timeout() };
        let wt = self.wt.as_ref().and_then(|w| w.poll_timeout());
        [self.conn.poll_timeout(), session, wt].into_iter().flatten().min()
    }

    /// A deadline passed.
    pub(crate) fn handle_timeout(&mut self, ctx: &SessionCtx, now: Instant) {
        match &mut self.wt {
            Some(wt) => {
                if !wt.is_probe() {
                    self.session.handle_timeout(ctx, now);
                }
                wt.handle_timeout(&mut self.conn, now);
                wt.dirty = true;
            }
            None => self.session.handle_timeout(ctx, now),
        }
        self.conn.handle_timeout(now);
    }

    /// Hands the session the player's datagrams while it takes them (a WebTransport session's
    /// prefix checked and cut; a probe session's answered in place).
    fn read_datagrams(&mut self, ctx: &SessionCtx, now: Instant) {
        loop {
            let probe = self.wt.as_ref().is_some_and(|w| w.is_probe());
            if !(probe || self.session.wants_datagrams()) || self.conn.is_closed() {
                return;
            }
            let Some(d) = self.conn.datagrams().recv() else { return };
            let d = match &mut self.wt {
                Some(wt) => match wt.datagram(&mut self.conn, self.stream, ctx, now, d) {
                    Some(body) => body,
                    None => continue,
                },
                None => d,
            };
            self.session.handle_datagram(ctx, now, &d);
        }
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
        /// A browser's WebTransport session instead of a native player.
        web: Option<Web>,
        _dir: tempfile::TempDir,
    }

    /// The browser's side of a WebTransport connection, spoken by hand with the framing crate.
    #[derive(Default)]
    struct Web {
        /// The CONNECT stream, and what the node wrote on it (the status, then capsules).
        connect: Option<StreamId>,
        connect_in: Vec<u8>,
        connect_done: bool,
        /// What the node wrote on its uni streams (its control stream's SETTINGS).
        uni_in: Vec<u8>,
        /// Datagrams from the node, prefix and all.
        datagrams: Vec<Bytes>,
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
            Pair::build(client_window, false)
        }

        /// A node's WebTransport port and a browser, connected (no HTTP/3 said yet).
        fn web() -> Pair {
            Pair::build(1 << 20, true)
        }

        fn build(client_window: u32, web: bool) -> Pair {
            let dir = tempfile::tempdir().unwrap();
            let cert = tls::NodeCert::load_or_generate(dir.path(), "node").unwrap();
            let limits = Arc::new(limits());
            let (server, mut ct, alpn) = if web {
                let t = crate::webtransport::transport(&limits);
                (t, tls::transport(Duration::from_secs(30)), crate::webtransport::ALPN_H3)
            } else {
                let mut t = tls::player_transport(Duration::from_secs(30), 1);
                t.stream_receive_window(limits.receive_window().into()).receive_window(limits.receive_window().into());
                (t, tls::player_transport(Duration::from_secs(30), 0), tls::ALPN_PLAYER)
            };
            let server = tls::server_config(&cert, alpn, server).unwrap();
            let node = Endpoint::new(Arc::new(EndpointConfig::default()), Some(Arc::new(server)), true, None);
            let mut client = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
            ct.stream_receive_window(client_window.into()).receive_window(client_window.into());
            let cfg = tls::pinned_client_config(&cert.sha256(), alpn, ct).unwrap();
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
                web: web.then(Web::default),
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
                        let wt = self.web.as_ref().map(|_| WtConn::new(web_shared()));
                        self.player = Some((ch, QuicPlayer::new(conn, 1, None, &self.ctx, now, wt)));
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
            if let Some(web) = &mut self.web {
                moved |= web.read(&mut self.cconn);
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

        /// Writes raw bytes on the client's stream (opening it first; a browser's starts with
        /// the WebTransport stream header).
        fn write(&mut self, bytes: &[u8]) {
            let id = match self.stream {
                Some(id) => id,
                None => {
                    let id = self.cconn.streams().open(Dir::Bi).unwrap();
                    if let Some(connect) = self.web.as_ref().and_then(|w| w.connect) {
                        let mut header = Vec::new();
                        web_transport_proto::Frame::WEBTRANSPORT.encode(&mut header);
                        web_transport_proto::VarInt::from_u64(u64::from(connect)).unwrap().encode(&mut header);
                        self.cconn.send_stream(id).write(&header).unwrap();
                    }
                    *self.stream.insert(id)
                }
            };
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
            let admitted = Admitted {
                player: 7,
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

        /// A join whose ticket the check refuses: the client reads the `Refused` frame.
        fn refused_join(&mut self) {
            self.write(&Frame::Join { ticket: "expired".into() }.encode());
            assert!(self.session().session.poll_join().is_some());
            let ctx = self.ctx.clone();
            self.session().admitted(&ctx, Err(Refusal::player(CloseCode::TicketExpired, "the ticket expired")));
            self.settle();
            assert_eq!(
                self.frames.first(),
                Some(&Frame::Refused { code: CloseCode::TicketExpired, reason: "the ticket expired".into() })
            );
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
        p.refused_join();
        assert_eq!(p.close_code(), Some(CloseCode::TicketExpired), "{:?}", p.closed);
    }

    const PAGE: &str = "http://127.0.0.1:8080";

    fn web_shared() -> Arc<crate::webtransport::h3::WtShared> {
        let probe = crate::beacon::BeaconLimits { per_second: 0.01, burst: 2.0, max_sources: 16 };
        Arc::new(crate::webtransport::h3::WtShared {
            origins: vec![PAGE.to_string()],
            limiter: crate::beacon::ProbeLimiter::new(probe),
        })
    }

    impl Web {
        /// Reads what the node sent the browser: the CONNECT stream, its uni streams, datagrams.
        fn read(&mut self, conn: &mut quinn_proto::Connection) -> bool {
            let mut moved = false;
            while let Some(id) = conn.streams().accept(Dir::Uni) {
                moved = true;
                let _ = id;
            }
            let mut ids: Vec<StreamId> =
                (0..4).map(|i| StreamId::new(quinn_proto::Side::Server, Dir::Uni, i)).collect();
            ids.extend(self.connect);
            for id in ids {
                let mut stream = conn.recv_stream(id);
                let Ok(mut chunks) = stream.read(true) else { continue };
                loop {
                    match chunks.next(usize::MAX) {
                        Ok(Some(c)) => {
                            moved = true;
                            if Some(id) == self.connect {
                                self.connect_in.extend_from_slice(&c.bytes);
                            } else {
                                self.uni_in.extend_from_slice(&c.bytes);
                            }
                        }
                        Ok(None) | Err(ReadError::Reset(_)) => {
                            if Some(id) == self.connect && !self.connect_done {
                                moved = true;
                                self.connect_done = true;
                            }
                            break;
                        }
                        Err(ReadError::Blocked) => break,
                    }
                }
                let _ = chunks.finalize();
            }
            while let Some(d) = conn.datagrams().recv() {
                moved = true;
                self.datagrams.push(d);
            }
            moved
        }

        /// The node's answer to the CONNECT, once it came.
        fn status(&self) -> Option<u16> {
            match web_transport_proto::ConnectResponse::decode(&mut &self.connect_in[..]) {
                Ok(r) => Some(r.status.as_u16()),
                // The framing crate reads only success; a refusal's status comes back as an error.
                Err(web_transport_proto::ConnectError::WrongStatus(Some(s))) => Some(s.as_u16()),
                Err(_) => None,
            }
        }

        /// The close capsule after the answer: its code and reason.
        fn capsule(&self) -> Option<(u32, String)> {
            let mut rest = &self.connect_in[..];
            web_transport_proto::ConnectResponse::decode(&mut rest).ok()?;
            let mut frame = rest;
            let typ = web_transport_proto::VarInt::decode(&mut frame).ok()?;
            let len = web_transport_proto::VarInt::decode(&mut frame).ok()?;
            assert_eq!(typ.into_inner(), 0, "capsules go in DATA frames");
            assert_eq!(len.into_inner() as usize, frame.len());
            match web_transport_proto::Capsule::decode(&mut frame).ok()? {
                web_transport_proto::Capsule::CloseWebTransportSession { code, reason } => Some((code, reason)),
                other => panic!("{other:?}"),
            }
        }
    }

    impl Pair {
        fn web_mut(&mut self) -> &mut Web {
            self.web.as_mut().unwrap()
        }

        /// The browser's control stream and SETTINGS.
        fn settings(&mut self) {
            let mut settings = web_transport_proto::Settings::default();
            settings.enable_webtransport(1);
            let mut buf = Vec::new();
            settings.encode(&mut buf);
            self.uni(&buf);
        }

        /// A uni stream from the browser with `bytes`.
        fn uni(&mut self, bytes: &[u8]) -> StreamId {
            let id = self.cconn.streams().open(Dir::Uni).unwrap();
            self.cconn.send_stream(id).write(bytes).unwrap();
            self.settle();
            id
        }

        /// A CONNECT for `path` from a page of `origin`; returns the node's status.
        fn connect(&mut self, path: &str, origin: Option<&str>) -> Option<u16> {
            let url = url::Url::parse(&format!("https://{NODE}{path}")).unwrap();
            let mut request = web_transport_proto::ConnectRequest::new(url);
            if let Some(o) = origin {
                request = request.with_header(hyper::header::ORIGIN, hyper::header::HeaderValue::from_str(o).unwrap());
            }
            let mut buf = Vec::new();
            request.encode(&mut buf).unwrap();
            let id = self.cconn.streams().open(Dir::Bi).unwrap();
            let web = self.web_mut();
            (web.connect, web.connect_in, web.connect_done) = (Some(id), Vec::new(), false);
            self.cconn.send_stream(id).write(&buf).unwrap();
            self.settle();
            self.web_mut().status()
        }

        /// SETTINGS and an accepted player session.
        fn open_session(&mut self) {
            self.settings();
            assert_eq!(self.connect("/v1/wt", Some(PAGE)), Some(200));
            let theirs = web_transport_proto::Settings::decode(&mut &self.web_mut().uni_in[..]).unwrap();
            assert!(theirs.supports_webtransport() > 0, "the node's SETTINGS offer WebTransport");
        }

        /// A datagram from the browser with the session's prefix (quarter stream id 0).
        fn web_datagram(&mut self, body: &[u8]) {
            let mut d = vec![0];
            d.extend_from_slice(body);
            self.cconn.datagrams().send(Bytes::from(d), false).unwrap();
            self.settle();
        }

        /// The browser closes its connection, as a page does once it read the capsule.
        fn page_closes(&mut self) {
            self.cconn.close(self.now, 0u32.into(), Bytes::new());
            self.settle();
        }
    }

    #[test]
    fn a_browser_session_joins_and_talks_both_ways_with_prefixed_datagrams() {
        let mut p = Pair::web();
        p.open_session();
        let link = p.join();
        p.message(b"reliable");
        p.web_datagram(&outpost_proto::frame::encode_peer(0, b"fast"));
        // A datagram of another session is not this player's.
        p.cconn.datagrams().send(Bytes::from(vec![1, 0, 0, 0, 0, 0, 0, 0, 0, b'x']), false).unwrap();
        p.settle();
        assert_eq!(*p.rooms.0.lock().unwrap(), vec![(0, b"reliable".to_vec(), true), (0, b"fast".to_vec(), false)]);
        assert!(p.session().send_datagram(Bytes::from_static(b"state")));
        link.send_reliable(0, b"welcome", p.now);
        p.settle();
        assert_eq!(p.web_mut().datagrams, vec![Bytes::from_static(b"\0state")], "prefixed with quarter stream id 0");
        assert_eq!(p.frames.last(), Some(&Frame::Message { peer: 0, data: b"welcome".to_vec() }));
        // The room closes the player: the page reads the code in the capsule.
        let now = p.now;
        p.session().close(now, CloseCode::Kicked, "bye");
        p.settle();
        assert!(p.web_mut().capsule().is_none(), "the capsule waits until the page has the stream's end");
        p.advance(Duration::from_millis(100));
        assert_eq!(p.web_mut().capsule(), Some((CloseCode::Kicked.to_u32(), "bye".into())));
        assert!(p.web_mut().connect_done, "the CONNECT stream is finished after the capsule");
        assert!(!p.session().conn.is_closed(), "the node waits for the page to close");
        p.page_closes();
        assert!(p.session().conn.is_closed());
    }

    #[test]
    fn a_refused_join_reaches_the_page_before_the_capsule_and_a_silent_page_is_closed_after_a_second() {
        let mut p = Pair::web();
        p.open_session();
        p.refused_join();
        p.advance(Duration::from_millis(100));
        assert_eq!(p.web_mut().capsule(), Some((CloseCode::TicketExpired.to_u32(), "the ticket expired".into())));
        p.advance(crate::webtransport::h3::CLOSE_WAIT - Duration::from_millis(200));
        assert!(p.closed.is_none(), "the page has its second to close");
        p.advance(Duration::from_millis(200));
        let code = web_transport_proto::error_to_http3(CloseCode::TicketExpired.to_u32());
        assert_eq!(p.closed.as_ref().map(|c| c.0), Some(code), "{:?}", p.closed);
    }

    #[test]
    fn a_session_that_never_joins_is_refused_at_the_join_timeout_by_capsule() {
        let mut p = Pair::web();
        p.open_session();
        p.advance(Duration::from_millis(5100));
        let (code, reason) = p.web_mut().capsule().expect("a capsule");
        assert_eq!(code, CloseCode::FrameMalformed.to_u32());
        assert!(reason.contains("join timeout"), "{reason}");
    }

    #[test]
    fn unknown_paths_and_other_origins_are_answered_404_and_403() {
        let mut p = Pair::web();
        p.settings();
        assert_eq!(p.connect("/v1/nope", Some(PAGE)), Some(404));
        assert!(p.web_mut().connect_done, "the refusal ends the CONNECT stream");
        p.page_closes();
        let mut p = Pair::web();
        p.settings();
        assert_eq!(p.connect("/v1/wt", Some("https://evil.example")), Some(403));
        p.advance(Duration::from_millis(1100));
        assert_eq!(p.closed.as_ref().map(|c| c.0), Some(0x101), "a page that stays is closed after a second");
        assert_eq!(p.metrics.players_refused_total.get(), 1);
    }

    #[test]
    fn malformed_http3_closes_the_connection_with_h3_general_protocol_error() {
        // SETTINGS cut short by the stream's end.
        let mut p = Pair::web();
        let id = p.uni(&[0x00, 0x04, 0x40, 0xff, 0x01]);
        p.cconn.send_stream(id).finish().unwrap();
        p.settle();
        assert_eq!(p.closed.as_ref().map(|c| c.0), Some(0x101), "{:?}", p.closed);
        // Plain HTTP/1 where the CONNECT belongs.
        let mut p = Pair::web();
        p.settings();
        let id = p.cconn.streams().open(Dir::Bi).unwrap();
        p.cconn.send_stream(id).write(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        p.settle();
        assert_eq!(p.closed.as_ref().map(|c| c.0), Some(0x101), "{:?}", p.closed);
        // A HEADERS frame past the field section limit.
        let mut p = Pair::web();
        p.settings();
        let id = p.cconn.streams().open(Dir::Bi).unwrap();
        let mut huge = vec![0x01];
        web_transport_proto::VarInt::from_u32(64 << 10).encode(&mut huge);
        huge.resize(huge.len() + (20 << 10), 0);
        p.cconn.send_stream(id).write(&huge).unwrap();
        p.settle();
        assert_eq!(p.closed.as_ref().map(|c| c.0), Some(0x101), "{:?}", p.closed);
    }

    #[test]
    fn stray_streams_are_refused_and_the_session_goes_on() {
        let mut p = Pair::web();
        p.open_session();
        // A WebTransport uni stream and an unknown uni stream type: stopped.
        p.uni(&[0x40, 0x54, 0x00, 1, 2, 3]);
        p.uni(&[0x21, 9, 9]);
        // A second CONNECT: rejected.
        assert_eq!(p.connect("/v1/wt", Some(PAGE)), None);
        p.web_mut().connect = Some(StreamId::new(quinn_proto::Side::Client, Dir::Bi, 0));
        let link = p.join();
        link.send_reliable(0, b"still here", p.now);
        p.settle();
        assert_eq!(p.frames.last(), Some(&Frame::Message { peer: 0, data: b"still here".to_vec() }));
        assert!(p.closed.is_none(), "{:?}", p.closed);
    }

    #[test]
    fn probe_sessions_echo_beacon_probes_within_the_rate_and_close_on_anything_else() {
        use outpost_proto::beacon::{Probe, encode_request, parse_reply};
        let mut p = Pair::web();
        p.settings();
        assert_eq!(p.connect("/v1/probe", None), Some(200));
        for seq in 0..4 {
            p.web_datagram(&encode_request(Probe { seq, sent_us: 7 }, 64));
        }
        let replies: Vec<Probe> = p.web_mut().datagrams.iter().filter_map(|d| parse_reply(&d[1..])).collect();
        assert_eq!(replies.len(), 2, "the burst of 2 is answered, the rest is over the rate");
        assert!(p.web_mut().datagrams.iter().all(|d| d.len() <= 65), "never more than was sent");
        assert_eq!(p.metrics.probe_rate_limited_total.get(), 2);
        p.web_datagram(b"not a probe");
        assert_eq!(p.web_mut().capsule().map(|c| c.0), Some(CloseCode::FrameMalformed.to_u32()));
        // And one that stays too long is ended by its own clock, not the join timeout.
        let mut p = Pair::web();
        p.settings();
        assert_eq!(p.connect("/v1/probe", None), Some(200));
        p.advance(Duration::from_secs(9));
        assert!(p.web_mut().capsule().is_none(), "no join timeout for a probe");
        p.advance(Duration::from_millis(1100));
        assert_eq!(p.web_mut().capsule(), Some((0, "the probe session's time is up".into())));
    }
}
