//! The admin HTTP API (hyper, HTTP/1.1): modules, rooms, health and metrics.
//!
//! Every route except `GET /healthz` and `GET /metrics` needs the admin bearer token. Errors are
//! JSON `{"error","code"}`; the mapping from internal errors to statuses lives in [`error`] only.
//! Uploads are bounded: a declared `Content-Length` over the limit is refused before the body is
//! read, and an undeclared body is cut off at the limit.

pub mod error;

use crate::modules::ModuleStore;
use crate::room::Rooms;
use crate::room::worker::RoomSpec;
use crate::telemetry::Metrics;
use bytes::Bytes;
use error::ApiError;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use outpost_net::http::{Req, json};
use outpost_proto::api::CreateRoom;
use outpost_proto::ids::check_name;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// Largest request body other than a module upload (a room's create request and config, an
/// operator signal): a megabyte holds any sane room config, and bounds what one request holds.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How long a client has to send a request's headers (and a TLS handshake). Operators' tools on
/// slow links get half a minute; a connection that says nothing is closed then.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the admin API listens, over what, with what limits.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// TCP address.
    pub listen: std::net::SocketAddr,
    /// HTTPS, when `--tls-cert`/`--tls-key` are given.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Room defaults and limits.
    pub limits: ApiLimits,
}

impl AdminSettings {
    /// The URL scheme the API answers on.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Binds the admin API's listener, warning when the token would cross a network in clear.
pub async fn bind(settings: &AdminSettings) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen_admin: binding {}: {e}", settings.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && settings.tls.is_none() {
        tracing::warn!(%addr, "admin API bound to a non-loopback address without TLS: the token crosses the network in clear");
    }
    Ok(listener)
}

/// Room defaults and limits the API applies.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest module upload, bytes.
    pub max_upload_bytes: usize,
    /// Largest signal or room-create body, bytes.
    pub max_body_bytes: usize,
    /// Tick rate for modules uploaded without one.
    pub default_tick_hz: u32,
    /// Player cap for modules uploaded without one.
    pub default_max_players: u32,
    /// Highest tick rate a room may ask for.
    pub max_tick_hz: u32,
    /// How long a client may take over a request's headers and its body.
    pub timeouts: outpost_net::http::Timeouts,
}

/// What the handlers share.
pub struct AdminState {
    /// Node id.
    pub node_id: String,
    /// Modules.
    pub modules: Arc<ModuleStore>,
    /// Rooms.
    pub rooms: Arc<Rooms>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The admin token (compared in constant time).
    pub admin_token: outpost_net::service::TokenHash,
    /// The fleet's cluster token, which the other nodes present on `/v1/peer/` calls.
    pub cluster_token: outpost_net::service::TokenHash,
    /// Moving rooms, out and in.
    pub migrator: Arc<crate::migrate::Migrator>,
    /// Limits.
    pub limits: ApiLimits,
    /// False while the node refuses joins (health goes 503).
    pub accepting: Arc<std::sync::atomic::AtomicBool>,
    /// Player QUIC address, for `/v1/info`.
    pub quic_addr: String,
    /// The QUIC certificate's hash, for `/v1/info`.
    pub cert_sha256: String,
    /// The WebSocket player URL, for `/v1/info`.
    pub websocket: Option<String>,
    /// The WebTransport player URL and the node's own browser certificates, for `/v1/info`.
    pub webtransport: Option<(String, Option<Arc<crate::webtransport::cert::BrowserCerts>>)>,
    /// The outbox, when the node forwards to a core (for health and gauges).
    pub outbox: Option<Arc<crate::forward::outbox::Outbox>>,
    /// The player transport's packet counters.
    pub udp_stats: Arc<outpost_net::udp::batch::SendStats>,
}

type Resp = Response<Full<Bytes>>;

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let timeouts = state.limits.timeouts;
    let handle = move |req| {
        let state = state.clone();
        async move { handle(state, req).await }
    };
    outpost_net::http::serve(listener, timeouts, tls, handle, shutdown).await;
}

fn authorized(state: &AdminState, req: &Req, auth: outpost_proto::admin::RouteAuth) -> bool {
    use outpost_proto::admin::RouteAuth;
    let value = req.parts.headers.get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
    let token = value.and_then(outpost_net::service::bearer);
    match auth {
        RouteAuth::Open => true,
        RouteAuth::Admin => token.is_some_and(|t| state.admin_token.matches(t)),
        RouteAuth::Cluster => token.is_some_and(|t| state.cluster_token.matches(t)),
    }
}

fn query(req: &Req) -> HashMap<String, String> {
    req.parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

fn query_u32(
    q: &HashMap<String, String>,
    key: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, ApiError> {
    let Some(v) = q.get(key) else { return Ok(None) };
    let n: u32 = v.parse().map_err(|_| ApiError::bad_request(format!("{key} must be a whole number, got {v:?}")))?;
    if !range.contains(&n) {
        return Err(ApiError::bad_request(format!("{key} must be in {}..={}, got {n}", range.start(), range.end())));
    }
    Ok(Some(n))
}

/// Reads a body of at most `limit` bytes; a declared length over it is refused unread. What a
/// refused request leaves unread is discarded (bounded) by the server after the reply.
async fn read_body(req: &Req, limit: usize) -> Result<Bytes, ApiError> {
    req.body(limit).await
}

async fn handle(state: Arc<AdminState>, req: Req) -> Resp {
    match route(&state, &req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status == StatusCode::UNAUTHORIZED {
                state.metrics.admin_unauthorized_total.inc();
            }
            json(e.status, &e.body())
        }
    }
}

async fn route(state: &AdminState, req: &Req) -> Result<Resp, ApiError> {
    use outpost_proto::admin::AdminRoute::*;
    let uri = &req.parts.uri;
    let route = outpost_proto::admin::route(req.parts.method.as_str(), uri.path(), uri.query().unwrap_or(""));
    // Without the token, a path that is not an open route is 401 whether it exists or not.
    let auth = route.as_ref().map_or(outpost_proto::admin::RouteAuth::Admin, |r| r.auth());
    if !authorized(state, req, auth) {
        return Err(match auth {
            outpost_proto::admin::RouteAuth::Cluster => {
                ApiError::unauthorized("missing or wrong cluster token (Authorization: Bearer ...)")
            }
            _ => error::unauthorized(),
        });
    }
    let route = route.map_err(ApiError::not_found)?;
    match route {
        Health => Ok(if state.accepting.load(Ordering::Relaxed) {
            json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
        } else {
            let reason = match &state.outbox {
                Some(o) if o.over_soft_limit() => "outbox over its soft limit: the core region is unreachable or slow",
                _ => "draining",
            };
            let body = serde_json::json!({"status": "not-accepting", "reason": reason});
            json(StatusCode::SERVICE_UNAVAILABLE, &body)
        }),
        Metrics => Ok(metrics(state)),
        Info => {
            let info = serde_json::json!({
                "id": state.node_id,
                "version": env!("CARGO_PKG_VERSION"),
                "quic": state.quic_addr,
                "cert_sha256": state.cert_sha256,
                "alpn": "outpost/1",
                "websocket": state.websocket,
                "webtransport": state.webtransport.as_ref().map(|(url, certs)| outpost_proto::api::WebTransportEndpoint {
                    probe_url: Some(crate::webtransport::probe_url(url)),
                    url: url.clone(),
                    cert_sha256: certs.as_ref().map(|c| c.published()).unwrap_or_default(),
                }),
            });
            Ok(json(StatusCode::OK, &info))
        }
        PutModule(name) => put_module(state, name, req).await,
        ListModules => {
            let list: Vec<_> =
                state.modules.list().iter().map(|r| r.info(state.rooms.count_using(&r.name) as u32)).collect();
            Ok(json(StatusCode::OK, &list))
        }
        GetModule(name) => {
            let rec =
                state.modules.get(name).ok_or_else(|| ApiError::not_found(format!("no module named {name:?}")))?;
            Ok(json(StatusCode::OK, &rec.info(state.rooms.count_using(name) as u32)))
        }
        DeleteModule { name, force } => delete_module(state, name, force).await,
        CreateRoom => create_room(state, req).await,
        ListRooms => Ok(json(StatusCode::OK, &state.rooms.list().await?)),
        GetRoom(id) => Ok(json(StatusCode::OK, &state.rooms.info(id).await?)),
        CloseRoom(id) => {
            state.rooms.close(id).await?;
            Ok(json(StatusCode::OK, &serde_json::json!({"room": id, "state": "closed"})))
        }
        Signal(id) => {
            let body = read_body(req, state.limits.max_body_bytes).await?;
            let out = state.rooms.signal(id, body.to_vec()).await?;
            // The reply may say "committed": it waits, here and not on the room's worker, until
            // the call's commits are on disk (a kill -9 before then would lose them).
            if let Some(outbox) = state.outbox.as_ref().filter(|_| out.durable_at > 0) {
                outbox.wait_durable(out.durable_at).await.map_err(|e| {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not-durable", format!("the call ran, but {e}"))
                })?;
            }
            Ok(outpost_net::http::body(StatusCode::OK, "application/octet-stream", out.reply))
        }
        Upgrade(id) => upgrade_room(state, id).await,
        Migrate(id) => {
            let body = read_body(req, state.limits.max_body_bytes).await?;
            let ask: outpost_proto::api::MigrateRequest = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("bad migrate request: {e}")))?;
            let done = state.migrator.migrate(id, &ask.to).await?;
            Ok(json(StatusCode::OK, &done))
        }
        Drain => {
            let body = read_body(req, state.limits.max_body_bytes).await?;
            let ask: outpost_proto::api::DrainRequest = if body.is_empty() {
                Default::default()
            } else {
                serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad drain request: {e}")))?
            };
            let deadline = std::time::Duration::from_millis(ask.deadline_ms.unwrap_or(60_000).clamp(1, 3_600_000));
            Ok(json(StatusCode::OK, &state.migrator.drain(deadline).await))
        }
        PeerHandoff => {
            let body = read_body(req, crate::migrate::MAX_HANDOFF_BYTES).await?;
            let h: outpost_proto::api::Handoff =
                serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad hand-off: {e}")))?;
            Ok(json(StatusCode::CREATED, &state.migrator.accept(h).await?))
        }
        PeerForwarded(id) => {
            let body = read_body(req, crate::migrate::MAX_HANDOFF_BYTES).await?;
            let batch: outpost_proto::api::ForwardBatch = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("bad forwarded batch: {e}")))?;
            state.migrator.forwarded(id, batch).await?;
            Ok(json(StatusCode::OK, &serde_json::json!({"room": id})))
        }
        PeerAbandon(id) => {
            state.migrator.abandon(id).await;
            Ok(json(StatusCode::OK, &serde_json::json!({"room": id, "state": "dropped"})))
        }
        PeerModule { name, version } => {
            check_name("module name", name).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let bytes = state.modules.version_bytes(name, version)?;
            Ok(outpost_net::http::body(StatusCode::OK, "application/wasm", bytes))
        }
    }
}

fn metrics(state: &AdminState) -> Resp {
    let m = &state.metrics;
    // Counters kept elsewhere (the host, the transport's socket) are copied in at each scrape.
    let host = state.modules.host();
    let u = &state.udp_stats;
    for (counter, value) in [
        (&m.module_compiles_total, host.compiles.load(Ordering::Relaxed)),
        (&m.module_cache_loads_total, host.disk_loads.load(Ordering::Relaxed)),
        (&m.epoch_ticks_total, host.epoch.ticks()),
        (&m.udp_packets_sent_total, u.packets.load(Ordering::Relaxed)),
        (&m.udp_send_batches_total, u.batches.load(Ordering::Relaxed)),
        (&m.udp_send_errors_total, u.errors.load(Ordering::Relaxed)),
        (&m.udp_send_queue_full_total, u.queue_full.load(Ordering::Relaxed)),
        (&m.udp_send_kernel_full_total, u.kernel_full.load(Ordering::Relaxed)),
    ] {
        counter.inner().store(value, Ordering::Relaxed);
    }
    let g = &m.scraped;
    let outbox = |f: fn(&crate::forward::outbox::Outbox) -> u64| state.outbox.as_deref().map_or(0.0, |o| f(o) as f64);
    g.rooms.set(state.rooms.len() as f64);
    g.outbox_durable_seq.set(outbox(|o| o.durable()));
    g.outbox_acked_seq.set(outbox(|o| o.acked()));
    g.outbox_bytes.set(outbox(|o| o.bytes()));
    g.modules.set(state.modules.list().len() as f64);
    g.players.set(state.rooms.players() as f64);
    g.process_cpu_seconds.set(process_cpu_seconds());
    g.room_workers_cpu_seconds.set(room_workers_cpu_seconds());
    g.process_resident_bytes.set(process_rss_bytes());
    outpost_net::http::body(StatusCode::OK, outpost_net::metrics::CONTENT_TYPE, m.render().into_bytes())
}

/// User + system CPU of this process, for `outpost bench` to compute CPU per player-tick.
pub fn process_cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage into the provided, properly sized buffer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: rc == 0 means the kernel filled the struct.
    let ru = unsafe { ru.assume_init() };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// User + system CPU of the room worker threads, from /proc (0 where unavailable).
///
/// Splitting the process CPU this way tells a studio how much of a node's CPU its guests use and
/// how much the transport does, and lets `outpost bench` compare the transport alone with a raw
/// quinn echo. Read only when `/metrics` is scraped: one small file per thread.
pub fn room_workers_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ticks: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| worker_cpu_ticks(&stat))
        .sum();
    outpost_proto::procstat::ticks_to_seconds(ticks)
}

/// utime + stime, in clock ticks, from a `/proc/<pid>/task/<tid>/stat` line, when the thread is a
/// room worker (named by [`crate::room::WORKER_THREAD_PREFIX`]).
fn worker_cpu_ticks(stat: &str) -> Option<u64> {
    outpost_proto::procstat::cpu_ticks(stat)
        .filter(|(name, _)| name.starts_with(crate::room::WORKER_THREAD_PREFIX))
        .map(|(_, t)| t)
}

/// Resident set size from /proc (0 where unavailable).
pub fn process_rss_bytes() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0.0;
    };
    let pages: f64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    pages * page
}

async fn put_module(state: &AdminState, name: &str, req: &Req) -> Result<Resp, ApiError> {
    check_name("module name", name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if name == "relay" {
        return Err(ApiError::conflict("`relay` is the built-in relay room kind and cannot be replaced"));
    }
    let q = query(req);
    let tick_hz = query_u32(&q, "tick_hz", 1..=state.limits.max_tick_hz)?;
    let max_players = query_u32(&q, "max_players", 1..=100_000)?;
    let body = read_body(req, state.limits.max_upload_bytes).await?;
    let modules = state.modules.clone();
    let defaults = (state.limits.default_tick_hz, state.limits.default_max_players);
    let name_owned = name.to_string();
    let (rec, created) =
        tokio::task::spawn_blocking(move || modules.put(&name_owned, &body, tick_hz, max_players, defaults))
            .await
            .map_err(|e| ApiError::internal(format!("upload task failed: {e}")))??;
    if created {
        state.metrics.module_uploads_total.inc();
        tracing::info!(module = %rec.name, version = %rec.version, size = rec.size, compile_ms = rec.compile_ms, "module live");
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &rec.info(state.rooms.count_using(name) as u32)))
}

async fn delete_module(state: &AdminState, name: &str, force: bool) -> Result<Resp, ApiError> {
    let using = state.rooms.count_using(name);
    if using > 0 && !force {
        return Err(ApiError::conflict(format!(
            "module {name:?} is used by {using} room(s); close them or pass ?force=true"
        )));
    }
    if force {
        for r in state.rooms.list().await? {
            if r.module == name {
                let _ = state.rooms.close(&r.room).await;
            }
        }
    }
    let rec = state.modules.delete(name)?;
    Ok(json(StatusCode::OK, &serde_json::json!({"name": rec.name, "deleted": true})))
}

async fn create_room(state: &AdminState, req: &Req) -> Result<Resp, ApiError> {
    let body = read_body(req, state.limits.max_body_bytes).await?;
    let spec: CreateRoom =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad room request: {e}")))?;
    let room = match &spec.room {
        Some(r) => {
            check_name("room id", r).map_err(|e| ApiError::bad_request(e.to_string()))?;
            r.clone()
        }
        None => format!("r-{}", hex::encode(rand::random::<[u8; 5]>())),
    };
    if let Some(t) = spec.tick_hz
        && !(1..=state.limits.max_tick_hz).contains(&t)
    {
        return Err(ApiError::bad_request(format!("tick_hz must be in 1..={}, got {t}", state.limits.max_tick_hz)));
    }
    if spec.max_players == Some(0) {
        return Err(ApiError::bad_request("max_players must be at least 1"));
    }
    let modules = state.modules.clone();
    let module = spec.module.clone();
    let (rec, compiled) = tokio::task::spawn_blocking(move || modules.live(&module))
        .await
        .map_err(|e| ApiError::internal(format!("load task failed: {e}")))??;
    let created = state
        .rooms
        .create(
            RoomSpec {
                id: room,
                module: rec.name.clone(),
                config: spec.config_bytes(),
                tick_hz: spec.tick_hz.unwrap_or(rec.tick_hz),
                max_players: spec.max_players.unwrap_or(rec.max_players),
                seed: rand::random(),
                ephemeral: false,
                reserved: false,
            },
            compiled,
        )
        .await?;
    Ok(json(StatusCode::CREATED, &created))
}

async fn upgrade_room(state: &AdminState, id: &str) -> Result<Resp, ApiError> {
    let info = state.rooms.info(id).await?;
    let modules = state.modules.clone();
    let module = info.module.clone();
    let (rec, compiled) = tokio::task::spawn_blocking(move || modules.live(&module))
        .await
        .map_err(|e| ApiError::internal(format!("load task failed: {e}")))??;
    if rec.version == info.version {
        return Ok(json(
            StatusCode::OK,
            &serde_json::json!({"room": id, "module": rec.name, "version": rec.version, "upgraded": false}),
        ));
    }
    let done = state.rooms.upgrade(id, compiled).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"room": done.room, "module": done.module, "version": done.version, "from": info.version, "upgraded": true}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_cpu_counts_room_workers_only() {
        // Fields after the name: state, then 10 more, then utime (14th field) and stime (15th).
        let line = |name: &str| format!("4242 ({name}) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0");
        assert_eq!(worker_cpu_ticks(&line("room-worker-0")), Some(175));
        assert_eq!(worker_cpu_ticks(&line("tokio-rt-worker")), None);
        // A name with spaces and parentheses still parses from the last ')'.
        assert_eq!(worker_cpu_ticks(&line("room-worker-1 (x)")), Some(175));
        assert_eq!(worker_cpu_ticks("4242 (room-worker-0) S 1"), None, "truncated line");
        assert_eq!(worker_cpu_ticks("garbage"), None);
    }

    #[test]
    fn a_busy_room_worker_thread_shows_in_the_metric() {
        let spun = std::thread::Builder::new()
            .name("room-worker-t".into())
            .spawn(|| {
                // Spin for 200 ms of this thread's CPU (bounded: at most 5 s of wall time), well
                // over the 10 ms clock-tick resolution of /proc.
                let (start, wall) = (crate::host::guest::thread_cpu_time(), std::time::Instant::now());
                while crate::host::guest::thread_cpu_time() - start < std::time::Duration::from_millis(200)
                    && wall.elapsed() < std::time::Duration::from_secs(5)
                {
                    std::hint::black_box(0u64);
                }
                room_workers_cpu_seconds()
            })
            .unwrap()
            .join()
            .unwrap();
        // Other tests' workers may come and go meanwhile, but this thread alone spent 0.2 s.
        assert!(spun >= 0.15, "room worker CPU {spun} s, expected this thread's 0.2 s in it");
        assert!(spun <= process_cpu_seconds() + 0.02, "a part cannot exceed the whole");
    }
}
