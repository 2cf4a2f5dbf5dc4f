//! WebTransport over HTTP/3 for one connection, without I/O: what a browser session needs on top
//! of the QUIC connection that the player transport loop ([`crate::quic::driver`]) already runs.
//!
//! The loop drives WebTransport connections exactly as native ones (one thread, `recvmmsg` and
//! `sendmmsg`, no task or lock per connection); quinn's async wrapper cost a third more CPU per
//! player-tick than the native path (BENCHMARKS.md, session 20). This module adds the HTTP/3
//! layer around the same [`crate::session::PlayerSession`]:
//! - our control stream with SETTINGS (WebTransport, HTTP datagrams, extended CONNECT), and the
//!   client's: its SETTINGS read, QPACK streams drained (we advertise no dynamic table);
//! - the CONNECT request on the first bi stream: path and `Origin` checked, answered 200, 404
//!   or 403 with the framing of the `web-transport-proto` crate;
//! - the player's bi stream (`0x41`, session id, then the player protocol's frames) and
//!   datagrams (quarter stream id, then `peer u64 | data`);
//! - the close: the player's stream finished and acknowledged (a refusal is read first), then
//!   the close capsule with the u32 code on the CONNECT stream; the connection closes when the
//!   client does, or after [`CLOSE_WAIT`].
//!
//! Anything malformed before a session exists closes the connection with
//! `H3_GENERAL_PROTOCOL_ERROR`; stray streams are stopped, never buffered without bound.

use crate::beacon::ProbeLimiter;
use crate::session::{PlayerSession, SessionCtx};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use outpost_proto::CloseCode;
use quinn_proto::{Connection, Dir, ReadError, StreamId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use web_transport_proto::{Capsule, ConnectError, ConnectRequest, ConnectResponse, Frame, Settings, StreamUni, VarInt};

/// HTTP/3's H3_NO_ERROR: a session that ended as asked.
pub const H3_NO_ERROR: u32 = 0x100;
/// HTTP/3's H3_GENERAL_PROTOCOL_ERROR, for connections that never made a session.
pub const H3_GENERAL_PROTOCOL_ERROR: u32 = 0x101;
/// A stream of a kind this endpoint does not take (unknown uni streams, WebTransport uni
/// streams, a second player stream).
const H3_STREAM_CREATION_ERROR: u32 = 0x103;
/// A second CONNECT on one connection.
const H3_REQUEST_REJECTED: u32 = 0x10b;
/// The most bytes of a SETTINGS frame or CONNECT request held while they arrive: HTTP/3's field
/// section limit that the framing crate applies, and the frame's header.
const MAX_HEAD_BYTES: usize = 16 * 1024 + 16;
/// How long the close waits, first for the player's stream to be acknowledged, then for the
/// client to close after the capsule (or after a refused CONNECT's status).
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long one probe session may stay open.
pub const PROBE_SESSION: Duration = Duration::from_secs(10);
/// The player's session path.
pub const PATH: &str = "/v1/wt";
/// The path of browsers' RTT probes.
pub const PROBE_PATH: &str = "/v1/probe";

/// What every WebTransport connection of the endpoint shares.
pub struct WtShared {
    /// Browser origins whose pages may open sessions (`*` for any).
    pub origins: Vec<String>,
    /// The beacon's per-source limit, which probe sessions share.
    pub limiter: ProbeLimiter,
}

/// What a session is for, from its CONNECT request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A player: the session joins a room.
    Play,
    /// A browser measuring the node: datagrams echoed.
    Probe,
}

/// Decides on a CONNECT request: the path and the page's origin.
pub fn check_request(path: &str, origin: Option<&str>, origins: &[String]) -> Result<Purpose, hyper::StatusCode> {
    let purpose = match path {
        PATH => Purpose::Play,
        PROBE_PATH => Purpose::Probe,
        _ => return Err(hyper::StatusCode::NOT_FOUND),
    };
    if !crate::websocket::origin_allowed(origins, origin) {
        return Err(hyper::StatusCode::FORBIDDEN);
    }
    Ok(purpose)
}

/// A client uni stream.
enum Uni {
    /// Its type is not read yet.
    Untyped(Vec<u8>),
    /// The control stream, until its SETTINGS are read.
    Control(Vec<u8>),
    /// Read and dropped: QPACK streams, and the control stream after SETTINGS.
    Drain,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No CONNECT answered yet.
    Connecting,
    /// Answered 200: the session id's quarter is the datagrams' prefix.
    Open { purpose: Purpose, id: StreamId, quarter: u64 },
    /// Answered with an error status; closes when the client does.
    Refused,
}

/// How far a close has got.
#[derive(Debug)]
enum Closing {
    /// The player's stream is finished; waits for the client to acknowledge it.
    Flushing { code: u32, reason: String, until: Instant },
    /// The capsule (or a refusal status) is sent; waits for the client to close.
    Sent { code: u64, until: Instant },
}

/// Bytes for one of our streams, written as flow control allows.
struct Out {
    id: StreamId,
    buf: Vec<u8>,
    fin: bool,
}

/// One connection's WebTransport state.
pub struct WtConn {
    shared: Arc<WtShared>,
    control: Option<StreamId>,
    uni: Vec<(StreamId, Uni)>,
    /// Client bi streams whose first bytes say what they are.
    untyped: Vec<(StreamId, Vec<u8>)>,
    /// The CONNECT stream, and the request's bytes until it is decoded.
    connect: Option<(StreamId, Vec<u8>)>,
    out: Vec<Out>,
    phase: Phase,
    closing: Option<Closing>,
    probe_end: Option<Instant>,
    /// Something happened on a stream of this layer: [`WtConn::work`] has to run.
    pub dirty: bool,
}

impl WtConn {
    /// The state of a new connection.
    pub fn new(shared: Arc<WtShared>) -> WtConn {
        WtConn {
            shared,
            control: None,
            uni: Vec::new(),
            untyped: Vec::new(),
            connect: None,
            out: Vec::new(),
            phase: Phase::Connecting,
            closing: None,
            probe_end: None,
            dirty: false,
        }
    }

    /// A probe session, whose timing is its own (no join deadline).
    pub fn is_probe(&self) -> bool {
        matches!(self.phase, Phase::Open { purpose: Purpose::Probe, .. })
    }

    /// The handshake is done: our control stream and SETTINGS go out.
    pub fn connected(&mut self, conn: &mut Connection) {
        let Some(id) = conn.streams().open(Dir::Uni) else {
            conn.close(Instant::now(), H3_GENERAL_PROTOCOL_ERROR.into(), Bytes::from_static(b"no control stream"));
            return;
        };
        let mut settings = Settings::default();
        settings.enable_webtransport(1);
        let mut buf = Vec::new();
        settings.encode(&mut buf);
        self.control = Some(id);
        self.out.push(Out { id, buf, fin: false });
        self.dirty = true;
    }

    /// Client streams were opened.
    pub fn opened(&mut self, conn: &mut Connection, dir: Dir) {
        while let Some(id) = conn.streams().accept(dir) {
            match dir {
                Dir::Uni => self.uni.push((id, Uni::Untyped(Vec::new()))),
                Dir::Bi => self.untyped.push((id, Vec::new())),
            }
        }
        self.dirty = true;
    }

    /// The earliest deadline of this layer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let closing = match &self.closing {
            Some(Closing::Flushing { until, .. } | Closing::Sent { until, .. }) => Some(*until),
            None => None,
        };
        [closing, self.probe_end].into_iter().flatten().min()
    }

    /// Time passed: a close's wait is over, or a probe session's time is up.
    pub fn handle_timeout(&mut self, conn: &mut Connection, now: Instant) {
        match &self.closing {
            Some(Closing::Flushing { until, .. }) if *until <= now => self.send_capsule(now),
            Some(Closing::Sent { code, until }) if *until <= now => {
                let code = *code;
                self.closing = None;
                close_conn(conn, now, code, "");
            }
            _ => {}
        }
        if self.probe_end.is_some_and(|t| t <= now) {
            self.probe_end = None;
            self.close(conn, None, now, 0, "the probe session's time is up");
        }
    }

    /// The player's stream was acknowledged to its end (or stopped): the capsule follows.
    pub fn stream_done(&mut self, now: Instant) {
        if matches!(self.closing, Some(Closing::Flushing { .. })) {
            self.send_capsule(now);
        }
    }

    /// Closes the session with `code`: the player's stream (`player`) is finished first, so a
    /// refusal written there is read before the capsule ends the session on the client. Before
    /// a session exists, the connection closes at once.
    pub fn close(&mut self, conn: &mut Connection, player: Option<StreamId>, now: Instant, code: u32, reason: &str) {
        if self.closing.is_some() || conn.is_closed() {
            return;
        }
        let reason: String = reason.chars().take(200).collect();
        if !matches!(self.phase, Phase::Open { .. }) {
            close_conn(conn, now, web_transport_proto::error_to_http3(code), &reason);
            return;
        }
        self.closing = Some(Closing::Flushing { code, reason, until: now + CLOSE_WAIT });
        match player {
            Some(id) if conn.send_stream(id).finish().is_ok() => {}
            _ => self.send_capsule(now),
        }
    }

    fn send_capsule(&mut self, now: Instant) {
        let Some(Closing::Flushing { code, reason, .. }) = self.closing.take() else { return };
        let Phase::Open { id, .. } = self.phase else { return };
        let mut capsule = Vec::new();
        Capsule::CloseWebTransportSession { code, reason }.encode(&mut capsule);
        let mut buf = Vec::with_capacity(capsule.len() + 8);
        Frame::DATA.encode(&mut buf);
        VarInt::from_u32(capsule.len() as u32).encode(&mut buf);
        buf.extend_from_slice(&capsule);
        self.out.push(Out { id, buf, fin: true });
        self.closing = Some(Closing::Sent { code: web_transport_proto::error_to_http3(code), until: now + CLOSE_WAIT });
        self.dirty = true;
    }

    /// Reads this layer's streams and writes its own. A player stream found here is set in
    /// `player`, with the bytes already read after its header handed to `session`.
    pub fn work(
        &mut self,
        conn: &mut Connection,
        player: &mut Option<StreamId>,
        session: &mut PlayerSession,
        ctx: &SessionCtx,
        now: Instant,
    ) {
        self.dirty = false;
        self.read_uni(conn);
        if !conn.is_closed() {
            self.read_connect(conn, session, ctx, now);
        }
        if !conn.is_closed() {
            self.sort_bi(conn, player, session);
        }
        self.flush(conn);
    }

    /// The client's uni streams: its control stream's SETTINGS, QPACK streams drained, anything
    /// else stopped.
    fn read_uni(&mut self, conn: &mut Connection) {
        let mut i = 0;
        while i < self.uni.len() {
            let id = self.uni[i].0;
            let keep = match &mut self.uni[i].1 {
                Uni::Drain => !matches!(drain(conn, id), Read::End),
                Uni::Untyped(buf) => {
                    let read = read_into(conn, id, buf, MAX_HEAD_BYTES);
                    let mut cursor = &buf[..];
                    match StreamUni::decode(&mut cursor) {
                        Ok(StreamUni::CONTROL) => {
                            let buf = std::mem::take(buf);
                            self.uni[i].1 = Uni::Control(buf);
                            continue;
                        }
                        Ok(StreamUni::QPACK_ENCODER | StreamUni::QPACK_DECODER) => {
                            self.uni[i].1 = Uni::Drain;
                            continue;
                        }
                        Ok(_) => {
                            let _ = conn.recv_stream(id).stop(H3_STREAM_CREATION_ERROR.into());
                            false
                        }
                        Err(_) => !matches!(read, Read::End),
                    }
                }
                Uni::Control(buf) => {
                    let read = read_into(conn, id, buf, MAX_HEAD_BYTES);
                    match Settings::decode(&mut &buf[..]) {
                        Ok(_) => {
                            self.uni[i].1 = Uni::Drain;
                            continue;
                        }
                        Err(web_transport_proto::SettingsError::UnexpectedEnd) if matches!(read, Read::Open) => true,
                        Err(_) => {
                            close_conn(conn, Instant::now(), H3_GENERAL_PROTOCOL_ERROR.into(), "bad SETTINGS");
                            return;
                        }
                    }
                }
            };
            if keep {
                i += 1;
            } else {
                self.uni.swap_remove(i);
            }
        }
    }

    /// The client bi streams not yet known: the first with a HEADERS frame is the CONNECT, the
    /// first WebTransport stream of the session the player's.
    fn sort_bi(&mut self, conn: &mut Connection, player: &mut Option<StreamId>, session: &mut PlayerSession) {
        let mut i = 0;
        while i < self.untyped.len() {
            let (id, buf) = &mut self.untyped[i];
            let id = *id;
            let read = read_into(conn, id, buf, MAX_HEAD_BYTES);
            let mut cursor = &buf[..];
            let kind = VarInt::decode(&mut cursor).map(|v| v.into_inner());
            let decided = match kind {
                Err(_) if !matches!(read, Read::End) => false,
                Ok(0x01) if self.connect.is_none() => {
                    let buf = std::mem::take(buf);
                    self.connect = Some((id, buf));
                    self.dirty = true;
                    true
                }
                Ok(0x41) => match (self.phase, VarInt::decode(&mut cursor)) {
                    (_, Err(_)) if !matches!(read, Read::End) => false,
                    (Phase::Connecting, Ok(_)) => false,
                    (Phase::Open { purpose: Purpose::Play, id: sid, .. }, Ok(s))
                        if player.is_none() && s.into_inner() == u64::from(sid) =>
                    {
                        let rest = buf.len() - cursor.len();
                        session.handle_stream_data(&buf[rest..]);
                        if matches!(read, Read::End) {
                            session.handle_stream_end();
                        }
                        *player = Some(id);
                        true
                    }
                    _ => {
                        reject(conn, id, H3_STREAM_CREATION_ERROR);
                        true
                    }
                },
                Ok(0x01) => {
                    reject(conn, id, H3_REQUEST_REJECTED);
                    true
                }
                _ if self.connect.is_none() => {
                    close_conn(conn, Instant::now(), H3_GENERAL_PROTOCOL_ERROR.into(), "not a WebTransport session");
                    return;
                }
                _ => {
                    reject(conn, id, H3_STREAM_CREATION_ERROR);
                    true
                }
            };
            if decided {
                self.untyped.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The CONNECT stream: the request until it is decided, then capsules from the client (its
    /// close, or the stream's end, ends the session).
    fn read_connect(&mut self, conn: &mut Connection, session: &mut PlayerSession, ctx: &SessionCtx, now: Instant) {
        let Some((id, buf)) = &mut self.connect else { return };
        let id = *id;
        if self.phase != Phase::Connecting {
            // After the answer, anything from the client here is a capsule, and only its close
            // matters to us: the client is done either way.
            if matches!(drain(conn, id), Read::End) {
                self.client_closed(conn, session, now);
            }
            return;
        }
        let read = read_into(conn, id, buf, MAX_HEAD_BYTES);
        let request = match ConnectRequest::decode(&mut &buf[..]) {
            Ok(r) => r,
            Err(ConnectError::UnexpectedEnd) if matches!(read, Read::Open) => return,
            Err(e) => {
                ctx.metrics.players_refused_total.inc();
                tracing::debug!(remote = %conn.remote_address(), error = %e, "webtransport CONNECT refused");
                close_conn(conn, now, H3_GENERAL_PROTOCOL_ERROR.into(), "not a WebTransport session");
                return;
            }
        };
        buf.clear();
        let origin = request.headers.get("origin").and_then(|v| v.to_str().ok());
        let (status, phase) = match check_request(request.url.path(), origin, &self.shared.origins) {
            Ok(purpose) => {
                let quarter = u64::from(id) / 4;
                (hyper::StatusCode::OK, Phase::Open { purpose, id, quarter })
            }
            Err(status) => {
                ctx.metrics.players_refused_total.inc();
                tracing::debug!(remote = %conn.remote_address(), path = request.url.path(), ?origin, %status,
                    "webtransport session refused");
                (status, Phase::Refused)
            }
        };
        let mut out = Vec::new();
        if ConnectResponse::new(status).encode(&mut out).is_err() {
            close_conn(conn, now, H3_GENERAL_PROTOCOL_ERROR.into(), "");
            return;
        }
        self.phase = phase;
        match phase {
            Phase::Refused => {
                // The status goes out and the stream ends; the client closes once it read it.
                self.out.push(Out { id, buf: out, fin: true });
                self.closing = Some(Closing::Sent { code: H3_GENERAL_PROTOCOL_ERROR.into(), until: now + CLOSE_WAIT });
            }
            _ => self.out.push(Out { id, buf: out, fin: false }),
        }
        if self.is_probe() {
            self.probe_end = Some(now + PROBE_SESSION);
        }
    }

    /// The client ended the session: the connection closes now (it waits for us).
    fn client_closed(&mut self, conn: &mut Connection, session: &mut PlayerSession, now: Instant) {
        session.handle_closed();
        self.closing = None;
        close_conn(conn, now, H3_NO_ERROR.into(), "");
    }

    /// Writes what our streams have, as far as flow control allows.
    fn flush(&mut self, conn: &mut Connection) {
        self.out.retain_mut(|o| {
            if conn.is_closed() {
                return false;
            }
            let mut stream = conn.send_stream(o.id);
            while !o.buf.is_empty() {
                match stream.write(&o.buf) {
                    Ok(n) => drop(o.buf.drain(..n)),
                    Err(quinn_proto::WriteError::Blocked) => return true,
                    Err(_) => return false,
                }
            }
            if o.fin {
                let _ = stream.finish();
            }
            false
        });
    }

    /// A datagram from the client: its body for the player's session, or, in a probe session,
    /// the beacon reply sent back (within the source's rate, never longer than the probe).
    pub fn datagram(
        &mut self,
        conn: &mut Connection,
        player: Option<StreamId>,
        ctx: &SessionCtx,
        now: Instant,
        d: Bytes,
    ) -> Option<Bytes> {
        let Phase::Open { purpose, quarter, .. } = self.phase else { return None };
        if self.closing.is_some() {
            return None;
        }
        let mut cursor = &d[..];
        let prefix = VarInt::decode(&mut cursor).ok()?.into_inner();
        if prefix != quarter {
            return None;
        }
        let body = d.slice(d.len() - cursor.remaining()..);
        if purpose == Purpose::Play {
            return Some(body);
        }
        let mut reply = body.to_vec();
        if !outpost_proto::beacon::make_reply(&mut reply) {
            ctx.metrics.probe_malformed_total.inc();
            self.close(conn, player, now, CloseCode::FrameMalformed.to_u32(), "not a beacon probe");
            return None;
        }
        if !self.shared.limiter.allow(conn.remote_address().ip(), now) {
            ctx.metrics.probe_rate_limited_total.inc();
            return None;
        }
        if let Some(d) = self.frame_datagram(&reply)
            && conn.datagrams().send(d, false).is_ok()
        {
            ctx.metrics.probe_replies_total.inc();
        }
        None
    }

    /// `body` with the session's datagram prefix, once the session is open.
    pub fn frame_datagram(&self, body: &[u8]) -> Option<Bytes> {
        let Phase::Open { quarter, .. } = self.phase else { return None };
        let quarter = VarInt::from_u64(quarter).ok()?;
        let mut d = BytesMut::with_capacity(body.len() + quarter.size());
        quarter.encode(&mut d);
        d.put_slice(body);
        Some(d.freeze())
    }
}

/// How a read left a stream.
enum Read {
    /// More may come.
    Open,
    /// The buffer is at its limit; more may wait in the stream.
    Full,
    /// Finished or reset: nothing more comes.
    End,
}

/// Appends what stream `id` has to `buf`, up to `limit` bytes in all.
fn read_into(conn: &mut Connection, id: StreamId, buf: &mut Vec<u8>, limit: usize) -> Read {
    let mut stream = conn.recv_stream(id);
    let Ok(mut chunks) = stream.read(true) else { return Read::End };
    let mut read = Read::Open;
    loop {
        let room = limit.saturating_sub(buf.len());
        if room == 0 {
            read = Read::Full;
            break;
        }
        match chunks.next(room) {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            Ok(None) | Err(ReadError::Reset(_)) => {
                read = Read::End;
                break;
            }
            Err(ReadError::Blocked) => break,
        }
    }
    let _ = chunks.finalize();
    read
}

/// Reads and drops what stream `id` has.
fn drain(conn: &mut Connection, id: StreamId) -> Read {
    let mut stream = conn.recv_stream(id);
    let Ok(mut chunks) = stream.read(true) else { return Read::End };
    let read = loop {
        match chunks.next(usize::MAX) {
            Ok(Some(_)) => {}
            Ok(None) | Err(ReadError::Reset(_)) => break Read::End,
            Err(ReadError::Blocked) => break Read::Open,
        }
    };
    let _ = chunks.finalize();
    read
}

/// Refuses a client bi stream both ways.
fn reject(conn: &mut Connection, id: StreamId, code: u32) {
    let _ = conn.recv_stream(id).stop(code.into());
    let _ = conn.send_stream(id).reset(code.into());
}

fn close_conn(conn: &mut Connection, now: Instant, code: u64, reason: &str) {
    if conn.is_closed() {
        return;
    }
    let code = quinn_proto::VarInt::from_u64(code).unwrap_or(quinn_proto::VarInt::from_u32(H3_GENERAL_PROTOCOL_ERROR));
    conn.close(now, code, Bytes::copy_from_slice(reason.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_need_a_known_path_and_an_allowed_origin() {
        let origins = vec!["http://127.0.0.1:8080".to_string()];
        assert_eq!(check_request(PATH, Some("http://127.0.0.1:8080"), &origins), Ok(Purpose::Play));
        assert_eq!(check_request(PROBE_PATH, None, &origins), Ok(Purpose::Probe));
        assert_eq!(check_request("/v1/ws", None, &origins), Err(hyper::StatusCode::NOT_FOUND));
        assert_eq!(check_request(PATH, Some("https://evil.example"), &origins), Err(hyper::StatusCode::FORBIDDEN));
        assert_eq!(check_request(PATH, Some("http://127.0.0.1:8080"), &[]), Err(hyper::StatusCode::FORBIDDEN));
    }

    #[test]
    fn datagrams_carry_the_quarter_stream_id() {
        let mut wt = WtConn::new(Arc::new(WtShared {
            origins: Vec::new(),
            limiter: ProbeLimiter::new(crate::beacon::BeaconLimits { per_second: 1.0, burst: 1.0, max_sources: 1 }),
        }));
        assert_eq!(wt.frame_datagram(b"x"), None, "no session, no datagrams");
        let id = StreamId::new(quinn_proto::Side::Client, Dir::Bi, 100);
        wt.phase = Phase::Open { purpose: Purpose::Play, id, quarter: u64::from(id) / 4 };
        assert_eq!(wt.frame_datagram(b"x").unwrap()[..], [0x40, 100, b'x'], "stream 400, quarter 100, two bytes");
    }
}
