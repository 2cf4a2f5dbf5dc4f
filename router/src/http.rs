//! The router's HTTP API (hyper, HTTP/1.1): parse, authorize, call [`Router`], map errors.
//!
//! Every error is JSON `{"error","code"}`, and the mapping from errors to statuses is here only.
//! Bodies are bounded: a declared length over the limit is refused unread.

use crate::routing::{HeartbeatError, ProbeError, RouteRequest, Router};
use crate::select::NoNode;
use hyper::{Method, StatusCode};
use ipnet::IpNet;
use outpost_net::http::{HttpError, Req, json};
use outpost_net::service::{Role, Tokens};
use outpost_proto::api::{Heartbeat, HeartbeatAck, NodeList, ProbeBatch};
use outpost_proto::rate::TokenBucket;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::net::TcpListener;

/// Longest display name a route accepts, bytes.
pub const MAX_NAME_BYTES: usize = 32;

/// What the handlers share.
pub struct HttpState {
    /// The router.
    pub router: Arc<Router>,
    /// The admin and cluster tokens.
    pub tokens: Tokens,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted: Vec<IpNet>,
    /// The player-auth secret.
    pub player_auth_secret: Option<Vec<u8>>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long a client has to send a request's headers and its body.
    pub timeouts: outpost_net::http::Timeouts,
    /// Per-client-address limit on routes and probe reports.
    pub clients: ClientLimiter,
}

/// A token bucket per client address, in a bounded table that forgets idle clients.
pub struct ClientLimiter {
    buckets: moka::sync::Cache<IpAddr, Arc<std::sync::Mutex<TokenBucket>>>,
    per_second: f64,
    burst: f64,
}

impl ClientLimiter {
    /// `per_second` sustained, `burst` at once, for at most `clients` addresses.
    pub fn new(per_second: f64, burst: f64, clients: u64) -> ClientLimiter {
        let buckets = moka::sync::Cache::builder()
            .max_capacity(clients)
            .time_to_idle(std::time::Duration::from_secs(600))
            .build();
        ClientLimiter { buckets, per_second, burst }
    }

    fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let bucket = self.buckets.get_with(ip, || Arc::new(std::sync::Mutex::new(TokenBucket::new(self.burst, now))));
        bucket.lock().map(|mut b| b.take(now, self.per_second, self.burst)).unwrap_or(false)
    }
}

fn limited(state: &HttpState, admin: bool, client: IpAddr) -> Result<(), HttpError> {
    if admin || state.clients.allow(client) {
        return Ok(());
    }
    state.router.metrics.rate_limited.inc();
    Err(HttpError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        format!("too many requests from {client}; slow down"),
    ))
}

type Resp = outpost_net::http::Reply;

impl From<HeartbeatError> for HttpError {
    fn from(e: HeartbeatError) -> Self {
        match e {
            HeartbeatError::Field(..) => Self::bad_request(e.to_string()),
            HeartbeatError::Registry(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "registry-full", e.to_string()),
        }
    }
}

impl From<ProbeError> for HttpError {
    fn from(e: ProbeError) -> Self {
        Self::bad_request(e.to_string())
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let timeouts = state.timeouts;
    let handle = move |req: Req| {
        let state = state.clone();
        async move { handle(&state, req).await }
    };
    outpost_net::http::serve(listener, timeouts, tls, handle, shutdown).await;
}

async fn handle(state: &HttpState, req: Req) -> Resp {
    match route(state, &req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status == StatusCode::UNAUTHORIZED || e.status == StatusCode::FORBIDDEN {
                state.router.metrics.unauthorized.inc();
            }
            e.reply()
        }
    }
}

/// Which token a request carries, compared in constant time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    Cluster,
    Anonymous,
}

fn caller(state: &HttpState, req: &Req) -> Caller {
    match state.tokens.role(req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes())) {
        Some(Role::Admin) => Caller::Admin,
        Some(Role::Cluster) => Caller::Cluster,
        None => Caller::Anonymous,
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(req: &Req, limit: usize) -> Result<T, HttpError> {
    let body = req.body(limit).await?;
    serde_json::from_slice(&body).map_err(|e| HttpError::bad_request(format!("malformed JSON: {e}")))
}

/// The client a request speaks for: the socket, or a trusted proxy's `X-Forwarded-For`, or,
/// with the admin token only, an address the caller names.
fn client_of(
    state: &HttpState,
    admin: bool,
    forwarded_for: Option<&str>,
    peer: SocketAddr,
    named: Option<&str>,
) -> Result<IpAddr, HttpError> {
    let Some(ip) = named else {
        return Ok(crate::addr::client_ip(peer.ip(), forwarded_for, &state.trusted));
    };
    if !admin {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "naming the client address (ip) needs the admin token",
        ));
    }
    ip.parse::<IpAddr>()
        .map(crate::addr::canonical)
        .map_err(|_| HttpError::bad_request(format!("ip {ip:?} is not an address")))
}

fn forwarded_for(req: &Req) -> Option<String> {
    req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn route(state: &HttpState, req: &Req) -> Result<Resp, HttpError> {
    let router = &state.router;
    let peer = req.peer;
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/healthz") => Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        (Method::GET, "/metrics") => {
            let counts = router.read_registry().health_counts(Instant::now());
            Ok(outpost_net::http::body(
                StatusCode::OK,
                outpost_net::metrics::CONTENT_TYPE,
                router.metrics.render(counts).into_bytes(),
            ))
        }
        (Method::GET, "/v1/pubkey") => {
            Ok(json(StatusCode::OK, &serde_json::json!({"pubkey": router.issuer().pubkey()})))
        }
        (Method::POST, "/v1/nodes/heartbeat") => {
            if caller(state, req) != Caller::Cluster {
                router.metrics.heartbeats_rejected.inc();
                return Err(HttpError::unauthorized("heartbeats need the cluster token (Authorization: Bearer ...)"));
            }
            let hb: Heartbeat = read_json(req, state.max_body_bytes).await.inspect_err(|_| {
                router.metrics.heartbeats_rejected.inc();
            })?;
            let id = hb.id.clone();
            router.heartbeat(hb, Instant::now()).map_err(|e| {
                router.metrics.heartbeats_rejected.inc();
                tracing::warn!(node = %id, error = %e, "heartbeat refused");
                HttpError::from(e)
            })?;
            router.metrics.heartbeats.inc();
            Ok(json(StatusCode::OK, &HeartbeatAck { pubkey: router.issuer().pubkey().to_string() }))
        }
        (Method::GET, "/v1/nodes") => {
            if caller(state, req) == Caller::Anonymous {
                return Err(HttpError::unauthorized("the registry needs the admin or cluster token"));
            }
            let nodes = router.read_registry().status(Instant::now());
            Ok(json(StatusCode::OK, &NodeList { nodes }))
        }
        (Method::POST, "/v1/probes") => {
            let admin = caller(state, req) == Caller::Admin;
            let xff = forwarded_for(req);
            if !admin {
                // Before the body: a client over its rate costs no body read.
                limited(state, false, client_of(state, false, xff.as_deref(), peer, None)?)?;
            }
            let batch: ProbeBatch = read_json(req, state.max_body_bytes).await.inspect_err(|_| {
                router.metrics.probe_rejected.inc();
            })?;
            let client = client_of(state, admin, xff.as_deref(), peer, batch.ip.as_deref())?;
            let ack = router.probes(&batch.results, client, Instant::now()).map_err(|e| {
                router.metrics.probe_rejected.inc();
                HttpError::from(e)
            })?;
            Ok(json(StatusCode::OK, &ack))
        }
        (Method::GET, "/v1/route") => {
            let q: Vec<(String, String)> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
            let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            let module = get("module").ok_or_else(|| HttpError::bad_request("module is required"))?;
            outpost_proto::ids::check_name("module", module).map_err(|e| HttpError::bad_request(e.to_string()))?;
            let admin = caller(state, req) == Caller::Admin;
            let client = client_of(state, admin, forwarded_for(req).as_deref(), peer, get("ip"))?;
            limited(state, admin, client)?;
            let player = match (get("player"), &state.player_auth_secret) {
                (Some(p), secret) => {
                    let id: u64 =
                        p.parse().map_err(|_| HttpError::bad_request(format!("player {p:?} is not a whole number")))?;
                    if let Some(secret) = secret {
                        let auth = get("auth").ok_or_else(|| HttpError::unauthorized("auth is required"))?;
                        if !outpost_proto::ids::check_player_auth(secret, p, auth) {
                            return Err(HttpError::unauthorized("auth does not match the player id"));
                        }
                    }
                    id
                }
                (None, Some(_)) => return Err(HttpError::unauthorized("player and auth are required")),
                (None, None) => rand::random(),
            };
            let default_name;
            let name = match get("name") {
                Some(n) => {
                    if n.is_empty() || n.len() > MAX_NAME_BYTES || n.chars().any(char::is_control) {
                        return Err(HttpError::bad_request(format!(
                            "name must be 1 to {MAX_NAME_BYTES} bytes of printable text"
                        )));
                    }
                    n
                }
                None => {
                    default_name = format!("player-{}", player % 100_000);
                    &default_name
                }
            };
            let request = RouteRequest { module, player, name, client };
            match router.route(&request, Instant::now(), SystemTime::now()) {
                Ok(r) => Ok(json(StatusCode::OK, &r)),
                Err(e) => {
                    let code = match e {
                        NoNode::NoModule => "no-module",
                        NoNode::NoneAvailable => "no-node-available",
                    };
                    Err(HttpError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.reason(module)))
                }
            }
        }
        (
            _,
            "/healthz" | "/metrics" | "/v1/pubkey" | "/v1/nodes/heartbeat" | "/v1/nodes" | "/v1/probes" | "/v1/route",
        ) => Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{} {path}", req.method()),
        )),
        _ => Err(HttpError::new(StatusCode::NOT_FOUND, "not-found", format!("no route {path}"))),
    }
}
