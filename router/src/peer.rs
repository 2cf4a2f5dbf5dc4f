//! Several routers per fleet: what one router learns from clients (probe reports, measured
//! routes) is forwarded to its peers, so that each of them routes as well as if it had been
//! asked itself.
//!
//! A forward carries the router it came from and is never forwarded again (the receiving
//! endpoint only learns), so no loop can form whatever the peer lists say. Each peer has its
//! own bounded queue and task: a peer that is down drops what does not fit, counted
//! (`outpost_router_peer_dropped_total`), and delays nobody else. Forwards travel with a peer
//! token of their own, not the cluster token that every edge holds: an edge must not be able to
//! teach routers fake measurements.

use crate::telemetry::Metrics;
use outpost_proto::api::ProbeResult;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The path peers forward to.
pub const PATH: &str = "/v1/peer/probes";

/// Reports sent in one forward at most.
const BATCH: usize = 64;
/// How long one forward may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per batch before it is dropped (a peer that stays down must not stall the queue).
const ATTEMPTS: u32 = 3;

/// One client's measurements as learned here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    /// The client that measured them.
    pub ip: String,
    /// The measurements (checked by the router that took them, checked again by each peer).
    pub results: Vec<ProbeResult>,
}

/// `POST /v1/peer/probes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forward {
    /// The router that took the reports (its `--id`).
    pub origin: String,
    /// The reports.
    pub reports: Vec<Learned>,
}

/// A peer router.
#[derive(Debug, Clone)]
pub struct PeerTarget {
    /// Its URL, as given.
    pub url: String,
    /// Host and port.
    pub host: String,
    /// TLS, for an `https://` URL.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl PeerTarget {
    /// Parses `http://host:port` or `https://host:port`; `ca` is trusted for HTTPS (else the
    /// public roots).
    pub fn parse(url: &str, ca: Option<&std::path::Path>) -> Result<PeerTarget, String> {
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            (None, None) => return Err(format!("{url:?} is not an http:// or https:// URL")),
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!("{url:?} is not a URL like https://host:7700"));
        }
        let tls = if https {
            use outpost_net::tls::HttpsTrust;
            let trust = ca.map_or(HttpsTrust::PublicRoots, |c| HttpsTrust::CaFile(c.to_path_buf()));
            Some(outpost_net::tls::https_client_config(&trust).map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok(PeerTarget { url: url.to_string(), host: host.to_string(), tls })
    }
}

/// The forwarding side: one bounded queue per peer.
pub struct Peers {
    queues: Vec<mpsc::Sender<Learned>>,
    metrics: Arc<Metrics>,
}

impl Peers {
    /// No peers: nothing is forwarded.
    pub fn none(metrics: Arc<Metrics>) -> Peers {
        Peers { queues: Vec::new(), metrics }
    }

    /// Starts one forwarding task per peer (on the current runtime).
    pub fn start(origin: String, peers: &[PeerTarget], token: String, queue: usize, metrics: Arc<Metrics>) -> Peers {
        let mut queues = Vec::new();
        for peer in peers {
            let (tx, rx) = mpsc::channel(queue.max(1));
            tokio::spawn(forward_loop(peer.clone(), origin.clone(), token.clone(), rx, metrics.clone()));
            queues.push(tx);
        }
        Peers { queues, metrics }
    }

    /// Queues `learned` for every peer; a full queue drops it for that peer, counted.
    pub fn forward(&self, learned: Learned) {
        for q in &self.queues {
            if q.try_send(learned.clone()).is_err() {
                self.metrics.peer_dropped.inc();
            }
        }
    }
}

async fn forward_loop(
    peer: PeerTarget,
    origin: String,
    token: String,
    mut rx: mpsc::Receiver<Learned>,
    metrics: Arc<Metrics>,
) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let n = batch.len() as u64;
        let body = match serde_json::to_vec(&Forward { origin: origin.clone(), reports: std::mem::take(&mut batch) }) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let mut delivered = false;
        for attempt in 0..ATTEMPTS {
            match outpost_net::http::post(&peer.host, peer.tls.as_ref(), PATH, &token, body.clone(), 4096, TIMEOUT)
                .await
            {
                Ok((status, _)) if status.is_success() => {
                    delivered = true;
                    break;
                }
                Ok((status, reply)) => {
                    // The peer refused (wrong token, bad body): retrying cannot help.
                    tracing::warn!(peer = %peer.url, %status, reply = %String::from_utf8_lossy(&reply), "peer refused a forward");
                    break;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(peer = %peer.url, error = %e, "peer router unreachable; forwards are dropped while it is");
                        failing = true;
                    }
                    if attempt + 1 < ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    }
                }
            }
        }
        if delivered {
            metrics.peer_forwarded.inc_by(n);
            if failing {
                tracing::info!(peer = %peer.url, "peer router reachable again");
                failing = false;
            }
        } else {
            metrics.peer_dropped.inc_by(n);
        }
    }
}
