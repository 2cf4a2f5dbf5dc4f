//! The player protocol over WebTransport, as a browser speaks it: the bench's WebTransport bots
//! and the tests use it to reach a node's `--listen-webtransport` endpoint without a browser.
//! Same frames on one bi stream, same `peer u64 | data` datagrams, close codes from the
//! WebTransport close capsule.

use crate::{ClientError, CloseReason, ConnectOptions, Event, Joined};
use outpost_net::tls;
use outpost_proto::CloseCode;
use outpost_proto::frame::{self, Frame, FrameDecoder};
use tokio::sync::mpsc;
use web_transport_quinn::{RecvStream, SendStream, Session, SessionError, WebTransportError};

/// Why a WebTransport session ended, from the library's error.
pub fn close_reason(e: &SessionError) -> CloseReason {
    match e {
        SessionError::WebTransportError(WebTransportError::Closed(code, reason)) => {
            CloseReason { code: CloseCode::from_u32(*code), reason: reason.clone() }
        }
        SessionError::ConnectionError(c) => CloseReason::from_error(c),
        other => CloseReason { code: None, reason: other.to_string() },
    }
}

/// A joined WebTransport player.
pub struct WtClient {
    session: Session,
    send: tokio::sync::Mutex<SendStream>,
    events: mpsc::Receiver<Event>,
    /// What the node answered to the join.
    pub joined: Joined,
    _endpoint: quinn::Endpoint,
}

/// Opens a WebTransport session to `url` (an `https://ip:port/path` URL), accepting a certificate
/// with one of `cert_sha256`. The caller keeps `endpoint` open for as long as the session lives.
pub async fn open(
    endpoint: &quinn::Endpoint,
    url: &str,
    cert_sha256: &[String],
    opts: &ConnectOptions,
) -> Result<Session, ClientError> {
    let parsed = url::Url::parse(url).map_err(|e| ClientError::Connect(format!("{url:?}: {e}")))?;
    let addr = match (parsed.host(), parsed.port()) {
        (Some(url::Host::Ipv4(ip)), Some(p)) => std::net::SocketAddr::from((ip, p)),
        (Some(url::Host::Ipv6(ip)), Some(p)) => std::net::SocketAddr::from((ip, p)),
        _ => return Err(ClientError::Connect(format!("{url:?} needs an IP address and an explicit port"))),
    };
    let pins: Vec<&str> = cert_sha256.iter().map(String::as_str).collect();
    let cfg = tls::pinned_client_config_any(&pins, web_transport_quinn::ALPN.as_bytes(), tls::transport(opts.idle))?;
    let fut = async {
        let connecting =
            endpoint.connect_with(cfg, addr, "outpost.invalid").map_err(|e| ClientError::Connect(e.to_string()))?;
        let conn = connecting.await.map_err(|e| ClientError::Connect(e.to_string()))?;
        Session::connect(conn, web_transport_quinn::proto::ConnectRequest::new(parsed))
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))
    };
    tokio::time::timeout(opts.timeout, fut)
        .await
        .map_err(|_| ClientError::Connect(format!("no session within {:?}", opts.timeout)))?
}

impl WtClient {
    /// Opens a session to `url` and joins with `ticket`.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        url: &str,
        cert_sha256: &[String],
        ticket: &str,
        opts: &ConnectOptions,
    ) -> Result<WtClient, ClientError> {
        let session = open(endpoint, url, cert_sha256, opts).await?;
        let fut = async {
            let (mut send, mut recv) = session.open_bi().await.map_err(|e| ClientError::Closed(close_reason(&e)))?;
            send.write_all(&Frame::Join { ticket: ticket.to_string() }.encode())
                .await
                .map_err(|e| ClientError::Connect(e.to_string()))?;
            let mut dec = FrameDecoder::new(opts.max_frame);
            let mut buf = vec![0u8; 4096];
            let first = loop {
                if let Some(f) = dec.next_frame().map_err(|e| ClientError::Protocol(e.to_string()))? {
                    break f;
                }
                match recv.read(&mut buf).await {
                    Ok(Some(n)) => dec.push(&buf[..n]),
                    Ok(None) | Err(_) => {
                        let reason = close_reason(&session.closed().await);
                        return Err(match reason.code {
                            Some(code) => ClientError::Refused { code, reason: reason.reason },
                            None => ClientError::Closed(reason),
                        });
                    }
                }
            };
            let joined = crate::joined_from(first)?;
            Ok((send, recv, dec, joined))
        };
        let (send, recv, dec, joined) = tokio::time::timeout(opts.timeout, fut)
            .await
            .map_err(|_| ClientError::Connect(format!("no answer within {:?}", opts.timeout)))??;
        let (tx, events) = mpsc::channel(opts.event_buffer.max(1));
        tokio::spawn(read_stream(session.clone(), recv, dec, tx.clone()));
        tokio::spawn(read_datagrams(session.clone(), tx));
        Ok(WtClient { session, send: tokio::sync::Mutex::new(send), events, joined, _endpoint: endpoint.clone() })
    }

    /// Sends a reliable message to `to` (0 = the room).
    pub async fn send(&self, to: u64, data: &[u8]) -> Result<(), ClientError> {
        self.send_raw(&Frame::Message { peer: to, data: data.to_vec() }.encode()).await
    }

    /// Writes raw bytes on the reliable stream (tests use it to send malformed frames).
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut s = self.send.lock().await;
        match s.write_all(bytes).await {
            Ok(()) => Ok(()),
            Err(_) => Err(ClientError::Closed(
                self.session
                    .close_reason()
                    .map_or(CloseReason { code: None, reason: "stream closed".into() }, |e| close_reason(&e)),
            )),
        }
    }

    /// Sends an unreliable message to `to` (0 = the room) as one WebTransport datagram.
    pub fn send_datagram(&self, to: u64, data: &[u8]) -> Result<(), ClientError> {
        self.session
            .send_datagram(frame::encode_peer(to, data).into())
            .map_err(|e| ClientError::Datagram(e.to_string()))
    }

    /// The next event; `None` once the session is closed and everything was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event within `timeout`.
    pub async fn recv_timeout(&mut self, timeout: std::time::Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.events.recv()).await.ok().flatten()
    }

    /// Waits for the session to close and says why.
    pub async fn closed(&self) -> CloseReason {
        close_reason(&self.session.closed().await)
    }

    /// Closes the session (the player leaves).
    pub fn close(&self) {
        self.session.close(0, b"bye");
    }

    /// The QUIC connection under the session (for stats).
    pub fn connection(&self) -> &quinn::Connection {
        &self.session
    }
}

async fn read_stream(session: Session, mut recv: RecvStream, mut dec: FrameDecoder, tx: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; 4096];
    'read: loop {
        loop {
            match dec.next_frame() {
                Ok(Some(Frame::Message { peer, data })) => {
                    if tx.send(Event::Message { from: peer, data, reliable: true }).await.is_err() {
                        return;
                    }
                }
                Ok(Some(other)) => tracing::debug!(?other, "ignoring an unexpected frame"),
                Ok(None) => break,
                Err(e) => {
                    session.close(e.code().to_u32(), e.to_string().as_bytes());
                    break 'read;
                }
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => dec.push(&buf[..n]),
            Ok(None) | Err(_) => break,
        }
    }
    let reason = close_reason(&session.closed().await);
    let _ = tx.send(Event::Closed(reason)).await;
}

async fn read_datagrams(session: Session, tx: mpsc::Sender<Event>) {
    while let Ok(d) = session.read_datagram().await {
        if let Ok((from, data)) = frame::decode_peer(&d) {
            let _ = tx.try_send(Event::Message { from, data: data.to_vec(), reliable: false });
        }
    }
}
