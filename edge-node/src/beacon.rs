//! The probe beacon: a stateless UDP echo that clients time to measure RTT to this node.
//!
//! A reply is the request with its magic flipped, so it is never larger than the request, and
//! each source address gets a token bucket, so the beacon cannot be used to reflect a flood at a
//! victim. The per-source table is bounded and forgets idle sources.

use crate::telemetry::Metrics;
use outpost_proto::beacon;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::UdpSocket;

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

/// A token bucket; the clock is an argument so it is testable without waiting.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: f64, now: Instant) -> Self {
        TokenBucket { tokens: burst, last: now }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant, per_second: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * per_second).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Answers probes on `socket` forever.
pub async fn serve(socket: UdpSocket, limits: BeaconLimits, metrics: Arc<Metrics>) {
    let buckets: moka::sync::Cache<IpAddr, Arc<Mutex<TokenBucket>>> = moka::sync::Cache::builder()
        .max_capacity(limits.max_sources)
        .time_to_idle(std::time::Duration::from_secs(60))
        .build();
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
            metrics.probe_malformed_total.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let now = Instant::now();
        let bucket = buckets.get_with(from.ip(), || Arc::new(Mutex::new(TokenBucket::new(limits.burst, now))));
        let allowed = bucket.lock().map(|mut b| b.take(now, limits.per_second, limits.burst)).unwrap_or(false);
        if !allowed {
            metrics.probe_rate_limited_total.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if socket.send_to(datagram, from).await.is_ok() {
            metrics.probe_replies_total.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3.0, t0);
        assert!((0..3).all(|_| b.take(t0, 10.0, 3.0)));
        assert!(!b.take(t0, 10.0, 3.0));
        assert!(b.take(t0 + Duration::from_millis(100), 10.0, 3.0));
        assert!(!b.take(t0 + Duration::from_millis(100), 10.0, 3.0));
        // Long idle never grows the bucket past its burst.
        let later = t0 + Duration::from_secs(100);
        assert!((0..3).all(|_| b.take(later, 10.0, 3.0)));
        assert!(!b.take(later, 10.0, 3.0));
    }
}
