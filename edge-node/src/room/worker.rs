//! One room worker thread: owns its rooms' stores and players, runs commands and ticks.
//!
//! The loop sleeps until the next tick is due or a command arrives. Ticks that fall behind are
//! skipped rather than bunched, so a slow room does not spiral. A fault drops the room's instance
//! at once (freeing its memory slot), closes its players with `module-fault`, and keeps the room
//! listed as `faulted` with the reason.

use crate::host::bindings::{Player, Saved};
use crate::host::output::RoomLog;
use crate::host::{Compiled, Effect, FaultKind, GuestFault, GuestInstance, WasmHost};
use crate::room::moving::{Arrivals, Forwarded, MAX_HELD, Motion, Placeholders, RoomExport};
use crate::room::player::PlayerLink;
use crate::room::{Directory, Placement, Refusal, RoomError};
use crate::telemetry::Metrics;
use flume::{Receiver, RecvTimeoutError};
use outpost_proto::CloseCode;
use outpost_proto::api::{Fault, RoomCreated, RoomInfo};
use outpost_proto::frame::SavedState;
use outpost_proto::link::RoomEpoch;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a new room needs.
#[derive(Debug, Clone)]
pub struct RoomSpec {
    /// Room id.
    pub id: String,
    /// Module name.
    pub module: String,
    /// Opaque config for `init`.
    pub config: Vec<u8>,
    /// Tick rate (1..=1000).
    pub tick_hz: u32,
    /// Player cap.
    pub max_players: u32,
    /// Seed of the room's `random`.
    pub seed: u64,
    /// Made for a joining player (not by an operator): closed when its last player leaves.
    pub ephemeral: bool,
    /// Reserved for one match: only its match tickets place players here.
    pub reserved: bool,
}

/// What a joining player learns.
#[derive(Debug, Clone)]
pub struct JoinedRoom {
    /// Room id.
    pub room: String,
    /// Tick rate.
    pub tick_hz: u32,
}

/// What an operator signal gave.
#[derive(Debug, Clone)]
pub struct Signalled {
    /// The guest's reply.
    pub reply: Vec<u8>,
    /// The outbox sequence number the call's last commit will be durable at (0: it committed
    /// nothing). The reply must not leave the node before then.
    pub durable_at: u64,
}

/// Requests from the async side.
pub enum Command {
    /// Instantiate and `init` a room.
    Create { spec: RoomSpec, compiled: Arc<Compiled>, reply: oneshot::Sender<Result<RoomCreated, RoomError>> },
    /// Create a built-in relay room (no guest).
    CreateRelay { spec: RoomSpec, reply: oneshot::Sender<Result<RoomCreated, RoomError>> },
    /// Operator signal.
    Signal { room: String, data: Vec<u8>, reply: oneshot::Sender<Result<Signalled, RoomError>> },
    /// One room's info, or all of this worker's.
    Info { room: Option<String>, reply: oneshot::Sender<Vec<RoomInfo>> },
    /// Close and forget a room.
    Close { room: String, reply: oneshot::Sender<Result<(), RoomError>> },
    /// A room's players: id, name and the address they connect from.
    Players { room: String, reply: oneshot::Sender<Vec<(u64, String, Option<std::net::IpAddr>)>> },
    /// Hot upgrade.
    Upgrade { room: String, compiled: Arc<Compiled>, reply: oneshot::Sender<Result<RoomCreated, RoomError>> },
    /// A player asks to join (its slot is already reserved in the directory).
    Join { room: String, link: Arc<PlayerLink>, saved: SavedState, reply: oneshot::Sender<Result<JoinedRoom, Refusal>> },
    /// A player's connection is gone (closed for any reason, or replaced by a reconnect).
    ///
    /// It names the connection's own link: a player who reconnected is in the room under the
    /// same id with a new link, and the old connection's late `Leave` must not remove them.
    /// `done`, when given, is answered once the leave has been carried out.
    Leave { room: String, link: Arc<PlayerLink>, done: Option<oneshot::Sender<()>> },
    /// A message from a player; `to` addresses one player in relay rooms (0 = everyone else).
    Message { room: String, player: u64, to: u64, data: Vec<u8>, reliable: bool },
    /// Close every player with `node-shutdown` and stop the worker.
    Shutdown { reply: oneshot::Sender<()> },
    /// Pauses a room at a tick boundary and takes what it needs to move ([`super::moving`]).
    Export { room: String, reply: oneshot::Sender<Result<RoomExport, RoomError>> },
    /// The move failed: the paused room runs again, with what its players sent meanwhile.
    Resume { room: String },
    /// The point of no return: the room is another node's now. What was held and what the
    /// players' old connections still deliver goes to `forward`, in order; the reply is the
    /// players' links, to tell each where the room went.
    Hand {
        room: String,
        forward: tokio::sync::mpsc::Sender<Forwarded>,
        reply: oneshot::Sender<Result<Vec<Arc<PlayerLink>>, RoomError>>,
    },
    /// Restores a room that moved here, with a detached link for each of its players.
    Import {
        export: Box<RoomExport>,
        compiled: Arc<Compiled>,
        limits: Arc<crate::room::player::PlayerLimits>,
        reply: oneshot::Sender<Result<Placeholders, RoomError>>,
    },
    /// What a moved room's source forwarded from the players' old connections, in order.
    Forwarded { room: String, items: Vec<Forwarded> },
}

const TICK_SAMPLES: usize = 512;
/// How stale the worker's CPU mark may get; see [`crate::host::guest::refresh_cpu_mark`].
const CPU_MARK_MAX_AGE: Duration = Duration::from_millis(20);

/// How many phases of its period a room's ticks may fall on; see [`tick_schedule`].
const TICK_PHASES: u64 = 10;

/// A room's tick period, and the instant of its first tick.
///
/// Rooms tick on one of [`TICK_PHASES`] fixed phases of their period, counted from the node's
/// clock origin, rather than at whatever instant each was created. A worker then wakes at most
/// that many times per period for all its rooms of one tick rate, instead of once per room tick:
/// measured at 1,000 players in 125 arena rooms of 8 at 20 Hz, the worker woke 2,200 times a
/// second before. Each room still ticks exactly once per period; the period is rounded to whole
/// nanoseconds of its phase step (0.2 ppm at 60 Hz), and a new room's first tick may come up to
/// a tenth of a period later than it would have.
fn tick_schedule(tick_hz: u32, origin: Instant, now: Instant) -> (Duration, Instant) {
    let step_ns = (1e9 / f64::from(tick_hz.max(1)) / TICK_PHASES as f64).round().max(1.0) as u64;
    let period = Duration::from_nanos(step_ns * TICK_PHASES);
    let since = (now + period).saturating_duration_since(origin).as_nanos();
    let steps = since.div_ceil(u128::from(step_ns));
    let first = origin + Duration::from_nanos(u64::try_from(steps * u128::from(step_ns)).unwrap_or(u64::MAX / 2));
    (period, first)
}

/// The tick after one due at `due` and run at `now`: a period on or, when the worker has fallen
/// more than a period behind, the first instant of the room's own phase after `now`. Missed
/// ticks are skipped rather than bunched, and the room keeps its phase (so it still shares its
/// wake-ups with the other rooms on that phase) and waits at most a period to tick again.
fn next_tick_after(due: Instant, period: Duration, now: Instant) -> Instant {
    let next = due + period;
    if next >= now {
        return next;
    }
    let period_ns = period.as_nanos().max(1);
    let periods = now.duration_since(next).as_nanos() / period_ns + 1;
    next + Duration::from_nanos(u64::try_from(periods * period_ns).unwrap_or(u64::MAX / 2))
}

struct RoomSlot {
    spec: RoomSpec,
    version: String,
    relay: bool,
    players: HashMap<u64, Arc<PlayerLink>>,
    guest: Option<GuestInstance>,
    fault: Option<Fault>,
    log: RoomLog,
    period: Duration,
    next_tick: Instant,
    ticks: u64,
    tick_us: VecDeque<f32>,
    calls: u64,
    guest_us: u64,
    forgiven: u64,
    /// The room's clock less the worker's, in ms: a room that moved here keeps its own time.
    clock_offset_ms: i64,
    motion: Motion,
    /// Players that moved here and whose old connection has not ended yet.
    arrivals: Arrivals,
    /// When a moved room stops waiting for its players' old connections and placeholders.
    arrivals_until: Option<Instant>,
    /// Which life of the room this is: what its commits carry to the core.
    epoch: RoomEpoch,
    /// The outbox sequence number of its last commit on this node (0: none).
    last_seq: u64,
}

impl RoomSlot {
    fn new(
        spec: RoomSpec,
        version: String,
        relay: bool,
        guest: Option<GuestInstance>,
        log: RoomLog,
        origin: Instant,
    ) -> Self {
        let (period, next_tick) = tick_schedule(spec.tick_hz, origin, Instant::now());
        RoomSlot {
            spec,
            version,
            relay,
            players: HashMap::new(),
            guest,
            fault: None,
            log,
            period,
            next_tick,
            ticks: 0,
            tick_us: VecDeque::new(),
            calls: 0,
            guest_us: 0,
            forgiven: 0,
            clock_offset_ms: 0,
            motion: Motion::Still,
            arrivals: Arrivals::default(),
            arrivals_until: None,
            epoch: RoomEpoch::default(),
            last_seq: 0,
        }
    }

    /// Whether the room ticks: it has a guest and is not paused or gone.
    fn ticking(&self) -> bool {
        self.guest.is_some() && matches!(self.motion, Motion::Still)
    }

    fn info(&self) -> RoomInfo {
        let (p50, p99) = percentiles(&self.tick_us);
        let (calls, guest_us, forgiven, mem) = match &self.guest {
            Some(g) => {
                let s = g.stats();
                (s.calls, s.guest_us, s.preemptions_forgiven, g.memory_bytes() as u64)
            }
            None => (self.calls, self.guest_us, self.forgiven, 0),
        };
        RoomInfo {
            room: self.spec.id.clone(),
            module: self.spec.module.clone(),
            version: self.version.clone(),
            state: if self.fault.is_some() { "faulted" } else { "running" }.into(),
            players: self.players.len() as u32,
            tick_hz: self.spec.tick_hz,
            max_players: self.spec.max_players,
            ticks: self.ticks,
            tick_p50_us: p50,
            tick_p99_us: p99,
            calls,
            guest_us,
            epoch_preemptions_forgiven: forgiven,
            memory_bytes: mem,
            fault: self.fault.clone(),
            log: self.log.with(|l| l.lines()),
        }
    }
}

fn percentiles(samples: &VecDeque<f32>) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    let mut v: Vec<f32> = samples.iter().copied().collect();
    v.sort_by(f32::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64;
    (at(0.5), at(0.99))
}

/// The worker's state; `run` consumes it on its own thread.
pub struct Worker {
    host: Arc<WasmHost>,
    metrics: Arc<Metrics>,
    rx: Receiver<Command>,
    epoch: Instant,
    rooms: HashMap<String, RoomSlot>,
    directory: Directory,
    coalesce: Duration,
    outbox: Option<Arc<crate::forward::outbox::Outbox>>,
    /// When the worker last woke: the time its players' links are told (their slow-consumer
    /// clock needs no finer grain than a wake-up, and a clock read per message would cost).
    now: Instant,
    /// The outbox sequence number of the last commit of the last call (0: none).
    call_durable_at: u64,
}

impl Worker {
    /// A worker reading `rx`; `epoch` is the node's clock origin for `tick(now_ms)`.
    pub fn new(
        host: Arc<WasmHost>,
        metrics: Arc<Metrics>,
        rx: Receiver<Command>,
        epoch: Instant,
        directory: Directory,
        coalesce: Duration,
        outbox: Option<Arc<crate::forward::outbox::Outbox>>,
    ) -> Self {
        Worker {
            host,
            metrics,
            rx,
            epoch,
            rooms: HashMap::new(),
            directory,
            coalesce,
            outbox,
            now: Instant::now(),
            call_durable_at: 0,
        }
    }

    /// Runs until every sender is gone or a shutdown command arrives.
    pub fn run(mut self) {
        let mut last_wake = Instant::now();
        loop {
            crate::host::guest::refresh_cpu_mark(CPU_MARK_MAX_AGE);
            let next = self.rooms.values().filter(|r| r.ticking()).map(|r| r.next_tick).min();
            let cmd = match next {
                Some(t) => match self.rx.recv_timeout(t.saturating_duration_since(Instant::now())) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match self.rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return,
                },
            };
            self.now = Instant::now();
            if let Some(c) = cmd {
                if self.handle(c) {
                    return;
                }
                // Under load, let messages gather for a moment instead of paying a thread wake-up
                // for each one: at most one wake per `coalesce` while commands keep coming.
                if !self.coalesce.is_zero() && !self.rx.is_empty() {
                    let until = last_wake + self.coalesce;
                    let now = Instant::now();
                    if until > now {
                        std::thread::sleep(until - now);
                    }
                }
                last_wake = Instant::now();
                self.now = last_wake;
                // Drain what else is queued before ticking, bounded so ticks are not starved.
                for _ in 0..1024 {
                    match self.rx.try_recv() {
                        Ok(c) => {
                            if self.handle(c) {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            self.run_due_ticks();
        }
    }

    fn dir(&self) -> std::sync::MutexGuard<'_, HashMap<String, Placement>> {
        self.directory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run_due_ticks(&mut self) {
        let now = Instant::now();
        self.now = now;
        let now_ms = now.duration_since(self.epoch).as_millis() as u64;
        let due: Vec<String> =
            self.rooms.iter().filter(|(_, r)| r.ticking() && r.next_tick <= now).map(|(id, _)| id.clone()).collect();
        for id in due {
            self.arrivals_deadline(&id, now);
            let Some(slot) = self.rooms.get_mut(&id) else { continue };
            slot.next_tick = next_tick_after(slot.next_tick, slot.period, now);
            let room_ms = u64::try_from(i64::try_from(now_ms).unwrap_or(i64::MAX).saturating_add(slot.clock_offset_ms))
                .unwrap_or(0);
            let Some(guest) = slot.guest.as_mut() else { continue };
            let started = Instant::now();
            let r = guest.tick(room_ms);
            let took = started.elapsed();
            slot.ticks += 1;
            if slot.tick_us.len() == TICK_SAMPLES {
                slot.tick_us.pop_front();
            }
            slot.tick_us.push_back(took.as_secs_f32() * 1e6);
            self.metrics.tick_seconds.observe(took.as_secs_f64());
            self.metrics.player_ticks_total.inc_by(slot.players.len() as u64);
            self.after_call(&id, r);
        }
    }

    /// Applies a call's effects, or faults the room (the guest faulted, or its commits could not
    /// be kept).
    fn after_call<T>(&mut self, id: &str, r: Result<T, GuestFault>) -> Option<T> {
        self.call_durable_at = 0;
        let slot = self.rooms.get_mut(id)?;
        let r = match r {
            Ok(v) => match slot.guest.as_mut() {
                Some(g) => {
                    let oversized = g.take_oversized();
                    if oversized > 0 {
                        self.metrics.guest_oversized_datagrams_total.inc_by(oversized);
                    }
                    let outbox = self.outbox.as_deref().map(|o| (o, id, slot.epoch));
                    match apply_effects(&self.metrics, &slot.players, g.take_effects(), outbox, self.now) {
                        Ok(durable_at) => {
                            self.call_durable_at = durable_at;
                            slot.last_seq = slot.last_seq.max(durable_at);
                            Ok(v)
                        }
                        Err(message) => Err(GuestFault { kind: FaultKind::OutboxFull, message }),
                    }
                }
                None => Ok(v),
            },
            Err(f) => Err(f),
        };
        match r {
            Ok(v) => Some(v),
            Err(f) => {
                fault(&self.metrics, slot, f);
                if let Some(p) = self.dir().get_mut(id) {
                    p.open = false;
                }
                None
            }
        }
    }

    /// Handles one command; `true` means stop the worker.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Create { spec, compiled, reply } => {
                let _ = reply.send(self.create(spec, compiled));
            }
            Command::CreateRelay { spec, reply } => {
                let _ = reply.send(self.create_relay(spec));
            }
            Command::Signal { room, data, reply } => {
                let _ = reply.send(self.signal(&room, &data));
            }
            Command::Info { room, reply } => {
                // A room that moved away is not this node's any more.
                let here = |r: &&RoomSlot| !matches!(r.motion, Motion::Gone(_));
                let infos = match room {
                    Some(id) => self.rooms.get(&id).filter(here).map(|r| vec![r.info()]).unwrap_or_default(),
                    None => self.rooms.values().filter(here).map(RoomSlot::info).collect(),
                };
                let _ = reply.send(infos);
            }
            Command::Players { room, reply } => {
                let players = self.rooms.get(&room).map_or_else(Vec::new, |slot| {
                    slot.players.values().map(|l| (l.id, l.name.clone(), l.remote())).collect()
                });
                let _ = reply.send(players);
            }
            Command::Close { room, reply } => {
                let r = match self.rooms.remove(&room) {
                    Some(slot) => {
                        for p in slot.players.values() {
                            p.close(CloseCode::Kicked, "the room was closed by the operator");
                        }
                        Ok(())
                    }
                    None => Err(RoomError::NotFound(room)),
                };
                let _ = reply.send(r);
            }
            Command::Upgrade { room, compiled, reply } => {
                let _ = reply.send(self.upgrade(&room, compiled));
            }
            Command::Join { room, link, saved, reply } => {
                let r = self.join(&room, link, saved);
                if r.is_err() {
                    self.release(&room);
                    self.close_if_abandoned(&room);
                }
                let _ = reply.send(r);
            }
            Command::Leave { room, link, done } => {
                self.leave(&room, &link);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::Message { room, player, to, data, reliable } => self.message(&room, player, to, data, reliable),
            Command::Export { room, reply } => {
                let _ = reply.send(self.export(&room));
            }
            Command::Resume { room } => self.resume(&room),
            Command::Hand { room, forward, reply } => {
                let _ = reply.send(self.hand(&room, forward));
            }
            Command::Import { export, compiled, limits, reply } => {
                let _ = reply.send(self.import(*export, compiled, limits));
            }
            Command::Forwarded { room, items } => {
                for item in items {
                    self.forwarded(&room, item);
                }
            }
            Command::Shutdown { reply } => {
                for slot in self.rooms.values() {
                    for p in slot.players.values() {
                        p.close(CloseCode::NodeShutdown, "the node is shutting down");
                    }
                }
                let _ = reply.send(());
                return true;
            }
        }
        false
    }

    fn instantiate(&self, spec: &RoomSpec, compiled: Arc<Compiled>, log: RoomLog) -> Result<GuestInstance, RoomError> {
        let mut g = GuestInstance::new(compiled, self.host.limits.clone(), log, spec.seed)?;
        g.init(&spec.id, &spec.config)?.map_err(|e| RoomError::Refused(format!("init refused: {e}")))?;
        Ok(g)
    }

    fn create(&mut self, spec: RoomSpec, compiled: Arc<Compiled>) -> Result<RoomCreated, RoomError> {
        if self.rooms.contains_key(&spec.id) {
            return Err(RoomError::Exists(spec.id));
        }
        let log = RoomLog::new(self.host.limits.log_lines, 512);
        let mut guest = self.instantiate(&spec, compiled.clone(), log.clone())?;
        // A new life, even under an id a closed room had: its commits never give way to that one's.
        let epoch = RoomEpoch { lineage: rand::random::<u64>().max(1), moves: 0 };
        // No player is in a new room yet: init's sends reach nobody; its commits still count.
        let outbox = self.outbox.as_deref().map(|o| (o, spec.id.as_str(), epoch));
        let last_seq = apply_effects(&self.metrics, &HashMap::new(), guest.take_effects(), outbox, self.now)
            .map_err(RoomError::Refused)?;
        let created =
            RoomCreated { room: spec.id.clone(), module: spec.module.clone(), version: compiled.version.clone() };
        let id = spec.id.clone();
        let mut slot = RoomSlot::new(spec, compiled.version.clone(), false, Some(guest), log, self.epoch);
        (slot.epoch, slot.last_seq) = (epoch, last_seq);
        self.rooms.insert(id, slot);
        self.metrics.rooms_created_total.inc();
        Ok(created)
    }

    fn create_relay(&mut self, spec: RoomSpec) -> Result<RoomCreated, RoomError> {
        if self.rooms.contains_key(&spec.id) {
            return Err(RoomError::Exists(spec.id));
        }
        let created = RoomCreated { room: spec.id.clone(), module: spec.module.clone(), version: "builtin".into() };
        let log = RoomLog::new(self.host.limits.log_lines, 512);
        self.rooms.insert(created.room.clone(), RoomSlot::new(spec, "builtin".into(), true, None, log, self.epoch));
        self.metrics.rooms_created_total.inc();
        Ok(created)
    }

    fn release(&self, room: &str) {
        if let Some(p) = self.dir().get_mut(room) {
            p.players = p.players.saturating_sub(1);
        }
    }

    fn join(&mut self, room: &str, link: Arc<PlayerLink>, saved: SavedState) -> Result<JoinedRoom, Refusal> {
        let slot = self
            .rooms
            .get_mut(room)
            .ok_or_else(|| Refusal::node(CloseCode::JoinRefused, format!("room {room} is gone")))?;
        if let Some(f) = &slot.fault {
            return Err(Refusal::guest(CloseCode::ModuleFault, format!("room {room} is faulted: {}", f.message)));
        }
        if !matches!(slot.motion, Motion::Still) {
            return Err(Refusal::node(CloseCode::NodeNotAccepting, format!("room {room} is moving to another node")));
        }
        if let Some(there) = slot.players.get(&link.id) {
            if !there.is_closed() {
                return Err(Refusal::player(
                    CloseCode::JoinRefused,
                    format!("player {} is already in room {room}", link.id),
                ));
            }
            // A connection already closed (replaced by this reconnect) whose `Leave` has not
            // arrived yet: carry it out now, so the guest sees `leave` before this `join`.
            let there = there.clone();
            self.leave(room, &there);
        }
        let slot = self
            .rooms
            .get_mut(room)
            .ok_or_else(|| Refusal::node(CloseCode::JoinRefused, format!("room {room} is gone")))?;
        let joined = JoinedRoom { room: room.to_string(), tick_hz: slot.spec.tick_hz };
        if slot.relay {
            slot.players.insert(link.id, link);
        } else {
            let player = Player {
                id: link.id,
                name: link.name.clone(),
                saved: match saved {
                    SavedState::None => Saved::None,
                    SavedState::Found(b) => Saved::Found(b),
                    SavedState::Unavailable => Saved::Unavailable,
                },
            };
            let guest =
                slot.guest.as_mut().ok_or_else(|| Refusal::guest(CloseCode::ModuleFault, "the room has no guest"))?;
            let r = guest.join(&player);
            // In the room before the effects run, so a welcome message from `join` reaches them.
            if matches!(r, Ok(Ok(()))) {
                slot.players.insert(link.id, link);
            }
            match self.after_call(room, r) {
                Some(Ok(())) => {}
                Some(Err(reason)) => return Err(Refusal::guest(CloseCode::JoinRefused, reason)),
                None => return Err(Refusal::guest(CloseCode::ModuleFault, "the room's guest faulted during join")),
            }
        }
        self.metrics.players_joined_total.inc();
        Ok(joined)
    }

    fn leave(&mut self, room: &str, link: &Arc<PlayerLink>) {
        let Some(slot) = self.rooms.get_mut(room) else { return };
        let player = link.id;
        if !slot.players.get(&player).is_some_and(|l| Arc::ptr_eq(l, link)) {
            return;
        }
        slot.players.remove(&player);
        match &mut slot.motion {
            Motion::Still => {}
            // The guest hears of it when the room resumes here, or the target's when it moved.
            Motion::Paused(held) => {
                held.push_back(Forwarded::End { player });
                self.release(room);
                return;
            }
            Motion::Gone(forward) => {
                tracing::debug!(room, player, "a moved player's old connection ended; forwarding its end");
                if forward.try_send(Forwarded::End { player }).is_err() {
                    tracing::warn!(room, player, "the end of a moved player's stream could not be forwarded");
                }
                if slot.players.is_empty() {
                    self.rooms.remove(room);
                }
                return;
            }
        }
        self.release(room);
        let Some(slot) = self.rooms.get_mut(room) else { return };
        if let Some(g) = slot.guest.as_mut() {
            let r = g.leave(player);
            self.after_call(room, r);
        }
        self.close_if_abandoned(room);
    }

    /// Closes a room that a player join created once nobody is in it or on the way in (the
    /// directory's count includes reservations, so a player about to join keeps it open).
    fn close_if_abandoned(&mut self, room: &str) {
        let Some(slot) = self.rooms.get(room) else { return };
        // A faulted room stays listed with its reason, for the operator to read and delete.
        if !slot.spec.ephemeral || !slot.players.is_empty() || slot.fault.is_some() {
            return;
        }
        let mut dir = self.directory.lock().unwrap_or_else(|e| e.into_inner());
        if dir.get(room).is_some_and(|p| p.players == 0) {
            dir.remove(room);
            drop(dir);
            self.rooms.remove(room);
        }
    }

    fn message(&mut self, room: &str, player: u64, to: u64, data: Vec<u8>, reliable: bool) {
        let Some(slot) = self.rooms.get_mut(room) else { return };
        if !slot.players.contains_key(&player) {
            return;
        }
        // A room on the move keeps every reliable message, in order, for wherever it runs next;
        // unreliable ones may be dropped, counted.
        let kept = match &mut slot.motion {
            Motion::Still if reliable && slot.arrivals.is_waiting(player) => {
                Some(slot.arrivals.hold(player, to, data.clone()))
            }
            Motion::Still => None,
            _ if !reliable => Some(false),
            Motion::Paused(held) => Some(
                held.len() < MAX_HELD && {
                    held.push_back(Forwarded::Message { player, to, data: data.clone() });
                    true
                },
            ),
            Motion::Gone(forward) => {
                Some(forward.try_send(Forwarded::Message { player, to, data: data.clone() }).is_ok())
            }
        };
        match kept {
            Some(true) => return,
            Some(false) => {
                self.metrics.moved_messages_dropped_total.inc();
                return;
            }
            None => {}
        }
        self.deliver(room, player, to, data, reliable);
    }

    /// Hands a player's message to the room: the guest, or the relay's players.
    fn deliver(&mut self, room: &str, player: u64, to: u64, data: Vec<u8>, reliable: bool) {
        let Some(slot) = self.rooms.get_mut(room) else { return };
        self.metrics.messages_in_total.inc();
        self.metrics.bytes_in_total.inc_by(data.len() as u64);
        if slot.relay {
            if to == 0 {
                for (id, p) in &slot.players {
                    if *id != player {
                        p.send(player, &data, reliable, self.now);
                    }
                }
            } else if let Some(p) = slot.players.get(&to) {
                p.send(player, &data, reliable, self.now);
            }
            return;
        }
        if let Some(g) = slot.guest.as_mut() {
            let r = g.message(player, &data);
            self.after_call(room, r);
        }
    }

    fn running(&mut self, id: &str) -> Result<&mut GuestInstance, RoomError> {
        let slot = self.rooms.get_mut(id).ok_or_else(|| RoomError::NotFound(id.to_string()))?;
        match (&mut slot.guest, &slot.fault) {
            (Some(g), _) => Ok(g),
            (None, Some(f)) => {
                Err(RoomError::Faulted { room: id.to_string(), kind: f.kind.to_string(), message: f.message.clone() })
            }
            (None, None) => Err(RoomError::Refused(format!("room {id:?} is a built-in relay room and has no guest"))),
        }
    }

    fn signal(&mut self, id: &str, data: &[u8]) -> Result<Signalled, RoomError> {
        self.metrics.signals_total.inc();
        let r = self.running(id)?.signal(data);
        let fault = r.as_ref().err().cloned();
        match self.after_call(id, r) {
            Some(reply) => Ok(Signalled { reply, durable_at: self.call_durable_at }),
            None => {
                Err(RoomError::Guest(fault.unwrap_or(GuestFault { kind: FaultKind::Trap, message: "unknown".into() })))
            }
        }
    }

    fn upgrade(&mut self, id: &str, compiled: Arc<Compiled>) -> Result<RoomCreated, RoomError> {
        let snapshot = {
            let r = self.running(id)?.snapshot();
            let fault = r.as_ref().err().cloned();
            match self.after_call(id, r) {
                Some(s) => s,
                None => {
                    return Err(RoomError::Guest(
                        fault.unwrap_or(GuestFault { kind: FaultKind::Trap, message: "snapshot".into() }),
                    ));
                }
            }
        };
        let slot = self.rooms.get(id).ok_or_else(|| RoomError::NotFound(id.to_string()))?;
        let spec = slot.spec.clone();
        let log = slot.log.clone();
        // The new instance is built to completion before the old one is touched: any failure here
        // leaves the room exactly as it was.
        let attempt = self.instantiate(&spec, compiled.clone(), log).and_then(|mut g| match g.restore(&snapshot)? {
            Ok(()) => Ok(g),
            Err(e) => Err(RoomError::Refused(format!("the new version refused the snapshot: {e}"))),
        });
        match attempt {
            Ok(mut g) => {
                // Effects of the new instance's init/restore would repeat what players already got.
                let _ = g.take_effects();
                let slot = self.rooms.get_mut(id).ok_or_else(|| RoomError::NotFound(id.to_string()))?;
                slot.guest = Some(g);
                slot.version = compiled.version.clone();
                slot.log.with(|l| l.push_line(&format!("host: upgraded to version {}", compiled.version)));
                self.metrics.room_upgrades_total.inc();
                Ok(RoomCreated { room: id.to_string(), module: spec.module, version: compiled.version.clone() })
            }
            Err(e) => {
                self.metrics.room_upgrades_failed_total.inc();
                Err(e)
            }
        }
    }
}

/// Moving rooms ([`super::moving`]).
impl Worker {
    fn export(&mut self, id: &str) -> Result<RoomExport, RoomError> {
        let slot = self.rooms.get(id).ok_or_else(|| RoomError::NotFound(id.to_string()))?;
        if !matches!(slot.motion, Motion::Still) {
            return Err(RoomError::Moving(format!("room {id:?} is already moving")));
        }
        if !slot.arrivals.is_empty() {
            return Err(RoomError::Moving(format!(
                "room {id:?} is still taking in players from its last move; try again shortly"
            )));
        }
        // Commands run between ticks, so this is a tick boundary.
        let snapshot = {
            let r = self.running(id)?.snapshot();
            let fault = r.as_ref().err().cloned();
            self.after_call(id, r).ok_or_else(|| {
                RoomError::Guest(fault.unwrap_or(GuestFault { kind: FaultKind::Trap, message: "snapshot".into() }))
            })?
        };
        let now_ms = self.now.duration_since(self.epoch).as_millis() as i64;
        let slot = self.rooms.get_mut(id).ok_or_else(|| RoomError::NotFound(id.to_string()))?;
        let rng = slot.guest.as_ref().map_or(0, GuestInstance::rng_state);
        slot.motion = Motion::Paused(VecDeque::new());
        let mut players: Vec<(u64, String)> = slot.players.values().map(|l| (l.id, l.name.clone())).collect();
        players.sort_unstable();
        Ok(RoomExport {
            spec: slot.spec.clone(),
            version: slot.version.clone(),
            snapshot,
            rng,
            now_ms: u64::try_from(now_ms.saturating_add(slot.clock_offset_ms)).unwrap_or(0),
            ticks: slot.ticks,
            players,
            epoch: slot.epoch,
            last_seq: slot.last_seq,
        })
    }

    fn resume(&mut self, id: &str) {
        let Some(slot) = self.rooms.get_mut(id) else { return };
        let Motion::Paused(held) = std::mem::take(&mut slot.motion) else { return };
        // The ticks it missed are skipped, as for a room that fell behind.
        slot.next_tick = next_tick_after(slot.next_tick, slot.period, self.now);
        for item in held {
            self.apply_held(id, item);
        }
    }

    /// What a paused room held, carried out here after all.
    fn apply_held(&mut self, id: &str, item: Forwarded) {
        match item {
            Forwarded::Message { player, to, data } => self.deliver(id, player, to, data, true),
            Forwarded::End { player } => {
                if let Some(g) = self.rooms.get_mut(id).and_then(|s| s.guest.as_mut()) {
                    let r = g.leave(player);
                    self.after_call(id, r);
                }
                self.close_if_abandoned(id);
            }
        }
    }

    fn hand(
        &mut self,
        id: &str,
        forward: tokio::sync::mpsc::Sender<Forwarded>,
    ) -> Result<Vec<Arc<PlayerLink>>, RoomError> {
        let slot = self.rooms.get_mut(id).ok_or_else(|| RoomError::NotFound(id.to_string()))?;
        let Motion::Paused(held) = std::mem::take(&mut slot.motion) else {
            return Err(RoomError::Refused(format!("room {id:?} is not paused for a move")));
        };
        for item in held {
            if forward.try_send(item).is_err() {
                self.metrics.moved_messages_dropped_total.inc();
            }
        }
        // A player that never rejoined here after the room's last move has no connection to
        // tell or to end: its end goes now, and its next node lets it go at its own deadline.
        let absent: Vec<u64> = slot.players.values().filter(|l| l.is_detached()).map(|l| l.id).collect();
        for player in absent {
            slot.players.remove(&player);
            if forward.try_send(Forwarded::End { player }).is_err() {
                self.metrics.moved_messages_dropped_total.inc();
            }
        }
        // The instance goes now (its memory slot with it); the slot stays while old connections
        // still deliver.
        slot.guest = None;
        let players: Vec<Arc<PlayerLink>> = slot.players.values().cloned().collect();
        if players.is_empty() {
            self.rooms.remove(id);
        } else {
            slot.motion = Motion::Gone(forward);
        }
        self.dir().remove(id);
        self.metrics.rooms_moved_out_total.inc();
        Ok(players)
    }

    fn import(
        &mut self,
        export: RoomExport,
        compiled: Arc<Compiled>,
        limits: Arc<crate::room::player::PlayerLimits>,
    ) -> Result<Placeholders, RoomError> {
        let id = export.spec.id.clone();
        if self.rooms.contains_key(&id) {
            return Err(RoomError::Exists(id));
        }
        let log = RoomLog::new(self.host.limits.log_lines, 512);
        let mut guest = self.instantiate(&export.spec, compiled.clone(), log.clone())?;
        match guest.restore(&export.snapshot)? {
            Ok(()) => {}
            Err(e) => return Err(RoomError::Refused(format!("restore refused the snapshot: {e}"))),
        }
        // What init and restore did would repeat what the players already got, or commit twice.
        let _ = guest.take_effects();
        guest.set_rng_state(export.rng);
        let mut slot = RoomSlot::new(export.spec, compiled.version.clone(), false, Some(guest), log, self.epoch);
        // Its first tick here is on the next instant of its phase, not a period later: the room
        // has been paused since its last tick on the source.
        slot.next_tick = slot.next_tick.checked_sub(slot.period).unwrap_or(slot.next_tick);
        let now_ms = self.now.duration_since(self.epoch).as_millis() as i64;
        slot.clock_offset_ms = i64::try_from(export.now_ms).unwrap_or(i64::MAX).saturating_sub(now_ms);
        slot.ticks = export.ticks;
        slot.epoch = RoomEpoch { lineage: export.epoch.lineage, moves: export.epoch.moves.saturating_add(1) };
        slot.arrivals = Arrivals::expect(export.players.iter().map(|(p, _)| *p));
        slot.arrivals_until = Some(self.now + crate::migrate::credentials::TTL);
        let mut links = Vec::with_capacity(export.players.len());
        for (player, name) in export.players {
            let link = PlayerLink::detached(player, name, limits.clone(), self.metrics.clone());
            slot.players.insert(player, link.clone());
            links.push(link);
        }
        slot.log.with(|l| l.push_line("host: moved here"));
        self.rooms.insert(id, slot);
        self.metrics.rooms_moved_in_total.inc();
        Ok(links)
    }

    /// An item the source forwarded: a message of a moving player's old connection, delivered
    /// now, or the end of it, after which its new connection's messages are delivered.
    fn forwarded(&mut self, id: &str, item: Forwarded) {
        match item {
            Forwarded::Message { player, to, data } => {
                if self.rooms.get(id).is_some_and(|s| s.arrivals.is_waiting(player)) {
                    self.deliver(id, player, to, data, true);
                }
            }
            Forwarded::End { player } => {
                tracing::debug!(room = id, player, "the source ended a moved player's old stream");
                let Some(slot) = self.rooms.get_mut(id) else { return };
                for (to, data) in slot.arrivals.end(player) {
                    self.deliver(id, player, to, data, true);
                }
            }
        }
    }

    /// Past its deadline, a moved room stops waiting: old connections the source never ended
    /// are taken as ended, and players who never rejoined leave (the guest sees `leave`).
    fn arrivals_deadline(&mut self, id: &str, now: Instant) {
        let Some(slot) = self.rooms.get_mut(id) else { return };
        if slot.arrivals_until.is_none_or(|t| t > now) {
            return;
        }
        slot.arrivals_until = None;
        let waiting: Vec<u64> = slot.players.keys().copied().filter(|p| slot.arrivals.is_waiting(*p)).collect();
        let absent: Vec<Arc<PlayerLink>> = slot.players.values().filter(|l| l.is_detached()).cloned().collect();
        for player in waiting {
            tracing::warn!(room = id, player, "the source never ended this player's old stream; going on without it");
            self.forwarded(id, Forwarded::End { player });
        }
        for link in absent {
            tracing::info!(room = id, player = link.id, "a moved player never rejoined");
            link.close(CloseCode::MoveRefused, "the player did not follow the room in time");
            self.leave(id, &link);
        }
    }
}

fn fault(metrics: &Metrics, slot: &mut RoomSlot, f: GuestFault) {
    if let Some(g) = slot.guest.take() {
        let s = g.stats();
        slot.calls = s.calls;
        slot.guest_us = s.guest_us;
        slot.forgiven = s.preemptions_forgiven;
    }
    tracing::warn!(room = %slot.spec.id, module = %slot.spec.module, kind = %f.kind, message = %f.message, "room faulted");
    metrics.guest_faults_total.inc();
    let counter = match f.kind {
        FaultKind::CpuBudget => &metrics.guest_faults_cpu_total,
        FaultKind::MemoryLimit => &metrics.guest_faults_memory_total,
        FaultKind::OutputLimit => &metrics.guest_faults_output_total,
        FaultKind::Trap | FaultKind::OutboxFull => &metrics.guest_faults_trap_total,
    };
    counter.inc();
    for p in slot.players.values() {
        p.close(CloseCode::ModuleFault, &format!("{}: {}", f.kind, f.message));
    }
    slot.fault = Some(Fault { kind: f.kind.to_string(), message: f.message });
}

/// Carries out a call's effects on the room's players, and queues its commits in the outbox (when
/// the node forwards to a core); returns the sequence number the last commit will be durable at
/// (0: none). `Err` means a commit could not be kept: the caller faults the room rather than let
/// it believe its state is saved.
///
/// Players get the call's messages now, before its commits reach the disk at the outbox's next
/// group fsync (`outpost_outbox_group_commit_seconds`): waiting would add that to every tick.
fn apply_effects(
    metrics: &Metrics,
    players: &HashMap<u64, Arc<PlayerLink>>,
    effects: Vec<Effect>,
    outbox: Option<(&crate::forward::outbox::Outbox, &str, RoomEpoch)>,
    now: Instant,
) -> Result<u64, String> {
    let mut durable_at = 0;
    for e in effects {
        match e {
            Effect::Send { to, data, reliable } => {
                if let Some(p) = players.get(&to) {
                    p.send(0, &data, reliable, now);
                }
            }
            Effect::Broadcast { data, reliable } => {
                for p in players.values() {
                    p.send(0, &data, reliable, now);
                }
            }
            Effect::Kick { who, reason } => {
                if let Some(p) = players.get(&who) {
                    p.close(CloseCode::Kicked, &reason);
                }
            }
            Effect::Commit { key, value } => {
                metrics.guest_commits_total.inc();
                if let Some((o, room, epoch)) = outbox {
                    match o.append(room, epoch, key, value) {
                        Ok(seq) => durable_at = seq,
                        Err(e) => {
                            metrics.outbox_full_total.inc();
                            return Err(e.to_string());
                        }
                    }
                }
            }
        }
    }
    Ok(durable_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_of_one_rate_tick_on_shared_phases_exactly_once_per_period() {
        let origin = Instant::now();
        let ms = Duration::from_millis;
        for hz in [1, 20, 30, 60, 128, 1000] {
            let (period, _) = tick_schedule(hz, origin, origin);
            let nominal = 1.0 / f64::from(hz);
            assert!((period.as_secs_f64() - nominal).abs() / nominal < 1e-6, "{hz} Hz: {period:?}");
            let step = period / TICK_PHASES as u32;
            // Rooms created at any moment: the first tick is a period away, at most a step more,
            // and on the shared grid, so rooms created apart tick at the same instants.
            for created in [ms(0), ms(3), ms(17), ms(999), ms(12_345)] {
                let now = origin + created;
                let (_, first) = tick_schedule(hz, origin, now);
                let wait = first - now;
                assert!(wait >= period && wait <= period + step, "{hz} Hz at {created:?}: {wait:?}");
                assert_eq!((first - origin).as_nanos() % step.as_nanos(), 0, "{hz} Hz at {created:?}");
            }
        }
        // 125 rooms of 20 Hz created over a second share at most ten tick instants per period.
        let (period, _) = tick_schedule(20, origin, origin);
        let phases: std::collections::HashSet<u128> = (0..125u64)
            .map(|i| {
                let (_, first) = tick_schedule(20, origin, origin + Duration::from_micros(i * 7_919));
                (first - origin).as_nanos() % period.as_nanos()
            })
            .collect();
        assert!(phases.len() <= TICK_PHASES as usize, "{} phases", phases.len());
    }

    #[test]
    fn a_room_that_fell_behind_skips_its_missed_ticks_and_keeps_its_phase() {
        let origin = Instant::now();
        let ms = Duration::from_millis;
        let period = ms(50);
        // On time, or late by less than a period: the next tick is a period after the last one due.
        assert_eq!(next_tick_after(origin, period, origin), origin + ms(50));
        assert_eq!(next_tick_after(origin, period, origin + ms(30)), origin + ms(50));
        assert_eq!(next_tick_after(origin, period, origin + ms(50)), origin + ms(50));
        // Late by more: the missed ticks are skipped, and the next one is on the room's phase,
        // at most a period away.
        for late in [51, 99, 100, 175, 12_345] {
            let now = origin + ms(late);
            let next = next_tick_after(origin, period, now);
            assert!(next > now && next - now <= period, "{late} ms late: {:?}", next - now);
            assert_eq!((next - origin).as_nanos() % period.as_nanos(), 0, "{late} ms late");
        }
    }
}
