//! A quinn socket whose sends leave in `sendmmsg` batches, for endpoints driven by quinn's own
//! async connections (the edge's WebTransport port).
//!
//! quinn's async endpoint sends each connection's packets with their own `sendmsg`; on a game
//! node that is one system call per player per tick, a quarter of the WebTransport endpoint's CPU
//! on the arena benchmark. [`BatchingSocket`] queues every transmit into a [`PacketBatch`] and a
//! flusher task sends the batch once the runtime has run the other tasks woken with it: a room's
//! broadcast wakes eight connection drivers, and their eight packets leave in one call. A full
//! batch is flushed at once; a kernel buffer that is full makes `try_send` say "would block", and
//! quinn waits for the socket to be writable as it would without us. Receiving is quinn's own.

use super::batch::{PacketBatch, SendStats};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;

/// Packets queued at most before a send must flush first.
const MAX_QUEUED: usize = 1024;

/// See the module docs.
pub struct BatchingSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    raw: std::net::UdpSocket,
    batch: Mutex<PacketBatch>,
    queued: Notify,
}

impl fmt::Debug for BatchingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchingSocket").field("inner", &self.inner).finish()
    }
}

impl BatchingSocket {
    /// Wraps `socket` (bound, with its buffers set) for the current tokio runtime and starts its
    /// flusher, which ends when the endpoint drops the socket.
    pub fn new(socket: std::net::UdpSocket, stats: Arc<SendStats>) -> io::Result<Arc<BatchingSocket>> {
        let v6 = socket.local_addr()?.is_ipv6();
        let raw = socket.try_clone()?;
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)?;
        let me = Arc::new(BatchingSocket {
            inner,
            raw,
            batch: Mutex::new(PacketBatch::new(v6, MAX_QUEUED, stats)),
            queued: Notify::new(),
        });
        tokio::spawn(flusher(me.clone()));
        Ok(me)
    }

    fn batch(&self) -> std::sync::MutexGuard<'_, PacketBatch> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn flusher(s: Arc<BatchingSocket>) {
    loop {
        if !s.batch().is_pending() {
            let queued = s.queued.notified();
            if tokio::time::timeout(Duration::from_secs(1), queued).await.is_err() {
                // Only this task still holds the socket: the endpoint is gone.
                if Arc::strong_count(&s) == 1 {
                    return;
                }
                continue;
            }
            // Let the other tasks woken with this send add theirs before the call.
            tokio::task::yield_now().await;
        }
        if !s.batch().flush(&s.raw) {
            // The kernel's buffer is full: try again shortly (quinn's own sends wait likewise).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl AsyncUdpSocket for BatchingSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let mut batch = self.batch();
        if batch.is_full() && !batch.flush(&self.raw) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let first = !batch.is_pending();
        batch.push(transmit);
        drop(batch);
        if first {
            self.queued.notify_one();
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A QUIC server endpoint on `socket` whose sends are batched ([`BatchingSocket`]).
pub fn batching_endpoint(
    socket: std::net::UdpSocket,
    server: quinn::ServerConfig,
    stats: Arc<SendStats>,
) -> io::Result<quinn::Endpoint> {
    let socket = BatchingSocket::new(socket, stats)?;
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}
