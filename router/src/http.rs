//! The router's HTTP API (hyper, HTTP/1.1): parse, authorize, call [`Router`], map errors.
//!
//! Every error is JSON `{"error","code"}`, and the mapping from errors to statuses is here only.
//! Bodies are bounded: a declared length over the limit is refused unread.

use crate::addr::PrefixKey;
use crate::routing::{HeartbeatError, MatchError, ProbeError, RouteRequest, Router};
use crate::select::NoNode;
use hyper::{Method, StatusCode};
use ipnet::IpNet;
use outpost_net::http::{HttpError, Req, json};
use outpost_net::service::{Role, TokenHash, Tokens};
use outpost_proto::api::{
    CandidateList, Heartbeat, HeartbeatAck, MatchRequest, NodeList, ProbeBatch, ProbeResult, RouteBody,
};
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
    /// Per-client limits on routes and probe reports.
    pub clients: ClientLimiter,
    /// Per-player-id limit on routes, with `--player-auth-secret`.
    pub players: Buckets<u64>,
    /// The matchmaker's token, if any.
    pub matchmaker: Option<TokenHash>,
    /// The token peer routers forward with, if any.
    pub peer_token: Option<TokenHash>,
    /// Where what this router learns is forwarded.
    pub peers: crate::peer::Peers,
    /// Most players in one match.
    pub max_match_players: usize,
    /// Which pages may call the public routes.
    pub cors: Cors,
}

/// A token bucket per key, in a bounded table that forgets keys idle for ten minutes.
pub struct Buckets<K> {
    table: moka::sync::Cache<K, Arc<std::sync::Mutex<TokenBucket>>>,
    per_second: f64,
    burst: f64,
}

impl<K: std::hash::Hash + Eq + Send + Sync + 'static> Buckets<K> {
    /// `per_second` sustained, `burst` at once, for at most `keys` keys.
    pub fn new(per_second: f64, burst: f64, keys: u64) -> Buckets<K> {
        let table =
            moka::sync::Cache::builder().max_capacity(keys).time_to_idle(std::time::Duration::from_secs(600)).build();
        Buckets { table, per_second, burst }
    }

    /// Takes a token for `key`, if it has one.
    pub fn allow(&self, key: K, now: Instant) -> bool {
        let bucket = self.table.get_with(key, || Arc::new(std::sync::Mutex::new(TokenBucket::new(self.burst, now))));
        bucket.lock().map(|mut b| b.take(now, self.per_second, self.burst)).unwrap_or(false)
    }
}

/// Limits per client address and per client network (IPv4 /24, IPv6 /64): many addresses of
/// one network, each under its own limit, still share the network's.
pub struct ClientLimiter {
    addresses: Buckets<IpAddr>,
    networks: Buckets<PrefixKey>,
}

impl ClientLimiter {
    /// Limits of `address` and `network` as (per second, burst), for at most `clients` keys each.
    pub fn new(address: (f64, f64), network: (f64, f64), clients: u64) -> ClientLimiter {
        ClientLimiter {
            addresses: Buckets::new(address.0, address.1, clients),
            networks: Buckets::new(network.0, network.1, clients),
        }
    }

    /// Takes a token for `ip` and its network; the error names what is over its limit.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> Result<(), String> {
        let ip = crate::addr::canonical(ip);
        if !self.addresses.allow(ip, now) {
            return Err(ip.to_string());
        }
        let network = PrefixKey::of(ip, NETWORK_V4, NETWORK_V6);
        if !self.networks.allow(network, now) {
            let len = if ip.is_ipv4() { NETWORK_V4 } else { NETWORK_V6 };
            let net = ipnet::IpNet::new(ip, len).map(|n| n.trunc().to_string()).unwrap_or_else(|_| ip.to_string());
            return Err(format!("the network {net}"));
        }
        Ok(())
    }
}

/// The network a client's rate is also counted under, per family.
const NETWORK_V4: u8 = 24;
/// See [`NETWORK_V4`].
const NETWORK_V6: u8 = 64;

fn rate_limited(state: &HttpState, who: String) -> HttpError {
    state.router.metrics.rate_limited.inc();
    HttpError::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", format!("too many requests from {who}; slow down"))
}

fn limited(state: &HttpState, admin: bool, client: IpAddr) -> Result<(), HttpError> {
    if admin {
        return Ok(());
    }
    state.clients.allow(client, Instant::now()).map_err(|who| rate_limited(state, who))
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
    let public = PUBLIC_PATHS.contains(&req.uri().path());
    let origin = req.headers().get(hyper::header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
    // A browser's preflight: answered here, without a token and without spending the client's
    // rate limit.
    if public && req.method() == Method::OPTIONS {
        return preflight(&state.cors, origin.as_deref());
    }
    let mut reply = match route(state, &req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status == StatusCode::UNAUTHORIZED || e.status == StatusCode::FORBIDDEN {
                state.router.metrics.unauthorized.inc();
            }
            e.reply()
        }
    };
    // On errors too, or a page cannot read why it was refused.
    if public && let Some(allowed) = state.cors.allows(origin.as_deref()) {
        let h = reply.headers_mut();
        if let Ok(v) = hyper::header::HeaderValue::from_str(&allowed) {
            h.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(hyper::header::VARY, hyper::header::HeaderValue::from_static("origin"));
    }
    reply
}

/// The routes a browser page may call: what a player does, never what an operator does.
const PUBLIC_PATHS: &[&str] = &["/v1/route", "/v1/probes", "/v1/pubkey", "/v1/candidates"];

/// The origins whose pages may call the public routes (`--cors-origin`).
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Vec<String>,
    any: bool,
}

impl Cors {
    /// Exact origins (`https://game.example.com`, scheme, host and port as a browser sends
    /// them), or `*` for any; none allows no page.
    pub fn new(origins: &[String]) -> Result<Cors, String> {
        let mut cors = Cors::default();
        for o in origins.iter().map(|o| o.trim()) {
            if o == "*" {
                cors.any = true;
                continue;
            }
            let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
            let ok = rest.is_some_and(|r| !r.is_empty() && !r.contains('/') && !r.contains(char::is_whitespace));
            if !ok {
                return Err(format!("{o:?} is not an origin like https://game.example.com (no path, no trailing /)"));
            }
            cors.origins.push(o.to_string());
        }
        Ok(cors)
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if it is allowed.
    pub fn allows(&self, origin: Option<&str>) -> Option<String> {
        let origin = origin?;
        (self.any || self.origins.iter().any(|o| o == origin)).then(|| origin.to_string())
    }
}

fn preflight(cors: &Cors, origin: Option<&str>) -> Resp {
    let Some(allowed) = cors.allows(origin) else {
        let why = match origin {
            Some(o) => format!("origin {o} is not allowed here (--cors-origin)"),
            None => "a preflight needs an Origin header".to_string(),
        };
        return HttpError::new(StatusCode::FORBIDDEN, "cors-origin", why).reply();
    };
    hyper::Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed)
        .header(hyper::header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS")
        .header(hyper::header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type")
        .header(hyper::header::ACCESS_CONTROL_MAX_AGE, "600")
        .header(hyper::header::VARY, "origin")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap_or_else(|_| HttpError::internal("preflight reply").reply())
}

/// Which token a request carries, compared in constant time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    Cluster,
    Matchmaker,
    Peer,
    Anonymous,
}

fn caller(state: &HttpState, req: &Req) -> Caller {
    let auth = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
    match state.tokens.role(auth) {
        Some(Role::Admin) => return Caller::Admin,
        Some(Role::Cluster) => return Caller::Cluster,
        None => {}
    }
    let token = auth.and_then(outpost_net::service::bearer);
    let is = |hash: &Option<TokenHash>| matches!((hash, token), (Some(h), Some(t)) if h.matches(t));
    if is(&state.matchmaker) {
        Caller::Matchmaker
    } else if is(&state.peer_token) {
        Caller::Peer
    } else {
        Caller::Anonymous
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
            state.peers.forward(crate::peer::Learned { ip: client.to_string(), results: batch.results });
            Ok(json(StatusCode::OK, &ack))
        }
        (Method::POST, crate::peer::PATH) => {
            if state.peer_token.is_none() {
                return Err(HttpError::unauthorized("this router has no --peer-token-file: it takes no forwards"));
            }
            if caller(state, req) != Caller::Peer {
                return Err(HttpError::unauthorized("forwards need the peer token (Authorization: Bearer ...)"));
            }
            let fwd: crate::peer::Forward = read_json(req, PEER_BODY_BYTES).await?;
            if fwd.reports.len() > PEER_MAX_REPORTS {
                return Err(HttpError::bad_request(format!("at most {PEER_MAX_REPORTS} reports per forward")));
            }
            // Learned here, never forwarded again: each report travels one hop.
            let (mut taken, mut refused) = (0u64, 0u64);
            for r in &fwd.reports {
                let learned =
                    r.ip.parse::<IpAddr>().ok().and_then(|ip| router.probes(&r.results, ip, Instant::now()).ok());
                if learned.is_some() { taken += 1 } else { refused += 1 }
            }
            router.metrics.peer_received.inc_by(taken);
            if refused > 0 {
                tracing::warn!(origin = %fwd.origin, refused, "peer forward held reports that do not check");
            }
            Ok(json(StatusCode::OK, &serde_json::json!({"taken": taken, "refused": refused})))
        }
        (Method::GET, "/v1/candidates") => {
            let q = query(req);
            let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            let module = checked_module(get("module"))?;
            let admin = caller(state, req) == Caller::Admin;
            let client = client_of(state, admin, forwarded_for(req).as_deref(), peer, get("ip"))?;
            limited(state, admin, client)?;
            match router.candidates(module, client, Instant::now()) {
                Ok(candidates) => Ok(json(StatusCode::OK, &CandidateList { candidates })),
                Err(e) => Err(no_node(e, module)),
            }
        }
        (Method::POST, "/v1/route") => {
            let q = query(req);
            let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            let admin = caller(state, req) == Caller::Admin;
            let client = client_of(state, admin, forwarded_for(req).as_deref(), peer, get("ip"))?;
            // Before the body: a client over its rate costs no body read.
            limited(state, admin, client)?;
            let body: RouteBody = read_json(req, state.max_body_bytes).await?;
            router.check_results(&body.results).map_err(|e| HttpError::bad_request(e.to_string()))?;
            let reply = route_for(state, &q, admin, client, &body.results)?;
            // Learned as a probe report would be, once the route itself was valid.
            if router.probes(&body.results, client, Instant::now()).is_ok() {
                state.peers.forward(crate::peer::Learned { ip: client.to_string(), results: body.results });
            }
            Ok(reply)
        }
        (Method::POST, "/v1/matches") => {
            let who = caller(state, req);
            if !matches!(who, Caller::Admin | Caller::Matchmaker | Caller::Cluster) {
                return Err(HttpError::unauthorized(
                    "placing a match needs the matchmaker, admin or cluster token (Authorization: Bearer ...)",
                ));
            }
            let body: MatchRequest = read_json(req, state.max_body_bytes.max(MATCH_BODY_BYTES)).await?;
            place_match(state, body)
        }
        (Method::GET, "/v1/route") => {
            let q = query(req);
            let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            let admin = caller(state, req) == Caller::Admin;
            let client = client_of(state, admin, forwarded_for(req).as_deref(), peer, get("ip"))?;
            limited(state, admin, client)?;
            route_for(state, &q, admin, client, &[])
        }
        (
            _,
            "/healthz"
            | "/metrics"
            | "/v1/pubkey"
            | "/v1/nodes/heartbeat"
            | "/v1/nodes"
            | "/v1/probes"
            | "/v1/route"
            | "/v1/candidates"
            | "/v1/matches"
            | crate::peer::PATH,
        ) => Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{} {path}", req.method()),
        )),
        _ => Err(HttpError::new(StatusCode::NOT_FOUND, "not-found", format!("no route {path}"))),
    }
}

/// Largest forward a peer may send, bytes.
const PEER_BODY_BYTES: usize = 4 << 20;
/// Most reports in one forward.
const PEER_MAX_REPORTS: usize = 256;
/// Largest match body, bytes (100 players with their results do not fit the default 64 KiB).
const MATCH_BODY_BYTES: usize = 1 << 20;

fn query(req: &Req) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}

fn checked_module(module: Option<&str>) -> Result<&str, HttpError> {
    let module = module.ok_or_else(|| HttpError::bad_request("module is required"))?;
    outpost_proto::ids::check_name("module", module).map_err(|e| HttpError::bad_request(e.to_string()))?;
    Ok(module)
}

fn no_node(e: NoNode, module: &str) -> HttpError {
    let code = match e {
        NoNode::NoModule => "no-module",
        NoNode::NoneAvailable => "no-node-available",
    };
    HttpError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.reason(module))
}

fn check_display_name(n: &str) -> Result<(), HttpError> {
    if n.is_empty() || n.len() > MAX_NAME_BYTES || n.chars().any(char::is_control) {
        return Err(HttpError::bad_request(format!("name must be 1 to {MAX_NAME_BYTES} bytes of printable text")));
    }
    Ok(())
}

/// A route (GET, or POST with the client's results `own`) from its query.
fn route_for(
    state: &HttpState,
    q: &[(String, String)],
    admin: bool,
    client: IpAddr,
    own: &[ProbeResult],
) -> Result<Resp, HttpError> {
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let module = checked_module(get("module"))?;
    let player = match (get("player"), &state.player_auth_secret) {
        (Some(p), secret) => {
            let id: u64 =
                p.parse().map_err(|_| HttpError::bad_request(format!("player {p:?} is not a whole number")))?;
            if let Some(secret) = secret {
                let auth = get("auth").ok_or_else(|| HttpError::unauthorized("auth is required"))?;
                if !outpost_proto::ids::check_player_auth(secret, p, auth) {
                    return Err(HttpError::unauthorized("auth does not match the player id"));
                }
                // One authenticated player, however many addresses replay its pair.
                if !admin && !state.players.allow(id, Instant::now()) {
                    return Err(rate_limited(state, format!("player {id}")));
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
            check_display_name(n)?;
            n
        }
        None => {
            default_name = format!("player-{}", player % 100_000);
            &default_name
        }
    };
    let request = RouteRequest { module, player, name, client, own };
    match state.router.route(&request, Instant::now(), SystemTime::now()) {
        Ok(r) => Ok(json(StatusCode::OK, &r)),
        Err(e) => Err(no_node(e, module)),
    }
}

/// `POST /v1/matches`: checks the whole body, then places it.
fn place_match(state: &HttpState, body: MatchRequest) -> Result<Resp, HttpError> {
    let router = &state.router;
    outpost_proto::ids::check_name("module", &body.module).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let n = body.players.len();
    if n == 0 || n > state.max_match_players {
        return Err(HttpError::bad_request(format!(
            "a match holds 1 to {} players (--max-match-players), got {n}",
            state.max_match_players
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    for (i, p) in body.players.iter().enumerate() {
        if !seen.insert(p.id) {
            return Err(HttpError::bad_request(format!("players[{i}].id: player {} is listed twice", p.id)));
        }
        check_display_name(&p.name).map_err(|e| HttpError::bad_request(format!("players[{i}].{}", e.message)))?;
        if let Some(secret) = &state.player_auth_secret {
            let ok =
                p.auth.as_deref().is_some_and(|a| outpost_proto::ids::check_player_auth(secret, &p.id.to_string(), a));
            if !ok {
                return Err(HttpError::unauthorized(format!(
                    "players[{i}].auth does not match player {} (or is missing)",
                    p.id
                )));
            }
        }
        if !p.results.is_empty() {
            router.check_results(&p.results).map_err(|e| HttpError::bad_request(format!("players[{i}].{e}")))?;
        }
        let ip = match &p.ip {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map(crate::addr::canonical)
                    .map_err(|_| HttpError::bad_request(format!("players[{i}].ip {ip:?} is not an address")))?,
            ),
            None => None,
        };
        clients.push(ip);
    }
    if let Some(max) = body.max_rtt_ms
        && !(max.is_finite() && max > 0.0)
    {
        return Err(HttpError::bad_request(format!("max_rtt_ms must be a positive number, got {max}")));
    }
    if let Some(room) = &body.room {
        outpost_proto::ids::check_name("room", room).map_err(|e| HttpError::bad_request(e.to_string()))?;
    }
    if let Some(m) = body.max_players
        && (m as usize) < n
    {
        return Err(HttpError::bad_request(format!("max_players {m} is below the {n} players of the match")));
    }
    let now = Instant::now();
    for (p, ip) in body.players.iter().zip(&clients) {
        if let Some(ip) = ip
            && !p.results.is_empty()
            && router.probes(&p.results, *ip, now).is_ok()
        {
            state.peers.forward(crate::peer::Learned { ip: ip.to_string(), results: p.results.clone() });
        }
    }
    match router.place_match(&body, &clients, now, SystemTime::now()) {
        Ok(placed) => Ok(json(StatusCode::OK, &placed)),
        Err(e) => {
            router.metrics.matches_refused.inc();
            match e {
                MatchError::NoNode(reason) => {
                    Err(HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "no-node-available", reason))
                }
                MatchError::TooFar { worst, best } => {
                    let best: serde_json::Map<String, serde_json::Value> =
                        best.into_iter().map(|(id, b)| (id.to_string(), serde_json::json!(b))).collect();
                    let max = body.max_rtt_ms.unwrap_or_default();
                    let error = match worst {
                        Some(w) => format!("the best node's worst player estimate is {w:.1} ms, over max_rtt_ms {max}"),
                        None => {
                            format!("some players have no estimate to any node; max_rtt_ms {max} cannot be shown met")
                        }
                    };
                    Ok(json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({"error": error, "code": "max-rtt-exceeded", "best_rtt_ms": best}),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_one_network_share_its_limit_and_other_networks_keep_theirs() {
        let now = Instant::now();
        let limits = ClientLimiter::new((1.0, 2.0), (1.0, 10.0), 1000);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Each of 20 addresses of 203.0.113.0/24 is under its own limit; the network is not.
        let refused: Vec<String> =
            (1..=20).filter_map(|i| limits.allow(ip(&format!("203.0.113.{i}")), now).err()).collect();
        assert_eq!(refused.len(), 10);
        assert!(refused.iter().all(|r| r == "the network 203.0.113.0/24"), "{refused:?}");
        assert!(limits.allow(ip("198.51.100.7"), now).is_ok(), "another /24 is not held back");
        // One address over its own limit is named.
        assert!(limits.allow(ip("198.51.100.7"), now).is_ok());
        assert_eq!(limits.allow(ip("198.51.100.7"), now).unwrap_err(), "198.51.100.7");
        // IPv6: a /64 is one network; the next /64 is another; v4-mapped is the v4 address.
        for i in 1..=10 {
            assert!(limits.allow(ip(&format!("2001:db8:0:1::{i:x}")), now).is_ok());
        }
        assert_eq!(limits.allow(ip("2001:db8:0:1::ff"), now).unwrap_err(), "the network 2001:db8:0:1::/64");
        assert!(limits.allow(ip("2001:db8:0:2::1"), now).is_ok());
        assert_eq!(limits.allow(ip("::ffff:203.0.113.99"), now).unwrap_err(), "the network 203.0.113.0/24");
    }
}
