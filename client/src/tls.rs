//! QUIC/TLS set-up shared by every Outpost endpoint: self-signed node certificates, server configs,
//! and a client verifier that pins a certificate's SHA-256 (as WebTransport's
//! `serverCertificateHashes` does) while still checking the TLS 1.3 handshake signature.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The player ALPN.
pub const ALPN_PLAYER: &[u8] = b"outpost/1";

/// Why TLS set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation or parsing.
    #[error("certificate: {0}")]
    Cert(String),
    /// rustls refused the configuration.
    #[error("tls config: {0}")]
    Config(#[from] rustls::Error),
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A pin that is not 64 hex digits.
    #[error("certificate hash must be 64 lowercase hex digits, got {0:?}")]
    BadPin(String),
}

/// A certificate and its key, DER.
pub struct NodeCert {
    /// Leaf certificate.
    pub cert: CertificateDer<'static>,
    /// PKCS#8 private key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl NodeCert {
    /// Lowercase hex SHA-256 of the certificate DER: what clients pin.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.cert.as_ref()))
    }

    /// Loads `cert.der`/`key.der` from `dir`, or generates a self-signed pair and keeps it there
    /// (key mode 0600), so the pin survives restarts.
    pub fn load_or_generate(dir: &Path, name: &str) -> Result<NodeCert, TlsError> {
        let cert_path = dir.join(format!("{name}.cert.der"));
        let key_path = dir.join(format!("{name}.key.der"));
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        if cert_path.exists() && key_path.exists() {
            let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
            let key = std::fs::read(&key_path).map_err(io(&key_path))?;
            return Ok(NodeCert { cert: CertificateDer::from(cert), key: PrivatePkcs8KeyDer::from(key) });
        }
        let generated =
            rcgen::generate_simple_self_signed(vec!["outpost.invalid".to_string(), "localhost".to_string()])
                .map_err(|e| TlsError::Cert(e.to_string()))?;
        let cert = generated.cert.der().to_vec();
        let key = generated.signing_key.serialize_der();
        std::fs::write(&cert_path, &cert).map_err(io(&cert_path))?;
        outpost_proto::files::write_secret(&key_path, &key).map_err(io(&key_path))?;
        Ok(NodeCert { cert: CertificateDer::from(cert), key: PrivatePkcs8KeyDer::from(key) })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport settings shared by both ends: keep-alive below the idle timeout, and datagrams on.
pub fn transport(idle: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    t.keep_alive_interval(Some(idle / 3));
    t.datagram_receive_buffer_size(Some(1 << 20));
    t.datagram_send_buffer_size(1 << 20);
    // Bytes in flight per connection. quinn's default (10 MB) would hide a stalled reader from the
    // node's own backlog accounting; 1 MiB still allows ~80 Mbit/s at 100 ms RTT per player.
    t.send_window(1 << 20);
    // Game traffic is a steady stream of small datagrams both ways: ask the peer to acknowledge
    // every 8th ack-eliciting packet (or after 25 ms) instead of every 2nd, which cuts ACK-only
    // packets, the biggest per-datagram cost after crypto. Loss detection still runs on the
    // packets themselves; the reordering threshold is left at its default.
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(8)).max_ack_delay(Some(Duration::from_millis(80)));
    t.ack_frequency_config(Some(ack));
    t
}

/// A QUIC server config for `cert` with `alpn`, TLS 1.3 only.
pub fn server_config(
    cert: &NodeCert,
    alpn: &[u8],
    transport: quinn::TransportConfig,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.clone()], PrivateKeyDer::Pkcs8(cert.key.clone_key()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Cert(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// A QUIC client config that accepts only the certificate whose SHA-256 is `pin`.
pub fn pinned_client_config(
    pin: &str,
    alpn: &[u8],
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, TlsError> {
    let pin_bytes: [u8; 32] = hex::decode(pin.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| TlsError::BadPin(pin.to_string()))?;
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert { pin: pin_bytes, provider }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Cert(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Accepts exactly one leaf certificate, by hash; the handshake signature is still verified.
#[derive(Debug)]
struct PinnedCert {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate sha256 {} does not match the pinned {}",
                hex::encode(got),
                hex::encode(self.pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
