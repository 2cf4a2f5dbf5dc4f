//! Where committed state lives. One trait, so the ingest never knows which store it writes to.
//!
//! The contract every store keeps:
//! - **Ordered streams.** Updates arrive in streams (one per edge outbox incarnation), each update
//!   with a sequence number. A batch's sequence numbers rise by one at a time.
//! - **Idempotent.** A store keeps each stream's high-water mark *in the same transaction* as the
//!   data, and skips updates at or below it, so a batch replayed after a crash or reconnect
//!   changes nothing.
//! - **No gaps.** A batch that starts above the high-water mark + 1 is refused: something was lost
//!   between the edge and here, and saying so beats silently storing a hole.
//! - **Durable before return.** When `apply` returns, the batch survives a crash (fsync).
//! - **No going back a room epoch.** A store records, with each key a moved room wrote, that
//!   write's [`RoomEpoch`], and skips (as *stale*) an update from an earlier stop of the same
//!   room's life: a node a room moved away from that delivers late must not overwrite what the
//!   room wrote after it moved. Untagged updates (lineage 0) and writes of other rooms are never
//!   stale. Writes of rooms that never moved record nothing, so a fleet whose rooms stay put
//!   pays one read per update for the guard, and no write.

pub use outpost_proto::link::RoomEpoch;

pub mod embedded;
pub mod postgres;

use std::fmt;

/// One committed update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update<'a> {
    /// Sequence number in its stream.
    pub seq: u64,
    /// The room that committed it (kept for operators; not part of the key).
    pub room: &'a str,
    /// The key, as the guest committed it (may contain `/`).
    pub key: &'a str,
    /// The value.
    pub value: &'a [u8],
    /// The committing room's epoch.
    pub epoch: RoomEpoch,
}

/// What one `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Updates written.
    pub applied: u64,
    /// Updates at or below the high-water mark, skipped as replays.
    pub replayed: u64,
    /// New updates skipped because the key's last writer is a later epoch of the same room.
    pub stale: u64,
    /// The stream's high-water mark after the batch.
    pub high_water: u64,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The batch's sequence numbers do not rise by one.
    #[error("stream {stream}: sequence numbers must rise by one; got {got} after {after}")]
    Disorder {
        /// The stream.
        stream: String,
        /// The previous seq in the batch.
        after: u64,
        /// The offending seq.
        got: u64,
    },
    /// The batch starts past the high-water mark + 1.
    #[error("stream {stream}: gap: high-water mark is {high_water} but the batch starts at {first}")]
    Gap {
        /// The stream.
        stream: String,
        /// What the store has.
        high_water: u64,
        /// What the batch starts with.
        first: u64,
    },
    /// The backing store failed.
    #[error("store: {0}")]
    Backend(String),
}

/// A durable key-value store with per-stream high-water marks.
pub trait Store: Send + Sync {
    /// Applies a batch of one stream atomically and durably (see the module docs).
    fn apply(&self, stream: &str, batch: &[Update<'_>]) -> Result<Applied, StoreError>;
    /// A key's value.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Keys starting with `prefix`, in key order, at most `limit`.
    fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// A stream's high-water mark (0 for a new stream).
    fn high_water(&self, stream: &str) -> Result<u64, StoreError>;
}

/// One update a store writes, and whether it also records the update's room epoch for its key.
#[derive(Debug, Clone, Copy)]
pub struct Write<'b, 'a> {
    /// The update.
    pub update: &'b Update<'a>,
    /// Record `update.epoch` as the key's epoch: only the writes of a room that has moved (a
    /// room that never moved has nothing to guard against), and only when the epoch changes.
    pub record: bool,
}

/// The updates of `fresh` that a store writes, given each key's recorded epoch (`stored`, asked
/// once per key, only for tagged updates), in batch order: every update unless the key's epoch,
/// recorded or set earlier in the batch, is a later stop of the same room. Shared by every store
/// so they skip the same updates.
pub fn fresh_writes<'b, 'a>(
    fresh: &'b [Update<'a>],
    mut stored: impl FnMut(&str) -> Result<Option<RoomEpoch>, StoreError>,
) -> Result<Vec<Write<'b, 'a>>, StoreError> {
    let mut current: std::collections::HashMap<&str, Option<RoomEpoch>> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(fresh.len());
    for u in fresh {
        if u.epoch.lineage == 0 {
            out.push(Write { update: u, record: false });
            continue;
        }
        let c = match current.get(u.key) {
            Some(c) => *c,
            None => {
                let c = stored(u.key)?;
                current.insert(u.key, c);
                c
            }
        };
        if c.is_some_and(|c| u.epoch.is_older_than(&c)) {
            continue;
        }
        let record = u.epoch.moves > 0 && c != Some(u.epoch);
        if record {
            current.insert(u.key, Some(u.epoch));
        }
        out.push(Write { update: u, record });
    }
    Ok(out)
}

/// Checks a batch's order against the stream's high-water mark; returns how many leading updates
/// are replays. Shared by every store so they refuse the same batches.
pub fn check_batch(stream: &str, high_water: u64, batch: &[Update<'_>]) -> Result<usize, StoreError> {
    for w in batch.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            return Err(StoreError::Disorder { stream: stream.to_string(), after: w[0].seq, got: w[1].seq });
        }
    }
    let Some(first) = batch.first() else { return Ok(0) };
    if first.seq > high_water + 1 {
        return Err(StoreError::Gap { stream: stream.to_string(), high_water, first: first.seq });
    }
    Ok(batch.iter().take_while(|u| u.seq <= high_water).count())
}

/// The behaviour every [`Store`] must show. Each implementation's tests call this with `open`,
/// which opens the same (initially empty) store each time it is called; the suite closes the
/// store and opens it again to check that everything survived.
pub fn conformance(open: &dyn Fn() -> Box<dyn Store>) {
    let boxed = open();
    let store = boxed.as_ref();
    let u = |seq: u64, key: &'static str, value: &'static [u8]| Update {
        seq,
        room: "r1",
        key,
        value,
        epoch: RoomEpoch::default(),
    };
    // Writes, reads, prefix scans in key order.
    let a = store.apply("edge-a/1", &[u(1, "player/1", b"v1"), u(2, "player/2", b"x"), u(3, "score/9", b"7")]);
    assert_eq!(a.unwrap(), Applied { applied: 3, replayed: 0, stale: 0, high_water: 3 });
    assert_eq!(store.get("player/1").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(store.get("nope").unwrap(), None);
    let scan = store.scan("player/", 10).unwrap();
    assert_eq!(scan.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["player/1", "player/2"]);
    assert_eq!(store.scan("player/", 1).unwrap().len(), 1);
    assert!(store.scan("zzz", 10).unwrap().is_empty());
    // A replay changes nothing; an overlapping batch applies only its new tail.
    let replay = store.apply("edge-a/1", &[u(2, "player/2", b"CHANGED"), u(3, "score/9", b"CHANGED")]).unwrap();
    assert_eq!(replay, Applied { applied: 0, replayed: 2, stale: 0, high_water: 3 });
    assert_eq!(store.get("player/2").unwrap().as_deref(), Some(&b"x"[..]));
    let tail = store.apply("edge-a/1", &[u(3, "score/9", b"CHANGED"), u(4, "player/1", b"v2")]).unwrap();
    assert_eq!(tail, Applied { applied: 1, replayed: 1, stale: 0, high_water: 4 });
    assert_eq!(store.get("player/1").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(store.get("score/9").unwrap().as_deref(), Some(&b"7"[..]));
    // Streams are independent.
    assert_eq!(store.apply("edge-b/1", &[u(1, "k", b"b")]).unwrap().high_water, 1);
    assert_eq!(store.high_water("edge-a/1").unwrap(), 4);
    assert_eq!(store.high_water("unknown").unwrap(), 0);
    // Gaps and disorder are refused whole, and leave the store as it was.
    assert!(matches!(
        store.apply("edge-a/1", &[u(6, "k", b"gap")]),
        Err(StoreError::Gap { high_water: 4, first: 6, .. })
    ));
    let bad = store.apply("edge-a/1", &[u(5, "k", b"1"), u(7, "k", b"2")]);
    assert!(matches!(bad, Err(StoreError::Disorder { after: 5, got: 7, .. })));
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"b"[..]));
    assert_eq!(store.high_water("edge-a/1").unwrap(), 4);
    // One key written many times ends at its last value; empty values and batches are fine.
    let many: Vec<String> = (0..50).map(|i| format!("v{i}")).collect();
    let batch: Vec<Update<'_>> = many
        .iter()
        .enumerate()
        .map(|(i, v)| Update {
            seq: 5 + i as u64,
            room: "r1",
            key: "hot",
            value: v.as_bytes(),
            epoch: RoomEpoch::default(),
        })
        .collect();
    assert_eq!(store.apply("edge-a/1", &batch).unwrap().applied, 50);
    assert_eq!(store.get("hot").unwrap().as_deref(), Some(&b"v49"[..]));
    assert_eq!(store.apply("edge-a/1", &[]).unwrap(), Applied { applied: 0, replayed: 0, stale: 0, high_water: 54 });
    assert_eq!(store.apply("edge-a/1", &[u(55, "empty", b"")]).unwrap().applied, 1);
    assert_eq!(store.get("empty").unwrap().as_deref(), Some(&b""[..]));
    // Room epochs: a room moved from edge-a to edge-b (lineage 77, moves 0 → 1). What it wrote
    // on edge-b stands against what edge-a delivers late; keys edge-b never wrote take the late
    // value; another room, a new room under the same id (another lineage), and untagged writes
    // are never stale. Within one batch the same rule holds.
    let e = |moves| RoomEpoch { lineage: 77, moves };
    let t = |seq: u64, key: &'static str, value: &'static [u8], epoch| Update { seq, room: "mover", key, value, epoch };
    let b = store.apply("edge-b/1", &[t(2, "m/score", b"b1", e(1)), t(3, "m/pos", b"b1", e(1))]);
    assert_eq!(b.unwrap(), Applied { applied: 2, replayed: 0, stale: 0, high_water: 3 });
    let late = store.apply("edge-a/1", &[t(56, "m/score", b"a0", e(0)), t(57, "m/only-a", b"a0", e(0))]).unwrap();
    assert_eq!(late, Applied { applied: 1, replayed: 0, stale: 1, high_water: 57 }, "the mark moves past stale");
    assert_eq!(store.get("m/score").unwrap().as_deref(), Some(&b"b1"[..]));
    assert_eq!(store.get("m/only-a").unwrap().as_deref(), Some(&b"a0"[..]));
    let reborn = RoomEpoch { lineage: 78, moves: 0 };
    let others = store.apply(
        "edge-a/1",
        &[
            t(58, "m/pos", b"reborn", reborn),
            t(59, "m/pos", b"a0-again", e(0)),
            t(60, "m/pos", b"untagged", RoomEpoch::default()),
            t(61, "m/pos", b"a2", e(2)),
            t(62, "m/pos", b"a1", e(1)),
        ],
    );
    assert_eq!(others.unwrap(), Applied { applied: 3, replayed: 0, stale: 2, high_water: 62 });
    assert_eq!(store.get("m/pos").unwrap().as_deref(), Some(&b"a2"[..]));
    // Everything survives a reopen, the keys' epochs too.
    drop(boxed);
    let again = open();
    assert_eq!(again.high_water("edge-a/1").unwrap(), 62);
    assert_eq!(again.get("hot").unwrap().as_deref(), Some(&b"v49"[..]));
    assert_eq!(again.scan("", 100).unwrap().len(), 9);
    let after = again.apply("edge-b/1", &[t(4, "m/score", b"b-late", e(0)), t(5, "m/pos", b"b3", e(3))]).unwrap();
    assert_eq!(after, Applied { applied: 1, replayed: 0, stale: 1, high_water: 5 });
    assert_eq!(again.get("m/score").unwrap().as_deref(), Some(&b"b1"[..]));
    assert_eq!(again.get("m/pos").unwrap().as_deref(), Some(&b"b3"[..]));
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} applied, {} replayed, {} stale, high-water {}",
            self.applied, self.replayed, self.stale, self.high_water
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_checked_against_the_high_water_mark() {
        let u = |seq| Update { seq, room: "r", key: "k", value: b"", epoch: RoomEpoch::default() };
        assert_eq!(check_batch("s", 0, &[u(1), u(2)]).unwrap(), 0);
        assert_eq!(check_batch("s", 5, &[u(3), u(4), u(5), u(6)]).unwrap(), 3);
        assert_eq!(check_batch("s", 5, &[]).unwrap(), 0);
        assert!(matches!(check_batch("s", 5, &[u(7)]), Err(StoreError::Gap { .. })));
        assert!(matches!(check_batch("s", 0, &[u(1), u(1)]), Err(StoreError::Disorder { .. })));
        assert!(matches!(check_batch("s", 0, &[u(2), u(1)]), Err(StoreError::Disorder { .. })));
    }
}
