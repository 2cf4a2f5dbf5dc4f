//! The one HTTP/1.1 accept loop the router, the edge's admin API and the core's reads share:
//! bind elsewhere, pass the listener, stop on any future. Each connection gets a header read
//! timeout and a bounded read buffer; the handler sees the peer address (the router needs it).
//! With a TLS config it serves HTTPS (TLS 1.3), so tokens never cross a network in clear.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A reply with a fully buffered body.
pub type Reply = Response<Full<Bytes>>;

/// Serves `handle` on `listener` until `shutdown` resolves.
pub async fn serve<H, F>(
    listener: TcpListener,
    header_timeout: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    handle: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => { tracing::warn!(error = %e, "http accept failed"); continue; }
            },
            _ = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, header_timeout, handle, peer).await,
                Some(acceptor) => {
                    // The handshake gets the same bound as the headers: a client that opens a
                    // connection and says nothing holds a task only that long.
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, header_timeout, handle, peer).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<S, H, F>(stream: S, header_timeout: Duration, handle: H, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let fut = handle(req, peer);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "http connection ended");
    }
}

/// A JSON reply.
pub fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Reply {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A reply with a content type.
pub fn body(status: StatusCode, content_type: &str, bytes: Vec<u8>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(bytes)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
