//! `region-router`: sends each player to the healthy edge node with the lowest latency.
//!
//! # Layout
//! - [`config`]: flags, env and TOML, validated before anything binds.
//! - [`addr`]: who the client is (socket, trusted proxies) and its network prefix.
//! - [`geo`]: GeoIP over MaxMind DB files, both city layouts, cached.
//! - [`estimate`]: the pure great-circle RTT model.
//! - [`learn`]: robust RTT estimates learned from client probe reports, bounded.
//! - [`registry`]: nodes, their heartbeats and the health rule.
//! - [`select`]: pure placement over candidates.
//! - [`ticket`]: the signing key and minting.
//! - [`routing`]: the decisions over live state (heartbeat, probes, route), clock passed in.
//! - [`http`]: the HTTP API over [`routing`].
//! - [`peer`]: forwarding what this router learns to the other routers of the fleet.
//! - [`telemetry`]: logging and metrics.
//!
//! [`run`] takes validated config and a shutdown future, so tests and `main` start it the same way.

pub mod addr;
pub mod config;
pub mod estimate;
pub mod geo;
pub mod http;
pub mod learn;
pub mod peer;
pub mod registry;
pub mod routing;
pub mod select;
pub mod telemetry;
pub mod ticket;

use anyhow::Context as _;
use config::Config;
use outpost_proto::api::RouterReady;
use std::future::Future;
use std::sync::Arc;

/// Builds the router's state from config (opens GeoIP files, loads or makes the signing key).
pub fn build(config: &Config) -> anyhow::Result<routing::Router> {
    let data = &config.args.common.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("data_dir: creating {}", data.display()))?;
    outpost_net::files::sweep_temp(data);
    let key_path = config.args.ticket_key.clone().unwrap_or_else(|| data.join("ticket-key"));
    let issuer = match &config.args.ticket_key {
        // A fleet's shared key is made once and copied: a missing one is an error, never a
        // fresh key that would split the fleet.
        Some(path) => ticket::Issuer::load(path, config.ticket_ttl),
        None => ticket::Issuer::load_or_generate(&key_path, config.ticket_ttl),
    }
    .with_context(|| format!("ticket_key: {}", key_path.display()))?;
    let geo: Box<dyn geo::GeoLookup> = if config.args.geoip.is_empty() {
        tracing::warn!("no --geoip database: routes use measurements, then load");
        Box::new(geo::NoGeo)
    } else {
        Box::new(geo::MmdbGeo::open(&config.args.geoip, config.args.geoip_cache)?)
    };
    let settings = routing::RouterSettings {
        alternates: config.args.alternates,
        prefix_v4: config.args.prefix_v4,
        prefix_v6: config.args.prefix_v6,
        cell_deg: config.args.cell_deg,
        learn: config.learn.clone(),
        geo_model: config.geo,
        probe_max_results: config.args.probe_max_results,
        reserve: registry::ReservePolicy { ticket_ttl: config.ticket_ttl, share: config.args.reserve_share },
        candidates: config.args.candidates,
        candidates_per_region: config.args.candidates_per_region,
    };
    Ok(routing::Router::new(geo, issuer, settings, config.args.max_nodes))
}

/// Runs the router until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let router = Arc::new(build(&config)?);
    let tokens = config.args.common.tokens()?;
    anyhow::ensure!(
        tokens.admin != tokens.cluster,
        "cluster_token_file: the cluster token must differ from the admin token"
    );

    let listener = tokio::net::TcpListener::bind(config.args.listen_http)
        .await
        .with_context(|| format!("listen_http: binding {}", config.args.listen_http))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "router HTTP bound to a non-loopback address without TLS: tokens cross the network in clear");
    }
    tracing::info!(http = %addr, pubkey = %router.issuer().pubkey(), "region router serving");

    // Forget nodes that have been down for long; a cheap sweep, once a minute at most.
    let sweeper = {
        let router = router.clone();
        let forget_after = config.forget_after;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(forget_after.min(std::time::Duration::from_secs(60)));
            loop {
                tick.tick().await;
                let gone = router.registry.write().map(|mut r| r.sweep(std::time::Instant::now(), forget_after));
                if let Ok(n) = gone
                    && n > 0
                {
                    tracing::info!(nodes = n, "forgot nodes that stayed down");
                }
            }
        })
    };

    let metrics = router.metrics.clone();
    let origin = config.args.id.clone().unwrap_or_else(|| addr.to_string());
    let peers = match &config.peer_token {
        Some(token) if !config.peers.is_empty() => {
            let urls: Vec<&str> = config.peers.iter().map(|p| p.url.as_str()).collect();
            tracing::info!(peers = ?urls, origin = %origin, "forwarding what this router learns to its peers");
            peer::Peers::start(origin, &config.peers, token.clone(), config.args.peer_queue, metrics.clone())
        }
        _ => peer::Peers::none(metrics.clone()),
    };
    let hash = |t: &Option<String>| t.as_deref().map(outpost_net::service::TokenHash::of);
    let state = Arc::new(http::HttpState {
        matchmaker: hash(&config.matchmaker_token),
        peer_token: hash(&config.peer_token),
        peers,
        max_match_players: config.args.max_match_players,
        cors: config.cors.clone(),
        router: router.clone(),
        tokens,
        trusted: config.trusted.clone(),
        player_auth_secret: config.player_auth_secret.clone(),
        max_body_bytes: config.args.max_body_bytes,
        timeouts: config.http_timeouts,
        clients: http::ClientLimiter::new(
            (config.args.client_rate, config.args.client_burst),
            (config.args.prefix_rate, config.args.prefix_burst),
            config.args.client_table,
        ),
        players: http::Buckets::new(
            config.args.player_route_rate,
            config.args.player_route_burst,
            config.args.client_table,
        ),
    });
    {
        let (url, tls_sha256) = match &config.args.common.tls_cert {
            Some(cert) => (
                format!("https://{addr}"),
                Some(outpost_net::tls::pem_cert_sha256(cert).map_err(|e| anyhow::anyhow!("tls_cert: {e}"))?),
            ),
            None => (format!("http://{addr}"), None),
        };
        let ready =
            RouterReady { http: addr.to_string(), url, tls_sha256, pubkey: router.issuer().pubkey().to_string() };
        config.args.common.write_ready(&ready)?;
    }
    http::serve(listener, state, config.tls.clone(), shutdown).await;
    sweeper.abort();
    tracing::info!("region router stopped");
    Ok(())
}
