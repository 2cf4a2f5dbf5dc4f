//! The WebTransport player endpoint (`--listen-webtransport`, default UDP 7704): browsers join
//! the same rooms as native QUIC players, through the same [`PlayerSession`], with the same ticket
//! check, placement, limits and codes.
//!
//! - Its own quinn endpoint and port: the native player port allows one bi stream and no uni
//!   streams, and HTTP/3 needs at least three uni streams (Chrome closes a connection that allows
//!   fewer). The HTTP/3 and WebTransport framing is the `web-transport-quinn` crate's; the node
//!   takes each incoming connection itself, so its connection caps (shared with the other player
//!   endpoints) and the join timeout as a handshake deadline apply before any session exists.
//! - A session at [`PATH`] is a player: reliable frames on the one bi stream the page opens (the
//!   same length-prefixed frames as QUIC), unreliable ones as WebTransport datagrams with the same
//!   `peer u64 | data` body. [`PROBE_PATH`] echoes beacon probes sent as datagrams, under the
//!   beacon's per-source rate, so a page can measure the node.
//! - Closes go in the WebTransport close capsule with the u32 code as it is, so the page reads
//!   `{closeCode, reason}` from `wt.closed`; a code is never carried only in a stream reset (a
//!   browser sees 8 bits of it).
//! - The certificate: the node's own short-lived P-256 ones ([`cert`]), whose hashes routes carry
//!   for `serverCertificateHashes`, or a CA-signed pair (`--webtransport-cert`).

pub mod cert;

use crate::quic::PlayerCtx;
use crate::quic::admission::{ConnSlot, Verdict};
use crate::room::player::PlayerTransport;
use crate::session::PlayerSession;
use bytes::Bytes;
use outpost_proto::CloseCode;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use web_transport_quinn::{RecvStream, SendStream, Session};

/// The session path of players.
pub const PATH: &str = "/v1/wt";
/// The session path of browsers' RTT probes.
pub const PROBE_PATH: &str = "/v1/probe";
/// How long one probe session may stay open.
const PROBE_SESSION: Duration = Duration::from_secs(10);
/// How often a session looks at its slow-consumer clock and a held message.
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// How long a refused player has to read its `Refused` frame before the close capsule.
const REFUSAL_READ: Duration = Duration::from_secs(1);
/// HTTP/3's H3_GENERAL_PROTOCOL_ERROR, for connections that never made a session.
const H3_GENERAL_PROTOCOL_ERROR: u32 = 0x101;
/// Uni streams a client may open: HTTP/3's control and two QPACK streams, and a spare.
const MAX_UNI_STREAMS: u32 = 4;
/// Bi streams a client may open: the CONNECT stream and the player's stream, and a spare.
const MAX_BI_STREAMS: u32 = 3;

/// Where the endpoint listens and whom it lets in.
#[derive(Debug, Clone)]
pub struct WtSettings {
    /// UDP address.
    pub listen: SocketAddr,
    /// Browser origins whose pages may open sessions (`*` for any); none lets no page in.
    pub origins: Vec<String>,
    /// The beacon's per-source limit, which probe sessions share.
    pub probe: crate::beacon::BeaconLimits,
    /// A CA-signed pair (`--webtransport-cert`): no hashes to publish then.
    pub ca_signed: Option<Arc<CertifiedKey>>,
}

/// The bound endpoint.
pub struct WtEndpoint {
    /// The bound address.
    pub addr: SocketAddr,
    /// The node's own certificates, unless it has a CA-signed pair.
    pub certs: Option<Arc<cert::BrowserCerts>>,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: Arc<Notify>,
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl WtEndpoint {
    /// Binds `settings.listen` and serves players of `ctx`, keeping the node's own certificates
    /// in `cert_dir`.
    pub fn start(settings: WtSettings, cert_dir: &Path, ctx: Arc<PlayerCtx>) -> anyhow::Result<WtEndpoint> {
        let (resolver, certs): (Arc<dyn ResolvesServerCert>, _) = match &settings.ca_signed {
            Some(key) => (Arc::new(Fixed(key.clone())), None),
            None => {
                let certs = cert::BrowserCerts::open(cert_dir)?;
                (certs.resolver(), Some(certs))
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        tls.alpn_protocols = vec![web_transport_quinn::ALPN.as_bytes().to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let limits = &ctx.session.limits;
        let mut transport = outpost_net::tls::transport(Duration::from_secs(30));
        let window = limits.receive_window();
        transport
            .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
            .max_concurrent_bidi_streams(MAX_BI_STREAMS.into())
            .stream_receive_window(window.into())
            .receive_window(window.into())
            .datagram_receive_buffer_size(Some(limits.datagram_in_bytes))
            .datagram_send_buffer_size(limits.datagram_out_bytes);
        server.transport_config(Arc::new(transport));
        let listen = settings.listen;
        // Sends leave in sendmmsg batches across connections, as on the native player port.
        let socket = outpost_net::udp::bind_udp(listen, outpost_net::udp::UDP_BUFFER_BYTES)
            .map_err(|e| anyhow::anyhow!("listen_webtransport: binding {listen}: {e}"))?;
        let endpoint = outpost_net::udp::batching::batching_endpoint(socket, server, Arc::default())
            .map_err(|e| anyhow::anyhow!("listen_webtransport: serving {listen}: {e}"))?;
        let addr = endpoint.local_addr()?;
        let shutdown = Arc::new(Notify::new());
        let limiter = Arc::new(crate::beacon::ProbeLimiter::new(settings.probe));
        let mut tasks =
            vec![tokio::spawn(accept_loop(endpoint.clone(), Arc::new(settings), ctx, limiter, shutdown.clone()))];
        if let Some(c) = certs.clone() {
            tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(cert::CHECK_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    if let Err(e) = c.refresh() {
                        tracing::error!(error = %e, "rotating the webtransport certificate failed");
                    }
                }
            }));
        }
        Ok(WtEndpoint { addr, certs, endpoint, tasks, shutdown })
    }

    /// The hashes a route lists for this node (none with a CA-signed pair).
    pub fn published(&self) -> Vec<String> {
        self.certs.as_ref().map(|c| c.published()).unwrap_or_default()
    }

    /// The player URL on `host` (an IP or name) and the bound port.
    pub fn url(&self, host: &str) -> String {
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
        format!("https://{host}:{}{PATH}", self.addr.port())
    }

    /// Closes every WebTransport player with `node-shutdown` and stops accepting.
    pub fn shutdown(&self) {
        self.shutdown.notify_waiters();
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Waits (at most `grace`) for the close capsules to reach the players.
    pub async fn wait_idle(&self, grace: Duration) {
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
    }
}

/// The probe URL that goes with a player URL (`.../v1/wt` → `.../v1/probe`).
pub fn probe_url(play_url: &str) -> String {
    match play_url.strip_suffix(PATH) {
        Some(base) => format!("{base}{PROBE_PATH}"),
        None => format!("{}{PROBE_PATH}", play_url.trim_end_matches('/')),
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    settings: Arc<WtSettings>,
    ctx: Arc<PlayerCtx>,
    limiter: Arc<crate::beacon::ProbeLimiter>,
    shutdown: Arc<Notify>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        match ctx.admission.admit(remote.ip(), incoming.remote_address_validated()) {
            Verdict::Accept(slot) => {
                let (ctx, settings, limiter, shutdown) =
                    (ctx.clone(), settings.clone(), limiter.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let mut slot = slot;
                    connection(incoming, &settings, &ctx, &limiter, &mut slot, &shutdown).await;
                });
            }
            Verdict::Retry if incoming.may_retry() => {
                ctx.metrics.player_connections_retried_total.inc();
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
            }
            Verdict::Retry => incoming.refuse(),
            Verdict::Refuse(why) => {
                ctx.metrics.player_connections_refused_total.inc();
                tracing::debug!(%remote, why, "webtransport connection refused");
                incoming.refuse();
            }
        }
    }
}

/// What a session is for, from its CONNECT request.
#[derive(Debug, PartialEq, Eq)]
enum Purpose {
    Play,
    Probe,
}

/// Decides on a CONNECT request: the path and the page's origin.
fn check_request(
    path: &str,
    origin: Option<&str>,
    origins: &[String],
) -> Result<Purpose, web_transport_quinn::http::StatusCode> {
    let purpose = match path {
        PATH => Purpose::Play,
        PROBE_PATH => Purpose::Probe,
        _ => return Err(web_transport_quinn::http::StatusCode::NOT_FOUND),
    };
    if !crate::websocket::origin_allowed(origins, origin) {
        return Err(web_transport_quinn::http::StatusCode::FORBIDDEN);
    }
    Ok(purpose)
}

async fn connection(
    incoming: quinn::Incoming,
    settings: &WtSettings,
    ctx: &Arc<PlayerCtx>,
    limiter: &crate::beacon::ProbeLimiter,
    slot: &mut ConnSlot,
    shutdown: &Notify,
) {
    let peer = incoming.remote_address();
    // The QUIC handshake, HTTP/3 settings and the CONNECT request share the join deadline.
    let handshake = async {
        let conn = incoming.await.map_err(|e| e.to_string())?;
        let raw = conn.clone();
        match web_transport_quinn::Request::accept(conn).await {
            Ok(r) => Ok(r),
            Err(e) => {
                raw.close(H3_GENERAL_PROTOCOL_ERROR.into(), b"not a WebTransport session");
                Err(e.to_string())
            }
        }
    };
    let request = match tokio::time::timeout(ctx.session.join_timeout, handshake).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            ctx.metrics.players_refused_total.inc();
            tracing::debug!(remote = %peer, error = %e, "webtransport handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.players_refused_total.inc();
            return;
        }
    };
    let origin = request.headers.get("origin").and_then(|v| v.to_str().ok()).map(str::to_string);
    let purpose = match check_request(request.url.path(), origin.as_deref(), &settings.origins) {
        Ok(p) => p,
        Err(status) => {
            ctx.metrics.players_refused_total.inc();
            tracing::debug!(remote = %peer, path = request.url.path(), ?origin, %status, "webtransport session refused");
            let conn = request.conn().clone();
            // The refusal's status goes on the CONNECT stream. `respond` keeps the HTTP/3 control
            // streams open (a closed control stream would end the connection before the client
            // read the status); the client closes once it has read it, else it is closed here
            // after a second.
            let answer = tokio::time::timeout(Duration::from_secs(1), request.respond(status)).await;
            if let Ok(Ok(_session)) = answer {
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
            }
            conn.close(H3_GENERAL_PROTOCOL_ERROR.into(), b"session refused");
            return;
        }
    };
    let wt = match request.ok().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(remote = %peer, error = %e, "webtransport session failed");
            return;
        }
    };
    match purpose {
        Purpose::Probe => probe_session(wt, peer, ctx, limiter).await,
        Purpose::Play => player(wt, peer, ctx, slot, shutdown).await,
    }
}

/// What the room side of one WebTransport player does: wake the session for frames, send
/// datagrams (dropped and counted past the player's queue), ask for a close.
struct WtTransport {
    signal: crate::quic::TaskSignal,
    session: Session,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl PlayerTransport for WtTransport {
    fn frames_waiting(&self) {
        self.signal.frames_waiting();
    }
    fn datagram(&self, d: Bytes) {
        // quinn drops the oldest queued datagrams past the player's send buffer
        // (`--player-datagram-out-bytes`), as a congested native player's are dropped.
        if self.session.send_datagram(d).is_err() {
            self.metrics.player_datagrams_dropped_total.inc();
        }
    }
    fn close(&self, code: CloseCode, reason: String) {
        self.signal.ask_close(code, reason);
    }
}

async fn write_some(send: Option<&mut SendStream>, chunk: Option<&Bytes>) -> Result<usize, ()> {
    match (send, chunk) {
        (Some(s), Some(c)) => s.write(c).await.map_err(|_| ()),
        _ => std::future::pending().await,
    }
}

async fn read_some(recv: Option<&mut RecvStream>, buf: &mut [u8]) -> Result<Option<usize>, ()> {
    match recv {
        Some(r) => r.read(buf).await.map_err(|_| ()),
        None => std::future::pending().await,
    }
}

async fn player(wt: Session, peer: SocketAddr, ctx: &Arc<PlayerCtx>, slot: &mut ConnSlot, shutdown: &Notify) {
    let transport = Arc::new(WtTransport {
        signal: crate::quic::TaskSignal::default(),
        session: wt.clone(),
        metrics: ctx.metrics.clone(),
    });
    let mut session = PlayerSession::new(&ctx.session, peer, Instant::now());
    let (admitted_tx, mut admitted) = mpsc::channel(1);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let mut stream: Option<(SendStream, RecvStream)> = None;
    // Made once, not on every pass: a player's datagrams are most of its wake-ups.
    let mut datagram = std::pin::pin!(wt.read_datagram());
    let mut ended = std::pin::pin!(wt.closed());
    let mut stopping = std::pin::pin!(shutdown.notified());
    let mut buf = vec![0u8; 4096];
    let close: Option<(CloseCode, String)> = loop {
        if let Some(c) = session.poll_close() {
            break Some(c);
        }
        if let Some(ticket) = session.poll_join() {
            crate::quic::spawn_join(ctx, ticket, transport.clone(), admitted_tx.clone());
            continue;
        }
        // What the session has to write: the preamble, then the player's backlog. A chunk may be
        // written in part; the session hands out the rest next time. A refusal closes once its
        // frame is written.
        let chunk = if stream.is_some() { session.next_chunk().map(|c| c.clone()) } else { None };
        if chunk.is_none()
            && let Some(c) = session.poll_close_after_flush()
        {
            // The close capsule ends the session at once on the client, dropping stream data it
            // has not read yet: finish the stream and wait (briefly) until the client has it.
            if let Some((send, _)) = &mut stream
                && send.finish().is_ok()
            {
                let _ = tokio::time::timeout(REFUSAL_READ, send.stopped()).await;
            }
            break Some(c);
        }
        let deadline = session.poll_timeout();
        let wants_data = session.wants_stream_data();
        let wants_datagrams = session.wants_datagrams();
        // The slow-consumer clock and a held message only matter while something waits; an idle
        // or datagram-only player needs no timer.
        let busy = chunk.is_some() || session.is_held();
        let (send, recv) = match &mut stream {
            Some((s, r)) => (Some(s), Some(r)),
            None => (None, None),
        };
        tokio::select! {
            bi = wt.accept_bi(), if send.is_none() => match bi {
                Ok(s) => stream = Some(s),
                Err(_) => break None,
            },
            n = write_some(send, chunk.as_ref()) => match n {
                Ok(n) => session.wrote(n),
                Err(()) => session.write_failed(),
            },
            r = read_some(recv, &mut buf), if wants_data => match r {
                Ok(Some(n)) => {
                    session.handle_stream_data(&buf[..n]);
                    session.process_frames(&ctx.session, Instant::now());
                }
                Ok(None) => {
                    session.handle_stream_end();
                    session.process_frames(&ctx.session, Instant::now());
                }
                Err(()) => break None,
            },
            d = &mut datagram, if wants_datagrams => match d {
                Ok(d) => {
                    datagram.set(wt.read_datagram());
                    session.handle_datagram(&ctx.session, Instant::now(), &d);
                }
                Err(_) => break None,
            },
            Some(result) = admitted.recv() => {
                if result.is_ok() {
                    slot.joined();
                }
                session.handle_admitted(&ctx.session, result);
            }
            _ = transport.signal.woken() => {
                if let Some((code, reason)) = transport.signal.asked_close() {
                    session.close_now(code, &reason);
                }
            }
            _ = housekeeping.tick(), if busy => session.housekeep(&ctx.session, Instant::now()),
            _ = crate::quic::until(deadline) => session.handle_timeout(&ctx.session, Instant::now()),
            _ = &mut ended => break None,
            _ = &mut stopping => {
                session.close_now(CloseCode::NodeShutdown, "the node is shutting down");
            }
        }
    };
    if let Some((code, reason)) = close {
        let reason: String = reason.chars().take(200).collect();
        wt.close(code.to_u32(), reason.as_bytes());
    }
    crate::quic::end_session(ctx, &mut session).await;
}

/// A browser's probe session: each datagram a beacon probe, answered in place (the reply is never
/// larger than the probe) within the source's rate; anything else ends the session, as does
/// [`PROBE_SESSION`].
async fn probe_session(wt: Session, peer: SocketAddr, ctx: &PlayerCtx, limiter: &crate::beacon::ProbeLimiter) {
    let end = tokio::time::Instant::now() + PROBE_SESSION;
    let why = loop {
        let d = match tokio::time::timeout_at(end, wt.read_datagram()).await {
            Ok(Ok(d)) => d,
            Ok(Err(_)) => return,
            Err(_) => break (0, "the probe session's time is up"),
        };
        let mut reply = d.to_vec();
        if !outpost_proto::beacon::make_reply(&mut reply) {
            ctx.metrics.probe_malformed_total.inc();
            break (CloseCode::FrameMalformed.to_u32(), "not a beacon probe");
        }
        if !limiter.allow(peer.ip(), Instant::now()) {
            ctx.metrics.probe_rate_limited_total.inc();
            continue;
        }
        if wt.send_datagram(Bytes::from(reply)).is_ok() {
            ctx.metrics.probe_replies_total.inc();
        }
    };
    wt.close(why.0, why.1.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_need_a_known_path_and_an_allowed_origin() {
        let origins = vec!["http://127.0.0.1:8080".to_string()];
        assert_eq!(check_request(PATH, Some("http://127.0.0.1:8080"), &origins), Ok(Purpose::Play));
        assert_eq!(check_request(PROBE_PATH, None, &origins), Ok(Purpose::Probe));
        assert_eq!(check_request("/v1/ws", None, &origins), Err(web_transport_quinn::http::StatusCode::NOT_FOUND));
        assert_eq!(
            check_request(PATH, Some("https://evil.example"), &origins),
            Err(web_transport_quinn::http::StatusCode::FORBIDDEN)
        );
        assert_eq!(
            check_request(PATH, Some("http://127.0.0.1:8080"), &[]),
            Err(web_transport_quinn::http::StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn probe_urls_go_with_player_urls() {
        assert_eq!(probe_url("https://127.0.0.1:7704/v1/wt"), "https://127.0.0.1:7704/v1/probe");
    }
}
