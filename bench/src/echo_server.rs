//! `outpost echo-server`: a raw quinn datagram echo server with the same TLS and socket buffers as
//! the edge's player endpoint, quinn's default transport, and nothing else. `bench --baseline` runs it as its own process
//! so its CPU can be compared with the edge's under the same load.

use anyhow::Context as _;
use clap::Args;
use outpost_net::tls;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// ALPN of the echo baseline.
pub const ALPN_ECHO: &[u8] = b"outpost-echo/1";

/// `outpost echo-server`.
#[derive(Args, Debug)]
pub struct EchoServer {
    /// UDP address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Writes `{"quic","cert_sha256","pid","runtime_threads"}` here once serving, and
    /// `{"echoed"}` beside it (extension `.stats`) every 100 ms.
    #[arg(long)]
    ready_file: PathBuf,
    /// Where the self-signed certificate is kept.
    #[arg(long)]
    data_dir: PathBuf,
    /// Async runtime threads (1 to 256). Unset, tokio's default: one per core, as a quinn
    /// server written the usual way (`#[tokio::main]`) gets.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// What drives QUIC: `quinn` (the baseline: quinn's endpoint and tasks on tokio) or `proto`
    /// (quinn-proto's state machines driven from one thread, no async runtime; see
    /// `echo_direct`), to measure what quinn's and tokio's driving costs apart from QUIC itself.
    #[arg(long, value_enum, default_value_t = Driver::Quinn)]
    driver: Driver,
}

/// What drives the echo server's QUIC.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// quinn's endpoint and connection tasks on a tokio runtime.
    Quinn,
    /// quinn-proto driven from one thread.
    Proto,
}

impl EchoServer {
    /// Serves until killed.
    pub fn run(self) -> anyhow::Result<()> {
        if self.driver == Driver::Proto {
            anyhow::ensure!(
                self.threads.is_none(),
                "--threads applies to --driver quinn; --driver proto runs on one thread"
            );
            return self.run_direct();
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = self.threads {
            builder.worker_threads(n.into());
        }
        let rt = builder.enable_all().build()?;
        rt.block_on(async move {
            std::fs::create_dir_all(&self.data_dir)?;
            let cert = tls::NodeCert::load_or_generate(&self.data_dir, "echo")?;
            // quinn's default transport: the baseline is raw quinn as it comes.
            let cfg = tls::server_config(&cert, ALPN_ECHO, quinn::TransportConfig::default())?;
            // The node's socket buffers, though: with the kernel's default a burst overflows the
            // socket, and CPU per echo would then measure loss recovery rather than echoing.
            let endpoint =
                outpost_net::udp::quic_endpoint(self.listen, Some(cfg)).context("binding the echo server")?;
            let ready = serde_json::json!({
                "quic": endpoint.local_addr()?.to_string(),
                "cert_sha256": cert.sha256(),
                "pid": std::process::id(),
                // Read back from the runtime itself, so a report names the threads that ran.
                "runtime_threads": tokio::runtime::Handle::current().metrics().num_workers(),
            });
            outpost_net::files::write_atomic(&self.ready_file, ready.to_string().as_bytes())?;
            // The count of echoes sent, so the bench divides CPU by what this server really did.
            let echoed = Arc::new(AtomicU64::new(0));
            let stats_path = self.ready_file.with_extension("stats");
            let counter = echoed.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    write_stats(&stats_path, counter.load(Ordering::Relaxed));
                }
            });
            while let Some(incoming) = endpoint.accept().await {
                let echoed = echoed.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok(d) = conn.read_datagram().await {
                        if conn.datagram_send_buffer_space() >= d.len() && conn.send_datagram(d).is_ok() {
                            echoed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            Ok(())
        })
    }

    fn run_direct(self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let cert = tls::NodeCert::load_or_generate(&self.data_dir, "echo")?;
        let cfg = tls::server_config(&cert, ALPN_ECHO, quinn::TransportConfig::default())?;
        let socket = outpost_net::udp::bind_udp(self.listen, outpost_net::udp::UDP_BUFFER_BYTES)
            .context("binding the echo server")?;
        let ready = serde_json::json!({
            "quic": socket.local_addr()?.to_string(),
            "cert_sha256": cert.sha256(),
            "pid": std::process::id(),
            "runtime_threads": 1,
        });
        outpost_net::files::write_atomic(&self.ready_file, ready.to_string().as_bytes())?;
        let stats_path = self.ready_file.with_extension("stats");
        let mut last = std::time::Instant::now();
        let never = std::sync::atomic::AtomicBool::new(false);
        crate::echo_direct::serve(socket, cfg, &never, move |echoed| {
            if last.elapsed() >= std::time::Duration::from_millis(100) {
                last = std::time::Instant::now();
                write_stats(&stats_path, echoed);
            }
        })
    }
}

/// Writes the count of echoes for the bench to read. Not `files::write_atomic`: its fsync every
/// 100 ms would add to the very CPU this baseline is measured by, and a count lost in a crash
/// does not matter.
fn write_stats(path: &std::path::Path, echoed: u64) {
    let tmp = path.with_extension("stats.tmp");
    if std::fs::write(&tmp, format!("{{\"echoed\":{echoed}}}")).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}
