//! `outpost echo-server --driver proto`: the same datagram echo as the quinn baseline, driven
//! straight on `quinn-proto`'s state machines from one thread, with no async runtime, no task
//! per connection and no channel between the endpoint and its connections.
//!
//! It answers one question: how much of a quinn server's CPU per datagram is quinn's and tokio's
//! driving (tasks, wake-ups, the endpoint's channels, a lock per connection) rather than QUIC
//! itself (decrypting, framing, loss recovery, the kernel). That is the share a node could save
//! by driving `quinn-proto` itself, and a part that no setting of quinn's reaches.

use anyhow::Context as _;
use bytes::BytesMut;
use quinn::udp::{RecvMeta, Transmit as UdpTransmit, UdpSockRef, UdpSocketState};
use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint, Event};
use std::collections::{BTreeSet, HashMap};
use std::io::IoSliceMut;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Packets read per `recvmmsg`, as quinn's own endpoint driver does.
const RECV_BATCH: usize = 32;
/// Largest UDP payload read into one buffer (with GRO, several packets of one peer).
const RECV_BUF: usize = 64 * 1024;
/// `recvmmsg` calls per turn of the loop at most: a flood cannot keep the loop reading forever
/// while timers wait and the list of connections to drive grows.
const READS_PER_TURN: usize = 16;

struct Conn {
    conn: quinn_proto::Connection,
    /// The deadline this connection holds in the timer set, so it can be replaced exactly.
    armed: Option<Instant>,
}

/// The server's state between turns of its loop.
struct Server {
    socket: UdpSocket,
    state: UdpSocketState,
    endpoint: Endpoint,
    conns: HashMap<ConnectionHandle, Conn>,
    /// One entry per connection with a timer: a set rather than a heap, so a re-armed timer
    /// replaces its old entry and the set never holds more than the connections.
    timers: BTreeSet<(Instant, usize)>,
    /// Connections that received something or fired a timer this turn.
    dirty: Vec<ConnectionHandle>,
    out: Vec<u8>,
    max_gso: usize,
    echoed: u64,
}

/// Serves until `stop` is set (checked at least every 100 ms), calling `on_turn` with the count
/// of datagrams echoed after every turn of the loop.
pub fn serve(
    socket: UdpSocket,
    server: quinn::ServerConfig,
    stop: &AtomicBool,
    mut on_turn: impl FnMut(u64),
) -> anyhow::Result<()> {
    socket.set_nonblocking(true)?;
    let state = UdpSocketState::new(UdpSockRef::from(&socket)).context("UDP socket state")?;
    let max_gso = state.max_gso_segments().max(1);
    let endpoint = Endpoint::new(Arc::new(quinn::EndpointConfig::default()), Some(Arc::new(server)), true, None);
    let mut s = Server {
        socket,
        state,
        endpoint,
        conns: HashMap::new(),
        timers: BTreeSet::new(),
        dirty: Vec::new(),
        out: Vec::with_capacity(64 * 1024),
        max_gso,
        echoed: 0,
    };
    let mut bufs: Vec<Vec<u8>> = (0..RECV_BATCH).map(|_| vec![0u8; RECV_BUF]).collect();
    let mut meta = vec![RecvMeta::default(); RECV_BATCH];
    while !stop.load(Ordering::Relaxed) {
        s.fire_timers(Instant::now());
        s.drive_dirty(Instant::now());
        on_turn(s.echoed);
        let wait = s.timers.first().map_or(MAX_WAIT, |(at, _)| at.saturating_duration_since(Instant::now()));
        if poll_readable(&s.socket, wait.min(MAX_WAIT))? {
            s.read_all(&mut bufs, &mut meta)?;
        }
    }
    Ok(())
}

/// The longest the loop sleeps without a timer due, so that `stop` is seen.
const MAX_WAIT: Duration = Duration::from_millis(100);

impl Server {
    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, h)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let ch = ConnectionHandle(h);
            if let Some(c) = self.conns.get_mut(&ch) {
                c.armed = None;
                c.conn.handle_timeout(now);
                self.dirty.push(ch);
            }
        }
    }

    /// Runs every dirty connection until it has nothing more to do: its endpoint events, its
    /// application events (echoing each datagram), its packets out, and its next timer.
    fn drive_dirty(&mut self, now: Instant) {
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for ch in std::mem::take(&mut self.dirty) {
            let Some(c) = self.conns.get_mut(&ch) else { continue };
            loop {
                let mut progressed = false;
                while let Some(ev) = c.conn.poll_endpoint_events() {
                    progressed = true;
                    if let Some(back) = self.endpoint.handle_event(ch, ev) {
                        c.conn.handle_event(back);
                    }
                }
                while let Some(ev) = c.conn.poll() {
                    progressed = true;
                    if let Event::DatagramReceived = ev {
                        while let Some(d) = c.conn.datagrams().recv() {
                            let mut dg = c.conn.datagrams();
                            if dg.send_buffer_space() >= d.len() && dg.send(d, true).is_ok() {
                                self.echoed += 1;
                            }
                        }
                    }
                }
                while let Some(t) = c.conn.poll_transmit(now, self.max_gso, &mut self.out) {
                    progressed = true;
                    send(&self.state, &self.socket, &t, &self.out);
                    self.out.clear();
                }
                if !progressed {
                    break;
                }
            }
            let next = if c.conn.is_drained() { None } else { c.conn.poll_timeout() };
            if next != c.armed {
                if let Some(old) = c.armed.take() {
                    self.timers.remove(&(old, ch.0));
                }
                if let Some(at) = next {
                    self.timers.insert((at, ch.0));
                    c.armed = Some(at);
                }
            }
            if c.conn.is_drained() {
                self.conns.remove(&ch);
            }
        }
    }

    /// Reads the socket until it is empty or [`READS_PER_TURN`] batches were read, handing each
    /// packet to the endpoint.
    fn read_all(&mut self, bufs: &mut [Vec<u8>], meta: &mut [RecvMeta]) -> anyhow::Result<()> {
        for _ in 0..READS_PER_TURN {
            let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let n = match self.state.recv(UdpSockRef::from(&self.socket), &mut slices, meta) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
                // An ICMP error for an earlier send to some peer: that peer's problem, not the
                // socket's, as quinn's own endpoint driver treats it.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
                Err(e) => return Err(e.into()),
            };
            drop(slices);
            let now = Instant::now();
            for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
                let mut data = BytesMut::from(&buf[..m.len]);
                // With GRO one buffer holds several packets of one peer, `stride` bytes apart.
                while !data.is_empty() {
                    let packet = data.split_to(m.stride.clamp(1, data.len()));
                    self.handle_packet(now, m, packet);
                }
            }
        }
        Ok(())
    }

    fn handle_packet(&mut self, now: Instant, m: &RecvMeta, packet: BytesMut) {
        match self.endpoint.handle(now, m.addr, m.dst_ip, m.ecn.map(ecn), packet, &mut self.out) {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.conn.handle_event(ev);
                    self.dirty.push(ch);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                match self.endpoint.accept(incoming, now, &mut self.out, None) {
                    Ok((ch, conn)) => {
                        self.conns.insert(ch, Conn { conn, armed: None });
                        self.dirty.push(ch);
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            send(&self.state, &self.socket, &t, &self.out);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => send(&self.state, &self.socket, &t, &self.out),
            None => {}
        }
        self.out.clear();
    }
}

fn ecn(e: quinn::udp::EcnCodepoint) -> quinn_proto::EcnCodepoint {
    match e {
        quinn::udp::EcnCodepoint::Ect0 => quinn_proto::EcnCodepoint::Ect0,
        quinn::udp::EcnCodepoint::Ect1 => quinn_proto::EcnCodepoint::Ect1,
        quinn::udp::EcnCodepoint::Ce => quinn_proto::EcnCodepoint::Ce,
    }
}

fn send(state: &UdpSocketState, socket: &UdpSocket, t: &quinn_proto::Transmit, buf: &[u8]) {
    let tx = UdpTransmit {
        destination: t.destination,
        ecn: t.ecn.map(|e| match e {
            quinn_proto::EcnCodepoint::Ect0 => quinn::udp::EcnCodepoint::Ect0,
            quinn_proto::EcnCodepoint::Ect1 => quinn::udp::EcnCodepoint::Ect1,
            quinn_proto::EcnCodepoint::Ce => quinn::udp::EcnCodepoint::Ce,
        }),
        contents: &buf[..t.size],
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    };
    // A full socket buffer drops the packet, as a router would; QUIC's loss recovery resends.
    let _ = state.send(UdpSockRef::from(socket), &tx);
}

/// Waits until the socket is readable or `wait` passes; `true` when readable.
fn poll_readable(socket: &UdpSocket, wait: Duration) -> std::io::Result<bool> {
    let mut fd = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ts = libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos() as _ };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask; ppoll only reads them and
    // writes `revents`.
    let rc = unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    Ok(rc > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_client::tls;

    /// Garbage from the network is dropped, and a real quinn client is then echoed by the same
    /// server: its datagrams come back byte for byte.
    #[test]
    fn echoes_a_quinn_client_after_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let cert = tls::NodeCert::load_or_generate(dir.path(), "echo").unwrap();
        let cfg = tls::server_config(&cert, crate::echo_server::ALPN_ECHO, quinn::TransportConfig::default()).unwrap();
        let socket = outpost_client::bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let server = {
            let (stop, echoed) = (stop.clone(), echoed.clone());
            std::thread::spawn(move || serve(socket, cfg, &stop, |n| echoed.store(n, Ordering::Relaxed)))
        };

        let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut long_header = vec![0xc0u8, 0, 0, 0, 1, 8];
        long_header.extend([0xffu8; 1200]);
        for packet in [vec![], vec![0u8; 1], vec![0x40u8; 40], vec![0xffu8; 1500], long_header] {
            junk.send_to(&packet, addr).unwrap();
        }

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let endpoint = outpost_client::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
            let client = tls::pinned_client_config(
                &cert.sha256(),
                crate::echo_server::ALPN_ECHO,
                quinn::TransportConfig::default(),
            )
            .unwrap();
            let conn = endpoint.connect_with(client, addr, "outpost.invalid").unwrap().await.unwrap();
            for i in 0..3u8 {
                let data = bytes::Bytes::from(vec![i; 100 + i as usize]);
                conn.send_datagram(data.clone()).unwrap();
                let back = tokio::time::timeout(Duration::from_secs(10), conn.read_datagram()).await.unwrap().unwrap();
                assert_eq!(back, data);
            }
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
        });
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap().unwrap();
        assert_eq!(echoed.load(Ordering::Relaxed), 3);
    }
}
