//! Measuring nodes' UDP beacons: what `outpost probe`, `outpost connect` and a game's own
//! client do before they route, so the router decides from the paths this player really has.

use outpost_proto::beacon::{Probe, encode_request, parse_reply};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One node's result.
#[derive(Debug, Clone, Serialize)]
pub struct NodeProbe {
    /// Node id.
    pub node: String,
    /// Beacon address.
    pub addr: String,
    /// Fastest round trip, ms.
    pub min_ms: Option<f64>,
    /// Median round trip, ms.
    pub median_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// Mean difference between consecutive round trips, ms.
    pub jitter_ms: Option<f64>,
    /// Fraction of probes without a reply.
    pub loss: f64,
    /// Probes sent.
    pub sent: u32,
    /// The router's pick for `--module` (or, without it, the lowest median).
    pub pick: bool,
}

/// Summarizes round trips (in send order) of `sent` probes.
pub fn summarize(node: &str, addr: &str, rtts_ms: &[f64], sent: u32) -> NodeProbe {
    let mut sorted = rtts_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied();
    let jitter = (rtts_ms.len() > 1)
        .then(|| rtts_ms.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (rtts_ms.len() - 1) as f64);
    NodeProbe {
        node: node.to_string(),
        addr: addr.to_string(),
        min_ms: sorted.first().copied(),
        median_ms: at(0.5),
        p95_ms: at(0.95),
        jitter_ms: jitter.or((rtts_ms.len() == 1).then_some(0.0)),
        loss: if sent == 0 { 0.0 } else { 1.0 - rtts_ms.len() as f64 / sent as f64 },
        sent,
        pick: false,
    }
}

/// Probes one beacon: `count` requests `interval` apart, replies matched by sequence number,
/// round trips in the order the probes were sent.
pub async fn probe_one(addr: SocketAddr, count: u32, interval: Duration, timeout: Duration, size: usize) -> Vec<f64> {
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else { return Vec::new() };
    if sock.connect(addr).await.is_err() {
        return Vec::new();
    }
    let epoch = Instant::now();
    let mut rtts: Vec<Option<f64>> = vec![None; count as usize];
    let mut buf = vec![0u8; 1500];
    let mut next_send = tokio::time::Instant::now();
    let mut sent = 0u32;
    let end = tokio::time::Instant::now() + interval * count + timeout;
    loop {
        let done = sent == count && rtts.iter().all(Option::is_some);
        if done || tokio::time::Instant::now() >= end {
            break;
        }
        let wake = if sent < count { next_send.min(end) } else { end };
        tokio::select! {
            _ = tokio::time::sleep_until(wake), if sent < count => {
                let p = Probe { seq: sent, sent_us: epoch.elapsed().as_micros() as u64 };
                let _ = sock.send(&encode_request(p, size)).await;
                sent += 1;
                next_send += interval;
            }
            r = sock.recv(&mut buf) => {
                let Ok(n) = r else { continue };
                let Some(reply) = parse_reply(&buf[..n]) else { continue };
                let now_us = epoch.elapsed().as_micros() as u64;
                if let Some(slot) = rtts.get_mut(reply.seq as usize)
                    && slot.is_none()
                    && reply.sent_us <= now_us
                {
                    *slot = Some((now_us - reply.sent_us) as f64 / 1000.0);
                }
            }
            _ = tokio::time::sleep_until(end), if sent == count => break,
        }
    }
    rtts.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_of_round_trips() {
        let s = summarize("a", "1.2.3.4:5", &[10.0, 12.0, 11.0, 30.0], 5);
        assert_eq!((s.min_ms, s.median_ms, s.p95_ms), (Some(10.0), Some(12.0), Some(30.0)));
        assert_eq!(s.jitter_ms, Some((2.0 + 1.0 + 19.0) / 3.0));
        assert!((s.loss - 0.2).abs() < 1e-9);
        let none = summarize("b", "x", &[], 3);
        assert_eq!((none.median_ms, none.loss), (None, 1.0));
    }
}
