//! Heartbeats into the region routers (`--router`): who this node is, where, how loaded, which
//! modules it runs and whether it takes joins. The router calls a node `down` after three missed
//! intervals, so a heartbeat that cannot be delivered is retried at the next tick, never queued.
//! Each router has a loop of its own: a dead router's connect timeout delays no other router's
//! heartbeats.

use crate::modules::ModuleStore;
use crate::room::Rooms;
use crate::telemetry::Metrics;
use outpost_proto::api::{Heartbeat, HeartbeatAck, NodeModule};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the heartbeat reports and where it goes.
pub struct HeartbeatCtx {
    /// The routers.
    pub routers: Vec<crate::config::RouterTarget>,
    /// The cluster token.
    pub token: String,
    /// The fixed part of the report (id, place, addresses, capacity, interval).
    pub template: Heartbeat,
    /// The node's state.
    pub rooms: Arc<Rooms>,
    /// Modules.
    pub modules: Arc<ModuleStore>,
    /// False while the node refuses joins.
    pub accepting: Arc<AtomicBool>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The ticket key the node was given, text form, to check against the router's.
    pub ticket_pubkey: Option<String>,
    /// Whose published hashes go into every heartbeat (they change as certificates rotate).
    pub browser_certs: Option<Arc<crate::webtransport::cert::BrowserCerts>>,
}

/// The addresses the node bound, which the heartbeat advertises unless told otherwise.
pub struct Bound {
    /// Player QUIC address.
    pub quic: std::net::SocketAddr,
    /// Probe beacon address.
    pub probe: std::net::SocketAddr,
    /// Admin API URL.
    pub admin_url: String,
    /// SHA-256 of the admin API's TLS certificate, when it serves HTTPS.
    pub admin_tls_sha256: Option<String>,
    /// WebSocket player URL, when the node serves one.
    pub websocket: Option<String>,
    /// WebTransport player URL and the node's own certificates (none with a CA-signed pair).
    pub webtransport: Option<(String, Option<Arc<crate::webtransport::cert::BrowserCerts>>)>,
}

impl HeartbeatCtx {
    /// What the heartbeat task needs, from the node's settings and parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hb: &crate::config::HeartbeatConfig,
        id: &str,
        cert_sha256: &str,
        bound: Bound,
        token: String,
        rooms: &Arc<Rooms>,
        modules: &Arc<ModuleStore>,
        accepting: &Arc<AtomicBool>,
        metrics: &Arc<Metrics>,
    ) -> Arc<HeartbeatCtx> {
        let template = Heartbeat {
            id: id.to_string(),
            region: hb.region.clone(),
            lat: hb.lat,
            lon: hb.lon,
            quic_addr: hb.advertise_quic.unwrap_or(bound.quic).to_string(),
            probe_addr: hb.advertise_probe.unwrap_or(bound.probe).to_string(),
            admin_url: hb.advertise_admin.clone().unwrap_or(bound.admin_url),
            admin_tls_sha256: bound.admin_tls_sha256,
            cert_sha256: cert_sha256.to_string(),
            capacity: hb.capacity,
            players: 0,
            rooms: 0,
            modules: Vec::new(),
            cpu: 0.0,
            interval_ms: hb.interval.as_millis() as u64,
            accepting: true,
            boot_id: Some(hex::encode(rand::random::<[u8; 8]>())),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            redeemed: Some(0),
            features: [outpost_proto::api::FEATURE_MATCH_TICKETS, outpost_proto::api::FEATURE_MIGRATION]
                .into_iter()
                .chain(bound.webtransport.is_some().then_some(outpost_proto::api::FEATURE_WEBTRANSPORT))
                .map(str::to_string)
                .collect(),
            websocket: bound.websocket.map(|url| outpost_proto::api::WebSocketEndpoint {
                probe_url: Some(crate::websocket::probe_url(&url)),
                url,
            }),
            webtransport: bound.webtransport.as_ref().map(|(url, _)| outpost_proto::api::WebTransportEndpoint {
                probe_url: Some(crate::webtransport::probe_url(url)),
                url: url.clone(),
                cert_sha256: Vec::new(),
            }),
        };
        let browser_certs = bound.webtransport.and_then(|(_, c)| c);
        Arc::new(HeartbeatCtx {
            routers: hb.routers.clone(),
            token,
            template,
            rooms: rooms.clone(),
            modules: modules.clone(),
            accepting: accepting.clone(),
            metrics: metrics.clone(),
            ticket_pubkey: hb.ticket_pubkey.clone(),
            browser_certs,
        })
    }
}

/// Why one heartbeat failed.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// Could not reach the router.
    #[error("router unreachable: {0}")]
    Connect(String),
    /// The router answered with an error status.
    #[error("router answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its error body.
        body: String,
    },
}

/// Sends one heartbeat to `router`; returns its ticket key.
async fn send(
    ctx: &HeartbeatCtx,
    router: &crate::config::RouterTarget,
    hb: &Heartbeat,
    timeout: Duration,
) -> Result<HeartbeatAck, HeartbeatError> {
    let body = serde_json::to_vec(hb).map_err(|e| HeartbeatError::Connect(e.to_string()))?;
    let (status, body) = outpost_net::http::post(
        &router.host,
        router.tls.as_ref(),
        "/v1/nodes/heartbeat",
        &ctx.token,
        body,
        64 << 10,
        timeout,
    )
    .await
    .map_err(|e| HeartbeatError::Connect(e.0))?;
    if !status.is_success() {
        return Err(HeartbeatError::Refused {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).chars().take(300).collect(),
        });
    }
    serde_json::from_slice::<HeartbeatAck>(&body).map_err(|e| HeartbeatError::Connect(format!("malformed reply: {e}")))
}

/// The node's report as of now.
fn report(ctx: &HeartbeatCtx, cpu: f64) -> Heartbeat {
    Heartbeat {
        players: u32::try_from(ctx.rooms.players()).unwrap_or(u32::MAX),
        rooms: u32::try_from(ctx.rooms.len()).unwrap_or(u32::MAX),
        modules: ctx.modules.list().into_iter().map(|m| NodeModule { name: m.name, version: m.version }).collect(),
        cpu,
        accepting: ctx.accepting.load(Ordering::Relaxed),
        redeemed: Some(ctx.metrics.tickets_redeemed_total.get()),
        webtransport: ctx.template.webtransport.clone().map(|mut wt| {
            if let Some(c) = &ctx.browser_certs {
                wt.cert_sha256 = c.published();
            }
            wt
        }),
        ..ctx.template.clone()
    }
}

/// One last heartbeat to every router when the node drains (`accepting` is false by then), so
/// they stop sending players at once instead of after three missed intervals.
pub async fn farewell(ctx: &Arc<HeartbeatCtx>) {
    let mut all = tokio::task::JoinSet::new();
    for i in 0..ctx.routers.len() {
        let ctx = ctx.clone();
        all.spawn(async move {
            let router = &ctx.routers[i];
            match send(&ctx, router, &report(&ctx, 0.0), Duration::from_secs(1)).await {
                Ok(_) => tracing::info!(router = %router.host, "told the router this node is draining"),
                Err(e) => {
                    tracing::warn!(router = %router.host, error = %e, "could not tell the router this node is draining")
                }
            }
        });
    }
    while all.join_next().await.is_some() {}
}

/// Heartbeats every router every `interval` until the task is dropped.
pub async fn run(ctx: Arc<HeartbeatCtx>, interval: Duration) {
    let mut all = tokio::task::JoinSet::new();
    for i in 0..ctx.routers.len() {
        all.spawn(run_one(ctx.clone(), i, interval));
    }
    while all.join_next().await.is_some() {}
}

/// Heartbeats router `i`. Logs a failure when it starts and when it ends, not at every tick.
async fn run_one(ctx: Arc<HeartbeatCtx>, i: usize, interval: Duration) {
    let router = &ctx.routers[i];
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut key_checked = false;
    let mut last_cpu = (Instant::now(), crate::admin::process_cpu_seconds());
    loop {
        tick.tick().await;
        let now = (Instant::now(), crate::admin::process_cpu_seconds());
        let wall = now.0.duration_since(last_cpu.0).as_secs_f64();
        let cpu = if wall > 0.0 { ((now.1 - last_cpu.1) / wall).max(0.0) } else { 0.0 };
        last_cpu = now;
        let hb = report(&ctx, cpu);
        match send(&ctx, router, &hb, interval.max(Duration::from_secs(1))).await {
            Ok(ack) => {
                ctx.metrics.heartbeats_sent_total.inc();
                if failing {
                    tracing::info!(router = %router.host, "heartbeats delivered again");
                    failing = false;
                }
                if !key_checked {
                    key_checked = true;
                    match &ctx.ticket_pubkey {
                        Some(k) if *k != ack.pubkey => tracing::error!(
                            router_pubkey = %ack.pubkey,
                            "--ticket-pubkey differs from the router's ticket key: every routed player will be refused"
                        ),
                        None => tracing::warn!(
                            router_pubkey = %ack.pubkey,
                            "no --ticket-pubkey: set it to the router's key to accept its players"
                        ),
                        _ => {}
                    }
                }
            }
            Err(e) => {
                ctx.metrics.heartbeat_failures_total.inc();
                if !failing {
                    tracing::warn!(router = %router.host, error = %e, "heartbeat failed; retrying every interval");
                    failing = true;
                }
            }
        }
    }
}
