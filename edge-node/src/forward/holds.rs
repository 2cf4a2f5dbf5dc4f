//! Commits held back for rooms that moved here (issue 26).
//!
//! A node has one outbox stream, and the core orders each stream by sequence number but knows
//! nothing of the order *between* streams. When a room moves from node A to node B, what it
//! committed on A may still sit in A's outbox (A's link to the core may be cut), so if B sent
//! what the room commits next, A's late delivery could overwrite it. The hand-off therefore
//! carries where the room's commits end in each earlier node's stream ([`StreamMark`]), and B's
//! forwarder sends nothing of that room's new epoch, nor anything after it in B's stream, until
//! the core says it has every one of those streams past its mark (`Position` on the link).
//!
//! A source that never comes back must not hold the room forever: past the hold's deadline
//! (`--commit-hold`, 60 s by default) the commits go anyway, counted and logged, and the core's
//! per-key room epochs keep a late delivery from overwriting a key the room wrote since (keys it
//! did not write since take the late value, which is then their last).
//!
//! Holding stops the node's whole stream at the first held record, not only the moved room's:
//! the stream's order is what makes the core's replay detection work, and a hold normally lasts
//! the few milliseconds until the source's last commits are acked.

use outpost_proto::api::StreamMark;
use outpost_proto::link::RoomEpoch;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// One moved room's hold.
#[derive(Debug, Clone)]
struct Hold {
    /// Its records from this epoch on are held (earlier ones were written here before the room
    /// last left, and are already in order in this stream).
    from_moves: u32,
    /// What the core must have first.
    after: Vec<StreamMark>,
    /// When the hold lapses.
    until: Instant,
}

/// Every hold of this node, by room lineage.
#[derive(Debug, Default)]
pub struct Holds {
    holds: Mutex<HashMap<u64, Hold>>,
}

/// What [`Holds::check`] found about the hold on a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No hold, or it is over: send.
    Go,
    /// Still waiting for these marks.
    Wait(Vec<StreamMark>),
}

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Hold>> {
        self.holds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds the room `epoch.lineage`'s records of `epoch.moves` on until the core has every
    /// mark of `after` (the own stream's marks are left out by the caller) or `until`. A hold the
    /// room already has here (it came back before the last one was over) is widened. Returns
    /// whether the hold is new, so that a move that fails can [`Holds::drop_new`] it.
    pub fn add(&self, epoch: RoomEpoch, after: Vec<StreamMark>, until: Instant) -> bool {
        if epoch.lineage == 0 || after.is_empty() {
            return false;
        }
        let mut holds = self.lock();
        match holds.get_mut(&epoch.lineage) {
            Some(h) => {
                h.from_moves = h.from_moves.min(epoch.moves);
                h.after.extend(after);
                h.until = h.until.max(until);
                false
            }
            None => {
                holds.insert(epoch.lineage, Hold { from_moves: epoch.moves, after, until });
                true
            }
        }
    }

    /// Forgets a hold [`Holds::add`] made new, for a room that did not arrive after all.
    pub fn drop_new(&self, lineage: u64) {
        self.lock().remove(&lineage);
    }

    /// The marks a room still waits for here, which its next node must wait for too.
    pub fn pending(&self, lineage: u64) -> Vec<StreamMark> {
        self.lock().get(&lineage).map(|h| h.after.clone()).unwrap_or_default()
    }

    /// Whether a record of `epoch` may go now; past the deadline the hold is dropped and
    /// `expired` is told.
    pub fn check(&self, epoch: &RoomEpoch, now: Instant, expired: impl FnOnce(&[StreamMark])) -> Verdict {
        let mut holds = self.lock();
        let Some(h) = holds.get(&epoch.lineage) else { return Verdict::Go };
        if epoch.moves < h.from_moves {
            return Verdict::Go;
        }
        if now >= h.until {
            expired(&h.after);
            holds.remove(&epoch.lineage);
            return Verdict::Go;
        }
        Verdict::Wait(h.after.clone())
    }

    /// Marks the core has reached: each is struck from every hold, and holds left with none end.
    pub fn reached(&self, stream: &str, high_water: u64) {
        let mut holds = self.lock();
        for h in holds.values_mut() {
            h.after.retain(|m| !(m.stream == stream && m.seq <= high_water));
        }
        holds.retain(|_, h| !h.after.is_empty());
    }

    /// Holds in force now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mark(stream: &str, seq: u64) -> StreamMark {
        StreamMark { stream: stream.into(), seq }
    }

    #[test]
    fn a_moved_room_waits_for_every_earlier_stream_and_no_longer() {
        let holds = Holds::default();
        let now = Instant::now();
        let until = now + Duration::from_secs(60);
        let e = |moves| RoomEpoch { lineage: 5, moves };
        assert!(!holds.add(e(2), vec![], until), "nothing to wait for: no hold");
        assert!(holds.add(e(2), vec![mark("a/1", 10), mark("b/1", 4)], until));
        // Records of the room's earlier stay here, and of other rooms, go.
        assert_eq!(holds.check(&e(1), now, |_| {}), Verdict::Go);
        assert_eq!(holds.check(&RoomEpoch { lineage: 6, moves: 9 }, now, |_| {}), Verdict::Go);
        assert_eq!(holds.check(&e(2), now, |_| {}), Verdict::Wait(vec![mark("a/1", 10), mark("b/1", 4)]));
        holds.reached("a/1", 9);
        holds.reached("b/1", 4);
        assert_eq!(holds.pending(5), vec![mark("a/1", 10)], "its next node inherits what is left");
        holds.reached("a/1", 12);
        assert_eq!(holds.check(&e(3), now, |_| {}), Verdict::Go);
        assert!(holds.is_empty());
    }

    #[test]
    fn a_hold_lapses_at_its_deadline_and_says_so() {
        let holds = Holds::default();
        let now = Instant::now();
        let e = RoomEpoch { lineage: 5, moves: 1 };
        assert!(holds.add(e, vec![mark("a/1", 10)], now + Duration::from_secs(1)));
        let mut told = Vec::new();
        assert!(matches!(holds.check(&e, now, |m| told.extend_from_slice(m)), Verdict::Wait(_)));
        assert!(told.is_empty());
        assert_eq!(holds.check(&e, now + Duration::from_secs(1), |m| told.extend_from_slice(m)), Verdict::Go);
        assert_eq!(told, vec![mark("a/1", 10)]);
        assert!(holds.is_empty());
    }

    #[test]
    fn a_room_that_comes_back_widens_its_hold_and_a_failed_arrival_is_forgotten() {
        let holds = Holds::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        assert!(holds.add(RoomEpoch { lineage: 5, moves: 1 }, vec![mark("a/1", 3)], now + Duration::from_secs(5)));
        assert!(!holds.add(RoomEpoch { lineage: 5, moves: 3 }, vec![mark("c/1", 7)], later));
        assert_eq!(holds.pending(5), vec![mark("a/1", 3), mark("c/1", 7)]);
        assert!(matches!(holds.check(&RoomEpoch { lineage: 5, moves: 1 }, now, |_| {}), Verdict::Wait(_)));
        assert!(holds.add(RoomEpoch { lineage: 9, moves: 1 }, vec![mark("a/1", 3)], later));
        holds.drop_new(9);
        assert_eq!(holds.check(&RoomEpoch { lineage: 9, moves: 1 }, now, |_| {}), Verdict::Go);
        // No lineage, no hold.
        assert!(!holds.add(RoomEpoch::default(), vec![mark("a/1", 3)], later));
    }
}
