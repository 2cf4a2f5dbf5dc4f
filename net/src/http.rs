//! The one HTTP/1.1 accept loop the router, the edge's admin API and the core's reads share:
//! bind elsewhere, pass the listener, stop on any future. Each connection gets a header read
//! timeout and a bounded read buffer; the handler sees the peer address (the router needs it).
//! With a TLS config it serves HTTPS (TLS 1.3), so tokens never cross a network in clear.
//!
//! Also the one error reply ([`HttpError`], JSON `{"error","code"}`) and the one bounded body
//! reader ([`read_body`]) of every API.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
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

/// An error reply: a status, a stable code for programs and a precise message for people. Every
/// API answers errors with this one JSON shape, `{"error": message, "code": code}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (`bad-request`, `unauthorized`, `too-large`...).
    pub code: &'static str,
    /// What is wrong, precisely.
    pub message: String,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for HttpError {}

impl HttpError {
    /// Any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError { status, code, message: message.into() }
    }
    /// 400 `bad-request`.
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", m)
    }
    /// 401 `unauthorized`.
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    /// 404 `not-found`.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", m)
    }
    /// 405 `method-not-allowed`.
    pub fn method_not_allowed(m: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", m)
    }
    /// 409 `conflict`.
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", m)
    }
    /// 413 `too-large`: `got` bytes (declared, or read so far) over `limit`.
    pub fn too_large(got: u64, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("body of {got} bytes is over the limit of {limit} bytes"),
        )
    }
    /// 500 `internal`.
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
    /// The JSON body.
    pub fn body(&self) -> outpost_proto::api::ErrorBody {
        outpost_proto::api::ErrorBody { error: self.message.clone(), code: self.code.to_string() }
    }
    /// The reply.
    pub fn reply(&self) -> Reply {
        json(self.status, &self.body())
    }
}

/// Reads a request body of at most `limit` bytes. A declared `Content-Length` over the limit is
/// refused before a byte is read; a body that turns out longer is refused at the limit (413).
pub async fn read_body<B>(headers: &hyper::HeaderMap, body: B, limit: usize) -> Result<Bytes, HttpError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Some(len) = headers.get(hyper::header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| HttpError::bad_request("Content-Length is not a number"))?;
        if len > limit as u64 {
            return Err(HttpError::too_large(len, limit));
        }
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(HttpError::too_large(limit as u64 + 1, limit)),
        Err(e) => Err(HttpError::bad_request(format!("could not read the body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(len: Option<&str>) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        if let Some(l) = len {
            h.insert(hyper::header::CONTENT_LENGTH, l.parse().unwrap());
        }
        h
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_their_limit_and_refused_past_it() {
        let ok = read_body(&headers(Some("3")), Full::new(Bytes::from_static(b"abc")), 3).await;
        assert_eq!(ok.unwrap(), Bytes::from_static(b"abc"));
        let declared = read_body(&headers(Some("4")), Full::new(Bytes::from_static(b"abcd")), 3).await.unwrap_err();
        assert_eq!((declared.status, declared.code), (StatusCode::PAYLOAD_TOO_LARGE, "too-large"));
        assert!(declared.message.contains("4 bytes"), "{declared}");
        let undeclared = read_body(&headers(None), Full::new(Bytes::from_static(b"abcd")), 3).await.unwrap_err();
        assert_eq!(undeclared.status, StatusCode::PAYLOAD_TOO_LARGE);
        let garbled = read_body(&headers(Some("lots")), Full::new(Bytes::new()), 3).await.unwrap_err();
        assert_eq!((garbled.status, garbled.code), (StatusCode::BAD_REQUEST, "bad-request"));
        let body = garbled.body();
        assert_eq!((body.code.as_str(), body.error.as_str()), ("bad-request", "Content-Length is not a number"));
    }
}
