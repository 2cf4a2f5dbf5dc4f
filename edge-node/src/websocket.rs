//! The WebSocket player endpoint (`--listen-websocket`), for browsers and networks without
//! WebTransport: the same player session as QUIC ([`crate::session`]), the same ticket check,
//! placement, limits and codes, over one TCP connection.
//!
//! - The upgrade is taken only on [`PATH`], and only from pages of `--cors-origin` origins (a
//!   request without `Origin` is not a browser's and is let through); the node's connection caps
//!   apply before the handshake, which must finish within the join timeout.
//! - One binary message is exactly one frame (the same length-prefixed frames as the QUIC
//!   stream); a text message, or a message that is not exactly one frame, closes the player
//!   `frame-malformed`. The library's message and frame size are bounded by the node's largest
//!   frame, and its write buffer by the player's backlog limit (its defaults are 64 MiB and
//!   unbounded).
//! - WebSocket has no unreliable channel: the room's unreliable messages go reliably and in
//!   order, counted (`outpost_player_unreliable_as_reliable_total`), through a bounded queue
//!   (dropped and counted past it, as a congested QUIC player's datagrams are).
//! - Close codes are `4000 + (code − 0x100)` with the reason cut to 123 bytes (a close frame
//!   cannot carry 0x101–0x110); a refused join gets its `Refused` frame, then the close.

use crate::quic::PlayerCtx;
use crate::room::player::PlayerTransport;
use crate::session::PlayerSession;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use outpost_proto::CloseCode;
use outpost_proto::frame::{self, Frame};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, WebSocketConfig, frame::coding};

/// The upgrade path of players.
pub const PATH: &str = "/v1/ws";
/// The upgrade path of browsers' RTT probes: each binary message is a beacon probe, answered
/// with the beacon's reply (never larger), under the beacon's per-source rate limit.
pub const PROBE_PATH: &str = "/v1/probe";
/// How long one probe session may stay open: a page measures a few round trips, then goes.
const PROBE_SESSION: Duration = Duration::from_secs(10);

/// The probe URL that goes with a player URL (`.../v1/ws` → `.../v1/probe`).
pub fn probe_url(play_url: &str) -> String {
    match play_url.strip_suffix(PATH) {
        Some(base) => format!("{base}{PROBE_PATH}"),
        None => format!("{}{PROBE_PATH}", play_url.trim_end_matches('/')),
    }
}
/// Unreliable messages waiting for one player's socket; past it they are dropped and counted.
const MAX_QUEUED_UNRELIABLE: usize = 256;
/// Messages handed to a player's writer task and not yet written: a frame in hand keeps the
/// player's backlog (and so its slow-consumer clock) where the room can see it.
const WRITES_IN_FLIGHT: usize = 2;
/// How often a connection looks at its slow-consumer clock and a held message.
const HOUSEKEEPING: Duration = Duration::from_millis(50);

/// Where the endpoint listens and whom it lets in.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// TCP address.
    pub listen: SocketAddr,
    /// Browser origins whose pages may connect (`*` for any); none lets no page in.
    pub origins: Vec<String>,
    /// The beacon's per-source limit, which probe sessions share.
    pub probe: crate::beacon::BeaconLimits,
    /// `wss://` with a CA-signed pair (`--websocket-cert`/`--websocket-key`): WebSocket has no
    /// certificate pinning, so a browser needs a certificate it already trusts.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The bound endpoint.
pub struct WsEndpoint {
    /// The bound address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    shutdown: Arc<Notify>,
}

impl WsEndpoint {
    /// The URL players reach the bound endpoint at (`wss://` with TLS).
    pub fn url(&self, tls: bool) -> String {
        format!("{}://{}{PATH}", if tls { "wss" } else { "ws" }, self.addr)
    }

    /// Binds `settings.listen` and serves players of `ctx` on it.
    pub async fn start(settings: WsSettings, ctx: Arc<PlayerCtx>) -> anyhow::Result<WsEndpoint> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("listen_websocket: binding {}: {e}", settings.listen))?;
        let addr = listener.local_addr()?;
        let shutdown = Arc::new(Notify::new());
        let limiter = Arc::new(crate::beacon::ProbeLimiter::new(settings.probe));
        let task = tokio::spawn(accept_loop(listener, Arc::new(settings), ctx, limiter, shutdown.clone()));
        Ok(WsEndpoint { addr, task, shutdown })
    }

    /// Closes every WebSocket player with `node-shutdown` and stops accepting.
    pub fn shutdown(&self) {
        self.shutdown.notify_waiters();
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    settings: Arc<WsSettings>,
    ctx: Arc<PlayerCtx>,
    limiter: Arc<crate::beacon::ProbeLimiter>,
    shutdown: Arc<Notify>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "websocket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match ctx.admission.admit(peer.ip(), true) {
            crate::quic::admission::Verdict::Accept(slot) => slot,
            crate::quic::admission::Verdict::Retry | crate::quic::admission::Verdict::Refuse(_) => {
                ctx.metrics.player_connections_refused_total.inc();
                continue;
            }
        };
        let (ctx, settings, shutdown, limiter) = (ctx.clone(), settings.clone(), shutdown.clone(), limiter.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut slot = slot;
            match settings.tls.clone() {
                None => connection(stream, peer, &settings, &ctx, &limiter, &mut slot, &shutdown).await,
                Some(tls) => {
                    // The TLS handshake shares the upgrade's deadline.
                    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                    match tokio::time::timeout(ctx.session.join_timeout, accept).await {
                        Ok(Ok(stream)) => {
                            connection(stream, peer, &settings, &ctx, &limiter, &mut slot, &shutdown).await
                        }
                        _ => {
                            ctx.metrics.players_refused_total.inc();
                        }
                    }
                }
            }
        });
    }
}

/// Whether a page of `origin` may connect (WebSocket upgrades and WebTransport sessions alike;
/// a request without `Origin` is not a browser's).
pub(crate) fn origin_allowed(origins: &[String], origin: Option<&str>) -> bool {
    match origin {
        None => true,
        Some(o) => origins.iter().any(|a| a == "*" || a == o),
    }
}

fn refuse(status: u16, why: String) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::FORBIDDEN);
    r
}

/// The library's limits from the node's: a message is one frame, at most the largest frame; the
/// write buffer is bounded by the player's backlog cap. Its read buffer is 4 KiB instead of its
/// 128 KiB default, which made an idle WebSocket player cost three times a QUIC one (game
/// messages are small; a large one is read in more calls).
fn ws_config(ctx: &PlayerCtx) -> WebSocketConfig {
    let limits = &ctx.session.limits;
    let max_frame = limits.max_message + 9 + 4;
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
        .write_buffer_size(0)
        .max_write_buffer_size(limits.backlog_hard_bytes().max(max_frame * 2))
}

/// What the room side of one WebSocket player does: wake the connection for frames, queue
/// unreliable messages (bounded), ask for a close.
struct WsTransport {
    signal: crate::quic::TaskSignal,
    unreliable: mpsc::Sender<Bytes>,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl PlayerTransport for WsTransport {
    fn frames_waiting(&self) {
        self.signal.frames_waiting();
    }
    fn datagram(&self, d: Bytes) {
        if self.unreliable.try_send(d).is_err() {
            self.metrics.player_datagrams_dropped_total.inc();
        }
    }
    fn close(&self, code: CloseCode, reason: String) {
        self.signal.ask_close(code, reason);
    }
}

// The upgrade callback's error type is the library's (an HTTP response), large by nature.
#[allow(clippy::result_large_err)]
async fn connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    settings: &WsSettings,
    ctx: &Arc<PlayerCtx>,
    limiter: &crate::beacon::ProbeLimiter,
    slot: &mut crate::quic::admission::ConnSlot,
    shutdown: &Notify,
) {
    let origins = settings.origins.clone();
    let is_probe = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe_flag = is_probe.clone();
    let check = move |req: &Request, resp: Response| {
        match req.uri().path() {
            PATH => {}
            PROBE_PATH => probe_flag.store(true, std::sync::atomic::Ordering::Relaxed),
            other => {
                return Err(refuse(404, format!("no websocket endpoint at {other}; use {PATH} or {PROBE_PATH}")));
            }
        }
        let origin = req.headers().get("origin").and_then(|v| v.to_str().ok());
        if !origin_allowed(&origins, origin) {
            return Err(refuse(403, format!("origin {} is not allowed here (--cors-origin)", origin.unwrap_or(""))));
        }
        Ok(resp)
    };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(ws_config(ctx)));
    let ws = match tokio::time::timeout(ctx.session.join_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            ctx.metrics.players_refused_total.inc();
            tracing::debug!(remote = %peer, error = %e, "websocket upgrade refused");
            return;
        }
        Err(_) => {
            ctx.metrics.players_refused_total.inc();
            return;
        }
    };
    if is_probe.load(std::sync::atomic::Ordering::Relaxed) {
        return probe_session(ws, peer, ctx, limiter).await;
    }
    let (unreliable_tx, mut unreliable) = mpsc::channel(MAX_QUEUED_UNRELIABLE);
    let transport = Arc::new(WsTransport {
        signal: crate::quic::TaskSignal::default(),
        unreliable: unreliable_tx,
        metrics: ctx.metrics.clone(),
    });
    let mut session = PlayerSession::new(&ctx.session, peer, Instant::now());
    let (admitted_tx, mut admitted) = mpsc::channel(1);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    // Writes go through a writer task, so a client that stops reading blocks only that task:
    // this loop keeps its clocks (the slow-consumer close) and its reads.
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(WRITES_IN_FLIGHT);
    let mut writer_done = false;
    let mut writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
    });
    let close: Option<(CloseCode, String)> = loop {
        if let Some(c) = session.poll_close() {
            break Some(c);
        }
        if let Some(ticket) = session.poll_join() {
            crate::quic::spawn_join(ctx, ticket, transport.clone(), peer.ip(), admitted_tx.clone());
            continue;
        }
        // The next whole frame to write (a chunk is always one whole frame here), and a refusal
        // closes once its frame is handed to the writer.
        let chunk = session.next_chunk().map(|c| c.clone());
        if chunk.is_none()
            && let Some(c) = session.poll_close_after_flush()
        {
            break Some(c);
        }
        let busy = chunk.is_some() || session.is_held();
        let deadline = session.poll_timeout();
        tokio::select! {
            permit = out.reserve(), if chunk.is_some() => match (permit, chunk) {
                (Ok(p), Some(bytes)) => {
                    let n = bytes.len();
                    p.send(Message::Binary(bytes));
                    session.wrote(n);
                }
                _ => session.write_failed(),
            },
            msg = stream.next(), if session.wants_stream_data() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    // One message, one frame: the length prefix must cover exactly the rest.
                    let whole = b.len() >= 4 && u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize == b.len() - 4;
                    if !whole {
                        session.close_now(CloseCode::FrameMalformed, "a WebSocket message must be exactly one frame");
                        continue;
                    }
                    session.handle_stream_data(&b);
                    session.process_frames(&ctx.session, Instant::now());
                }
                Some(Ok(Message::Text(_))) => {
                    session.close_now(CloseCode::FrameMalformed, "text messages are not frames; send binary");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => {
                    session.handle_stream_end();
                    session.process_frames(&ctx.session, Instant::now());
                    break None;
                }
                Some(Err(e)) => {
                    use tokio_tungstenite::tungstenite::Error;
                    match e {
                        Error::Capacity(c) => {
                            session.close_now(CloseCode::MessageTooLarge, &format!("message over the node's limit: {c}"));
                        }
                        _ => break None,
                    }
                }
            },
            Some(result) = admitted.recv() => {
                if result.is_ok() {
                    slot.joined();
                }
                session.handle_admitted(&ctx.session, result);
            }
            Some(d) = unreliable.recv() => {
                // No unreliable channel here: the room's datagram goes as a reliable frame, or is
                // dropped and counted when the writer is behind, as a congested datagram is.
                if let Ok((from, data)) = frame::decode_peer(&d) {
                    let f = Frame::Message { peer: from, data: data.to_vec() }.encode();
                    match out.try_send(Message::Binary(Bytes::from(f))) {
                        Ok(()) => {
                            ctx.metrics.player_unreliable_as_reliable_total.inc();
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            ctx.metrics.player_datagrams_dropped_total.inc();
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break None,
                    }
                }
            }
            _ = transport.signal.woken() => {
                if let Some((code, reason)) = transport.signal.asked_close() {
                    session.close_now(code, &reason);
                }
            }
            _ = housekeeping.tick(), if busy => session.housekeep(&ctx.session, Instant::now()),
            _ = crate::quic::until(deadline) => session.handle_timeout(&ctx.session, Instant::now()),
            _ = &mut writer, if !writer_done => {
                // The socket failed under the writer.
                writer_done = true;
                session.write_failed();
                break None;
            }
            _ = shutdown.notified() => {
                session.close_now(CloseCode::NodeShutdown, "the node is shutting down");
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code: coding::CloseCode::from(code.to_websocket()),
            reason: outpost_proto::codes::websocket_reason(&reason).into(),
        };
        // Behind the frames already handed over; a writer stuck on a client that does not read
        // gets a second, then the connection is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(1), out.send(Message::Close(Some(frame)))).await;
    }
    drop(out);
    if !writer_done && tokio::time::timeout(Duration::from_secs(1), &mut writer).await.is_err() {
        writer.abort();
    }
    crate::quic::end_session(ctx, &mut session).await;
}

/// A browser's probe session: each binary message a beacon probe, answered in place (the reply
/// is never larger than the probe) within the source's rate; anything else ends the session,
/// as does [`PROBE_SESSION`].
async fn probe_session<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    peer: SocketAddr,
    ctx: &PlayerCtx,
    limiter: &crate::beacon::ProbeLimiter,
) {
    let end = tokio::time::Instant::now() + PROBE_SESSION;
    let why = loop {
        let msg = match tokio::time::timeout_at(end, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => return,
            Err(_) => break "the probe session's time is up",
        };
        match msg {
            Message::Binary(b) => {
                let mut reply = b.to_vec();
                if !outpost_proto::beacon::make_reply(&mut reply) {
                    ctx.metrics.probe_malformed_total.inc();
                    break "not a beacon probe";
                }
                if !limiter.allow(peer.ip(), Instant::now()) {
                    ctx.metrics.probe_rate_limited_total.inc();
                    continue;
                }
                if ws.send(Message::Binary(Bytes::from(reply))).await.is_err() {
                    return;
                }
                ctx.metrics.probe_replies_total.inc();
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Text(_) => break "probes are binary",
            Message::Close(_) => return,
        }
    };
    let frame = CloseFrame { code: coding::CloseCode::Policy, reason: why.into() };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_need_an_allowed_origin_and_other_clients_need_none() {
        let allowed = vec!["https://game.example.com".to_string()];
        assert!(origin_allowed(&allowed, Some("https://game.example.com")));
        assert!(!origin_allowed(&allowed, Some("https://evil.example.net")));
        assert!(origin_allowed(&allowed, None), "not a browser");
        assert!(!origin_allowed(&[], Some("https://game.example.com")), "none by default");
        assert!(origin_allowed(&["*".into()], Some("https://any.example")));
    }
}
