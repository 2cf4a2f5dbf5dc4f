//! One room's sandbox: its `Store`, its instance, and the budgeted calls into it.
//!
//! Every export call goes through [`GuestInstance::call`], which resets the CPU deadline, runs
//! the guest, and turns any failure into a [`GuestFault`] with a kind an operator can act on.
//! Effects the guest asks for (send, commit, ...) are queued in the store and handed back to the
//! room after the call; the guest never touches the network or the outbox directly.

use super::Compiled;
use super::bindings::{Delivery, LogLevel, Player, Room};
use super::limits::SandboxLimits;
use super::output::RoomLog;
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Something the guest asked the host to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// To one player.
    Send { to: u64, data: Vec<u8>, reliable: bool },
    /// To every player in the room.
    Broadcast { data: Vec<u8>, reliable: bool },
    /// Disconnect a player.
    Kick { who: u64, reason: String },
    /// Authoritative state for the core region.
    Commit { key: String, value: Vec<u8> },
}

/// What kind of failure faulted a room. Its text (`cpu-budget`...) is what operators see in
/// `GET /v1/rooms/{id}`, logs and close reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The guest ran past its per-call CPU budget.
    CpuBudget,
    /// The guest tried to grow its memory past the room's limit.
    MemoryLimit,
    /// The guest wrote more effects or output than a call may.
    OutputLimit,
    /// The guest trapped (a panic, an unreachable, a bad access).
    Trap,
    /// The guest committed while the outbox was at its hard limit: the commit could not be kept,
    /// so the room stops rather than believe its state is saved.
    OutboxFull,
}

impl FaultKind {
    /// The stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::CpuBudget => "cpu-budget",
            FaultKind::MemoryLimit => "memory-limit",
            FaultKind::OutputLimit => "output-limit",
            FaultKind::Trap => "trap",
            FaultKind::OutboxFull => "outbox-full",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a guest call failed; the room is faulted with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct GuestFault {
    /// What kind of failure.
    pub kind: FaultKind,
    /// Detail for the operator (the guest's panic message for a trap).
    pub message: String,
}

/// Counters a room keeps about its guest.
#[derive(Debug, Default, Clone)]
pub struct GuestStats {
    /// Export calls made.
    pub calls: u64,
    /// Wall time spent inside guest calls, µs.
    pub guest_us: u64,
    /// Epoch deadlines forgiven because the thread was preempted, not spinning.
    pub preemptions_forgiven: u64,
    /// Unreliable sends over the datagram cap.
    pub oversized_datagrams: u64,
    /// How many of those the node's metrics already counted.
    pub oversized_reported: u64,
}

/// The store's data: WASI (empty), limits, queued effects and bookkeeping.
pub struct RoomState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Arc<SandboxLimits>,
    log: RoomLog,
    effects: Vec<Effect>,
    effect_bytes: usize,
    output_exceeded: bool,
    memory_exceeded: bool,
    cpu_exceeded: bool,
    memory_bytes: usize,
    call_started: Instant,
    call_cpu_lower: Duration,
    /// The running call's CPU budget (`message` has its own).
    budget: Duration,
    rng: u64,
    stats: GuestStats,
}

impl WasiView for RoomState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl ResourceLimiter for RoomState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            // Trapping (rather than returning false) makes the fault clearly `memory-limit`
            // instead of a guest allocation failure that shows up as a generic trap.
            self.memory_exceeded = true;
            wasmtime::bail!("memory limit of {} bytes reached (wanted {desired})", self.limits.memory_bytes);
        }
        self.memory_bytes = desired;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            self.memory_exceeded = true;
            wasmtime::bail!("table limit of {} elements reached", self.limits.table_elements);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }
    fn tables(&self) -> usize {
        self.limits.tables
    }
    fn memories(&self) -> usize {
        self.limits.memories
    }
}

impl RoomState {
    fn queue(&mut self, bytes: usize, effect: Effect) -> wasmtime::Result<()> {
        self.effect_bytes = self.effect_bytes.saturating_add(bytes);
        if self.effects.len() >= self.limits.max_effects_per_call
            || self.effect_bytes > self.limits.max_effect_bytes_per_call
            || bytes > self.limits.max_message_bytes
        {
            self.output_exceeded = true;
            wasmtime::bail!(
                "guest output over the per-call limit ({} effects, {} bytes, {} bytes per message)",
                self.limits.max_effects_per_call,
                self.limits.max_effect_bytes_per_call,
                self.limits.max_message_bytes
            );
        }
        self.effects.push(effect);
        Ok(())
    }

    fn check_datagram(&mut self, len: usize, how: Delivery) {
        if matches!(how, Delivery::Unreliable) && len > self.limits.datagram_cap {
            self.stats.oversized_datagrams += 1;
            self.log.with(|l| {
                l.push_line(&format!(
                    "host: unreliable message of {len} bytes is over the datagram cap of {} bytes; sent reliably instead",
                    self.limits.datagram_cap
                ))
            });
        }
    }
}

impl super::bindings::outpost::room::types::Host for RoomState {}

impl super::bindings::outpost::room::host::Host for RoomState {
    fn send(&mut self, to: u64, data: Vec<u8>, how: Delivery) -> wasmtime::Result<()> {
        self.check_datagram(data.len(), how);
        let reliable = matches!(how, Delivery::Reliable) || data.len() > self.limits.datagram_cap;
        self.queue(data.len(), Effect::Send { to, data, reliable })
    }

    fn broadcast(&mut self, data: Vec<u8>, how: Delivery) -> wasmtime::Result<()> {
        self.check_datagram(data.len(), how);
        let reliable = matches!(how, Delivery::Reliable) || data.len() > self.limits.datagram_cap;
        self.queue(data.len(), Effect::Broadcast { data, reliable })
    }

    fn kick(&mut self, who: u64, reason: String) -> wasmtime::Result<()> {
        let reason: String = reason.chars().take(256).collect();
        self.queue(reason.len(), Effect::Kick { who, reason })
    }

    fn commit(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.queue(key.len() + value.len(), Effect::Commit { key, value })
    }

    fn log(&mut self, level: LogLevel, msg: String) -> wasmtime::Result<()> {
        let level = match level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        self.log.with(|l| l.push_line(&format!("{level}: {msg}")));
        Ok(())
    }

    fn random(&mut self) -> wasmtime::Result<u64> {
        // splitmix64: seeded per room, so a room's randomness can be replayed from its seed.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Ok(z ^ (z >> 31))
    }
}

/// CPU time of the calling thread. Epochs measure wall time; this tells a guest that really spent
/// its budget from a thread that was merely preempted on a busy machine. It is a real syscall
/// (about 0.6 µs here), so it is read only when a deadline fires and by [`refresh_cpu_mark`],
/// never on every call.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_THREAD_CPUTIME_ID is always available
    // on Linux; the call only writes into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

thread_local! {
    /// (thread CPU, wall) at the last reading on this thread: the reference against which a
    /// deadline measures how much of the elapsed wall time the thread was actually running.
    static CPU_MARK: Cell<(Duration, Instant)> = Cell::new((thread_cpu_time(), Instant::now()));
}

/// Re-reads this thread's CPU mark if it is older than `max_age`. Room workers call this once per
/// loop turn; an older mark only makes the budget check more lenient, never wrong.
pub fn refresh_cpu_mark(max_age: Duration) {
    CPU_MARK.with(|m| {
        let (_, wall) = m.get();
        if wall.elapsed() >= max_age {
            m.set((thread_cpu_time(), Instant::now()));
        }
    });
}

/// Thread CPU and wall clock at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    /// Thread CPU time.
    pub cpu: Duration,
    /// Wall clock.
    pub wall: Instant,
}

/// The budget decision when a call's epoch deadline passes, as a pure function.
///
/// `lower` is a lower bound of the CPU the call has used so far: the wall time since it started
/// (or since the mark, if later) minus every moment the thread was not running since the mark.
/// All preemption is charged to this call, so a preempted guest is never faulted. Returns the new
/// bound and `None` to fault, or `Some(rest)` to extend the deadline by what is left.
pub fn budget_check(
    call_started: Instant,
    lower: Duration,
    mark: CpuReading,
    now: CpuReading,
    budget: Duration,
) -> (Duration, Option<Duration>) {
    let preempted = now.wall.duration_since(mark.wall).saturating_sub(now.cpu.saturating_sub(mark.cpu));
    let since = now.wall.duration_since(call_started.max(mark.wall));
    let lower = lower + since.saturating_sub(preempted);
    if lower >= budget { (lower, None) } else { (lower, Some(budget - lower)) }
}

fn on_deadline(state: &mut RoomState, budget: Duration) -> UpdateDeadline {
    let now = CpuReading { cpu: thread_cpu_time(), wall: Instant::now() };
    let (mark_cpu, mark_wall) = CPU_MARK.with(|m| m.replace((now.cpu, now.wall)));
    let mark = CpuReading { cpu: mark_cpu, wall: mark_wall };
    let (lower, rest) = budget_check(state.call_started, state.call_cpu_lower, mark, now, budget);
    state.call_cpu_lower = lower;
    match rest {
        None => {
            state.cpu_exceeded = true;
            UpdateDeadline::Interrupt
        }
        Some(rest) => {
            state.stats.preemptions_forgiven += 1;
            UpdateDeadline::Continue(rest.as_millis().max(1) as u64)
        }
    }
}

/// A live guest: one store, one instance.
pub struct GuestInstance {
    store: Store<RoomState>,
    bindings: Room,
    /// The compiled module this instance runs.
    pub compiled: Arc<Compiled>,
    /// Keeps the epoch ticker running while this instance exists.
    _live: super::LiveInstance,
}

impl GuestInstance {
    /// Instantiates `compiled` in a fresh store with an empty WASI context.
    pub fn new(
        compiled: Arc<Compiled>,
        limits: Arc<SandboxLimits>,
        log: RoomLog,
        seed: u64,
    ) -> Result<Self, GuestFault> {
        // Registered before instantiation, which can run guest code (a start function).
        let live = compiled.epoch.enter();
        let wasi = WasiCtxBuilder::new().stdout(log.clone()).stderr(log.clone()).build();
        let state = RoomState {
            wasi,
            table: ResourceTable::new(),
            limits: limits.clone(),
            log,
            effects: Vec::new(),
            effect_bytes: 0,
            output_exceeded: false,
            memory_exceeded: false,
            cpu_exceeded: false,
            memory_bytes: 0,
            call_started: Instant::now(),
            call_cpu_lower: Duration::ZERO,
            budget: limits.call_budget,
            rng: seed,
            stats: GuestStats::default(),
        };
        let mut store = Store::new(compiled.pre.engine(), state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store.epoch_deadline_callback(move |mut ctx| {
            let data = ctx.data_mut();
            let budget = data.budget;
            Ok(on_deadline(data, budget))
        });
        let budget = limits.call_budget;
        let bindings = budgeted(&mut store, "instantiate", budget, |store| compiled.pre.instantiate(store))?;
        Ok(GuestInstance { store, bindings, compiled, _live: live })
    }

    /// The room's `random` state, which a moving room takes along so its sequence goes on.
    pub fn rng_state(&self) -> u64 {
        self.store.data().rng
    }

    /// Sets the room's `random` state (a room that moved here).
    pub fn set_rng_state(&mut self, state: u64) {
        self.store.data_mut().rng = state;
    }

    /// `init(room, config)`.
    pub fn init(&mut self, room: &str, config: &[u8]) -> Result<Result<(), String>, GuestFault> {
        let b = &self.bindings;
        let budget = self.store.data().limits.call_budget;
        budgeted(&mut self.store, "init", budget, |s| b.call_init(s, room, config))
    }

    /// `join(player)`.
    pub fn join(&mut self, p: &Player) -> Result<Result<(), String>, GuestFault> {
        let b = &self.bindings;
        let budget = self.store.data().limits.call_budget;
        budgeted(&mut self.store, "join", budget, |s| b.call_join(s, p))
    }

    /// `leave(id)`.
    pub fn leave(&mut self, who: u64) -> Result<(), GuestFault> {
        let b = &self.bindings;
        let budget = self.store.data().limits.call_budget;
        budgeted(&mut self.store, "leave", budget, |s| b.call_leave(s, who))
    }

    /// `message(sender, data)`.
    pub fn message(&mut self, sender: u64, data: &[u8]) -> Result<(), GuestFault> {
        let b = &self.bindings;
        let budget = self.store.data().limits.message_budget;
        budgeted(&mut self.store, "message", budget, |s| b.call_message(s, sender, data))
    }

    /// `tick(now_ms)`.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), GuestFault> {
        let b = &self.bindings;
        let budget = self.store.data().limits.call_budget;
        budgeted(&mut self.store, "tick", budget, |s| b.call_tick(s, now_ms))
    }

    /// `signal(data)`.
    pub fn signal(&mut self, data: &[u8]) -> Result<Vec<u8>, GuestFault> {
        let b = &self.bindings;
        let budget = self.store.data().limits.call_budget;
        budgeted(&mut self.store, "signal", budget, |s| b.call_signal(s, data))
    }

    /// `snapshot()`.
    pub fn snapshot(&mut self) -> Result<Vec<u8>, GuestFault> {
        let b = &self.bindings;
        let budget = self.store.data().limits.call_budget;
        budgeted(&mut self.store, "snapshot", budget, |s| b.call_snapshot(s))
    }

    /// `restore(state)`.
    pub fn restore(&mut self, state: &[u8]) -> Result<Result<(), String>, GuestFault> {
        let b = &self.bindings;
        let budget = self.store.data().limits.call_budget;
        budgeted(&mut self.store, "restore", budget, |s| b.call_restore(s, state))
    }

    /// Effects queued by the calls since the last take.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.store.data_mut().effects)
    }

    /// Unreliable sends over the datagram cap since the last take, for the node's metric.
    pub fn take_oversized(&mut self) -> u64 {
        let s = &mut self.store.data_mut().stats;
        let n = s.oversized_datagrams - s.oversized_reported;
        s.oversized_reported = s.oversized_datagrams;
        n
    }

    /// Guest linear memory in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory_bytes
    }

    /// Counters about this guest.
    pub fn stats(&self) -> &GuestStats {
        &self.store.data().stats
    }
}

/// Runs one guest call under the CPU budget and classifies any failure.
fn budgeted<T>(
    store: &mut Store<RoomState>,
    what: &str,
    budget: Duration,
    f: impl FnOnce(&mut Store<RoomState>) -> wasmtime::Result<T>,
) -> Result<T, GuestFault> {
    store.set_epoch_deadline(budget.as_millis().max(1) as u64);
    let start = Instant::now();
    {
        let s = store.data_mut();
        s.budget = budget;
        s.call_started = start;
        s.call_cpu_lower = Duration::ZERO;
        s.effect_bytes = 0;
    }
    let result = f(store);
    let s = store.data_mut();
    s.stats.calls += 1;
    s.stats.guest_us += start.elapsed().as_micros() as u64;
    result.map_err(|e| classify(s, what, e))
}

fn classify(s: &mut RoomState, what: &str, e: wasmtime::Error) -> GuestFault {
    let (cpu, mem, out) = (s.cpu_exceeded, s.memory_exceeded, s.output_exceeded);
    s.cpu_exceeded = false;
    s.memory_exceeded = false;
    s.output_exceeded = false;
    s.effects.clear();
    if cpu {
        return GuestFault {
            kind: FaultKind::CpuBudget,
            // What was charged, and over how long, so an operator can tell a guest that really
            // spun from one that was charged for time it did not have.
            message: format!(
                "{what} ran past its CPU budget of {:?} (charged {:.1?} of CPU over {:.1?})",
                s.budget,
                s.call_cpu_lower,
                s.call_started.elapsed()
            ),
        };
    }
    if mem {
        return GuestFault { kind: FaultKind::MemoryLimit, message: format!("{what}: {e:#}") };
    }
    if out {
        return GuestFault { kind: FaultKind::OutputLimit, message: format!("{what}: {e:#}") };
    }
    let tail = s.log.with(|l| l.lines()).into_iter().rev().take(4).collect::<Vec<_>>();
    let output: Vec<String> = tail.into_iter().rev().collect();
    let mut message = format!("{what} trapped: {}", root_cause(&e));
    if !output.is_empty() {
        message.push_str(" | guest output: ");
        message.push_str(&output.join(" / "));
    }
    GuestFault { kind: FaultKind::Trap, message }
}

fn root_cause(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => format!("{e:#}").lines().next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_preempted_call_is_forgiven_and_a_spinning_one_is_not() {
        let t0 = Instant::now();
        let mark = CpuReading { cpu: Duration::from_secs(5), wall: t0 };
        let budget = 10 * MS;
        // 12 ms of wall time, but the thread ran only 2 ms of it: forgiven, with budget left.
        let now = CpuReading { cpu: mark.cpu + 2 * MS, wall: t0 + 12 * MS };
        let (lower, rest) = budget_check(t0, Duration::ZERO, mark, now, budget);
        assert_eq!(lower, 2 * MS);
        assert_eq!(rest, Some(8 * MS));
        // 12 ms of wall time, all of it running: faulted.
        let now = CpuReading { cpu: mark.cpu + 12 * MS, wall: t0 + 12 * MS };
        assert_eq!(budget_check(t0, Duration::ZERO, mark, now, budget).1, None);
        // Preemption before the call started is charged to it too (lenient, never wrong).
        let started = t0 + 20 * MS;
        let now = CpuReading { cpu: mark.cpu + 15 * MS, wall: t0 + 31 * MS };
        let (lower, rest) = budget_check(started, Duration::ZERO, mark, now, budget);
        assert_eq!(lower, Duration::ZERO, "16 ms of preemption since the mark outweighs 11 ms of wall time");
        assert!(rest.is_some());
        // The bound accumulates over several deadlines.
        let (lower, rest) =
            budget_check(started, 9 * MS, now, CpuReading { cpu: now.cpu + MS, wall: now.wall + MS }, budget);
        assert_eq!((lower, rest), (10 * MS, None));
    }
}
