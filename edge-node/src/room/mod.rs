//! Rooms and their scheduling: a fixed set of worker threads, each owning its rooms outright.
//!
//! A room lives on one worker for its whole life, so its `Store` is never shared or locked; the
//! async side talks to workers through bounded command queues (flume: async senders, a blocking
//! receiver with a timeout for ticks). A guest stuck in a call can only hold up its own worker,
//! and then only for its CPU budget.
//!
//! # Layout
//! - [`worker`]: the worker loop: commands, ticks, players, faults, upgrades.
//! - [`player`]: a player's outbound side (reliable backlog, datagrams, close).
//! - this file: [`Rooms`], the handle the admin API and the player endpoint use, and the
//!   directory of where each room lives and how full it is.

pub mod moving;
pub mod player;
pub mod refusal;
pub mod worker;

use crate::host::{Compiled, GuestFault, WasmHost};
use crate::telemetry::Metrics;
use outpost_proto::CloseCode;
use outpost_proto::api::{RoomCreated, RoomInfo};
use outpost_proto::frame::SavedState;
use player::PlayerLink;
pub use refusal::{Blame, Refusal};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use worker::{Command, JoinedRoom, RoomSpec};

/// Room worker threads are named this plus their index. `/metrics` finds them by it to report
/// the guests' CPU apart from the transport's.
pub const WORKER_THREAD_PREFIX: &str = "room-worker-";

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
    /// The guest refused (`init` or `restore` returned an error), or the room has no guest.
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
    /// The room is moving, or still taking in the players of its last move: try again shortly.
    #[error("{0}")]
    Moving(String),
    /// A worker thread is gone (a bug, or shutdown).
    #[error("room worker unavailable")]
    WorkerGone,
}

/// How long a request waits for space in a worker's queue before it is refused as busy.
const ASK_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a room lives and how full it is: what placement decisions read.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Worker index.
    pub worker: usize,
    /// Module name.
    pub module: String,
    /// Players in the room or reserved to join it.
    pub players: u32,
    /// Player cap.
    pub max_players: u32,
    /// False once faulted: no new players.
    pub open: bool,
    /// Reserved for one match: only its match tickets place players here.
    pub reserved: bool,
}

/// Room id → placement, shared by the async side and the workers.
pub type Directory = Arc<Mutex<HashMap<String, Placement>>>;

/// The rooms of this node.
pub struct Rooms {
    workers: Vec<flume::Sender<Command>>,
    directory: Directory,
    max_rooms: u32,
}

impl Rooms {
    /// Starts `workers` threads (at least one), with command queues of `queue` entries each.
    pub fn start(
        host: Arc<WasmHost>,
        metrics: Arc<Metrics>,
        workers: usize,
        queue: usize,
        coalesce: std::time::Duration,
        outbox: Option<Arc<crate::forward::outbox::Outbox>>,
    ) -> anyhow::Result<Self> {
        let epoch = std::time::Instant::now();
        let directory: Directory = Arc::default();
        let mut senders = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = flume::bounded(queue.max(1));
            let w = worker::Worker::new(
                host.clone(),
                metrics.clone(),
                rx,
                epoch,
                directory.clone(),
                coalesce,
                outbox.clone(),
            );
            std::thread::Builder::new().name(format!("{WORKER_THREAD_PREFIX}{i}")).spawn(move || w.run())?;
            senders.push(tx);
        }
        Ok(Rooms { workers: senders, directory, max_rooms: host.limits.max_rooms })
    }

    fn dir(&self) -> std::sync::MutexGuard<'_, HashMap<String, Placement>> {
        self.directory.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn ask<T>(&self, worker: usize, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, RoomError> {
        let (tx, rx) = oneshot::channel();
        let sender = self.workers.get(worker).ok_or(RoomError::WorkerGone)?;
        // A full queue gets a short wait (a burst of joins, say), then a clear 503.
        match tokio::time::timeout(ASK_QUEUE_WAIT, sender.send_async(make(tx))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(RoomError::WorkerGone),
            Err(_) => return Err(RoomError::Busy),
        }
        rx.await.map_err(|_| RoomError::WorkerGone)
    }

    /// Sends a player's command, waiting for queue space: back-pressure reaches the player's
    /// QUIC flow control instead of growing a queue.
    pub async fn tell(&self, worker: usize, cmd: Command) {
        if let Some(s) = self.workers.get(worker) {
            let _ = s.send_async(cmd).await;
        }
    }

    /// Sends a player's command if the worker's queue has room; gives it back when full, so the
    /// transport can stop reading that player until it does (QUIC flow control then holds the
    /// player back). A stopped worker takes nothing, and nothing is given back.
    pub fn try_tell(&self, worker: usize, cmd: Command) -> Result<(), Command> {
        match self.workers.get(worker).map(|s| s.try_send(cmd)) {
            Some(Err(flume::TrySendError::Full(cmd))) => Err(cmd),
            _ => Ok(()),
        }
    }

    /// Tells the room that `link`'s connection is gone; with `wait`, returns once it is done.
    pub async fn leave(&self, worker: usize, room: String, link: Arc<PlayerLink>, wait: bool) {
        let (done, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.tell(worker, Command::Leave { room, link, done }).await;
        if let Some(rx) = rx {
            let _ = rx.await;
        }
    }

    fn placement(&self, room: &str) -> Result<Placement, RoomError> {
        self.dir().get(room).cloned().ok_or_else(|| RoomError::NotFound(room.to_string()))
    }

    /// Reserves a directory entry for a new room on the least-loaded worker.
    fn reserve_room(&self, spec: &RoomSpec) -> Result<usize, RoomError> {
        let mut dir = self.dir();
        if dir.contains_key(&spec.id) {
            return Err(RoomError::Exists(spec.id.clone()));
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
                players: 0,
                max_players: spec.max_players.max(1),
                open: true,
                reserved: spec.reserved,
            },
        );
        Ok(worker)
    }

    /// Creates a room running `compiled` and runs the guest's `init`.
    pub async fn create(&self, spec: RoomSpec, compiled: Arc<Compiled>) -> Result<RoomCreated, RoomError> {
        let worker = self.reserve_room(&spec)?;
        let id = spec.id.clone();
        let result = self.ask(worker, |reply| Command::Create { spec, compiled, reply }).await.and_then(|r| r);
        if result.is_err() {
            self.dir().remove(&id);
        }
        result
    }

    /// Creates a built-in relay room.
    pub async fn create_relay(&self, spec: RoomSpec) -> Result<RoomCreated, RoomError> {
        let worker = self.reserve_room(&spec)?;
        let id = spec.id.clone();
        let result = self.ask(worker, |reply| Command::CreateRelay { spec, reply }).await.and_then(|r| r);
        if result.is_err() {
            self.dir().remove(&id);
        }
        result
    }

    /// Reserves a player slot: in `room` if named (`Ok(None)` when it does not exist yet), else in
    /// the fullest open room of `module` that has space (`Ok(None)` when there is none). A room
    /// reserved for a match takes only that match's tickets (`match_ticket`) and is never chosen
    /// for an unnamed placement.
    pub fn reserve_player(
        &self,
        module: &str,
        room: Option<&str>,
        match_ticket: bool,
    ) -> Result<Option<(String, usize)>, Refusal> {
        let mut dir = self.dir();
        if let Some(id) = room {
            let Some(p) = dir.get_mut(id) else { return Ok(None) };
            if p.reserved != match_ticket {
                let why = if p.reserved { "is reserved for a match" } else { "is not a match room" };
                return Err(Refusal::player(CloseCode::JoinRefused, format!("room {id} {why}")));
            }
            if p.module != module {
                return Err(Refusal::player(
                    CloseCode::JoinRefused,
                    format!("room {id} runs {}, not {module}", p.module),
                ));
            }
            if !p.open {
                return Err(Refusal::guest(CloseCode::ModuleFault, format!("room {id} is faulted")));
            }
            if p.players >= p.max_players {
                return Err(Refusal::node(
                    CloseCode::RoomFull,
                    format!("room {id} is full ({} players)", p.max_players),
                ));
            }
            p.players += 1;
            return Ok(Some((id.to_string(), p.worker)));
        }
        // Fill rooms before opening new ones: the fullest room that still has space.
        let best = dir
            .iter_mut()
            .filter(|(_, p)| p.module == module && p.open && !p.reserved && p.players < p.max_players)
            .max_by_key(|(id, p)| (p.players, std::cmp::Reverse((*id).clone())));
        Ok(best.map(|(id, p)| {
            p.players += 1;
            (id.clone(), p.worker)
        }))
    }

    /// Joins a reserved player to its room on `worker`.
    pub async fn join(
        &self,
        room: &str,
        worker: usize,
        link: Arc<PlayerLink>,
        saved: SavedState,
    ) -> Result<JoinedRoom, Refusal> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Join { room: room.to_string(), link, saved, reply: tx };
        self.tell(worker, cmd).await;
        rx.await.unwrap_or_else(|_| Err(Refusal::node(CloseCode::NodeShutdown, "room worker stopped")))
    }

    /// Pauses `room` at a tick boundary and takes what it needs to move to another node.
    pub async fn export(&self, room: &str) -> Result<moving::RoomExport, RoomError> {
        let p = self.placement(room)?;
        let room = room.to_string();
        self.ask(p.worker, |reply| Command::Export { room, reply }).await?
    }

    /// The move of `room` failed: it runs here again.
    pub async fn resume(&self, room: &str) {
        if let Ok(p) = self.placement(room) {
            self.tell(p.worker, Command::Resume { room: room.to_string() }).await;
        }
    }

    /// Hands the paused `room` over for good: returns its players' links, and from now on what
    /// their old connections deliver (after what the room held) goes to `forward`.
    pub async fn hand(
        &self,
        room: &str,
        forward: tokio::sync::mpsc::Sender<moving::Forwarded>,
    ) -> Result<Vec<Arc<PlayerLink>>, RoomError> {
        let p = self.placement(room)?;
        let room = room.to_string();
        self.ask(p.worker, |reply| Command::Hand { room, forward, reply }).await?
    }

    /// Restores a room that moved here (409 when its id is taken), with one detached link per
    /// moving player, each holding its place in the room.
    pub async fn import(
        &self,
        export: moving::RoomExport,
        compiled: Arc<Compiled>,
        limits: Arc<player::PlayerLimits>,
    ) -> Result<(usize, moving::Placeholders), RoomError> {
        let worker = self.reserve_room(&export.spec)?;
        let id = export.spec.id.clone();
        let players = export.players.len() as u32;
        if let Some(p) = self.dir().get_mut(&id) {
            p.players = players;
            p.max_players = p.max_players.max(players);
        }
        let export = Box::new(export);
        let result =
            self.ask(worker, |reply| Command::Import { export, compiled, limits, reply }).await.and_then(|r| r);
        match result {
            Ok(links) => {
                for l in &links {
                    let _ = l.placement.set((id.clone(), worker));
                }
                Ok((worker, links))
            }
            Err(e) => {
                self.dir().remove(&id);
                Err(e)
            }
        }
    }

    /// What a moved room's source forwarded, for the room here.
    pub async fn forwarded(&self, room: &str, items: Vec<moving::Forwarded>) -> Result<(), RoomError> {
        let p = self.placement(room)?;
        self.tell(p.worker, Command::Forwarded { room: room.to_string(), items }).await;
        Ok(())
    }

    /// Sends an operator signal to the room's guest and returns its reply.
    pub async fn signal(&self, room: &str, data: Vec<u8>) -> Result<worker::Signalled, RoomError> {
        let p = self.placement(room)?;
        let room = room.to_string();
        self.ask(p.worker, |reply| Command::Signal { room, data, reply }).await?
    }

    /// One room's details.
    pub async fn info(&self, room: &str) -> Result<RoomInfo, RoomError> {
        let p = self.placement(room)?;
        let room = room.to_string();
        self.ask(p.worker, |reply| Command::Info { room: Some(room.clone()), reply })
            .await?
            .pop()
            .ok_or(RoomError::NotFound(room))
    }

    /// A room's players: id, name and the address they connect from (none for a player that
    /// has not arrived after a move).
    pub async fn room_players(&self, room: &str) -> Result<Vec<(u64, String, Option<std::net::IpAddr>)>, RoomError> {
        let p = self.placement(room)?;
        let room = room.to_string();
        self.ask(p.worker, |reply| Command::Players { room, reply }).await
    }

    /// Every room's details, sorted by id.
    pub async fn list(&self) -> Result<Vec<RoomInfo>, RoomError> {
        let mut all = Vec::new();
        for w in 0..self.workers.len() {
            all.extend(self.ask(w, |reply| Command::Info { room: None, reply }).await?);
        }
        all.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(all)
    }

    /// Closes a room, disconnecting its players.
    pub async fn close(&self, room: &str) -> Result<(), RoomError> {
        let p = self.placement(room)?;
        let r = room.to_string();
        self.ask(p.worker, |reply| Command::Close { room: r, reply }).await??;
        self.dir().remove(room);
        Ok(())
    }

    /// Moves a running room to `compiled` through snapshot → new instance → restore.
    pub async fn upgrade(&self, room: &str, compiled: Arc<Compiled>) -> Result<RoomCreated, RoomError> {
        let p = self.placement(room)?;
        let room = room.to_string();
        self.ask(p.worker, |reply| Command::Upgrade { room, compiled, reply }).await?
    }

    /// Closes every player with `node-shutdown` and stops the workers.
    pub async fn shutdown(&self) {
        for w in &self.workers {
            let (tx, rx) = oneshot::channel();
            if w.send_async(Command::Shutdown { reply: tx }).await.is_ok() {
                let _ = rx.await;
            }
        }
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

    /// Players in or joining rooms.
    pub fn players(&self) -> u64 {
        self.dir().values().map(|p| p.players as u64).sum()
    }
}

/// Rooms with players on a fake carrier: what a room sends reaches the carrier the player is on,
/// and a player's link moves from one carrier to another with nothing lost but the datagrams
/// sent while it had none (counted).
#[cfg(test)]
mod tests {
    use super::player::{PlayerLimits, PlayerTransport};
    use super::*;
    use crate::host::Allocator;
    use crate::host::limits::SandboxLimits;
    use bytes::Bytes;
    use outpost_proto::frame::Frame;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// What a carrier was asked to do.
    #[derive(Debug, PartialEq)]
    enum Sent {
        Frames,
        Datagram(Vec<u8>),
        Close(CloseCode),
    }

    struct FakeCarrier(mpsc::UnboundedSender<Sent>);

    impl PlayerTransport for FakeCarrier {
        fn frames_waiting(&self) {
            let _ = self.0.send(Sent::Frames);
        }
        fn datagram(&self, d: Bytes) {
            let _ = self.0.send(Sent::Datagram(d.to_vec()));
        }
        fn close(&self, code: CloseCode, _reason: String) {
            let _ = self.0.send(Sent::Close(code));
        }
    }

    fn carrier() -> (Arc<dyn PlayerTransport>, mpsc::UnboundedReceiver<Sent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(FakeCarrier(tx)), rx)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Sent>) -> Sent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("the room answers").unwrap()
    }

    fn spec(id: &str) -> RoomSpec {
        RoomSpec {
            id: id.into(),
            module: "relay".into(),
            config: Vec::new(),
            tick_hz: 20,
            max_players: 2,
            seed: 0,
            ephemeral: false,
            reserved: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_match_room_takes_only_its_match_tickets_and_is_never_chosen_unnamed() {
        let dir = tempfile::tempdir().unwrap();
        let host = WasmHost::new(SandboxLimits::default(), dir.path(), Allocator::OnDemand).unwrap();
        let rooms = Rooms::start(host, Arc::new(Metrics::default()), 1, 64, Duration::ZERO, None).unwrap();
        rooms.create_relay(RoomSpec { reserved: true, ..spec("m") }).await.unwrap();
        rooms.create_relay(spec("open")).await.unwrap();
        // Unnamed placement fills the open room, never the match room, however empty.
        assert_eq!(rooms.reserve_player("relay", None, false).unwrap().unwrap().0, "open");
        // A named ordinary ticket cannot enter the match room; a match ticket cannot enter an
        // ordinary room.
        let r = rooms.reserve_player("relay", Some("m"), false).unwrap_err();
        assert_eq!(r.code, CloseCode::JoinRefused);
        assert!(r.reason.contains("reserved for a match"), "{}", r.reason);
        assert!(rooms.reserve_player("relay", Some("open"), true).unwrap_err().reason.contains("not a match room"));
        // Match tickets fill it to its cap, then it is full.
        for _ in 0..2 {
            assert_eq!(rooms.reserve_player("relay", Some("m"), true).unwrap().unwrap().0, "m");
        }
        assert_eq!(rooms.reserve_player("relay", Some("m"), true).unwrap_err().code, CloseCode::RoomFull);
        assert_eq!(rooms.reserve_player("relay", None, false).unwrap().unwrap().0, "open");
        assert!(rooms.reserve_player("relay", None, false).unwrap().is_none(), "both open places taken");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_relay_room_reaches_its_players_through_whatever_carries_them() {
        let dir = tempfile::tempdir().unwrap();
        let host = WasmHost::new(SandboxLimits::default(), dir.path(), Allocator::OnDemand).unwrap();
        let metrics = Arc::new(Metrics::default());
        let rooms = Rooms::start(host, metrics.clone(), 1, 64, Duration::ZERO, None).unwrap();
        rooms.create_relay(spec("r")).await.unwrap();
        let limits = Arc::new(PlayerLimits::default());
        let mut players = Vec::new();
        for id in [1, 2] {
            let (conn, rx) = carrier();
            let link = PlayerLink::new(id, format!("p{id}"), conn, limits.clone(), metrics.clone());
            let (room, worker) = rooms.reserve_player("relay", Some("r"), false).unwrap().unwrap();
            rooms.join(&room, worker, link.clone(), SavedState::None).await.unwrap();
            players.push((link, rx, worker));
        }
        // The room is full: a third player is refused, and it is the node's doing.
        let refused = rooms.reserve_player("relay", Some("r"), false).unwrap_err();
        assert_eq!((refused.code, refused.blame), (CloseCode::RoomFull, Blame::Node));

        // An unreliable message from player 1 reaches player 2's carrier as a datagram.
        let worker = players[0].2;
        let say = |data: &[u8], reliable| Command::Message {
            room: "r".into(),
            player: 1,
            to: 0,
            data: data.to_vec(),
            reliable,
        };
        rooms.try_tell(worker, say(b"hi", false)).map_err(|_| "queue full").unwrap();
        let expected = outpost_proto::frame::encode_peer(1, b"hi");
        assert_eq!(next(&mut players[1].1).await, Sent::Datagram(expected));

        // Player 2 changes carriers: while detached, a datagram is dropped and counted and a
        // reliable message waits; attached to a new carrier, the waiting message is announced.
        let (new_conn, mut new_rx) = carrier();
        let old = players[1].0.detach();
        drop(old);
        rooms.try_tell(worker, say(b"lost", false)).map_err(|_| "queue full").unwrap();
        rooms.try_tell(worker, say(b"kept", true)).map_err(|_| "queue full").unwrap();
        // The worker handles commands in order: once a later one is seen, both were handled.
        rooms.info("r").await.unwrap();
        assert_eq!(metrics.player_datagrams_dropped_total.get(), 1);
        players[1].0.attach(new_conn);
        assert_eq!(next(&mut new_rx).await, Sent::Frames);
        let mut frames = std::collections::VecDeque::new();
        players[1].0.take_frames(&mut frames);
        let kept = Frame::Message { peer: 1, data: b"kept".to_vec() }.encode();
        assert_eq!(frames.into_iter().map(|b| b.to_vec()).collect::<Vec<_>>(), vec![kept]);

        // Closing the room closes both players through their current carriers.
        rooms.close("r").await.unwrap();
        assert_eq!(next(&mut players[0].1).await, Sent::Close(CloseCode::Kicked));
        assert_eq!(next(&mut new_rx).await, Sent::Close(CloseCode::Kicked));
        assert!(players[0].0.is_closed() && players[1].0.is_closed());
    }

    /// A guest built from `guest-modules/` (`make guests`), compiled by `host`.
    fn guest(host: &WasmHost, name: &str) -> Arc<Compiled> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guests").join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run make guests)", path.display()));
        Arc::new(host.load(&bytes).unwrap())
    }

    fn node(dir: &std::path::Path) -> (Rooms, Arc<WasmHost>, Arc<Metrics>) {
        let host = WasmHost::new(SandboxLimits::default(), dir, Allocator::OnDemand).unwrap();
        let metrics = Arc::new(Metrics::default());
        (Rooms::start(host.clone(), metrics.clone(), 1, 1024, Duration::ZERO, None).unwrap(), host, metrics)
    }

    fn say(room: &str, n: u32) -> Command {
        Command::Message { room: room.into(), player: 1, to: 0, data: n.to_be_bytes().to_vec(), reliable: true }
    }

    /// The numbers the echo guest sent back to `link` so far.
    fn echoed(link: &PlayerLink) -> Vec<u32> {
        let mut frames = std::collections::VecDeque::new();
        link.take_frames(&mut frames);
        frames
            .into_iter()
            .filter_map(|f| match outpost_proto::frame::Frame::decode_body(&f[4..]) {
                Ok(Frame::Message { data, .. }) => Some(u32::from_be_bytes(data[..4].try_into().unwrap())),
                _ => None,
            })
            .collect()
    }

    /// Waits until the worker of `room` has handled everything sent before.
    async fn settled(rooms: &Rooms, room: &str) {
        let _ = rooms.info(room).await;
        let _ = rooms.list().await;
    }

    /// The whole hand-off between two nodes' rooms, in one process: reliable messages sent
    /// before the pause, during it, after the hand-off on the old connection and on the new one
    /// reach the guest exactly once and in order; the guest sees no leave or join.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_moving_room_gets_every_reliable_message_once_and_in_order() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ((src, src_host, src_metrics), (dst, dst_host, _)) = (node(d1.path()), node(d2.path()));
        let spec = RoomSpec { module: "echo".into(), max_players: 4, ..spec("e") };
        src.create(spec, guest(&src_host, "echo")).await.unwrap();
        let limits = Arc::new(PlayerLimits::default());
        let (conn, _rx) = carrier();
        let old = PlayerLink::new(1, "ada".into(), conn, limits.clone(), src_metrics.clone());
        let (room, worker) = src.reserve_player("echo", Some("e"), false).unwrap().unwrap();
        src.join(&room, worker, old.clone(), SavedState::None).await.unwrap();
        let tell = |rooms: &Rooms, cmd| rooms.try_tell(0, cmd).map_err(|_| "queue full").unwrap();
        for n in 0..50 {
            tell(&src, say("e", n));
        }
        let export = src.export("e").await.unwrap();
        assert_eq!(export.players, vec![(1, "ada".to_string())]);
        // Paused: these wait, as does an unreliable one, which is dropped and counted.
        for n in 50..80 {
            tell(&src, say("e", n));
        }
        tell(&src, Command::Message { room: "e".into(), player: 1, to: 0, data: vec![9; 4], reliable: false });
        let (_, placeholders) = dst.import(export.clone(), guest(&dst_host, "echo"), limits.clone()).await.unwrap();
        assert!(matches!(dst.import(export, guest(&dst_host, "echo"), limits).await, Err(RoomError::Exists(_))));
        let (fwd_tx, mut fwd_rx) = tokio::sync::mpsc::channel(4096);
        let handed = src.hand("e", fwd_tx).await.unwrap();
        assert_eq!(handed.len(), 1);
        assert!(src.info("e").await.is_err(), "the room is not the source's any more");
        // The old connection still delivers; the new one is on the target already.
        for n in 80..100 {
            tell(&src, say("e", n));
        }
        let new = placeholders[0].clone();
        assert!(new.is_detached());
        let (conn, _rx2) = carrier();
        new.attach(conn);
        for n in 100..120 {
            tell(&dst, say("e", n));
        }
        settled(&dst, "e").await;
        assert_eq!(echoed(&new), Vec::<u32>::new(), "the new connection waits for the old one's end");
        // The old stream ends; everything the source forwarded reaches the target, in order.
        src.leave(0, "e".into(), old.clone(), true).await;
        let mut items = Vec::new();
        while let Ok(item) = fwd_rx.try_recv() {
            items.push(item);
        }
        assert_eq!(items.last(), Some(&moving::Forwarded::End { player: 1 }));
        assert_eq!(items.len(), 30 + 20 + 1);
        dst.forwarded("e", items).await.unwrap();
        settled(&dst, "e").await;
        assert_eq!(echoed(&old), (0..50).collect::<Vec<_>>(), "answered on the source before the move");
        assert_eq!(echoed(&new), (50..120).collect::<Vec<_>>(), "the rest on the target, once each, in order");
        assert_eq!(src_metrics.moved_messages_dropped_total.get(), 1, "the unreliable one");
        let info = dst.info("e").await.unwrap();
        assert_eq!(info.players, 1);
    }

    /// A room that moves on before one of its players followed it here: that player has no
    /// connection here to tell or to end, so the hand-off sends its end at once and names only
    /// the players who are here; the next node still takes the room with both players.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_moving_on_before_a_player_followed_ends_that_player_at_once() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ((here, host, metrics), (next_node, next_host, _)) = (node(d1.path()), node(d2.path()));
        let limits = Arc::new(PlayerLimits::default());
        let arriving = moving::RoomExport {
            spec: RoomSpec { module: "echo".into(), max_players: 4, ..spec("e") },
            version: String::new(),
            snapshot: Vec::new(),
            rng: 1,
            now_ms: 1000,
            ticks: 10,
            players: vec![(1, "ada".into()), (2, "bob".into())],
            epoch: outpost_proto::link::RoomEpoch { lineage: 7, moves: 1 },
            last_seq: 0,
        };
        let (_, placeholders) = here.import(arriving, guest(&host, "echo"), limits.clone()).await.unwrap();
        let (conn, _rx) = carrier();
        placeholders[0].attach(conn);
        let ends = vec![moving::Forwarded::End { player: 1 }, moving::Forwarded::End { player: 2 }];
        here.forwarded("e", ends).await.unwrap();
        let export = here.export("e").await.unwrap();
        assert_eq!(export.players.len(), 2);
        assert_eq!(export.epoch, outpost_proto::link::RoomEpoch { lineage: 7, moves: 2 });
        next_node.import(export, guest(&next_host, "echo"), limits).await.unwrap();
        let (fwd_tx, mut fwd_rx) = tokio::sync::mpsc::channel(16);
        let handed = here.hand("e", fwd_tx).await.unwrap();
        assert_eq!(handed.iter().map(|l| l.id).collect::<Vec<_>>(), vec![1], "only ada is here to be told");
        assert_eq!(fwd_rx.try_recv().unwrap(), moving::Forwarded::End { player: 2 }, "bob's end goes at once");
        drop(metrics);
    }

    /// A move that fails before the point of no return leaves the room running on the source,
    /// with what its players sent meanwhile delivered in order, and its clock going on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_move_resumes_the_room_with_what_was_held() {
        let d = tempfile::tempdir().unwrap();
        let (src, host, metrics) = node(d.path());
        src.create(RoomSpec { module: "echo".into(), ..spec("e") }, guest(&host, "echo")).await.unwrap();
        let (conn, _rx) = carrier();
        let link = PlayerLink::new(1, "ada".into(), conn, Arc::new(PlayerLimits::default()), metrics);
        let (room, worker) = src.reserve_player("echo", Some("e"), false).unwrap().unwrap();
        src.join(&room, worker, link.clone(), SavedState::None).await.unwrap();
        src.export("e").await.unwrap();
        assert!(matches!(src.export("e").await, Err(RoomError::Moving(_))), "one move at a time");
        for n in 0..10 {
            src.try_tell(0, say("e", n)).map_err(|_| "full").unwrap();
        }
        settled(&src, "e").await;
        assert_eq!(echoed(&link), Vec::<u32>::new(), "held while paused");
        src.resume("e").await;
        settled(&src, "e").await;
        assert_eq!(echoed(&link), (0..10).collect::<Vec<_>>());
        assert_eq!(src.info("e").await.unwrap().players, 1);
    }

    /// The operator puts arena player `who` onto `onto` in room "a"; returns the room's clock
    /// after it and the state.
    async fn tag_onto(rooms: &Rooms, who: &str, onto: &str) -> (u64, serde_json::Value) {
        let json = |r: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&r).unwrap();
        let s = json(rooms.signal("a", b"state".to_vec()).await.unwrap().reply);
        let at = |id: &str| {
            let p = s["players"].as_array().unwrap().iter().find(|p| p["id"].as_u64() == id.parse().ok()).unwrap();
            (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap())
        };
        let ((x1, y1), (x2, y2)) = (at(who), at(onto));
        rooms.signal("a", format!("move {who} {} {}", x2 - x1, y2 - y1).into_bytes()).await.unwrap();
        let clock = json(rooms.signal("a", b"clock".to_vec()).await.unwrap().reply);
        (clock["now_ms"].as_u64().unwrap(), json(rooms.signal("a", b"state".to_vec()).await.unwrap().reply))
    }

    /// A restored arena room keeps its tick count and its clock, so a tag's cooldown started on
    /// the source ends on the target when it would have there; and a target whose module cannot
    /// take the snapshot refuses the room, which is then not there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_arena_room_moves_with_its_clock_and_a_bad_restore_is_refused() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ((src, src_host, _), (dst, dst_host, _)) = (node(d1.path()), node(d2.path()));
        let spec = RoomSpec { module: "arena".into(), max_players: 8, ..spec("a") };
        src.create(spec, guest(&src_host, "arena")).await.unwrap();
        let text = |r: Vec<u8>| String::from_utf8(r).unwrap();
        let json = |r: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&r).unwrap();
        let tagger = text(src.signal("a", b"spawn bot".to_vec()).await.unwrap().reply);
        let tagged = text(src.signal("a", b"spawn bob".to_vec()).await.unwrap().reply);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while src.info("a").await.unwrap().ticks < 5 {
            assert!(std::time::Instant::now() < deadline, "the room never ticked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A tag just before the move: the first spawned is "it"; the operator puts it on the other.
        tag_onto(&src, &tagger, &tagged).await;
        let clock = json(src.signal("a", b"clock".to_vec()).await.unwrap().reply);
        let immune_until = clock["immune_until_ms"].as_u64().unwrap();
        assert!(immune_until > clock["now_ms"].as_u64().unwrap(), "the tag started a cooldown: {clock}");
        let export = src.export("a").await.unwrap();
        let limits = Arc::new(PlayerLimits::default());
        let broken = guest(&dst_host, "arena-broken-restore");
        match dst.import(export.clone(), broken, limits.clone()).await {
            Err(RoomError::Refused(why)) => assert!(why.contains("restore"), "{why}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(dst.info("a").await.is_err(), "nothing is left of a refused room");
        dst.import(export.clone(), guest(&dst_host, "arena"), limits).await.unwrap();
        assert_eq!(
            text(dst.signal("a", b"state".to_vec()).await.unwrap().reply),
            text(src.signal("a", b"state".to_vec()).await.unwrap().reply),
            "the same game on both sides of the move"
        );
        while dst.info("a").await.unwrap().ticks <= export.ticks {
            assert!(std::time::Instant::now() < deadline + Duration::from_secs(5), "the moved room never ticked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The room's clock goes on from where it stopped, so the cooldown ends when it would
        // have on the source: the tag-back is refused within it, and scores once it is over.
        let clock = json(dst.signal("a", b"clock".to_vec()).await.unwrap().reply);
        let now = clock["now_ms"].as_u64().unwrap();
        assert_eq!(clock["immune_until_ms"].as_u64(), Some(immune_until), "the cooldown moved with the room");
        assert!(
            now >= export.now_ms && now < export.now_ms + 5_000,
            "the clock went on: {now} after {}",
            export.now_ms
        );
        let score = |id: &str, state: &serde_json::Value| {
            state["players"].as_array().unwrap().iter().find(|p| p["id"].as_u64() == id.parse().ok()).unwrap()["score"]
                .as_u64()
        };
        if now + 200 < immune_until {
            let (at, s) = tag_onto(&dst, &tagged, &tagger).await;
            assert!(at < immune_until);
            assert_eq!(score(&tagged, &s), Some(0), "no tag-back within the cooldown, on the target");
        }
        loop {
            let (at, s) = tag_onto(&dst, &tagged, &tagger).await;
            if at >= immune_until {
                assert_eq!(score(&tagged, &s), Some(1), "the tag-back scores once the cooldown is over");
                break;
            }
            assert!(std::time::Instant::now() < deadline + Duration::from_secs(10), "the cooldown never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
