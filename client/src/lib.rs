//! The Rust player client for Outpost, used by the CLI, the bots and the tests: connect to an
//! edge node with a ticket, send reliable frames and unreliable datagrams, receive [`Event`]s,
//! and see typed close reasons.
//!
//! What the servers share (TLS set-up, sockets, HTTP serving, the edge ↔ core link) lives in
//! `outpost-net`; this crate only uses its pinned client config and socket binding.
//!
//! [`router`] asks the region routers for a route, probing the candidate nodes first
//! ([`probe`]); [`Client::connect`] then joins with the route's ticket, address and pin (or with
//! ones minted for tests).

pub mod probe;
pub mod router;
pub mod webtransport;

use outpost_net::tls;

use outpost_proto::CloseCode;
use outpost_proto::frame::{self, Frame, FrameDecoder, SavedState};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the node said when the player joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The player's id.
    pub player_id: u64,
    /// The room joined.
    pub room: String,
    /// The room's tick rate.
    pub tick_hz: u32,
    /// The player's saved state.
    pub saved: SavedState,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Our close code, when the node closed with one.
    pub code: Option<CloseCode>,
    /// The reason text, or the transport error.
    pub reason: String,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "{c}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl CloseReason {
    /// Reads the reason out of a quinn connection error.
    pub fn from_error(e: &quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => CloseReason {
                code: u32::try_from(c.error_code.into_inner()).ok().and_then(CloseCode::from_u32),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            other => CloseReason { code: None, reason: other.to_string() },
        }
    }
}

/// Something that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message from `from` (0 = the room's guest).
    Message {
        /// Sender.
        from: u64,
        /// Payload.
        data: Vec<u8>,
        /// Whether it came as a reliable frame (else a datagram).
        reliable: bool,
    },
    /// The room moved to node `node` and the client followed it: same player id, same room.
    /// Reliable messages sent before and after the move each reach the room exactly once, in
    /// order; datagrams in flight during the move may be lost.
    Moved {
        /// The node the room is on now.
        node: String,
    },
    /// The connection ended.
    Closed(CloseReason),
}

/// Why connecting or sending failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad pin or TLS set-up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Could not reach or handshake with the node.
    #[error("connect: {0}")]
    Connect(String),
    /// The node refused the join.
    #[error("refused: {code}: {reason}")]
    Refused {
        /// Why.
        code: CloseCode,
        /// Detail.
        reason: String,
    },
    /// The connection is closed.
    #[error("closed: {0}")]
    Closed(CloseReason),
    /// The node broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The datagram is larger than the path allows, or datagrams are off.
    #[error("datagram: {0}")]
    Datagram(String),
}

/// Options for [`Client::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Largest reliable frame accepted from the node.
    pub max_frame: usize,
    /// Events buffered before the client stops reading (back-pressure to the node).
    pub event_buffer: usize,
    /// Handshake + join timeout.
    pub timeout: Duration,
    /// QUIC idle timeout.
    pub idle: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_frame: 1 << 20,
            event_buffer: 4096,
            timeout: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        }
    }
}

/// The node's answer to a `Join`, on any carrier: `Joined`, or the refusal's code and reason.
pub(crate) fn joined_from(first: Frame) -> Result<Joined, ClientError> {
    match first {
        Frame::Joined { player_id, room, tick_hz, saved } => Ok(Joined { player_id, room, tick_hz, saved }),
        Frame::Refused { code, reason } => Err(ClientError::Refused { code, reason }),
        other => Err(ClientError::Protocol(format!("expected Joined, got {other:?}"))),
    }
}

/// A client-side QUIC endpoint on an ephemeral port; many clients may share one.
pub fn client_endpoint(bind: SocketAddr) -> Result<quinn::Endpoint, ClientError> {
    outpost_net::udp::quic_endpoint_sized(bind, None, CLIENT_UDP_BUFFER_BYTES)
        .map_err(|e| ClientError::Connect(format!("binding {bind}: {e}")))
}

/// Clients get less than servers: a client socket carries a few connections (or a few hundred
/// bots), and a deep queue in a starved process only turns loss into seconds of delay.
pub const CLIENT_UDP_BUFFER_BYTES: usize = 1 << 20;

/// How long a client waits for the node to acknowledge the end of its old stream when its room
/// moves, before it goes anyway.
const MOVE_FLUSH: Duration = Duration::from_secs(5);

/// Tries again when the target refuses a moving player's connection at its cap (25 ms, doubling:
/// 1.6 s in all).
const MOVE_JOIN_RETRIES: usize = 6;

/// The connection a client is on now: replaced when its room moves.
struct Current {
    conn: std::sync::RwLock<quinn::Connection>,
    /// The reliable stream's send side. A move holds it from the `Moved` frame until the new
    /// connection has joined, so what the application sends meanwhile goes to the new node.
    send: tokio::sync::Mutex<quinn::SendStream>,
}

impl Current {
    fn conn(&self) -> quinn::Connection {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A joined player connection.
pub struct Client {
    current: std::sync::Arc<Current>,
    events: mpsc::Receiver<Event>,
    /// What the node answered to the join.
    pub joined: Joined,
    /// Keeps the UDP socket open for as long as this connection lives, even when the caller
    /// drops its own endpoint handle (a closed socket's port can be reused by another endpoint,
    /// which would then answer this connection's packets with a stateless reset).
    _endpoint: quinn::Endpoint,
}

impl Client {
    /// Connects to `addr`, pinning `cert_sha256`, and joins with `ticket`.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        cert_sha256: &str,
        ticket: &str,
        opts: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let (conn, send, recv, dec, joined) = join(endpoint, addr, cert_sha256, ticket, opts).await?;
        let (tx, events) = mpsc::channel(opts.event_buffer.max(1));
        let current = std::sync::Arc::new(Current { conn: conn.clone().into(), send: send.into() });
        let follow = Follow { endpoint: endpoint.clone(), opts: opts.clone(), current: current.clone() };
        tokio::spawn(read_stream(follow, recv, dec, tx.clone()));
        tokio::spawn(read_datagrams(conn, tx));
        Ok(Client { current, events, joined, _endpoint: endpoint.clone() })
    }
}

type Joining = (quinn::Connection, quinn::SendStream, quinn::RecvStream, FrameDecoder, Joined);

/// Connects to `addr` pinning `cert_sha256`, and joins with `ticket` (or a move credential).
async fn join(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    cert_sha256: &str,
    ticket: &str,
    opts: &ConnectOptions,
) -> Result<Joining, ClientError> {
    {
        let cfg = tls::pinned_client_config(cert_sha256, tls::ALPN_PLAYER, tls::player_transport(opts.idle, 0))?;
        let fut = async {
            let connecting =
                endpoint.connect_with(cfg, addr, "outpost.invalid").map_err(|e| ClientError::Connect(e.to_string()))?;
            let conn = connecting.await.map_err(|e| match e {
                // The node refuses before the handshake when it is at a connection cap: the same
                // answer to the caller as a join it refuses for being busy.
                quinn::ConnectionError::ConnectionClosed(c)
                    if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
                {
                    ClientError::Refused {
                        code: CloseCode::NodeNotAccepting,
                        reason: "the node refused the connection (at its connection limit)".into(),
                    }
                }
                e => ClientError::Connect(e.to_string()),
            })?;
            let (mut send, mut recv) =
                conn.open_bi().await.map_err(|e| ClientError::Closed(CloseReason::from_error(&e)))?;
            send.write_all(&Frame::Join { ticket: ticket.to_string() }.encode())
                .await
                .map_err(|e| ClientError::Connect(e.to_string()))?;
            let mut dec = FrameDecoder::new(opts.max_frame);
            let first = loop {
                if let Some(f) = dec.next_frame().map_err(|e| ClientError::Protocol(e.to_string()))? {
                    break f;
                }
                match recv.read_chunk(usize::MAX, true).await {
                    Ok(Some(chunk)) => dec.push(&chunk.bytes),
                    Ok(None) => return Err(ClientError::Protocol("stream ended before Joined".into())),
                    Err(_) => {
                        let reason = conn.closed().await;
                        let reason = CloseReason::from_error(&reason);
                        return Err(match reason.code {
                            Some(code) => ClientError::Refused { code, reason: reason.reason },
                            None => ClientError::Closed(reason),
                        });
                    }
                }
            };
            let joined = joined_from(first)?;
            Ok((conn, send, recv, dec, joined))
        };
        tokio::time::timeout(opts.timeout, fut)
            .await
            .map_err(|_| ClientError::Connect(format!("no answer within {:?}", opts.timeout)))?
    }
}

impl Client {
    /// Sends a reliable message to `to` (0 = the room).
    pub async fn send(&self, to: u64, data: &[u8]) -> Result<(), ClientError> {
        self.send_raw(&Frame::Message { peer: to, data: data.to_vec() }.encode()).await
    }

    /// Writes raw bytes on the reliable stream (tests use it to send malformed frames).
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut s = self.current.send.lock().await;
        s.write_all(bytes).await.map_err(|_| self.closed_error())
    }

    /// Sends an unreliable message to `to` (0 = the room) as one datagram.
    pub fn send_datagram(&self, to: u64, data: &[u8]) -> Result<(), ClientError> {
        self.current.conn().send_datagram(frame::encode_peer(to, data).into()).map_err(|e| match e {
            quinn::SendDatagramError::ConnectionLost(e) => ClientError::Closed(CloseReason::from_error(&e)),
            other => ClientError::Datagram(other.to_string()),
        })
    }

    fn closed_error(&self) -> ClientError {
        match self.current.conn().close_reason() {
            Some(e) => ClientError::Closed(CloseReason::from_error(&e)),
            None => ClientError::Closed(CloseReason { code: None, reason: "stream closed".into() }),
        }
    }

    /// The next event; `None` once the connection is closed and everything was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event within `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.events.recv()).await.ok().flatten()
    }

    /// Waits for the connection to close and says why (a move to another node is not a close).
    pub async fn closed(&self) -> CloseReason {
        loop {
            let conn = self.current.conn();
            let why = conn.closed().await;
            if self.current.conn().stable_id() == conn.stable_id() {
                return CloseReason::from_error(&why);
            }
        }
    }

    /// Closes the connection (the player leaves).
    pub fn close(&self) {
        self.current.conn().close(0u32.into(), b"bye");
    }

    /// The connection the client is on now (for stats).
    pub fn connection(&self) -> quinn::Connection {
        self.current.conn()
    }
}

/// What the stream reader needs to follow a move.
struct Follow {
    endpoint: quinn::Endpoint,
    opts: ConnectOptions,
    current: std::sync::Arc<Current>,
}

impl Follow {
    /// Follows the room to `target`: ends the old stream (the node forwards what it read up to
    /// that end), joins the target with the credential, and closes the old connection once the
    /// old node has acknowledged that end.
    async fn follow(
        &self,
        target: &frame::MoveTarget,
        tx: &mpsc::Sender<Event>,
    ) -> Result<(quinn::RecvStream, FrameDecoder), CloseReason> {
        let refused = |why: String| CloseReason { code: Some(CloseCode::MoveRefused), reason: why };
        let mut send = self.current.send.lock().await;
        let old = self.current.conn();
        let addr: SocketAddr =
            target.quic.parse().map_err(|_| refused(format!("the Moved frame names no address: {:?}", target.quic)))?;
        // The old stream's end reaches the old node while the client joins the new one: the new
        // node holds this player's messages until the old node forwarded that end, so nothing
        // waits for the other. The old connection closes only once its stream was acknowledged,
        // in the background: the player plays on the new node meanwhile.
        let finished = send.finish().is_ok();
        // A node at its connection cap refuses before any handshake, and a whole room's players
        // arrive at once: a few quick tries, well inside the credential's life, before giving up.
        let joining = async {
            let mut wait = Duration::from_millis(25);
            for _ in 0..MOVE_JOIN_RETRIES {
                match join(&self.endpoint, addr, &target.cert_sha256, &target.credential, &self.opts).await {
                    Err(ClientError::Refused { code: CloseCode::NodeNotAccepting, .. }) => {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    done => return done,
                }
            }
            join(&self.endpoint, addr, &target.cert_sha256, &target.credential, &self.opts).await
        };
        let joined = joining.await;
        let (conn, new_send, recv, dec, _) = match joined {
            Ok(j) => j,
            Err(e) => {
                old.close(0u32.into(), b"moved");
                return Err(refused(format!("following the room to {}: {e}", target.node)));
            }
        };
        let old_send = std::mem::replace(&mut *send, new_send);
        tokio::spawn(async move {
            if finished {
                let _ = tokio::time::timeout(MOVE_FLUSH, old_send.stopped()).await;
            }
            old.close(0u32.into(), b"moved");
        });
        *self.current.conn.write().unwrap_or_else(|e| e.into_inner()) = conn.clone();
        tokio::spawn(read_datagrams(conn, tx.clone()));
        let _ = tx.send(Event::Moved { node: target.node.clone() }).await;
        Ok((recv, dec))
    }
}

async fn read_stream(follow: Follow, mut recv: quinn::RecvStream, mut dec: FrameDecoder, tx: mpsc::Sender<Event>) {
    let mut conn = follow.current.conn();
    loop {
        loop {
            match dec.next_frame() {
                Ok(Some(Frame::Message { peer, data })) => {
                    if tx.send(Event::Message { from: peer, data, reliable: true }).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Frame::Moved { target })) => match follow.follow(&target, &tx).await {
                    Ok((r, d)) => {
                        (recv, dec) = (r, d);
                        conn = follow.current.conn();
                    }
                    Err(why) => {
                        let _ = tx.send(Event::Closed(why)).await;
                        return;
                    }
                },
                Ok(Some(other)) => tracing::debug!(?other, "ignoring an unexpected frame"),
                Ok(None) => break,
                Err(e) => {
                    conn.close(e.code().to_u32().into(), e.to_string().as_bytes());
                    break;
                }
            }
        }
        // quinn's received chunks as they are: no buffer of our own held for the connection's life
        // (a bench process keeps thousands of these).
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => dec.push(&chunk.bytes),
            Ok(None) | Err(_) => break,
        }
    }
    let reason = CloseReason::from_error(&conn.closed().await);
    let _ = tx.send(Event::Closed(reason)).await;
}

async fn read_datagrams(conn: quinn::Connection, tx: mpsc::Sender<Event>) {
    while let Ok(d) = conn.read_datagram().await {
        if let Ok((from, data)) = frame::decode_peer(&d) {
            // Unreliable by nature: when the application is behind, drop rather than queue.
            let _ = tx.try_send(Event::Message { from, data: data.to_vec(), reliable: false });
        }
    }
}
