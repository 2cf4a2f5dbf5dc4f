//! The durable outbox: every guest commit is appended here, fsynced in groups, and kept until the
//! core acks it.
//!
//! Layout under `data-dir/outbox/`: `incarnation` (random, made once: the stream name is
//! `node-id/incarnation`, so a wiped outbox never collides with the core's memory of the old one),
//! `acked` (the highest sequence number the core has made durable), and segment files
//! `seg-<first seq>.log` of records `len u32 | crc32 u32 | seq u64 | room u16+bytes | key u16+bytes
//! | value u32+bytes`. On start a torn tail (a crash mid-write) is cut off at the last whole
//! record; corruption anywhere else stops the node with a message naming the file.
//!
//! One writer thread owns the open segment: it takes every commit waiting in its queue, writes
//! them, fsyncs once, and only then publishes the new durable sequence number (group commit).
//!
//! The forwarder reads what it sends from an in-memory tail of recent durable records (bounded by
//! bytes), so the steady state never reads the disk back; after a restart or a long outage it
//! reads segments through a cursor that remembers where the last read stopped, so draining a
//! backlog is linear, not a rescan of the segment per batch.

use crate::telemetry::{ACK_BUCKETS, GROUP_COMMIT_BUCKETS};
use outpost_net::metrics::Histogram;
use outpost_proto::link::{RoomEpoch, WireUpdate};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most bytes of recent records kept in memory for the forwarder; older ones are read from disk.
const TAIL_MAX_BYTES: usize = 32 << 20;

/// Limits of the outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Over this many bytes on disk the node stops accepting joins.
    pub soft_bytes: u64,
    /// At this many bytes a committing room is faulted (`outbox-full`); nothing is dropped.
    pub hard_bytes: u64,
    /// Segment size before a new file is started.
    pub segment_bytes: u64,
}

/// A commit the outbox cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// The hard limit is reached.
    #[error("the outbox is full ({0} bytes on disk, limit {1}); the core region is unreachable or slow")]
    Full(u64, u64),
    /// The writer thread is gone (disk failure); nothing more can be made durable.
    #[error("the outbox writer stopped: {0}")]
    Broken(String),
}

struct Pending {
    /// Given at `append`, in the order records reach the writer.
    seq: u64,
    room: String,
    epoch: RoomEpoch,
    key: String,
    value: Vec<u8>,
    at: Instant,
}

/// Recent durable records, oldest first, with when each was committed.
#[derive(Default)]
struct Tail {
    records: VecDeque<(u64, WireUpdate, Instant)>,
    bytes: usize,
}

/// Where the last disk read stopped: the segment (by first sequence number), the byte offset of
/// the next record, and that record's sequence number.
#[derive(Clone, Copy)]
struct Cursor {
    segment: u64,
    offset: u64,
    next: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    first: u64,
    last: u64,
    path: PathBuf,
    bytes: u64,
}

/// State shared by the writer, the forwarder and the gauges.
struct Shared {
    segments: Mutex<Vec<Segment>>,
    durable: AtomicU64,
    acked: AtomicU64,
    bytes: AtomicU64,
    queued_bytes: AtomicU64,
    broken: Mutex<Option<String>>,
    /// Whether the outbox is over its soft limit; changes are sent, so the node's admission
    /// waits for them instead of polling.
    over_soft: tokio::sync::watch::Sender<bool>,
    /// The acked sequence number, for whoever waits for the core to catch up (a draining node).
    acked_watch: tokio::sync::watch::Sender<u64>,
    /// The durable sequence number, for whoever must not answer before a commit is on disk (an
    /// admin signal's reply). Also poked when the writer breaks, so that nobody waits forever.
    durable_watch: tokio::sync::watch::Sender<u64>,
    /// How long the oldest commit of each group waited for its fsync: the window in which
    /// players may have seen a call's effects while its commits are not yet on disk.
    group_commit: Histogram,
    tail: Mutex<Tail>,
}

impl Shared {
    /// Sends only a change, so the writer and the acks pay a lock only when the state flips.
    fn set_over_soft(&self, over: bool) {
        if *self.over_soft.borrow() != over {
            self.over_soft.send_replace(over);
        }
    }
}

/// The outbox.
pub struct Outbox {
    dir: PathBuf,
    stream: String,
    limits: OutboxLimits,
    shared: Arc<Shared>,
    tx: flume::Sender<Pending>,
    /// The last sequence number handed out. Held while a record is handed to the writer, so the
    /// writer receives records in sequence order.
    last_given: Mutex<u64>,
    notify: Arc<tokio::sync::Notify>,
    on_player_commit: Mutex<Option<PlayerCommitHook>>,
    cursor: Mutex<Option<Cursor>>,
    commit_to_ack: Histogram,
}

/// Told of every `player/{id}` commit as it is queued, with the new value.
pub type PlayerCommitHook = Arc<dyn Fn(u64, &[u8]) + Send + Sync>;

fn encode(out: &mut Vec<u8>, seq: u64, p: &Pending) {
    outpost_proto::outbox::encode_record(out, seq, &p.room, p.epoch, &p.key, &p.value);
}

fn decode(buf: &[u8]) -> Option<(u64, WireUpdate, usize)> {
    outpost_proto::outbox::decode_record(buf)
}

/// Reads the next whole record's bytes into `buf`: its length, or `None` at the end of the data
/// (including a record the writer has not finished).
fn read_record(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > 64 << 20 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("record length {len}")));
    }
    buf.clear();
    buf.extend_from_slice(&head);
    buf.resize(8 + len, 0);
    match r.read_exact(&mut buf[8..]) {
        Ok(()) => Ok(Some(8 + len)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Bytes a record holds in memory, for the tail's bound.
fn record_size(u: &WireUpdate) -> usize {
    64 + u.room.len() + u.key.len() + u.value.len()
}

fn io(path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("outbox: {}: {e}", path.display())
}

/// Reads a segment's records; with `repair`, a torn tail is cut off, else it is an error.
fn scan_segment(path: &Path, repair: bool) -> anyhow::Result<Vec<(u64, WireUpdate)>> {
    let mut buf = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut buf)).map_err(|e| io(path, e))?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        match decode(&buf[at..]) {
            Some((seq, u, n)) => {
                out.push((seq, u));
                at += n;
            }
            None if repair => {
                tracing::warn!(path = %path.display(), kept = at, dropped = buf.len() - at, "outbox: cutting a torn tail");
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(at as u64))
                    .map_err(|e| io(path, e))?;
                break;
            }
            None => {
                anyhow::bail!("outbox: {}: corrupt record at byte {at}; move the file away to start", path.display())
            }
        }
    }
    Ok(out)
}

impl Outbox {
    /// Opens (or creates) the outbox of node `node_id` under `dir` and starts its writer thread.
    pub fn open(dir: &Path, node_id: &str, limits: OutboxLimits) -> anyhow::Result<Outbox> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        outpost_net::files::sweep_temp(dir);
        let inc_path = dir.join("incarnation");
        let incarnation = match std::fs::read_to_string(&inc_path) {
            Ok(s) => s.trim().to_string(),
            Err(_) => {
                let i = hex::encode(rand::random::<[u8; 8]>());
                outpost_net::files::write_atomic(&inc_path, i.as_bytes()).map_err(|e| io(&inc_path, e))?;
                i
            }
        };
        let acked: u64 =
            std::fs::read_to_string(dir.join("acked")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
            })
            .collect();
        names.sort();
        let mut segments = Vec::new();
        let mut last_seq = acked;
        for (i, path) in names.iter().enumerate() {
            let records = scan_segment(path, i + 1 == names.len())?;
            let bytes = std::fs::metadata(path).map_err(|e| io(path, e))?.len();
            match (records.first(), records.last()) {
                (Some(f), Some(l)) => {
                    if f.0 != last_seq + 1 && f.0 > acked + 1 {
                        anyhow::bail!(
                            "outbox: {}: starts at {} but the previous record is {last_seq}",
                            path.display(),
                            f.0
                        );
                    }
                    last_seq = l.0;
                    segments.push(Segment { first: f.0, last: l.0, path: path.clone(), bytes });
                }
                _ => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let shared = Arc::new(Shared {
            segments: Mutex::new(segments),
            durable: AtomicU64::new(last_seq),
            acked: AtomicU64::new(acked.min(last_seq)),
            bytes: AtomicU64::new(bytes),
            queued_bytes: AtomicU64::new(0),
            broken: Mutex::new(None),
            over_soft: tokio::sync::watch::Sender::new(bytes > limits.soft_bytes),
            acked_watch: tokio::sync::watch::Sender::new(acked.min(last_seq)),
            durable_watch: tokio::sync::watch::Sender::new(last_seq),
            group_commit: Histogram::new(GROUP_COMMIT_BUCKETS),
            tail: Mutex::new(Tail::default()),
        });
        let (tx, rx) = flume::bounded::<Pending>(65_536);
        let notify = Arc::new(tokio::sync::Notify::new());
        let writer =
            Writer { dir: dir.to_path_buf(), shared: shared.clone(), notify: notify.clone(), limits, file: None };
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| anyhow::anyhow!("outbox: starting the writer: {e}"))?;
        tracing::info!(dir = %dir.display(), durable = last_seq, acked, bytes, "outbox open");
        Ok(Outbox {
            dir: dir.to_path_buf(),
            stream: format!("{node_id}/{incarnation}"),
            limits,
            shared,
            tx,
            last_given: Mutex::new(last_seq),
            notify,
            on_player_commit: Mutex::new(None),
            cursor: Mutex::new(None),
            commit_to_ack: Histogram::new(ACK_BUCKETS),
        })
    }

    /// The stream name the core knows this outbox by.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Sets the hook told of `player/{id}` commits (the join-time state cache keeps itself fresh
    /// with it, so a player who leaves and comes back gets what was just committed).
    pub fn on_player_commit(&self, hook: PlayerCommitHook) {
        if let Ok(mut h) = self.on_player_commit.lock() {
            *h = Some(hook);
        }
    }

    /// Queues a commit; it becomes durable at the writer's next group fsync. Returns the
    /// sequence number it will be durable at ([`Outbox::wait_durable`]): nothing that leaves the
    /// node may say "committed" before then.
    pub fn append(&self, room: &str, epoch: RoomEpoch, key: String, value: Vec<u8>) -> Result<u64, OutboxError> {
        if let Some(e) = self.shared.broken.lock().ok().and_then(|b| b.clone()) {
            return Err(OutboxError::Broken(e));
        }
        let size = (36 + room.len() + key.len() + value.len()) as u64;
        let on_disk = self.shared.bytes.load(Ordering::Relaxed) + self.shared.queued_bytes.load(Ordering::Relaxed);
        if on_disk + size > self.limits.hard_bytes {
            return Err(OutboxError::Full(on_disk, self.limits.hard_bytes));
        }
        self.shared.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if let Some(id) = key.strip_prefix("player/").and_then(|id| id.parse::<u64>().ok())
            && let Some(hook) = self.on_player_commit.lock().ok().and_then(|h| h.clone())
        {
            hook(id, &value);
        }
        // A full queue blocks the room's worker until the writer catches up: back-pressure, not loss.
        let mut last = self.last_given.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *last + 1;
        self.tx
            .send(Pending { seq, room: room.to_string(), epoch, key, value, at: Instant::now() })
            .map_err(|_| OutboxError::Broken("the writer thread is gone".into()))?;
        *last = seq;
        Ok(seq)
    }

    /// Waits until `seq` is on disk (fsynced); an error if the writer broke first.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), OutboxError> {
        let mut durable = self.shared.durable_watch.subscribe();
        let broken = || self.shared.broken.lock().ok().and_then(|b| b.clone());
        let _ = durable.wait_for(|d| *d >= seq || broken().is_some()).await;
        match broken() {
            Some(e) if self.durable() < seq => Err(OutboxError::Broken(e)),
            _ => Ok(()),
        }
    }

    /// Highest sequence number on disk (fsynced).
    pub fn durable(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Highest sequence number the core has acked.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Relaxed)
    }

    /// Bytes of segments on disk.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// True while the outbox holds more than its soft limit (the node refuses joins).
    pub fn over_soft_limit(&self) -> bool {
        *self.shared.over_soft.borrow()
    }

    /// Tells of every change of [`Outbox::over_soft_limit`].
    pub fn watch_soft_limit(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.over_soft.subscribe()
    }

    /// Waits until the core has acked everything durable now.
    pub async fn caught_up(&self) {
        let target = self.durable();
        let mut acked = self.shared.acked_watch.subscribe();
        let _ = acked.wait_for(|a| *a >= target).await;
    }

    /// Time from a guest's commit to the core's ack of it (commits replayed from disk after a
    /// restart are not timed).
    pub fn commit_to_ack(&self) -> &Histogram {
        &self.commit_to_ack
    }

    /// How long the oldest commit of each group waited for its fsync.
    pub fn group_commit(&self) -> &Histogram {
        &self.shared.group_commit
    }

    /// Wakes when something new is durable.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// The core has everything up to `seq`: forget it (whole segments are deleted).
    pub fn ack(&self, seq: u64) {
        let seq = seq.min(self.durable());
        if seq <= self.acked() {
            return;
        }
        self.shared.acked.store(seq, Ordering::Relaxed);
        self.shared.acked_watch.send_replace(seq);
        let deletes = self
            .shared
            .segments
            .lock()
            .map(|segs| segs.len() > 1 && segs.first().is_some_and(|s| s.last <= seq))
            .unwrap_or(false);
        let acked_path = self.dir.join("acked");
        if deletes {
            // Segments go only after `acked` is on disk past them: on restart the outbox must
            // know where its surviving segments begin.
            let _ = outpost_net::files::write_atomic(&acked_path, seq.to_string().as_bytes());
        } else {
            // No fsync: a stale `acked` only makes the edge resend what the core already has,
            // which its high-water mark ignores; an fsync per ack would halve the forwarding rate.
            let tmp = self.dir.join("acked.tmp");
            let _ = std::fs::write(&tmp, seq.to_string()).and_then(|_| std::fs::rename(&tmp, &acked_path));
        }
        if let Ok(mut tail) = self.shared.tail.lock() {
            let now = Instant::now();
            while tail.records.front().is_some_and(|r| r.0 <= seq) {
                if let Some((_, u, at)) = tail.records.pop_front() {
                    tail.bytes -= record_size(&u);
                    self.commit_to_ack.observe(now.saturating_duration_since(at).as_secs_f64());
                }
            }
        }
        if deletes {
            outpost_net::failpoint::hit("outbox.before_delete");
        }
        let Ok(mut segs) = self.shared.segments.lock() else { return };
        // Never delete the newest segment: the writer may be appending to it.
        let keep_from = segs.len().saturating_sub(1);
        let mut removed = 0;
        for s in segs.iter().take(keep_from) {
            if s.last <= seq {
                if std::fs::remove_file(&s.path).is_ok() {
                    self.shared.bytes.fetch_sub(s.bytes, Ordering::Relaxed);
                }
                removed += 1;
            } else {
                break;
            }
        }
        segs.drain(..removed);
        let bytes = self.shared.bytes.load(Ordering::Relaxed);
        self.shared.set_over_soft(bytes > self.limits.soft_bytes);
    }

    /// Up to `max` durable updates from `from` on, in order (for the forwarder).
    pub fn read(&self, from: u64, max: usize) -> anyhow::Result<Vec<(u64, WireUpdate)>> {
        let durable = self.durable();
        if from > durable {
            return Ok(Vec::new());
        }
        if let Ok(tail) = self.shared.tail.lock()
            && let Some(front) = tail.records.front()
            && front.0 <= from
        {
            // Sequence numbers in the tail are consecutive, so `from` is found by subtraction.
            let skip = (from - front.0) as usize;
            return Ok(tail
                .records
                .iter()
                .skip(skip)
                .take(max)
                .filter(|r| r.0 <= durable)
                .map(|(seq, u, _)| (*seq, u.clone()))
                .collect());
        }
        let segs: Vec<Segment> = self.shared.segments.lock().map(|s| s.clone()).unwrap_or_default();
        let mut out = Vec::new();
        for s in segs.iter().filter(|s| s.last >= from && s.first <= durable) {
            let start = match self.cursor.lock().ok().and_then(|c| *c) {
                Some(c) if c.segment == s.first && c.next <= from => c.offset,
                _ => 0,
            };
            let mut reader = BufReader::with_capacity(
                256 << 10,
                File::open(&s.path)
                    .and_then(|mut f| f.seek(SeekFrom::Start(start)).map(|_| f))
                    .map_err(|e| io(&s.path, e))?,
            );
            let mut offset = start;
            let mut record = Vec::new();
            while let Some(len) = read_record(&mut reader, &mut record).map_err(|e| io(&s.path, e))? {
                let Some((seq, u, _)) = decode(&record) else {
                    anyhow::bail!("outbox: {}: corrupt record at byte {offset}", s.path.display());
                };
                offset += len as u64;
                if seq > durable {
                    break;
                }
                if seq >= from {
                    out.push((seq, u));
                    if out.len() >= max {
                        if let Ok(mut c) = self.cursor.lock() {
                            *c = Some(Cursor { segment: s.first, offset, next: seq + 1 });
                        }
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}

struct Writer {
    dir: PathBuf,
    shared: Arc<Shared>,
    notify: Arc<tokio::sync::Notify>,
    limits: OutboxLimits,
    file: Option<(File, Segment)>,
}

impl Writer {
    fn run(mut self, rx: flume::Receiver<Pending>) {
        let mut buf = Vec::with_capacity(1 << 20);
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < 8192 {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.write_group(group, &mut buf) {
                tracing::error!(error = %e, "outbox write failed; commits can no longer be made durable");
                if let Ok(mut b) = self.shared.broken.lock() {
                    *b = Some(e.to_string());
                }
                self.shared.durable_watch.send_modify(|_| {});
                return;
            }
        }
    }

    fn write_group(&mut self, group: Vec<Pending>, buf: &mut Vec<u8>) -> anyhow::Result<()> {
        let mut seq = self.shared.durable.load(Ordering::Acquire);
        let first = seq + 1;
        buf.clear();
        let mut queued = 0u64;
        for p in &group {
            seq += 1;
            if p.seq != seq {
                anyhow::bail!("record {} arrived where {seq} was due", p.seq);
            }
            encode(buf, seq, p);
            queued += (36 + p.room.len() + p.key.len() + p.value.len()) as u64;
        }
        if self.file.as_ref().is_none_or(|(_, s)| s.bytes >= self.limits.segment_bytes) {
            let path = self.dir.join(format!("seg-{first:020}.log"));
            let f = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io(&path, e))?;
            let seg = Segment { first, last: first - 1, path, bytes: 0 };
            self.shared.segments.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(seg.clone());
            self.file = Some((f, seg));
            // The new file's directory entry must be durable too.
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io(&self.dir, e))?;
        }
        let Some((f, seg)) = self.file.as_mut() else { anyhow::bail!("no segment") };
        f.write_all(buf).map_err(|e| io(&seg.path, e))?;
        outpost_net::failpoint::hit("outbox.before_fsync");
        f.sync_data().map_err(|e| io(&seg.path, e))?;
        outpost_net::failpoint::hit("outbox.after_fsync");
        if let Some(oldest) = group.first() {
            self.shared.group_commit.observe(oldest.at.elapsed().as_secs_f64());
        }
        seg.bytes += buf.len() as u64;
        seg.last = seq;
        if let Ok(mut segs) = self.shared.segments.lock()
            && let Some(last) = segs.last_mut()
        {
            last.last = seq;
            last.bytes = seg.bytes;
        }
        let bytes = self.shared.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed) + buf.len() as u64;
        self.shared
            .queued_bytes
            .fetch_sub(queued.min(self.shared.queued_bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
        self.shared.set_over_soft(bytes > self.limits.soft_bytes);
        if let Ok(mut tail) = self.shared.tail.lock() {
            // The writer alone appends, in sequence order, so the tail stays consecutive; trimming
            // its front only sends the reader to disk for the oldest records.
            for (i, p) in group.into_iter().enumerate() {
                let u = WireUpdate { room: p.room, key: p.key, value: p.value, epoch: p.epoch };
                tail.bytes += record_size(&u);
                tail.records.push_back((first + i as u64, u, p.at));
            }
            while tail.bytes > TAIL_MAX_BYTES {
                match tail.records.pop_front() {
                    Some((_, u, _)) => tail.bytes -= record_size(&u),
                    None => break,
                }
            }
        }
        self.shared.durable.store(seq, Ordering::Release);
        self.shared.durable_watch.send_replace(seq);
        self.notify.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> OutboxLimits {
        OutboxLimits { soft_bytes: 1 << 20, hard_bytes: 4 << 20, segment_bytes: 4096 }
    }

    fn wait_durable(o: &Outbox, seq: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while o.durable() < seq {
            assert!(std::time::Instant::now() < deadline, "durable {} < {seq}", o.durable());
            std::thread::yield_now();
        }
    }

    #[test]
    fn commits_become_durable_survive_a_reopen_and_go_when_acked() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path(), "edge-1", limits()).unwrap();
        let stream = o.stream().to_string();
        // Five groups of 100, each over the 4 KiB segment size: five segments.
        for round in 0..5 {
            for i in 0..100 {
                o.append("r", RoomEpoch::default(), format!("k{}", round * 100 + i), vec![b'v'; 30]).unwrap();
            }
            wait_durable(&o, (round + 1) * 100);
        }
        let got = o.read(1, 1000).unwrap();
        assert_eq!(got.len(), 500);
        assert_eq!((got[499].0, got[499].1.key.as_str()), (500, "k499"));
        assert_eq!(o.read(450, 10).unwrap()[0].0, 450);
        let segments_before = std::fs::read_dir(dir.path()).unwrap().count();
        o.ack(400);
        assert_eq!(o.acked(), 400);
        assert!(std::fs::read_dir(dir.path()).unwrap().count() < segments_before, "acked segments are deleted");
        drop(o);
        let again = Outbox::open(dir.path(), "edge-1", limits()).unwrap();
        assert_eq!(again.stream(), stream, "the incarnation is kept");
        assert_eq!((again.durable(), again.acked()), (500, 400));
        assert_eq!(again.read(401, 1000).unwrap().len(), 100);
        again.append("r", RoomEpoch::default(), "next".into(), b"x".to_vec()).unwrap();
        wait_durable(&again, 501);
    }

    #[test]
    fn reads_in_small_steps_are_contiguous_from_memory_and_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path(), "edge-1", limits()).unwrap();
        for i in 0..300 {
            o.append("r", RoomEpoch::default(), format!("k{i}"), vec![b'v'; 20]).unwrap();
        }
        wait_durable(&o, 300);
        let walk = |o: &Outbox| {
            let mut next = 1;
            while next <= 300 {
                let got = o.read(next, 7).unwrap();
                assert!(!got.is_empty(), "nothing at {next}");
                for (seq, u) in got {
                    assert_eq!((seq, u.key), (next, format!("k{}", next - 1)));
                    next += 1;
                }
            }
        };
        walk(&o);
        o.ack(100);
        assert_eq!(o.read(101, 1).unwrap()[0].0, 101, "acked records leave memory, the rest stay");
        drop(o);
        // After a restart nothing is in memory: the same walk goes through the disk cursor.
        let o = Outbox::open(dir.path(), "edge-1", limits()).unwrap();
        assert_eq!(o.read(101, 1000).unwrap().len(), 200);
        let mut next = 101;
        while next <= 300 {
            let got = o.read(next, 13).unwrap();
            assert_eq!(got[0].0, next);
            next = got.last().unwrap().0 + 1;
        }
        // Out of order (a reconnect rewinds): the cursor is not trusted past where it stopped.
        assert_eq!(o.read(150, 3).unwrap()[0].0, 150);
        walk_from(&o, 120);
    }

    fn walk_from(o: &Outbox, from: u64) {
        let got = o.read(from, 1000).unwrap();
        assert_eq!(got.first().unwrap().0, from);
        assert_eq!(got.last().unwrap().0, 300);
        assert_eq!(got.len() as u64, 301 - from);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_hard_limit_refuses_without_dropping() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path(), "edge-1", limits()).unwrap();
        for i in 0..10 {
            o.append("r", RoomEpoch::default(), format!("k{i}"), b"v".to_vec()).unwrap();
        }
        wait_durable(&o, 10);
        drop(o);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_str().unwrap().ends_with(".log"))
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2, 3]).unwrap();
        drop(f);
        let o = Outbox::open(dir.path(), "edge-1", limits()).unwrap();
        assert_eq!(o.durable(), 10);
        assert_eq!(o.read(1, 100).unwrap().len(), 10);
        drop(o);

        let small = OutboxLimits { soft_bytes: 500, hard_bytes: 2000, segment_bytes: 4096 };
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path(), "edge-1", small).unwrap();
        let mut taken = 0;
        let err = loop {
            match o.append("r", RoomEpoch::default(), format!("k{taken}"), vec![b'v'; 100]) {
                Ok(_) => taken += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, OutboxError::Full(..)), "{err}");
        wait_durable(&o, taken);
        assert_eq!(o.read(1, 1000).unwrap().len() as u64, taken, "everything taken is kept");
        assert!(o.over_soft_limit());
    }

    #[test]
    fn append_tells_the_sequence_number_and_waiting_for_it_means_it_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let o = Arc::new(Outbox::open(dir.path(), "edge-1", limits()).unwrap());
        assert_eq!(o.append("r", RoomEpoch::default(), "a".into(), b"1".to_vec()).unwrap(), 1);
        // Four appenders at once: the numbers they are told are all different and consecutive
        // overall, and the writer accepts them in that order (it refuses a gap).
        let mut told: Vec<u64> = std::thread::scope(|s| {
            let hands: Vec<_> = (0..4)
                .map(|t| {
                    let o = o.clone();
                    s.spawn(move || {
                        (0..250)
                            .map(|i| o.append("r", RoomEpoch::default(), format!("k{t}-{i}"), vec![b'v'; 10]).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hands.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        told.sort();
        assert_eq!(told, (2..=1001).collect::<Vec<u64>>());
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(o.wait_durable(1001)).unwrap();
        assert!(o.durable() >= 1001);
        drop(o);
        let again = Outbox::open(dir.path(), "edge-1", limits()).unwrap();
        assert_eq!(again.durable(), 1001);
        assert_eq!(
            again.append("r", RoomEpoch::default(), "b".into(), b"2".to_vec()).unwrap(),
            1002,
            "numbering goes on after a reopen"
        );
    }
}
