//! `outpost hello-server`: the smallest hyper HTTP/1.1 server (same runtime, same connection
//! settings as the router), answering every request with `hello`. The baseline `bench-http`
//! compares the router's `GET /v1/route` against, in the same run.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `outpost hello-server`.
#[derive(Args, Debug)]
pub struct HelloServer {
    /// TCP address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Writes `{"http": "ip:port"}` here once serving.
    #[arg(long)]
    ready_file: PathBuf,
}

impl HelloServer {
    /// Serves until killed.
    pub fn run(self) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(self.listen).await?;
            let addr = listener.local_addr()?;
            outpost_net::files::write_atomic(
                &self.ready_file,
                serde_json::json!({"http": addr.to_string()}).to_string().as_bytes(),
            )?;
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(_) => continue,
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"hello"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .max_buf_size(64 * 1024)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    }
}
