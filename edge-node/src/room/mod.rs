//! Rooms and their scheduling: a fixed set of worker threads, each owning its rooms outright.
//!
//! A room lives on one worker for its whole life, so its `Store` is never shared or locked; the
//! async side talks to workers through bounded command queues and gets answers on oneshots.
//! A guest stuck in a call can only hold up its own worker, and then only for its CPU budget.
//!
//! # Layout
//! - [`worker`]: the worker loop: commands, ticks, faults, upgrades.
//! - this file: [`Rooms`], the handle the admin API (and later the player endpoint) uses.

pub mod worker;

use crate::host::{Compiled, GuestFault, WasmHost};
use crate::telemetry::Metrics;
use outpost_proto::api::{RoomCreated, RoomInfo};
use std::collections::HashMap;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use worker::{Command, RoomSpec};

/// Why a room operation failed; each maps to one HTTP status in the admin API.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// No such room.
    #[error("no room {0:?}")]
    NotFound(String),
    /// A room with that id exists.
    #[error("room {0:?} already exists")]
    Exists(String),
    /// The room has faulted and no longer runs its guest.
    #[error("room {room:?} is faulted ({kind}): {message}")]
    Faulted {
        /// Room id.
        room: String,
        /// Fault kind.
        kind: String,
        /// Fault detail.
        message: String,
    },
    /// The guest refused (`init` or `restore` returned an error).
    #[error("{0}")]
    Refused(String),
    /// The guest faulted during this call.
    #[error("guest fault: {0}")]
    Guest(#[from] GuestFault),
    /// The node is at its room limit.
    #[error("the node is at its limit of {0} rooms")]
    Full(u32),
    /// A worker's queue is full: back-pressure, try again.
    #[error("room workers are busy; retry shortly")]
    Busy,
    /// A worker thread is gone (a bug).
    #[error("room worker unavailable")]
    WorkerGone,
}

/// Where a room lives, for routing commands and counting module users.
#[derive(Debug, Clone)]
struct Placement {
    worker: usize,
    module: String,
}

/// The rooms of this node.
pub struct Rooms {
    workers: Vec<SyncSender<Command>>,
    directory: Arc<Mutex<HashMap<String, Placement>>>,
    max_rooms: u32,
}

impl Rooms {
    /// Starts `workers` threads (at least one), with command queues of `queue` entries each.
    pub fn start(
        host: Arc<WasmHost>,
        metrics: Arc<Metrics>,
        workers: usize,
        queue: usize,
    ) -> anyhow::Result<Self> {
        let epoch = std::time::Instant::now();
        let mut senders = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = std::sync::mpsc::sync_channel(queue.max(1));
            let w = worker::Worker::new(host.clone(), metrics.clone(), rx, epoch);
            std::thread::Builder::new()
                .name(format!("room-worker-{i}"))
                .spawn(move || w.run())?;
            senders.push(tx);
        }
        Ok(Rooms {
            workers: senders,
            directory: Arc::default(),
            max_rooms: host.limits.max_rooms,
        })
    }

    fn dir(&self) -> std::sync::MutexGuard<'_, HashMap<String, Placement>> {
        self.directory.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn ask<T>(
        &self,
        worker: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RoomError> {
        let (tx, rx) = oneshot::channel();
        let sender = self.workers.get(worker).ok_or(RoomError::WorkerGone)?;
        match sender.try_send(make(tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(RoomError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(RoomError::WorkerGone),
        }
        rx.await.map_err(|_| RoomError::WorkerGone)
    }

    fn placement(&self, room: &str) -> Result<Placement, RoomError> {
        self.dir()
            .get(room)
            .cloned()
            .ok_or_else(|| RoomError::NotFound(room.to_string()))
    }

    /// Creates a room on the least-loaded worker and runs the guest's `init`.
    pub async fn create(
        &self,
        spec: RoomSpec,
        compiled: Arc<Compiled>,
    ) -> Result<RoomCreated, RoomError> {
        let worker = {
            let mut dir = self.dir();
            if dir.contains_key(&spec.id) {
                return Err(RoomError::Exists(spec.id));
            }
            if dir.len() >= self.max_rooms as usize {
                return Err(RoomError::Full(self.max_rooms));
            }
            let mut load = vec![0usize; self.workers.len()];
            for p in dir.values() {
                load[p.worker] += 1;
            }
            let worker = (0..load.len()).min_by_key(|&i| load[i]).unwrap_or(0);
            dir.insert(
                spec.id.clone(),
                Placement {
                    worker,
                    module: spec.module.clone(),
                },
            );
            worker
        };
        let id = spec.id.clone();
        let result = self
            .ask(worker, |reply| Command::Create {
                spec,
                compiled,
                reply,
            })
            .await;
        let result = result.and_then(|r| r);
        if result.is_err() {
            self.dir().remove(&id);
        }
        result
    }

    /// Sends an operator signal to the room's guest and returns its reply.
    pub async fn signal(&self, room: &str, data: Vec<u8>) -> Result<Vec<u8>, RoomError> {
        let p = self.placement(room)?;
        let room = room.to_string();
        self.ask(p.worker, |reply| Command::Signal { room, data, reply })
            .await?
    }

    /// One room's details.
    pub async fn info(&self, room: &str) -> Result<RoomInfo, RoomError> {
        let p = self.placement(room)?;
        let room = room.to_string();
        self.ask(p.worker, |reply| Command::Info {
            room: Some(room.clone()),
            reply,
        })
        .await?
        .pop()
        .ok_or(RoomError::NotFound(room))
    }

    /// Every room's details, sorted by id.
    pub async fn list(&self) -> Result<Vec<RoomInfo>, RoomError> {
        let mut all = Vec::new();
        for w in 0..self.workers.len() {
            all.extend(
                self.ask(w, |reply| Command::Info { room: None, reply })
                    .await?,
            );
        }
        all.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(all)
    }

    /// Closes a room and frees its instance.
    pub async fn close(&self, room: &str) -> Result<(), RoomError> {
        let p = self.placement(room)?;
        let r = room.to_string();
        self.ask(p.worker, |reply| Command::Close { room: r, reply })
            .await??;
        self.dir().remove(room);
        Ok(())
    }

    /// Moves a running room to `compiled` through snapshot → new instance → restore.
    pub async fn upgrade(
        &self,
        room: &str,
        compiled: Arc<Compiled>,
    ) -> Result<RoomCreated, RoomError> {
        let p = self.placement(room)?;
        let room = room.to_string();
        self.ask(p.worker, |reply| Command::Upgrade {
            room,
            compiled,
            reply,
        })
        .await?
    }

    /// Rooms of `module` (any version, any state).
    pub fn count_using(&self, module: &str) -> usize {
        self.dir().values().filter(|p| p.module == module).count()
    }

    /// Rooms on the node.
    pub fn len(&self) -> usize {
        self.dir().len()
    }

    /// Whether the node has no rooms.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
