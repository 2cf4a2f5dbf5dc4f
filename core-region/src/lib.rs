//! `core-region`: durable authoritative state from the edges.
//!
//! # Layout
//! - [`config`]: flags, env and TOML, validated before anything binds.
//! - [`store`]: the one storage trait, the embedded (redb) and PostgreSQL stores, and the
//!   conformance suite both pass.
//! - [`ingest`]: the edge link over QUIC: hello, batches applied then acked, player-state loads.
//! - [`http`]: reads, health and metrics.
//! - [`telemetry`]: logging and metrics.
//!
//! [`run`] takes validated config and a shutdown future, so tests and `main` start it the same way.

pub mod config;
pub mod http;
pub mod ingest;
pub mod store;
pub mod telemetry;

use anyhow::Context as _;
use config::Config;
use std::future::Future;
use std::sync::Arc;

/// How long a client of the reads API has to send a request's headers: its callers are tools
/// and services on a private network, so ten seconds is generous, and a connection that says
/// nothing is closed then.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the configured store.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn store::Store>> {
    Ok(if config.args.store == "embedded" {
        let path = config.args.common.data_dir.join("state.redb");
        Arc::new(store::embedded::EmbeddedStore::open(&path, config.args.store_cache_mib << 20)?)
    } else {
        Arc::new(store::postgres::PostgresStore::connect(&config.args.store)?)
    })
}

/// Runs the core until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let data = &config.args.common.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("data_dir: creating {}", data.display()))?;
    outpost_net::files::sweep_temp(data);
    let tokens = config.args.common.tokens()?;
    let store = tokio::task::spawn_blocking({
        let config = config.clone();
        move || open_store(&config)
    })
    .await??;
    let metrics = Arc::new(telemetry::Metrics::default());

    let cert = outpost_net::tls::NodeCert::load_or_generate(data, "core")?;
    let server = outpost_net::tls::server_config(
        &cert,
        outpost_proto::link::ALPN_CORE,
        ingest::transport(config.idle_timeout, config.args.max_frame_bytes),
    )?;
    let endpoint = outpost_net::udp::quic_endpoint(config.args.listen_quic, Some(server))
        .with_context(|| format!("listen_quic: binding {}", config.args.listen_quic))?;
    let http = tokio::net::TcpListener::bind(config.args.listen_http)
        .await
        .with_context(|| format!("listen_http: binding {}", config.args.listen_http))?;
    let (quic_addr, http_addr) = (endpoint.local_addr()?, http.local_addr()?);
    if !http_addr.ip().is_loopback() {
        tracing::warn!(addr = %http_addr, "core HTTP bound to a non-loopback address without TLS: tokens cross the network in clear");
    }
    let ingest = Arc::new(ingest::IngestCtx {
        store: store.clone(),
        cluster: tokens.cluster,
        metrics: metrics.clone(),
        max_frame: config.args.max_frame_bytes,
        hello_timeout: config.hello_timeout,
        max_links: config.args.max_links,
        max_pending: config.args.max_pending_links,
        open: Default::default(),
        pending: Default::default(),
    });
    let ingest_task = tokio::spawn(ingest::serve(endpoint.clone(), ingest));
    let http_ctx = Arc::new(http::HttpCtx { store, metrics, tokens, max_scan: config.args.max_scan });
    tracing::info!(quic = %quic_addr, http = %http_addr, cert_sha256 = %cert.sha256(), store = if config.args.store == "embedded" { "embedded" } else { "postgres" }, "core region serving");
    config.args.common.write_ready(&outpost_proto::api::CoreReady {
        quic: quic_addr.to_string(),
        http: http_addr.to_string(),
        cert_sha256: cert.sha256(),
    })?;
    let handle = move |req| http::handle(http_ctx.clone(), req);
    outpost_net::http::serve(http, config.http_timeouts, config.tls.clone(), handle, shutdown).await;
    endpoint.close(0u32.into(), b"core shutting down");
    ingest_task.abort();
    tracing::info!("core region stopped");
    Ok(())
}
