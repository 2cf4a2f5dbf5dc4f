//! Packets of many QUIC connections sent with one `sendmmsg`.
//!
//! A game node is the opposite of a bulk sender: thousands of connections, one small packet each
//! per tick, and a room's broadcast gives eight of them something to say at once. The node's
//! player transport ([`PacketBatch`]'s user) copies every packet of a turn of its loop into one
//! batch and sends the batch at the end of the turn, so a whole broadcast (and every other
//! connection's packets of that turn) leaves in one system call per [`CHUNK`] packets. On the
//! arena benchmark this cut the node's CPU per player-tick by 5–8 % (BENCHMARKS.md, session 11).
//!
//! Per packet, the ECN bits and the source address quinn-proto asks for go along as control
//! messages, as quinn's own socket code would send them. The batch is bounded: when the kernel's
//! send buffer is full, what is left stays queued for the next flush (the caller waits for the
//! socket to be writable), and a packet pushed into a batch already at its bound is dropped and
//! counted, as a router drops on a full queue; QUIC's loss recovery resends what matters.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quinn::udp::Transmit;

/// Messages per `sendmmsg` call; Linux caps a call at 1024 (`UIO_MAXIOV`).
const CHUNK: usize = 64;

/// Room for an ECN and a packet-info control message (`CMSG_SPACE(4) + CMSG_SPACE(20)` = 56).
type CmsgBuf = [u64; 8];

/// What the batch has done, for the node's `/metrics`.
#[derive(Debug, Default)]
pub struct SendStats {
    /// Packets handed to the kernel.
    pub packets: AtomicU64,
    /// `sendmmsg` calls that sent at least one packet.
    pub batches: AtomicU64,
    /// Packets the kernel refused (other than "try again"); each is lost, as UDP may lose it.
    pub errors: AtomicU64,
    /// Packets dropped because the batch was at its bound while the kernel's buffer was full.
    pub queue_full: AtomicU64,
    /// Flushes that found the kernel's send buffer full (what was left waited for it).
    pub kernel_full: AtomicU64,
}

struct Queued {
    destination: SocketAddr,
    src_ip: Option<IpAddr>,
    ecn: Option<u8>,
    start: usize,
    len: usize,
}

/// Packets waiting to be sent (see the module docs).
pub struct PacketBatch {
    bytes: Vec<u8>,
    packets: Vec<Queued>,
    /// The first packet not yet sent.
    next: usize,
    max: usize,
    /// An IPv6 socket, which reaches IPv4 peers through mapped addresses.
    v6: bool,
    /// Set when the kernel refused IPv4 ECN bits on this IPv6 socket; they are left off since.
    v4_tos_refused: bool,
    scratch: Scratch,
    stats: Arc<SendStats>,
    last_error_log: Option<Instant>,
}

impl PacketBatch {
    /// A batch for an IPv6 (`v6`) or IPv4 socket holding at most `max` packets, counting what
    /// it sends into `stats`.
    pub fn new(v6: bool, max: usize, stats: Arc<SendStats>) -> PacketBatch {
        PacketBatch {
            bytes: Vec::new(),
            packets: Vec::new(),
            next: 0,
            max: max.max(1),
            v6,
            v4_tos_refused: false,
            scratch: Scratch::default(),
            stats,
            last_error_log: None,
        }
    }

    /// Queues a transmit, split into its packets when it carries several (GSO), never merged.
    /// Returns false, counted, when the batch is at its bound: flush first.
    pub fn push(&mut self, t: &Transmit<'_>) -> bool {
        if self.is_full() {
            self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let size = t.segment_size.unwrap_or(t.contents.len()).max(1);
        for segment in t.contents.chunks(size) {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(segment);
            self.packets.push(Queued {
                destination: t.destination,
                src_ip: t.src_ip,
                ecn: t.ecn.map(|e| e as u8),
                start,
                len: segment.len(),
            });
        }
        true
    }

    /// Whether the batch holds its most packets.
    pub fn is_full(&self) -> bool {
        self.packets.len() >= self.max
    }

    /// Whether packets wait to be sent (after a flush: the kernel's buffer was full).
    pub fn is_pending(&self) -> bool {
        self.next < self.packets.len()
    }

    /// Sends what is queued on `socket`. Returns false when the kernel's send buffer filled
    /// first: the rest stays queued, and the caller flushes again once the socket is writable.
    pub fn flush(&mut self, socket: &impl AsRawFd) -> bool {
        let fd = socket.as_raw_fd();
        while self.next < self.packets.len() {
            let end = (self.next + CHUNK).min(self.packets.len());
            match self.send_chunk(fd, self.next..end) {
                Ok(sent) => {
                    self.stats.packets.fetch_add(sent as u64, Ordering::Relaxed);
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    // The kernel takes at least one message of a non-empty call.
                    self.next += sent.max(1);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.kernel_full.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                Err(e) => {
                    let p = &self.packets[self.next];
                    let (ecn, destination) = (p.ecn, p.destination);
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && ecn.is_some()
                        && self.v6
                        && is_v4(destination)
                        && !std::mem::replace(&mut self.v4_tos_refused, true)
                    {
                        // Some kernels refuse IPv4 ECN bits on an IPv6 socket: retry without them.
                        continue;
                    }
                    // EMSGSIZE is how path MTU probes fail; anything else is logged.
                    if e.raw_os_error() != Some(libc::EMSGSIZE) {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        self.log_error(&e, destination);
                    }
                    self.next += 1;
                }
            }
        }
        self.bytes.clear();
        self.packets.clear();
        self.next = 0;
        true
    }

    /// One `sendmmsg` of the packets in `range`; the count the kernel took, or the error of the
    /// first packet when it took none.
    fn send_chunk(&mut self, fd: RawFd, range: std::ops::Range<usize>) -> io::Result<usize> {
        let packets = &self.packets[range];
        let s = &mut self.scratch;
        s.addrs.clear();
        s.iovs.clear();
        s.cmsgs.clear();
        s.msgs.clear();
        for p in packets {
            s.addrs.push(socket2::SockAddr::from(peer(self.v6, p.destination)));
            s.iovs.push(libc::iovec { iov_base: self.bytes[p.start..].as_ptr() as *mut libc::c_void, iov_len: p.len });
            s.cmsgs.push([0; 8]);
        }
        for (i, p) in packets.iter().enumerate() {
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = s.addrs[i].as_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_namelen = s.addrs[i].len();
            m.msg_hdr.msg_iov = &mut s.iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            let ecn = p.ecn.filter(|_| !(self.v6 && is_v4(p.destination) && self.v4_tos_refused));
            let used = write_cmsgs(&mut s.cmsgs[i], ecn, is_v4(p.destination), p.src_ip);
            if used > 0 {
                m.msg_hdr.msg_control = s.cmsgs[i].as_mut_ptr() as *mut libc::c_void;
                m.msg_hdr.msg_controllen = used as _;
            }
            s.msgs.push(m);
        }
        loop {
            // SAFETY: every header points into `s` and `self.bytes`, which outlive the call and
            // are not moved while it runs.
            let n = unsafe { libc::sendmmsg(fd, s.msgs.as_mut_ptr(), s.msgs.len() as _, 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn log_error(&mut self, e: &io::Error, dest: SocketAddr) {
        if self.last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            self.last_error_log = Some(Instant::now());
            tracing::warn!(error = %e, %dest, "a UDP packet could not be sent (logged once a minute; counted in outpost_udp_send_errors_total)");
        }
    }
}

/// The address to send to: IPv4 peers of an IPv6 socket by their mapped address.
fn peer(v6: bool, dest: SocketAddr) -> SocketAddr {
    match dest {
        SocketAddr::V4(a) if v6 => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
        other => other,
    }
}

fn is_v4(a: SocketAddr) -> bool {
    match a.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    }
}

/// Writes the ECN and source-address control messages into `buf`; returns the bytes used.
fn write_cmsgs(buf: &mut CmsgBuf, ecn: Option<u8>, v4: bool, src: Option<IpAddr>) -> usize {
    let mut used = 0usize;
    let mut push = |level: libc::c_int, kind: libc::c_int, data: &[u8]| {
        // SAFETY: `buf` has room for both messages (see `CmsgBuf`); the header is written
        // unaligned-safe into an 8-aligned buffer at an 8-aligned offset.
        unsafe {
            let space = libc::CMSG_SPACE(data.len() as u32) as usize;
            let at = (buf.as_mut_ptr() as *mut u8).add(used);
            let hdr = at as *mut libc::cmsghdr;
            (*hdr).cmsg_level = level;
            (*hdr).cmsg_type = kind;
            (*hdr).cmsg_len = libc::CMSG_LEN(data.len() as u32) as _;
            std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(hdr), data.len());
            used += space;
        }
    };
    if let Some(ecn) = ecn {
        let value = (ecn as libc::c_int).to_ne_bytes();
        if v4 {
            push(libc::IPPROTO_IP, libc::IP_TOS, &value);
        } else {
            push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &value);
        }
    }
    match src {
        Some(IpAddr::V4(ip)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr { s_addr: u32::from_ne_bytes(ip.octets()) },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            push(libc::IPPROTO_IP, libc::IP_PKTINFO, as_bytes(&info));
        }
        Some(IpAddr::V6(ip)) => {
            let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: ip.octets() }, ipi6_ifindex: 0 };
            push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, as_bytes(&info));
        }
        None => {}
    }
    used
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: plain C structs with no padding read as their bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }
}

/// Buffers reused by every `sendmmsg`, so sending allocates nothing once warm.
#[derive(Default)]
struct Scratch {
    addrs: Vec<socket2::SockAddr>,
    iovs: Vec<libc::iovec>,
    cmsgs: Vec<CmsgBuf>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `Scratch` point only into buffers its batch owns, and are
// rewritten before each use; it moves between threads only with that batch.
unsafe impl Send for Scratch {}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::udp::{EcnCodepoint, RecvMeta, UdpSocketState};
    use std::io::IoSliceMut;
    use std::net::Ipv4Addr;

    /// A receiving socket that reports each packet's source and ECN bits, as quinn's does.
    struct Receiver {
        sock: std::net::UdpSocket,
        state: UdpSocketState,
    }

    impl Receiver {
        fn bind(ip: &str) -> Receiver {
            let sock = std::net::UdpSocket::bind((ip, 0)).unwrap();
            let state = UdpSocketState::new((&sock).into()).unwrap();
            Receiver { sock, state }
        }

        fn addr(&self) -> SocketAddr {
            self.sock.local_addr().unwrap()
        }

        fn recv(&self) -> (Vec<u8>, RecvMeta) {
            // quinn-udp makes the socket non-blocking: wait for the packet first.
            let mut fds = [libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            crate::udp::proto_loop::wait(&mut fds, Duration::from_secs(10)).unwrap();
            let mut buf = vec![0u8; 2048];
            let mut meta = [RecvMeta::default()];
            let mut bufs = [IoSliceMut::new(&mut buf)];
            let n = self.state.recv((&self.sock).into(), &mut bufs, &mut meta).expect("a packet within 10 s");
            assert_eq!(n, 1);
            (buf[..meta[0].len].to_vec(), meta[0])
        }
    }

    fn batch(bind: &str, max: usize) -> (std::net::UdpSocket, PacketBatch, Arc<SendStats>) {
        let socket = crate::udp::bind_udp(bind.parse().unwrap(), 1 << 20).unwrap();
        let stats = Arc::new(SendStats::default());
        let v6 = socket.local_addr().unwrap().is_ipv6();
        (socket, PacketBatch::new(v6, max, stats.clone()), stats)
    }

    fn transmit(to: SocketAddr, data: &[u8]) -> Transmit<'_> {
        Transmit { destination: to, ecn: None, contents: data, segment_size: None, src_ip: None }
    }

    #[test]
    fn packets_pushed_before_a_flush_leave_in_one_call_each_to_its_peer() {
        let (sock, mut b, stats) = batch("127.0.0.1:0", 64);
        let (r1, r2) = (Receiver::bind("127.0.0.1"), Receiver::bind("127.0.0.1"));
        assert!(b.push(&transmit(r1.addr(), b"one for a")));
        assert!(b.push(&transmit(r2.addr(), b"one for b")));
        assert!(b.push(&transmit(r1.addr(), b"two for a")));
        assert!(b.flush(&sock));
        assert!(!b.is_pending());
        assert_eq!(r1.recv().0, b"one for a");
        assert_eq!(r1.recv().0, b"two for a");
        let (data, meta) = r2.recv();
        assert_eq!(data, b"one for b");
        assert_eq!(meta.addr, sock.local_addr().unwrap());
        assert_eq!(stats.packets.load(Ordering::Relaxed), 3);
        assert_eq!(stats.batches.load(Ordering::Relaxed), 1, "three packets, one sendmmsg");
        assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_transmit_of_several_segments_leaves_as_separate_packets() {
        let (sock, mut b, stats) = batch("127.0.0.1:0", 64);
        let r = Receiver::bind("127.0.0.1");
        let mut t = transmit(r.addr(), b"aaaabbbbcc");
        t.segment_size = Some(4);
        assert!(b.push(&t));
        assert!(b.flush(&sock));
        for want in [&b"aaaa"[..], b"bbbb", b"cc"] {
            assert_eq!(r.recv().0, want);
        }
        assert_eq!(stats.packets.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn ecn_bits_and_the_source_address_quinn_asks_for_go_with_each_packet() {
        // Bound to every address, so the kernel would pick 127.0.0.1 by itself.
        let (sock, mut b, _) = batch("0.0.0.0:0", 64);
        let port = sock.local_addr().unwrap().port();
        let r = Receiver::bind("127.0.0.1");
        let mut t = transmit(r.addr(), b"marked");
        t.ecn = Some(EcnCodepoint::Ect0);
        t.src_ip = Some(Ipv4Addr::new(127, 0, 0, 2).into());
        assert!(b.push(&t));
        let mut plain = transmit(r.addr(), b"plain");
        plain.src_ip = Some(Ipv4Addr::new(127, 0, 0, 3).into());
        assert!(b.push(&plain));
        assert!(b.flush(&sock));
        let (data, meta) = r.recv();
        assert_eq!(data, b"marked");
        assert_eq!(meta.ecn, Some(EcnCodepoint::Ect0));
        assert_eq!(meta.addr, SocketAddr::from(([127, 0, 0, 2], port)));
        let (data, meta) = r.recv();
        assert_eq!(data, b"plain");
        assert_eq!(meta.ecn, None);
        assert_eq!(meta.addr, SocketAddr::from(([127, 0, 0, 3], port)));
    }

    #[test]
    fn an_ipv6_socket_reaches_ipv4_peers_with_their_ecn_bits() {
        let (sock, mut b, stats) = batch("[::]:0", 64);
        let r = Receiver::bind("127.0.0.1");
        let mut t = transmit(r.addr(), b"over v4");
        t.ecn = Some(EcnCodepoint::Ce);
        assert!(b.push(&t));
        assert!(b.flush(&sock));
        let (data, meta) = r.recv();
        assert_eq!(data, b"over v4");
        assert_eq!(meta.ecn, Some(EcnCodepoint::Ce));
        assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_packet_the_kernel_refuses_is_counted_and_the_rest_still_go() {
        let (sock, mut b, stats) = batch("127.0.0.1:0", 64);
        let r = Receiver::bind("127.0.0.1");
        assert!(b.push(&transmit(r.addr(), b"before")));
        // Port 0 is refused by the kernel (EINVAL).
        assert!(b.push(&transmit(SocketAddr::from(([127, 0, 0, 1], 0)), b"nowhere")));
        assert!(b.push(&transmit(r.addr(), b"after")));
        assert!(b.flush(&sock));
        assert_eq!(r.recv().0, b"before");
        assert_eq!(r.recv().0, b"after");
        assert_eq!(stats.errors.load(Ordering::Relaxed), 1);
        assert_eq!(stats.packets.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_full_batch_refuses_and_counts_until_flushed() {
        let (sock, mut b, stats) = batch("127.0.0.1:0", 2);
        let r = Receiver::bind("127.0.0.1");
        assert!(b.push(&transmit(r.addr(), b"1")));
        assert!(b.push(&transmit(r.addr(), b"2")));
        assert!(b.is_full());
        assert!(!b.push(&transmit(r.addr(), b"3")));
        assert_eq!(stats.queue_full.load(Ordering::Relaxed), 1);
        assert!(b.flush(&sock));
        assert!(b.push(&transmit(r.addr(), b"3")));
        assert!(b.flush(&sock));
        for want in [b"1", b"2", b"3"] {
            assert_eq!(r.recv().0, want);
        }
    }

    /// The kernel's "try again": on loopback a packet leaves the sender's buffer at once, so
    /// this runs in a network namespace of its own whose loopback is slowed by a token bucket
    /// (`tc ... tbf`): packets wait in the queueing discipline, still charged to the sender.
    /// Needs root; without it the test says so and passes without checking.
    #[test]
    fn a_full_kernel_buffer_keeps_the_rest_queued_and_nothing_is_lost() {
        std::thread::spawn(|| {
            // SAFETY: moves only this new thread (and what it starts) into a new namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: no network namespace ({})", io::Error::last_os_error());
                return;
            }
            for args in [
                vec!["ip", "link", "set", "lo", "up"],
                vec![
                    "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "2mbit", "burst", "1600", "limit",
                    "1000000",
                ],
            ] {
                let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap();
                assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            // The smallest send buffer the kernel allows: a few packets fill it.
            let sock = crate::udp::bind_udp("127.0.0.1:0".parse().unwrap(), 1).unwrap();
            sock.set_nonblocking(true).unwrap();
            let stats = Arc::new(SendStats::default());
            let mut b = PacketBatch::new(false, 64, stats.clone());
            let r = Receiver::bind("127.0.0.1");
            let payload = |i: u8| vec![i; 1000];
            for i in 0..40u8 {
                assert!(b.push(&transmit(r.addr(), &payload(i))));
            }
            // As the node's transport does: flush, and while packets are left, wait for the
            // socket to be writable and flush again (bounded here, so a bug cannot hang).
            let mut flushes = 0;
            while !b.flush(&sock) {
                flushes += 1;
                assert!(flushes < 10_000, "the batch never drained");
                let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd; poll only writes its `revents`.
                unsafe { libc::poll(&mut pfd, 1, 1000) };
            }
            for i in 0..40u8 {
                assert_eq!(r.recv().0, payload(i), "packet {i}");
            }
            assert!(stats.kernel_full.load(Ordering::Relaxed) >= 1, "the kernel's buffer never filled");
            assert_eq!(stats.packets.load(Ordering::Relaxed), 40);
            assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
        })
        .join()
        .unwrap();
    }
}
