//! Certificates a browser accepts without a CA, for the WebTransport endpoint.
//!
//! A page pins the node's certificate with `serverCertificateHashes`, which Chrome honours only
//! for an ECDSA certificate whose whole validity is at most 14 days. So the node makes P-256
//! certificates valid for [`VALIDITY`] (13 days, an hour of it backdated against clock skew) and
//! rotates them, keeping each in the data dir (`webtransport/<created>.cert.der` and `.key.der`)
//! so a restart serves the same one.
//!
//! A server presents one certificate per handshake and an IP-address URL carries no name to
//! choose by, so a route must list every certificate the node may present while the route is in
//! use. Hence the rotation: the next certificate is made [`PUBLISH_AHEAD`] (a day) before the
//! node serves it, and its hash is published (heartbeats, routes) from the moment it exists. The
//! plan is a pure function of the clock and the certificates' creation times ([`plan`]), tested
//! over simulated weeks below.
//!
//! The native player certificate (`node.cert.der`, pinned by native clients) is separate and
//! never rotates.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A certificate's whole validity, backdating included (Chrome's limit is 14 days).
pub const VALIDITY: Duration = Duration::from_secs(13 * 86_400);
/// How far before its creation a certificate is valid, for clients whose clocks run behind.
pub const BACKDATE: Duration = Duration::from_secs(3_600);
/// How long a certificate's hash is published before the node serves it.
pub const PUBLISH_AHEAD: Duration = Duration::from_secs(86_400);
/// The age at which the node starts serving the next certificate.
pub const ROTATE_AT: Duration = Duration::from_secs(6 * 86_400);
/// How often the node looks at its certificates.
pub const CHECK_EVERY: Duration = Duration::from_secs(600);

/// What to do with the certificates created at `created` (unix seconds) at time `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Make a new certificate now (it is published at once and served from a day later).
    pub create: bool,
    /// Certificates to delete: expiring within a day, or older than the one served.
    pub retire: Vec<u64>,
    /// The certificate to serve (among those kept, after `create`).
    pub serve: Option<u64>,
}

fn not_after(created: u64) -> u64 {
    // Saturating: a creation time comes from a file name in the data dir, which may be anything.
    created.saturating_sub(BACKDATE.as_secs()).saturating_add(VALIDITY.as_secs())
}

/// The rotation: keep certificates with more than a day of validity left (and none from the
/// future); make the next one when
/// the newest has been around for [`ROTATE_AT`] less a day (or when none is left); serve the
/// newest one published for at least a day, or, on a node with none such (first start, or back
/// after a long time down, when no route handed out can name any of its certificates anyway), the
/// oldest one it has. Older certificates than the served one are no longer presented, so they go.
pub fn plan(now: u64, created: &[u64]) -> Plan {
    // A certificate "made" more than an hour ahead of the clock (a clock stepped back, or an odd
    // file name) is not trusted to be valid now: it goes, like an expiring one.
    let usable = |c: u64| not_after(c) > now + PUBLISH_AHEAD.as_secs() && c <= now + BACKDATE.as_secs();
    let mut live: Vec<u64> = created.iter().copied().filter(|&c| usable(c)).collect();
    live.sort_unstable();
    live.dedup();
    let create = match live.last() {
        None => true,
        Some(&newest) => now.saturating_sub(newest) + PUBLISH_AHEAD.as_secs() >= ROTATE_AT.as_secs(),
    };
    let mut after = live.clone();
    if create {
        after.push(now);
    }
    let published_long_enough = |c: &u64| now.saturating_sub(*c) >= PUBLISH_AHEAD.as_secs();
    let serve = after.iter().rev().copied().find(published_long_enough).or_else(|| after.first().copied());
    let retire = created.iter().copied().filter(|c| !live.contains(c) || serve.is_some_and(|s| *c < s)).collect();
    Plan { create, retire, serve }
}

/// One certificate and its key, with its hash.
struct Held {
    created: u64,
    sha256: String,
    key: Arc<CertifiedKey>,
}

/// The node's browser certificates: what it serves and what it publishes.
pub struct BrowserCerts {
    dir: PathBuf,
    held: RwLock<(Vec<Held>, usize)>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for BrowserCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserCerts").field("dir", &self.dir).finish()
    }
}

/// Errors making, reading or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The certificate could not be made or loaded.
    #[error("webtransport certificate: {0}")]
    Cert(String),
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl BrowserCerts {
    /// Loads the certificates in `dir` (created if missing) and brings them up to date.
    pub fn open(dir: &Path) -> Result<Arc<BrowserCerts>, CertError> {
        Self::open_at(dir, SystemTime::now())
    }

    fn open_at(dir: &Path, now: SystemTime) -> Result<Arc<BrowserCerts>, CertError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let certs = BrowserCerts {
            dir: dir.to_path_buf(),
            held: RwLock::new((Vec::new(), 0)),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        certs.refresh_at(now)?;
        Ok(Arc::new(certs))
    }

    /// Applies the rotation plan now.
    pub fn refresh(&self) -> Result<(), CertError> {
        self.refresh_at(SystemTime::now())
    }

    fn refresh_at(&self, now: SystemTime) -> Result<(), CertError> {
        let now = unix(now);
        let on_disk = self.on_disk()?;
        let p = plan(now, &on_disk);
        for c in &p.retire {
            for path in [self.cert_path(*c), self.key_path(*c)] {
                let _ = std::fs::remove_file(path);
            }
        }
        if p.create && !on_disk.contains(&now) {
            self.create(now)?;
        }
        let keep: Vec<u64> =
            on_disk.iter().copied().chain(p.create.then_some(now)).filter(|c| !p.retire.contains(c)).collect();
        let mut held = Vec::new();
        for c in keep {
            held.push(self.load(c)?);
        }
        held.sort_by_key(|h| h.created);
        held.dedup_by_key(|h| h.created);
        let serving = held.iter().position(|h| Some(h.created) == p.serve).unwrap_or(0);
        *self.held.write().unwrap_or_else(|e| e.into_inner()) = (held, serving);
        Ok(())
    }

    /// The hashes a route must list: the served certificate's and the next one's (lowercase hex
    /// SHA-256 of the DER).
    pub fn published(&self) -> Vec<String> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        held.0.iter().skip(held.1).map(|h| h.sha256.clone()).collect()
    }

    /// The hash of the certificate served now.
    pub fn serving(&self) -> Option<String> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        held.0.get(held.1).map(|h| h.sha256.clone())
    }

    /// The served certificate's DER, for tests and tools that check what the node presents.
    pub fn serving_der(&self) -> Option<Vec<u8>> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        held.0.get(held.1).and_then(|h| h.key.cert.first().map(|c| c.to_vec()))
    }

    fn on_disk(&self) -> Result<Vec<u64>, CertError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let name = entry.map_err(io(&self.dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(c) = name.strip_suffix(".cert.der").and_then(|s| s.parse::<u64>().ok())
                && self.key_path(c).exists()
            {
                out.push(c);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn cert_path(&self, created: u64) -> PathBuf {
        self.dir.join(format!("{created}.cert.der"))
    }

    fn key_path(&self, created: u64) -> PathBuf {
        self.dir.join(format!("{created}.key.der"))
    }

    fn create(&self, created: u64) -> Result<(), CertError> {
        let (cert, key) = make(created)?;
        let key_path = self.key_path(created);
        outpost_net::files::write_secret(&key_path, &key).map_err(io(&key_path))?;
        let cert_path = self.cert_path(created);
        outpost_net::files::write_atomic(&cert_path, &cert).map_err(io(&cert_path))?;
        Ok(())
    }

    fn load(&self, created: u64) -> Result<Held, CertError> {
        let cert_path = self.cert_path(created);
        let key_path = self.key_path(created);
        let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
        let key = std::fs::read(&key_path).map_err(io(&key_path))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let signing = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::Cert(format!("{}: {e}", key_path.display())))?;
        let sha256 = hex::encode(sha2::Sha256::digest(&cert));
        let key = Arc::new(CertifiedKey::new(vec![CertificateDer::from(cert)], signing));
        Ok(Held { created, sha256, key })
    }

    /// The TLS resolver that presents the served certificate.
    pub fn resolver(self: &Arc<Self>) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver(self.clone()))
    }
}

#[derive(Debug)]
struct Resolver(Arc<BrowserCerts>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let held = self.0.held.read().unwrap_or_else(|e| e.into_inner());
        held.0.get(held.1).map(|h| h.key.clone())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.display().to_string(), source }
}

/// A P-256 certificate valid from `created` − [`BACKDATE`] for [`VALIDITY`] in all, with a SAN
/// and basic constraints (Chrome wants extensions); returns (certificate DER, PKCS#8 key DER).
pub fn make(created: u64) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let err = |e: rcgen::Error| CertError::Cert(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["outpost.invalid".to_string(), "localhost".to_string()]).map_err(err)?;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Outpost edge (browsers)");
    let from = i64::try_from(created.saturating_sub(BACKDATE.as_secs())).map_err(|e| CertError::Cert(e.to_string()))?;
    let to = i64::try_from(not_after(created)).map_err(|e| CertError::Cert(e.to_string()))?;
    let stamp = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| CertError::Cert(e.to_string()));
    params.not_before = stamp(from)?;
    params.not_after = stamp(to)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const T0: u64 = 1_800_000_000;

    #[test]
    fn a_fresh_node_makes_one_and_serves_it_at_once() {
        let p = plan(T0, &[]);
        assert_eq!(p, Plan { create: true, retire: vec![], serve: Some(T0) });
    }

    #[test]
    fn the_next_one_is_made_a_day_before_it_is_served() {
        let p = plan(T0 + 5 * DAY - 1, &[T0]);
        assert!(!p.create);
        let p = plan(T0 + 5 * DAY, &[T0]);
        assert_eq!(p, Plan { create: true, retire: vec![], serve: Some(T0) });
        let next = T0 + 5 * DAY;
        assert_eq!(plan(next + DAY - 1, &[T0, next]).serve, Some(T0));
        let p = plan(next + DAY, &[T0, next]);
        assert_eq!(p, Plan { create: false, retire: vec![T0], serve: Some(next) });
    }

    #[test]
    fn odd_creation_times_from_the_data_dir_are_retired_not_trusted() {
        let p = plan(T0, &[5, u64::MAX]);
        assert!(p.create && p.retire.contains(&5) && p.retire.contains(&u64::MAX), "{p:?}");
        assert_eq!(p.serve, Some(T0));
    }

    #[test]
    fn a_node_back_after_weeks_starts_over() {
        let p = plan(T0 + 20 * DAY, &[T0, T0 + 5 * DAY]);
        assert_eq!(p, Plan { create: true, retire: vec![T0, T0 + 5 * DAY], serve: Some(T0 + 20 * DAY) });
    }

    /// Over four simulated weeks, checked every ten minutes with the node restarted at random
    /// points: the served certificate is always valid, always among the published hashes, and
    /// (after the first) was published for at least a day before it was first served.
    #[test]
    fn every_served_certificate_was_published_a_day_ahead_and_is_valid() {
        let mut on_disk: Vec<u64> = Vec::new();
        let mut first_published = std::collections::HashMap::new();
        let mut served_before = std::collections::HashSet::new();
        let mut now = T0;
        let mut seed = 7u64;
        while now < T0 + 28 * DAY {
            let p = plan(now, &on_disk);
            on_disk.retain(|c| !p.retire.contains(c));
            if p.create {
                on_disk.push(now);
            }
            let serve = p.serve.expect("always something to serve");
            for c in on_disk.iter().filter(|c| **c >= serve) {
                first_published.entry(*c).or_insert(now);
            }
            assert!(serve - BACKDATE.as_secs() <= now && now < not_after(serve), "valid at {now}");
            assert!(on_disk.len() <= 2, "{on_disk:?}");
            if served_before.insert(serve) && serve != T0 {
                assert!(now - first_published[&serve] >= DAY, "served {serve} a day after publishing it");
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            now += 600 + (seed >> 60) * 60;
        }
        assert!(served_before.len() >= 4, "rotated: {served_before:?}");
    }

    #[test]
    fn certificates_are_p256_with_the_planned_validity_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(T0);
        let certs = BrowserCerts::open_at(dir.path(), now).unwrap();
        let first = certs.serving().unwrap();
        assert_eq!(certs.published(), vec![first.clone()]);
        let der = certs.serving_der().unwrap();
        // id-ecPublicKey with prime256v1, and ecdsa-with-SHA256 as the signature.
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let ecdsa_sha256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        assert!(der.windows(p256.len()).any(|w| w == p256) && der.windows(10).any(|w| w == ecdsa_sha256));
        // The validity, as UTCTime: 2027-01-15 08:00:00 (T0 less an hour) to 13 days later.
        let from = b"270115070000Z";
        let to = b"270128070000Z";
        assert!(der.windows(13).any(|w| w == from) && der.windows(13).any(|w| w == to), "validity");
        let again = BrowserCerts::open_at(dir.path(), now + Duration::from_secs(3600)).unwrap();
        assert_eq!(again.serving().unwrap(), first, "kept across a restart");
        let later = BrowserCerts::open_at(dir.path(), now + Duration::from_secs(5 * DAY)).unwrap();
        assert_eq!(later.published().len(), 2);
        assert_eq!(later.serving().unwrap(), first);
        let rotated = BrowserCerts::open_at(dir.path(), now + Duration::from_secs(6 * DAY)).unwrap();
        assert_eq!(rotated.published(), vec![later.published()[1].clone()]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "the old pair is gone");
    }
}
