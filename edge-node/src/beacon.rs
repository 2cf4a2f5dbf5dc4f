//! The probe beacon: a stateless UDP echo that clients time to measure RTT to this node.
//!
//! A reply is the request with its magic flipped, so it is never larger than the request, and
//! each source address gets a token bucket, so the beacon cannot be used to reflect a flood at a
//! victim. The per-source table is bounded and forgets idle sources.

use crate::telemetry::Metrics;
use outpost_proto::beacon;
use outpost_proto::rate::TokenBucket;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::UdpSocket;

/// Most sources whose rate is tracked at once (the least recently seen are forgotten): a million
/// probing clients an hour at a minute of idle time each, in a few MB.
pub const MAX_SOURCES: u64 = 100_000;

/// The beacon's address and limits.
#[derive(Debug, Clone, Copy)]
pub struct BeaconSettings {
    /// UDP address to answer on.
    pub listen: std::net::SocketAddr,
    /// Per-source limits.
    pub limits: BeaconLimits,
}

/// Binds the beacon's socket.
pub async fn bind(settings: &BeaconSettings) -> anyhow::Result<UdpSocket> {
    UdpSocket::bind(settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen_probe: binding {}: {e}", settings.listen))
}

/// Per-source rate limit settings.
#[derive(Debug, Clone, Copy)]
pub struct BeaconLimits {
    /// Sustained replies per second per source IP.
    pub per_second: f64,
    /// Burst size per source IP.
    pub burst: f64,
    /// Most sources tracked at once.
    pub max_sources: u64,
}

/// A token bucket per source address, in a bounded table that forgets idle sources: the UDP
/// beacon's and the browsers' WebSocket probes' limit.
pub struct ProbeLimiter {
    buckets: moka::sync::Cache<IpAddr, Arc<Mutex<TokenBucket>>>,
    limits: BeaconLimits,
}

impl ProbeLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: BeaconLimits) -> ProbeLimiter {
        let buckets = moka::sync::Cache::builder()
            .max_capacity(limits.max_sources)
            .time_to_idle(std::time::Duration::from_secs(60))
            .build();
        ProbeLimiter { buckets, limits }
    }

    /// Takes a token for `ip`, if it has one.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let (burst, rate) = (self.limits.burst, self.limits.per_second);
        let bucket = self.buckets.get_with(ip.to_canonical(), || Arc::new(Mutex::new(TokenBucket::new(burst, now))));
        bucket.lock().map(|mut b| b.take(now, rate, burst)).unwrap_or(false)
    }
}

/// Answers probes on `socket` forever.
pub async fn serve(socket: UdpSocket, limits: BeaconLimits, metrics: Arc<Metrics>) {
    let limiter = ProbeLimiter::new(limits);
    // One byte more than the largest valid probe, so an oversized datagram is seen as such.
    let mut buf = vec![0u8; beacon::MAX_LEN + 1];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "beacon recv failed");
                continue;
            }
        };
        let datagram = &mut buf[..n];
        if !beacon::make_reply(datagram) {
            metrics.probe_malformed_total.inc();
            continue;
        }
        if !limiter.allow(from.ip(), Instant::now()) {
            metrics.probe_rate_limited_total.inc();
            continue;
        }
        if socket.send_to(datagram, from).await.is_ok() {
            metrics.probe_replies_total.inc();
        }
    }
}
