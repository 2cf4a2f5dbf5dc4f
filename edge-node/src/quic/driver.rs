//! The player transport: every player connection's QUIC state machine, driven from one thread.
//!
//! The node drives `quinn-proto` itself instead of going through quinn's async wrapper. On this
//! workload (thousands of connections, a small packet each way per tick) a quarter of a quinn
//! server's CPU is the driving around QUIC, not QUIC: a task per connection, the endpoint's
//! channel to each one, a lock per connection shared with the room threads, and the wake-ups
//! between them (BENCHMARKS.md, sessions 13 and 14). Here one loop reads the socket
//! (`recvmmsg`), hands each packet to its connection, runs what that connection has to do
//! (join, reading frames and datagrams, writing the reliable backlog), and sends what it has
//! to say, with the packets of many connections leaving in one `sendmmsg`.
//!
//! Other threads reach a connection only through the [`Inbox`]: room workers push datagrams,
//! "frames waiting" and closes; the join tasks push their verdict. The loop wakes on the socket,
//! on the inbox's eventfd, or on the earliest connection timer.
//!
//! What it deliberately does not do: decide anything about tickets, rooms or placement. The
//! join itself (ticket check, take-over, room placement) stays async in [`super`], on the tokio
//! runtime, because it waits for room workers and the core.

use super::PlayerCtx;
use super::carrier::QuicPlayer;
use crate::room::Refusal;
use crate::room::player::{PlayerLink, PlayerTransport};
use crate::session::Admitted;
use crate::webtransport::h3::WtConn;
use bytes::{Bytes, BytesMut};
use outpost_net::udp::batch::{PacketBatch, SendStats};
use outpost_net::udp::proto_loop::{self, Dirty, READS_PER_TURN, Receiver, Timers};
use outpost_proto::CloseCode;
use quinn::udp::{RecvMeta, UdpSockRef, UdpSocketState};
use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest the loop sleeps with nothing due, so a lost wake-up could never stall it long.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How soon a connection whose room worker's queue was full tries again.
const HELD_RETRY: Duration = Duration::from_millis(1);
/// Datagrams from room workers waiting for the loop, across all players, before further ones
/// are dropped and counted: the loop has fallen far behind, and a game's datagrams are stale by
/// then anyway.
const MAX_QUEUED_DATAGRAMS: usize = 65_536;

/// A connection as the rest of the node names it: quinn-proto's handle (a slot that is reused)
/// and a serial number, so a late message for a closed connection never reaches a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnKey {
    handle: ConnectionHandle,
    serial: u64,
}

/// What other threads ask of the transport.
enum Op {
    /// An unreliable message for the player (already framed with its sender).
    Datagram(ConnKey, Bytes),
    /// The player's reliable backlog went from empty to not.
    Frames(ConnKey),
    /// Close the connection.
    Close(ConnKey, CloseCode, String),
    /// The join task's verdict.
    Admitted(ConnKey, Box<Result<Admitted, Refusal>>),
    /// Close every connection with `node-shutdown` and stop once they are gone.
    Shutdown,
}

/// Where other threads leave work for the transport loop, and the eventfd that wakes it.
pub struct Inbox {
    ops: Mutex<Vec<Op>>,
    datagrams: std::sync::atomic::AtomicUsize,
    /// True while the loop is about to sleep or sleeping: only then does a push need the
    /// eventfd (a system call on the pushing thread and a wake-up on the loop's).
    parked: AtomicBool,
    wake: OwnedFd,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl Inbox {
    fn new(metrics: Arc<crate::telemetry::Metrics>) -> std::io::Result<Arc<Inbox>> {
        // SAFETY: plain syscall; the result is checked and then owned once.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(Inbox {
            ops: Mutex::default(),
            datagrams: 0.into(),
            parked: AtomicBool::new(false),
            wake,
            metrics,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Op>> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `op`, and wakes the loop when it is parked. The loop parks only after seeing the
    /// inbox empty, so the first push after that is the one that wakes it; the others ride along.
    fn push(&self, op: Op) {
        let mut ops = self.lock();
        let was_empty = ops.is_empty();
        ops.push(op);
        drop(ops);
        if was_empty && self.parked.swap(false, Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to our own eventfd. A full counter
            // (EAGAIN) means a wake-up is pending anyway.
            let _ = unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }

    /// The loop is about to sleep: returns false when it must not, because work arrived first.
    fn park(&self) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        if self.lock().is_empty() {
            return true;
        }
        self.parked.store(false, Ordering::SeqCst);
        false
    }

    /// The loop is awake again: pushes need not wake it.
    fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    fn take(&self, into: &mut Vec<Op>) {
        std::mem::swap(&mut *self.lock(), into);
        self.datagrams.store(0, Ordering::Relaxed);
    }

    fn drain_wake(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from our own non-blocking eventfd.
        let _ = unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
}

/// A player's connection as a [`PlayerLink`] holds it.
#[derive(Clone)]
pub struct ConnRef {
    key: ConnKey,
    inbox: Arc<Inbox>,
}

impl PlayerTransport for ConnRef {
    fn frames_waiting(&self) {
        self.inbox.push(Op::Frames(self.key));
    }

    /// Drops and counts the datagram when too many are waiting for the loop.
    fn datagram(&self, d: Bytes) {
        if self.inbox.datagrams.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED_DATAGRAMS {
            self.inbox.metrics.player_datagrams_dropped_total.inc();
            return;
        }
        self.inbox.push(Op::Datagram(self.key, d));
    }

    fn close(&self, code: CloseCode, reason: String) {
        self.inbox.push(Op::Close(self.key, code, reason));
    }
}

/// Sends packets: one `sendmmsg` per turn for all connections, or one `sendmsg` each.
struct Io {
    socket: UdpSocket,
    state: UdpSocketState,
    /// Packets one transmit may carry: 1 when batching (each leaves in the `sendmmsg`), else
    /// what the socket's GSO allows.
    max_segments: usize,
    batch: Option<PacketBatch>,
    stats: Arc<SendStats>,
    out: Vec<u8>,
}

impl Io {
    fn send(&mut self, t: &quinn_proto::Transmit) {
        let tx = proto_loop::udp_transmit(t, &self.out);
        match &mut self.batch {
            // A batch at its bound while the kernel's buffer is full drops the packet, counted.
            Some(b) => {
                if b.is_full() {
                    b.flush(&self.socket);
                }
                b.push(&tx);
            }
            None => {
                if self.state.send(UdpSockRef::from(&self.socket), &tx).is_err() {
                    // Lost, as UDP may lose it; QUIC's recovery resends what matters.
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.packets.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.out.clear();
    }

    /// Sends what the batch holds; true when packets are left for a writable socket.
    fn flush(&mut self) -> bool {
        self.batch.as_mut().is_some_and(|b| !b.flush(&self.socket))
    }
}

/// The transport thread's state.
struct Driver {
    endpoint: Endpoint,
    io: Io,
    conns: Conns,
    timers: Timers,
    dirty: Dirty,
    /// Connections holding a message their room worker's queue had no room for.
    held: Vec<ConnectionHandle>,
    inbox: Arc<Inbox>,
    ctx: Arc<PlayerCtx>,
    rt: tokio::runtime::Handle,
    next_serial: u64,
    shutting_down: bool,
    next_sweep: Instant,
    flavor: Flavor,
}

/// What the endpoint's connections speak.
pub enum Flavor {
    /// The native player protocol (ALPN `outpost/1`).
    Native,
    /// Browsers' WebTransport over HTTP/3, around the same player protocol.
    WebTransport(Arc<crate::webtransport::h3::WtShared>),
}

/// The running transport, as `run` holds it.
pub struct PlayerEndpoint {
    /// The bound player address.
    pub addr: SocketAddr,
    /// Packets sent, batches, errors.
    pub stats: Arc<SendStats>,
    /// What every player session shares, for the other carriers (WebSocket).
    pub ctx: Arc<PlayerCtx>,
    inbox: Arc<Inbox>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl PlayerEndpoint {
    /// Binds nothing itself: `socket` is the bound player socket. Serves until
    /// [`PlayerEndpoint::shutdown`]. `batch` is the most packets sent in one `sendmmsg` (0 sends
    /// each on its own).
    pub fn start(
        socket: UdpSocket,
        server: quinn_proto::ServerConfig,
        ctx: Arc<PlayerCtx>,
        batch: usize,
        flavor: Flavor,
    ) -> std::io::Result<PlayerEndpoint> {
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let stats = Arc::new(SendStats::default());
        let batch = (batch > 0).then(|| PacketBatch::new(addr.is_ipv6(), batch, stats.clone()));
        let inbox = Inbox::new(ctx.metrics.clone())?;
        let endpoint =
            Endpoint::new(Arc::new(quinn_proto::EndpointConfig::default()), Some(Arc::new(server)), true, None);
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| std::io::Error::other("the player transport needs a tokio runtime for joins"))?;
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let driver = Driver {
            endpoint,
            io: Io {
                max_segments: if batch.is_some() { 1 } else { state.max_gso_segments().max(1) },
                socket,
                state,
                batch,
                stats: stats.clone(),
                out: Vec::with_capacity(64 * 1024),
            },
            conns: Conns::default(),
            timers: Timers::default(),
            dirty: Dirty::default(),
            held: Vec::new(),
            inbox: inbox.clone(),
            ctx: ctx.clone(),
            rt,
            next_serial: 0,
            shutting_down: false,
            next_sweep: Instant::now(),
            flavor,
        };
        let name = match driver.flavor {
            Flavor::Native => "player-quic",
            Flavor::WebTransport(_) => "player-wt",
        };
        std::thread::Builder::new().name(name.into()).spawn(move || {
            // A node without its transport would go on answering health checks and heartbeats
            // while no player can reach it; better to stop, so the supervisor restarts it (the
            // outbox is on disk, so nothing committed is lost).
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.run())) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the player socket failed; stopping the node");
                    std::process::exit(70);
                }
                Err(_) => {
                    tracing::error!("the player transport panicked; stopping the node");
                    std::process::exit(70);
                }
            }
            let _ = done_tx.send(());
        })?;
        Ok(PlayerEndpoint { addr, stats, ctx, inbox, done })
    }

    /// Closes every player with `node-shutdown` and waits up to `grace` for the close to reach
    /// them; new connections are refused from now on.
    pub async fn shutdown(self, grace: Duration) {
        self.inbox.push(Op::Shutdown);
        let _ = tokio::time::timeout(grace, self.done).await;
    }
}

impl Driver {
    fn run(mut self) -> std::io::Result<()> {
        let mut rx = Receiver::default();
        let mut ops = Vec::new();
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            self.inbox.take(&mut ops);
            for op in ops.drain(..) {
                self.handle_op(now, op);
            }
            self.retry_held();
            if now >= self.next_sweep {
                self.sweep_slow(now);
            }
            self.drive_dirty(now);
            let unsent = self.io.flush();
            if self.shutting_down && self.conns.is_empty() {
                return Ok(());
            }
            let mut wait = self.timers.wait(now, MAX_WAIT).min(self.next_sweep.saturating_duration_since(now));
            if !self.held.is_empty() {
                wait = wait.min(HELD_RETRY);
            }
            if !self.inbox.park() {
                wait = Duration::ZERO;
            }
            let socket_events = if unsent { libc::POLLIN | libc::POLLOUT } else { libc::POLLIN };
            let mut fds = [
                libc::pollfd { fd: self.io.socket.as_raw_fd(), events: socket_events, revents: 0 },
                libc::pollfd { fd: self.inbox.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            let waited = proto_loop::wait(&mut fds, wait);
            self.inbox.unpark();
            waited?;
            if fds[1].revents != 0 {
                self.inbox.drain_wake();
            }
            if fds[0].revents & libc::POLLIN != 0 {
                self.read_socket(&mut rx);
            }
        }
    }

    fn handle_op(&mut self, now: Instant, op: Op) {
        match op {
            Op::Datagram(key, d) => {
                let len = d.len() as u64;
                let sent = conn_of(&mut self.conns, key).is_some_and(|c| c.send_datagram(d));
                let metrics = &self.ctx.metrics;
                if sent {
                    metrics.messages_out_total.inc();
                    metrics.bytes_out_total.inc_by(len);
                    self.dirty.push(key.handle);
                } else {
                    // Full, over the path's size, or the connection is gone.
                    metrics.player_datagrams_dropped_total.inc();
                }
            }
            Op::Frames(key) => {
                if let Some(c) = conn_of(&mut self.conns, key) {
                    c.want_write = true;
                    self.dirty.push(key.handle);
                }
            }
            Op::Close(key, code, reason) => {
                if let Some(c) = conn_of(&mut self.conns, key) {
                    c.close(now, code, &reason);
                    self.dirty.push(key.handle);
                }
            }
            Op::Admitted(key, result) => self.admitted(key, *result),
            Op::Shutdown => {
                self.shutting_down = true;
                for (ch, c) in self.conns.iter_mut() {
                    c.close(now, CloseCode::NodeShutdown, "the node is shutting down");
                    self.dirty.push(ch);
                }
            }
        }
    }

    /// The join task's verdict: write `Joined` and start serving, or write `Refused` and close.
    fn admitted(&mut self, key: ConnKey, result: Result<Admitted, Refusal>) {
        let Some(c) = conn_of(&mut self.conns, key).filter(|c| !c.conn.is_closed()) else {
            // Gone while joining: the room has them, so take them out again.
            if let Ok(a) = result {
                a.link.mark_lost();
                leave_later(&self.rt, &self.ctx, a.link, a.room, a.worker);
            }
            return;
        };
        c.admitted(&self.ctx.session, result);
        self.dirty.push(key.handle);
    }

    fn retry_held(&mut self) {
        let mut still = Vec::new();
        for ch in std::mem::take(&mut self.held) {
            let Some(c) = self.conns.get_mut(&ch) else { continue };
            if c.session.retry_held(&self.ctx.session) {
                c.held_listed = false;
                c.want_read = true;
                c.want_datagrams = true;
                self.dirty.push(ch);
            } else {
                still.push(ch);
            }
        }
        self.held = still;
    }

    /// Closes players whose reliable backlog has stayed over its limit past the grace period
    /// while their stream took nothing (a room that stopped sending to them would never check).
    fn sweep_slow(&mut self, now: Instant) {
        self.next_sweep = now + self.ctx.session.limits.slow_grace / 2;
        for (ch, c) in self.conns.iter_mut() {
            if !c.conn.is_closed() {
                c.session.check_stalled(now);
                if c.session.is_closing() {
                    self.dirty.push(ch);
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(h) = self.timers.pop_due(now) {
            let ch = ConnectionHandle(h);
            let Some(c) = self.conns.get_mut(&ch) else { continue };
            c.armed = None;
            c.handle_timeout(&self.ctx.session, now);
            self.dirty.push(ch);
        }
    }

    /// Runs every dirty connection until it has nothing more to do.
    fn drive_dirty(&mut self, now: Instant) {
        for ch in self.dirty.take() {
            self.drive(ch, now);
        }
    }

    fn drive(&mut self, ch: ConnectionHandle, now: Instant) {
        let Some(c) = self.conns.get_mut(&ch) else { return };
        loop {
            // Everything the connection has to do first, so that its packets carry all of it.
            while c.work(&mut self.endpoint, ch, &self.ctx.session, now) {}
            if let Some(ticket) = c.session.poll_join() {
                let key = ConnKey { handle: ch, serial: c.serial };
                admit_later(&self.rt, &self.ctx, &self.inbox, key, ticket, c.session.peer().ip());
            }
            if c.session.is_held() && !c.held_listed {
                c.held_listed = true;
                self.held.push(ch);
            }
            while let Some(t) = c.conn.poll_transmit(now, self.io.max_segments, &mut self.io.out) {
                self.io.send(&t);
            }
            // A refusal's frame has gone into packets above; the close follows it.
            let Some((code, reason)) = c.session.poll_close_after_flush() else { break };
            c.close(now, code, &reason);
        }
        if c.conn.is_closed() && !c.ended {
            c.ended = true;
            // A closed connection lingers while it drains; its place in the caps does not.
            c.slot = None;
            ended(&self.ctx, &self.rt, c);
        }
        let drained = c.conn.is_drained();
        let next = if drained { None } else { c.poll_timeout() };
        self.timers.rearm(ch.0, &mut c.armed, next);
        if drained {
            // Dropping the connection drops its slot in the connection caps.
            self.conns.remove(&ch);
        }
    }

    /// Reads the socket until it is empty or [`READS_PER_TURN`] batches were read, handing each
    /// packet to the endpoint.
    fn read_socket(&mut self, rx: &mut Receiver) {
        for _ in 0..READS_PER_TURN {
            let more = rx.recv(&self.io.state, &self.io.socket).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading the player socket failed");
                false
            });
            let now = Instant::now();
            for (m, packet) in rx.packets() {
                self.handle_packet(now, &m, packet);
            }
            if !more {
                return;
            }
        }
    }

    fn handle_packet(&mut self, now: Instant, m: &RecvMeta, packet: BytesMut) {
        let ecn = m.ecn.map(proto_loop::proto_ecn);
        match self.endpoint.handle(now, m.addr, m.dst_ip, ecn, packet, &mut self.io.out) {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.conn.handle_event(ev);
                    self.dirty.push(ch);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.incoming(now, incoming),
            Some(DatagramEvent::Response(t)) => self.io.send(&t),
            None => {}
        }
        self.io.out.clear();
    }

    /// A new connection: caps first, before any handshake work (see [`super::admission`]).
    fn incoming(&mut self, now: Instant, incoming: quinn_proto::Incoming) {
        let metrics = &self.ctx.metrics;
        let remote = incoming.remote_address();
        let verdict = if self.shutting_down {
            super::admission::Verdict::Refuse("the node is shutting down")
        } else {
            self.ctx.admission.admit(remote.ip(), incoming.remote_address_validated())
        };
        match verdict {
            super::admission::Verdict::Accept(slot) => {
                match self.endpoint.accept(incoming, now, &mut self.io.out, None) {
                    Ok((ch, conn)) => {
                        self.next_serial += 1;
                        let wt = match &self.flavor {
                            Flavor::Native => None,
                            Flavor::WebTransport(shared) => Some(WtConn::new(shared.clone())),
                        };
                        let c = QuicPlayer::new(conn, self.next_serial, Some(slot), &self.ctx.session, now, wt);
                        self.conns.insert(ch, c);
                        self.dirty.push(ch);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e.cause, %remote, "player handshake failed");
                        if let Some(t) = e.response {
                            self.io.send(&t);
                        }
                    }
                }
            }
            super::admission::Verdict::Retry if incoming.may_retry() => {
                metrics.player_connections_retried_total.inc();
                match self.endpoint.retry(incoming, &mut self.io.out) {
                    Ok(t) => self.io.send(&t),
                    Err(e) => {
                        let t = self.endpoint.refuse(e.into_incoming(), &mut self.io.out);
                        self.io.send(&t);
                    }
                }
            }
            // Only a client that already retried cannot be asked again, and those are
            // validated, so this is not expected; refusing is the safe answer.
            super::admission::Verdict::Retry => {
                let t = self.endpoint.refuse(incoming, &mut self.io.out);
                self.io.send(&t);
            }
            super::admission::Verdict::Refuse(why) => {
                metrics.player_connections_refused_total.inc();
                tracing::debug!(%remote, why, "player connection refused");
                let t = self.endpoint.refuse(incoming, &mut self.io.out);
                self.io.send(&t);
            }
        }
    }
}

fn conn_of(conns: &mut Conns, key: ConnKey) -> Option<&mut QuicPlayer> {
    conns.get_mut(&key.handle).filter(|c| c.serial == key.serial)
}

/// The connections by quinn-proto's handle, which is an index into its own slab: dense and
/// reused, so a vector finds a connection without hashing, several times per packet. Boxed: a
/// connection's state is about 6.5 KB, and a free slot should cost a pointer, not that (a hash
/// map of them inline cost 13 KiB per idle player at 1,000 players, BENCHMARKS.md session 15).
#[derive(Default)]
struct Conns {
    slots: Vec<Option<Box<QuicPlayer>>>,
    len: usize,
}

impl Conns {
    fn get_mut(&mut self, ch: &ConnectionHandle) -> Option<&mut QuicPlayer> {
        self.slots.get_mut(ch.0)?.as_deref_mut()
    }

    fn insert(&mut self, ch: ConnectionHandle, c: QuicPlayer) {
        if ch.0 >= self.slots.len() {
            self.slots.resize_with(ch.0 + 1, || None);
        }
        if self.slots[ch.0].replace(Box::new(c)).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, ch: &ConnectionHandle) {
        if self.slots.get_mut(ch.0).and_then(Option::take).is_some() {
            self.len -= 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (ConnectionHandle, &mut QuicPlayer)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, c)| Some((ConnectionHandle(i), c.as_deref_mut()?)))
    }
}

/// The connection closed, by either side: the room is told (the guest sees `leave`), and the
/// player's datagrams that were never read are counted.
fn ended(ctx: &Arc<PlayerCtx>, rt: &tokio::runtime::Handle, c: &mut QuicPlayer) {
    let Some((d, unread)) = c.end() else { return };
    if unread > 0 {
        ctx.metrics.player_datagrams_in_unread_total.inc_by(unread);
        tracing::info!(player = d.link.id, unread, read = d.datagrams_read, "player datagrams dropped unread");
    }
    leave_later(rt, ctx, d.link, d.room, d.worker);
}

/// Runs the join (ticket check, take-over, placement) on the runtime, since it waits for room
/// workers and the core; its verdict comes back through the inbox.
fn admit_later(
    rt: &tokio::runtime::Handle,
    ctx: &Arc<PlayerCtx>,
    inbox: &Arc<Inbox>,
    key: ConnKey,
    ticket: String,
    remote: std::net::IpAddr,
) {
    let (ctx, inbox) = (ctx.clone(), inbox.clone());
    rt.spawn(async move {
        let conn: Arc<dyn PlayerTransport> = Arc::new(ConnRef { key, inbox: inbox.clone() });
        let result = super::admit(&ctx, &ticket, conn, remote).await;
        inbox.push(Op::Admitted(key, Box::new(result)));
    });
}

fn leave_later(rt: &tokio::runtime::Handle, ctx: &Arc<PlayerCtx>, link: Arc<PlayerLink>, room: String, worker: usize) {
    let ctx = ctx.clone();
    rt.spawn(async move {
        ctx.rooms.leave(worker, room, link.clone(), false).await;
        super::forget_session(&ctx, &link);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(inbox: &Inbox) -> bool {
        let mut fds = [libc::pollfd { fd: inbox.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        proto_loop::wait(&mut fds, Duration::ZERO).unwrap();
        fds[0].revents != 0
    }

    /// A parked loop is woken by the first op, once however many follow; a busy loop is not
    /// woken at all, and it does not park while ops wait.
    #[test]
    fn only_a_parked_loop_is_woken_and_only_once() {
        let inbox = Inbox::new(Arc::default()).unwrap();
        let conn = ConnRef { key: ConnKey { handle: ConnectionHandle(0), serial: 1 }, inbox: inbox.clone() };
        conn.frames_waiting();
        assert!(!readable(&inbox), "the loop is busy: no wake-up needed");
        assert!(!inbox.park(), "ops are waiting: the loop must not sleep");
        let mut ops = Vec::new();
        inbox.take(&mut ops);
        assert_eq!(ops.len(), 1);
        assert!(inbox.park());
        conn.datagram(Bytes::from_static(b"x"));
        assert!(readable(&inbox));
        conn.close(CloseCode::Kicked, "bye".into());
        inbox.drain_wake();
        assert!(!readable(&inbox), "ops after the first do not wake it again");
        inbox.unpark();
        inbox.take(&mut ops);
        assert_eq!(ops.len(), 2);
    }

    /// Datagrams from room workers wait for the loop in a bounded queue; past it they are
    /// dropped and counted, never queued without bound.
    #[test]
    fn datagrams_past_the_inbox_bound_are_dropped_and_counted() {
        let metrics = Arc::new(crate::telemetry::Metrics::default());
        let inbox = Inbox::new(metrics.clone()).unwrap();
        let conn = ConnRef { key: ConnKey { handle: ConnectionHandle(0), serial: 1 }, inbox: inbox.clone() };
        for _ in 0..MAX_QUEUED_DATAGRAMS + 10 {
            conn.datagram(Bytes::from_static(b"x"));
        }
        assert_eq!(metrics.player_datagrams_dropped_total.get(), 10);
        let mut ops = Vec::new();
        inbox.take(&mut ops);
        assert_eq!(ops.len(), MAX_QUEUED_DATAGRAMS);
        conn.datagram(Bytes::from_static(b"x"));
        assert_eq!(metrics.player_datagrams_dropped_total.get(), 10, "room again after a take");
    }
}
