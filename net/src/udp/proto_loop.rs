//! The pieces every loop that drives `quinn-proto` itself needs, with no async runtime: reading
//! the socket in batches, one timer per connection, ECN and transmit conversions between
//! quinn-proto and quinn-udp, and waiting on file descriptors.
//!
//! It holds no connection state and decides nothing: the node's player transport and the
//! `echo-server --driver proto` baseline each own their connections and their loop.

use bytes::BytesMut;
use quinn::udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use std::collections::BTreeSet;
use std::io::{self, IoSliceMut};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Packets read per `recvmmsg`, as quinn's own endpoint driver does.
const RECV_BATCH: usize = 32;
/// Largest UDP payload read into one buffer (with GRO, several packets of one peer).
const RECV_BUF: usize = 64 * 1024;
/// `recvmmsg` calls per turn of a loop at most: a flood cannot keep a loop reading while its
/// timers wait and its other work queues up.
pub const READS_PER_TURN: usize = 16;

/// Reads packets from a socket in batches into buffers it reuses.
pub struct Receiver {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    packets: Vec<(RecvMeta, BytesMut)>,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver {
            bufs: (0..RECV_BATCH).map(|_| vec![0u8; RECV_BUF]).collect(),
            meta: vec![RecvMeta::default(); RECV_BATCH],
            packets: Vec::with_capacity(RECV_BATCH),
        }
    }
}

impl Receiver {
    /// One `recvmmsg` on a non-blocking socket; the packets read are in [`Receiver::packets`].
    /// Returns whether the socket may have more: a batch that did not fill its buffers emptied
    /// it, so the caller need not pay a system call to hear "try again".
    pub fn recv(&mut self, state: &UdpSocketState, socket: &UdpSocket) -> io::Result<bool> {
        let mut slices: Vec<IoSliceMut<'_>> = self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = match state.recv(UdpSockRef::from(socket), &mut slices, &mut self.meta) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Ok(false),
            // An ICMP error for an earlier send to some peer: that peer's problem, not the
            // socket's, as quinn's own endpoint driver treats it.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(true),
            Err(e) => return Err(e),
        };
        drop(slices);
        for (m, buf) in self.meta.iter().zip(self.bufs.iter()).take(n) {
            let mut data = BytesMut::from(&buf[..m.len]);
            // With GRO one buffer holds several packets of one peer, `stride` bytes apart.
            while !data.is_empty() {
                let packet = data.split_to(m.stride.clamp(1, data.len()));
                self.packets.push((*m, packet));
            }
        }
        Ok(n == RECV_BATCH)
    }

    /// The packets of the last [`Receiver::recv`], in order.
    pub fn packets(&mut self) -> std::vec::Drain<'_, (RecvMeta, BytesMut)> {
        self.packets.drain(..)
    }
}

/// One deadline per connection (by its handle's index), earliest first. A set rather than a
/// heap, so a re-armed timer replaces its old entry and the set never holds more than the
/// connections. (Leaving an entry in place when a deadline moves later, to fire early and be
/// re-armed then, saves the tree its two operations per packet but costs the loop a wake-up for
/// each early entry: measured, that was the dearer, BENCHMARKS.md session 15.)
#[derive(Default)]
pub struct Timers {
    set: BTreeSet<(Instant, usize)>,
}

impl Timers {
    /// Moves connection `id`'s deadline from `*armed` to `next`.
    pub fn rearm(&mut self, id: usize, armed: &mut Option<Instant>, next: Option<Instant>) {
        if next == *armed {
            return;
        }
        if let Some(old) = armed.take() {
            self.set.remove(&(old, id));
        }
        if let Some(at) = next {
            self.set.insert((at, id));
            *armed = Some(at);
        }
    }

    /// The next connection whose entry is at or before `now`, taken out of the set.
    pub fn pop_due(&mut self, now: Instant) -> Option<usize> {
        let &(at, id) = self.set.first()?;
        (at <= now).then(|| {
            self.set.pop_first();
            id
        })
    }

    /// How long until the earliest entry, at most `max`.
    pub fn wait(&self, now: Instant, max: Duration) -> Duration {
        self.set.first().map_or(max, |(at, _)| at.saturating_duration_since(now).min(max))
    }
}

/// Connections with something to do this turn, each driven once however often it was marked.
#[derive(Default)]
pub struct Dirty(Vec<quinn_proto::ConnectionHandle>);

impl Dirty {
    /// Marks a connection.
    pub fn push(&mut self, ch: quinn_proto::ConnectionHandle) {
        self.0.push(ch);
    }

    /// The marked connections, each once, in handle order; none are marked afterwards.
    pub fn take(&mut self) -> Vec<quinn_proto::ConnectionHandle> {
        self.0.sort_unstable();
        self.0.dedup();
        std::mem::take(&mut self.0)
    }
}

/// quinn-udp's ECN codepoint as quinn-proto's.
pub fn proto_ecn(e: quinn::udp::EcnCodepoint) -> quinn_proto::EcnCodepoint {
    match e {
        quinn::udp::EcnCodepoint::Ect0 => quinn_proto::EcnCodepoint::Ect0,
        quinn::udp::EcnCodepoint::Ect1 => quinn_proto::EcnCodepoint::Ect1,
        quinn::udp::EcnCodepoint::Ce => quinn_proto::EcnCodepoint::Ce,
    }
}

/// quinn-proto's transmit of the first `t.size` bytes of `buf`, as quinn-udp sends it.
pub fn udp_transmit<'a>(t: &quinn_proto::Transmit, buf: &'a [u8]) -> Transmit<'a> {
    Transmit {
        destination: t.destination,
        ecn: t.ecn.map(|e| match e {
            quinn_proto::EcnCodepoint::Ect0 => quinn::udp::EcnCodepoint::Ect0,
            quinn_proto::EcnCodepoint::Ect1 => quinn::udp::EcnCodepoint::Ect1,
            quinn_proto::EcnCodepoint::Ce => quinn::udp::EcnCodepoint::Ce,
        }),
        contents: &buf[..t.size],
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    }
}

/// Waits until one of `fds` is ready for what it asks or `wait` passes; their `revents` say
/// which. A signal ends the wait early, as if nothing were ready.
pub fn wait(fds: &mut [libc::pollfd], wait: Duration) -> io::Result<()> {
    let ts = libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos() as _ };
    // SAFETY: `fds` are valid pollfds, the timespec is valid, no signal mask; ppoll only reads
    // them and writes `revents`.
    let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        fds.iter_mut().for_each(|f| f.revents = 0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_order_and_a_rearmed_one_only_at_its_new_time() {
        let ms = |n| Duration::from_millis(n);
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (mut a, mut b) = (None, None);
        timers.rearm(1, &mut a, Some(t0 + ms(30)));
        timers.rearm(2, &mut b, Some(t0 + ms(10)));
        timers.rearm(1, &mut a, Some(t0 + ms(5)));
        timers.rearm(2, &mut b, Some(t0 + ms(20)));
        assert_eq!(timers.wait(t0, Duration::from_secs(1)), ms(5));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + ms(15)), Some(1));
        assert_eq!(timers.pop_due(t0 + ms(15)), None, "2 moved from 10 to 20 ms");
        assert_eq!(timers.pop_due(t0 + ms(40)), Some(2));
        assert_eq!(timers.pop_due(t0 + ms(40)), None, "replaced entries are gone");
        b = None;
        timers.rearm(2, &mut b, Some(t0 + ms(50)));
        timers.rearm(2, &mut b, None);
        assert_eq!(timers.wait(t0, Duration::from_secs(1)), Duration::from_secs(1));
    }

    #[test]
    fn a_gro_buffer_is_split_into_its_packets_and_garbage_is_just_packets() {
        let rx_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx_sock.set_nonblocking(true).unwrap();
        let state = UdpSocketState::new((&rx_sock).into()).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rx = Receiver::default();
        assert!(!rx.recv(&state, &rx_sock).unwrap(), "nothing to read yet");
        for p in [&b"one"[..], b"two", b""] {
            tx.send_to(p, rx_sock.local_addr().unwrap()).unwrap();
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 2 && Instant::now() < deadline {
            let mut fds =
                [libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&rx_sock), events: libc::POLLIN, revents: 0 }];
            wait(&mut fds, Duration::from_millis(100)).unwrap();
            while {
                let more = rx.recv(&state, &rx_sock).unwrap();
                got.extend(rx.packets().map(|(m, p)| (m.addr, p.to_vec())));
                more
            } {}
        }
        let from = tx.local_addr().unwrap();
        assert_eq!(got, vec![(from, b"one".to_vec()), (from, b"two".to_vec())], "an empty datagram yields no packet");
    }
}
