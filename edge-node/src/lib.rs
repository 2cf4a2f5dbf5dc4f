//! `edge-node`: hosts sandboxed WebAssembly rooms near players.
//!
//! # Layout
//! - [`config`]: flags, env and TOML, validated before anything binds.
//! - [`host`]: wasmtime engine, compiled-module cache, one store per room, CPU/memory limits.
//! - [`modules`]: uploaded modules on disk and their compiled versions.
//! - [`room`]: worker threads that own rooms and run their ticks.
//! - [`session`]: one player's protocol (join hand-off, frames, datagrams, limits), for any carrier.
//! - [`quic`]: the player endpoint: the socket loop, each connection's carrier, tickets and joins.
//! - [`admin`]: the admin HTTP API.
//! - [`beacon`]: the UDP latency-probe echo.
//! - [`heartbeat`]: reports to the region router.
//! - [`forward`]: the durable outbox of guests' commits and the link that drains it to the core.
//! - [`telemetry`]: logging and Prometheus metrics.
//!
//! [`run`] takes validated config and a shutdown future, so tests and `main` start it the same way.

pub mod admin;
pub mod beacon;
pub mod config;
pub mod forward;
pub mod heartbeat;
pub mod host;
pub mod modules;
pub mod quic;
pub mod room;
pub mod session;
pub mod telemetry;

use anyhow::Context as _;
use config::Config;
use outpost_proto::api::EdgeReady;
use std::future::Future;
use std::sync::Arc;

/// Reads the node id from the data dir, or makes one and keeps it there.
fn node_id(config: &Config) -> anyhow::Result<String> {
    if let Some(id) = &config.args.id {
        return Ok(id.clone());
    }
    let path = config.args.common.data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim().to_string();
            outpost_proto::ids::check_name("node id", &id).with_context(|| format!("{}", path.display()))?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = outpost_proto::ids::generate_node_id();
            std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Runs the node until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let data = &config.args.common.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("data_dir: creating {}", data.display()))?;
    let id = node_id(&config)?;
    let admin_token = outpost_net::service::TokenHash::of(&config.args.common.admin_token()?);
    let metrics = Arc::new(telemetry::Metrics::default());

    let host = host::WasmHost::new(config.limits.clone(), &data.join("cache"), config.allocator)?;
    let modules = Arc::new(modules::ModuleStore::open(host.clone(), &data.join("modules"))?);
    let outbox = match &config.forward {
        Some((_, limits)) => Some(Arc::new(forward::outbox::Outbox::open(&data.join("outbox"), &id, *limits)?)),
        None => None,
    };
    if let Some(o) = &outbox {
        metrics.expose_commit_to_ack(o.commit_to_ack().clone());
    }
    let rooms = Arc::new(room::Rooms::start(
        host.clone(),
        metrics.clone(),
        config.workers,
        4096,
        config.worker_coalesce,
        outbox.clone(),
    )?);

    let cert = outpost_net::tls::NodeCert::load_or_generate(data, "node")?;
    let cert_sha256 = cert.sha256();
    let mut transport = outpost_net::tls::player_transport(config.idle_timeout, 1);
    let window = config.player_limits.receive_window();
    transport
        .stream_receive_window(window.into())
        .receive_window(window.into())
        .datagram_receive_buffer_size(Some(config.player_limits.datagram_in_bytes))
        .datagram_send_buffer_size(config.player_limits.datagram_out_bytes);
    let server = outpost_net::tls::server_config(&cert, outpost_net::tls::ALPN_PLAYER, transport)?;
    let listen = config.args.listen_quic;
    let quic_socket = outpost_net::udp::bind_udp(listen, outpost_net::udp::UDP_BUFFER_BYTES)
        .with_context(|| format!("listen_quic: binding {listen}"))?;
    let accepting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    if config.ticket_key.is_none() {
        tracing::warn!("no --ticket-pubkey: every player join will be refused");
    }
    let cluster_token = if config.forward.is_some() || config.heartbeat.is_some() {
        Some(config.args.common.cluster_token()?)
    } else {
        None
    };
    let loader = match (&config.forward, &cluster_token) {
        (Some((cores, _)), Some(token)) => Some(Arc::new(forward::loader::StateLoader::new(
            cores.clone(),
            token.clone(),
            id.clone(),
            config.core_load_timeout,
        ))),
        _ => None,
    };
    if let (Some(o), Some(l)) = (&outbox, &loader) {
        let l = l.clone();
        o.on_player_commit(Arc::new(move |id, value| l.committed(id, value)));
    }
    let players = Arc::new(quic::PlayerCtx {
        loader,
        node_id: id.clone(),
        ticket_key: config.ticket_key,
        replay: std::sync::Mutex::new(outpost_proto::ticket::ReplayGuard::new(
            config.args.max_live_tickets,
            config.ticket_lifetime.as_secs(),
        )),
        sessions: std::sync::Mutex::default(),
        admission: quic::admission::Admission::new(config.args.max_connections, config.args.max_joining_per_ip),
        rooms: rooms.clone(),
        modules: modules.clone(),
        metrics: metrics.clone(),
        limits: Arc::new(config.player_limits.clone()),
        accepting: accepting.clone(),
        join_timeout: config.join_timeout,
        relay_max_players: config.args.max_players,
        default_tick_hz: config.args.tick_hz,
        session: session::SessionCtx {
            rooms: rooms.clone(),
            limits: Arc::new(config.player_limits.clone()),
            metrics: metrics.clone(),
            join_timeout: config.join_timeout,
        },
    });
    let player_endpoint = quic::driver::PlayerEndpoint::start(quic_socket, server, players, config.args.udp_send_queue)
        .with_context(|| format!("listen_quic: serving {listen}"))?;
    let quic_addr = player_endpoint.addr;

    let probe = tokio::net::UdpSocket::bind(config.args.listen_probe)
        .await
        .with_context(|| format!("listen_probe: binding {}", config.args.listen_probe))?;
    let admin = tokio::net::TcpListener::bind(config.args.listen_admin)
        .await
        .with_context(|| format!("listen_admin: binding {}", config.args.listen_admin))?;
    let probe_addr = probe.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let admin_url = format!("{}://{admin_addr}", if config.tls.is_some() { "https" } else { "http" });
    if !admin_addr.ip().is_loopback() {
        tracing::warn!(addr = %admin_addr, "admin API bound to a non-loopback address without TLS: the token crosses the network in clear");
    }
    tracing::info!(
        id = %id, quic = %quic_addr, probe = %probe_addr, admin = %admin_addr,
        workers = config.workers, cert_sha256 = %cert_sha256, "edge node serving"
    );

    let state = Arc::new(admin::AdminState {
        node_id: id.clone(),
        modules,
        rooms: rooms.clone(),
        metrics: metrics.clone(),
        accepting: accepting.clone(),
        quic_addr: quic_addr.to_string(),
        cert_sha256: cert_sha256.clone(),
        outbox: outbox.clone(),
        udp_stats: player_endpoint.stats.clone(),
        admin_token,
        limits: admin::ApiLimits {
            max_upload_bytes: config.args.max_upload_bytes,
            max_body_bytes: 1 << 20,
            default_tick_hz: config.args.tick_hz,
            default_max_players: config.args.max_players,
            max_tick_hz: 1000,
        },
    });
    let beacon_limits = beacon::BeaconLimits {
        per_second: config.args.probe_rate,
        burst: config.args.probe_burst,
        max_sources: 100_000,
    };
    let beacon_task = tokio::spawn(beacon::serve(probe, beacon_limits, metrics.clone()));
    // Joins stop while the outbox is over its soft limit, and resume when it drains.
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admission_task = outbox.clone().map(|o| {
        let (accepting, draining) = (accepting.clone(), draining.clone());
        tokio::spawn(async move {
            let mut was_over = false;
            loop {
                let over = o.over_soft_limit();
                if over != was_over {
                    tracing::warn!(
                        over_soft_limit = over,
                        bytes = o.bytes(),
                        "outbox soft limit: joins {}",
                        if over { "refused" } else { "accepted again" }
                    );
                    was_over = over;
                }
                let draining = draining.load(std::sync::atomic::Ordering::Relaxed);
                accepting.store(!draining && !over, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    });
    let forward_task = match (&config.forward, &outbox) {
        (Some((cores, _)), Some(o)) => {
            tracing::info!(cores = cores.len(), stream = o.stream(), "forwarding commits to the core region");
            let token = cluster_token.clone().unwrap_or_default();
            Some(tokio::spawn(forward::run(o.clone(), cores.clone(), id.clone(), token, metrics.clone())))
        }
        _ => None,
    };
    let heartbeat_task = match &config.heartbeat {
        None => None,
        Some(hb) => {
            let token = cluster_token.clone().unwrap_or_default();
            let args = &config.args;
            let template = outpost_proto::api::Heartbeat {
                id: id.clone(),
                region: args.region.clone(),
                lat: hb.lat,
                lon: hb.lon,
                quic_addr: args.advertise_quic.unwrap_or(quic_addr).to_string(),
                probe_addr: args.advertise_probe.unwrap_or(probe_addr).to_string(),
                admin_url: args.advertise_admin.clone().unwrap_or_else(|| admin_url.clone()),
                cert_sha256: cert_sha256.clone(),
                capacity: args.capacity,
                players: 0,
                rooms: 0,
                modules: Vec::new(),
                cpu: 0.0,
                interval_ms: hb.interval.as_millis() as u64,
                accepting: true,
            };
            let ctx = Arc::new(heartbeat::HeartbeatCtx {
                router: hb.router.clone(),
                tls: hb.tls.clone(),
                token,
                template,
                rooms: rooms.clone(),
                modules: state.modules.clone(),
                accepting: accepting.clone(),
                metrics: metrics.clone(),
                ticket_pubkey: args.ticket_pubkey.clone(),
            });
            tracing::info!(router = %hb.router, interval = ?hb.interval, "heartbeating into the router");
            Some((tokio::spawn(heartbeat::run(ctx.clone(), hb.interval)), ctx))
        }
    };

    {
        let ready = EdgeReady {
            id: id.clone(),
            quic: quic_addr.to_string(),
            probe: probe_addr.to_string(),
            admin: admin_addr.to_string(),
            cert_sha256,
            admin_url: admin_url.clone(),
            admin_tls_sha256: match &config.args.common.tls_cert {
                Some(cert) => {
                    Some(outpost_net::tls::pem_cert_sha256(cert).map_err(|e| anyhow::anyhow!("tls_cert: {e}"))?)
                }
                None => None,
            },
        };
        config.args.common.write_ready(&ready)?;
    }
    admin::serve(admin, state, config.tls.clone(), shutdown).await;

    // Drain: refuse joins, tell every player, then give the close frames time to go out.
    tracing::info!("shutting down: closing players");
    draining.store(true, std::sync::atomic::Ordering::Relaxed);
    accepting.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Some((task, ctx)) = &heartbeat_task {
        task.abort();
        heartbeat::farewell(ctx).await;
    }
    let grace = config.shutdown_grace;
    let _ = tokio::time::timeout(grace, rooms.shutdown()).await;
    player_endpoint.shutdown(grace).await;
    beacon_task.abort();
    if let Some(t) = admission_task {
        t.abort();
    }
    // Give the forwarder the grace period to hand the core what is left; the outbox is durable,
    // so whatever it could not send goes after the restart.
    if let (Some(o), Some(_)) = (&outbox, &forward_task) {
        let flushed = async {
            while o.acked() < o.durable() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(grace, flushed).await.is_err() {
            tracing::warn!(
                durable = o.durable(),
                acked = o.acked(),
                "stopping with commits the core has not acked; they go after the restart"
            );
        }
    }
    if let Some(t) = forward_task {
        t.abort();
    }

    tracing::info!("edge node stopped");
    Ok(())
}
