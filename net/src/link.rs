//! The edge → core link, client side: one QUIC connection to a core region (pinned certificate),
//! one bi stream carrying the update stream, short bi streams for player-state loads. The edge's
//! forwarder and the tests both drive a core through this.

use crate::tls;
use outpost_proto::frame::FrameDecoder;
use outpost_proto::link::{ALPN_CORE, CoreFrame, WireUpdate};
use std::net::SocketAddr;
use std::time::Duration;

/// Largest frame the link accepts from a core.
const MAX_FRAME: usize = 16 << 20;

/// Why the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Connecting or the TLS handshake failed (wrong pin included).
    #[error("connecting to the core: {0}")]
    Connect(String),
    /// The core refused the link or a batch, with its reason.
    #[error("the core refused: {0}")]
    Refused(String),
    /// The stream broke or the core sent something unexpected.
    #[error("link: {0}")]
    Protocol(String),
}

fn proto(e: impl std::fmt::Display) -> LinkError {
    LinkError::Protocol(e.to_string())
}

/// How a [`FrameStream`] failed. Typed, so each end can tell a peer that went away (nothing to
/// refuse) from a peer that sent something wrong (refuse it, with this message).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes were not a frame, or the frame was not one this side knows.
    #[error("{0}")]
    Malformed(String),
    /// Reading or writing the stream failed: the peer or its connection went away.
    #[error("stream: {0}")]
    Stream(String),
}

/// One side of a bi stream speaking link frames: the edge's end of a link and the core's end
/// share it, so both read the framing the same way.
pub struct FrameStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    /// Read buffer, kept for the stream's life: a link carries batches of tens of KiB, which one
    /// read into this takes whole, where reading quinn's chunks one by one measured slower.
    buf: Vec<u8>,
}

impl FrameStream {
    /// Frames over `send`/`recv`, refusing any frame over `max_frame` bytes before buffering it.
    pub fn new(send: quinn::SendStream, recv: quinn::RecvStream, max_frame: usize) -> Self {
        FrameStream { send, recv, decoder: FrameDecoder::new(max_frame), buf: vec![0u8; 64 << 10] }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream.
    pub async fn read(&mut self) -> Result<Option<CoreFrame>, FrameError> {
        loop {
            if let Some(body) = self.decoder.next_body().map_err(|e| FrameError::Malformed(e.to_string()))? {
                return CoreFrame::decode_body(&body).map(Some).map_err(|e| FrameError::Malformed(e.to_string()));
            }
            match self.recv.read(&mut self.buf).await {
                Ok(Some(n)) => self.decoder.push(&self.buf[..n]),
                Ok(None) => return Ok(None),
                Err(e) => return Err(FrameError::Stream(e.to_string())),
            }
        }
    }

    /// Sends one frame.
    pub async fn write(&mut self, f: &CoreFrame) -> Result<(), FrameError> {
        self.write_raw(&f.encode()).await
    }

    /// Sends bytes as they are (tests use it to send malformed frames).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.send.write_all(bytes).await.map_err(|e| FrameError::Stream(e.to_string()))
    }

    /// Finishes the sending side; whatever was written is still delivered.
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

/// The edge's end of a link stream: a refusal from the core, or the core finishing the stream,
/// is an error here, since the edge always waits for an answer.
struct Framed(FrameStream);

impl Framed {
    fn new((send, recv): (quinn::SendStream, quinn::RecvStream)) -> Self {
        Framed(FrameStream::new(send, recv, MAX_FRAME))
    }

    async fn write(&mut self, f: &CoreFrame) -> Result<(), LinkError> {
        self.0.write(f).await.map_err(proto)
    }

    async fn read(&mut self) -> Result<CoreFrame, LinkError> {
        match self.0.read().await.map_err(proto)? {
            Some(CoreFrame::Refused { reason }) => Err(LinkError::Refused(reason)),
            Some(frame) => Ok(frame),
            None => Err(LinkError::Protocol("the core closed the stream".into())),
        }
    }
}

/// A connected, authenticated link.
pub struct CoreLink {
    conn: quinn::Connection,
    updates: Framed,
    /// The stream's high-water mark at the core when the link opened: resend from here + 1.
    pub high_water: u64,
    _endpoint: quinn::Endpoint,
}

impl CoreLink {
    /// Connects, pins `cert_sha256`, says hello, and returns with the core's high-water mark for
    /// `stream`.
    pub async fn connect(
        addr: SocketAddr,
        cert_sha256: &str,
        token: &str,
        edge: &str,
        stream: &str,
        timeout: Duration,
    ) -> Result<CoreLink, LinkError> {
        let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(proto)?;
        let endpoint = crate::udp::quic_endpoint(bind, None).map_err(|e| LinkError::Connect(e.to_string()))?;
        let cfg = tls::pinned_client_config(cert_sha256, ALPN_CORE, tls::transport(Duration::from_secs(30)))
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        let open = async {
            let conn = endpoint
                .connect_with(cfg, addr, "outpost-core")
                .map_err(|e| LinkError::Connect(e.to_string()))?
                .await
                .map_err(|e| LinkError::Connect(e.to_string()))?;
            let mut updates = Framed::new(conn.open_bi().await.map_err(proto)?);
            let hello = CoreFrame::Hello { token: token.into(), edge: edge.into(), stream: stream.into() };
            updates.write(&hello).await?;
            match updates.read().await? {
                CoreFrame::Welcome { high_water } => Ok((conn, updates, high_water)),
                other => Err(LinkError::Protocol(format!("expected Welcome, got {other:?}"))),
            }
        };
        let (conn, updates, high_water) =
            tokio::time::timeout(timeout, open).await.map_err(|_| LinkError::Connect("timed out".into()))??;
        Ok(CoreLink { conn, updates, high_water, _endpoint: endpoint })
    }

    /// Sends one batch (sequence numbers `first_seq..`) and waits for its ack; returns the
    /// sequence number now durable at the core.
    pub async fn send_batch(&mut self, first_seq: u64, updates: Vec<WireUpdate>) -> Result<u64, LinkError> {
        self.updates.write(&CoreFrame::Batch { first_seq, updates }).await?;
        match self.updates.read().await? {
            CoreFrame::Ack { up_to } => Ok(up_to),
            other => Err(LinkError::Protocol(format!("expected Ack, got {other:?}"))),
        }
    }

    /// Sends raw bytes on the update stream (tests use it to send malformed frames).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.updates.0.write_raw(bytes).await.map_err(proto)
    }

    /// Reads the next frame on the update stream.
    pub async fn next_frame(&mut self) -> Result<CoreFrame, LinkError> {
        self.updates.read().await
    }

    /// One question on a stream of its own, and the core's answer.
    async fn ask(&self, question: CoreFrame) -> Result<CoreFrame, LinkError> {
        let mut s = Framed::new(self.conn.open_bi().await.map_err(proto)?);
        s.write(&question).await?;
        s.0.finish();
        s.read().await
    }

    /// Reads one key (a player's saved state) on its own stream.
    pub async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, LinkError> {
        match self.ask(CoreFrame::Load { key: key.into() }).await? {
            CoreFrame::Value { value } => Ok(value),
            other => Err(LinkError::Protocol(format!("expected Value, got {other:?}"))),
        }
    }

    /// How far the core has `stream` (another edge's outbox), on its own stream.
    pub async fn position(&self, stream: &str) -> Result<u64, LinkError> {
        match self.ask(CoreFrame::Position { stream: stream.into() }).await? {
            CoreFrame::Positioned { high_water } => Ok(high_water),
            other => Err(LinkError::Protocol(format!("expected Positioned, got {other:?}"))),
        }
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }
}
