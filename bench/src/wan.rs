//! A bot-side UDP socket that holds every outgoing datagram for a fixed time, so `outpost bench
//! --path-delay-ms` can load a node over a path with a real round-trip time on a machine whose
//! only network is loopback (no `netem` here).
//!
//! Why it matters: QUIC's ACK pacing depends on the RTT. quinn never asks a peer to delay its
//! acknowledgements longer than `max(RTT, 25 ms)`, so on loopback (RTT well under 1 ms) a player
//! sending at 20 Hz still gets an ACK-only packet for most datagrams whatever the node asks for,
//! while over a path like a real player's (tens of milliseconds) the acknowledgements can ride on
//! the next game datagram. Delaying on the bots' side shifts the whole round trip onto the bots'
//! CPU: the node (or the echo baseline) sees a player that is `delay` away and does exactly the
//! work it would for one, which is what the CPU comparison measures.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Datagrams in flight on the emulated path before it drops like a full router queue would
/// (1000 bots × 20 Hz × 100 ms is 2,000; this leaves room for bursts and ACKs).
const QUEUE_DATAGRAMS: usize = 32_768;

/// A socket whose sends arrive `delay` late; receives are untouched.
pub struct DelayedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    delay: Duration,
    queue: mpsc::Sender<(Instant, SocketAddr, Vec<u8>)>,
    /// Datagrams dropped because the path queue was full (seen by QUIC as loss).
    pub dropped: Arc<AtomicU64>,
}

impl fmt::Debug for DelayedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedSocket").field("inner", &self.inner).finish()
    }
}

/// A QUIC client endpoint on `bind` whose outgoing datagrams are held for `delay`. Must be called
/// inside a tokio runtime (the path's sender is a task on it).
pub fn delayed_client_endpoint(bind: SocketAddr, delay: Duration) -> io::Result<quinn::Endpoint> {
    let (socket, runtime) = delayed_socket(bind, delay, QUEUE_DATAGRAMS)?;
    quinn::Endpoint::new_with_abstract_socket(quinn::EndpointConfig::default(), None, socket, runtime)
}

fn delayed_socket(
    bind: SocketAddr,
    delay: Duration,
    queue: usize,
) -> io::Result<(Arc<DelayedSocket>, Arc<dyn quinn::Runtime>)> {
    let socket = std::net::UdpSocket::bind(bind)?;
    let socket2 = socket2::SockRef::from(&socket);
    let _ = socket2.set_recv_buffer_size(outpost_client::CLIENT_UDP_BUFFER_BYTES);
    let _ = socket2.set_send_buffer_size(outpost_client::CLIENT_UDP_BUFFER_BYTES);
    let sender = tokio::net::UdpSocket::from_std({
        let s = socket.try_clone()?;
        s.set_nonblocking(true)?;
        s
    })?;
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let inner = runtime.wrap_udp_socket(socket)?;
    let (tx, rx) = mpsc::channel(queue);
    tokio::spawn(deliver(sender, rx));
    Ok((Arc::new(DelayedSocket { inner, delay, queue: tx, dropped: Arc::default() }), runtime))
}

/// Sends each datagram when it is due. The delay is constant, so arrival order is due order and
/// one FIFO is enough. Ends when the endpoint (the only sender) is gone.
async fn deliver(socket: tokio::net::UdpSocket, mut rx: mpsc::Receiver<(Instant, SocketAddr, Vec<u8>)>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        for (due, to, bytes) in batch.drain(..) {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            // A send error here is a lost datagram on the path; QUIC recovers as it would.
            let _ = socket.send_to(&bytes, to).await;
        }
    }
}

/// Always writable: sends only enqueue (a full queue drops, like a congested path).
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for DelayedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        let due = Instant::now() + self.delay;
        // `max_transmit_segments` is 1, so quinn never hands over a GSO batch; split anyway if
        // it ever does, so nothing is silently merged.
        let size = t.segment_size.unwrap_or(t.contents.len()).max(1);
        for chunk in t.contents.chunks(size) {
            if self.queue.try_send((due, t.destination, chunk.to_vec())).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmit(to: SocketAddr, contents: &[u8]) -> Transmit<'_> {
        Transmit { destination: to, ecn: None, contents, segment_size: None, src_ip: None }
    }

    #[tokio::test]
    async fn datagrams_arrive_no_sooner_than_the_delay_and_a_full_path_drops_and_counts() {
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = peer.local_addr().unwrap();
        let delay = Duration::from_millis(40);
        let (socket, _rt) = delayed_socket("127.0.0.1:0".parse().unwrap(), delay, 2).unwrap();
        let sent = Instant::now();
        for i in 0..5u8 {
            socket.try_send(&transmit(to, &[i])).unwrap();
        }
        assert_eq!(socket.dropped.load(Ordering::Relaxed), 3, "a queue of 2 keeps 2 and counts the rest");
        let mut buf = [0u8; 16];
        for want in 0..2u8 {
            let n = peer.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[want], "in order");
            assert!(sent.elapsed() >= delay, "arrived after {:?}", sent.elapsed());
        }
        // A GSO-style batch is split into its datagrams, not merged.
        let batch = [1u8, 2, 3, 4];
        let t = Transmit { segment_size: Some(2), ..transmit(to, &batch) };
        socket.try_send(&t).unwrap();
        for want in [[1u8, 2], [3, 4]] {
            let n = peer.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &want);
        }
    }
}
