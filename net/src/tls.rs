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
    /// rustls refused the configuration. Not a `source`: the message already carries it, and
    /// `{:#}` would print it twice.
    #[error("tls config: {0}")]
    Config(rustls::Error),
    /// The certificate and key kept in the data dir do not load as a pair.
    #[error(
        "{cert} and {key} are not a usable certificate and key ({reason}); restore both from a \
         backup, or move both aside to make a new identity (clients then need the new pin)"
    )]
    Stored {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls found wrong.
        reason: String,
    },
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
            let cert = CertificateDer::from(std::fs::read(&cert_path).map_err(io(&cert_path))?);
            let key = PrivatePkcs8KeyDer::from(std::fs::read(&key_path).map_err(io(&key_path))?);
            // Checked here, where the files can be named: a damaged or mismatched pair would
            // otherwise fail later as a bare rustls error, or serve a certificate nobody can use.
            rustls::sign::CertifiedKey::from_der(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(key.clone_key()),
                &provider(),
            )
            .map_err(|e| TlsError::Stored {
                cert: cert_path.display().to_string(),
                key: key_path.display().to_string(),
                reason: e.to_string(),
            })?;
            return Ok(NodeCert { cert, key });
        }
        let generated =
            rcgen::generate_simple_self_signed(vec!["outpost.invalid".to_string(), "localhost".to_string()])
                .map_err(|e| TlsError::Cert(e.to_string()))?;
        let cert = generated.cert.der().to_vec();
        let key = generated.signing_key.serialize_der();
        std::fs::write(&cert_path, &cert).map_err(io(&cert_path))?;
        crate::files::write_secret(&key_path, &key).map_err(io(&key_path))?;
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

/// The player protocol's transport: [`transport`] with room for exactly the streams the protocol
/// uses. A client opens one bi stream (its join, then reliable frames both ways); the node opens
/// none. quinn sets up state for every stream a peer may open (about 8 KiB per connection at its
/// default of 100 each way), and a stream that nobody reads would still take data up to its
/// window. A peer that opens more is closed by quinn with
/// `STREAM_LIMIT_ERROR`.
pub fn player_transport(idle: Duration, peer_bidi_streams: u32) -> quinn::TransportConfig {
    let mut t = transport(idle);
    t.max_concurrent_bidi_streams(peer_bidi_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Config(e)
    }
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

/// Where an HTTPS client's trust comes from.
#[derive(Debug, Clone, Default)]
pub enum HttpsTrust {
    /// The public web's roots (Mozilla's list, built in): for servers with certificates from a
    /// public CA.
    #[default]
    PublicRoots,
    /// The CAs in a PEM file: a fleet's private CA.
    CaFile(std::path::PathBuf),
    /// Any certificate whose SHA-256 is one of these (self-signed servers).
    Pins(Vec<String>),
}

/// A certificate pin from its text (64 hex digits, spaces around allowed).
pub fn parse_pin(pin: &str) -> Result<[u8; 32], TlsError> {
    hex::decode(pin.trim()).ok().and_then(|v| v.try_into().ok()).ok_or_else(|| TlsError::BadPin(pin.to_string()))
}

/// A rustls client config for HTTPS (TLS 1.3, ALPN `http/1.1`) with the given trust.
pub fn https_client_config(trust: &HttpsTrust) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let roots = |certs: Vec<CertificateDer<'static>>| -> Result<rustls::RootCertStore, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        for c in certs {
            store.add(c).map_err(|e| TlsError::Cert(format!("CA certificate: {e}")))?;
        }
        Ok(store)
    };
    let mut tls = match trust {
        HttpsTrust::PublicRoots => builder
            .with_root_certificates(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
            .with_no_client_auth(),
        HttpsTrust::CaFile(path) => {
            let certs = read_pem_certs(path)?;
            builder.with_root_certificates(roots(certs)?).with_no_client_auth()
        }
        HttpsTrust::Pins(pins) => {
            let pins = pins.iter().map(|p| parse_pin(p)).collect::<Result<Vec<_>, _>>()?;
            if pins.is_empty() {
                return Err(TlsError::BadPin(String::new()));
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCert { pins, provider }))
                .with_no_client_auth()
        }
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Cert(format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(format!("{}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

/// A rustls server config for an HTTPS API from PEM files (the chain, then the key), TLS 1.3,
/// ALPN `http/1.1`.
pub fn https_server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key) = read_pem_pair(cert_pem, key_pem)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

fn read_pem_pair(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    let chain = read_pem_certs(cert_pem)?;
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| TlsError::Cert(format!("{}: no usable private key: {e}", key_pem.display())))?;
    Ok((chain, key))
}

/// A PEM certificate chain and its key as one signing identity, for servers that pick their
/// certificate per handshake (a resolver) rather than through `with_single_cert`.
pub fn load_cert_pair(cert_pem: &Path, key_pem: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let (chain, key) = read_pem_pair(cert_pem, key_pem)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Cert(format!("{}: {e}", key_pem.display())))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Cert(format!("{} does not go with {}: {e}", key_pem.display(), cert_pem.display())))?;
    Ok(Arc::new(certified))
}

/// The lowercase hex SHA-256 of a DER certificate: what clients pin.
pub fn der_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The SHA-256 of the first certificate in a PEM file: what clients pin.
pub fn pem_cert_sha256(cert_pem: &Path) -> Result<String, TlsError> {
    let certs = read_pem_certs(cert_pem)?;
    Ok(hex::encode(Sha256::digest(certs[0].as_ref())))
}

/// A QUIC client config that accepts only the certificate whose SHA-256 is `pin`.
pub fn pinned_client_config(
    pin: &str,
    alpn: &[u8],
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, TlsError> {
    pinned_client_config_any(&[pin], alpn, transport)
}

/// A QUIC client config that accepts any of the certificates whose SHA-256 are `pins` (a
/// WebTransport route lists the served certificate and the next one).
pub fn pinned_client_config_any(
    pins: &[&str],
    alpn: &[u8],
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, TlsError> {
    let pins = pins.iter().map(|p| parse_pin(p)).collect::<Result<Vec<_>, _>>()?;
    if pins.is_empty() {
        return Err(TlsError::Cert("no certificate hash to pin".into()));
    }
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert { pins, provider }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Cert(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Accepts only the leaf certificates with these hashes; the handshake signature is still verified.
#[derive(Debug)]
struct PinnedCert {
    pins: Vec<[u8; 32]>,
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
        if self.pins.contains(&got) {
            Ok(ServerCertVerified::assertion())
        } else {
            let pinned: Vec<String> = self.pins.iter().map(hex::encode).collect();
            Err(rustls::Error::General(format!(
                "server certificate sha256 {} does not match the pinned {}",
                hex::encode(got),
                pinned.join(", ")
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

/// A fleet's own certificate authority, kept as `ca.pem` and `ca.key` (mode 0600) in a folder: the
/// simplest way to give a router and its nodes HTTPS that the CLI and the edges can check with
/// one `--ca` file, without a public CA.
pub struct PrivateCa {
    dir: std::path::PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl PrivateCa {
    /// Loads the CA in `dir`, or creates one there (valid for ten years).
    pub fn open_or_create(dir: &Path) -> Result<PrivateCa, TlsError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        let cert_err = |e: rcgen::Error| TlsError::Cert(e.to_string());
        // The issuer is rebuilt from the key and these fixed parameters (a leaf names its CA by
        // subject and key identifier, both of which they determine), so only the key is read back.
        let params = || -> Result<rcgen::CertificateParams, TlsError> {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(rcgen::DnType::CommonName, "Outpost fleet CA");
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            Ok(params)
        };
        if !cert_path.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let key = rcgen::KeyPair::generate().map_err(cert_err)?;
            let cert = params()?.self_signed(&key).map_err(cert_err)?;
            crate::files::write_secret(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
            crate::files::write_atomic(&cert_path, cert.pem().as_bytes()).map_err(io(&cert_path))?;
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = rcgen::KeyPair::from_pem(&key_pem).map_err(cert_err)?;
        Ok(PrivateCa { dir: dir.to_path_buf(), issuer: rcgen::Issuer::new(params()?, key) })
    }

    /// The CA certificate file, for `--ca` / `--router-ca`.
    pub fn cert_path(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses) into
    /// `out/{name}.pem` and `out/{name}.key`; returns both paths.
    pub fn issue(
        &self,
        out: &Path,
        name: &str,
        names: &[String],
    ) -> Result<(std::path::PathBuf, std::path::PathBuf), TlsError> {
        let cert_err = |e: rcgen::Error| TlsError::Cert(e.to_string());
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        if names.is_empty() {
            return Err(TlsError::Cert("a certificate needs at least one name".into()));
        }
        let key = rcgen::KeyPair::generate().map_err(cert_err)?;
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(cert_err)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0].clone());
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        std::fs::create_dir_all(out).map_err(io(out))?;
        let (cert_path, key_path) = (out.join(format!("{name}.pem")), out.join(format!("{name}.key")));
        crate::files::write_secret(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
        crate::files::write_atomic(&cert_path, cert.pem().as_bytes()).map_err(io(&cert_path))?;
        Ok((cert_path, key_path))
    }
}

/// A byte stream an HTTP/1.1 client can run over: plain TCP or TLS.
pub trait HttpIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> HttpIo for T {}

/// Connects to `host:port` (`[v6]:port` for IPv6), over TLS when `tls` is given, checking the
/// certificate against the host name (or the pin the config carries).
pub async fn connect_http(
    host_port: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> std::io::Result<Box<dyn HttpIo>> {
    let stream = tokio::net::TcpStream::connect(host_port).await?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else { return Ok(Box::new(stream)) };
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, stream).await?;
    Ok(Box::new(tls))
}

#[cfg(test)]
mod https_tests {
    use super::*;

    /// A private CA and a leaf for 127.0.0.1 signed by it, as PEM files in `dir`.
    fn ca_and_leaf(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let ca = PrivateCa::open_or_create(&dir.join("ca")).unwrap();
        let (cert, key) = ca.issue(dir, "leaf", &["127.0.0.1".into(), "localhost".into()]).unwrap();
        (ca.cert_path(), cert, key)
    }

    async fn get(addr: std::net::SocketAddr, trust: &HttpsTrust) -> Result<u16, String> {
        use http_body_util::Empty;
        let cfg = https_client_config(trust).map_err(|e| e.to_string())?;
        let io = connect_http(&addr.to_string(), Some(&cfg)).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/").body(Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
        Ok(sender.send_request(req).await.map_err(|e| e.to_string())?.status().as_u16())
    }

    async fn https_server(cert: &Path, key: &Path) -> std::net::SocketAddr {
        let server = https_server_config(cert, key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::http::serve(
            listener,
            crate::http::Timeouts { header: Duration::from_secs(5), body: Duration::from_secs(5) },
            Some(server),
            |_req| async { crate::http::json(hyper::StatusCode::OK, &"ok") },
            std::future::pending(),
        ));
        addr
    }

    #[tokio::test]
    async fn https_trusts_the_ca_or_the_pin_and_refuses_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = ca_and_leaf(dir.path());
        let addr = https_server(&cert, &key).await;
        // A CA opened again from its folder issues certificates the same ca.pem vouches for.
        let again = PrivateCa::open_or_create(&dir.path().join("ca")).unwrap();
        let (cert2, key2) = again.issue(dir.path(), "leaf2", &["127.0.0.1".into()]).unwrap();
        assert_eq!(get(https_server(&cert2, &key2).await, &HttpsTrust::CaFile(ca.clone())).await, Ok(200));
        let pin = pem_cert_sha256(&cert).unwrap();
        assert_eq!(get(addr, &HttpsTrust::CaFile(ca.clone())).await, Ok(200));
        assert_eq!(get(addr, &HttpsTrust::Pins(vec!["00".repeat(32), pin.clone()])).await, Ok(200));
        let wrong = get(addr, &HttpsTrust::Pins(vec!["ab".repeat(32)])).await.unwrap_err();
        assert!(wrong.contains("does not match the pinned"), "{wrong}");
        let public = get(addr, &HttpsTrust::PublicRoots).await.unwrap_err();
        assert!(public.contains("UnknownIssuer") || public.contains("issuer"), "{public}");
        // The leaf is not a CA: trusting it as one fails too.
        assert!(get(addr, &HttpsTrust::CaFile(cert.clone())).await.is_err());
        assert!(matches!(https_client_config(&HttpsTrust::Pins(vec!["xyz".into()])), Err(TlsError::BadPin(_))));
        let missing = https_server_config(&dir.path().join("nope.pem"), &key).err().unwrap().to_string();
        assert!(missing.contains("nope.pem"), "{missing}");
        let no_key = https_server_config(&cert, &cert).err().unwrap().to_string();
        assert!(no_key.contains("private key"), "{no_key}");
    }
}
