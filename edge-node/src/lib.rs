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
//! - [`migrate`]: rooms that move between nodes (move credentials so far).
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
pub mod migrate;
pub mod modules;
pub mod quic;
pub mod room;
pub mod session;
pub mod telemetry;
pub mod websocket;
pub mod webtransport;

use anyhow::Context as _;
use config::Config;
use outpost_proto::api::EdgeReady;
use std::future::Future;
use std::sync::Arc;

/// Room commands queued per worker before a joining player or a player's message waits (a
/// player's reader stops until there is room): about a fifth of a second of 1,000 players at
/// 20 Hz, so a worker that falls behind holds players back instead of growing memory.
pub const ROOM_QUEUE: usize = 4096;

/// Reads the node id from the data dir, or makes one and keeps it there.
fn node_id(config: &Config) -> anyhow::Result<String> {
    if let Some(id) = &config.id {
        return Ok(id.clone());
    }
    let path = config.service.data_dir.join("node-id");
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

/// Runs the node until `shutdown` resolves, then drains it: players are told, the outbox is
/// handed to the core for up to the shutdown grace.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    // What lives on disk: the data dir, the node's id, its tokens and its QUIC certificate.
    let data = &config.service.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("data_dir: creating {}", data.display()))?;
    outpost_net::files::sweep_temp(data);
    let id = node_id(&config)?;
    let admin_token = outpost_net::service::TokenHash::of(&config.service.admin_token()?);
    // Every node holds the fleet's cluster token: the core link, heartbeats and the calls
    // between nodes that move rooms use it.
    let cluster_token = Some(config.service.cluster_token()?);
    let cert = outpost_net::tls::NodeCert::load_or_generate(data, "node")?;
    let metrics = Arc::new(telemetry::Metrics::default());

    // The game: the sandbox, the modules, the outbox of commits, the rooms.
    let host = host::WasmHost::new(config.limits.clone(), &data.join("cache"), config.allocator)?;
    let modules = Arc::new(modules::ModuleStore::open(host.clone(), &data.join("modules"))?);
    let outbox = match &config.forward {
        Some(f) => Some(Arc::new(forward::outbox::Outbox::open(&data.join("outbox"), &id, f.outbox)?)),
        None => None,
    };
    if let Some(o) = &outbox {
        metrics.expose_outbox(o.commit_to_ack().clone(), o.group_commit().clone());
    }
    let rooms = Arc::new(room::Rooms::start(
        host,
        metrics.clone(),
        config.workers,
        ROOM_QUEUE,
        config.worker_coalesce,
        outbox.clone(),
    )?);
    let loader = match (&config.forward, &cluster_token) {
        (Some(f), Some(token)) => {
            let l =
                Arc::new(forward::loader::StateLoader::new(f.cores.clone(), token.clone(), id.clone(), f.load_timeout));
            if let Some(o) = &outbox {
                let hook = l.clone();
                o.on_player_commit(Arc::new(move |id, value| hook.committed(id, value)));
            }
            Some(l)
        }
        _ => None,
    };

    // The listeners, each bound by its own module: players, the probe beacon, the admin API.
    let accepting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let player_node = quic::PlayerNode {
        node_id: id.clone(),
        rooms: rooms.clone(),
        modules: modules.clone(),
        metrics: metrics.clone(),
        loader,
        accepting: accepting.clone(),
    };
    let players = quic::start(&config.players, &cert, player_node)?;
    let websocket = match &config.websocket {
        Some(s) => Some(websocket::WsEndpoint::start(s.clone(), players.ctx.clone()).await?),
        None => None,
    };
    let websocket_url = config.advertise_websocket.clone().or_else(|| {
        let tls = config.websocket.as_ref().is_some_and(|s| s.tls.is_some());
        websocket.as_ref().map(|w| w.url(tls))
    });
    let webtransport = match &config.webtransport {
        Some(s) => Some(webtransport::WtEndpoint::start(s.clone(), &data.join("webtransport"), players.ctx.clone())?),
        None => None,
    };
    let webtransport_url = webtransport.as_ref().map(|w| {
        config.advertise_webtransport.clone().unwrap_or_else(|| {
            // The host players reach: the advertised player address's, else the bound one's.
            let advertised = config.heartbeat.as_ref().and_then(|h| h.advertise_quic).map(|a| a.ip());
            let ip = advertised.unwrap_or(w.addr.ip());
            let ip = if ip.is_unspecified() { players.addr.ip() } else { ip };
            w.url(&ip.to_string())
        })
    });
    let probe = beacon::bind(&config.probe).await?;
    let admin = admin::bind(&config.admin).await?;
    let (quic_addr, probe_addr, admin_addr) = (players.addr, probe.local_addr()?, admin.local_addr()?);
    let admin_url = format!("{}://{admin_addr}", config.admin.scheme());
    tracing::info!(
        id = %id, quic = %quic_addr, probe = %probe_addr, admin = %admin_addr,
        workers = config.workers, cert_sha256 = %cert.sha256(), "edge node serving"
    );

    // What runs beside them: the beacon, admission by the outbox's soft limit, forwarding to the
    // core, heartbeats to the router.
    let beacon_task = tokio::spawn(beacon::serve(probe, config.probe.limits, metrics.clone()));
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drained = Arc::new(tokio::sync::Notify::new());
    let admission_task = outbox.clone().map(|o| tokio::spawn(admit_by_outbox(o, accepting.clone(), draining.clone())));
    let holds = Arc::new(forward::holds::Holds::default());
    let forward_task = match (&config.forward, &outbox) {
        (Some(f), Some(o)) => {
            tracing::info!(cores = f.cores.len(), stream = o.stream(), "forwarding commits to the core region");
            let token = cluster_token.clone().unwrap_or_default();
            let (cores, metrics) = (f.cores.clone(), metrics.clone());
            Some(tokio::spawn(forward::run(o.clone(), holds.clone(), cores, id.clone(), token, metrics)))
        }
        _ => None,
    };
    let admin_tls_sha256 = match &config.service.tls_cert {
        Some(c) => Some(outpost_net::tls::pem_cert_sha256(c).map_err(|e| anyhow::anyhow!("tls_cert: {e}"))?),
        None => None,
    };
    let heartbeat = config.heartbeat.as_ref().map(|hb| {
        let addrs = heartbeat::Bound {
            quic: quic_addr,
            probe: probe_addr,
            admin_url: admin_url.clone(),
            admin_tls_sha256: admin_tls_sha256.clone(),
            websocket: websocket_url.clone(),
            webtransport: webtransport.as_ref().zip(webtransport_url.clone()).map(|(w, url)| (url, w.certs.clone())),
        };
        let token = cluster_token.clone().unwrap_or_default();
        let ctx =
            heartbeat::HeartbeatCtx::new(hb, &id, &cert.sha256(), addrs, token, &rooms, &modules, &accepting, &metrics);
        let routers: Vec<&str> = hb.routers.iter().map(|r| r.host.as_str()).collect();
        tracing::info!(routers = ?routers, interval = ?hb.interval, "heartbeating into the routers");
        (tokio::spawn(heartbeat::run(ctx.clone(), hb.interval)), ctx)
    });

    // Rooms that move: this node as a source and as a target.
    let migrator = Arc::new(migrate::Migrator {
        node_id: id.clone(),
        rooms: rooms.clone(),
        modules: modules.clone(),
        players: players.ctx.clone(),
        metrics: metrics.clone(),
        routers: config.heartbeat.as_ref().map(|h| h.routers.clone()).unwrap_or_default(),
        cluster_token: cluster_token.clone().unwrap_or_default(),
        admin_url: config.heartbeat.as_ref().and_then(|h| h.advertise_admin.clone()).unwrap_or(admin_url.clone()),
        here: outpost_proto::frame::MoveTarget {
            node: id.clone(),
            quic: config.heartbeat.as_ref().and_then(|h| h.advertise_quic).unwrap_or(quic_addr).to_string(),
            cert_sha256: cert.sha256(),
            webtransport: webtransport_url.clone().map(|url| outpost_proto::api::WebTransportEndpoint {
                probe_url: Some(webtransport::probe_url(&url)),
                url,
                cert_sha256: Vec::new(),
            }),
            websocket: websocket_url.clone(),
            credential: String::new(),
        },
        browser_certs: webtransport.as_ref().and_then(|w| w.certs.clone()),
        max_module_bytes: config.admin.limits.max_upload_bytes,
        draining: draining.clone(),
        outbox: outbox.clone(),
        holds,
        commit_hold: config.forward.as_ref().map_or(std::time::Duration::from_secs(60), |f| f.commit_hold),
        drained: drained.clone(),
        forwarders: Default::default(),
    });

    // Serving: the ready file says so, and the admin API runs until the shutdown signal.
    config.service.write_ready(&EdgeReady {
        id: id.clone(),
        quic: quic_addr.to_string(),
        probe: probe_addr.to_string(),
        admin: admin_addr.to_string(),
        cert_sha256: cert.sha256(),
        admin_url,
        admin_tls_sha256: admin_tls_sha256.clone(),
        websocket: websocket_url.clone(),
        webtransport: webtransport.as_ref().zip(webtransport_url.clone()).map(|(w, url)| {
            outpost_proto::api::WebTransportEndpoint {
                probe_url: Some(webtransport::probe_url(&url)),
                url,
                cert_sha256: w.published(),
            }
        }),
    })?;
    let websocket_url_info = websocket_url;
    let state = Arc::new(admin::AdminState {
        node_id: id,
        modules,
        rooms: rooms.clone(),
        metrics,
        accepting: accepting.clone(),
        quic_addr: quic_addr.to_string(),
        cert_sha256: cert.sha256(),
        websocket: websocket_url_info,
        webtransport: webtransport.as_ref().zip(webtransport_url.clone()).map(|(w, url)| (url, w.certs.clone())),
        outbox: outbox.clone(),
        udp_stats: players.stats.clone(),
        admin_token,
        cluster_token: outpost_net::service::TokenHash::of(&cluster_token.clone().unwrap_or_default()),
        migrator: migrator.clone(),
        limits: config.admin.limits.clone(),
    });
    // The node stops on the shutdown signal, or once a drain is done (its reply has gone out:
    // the server finishes the requests in flight).
    let (drain_on_shutdown, drainer) = (config.drain_on_shutdown, migrator.clone());
    let stop = async move {
        tokio::select! {
            _ = shutdown => {
                if let Some(deadline) = drain_on_shutdown {
                    drainer.drain(deadline).await;
                }
            }
            _ = drained.notified() => {}
        }
    };
    admin::serve(admin, state, config.admin.tls.clone(), stop).await;

    // Drain: refuse joins, tell the router and every player, then give the close frames and the
    // outbox the grace period.
    tracing::info!("shutting down: closing players");
    draining.store(true, std::sync::atomic::Ordering::Relaxed);
    accepting.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Some((task, ctx)) = &heartbeat {
        task.abort();
        heartbeat::farewell(ctx).await;
    }
    let grace = config.shutdown_grace;
    let _ = tokio::time::timeout(grace, rooms.shutdown()).await;
    let browsers = async {
        if let Some(wt) = webtransport {
            wt.shutdown(grace).await;
        }
    };
    tokio::join!(players.shutdown(grace), browsers);
    if let Some(ws) = &websocket {
        ws.shutdown();
    }
    beacon_task.abort();
    if let Some(t) = admission_task {
        t.abort();
    }
    // The outbox is durable, so whatever the core could not take goes after the restart.
    if let (Some(o), Some(_)) = (&outbox, &forward_task)
        && tokio::time::timeout(grace, o.caught_up()).await.is_err()
    {
        tracing::warn!(
            durable = o.durable(),
            acked = o.acked(),
            "stopping with commits the core has not acked; they go after the restart"
        );
    }
    if let Some(t) = forward_task {
        t.abort();
    }
    tracing::info!("edge node stopped");
    Ok(())
}

/// Joins stop while the outbox is over its soft limit, and resume when it drains; a draining
/// node stays closed. Waits for the outbox to say the state changed.
async fn admit_by_outbox(
    outbox: Arc<forward::outbox::Outbox>,
    accepting: Arc<std::sync::atomic::AtomicBool>,
    draining: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut over = outbox.watch_soft_limit();
    let mut was_over = false;
    loop {
        let is_over = *over.borrow_and_update();
        if is_over != was_over {
            tracing::warn!(
                over_soft_limit = is_over,
                bytes = outbox.bytes(),
                "outbox soft limit: joins {}",
                if is_over { "refused" } else { "accepted again" }
            );
            was_over = is_over;
        }
        let draining = draining.load(std::sync::atomic::Ordering::Relaxed);
        accepting.store(!draining && !is_over, std::sync::atomic::Ordering::Relaxed);
        if over.changed().await.is_err() {
            return;
        }
    }
}
