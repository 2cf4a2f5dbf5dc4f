//! The one HTTP/1.1 accept loop the router, the edge's admin API and the core's reads share:
//! bind elsewhere, pass the listener, stop on any future. Each connection gets a header read
//! timeout and a bounded read buffer; each request a body deadline; the handler sees the peer
//! address (the router needs it). With a TLS config it serves HTTPS (TLS 1.3), so tokens never
//! cross a network in clear.
//!
//! Also the one error reply ([`HttpError`], JSON `{"error","code"}`) and the one bounded body
//! reader ([`read_body`]) of every API.
//!
//! A hostile client can send a body slowly, a byte at a time. hyper hands each read over as a
//! `Bytes` that pins a piece of its read buffer, so keeping the pieces (`collect()`) cost ~5 KB
//! of memory per byte sent, with no time limit. Bodies are therefore copied into one buffer no
//! larger than the route's limit, under a deadline, and a body nobody reads (a request refused
//! before its body, such as one without its token) is discarded up to [`DISCARD_BYTES`] for at
//! most [`DISCARD_TIME`] and the connection closed, so the client still reads its answer.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// A reply with a fully buffered body.
pub type Reply = Response<Full<Bytes>>;

/// Most bytes of an unread body discarded before the reply, so that closing the connection does
/// not reset it under a client that is still sending (a reset can destroy the reply unread).
pub const DISCARD_BYTES: usize = 64 << 10;
/// Longest an unread body is discarded for before the reply goes out anyway.
pub const DISCARD_TIME: Duration = Duration::from_secs(1);

/// How long a client may take over each part of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the connection (or the previous request) to the end of the headers; also the TLS
    /// handshake.
    pub header: Duration,
    /// From the handler asking for the body to its last byte.
    pub body: Duration,
}

/// One request as a handler sees it: the head, the peer, and a body read at most once through
/// [`Req::body`] (bounded in size and time). What the handler leaves unread is discarded after
/// it answers.
pub struct Req {
    /// Method, URI, headers.
    pub parts: hyper::http::request::Parts,
    /// The socket's peer.
    pub peer: SocketAddr,
    body: Arc<Mutex<BodySlot>>,
    body_timeout: Duration,
}

#[derive(Default)]
struct BodySlot {
    body: Option<Incoming>,
    /// Set when a read stopped short (too large, too slow, broken): the connection then closes.
    unfinished: bool,
}

impl Req {
    /// The method.
    pub fn method(&self) -> &hyper::Method {
        &self.parts.method
    }
    /// The URI.
    pub fn uri(&self) -> &hyper::Uri {
        &self.parts.uri
    }
    /// The headers.
    pub fn headers(&self) -> &hyper::HeaderMap {
        &self.parts.headers
    }

    /// Reads the body, at most `limit` bytes, within the server's body deadline.
    pub async fn body(&self, limit: usize) -> Result<Bytes, HttpError> {
        let body = self.body.lock().ok().and_then(|mut s| s.body.take());
        let body = body.ok_or_else(|| HttpError::internal("the request body was read twice"))?;
        let read = read_body(&self.parts.headers, body, limit, self.body_timeout).await;
        if read.is_err()
            && let Ok(mut s) = self.body.lock()
        {
            s.unfinished = true;
        }
        read
    }
}

/// Serves `handle` on `listener` until `shutdown` resolves.
pub async fn serve<H, F>(
    listener: TcpListener,
    timeouts: Timeouts,
    tls: Option<Arc<rustls::ServerConfig>>,
    handle: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Req) -> F + Clone + Send + Sync + 'static,
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
                None => serve_connection(stream, timeouts, handle, peer).await,
                Some(acceptor) => {
                    // The handshake gets the same bound as the headers: a client that opens a
                    // connection and says nothing holds a task only that long.
                    match tokio::time::timeout(timeouts.header, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, timeouts, handle, peer).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<S, H, F>(stream: S, timeouts: Timeouts, handle: H, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Req) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (parts, body) = req.into_parts();
        let slot = Arc::new(Mutex::new(BodySlot { body: Some(body), unfinished: false }));
        let fut = handle(Req { parts, peer, body: slot.clone(), body_timeout: timeouts.body });
        async move {
            let mut reply = fut.await;
            let (left, unfinished) = match slot.lock() {
                Ok(mut s) => (s.body.take(), s.unfinished),
                Err(_) => (None, true),
            };
            let unread = match left {
                Some(body) if !body.is_end_stream() => {
                    discard(body, DISCARD_BYTES, DISCARD_TIME).await;
                    true
                }
                _ => false,
            };
            if unread || unfinished {
                reply.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(reply)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .max_buf_size(64 * 1024)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "http connection ended");
    }
}

/// Reads and drops at most `max_bytes` of `body` for at most `max_time`; whether it ended.
pub async fn discard<B: hyper::body::Body + Unpin>(mut body: B, max_bytes: usize, max_time: Duration) -> bool {
    let mut seen = 0usize;
    let drain = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen += bytes::Buf::remaining(data);
                if seen > max_bytes {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(max_time, drain).await.unwrap_or(false)
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

/// Reads a body of at most `limit` bytes within `timeout`, copied into one buffer so that its
/// memory is what it holds. A declared `Content-Length` over the limit is refused before a byte
/// is read (413); a body that turns out longer is refused at the limit (413); one that is still
/// arriving at the deadline is refused with 408.
pub async fn read_body<B>(
    headers: &hyper::HeaderMap,
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, HttpError>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    let declared = match headers.get(hyper::header::CONTENT_LENGTH) {
        None => None,
        Some(len) => {
            let len: u64 = len
                .to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| HttpError::bad_request("Content-Length is not a number"))?;
            if len > limit as u64 {
                return Err(HttpError::too_large(len, limit));
            }
            Some(len as usize)
        }
    };
    let read = async {
        let mut body = std::pin::pin!(body);
        // The declared length is at most the limit; without one, the buffer grows as bytes come.
        let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| HttpError::bad_request(format!("could not read the body: {e}")))?;
            if let Ok(mut data) = frame.into_data() {
                let n = bytes::Buf::remaining(&data);
                if buf.len() + n > limit {
                    return Err(HttpError::too_large((buf.len() + n) as u64, limit));
                }
                while bytes::Buf::has_remaining(&data) {
                    let chunk = bytes::Buf::chunk(&data);
                    buf.extend_from_slice(chunk);
                    let len = chunk.len();
                    bytes::Buf::advance(&mut data, len);
                }
            }
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the body did not arrive within {}", humantime::format_duration(timeout)),
        )),
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

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn bodies_are_read_up_to_their_limit_and_refused_past_it() {
        let ok = read_body(&headers(Some("3")), Full::new(Bytes::from_static(b"abc")), 3, T).await;
        assert_eq!(ok.unwrap(), Bytes::from_static(b"abc"));
        let declared = read_body(&headers(Some("4")), Full::new(Bytes::from_static(b"abcd")), 3, T).await.unwrap_err();
        assert_eq!((declared.status, declared.code), (StatusCode::PAYLOAD_TOO_LARGE, "too-large"));
        assert!(declared.message.contains("4 bytes"), "{declared}");
        let undeclared = read_body(&headers(None), Full::new(Bytes::from_static(b"abcd")), 3, T).await.unwrap_err();
        assert_eq!(undeclared.status, StatusCode::PAYLOAD_TOO_LARGE);
        let garbled = read_body(&headers(Some("lots")), Full::new(Bytes::new()), 3, T).await.unwrap_err();
        assert_eq!((garbled.status, garbled.code), (StatusCode::BAD_REQUEST, "bad-request"));
        let body = garbled.body();
        assert_eq!((body.code.as_str(), body.error.as_str()), ("bad-request", "Content-Length is not a number"));
    }

    /// A body of one-byte frames, as a client trickling bytes produces; it stops sending (and
    /// never ends) after `pause_at` frames, if given.
    struct Trickle {
        left: usize,
        sent: usize,
        pause_at: Option<usize>,
    }

    fn trickle(frames: usize, pause_at: Option<usize>) -> Trickle {
        Trickle { left: frames, sent: 0, pause_at }
    }

    impl hyper::body::Body for Trickle {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
            if Some(self.sent) == self.pause_at {
                return std::task::Poll::Pending;
            }
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            self.left -= 1;
            self.sent += 1;
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"x")))))
        }
    }

    #[tokio::test]
    async fn a_trickled_body_is_copied_into_one_buffer_and_a_stalled_one_times_out() {
        let whole = read_body(&headers(None), trickle(1000, None), 4096, T).await.unwrap();
        assert_eq!(whole.len(), 1000);
        let over = read_body(&headers(None), trickle(1000, None), 999, T).await.unwrap_err();
        assert_eq!((over.status, over.code), (StatusCode::PAYLOAD_TOO_LARGE, "too-large"));
        let short = Duration::from_millis(50);
        let stalled = read_body(&headers(Some("1000")), trickle(1000, Some(10)), 4096, short).await.unwrap_err();
        assert_eq!((stalled.status, stalled.code), (StatusCode::REQUEST_TIMEOUT, "timeout"));
        assert_eq!(stalled.message, "the body did not arrive within 50ms");
    }

    #[tokio::test]
    async fn discarding_stops_at_its_byte_and_time_bounds() {
        assert!(discard(trickle(10, None), 64, T).await, "a short body is discarded whole");
        assert!(!discard(trickle(100, None), 64, T).await, "stops past the byte bound");
        let short = Duration::from_millis(50);
        assert!(!discard(trickle(100, Some(5)), 1 << 20, short).await, "stops at the time bound");
    }
}

/// Why a [`post`] or [`request`] failed before the server answered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PostError(pub String);

/// POSTs `body` (JSON) to `path` on `host:port` (over TLS when `tls` is given), with a bearer
/// token, and returns the status and at most `limit` bytes of the reply, all within `timeout`.
/// The servers' HTTP client call (heartbeats, a router's forwards to its peers).
pub async fn post(
    host_port: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    path: &str,
    token: &str,
    body: Vec<u8>,
    limit: usize,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), PostError> {
    let call = Call { method: hyper::Method::POST, path, token: Some(token), body: Some(body), limit, timeout };
    request(host_port, tls, timeout, call).await
}

/// One HTTP/1.1 request for [`request`].
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Method.
    pub method: hyper::Method,
    /// Path and query.
    pub path: &'a str,
    /// Bearer token, if any.
    pub token: Option<&'a str>,
    /// JSON body, if any.
    pub body: Option<Vec<u8>>,
    /// Most reply bytes read.
    pub limit: usize,
    /// Deadline for the whole exchange.
    pub timeout: Duration,
}

/// Sends `call` to `host:port` (over TLS when `tls` is given): the TCP (and TLS) connection
/// must be up within `connect_timeout`, so a dead server costs a caller with somewhere else to
/// go only that long. Returns the status and at most `call.limit` bytes of the reply.
pub async fn request(
    host_port: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    call: Call<'_>,
) -> Result<(StatusCode, Bytes), PostError> {
    let err = |e: &dyn std::fmt::Display| PostError(e.to_string());
    let exchange = async {
        let stream = tokio::time::timeout(connect_timeout, crate::tls::connect_http(host_port, tls))
            .await
            .map_err(|_| err(&format!("connecting to {host_port}: timed out after {connect_timeout:?}")))?
            .map_err(|e| err(&format!("connecting to {host_port}: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| err(&e))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder().method(call.method).uri(call.path).header(hyper::header::HOST, host_port);
        if let Some(token) = call.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if call.body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(call.body.unwrap_or_default()))).map_err(|e| err(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| err(&e))?;
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        let body = read_body(&parts.headers, body, call.limit, call.timeout).await.map_err(|e| err(&e))?;
        driver.abort();
        Ok((status, body))
    };
    tokio::time::timeout(call.timeout, exchange).await.unwrap_or_else(|_| Err(err(&"timed out")))
}
