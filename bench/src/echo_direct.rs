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
use outpost_net::udp::proto_loop::{self, Dirty, READS_PER_TURN, Receiver, Timers};
use quinn::udp::{RecvMeta, UdpSockRef, UdpSocketState};
use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint, Event};
use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    timers: Timers,
    /// Connections that received something or fired a timer this turn.
    dirty: Dirty,
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
        timers: Timers::default(),
        dirty: Dirty::default(),
        out: Vec::with_capacity(64 * 1024),
        max_gso,
        echoed: 0,
    };
    let mut rx = Receiver::default();
    while !stop.load(Ordering::Relaxed) {
        s.fire_timers(Instant::now());
        s.drive_dirty(Instant::now());
        on_turn(s.echoed);
        let mut fds = [libc::pollfd { fd: s.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        proto_loop::wait(&mut fds, s.timers.wait(Instant::now(), MAX_WAIT))?;
        if fds[0].revents != 0 {
            s.read_all(&mut rx)?;
        }
    }
    Ok(())
}

/// The longest the loop sleeps without a timer due, so that `stop` is seen.
const MAX_WAIT: Duration = Duration::from_millis(100);

impl Server {
    fn fire_timers(&mut self, now: Instant) {
        while let Some(h) = self.timers.pop_due(now) {
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
        for ch in self.dirty.take() {
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
            self.timers.rearm(ch.0, &mut c.armed, next);
            if c.conn.is_drained() {
                self.conns.remove(&ch);
            }
        }
    }

    /// Reads the socket until it is empty or [`READS_PER_TURN`] batches were read, handing each
    /// packet to the endpoint.
    fn read_all(&mut self, rx: &mut Receiver) -> anyhow::Result<()> {
        for _ in 0..READS_PER_TURN {
            let more = rx.recv(&self.state, &self.socket)?;
            let now = Instant::now();
            for (m, packet) in rx.packets() {
                self.handle_packet(now, &m, packet);
            }
            if !more {
                return Ok(());
            }
        }
        Ok(())
    }

    fn handle_packet(&mut self, now: Instant, m: &RecvMeta, packet: BytesMut) {
        match self.endpoint.handle(now, m.addr, m.dst_ip, m.ecn.map(proto_loop::proto_ecn), packet, &mut self.out) {
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

fn send(state: &UdpSocketState, socket: &UdpSocket, t: &quinn_proto::Transmit, buf: &[u8]) {
    // A full socket buffer drops the packet, as a router would; QUIC's loss recovery resends.
    let _ = state.send(UdpSockRef::from(socket), &proto_loop::udp_transmit(t, buf));
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_net::tls;

    /// Garbage from the network is dropped, and a real quinn client is then echoed by the same
    /// server: its datagrams come back byte for byte.
    #[test]
    fn echoes_a_quinn_client_after_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let cert = tls::NodeCert::load_or_generate(dir.path(), "echo").unwrap();
        let cfg = tls::server_config(&cert, crate::echo_server::ALPN_ECHO, quinn::TransportConfig::default()).unwrap();
        let socket = outpost_net::udp::bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
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
