//! The WebTransport player endpoint (`--listen-webtransport`, default UDP 7704): browsers join
//! the same rooms as native QUIC players, through the same [`crate::session::PlayerSession`],
//! with the same ticket check, placement, limits and codes.
//!
//! - Its own port and QUIC settings: the native player port allows one bi stream and no uni
//!   streams, and HTTP/3 needs at least three uni streams (Chrome closes a connection that allows
//!   fewer). The same transport loop drives it as the native port ([`crate::quic::driver`]: one
//!   thread, batched socket calls, the node's connection caps before any handshake, the join
//!   timeout from the first packet to the `Join`); [`h3`] is the HTTP/3 and WebTransport layer
//!   around each connection, with the framing of the `web-transport-proto` crate.
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
pub mod h3;

use crate::quic::PlayerCtx;
use crate::quic::driver::{Flavor, PlayerEndpoint};
pub use h3::{PATH, PROBE_PATH};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// ALPN of HTTP/3.
pub(crate) const ALPN_H3: &[u8] = b"h3";
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
    /// Most packets in one `sendmmsg`, as on the native port.
    pub send_batch: usize,
}

/// The bound endpoint.
pub struct WtEndpoint {
    /// The bound address.
    pub addr: SocketAddr,
    /// The node's own certificates, unless it has a CA-signed pair.
    pub certs: Option<Arc<cert::BrowserCerts>>,
    transport: PlayerEndpoint,
    rotation: Option<tokio::task::JoinHandle<()>>,
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
        tls.alpn_protocols = vec![ALPN_H3.to_vec()];
        tls.max_early_data_size = 0;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(transport(&ctx.session.limits)));
        let listen = settings.listen;
        let socket = outpost_net::udp::bind_udp(listen, outpost_net::udp::UDP_BUFFER_BYTES)
            .map_err(|e| anyhow::anyhow!("listen_webtransport: binding {listen}: {e}"))?;
        let shared = Arc::new(h3::WtShared {
            origins: settings.origins.clone(),
            limiter: crate::beacon::ProbeLimiter::new(settings.probe),
        });
        let transport = PlayerEndpoint::start(socket, server, ctx, settings.send_batch, Flavor::WebTransport(shared))
            .map_err(|e| anyhow::anyhow!("listen_webtransport: serving {listen}: {e}"))?;
        let rotation = certs.clone().map(|c| {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(cert::CHECK_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    if let Err(e) = c.refresh() {
                        tracing::error!(error = %e, "rotating the webtransport certificate failed");
                    }
                }
            })
        });
        Ok(WtEndpoint { addr: transport.addr, certs, transport, rotation })
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

    /// Closes every WebTransport player with `node-shutdown` (by the close capsule) and waits
    /// up to `grace` for the closes to reach them; new connections are refused from now on.
    pub async fn shutdown(self, grace: Duration) {
        if let Some(r) = &self.rotation {
            r.abort();
        }
        self.transport.shutdown(grace).await;
    }
}

/// The QUIC transport of browser connections: HTTP/3's streams, windows and datagram buffers
/// from the player limits.
pub(crate) fn transport(limits: &crate::room::player::PlayerLimits) -> quinn::TransportConfig {
    let mut transport = outpost_net::tls::transport(Duration::from_secs(30));
    let window = limits.receive_window();
    transport
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .max_concurrent_bidi_streams(MAX_BI_STREAMS.into())
        .stream_receive_window(window.into())
        .receive_window(window.into())
        .datagram_receive_buffer_size(Some(limits.datagram_in_bytes))
        .datagram_send_buffer_size(limits.datagram_out_bytes);
    transport
}

/// The probe URL that goes with a player URL (`.../v1/wt` → `.../v1/probe`).
pub fn probe_url(play_url: &str) -> String {
    match play_url.strip_suffix(PATH) {
        Some(base) => format!("{base}{PROBE_PATH}"),
        None => format!("{}{PROBE_PATH}", play_url.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_urls_go_with_player_urls() {
        assert_eq!(probe_url("https://127.0.0.1:7704/v1/wt"), "https://127.0.0.1:7704/v1/probe");
    }
}
