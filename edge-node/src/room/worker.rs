//! One room worker thread: owns its rooms' stores, runs commands and ticks.
//!
//! The loop sleeps until the next tick is due or a command arrives. Ticks that fall behind are
//! skipped rather than bunched, so a slow room does not spiral. A fault drops the room's instance
//! at once (freeing its memory slot) and keeps the room listed as `faulted` with the reason.

use crate::host::output::RoomLog;
use crate::host::{Compiled, Effect, GuestFault, GuestInstance, WasmHost};
use crate::room::RoomError;
use crate::telemetry::Metrics;
use outpost_proto::api::{Fault, RoomCreated, RoomInfo};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
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
}

/// Requests from the async side.
pub enum Command {
    /// Instantiate and `init` a room.
    Create {
        spec: RoomSpec,
        compiled: Arc<Compiled>,
        reply: oneshot::Sender<Result<RoomCreated, RoomError>>,
    },
    /// Operator signal.
    Signal {
        room: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, RoomError>>,
    },
    /// One room's info, or all of this worker's.
    Info {
        room: Option<String>,
        reply: oneshot::Sender<Vec<RoomInfo>>,
    },
    /// Close and forget a room.
    Close {
        room: String,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    /// Hot upgrade.
    Upgrade {
        room: String,
        compiled: Arc<Compiled>,
        reply: oneshot::Sender<Result<RoomCreated, RoomError>>,
    },
}

const TICK_SAMPLES: usize = 512;
/// How stale the worker's CPU mark may get; see [`crate::host::guest::refresh_cpu_mark`].
const CPU_MARK_MAX_AGE: Duration = Duration::from_millis(20);

struct RoomSlot {
    spec: RoomSpec,
    version: String,
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
}

impl RoomSlot {
    fn info(&self) -> RoomInfo {
        let (p50, p99) = percentiles(&self.tick_us);
        let (calls, cpu, forgiven, mem) = match &self.guest {
            Some(g) => {
                let s = g.stats();
                (
                    s.calls,
                    s.guest_us,
                    s.preemptions_forgiven,
                    g.memory_bytes() as u64,
                )
            }
            None => (self.calls, self.guest_us, self.forgiven, 0),
        };
        RoomInfo {
            room: self.spec.id.clone(),
            module: self.spec.module.clone(),
            version: self.version.clone(),
            state: if self.fault.is_some() {
                "faulted"
            } else {
                "running"
            }
            .into(),
            players: 0,
            tick_hz: self.spec.tick_hz,
            max_players: self.spec.max_players,
            ticks: self.ticks,
            tick_p50_us: p50,
            tick_p99_us: p99,
            calls,
            guest_us: cpu,
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
}

impl Worker {
    /// A worker reading `rx`; `epoch` is the node's clock origin for `tick(now_ms)`.
    pub fn new(
        host: Arc<WasmHost>,
        metrics: Arc<Metrics>,
        rx: Receiver<Command>,
        epoch: Instant,
    ) -> Self {
        Worker {
            host,
            metrics,
            rx,
            epoch,
            rooms: HashMap::new(),
        }
    }

    /// Runs until every sender is gone.
    pub fn run(mut self) {
        loop {
            crate::host::guest::refresh_cpu_mark(CPU_MARK_MAX_AGE);
            let next = self
                .rooms
                .values()
                .filter(|r| r.guest.is_some())
                .map(|r| r.next_tick)
                .min();
            let cmd = match next {
                Some(t) => match self
                    .rx
                    .recv_timeout(t.saturating_duration_since(Instant::now()))
                {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match self.rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return,
                },
            };
            if let Some(c) = cmd {
                self.handle(c);
                // Drain what else is queued before ticking, bounded so ticks are not starved.
                for _ in 0..64 {
                    match self.rx.try_recv() {
                        Ok(c) => self.handle(c),
                        Err(_) => break,
                    }
                }
            }
            self.run_due_ticks();
        }
    }

    fn run_due_ticks(&mut self) {
        let now = Instant::now();
        let now_ms = now.duration_since(self.epoch).as_millis() as u64;
        let due: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.guest.is_some() && r.next_tick <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(slot) = self.rooms.get_mut(&id) else {
                continue;
            };
            slot.next_tick += slot.period;
            if slot.next_tick < now {
                slot.next_tick = now + slot.period;
            }
            let Some(guest) = slot.guest.as_mut() else {
                continue;
            };
            let started = Instant::now();
            let r = guest.tick(now_ms);
            let took = started.elapsed();
            slot.ticks += 1;
            if slot.tick_us.len() == TICK_SAMPLES {
                slot.tick_us.pop_front();
            }
            slot.tick_us.push_back(took.as_secs_f32() * 1e6);
            self.metrics.tick_seconds.observe(took);
            self.after_call(&id, r);
        }
    }

    /// Applies a call's effects, or faults the room.
    fn after_call<T>(&mut self, id: &str, r: Result<T, GuestFault>) -> Option<T> {
        let slot = self.rooms.get_mut(id)?;
        match r {
            Ok(v) => {
                if let Some(g) = slot.guest.as_mut() {
                    let oversized = g.take_oversized();
                    if oversized > 0 {
                        self.metrics
                            .guest_oversized_datagrams_total
                            .fetch_add(oversized, Ordering::Relaxed);
                    }
                    let effects = g.take_effects();
                    apply_effects(&self.metrics, effects);
                }
                Some(v)
            }
            Err(f) => {
                fault(&self.metrics, slot, f);
                None
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Create {
                spec,
                compiled,
                reply,
            } => {
                let _ = reply.send(self.create(spec, compiled));
            }
            Command::Signal { room, data, reply } => {
                let _ = reply.send(self.signal(&room, &data));
            }
            Command::Info { room, reply } => {
                let infos = match room {
                    Some(id) => self
                        .rooms
                        .get(&id)
                        .map(|r| vec![r.info()])
                        .unwrap_or_default(),
                    None => self.rooms.values().map(RoomSlot::info).collect(),
                };
                let _ = reply.send(infos);
            }
            Command::Close { room, reply } => {
                let r = match self.rooms.remove(&room) {
                    Some(_) => Ok(()),
                    None => Err(RoomError::NotFound(room)),
                };
                let _ = reply.send(r);
            }
            Command::Upgrade {
                room,
                compiled,
                reply,
            } => {
                let _ = reply.send(self.upgrade(&room, compiled));
            }
        }
    }

    fn instantiate(
        &self,
        spec: &RoomSpec,
        compiled: Arc<Compiled>,
        log: RoomLog,
    ) -> Result<GuestInstance, RoomError> {
        let mut g = GuestInstance::new(compiled, self.host.limits.clone(), log, spec.seed)?;
        g.init(&spec.id, &spec.config)?
            .map_err(|e| RoomError::Refused(format!("init refused: {e}")))?;
        Ok(g)
    }

    fn create(
        &mut self,
        spec: RoomSpec,
        compiled: Arc<Compiled>,
    ) -> Result<RoomCreated, RoomError> {
        if self.rooms.contains_key(&spec.id) {
            return Err(RoomError::Exists(spec.id));
        }
        let log = RoomLog::new(self.host.limits.log_lines, 512);
        let mut guest = self.instantiate(&spec, compiled.clone(), log.clone())?;
        let effects = guest.take_effects();
        apply_effects(&self.metrics, effects);
        let period = Duration::from_secs_f64(1.0 / spec.tick_hz.max(1) as f64);
        let created = RoomCreated {
            room: spec.id.clone(),
            module: spec.module.clone(),
            version: compiled.version.clone(),
        };
        self.rooms.insert(
            spec.id.clone(),
            RoomSlot {
                version: compiled.version.clone(),
                spec,
                guest: Some(guest),
                fault: None,
                log,
                period,
                next_tick: Instant::now() + period,
                ticks: 0,
                tick_us: VecDeque::new(),
                calls: 0,
                guest_us: 0,
                forgiven: 0,
            },
        );
        self.metrics
            .rooms_created_total
            .fetch_add(1, Ordering::Relaxed);
        Ok(created)
    }

    fn running(&mut self, id: &str) -> Result<&mut GuestInstance, RoomError> {
        let slot = self
            .rooms
            .get_mut(id)
            .ok_or_else(|| RoomError::NotFound(id.to_string()))?;
        match (&mut slot.guest, &slot.fault) {
            (Some(g), _) => Ok(g),
            (None, Some(f)) => Err(RoomError::Faulted {
                room: id.to_string(),
                kind: f.kind.clone(),
                message: f.message.clone(),
            }),
            (None, None) => Err(RoomError::NotFound(id.to_string())),
        }
    }

    fn signal(&mut self, id: &str, data: &[u8]) -> Result<Vec<u8>, RoomError> {
        self.metrics.signals_total.fetch_add(1, Ordering::Relaxed);
        let r = self.running(id)?.signal(data);
        let fault = r.as_ref().err().cloned();
        match self.after_call(id, r) {
            Some(v) => Ok(v),
            None => Err(RoomError::Guest(fault.unwrap_or(GuestFault {
                kind: "trap",
                message: "unknown".into(),
            }))),
        }
    }

    fn upgrade(&mut self, id: &str, compiled: Arc<Compiled>) -> Result<RoomCreated, RoomError> {
        let snapshot = {
            let r = self.running(id)?.snapshot();
            let fault = r.as_ref().err().cloned();
            match self.after_call(id, r) {
                Some(s) => s,
                None => {
                    return Err(RoomError::Guest(fault.unwrap_or(GuestFault {
                        kind: "trap",
                        message: "snapshot".into(),
                    })));
                }
            }
        };
        let slot = self
            .rooms
            .get(id)
            .ok_or_else(|| RoomError::NotFound(id.to_string()))?;
        let spec = slot.spec.clone();
        let log = slot.log.clone();
        // The new instance is built to completion before the old one is touched: any failure here
        // leaves the room exactly as it was.
        let attempt = self
            .instantiate(&spec, compiled.clone(), log)
            .and_then(|mut g| match g.restore(&snapshot)? {
                Ok(()) => Ok(g),
                Err(e) => Err(RoomError::Refused(format!(
                    "the new version refused the snapshot: {e}"
                ))),
            });
        match attempt {
            Ok(mut g) => {
                // Effects of the new instance's init/restore would duplicate what players already got.
                let _ = g.take_effects();
                let slot = self
                    .rooms
                    .get_mut(id)
                    .ok_or_else(|| RoomError::NotFound(id.to_string()))?;
                slot.guest = Some(g);
                slot.version = compiled.version.clone();
                slot.log.with(|l| {
                    l.push_line(&format!("host: upgraded to version {}", compiled.version))
                });
                self.metrics
                    .room_upgrades_total
                    .fetch_add(1, Ordering::Relaxed);
                Ok(RoomCreated {
                    room: id.to_string(),
                    module: spec.module,
                    version: compiled.version.clone(),
                })
            }
            Err(e) => {
                self.metrics
                    .room_upgrades_failed_total
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
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
    tracing::warn!(room = %slot.spec.id, module = %slot.spec.module, kind = f.kind, message = %f.message, "room faulted");
    metrics.guest_faults_total.fetch_add(1, Ordering::Relaxed);
    let counter = match f.kind {
        "cpu-budget" => &metrics.guest_faults_cpu_total,
        "memory-limit" => &metrics.guest_faults_memory_total,
        "output-limit" => &metrics.guest_faults_output_total,
        _ => &metrics.guest_faults_trap_total,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    slot.fault = Some(Fault {
        kind: f.kind.to_string(),
        message: f.message,
    });
}

/// Carries out a call's effects. Players arrive with the QUIC endpoint; until then sends are
/// counted only, and commits are counted for the outbox.
fn apply_effects(metrics: &Metrics, effects: Vec<Effect>) {
    for e in effects {
        match e {
            Effect::Send { data, .. } | Effect::Broadcast { data, .. } => {
                metrics
                    .bytes_out_total
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Effect::Commit { .. } => {
                metrics.guest_commits_total.fetch_add(1, Ordering::Relaxed);
            }
            Effect::Kick { .. } => {}
        }
    }
}
