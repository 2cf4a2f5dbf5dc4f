//! A room on the move, as its worker sees it (issue 26).
//!
//! On the source: [`Motion::Paused`] from the snapshot until the hand-off is decided (its ticks
//! stop; reliable messages from players and their leaves wait in order, unreliable ones are
//! dropped and counted), then either back to running with the waiting messages delivered (the
//! move failed) or [`Motion::Gone`]: what the players' old connections still deliver is
//! forwarded to the target in order, each player's stream closed by an [`Forwarded::End`].
//!
//! On the target: the room is restored under the same id with a detached link for every moving
//! player; a player's messages from its new connection wait until the source's `End` for that
//! player has been applied, so every reliable message reaches the guest exactly once and in
//! order.

use crate::room::player::PlayerLink;
use crate::room::worker::RoomSpec;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Reliable messages (and leaves) a paused or waiting room holds, at most. Past it, further
/// messages are dropped and counted: a move takes well under a second, and a player that sends
/// this many reliable messages in that time is flooding.
pub const MAX_HELD: usize = 16_384;

/// What a room takes to another node, so that it goes on there as if it had not moved.
#[derive(Debug, Clone)]
pub struct RoomExport {
    /// Its id, module, config, rate, cap and flags (the seed is unused: the random state moves).
    pub spec: RoomSpec,
    /// The module version it runs.
    pub version: String,
    /// The guest's `snapshot`.
    pub snapshot: Vec<u8>,
    /// The host's `random` state.
    pub rng: u64,
    /// The room's clock at the pause: its next `tick(now_ms)` on the target continues from here.
    pub now_ms: u64,
    /// Ticks so far (the room's info keeps counting).
    pub ticks: u64,
    /// The players, by id and name.
    pub players: Vec<(u64, String)>,
    /// The room's life and moves so far (the target counts one more).
    pub epoch: outpost_proto::link::RoomEpoch,
    /// The outbox sequence number of its last commit on the source (0: none).
    pub last_seq: u64,
}

/// Something a player's old connection delivered while the room was paused or after it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// A reliable message from `player` (`to` addresses one player in relay rooms).
    Message { player: u64, to: u64, data: Vec<u8> },
    /// The player's old connection ended: nothing more comes from it.
    End { player: u64 },
}

/// Where a room is in a move.
#[derive(Default)]
pub enum Motion {
    /// Not moving.
    #[default]
    Still,
    /// Snapshot taken; waiting for the hand-off to be decided.
    Paused(VecDeque<Forwarded>),
    /// Handed to another node: what old connections deliver goes to `forward`.
    Gone(tokio::sync::mpsc::Sender<Forwarded>),
}

/// On a target: the moving players whose old connection has not ended yet, and what their new
/// connections sent meanwhile.
#[derive(Default)]
pub struct Arrivals {
    waiting: HashMap<u64, VecDeque<(u64, Vec<u8>)>>,
    held: usize,
}

impl Arrivals {
    /// Players expected from the source.
    pub fn expect(players: impl IntoIterator<Item = u64>) -> Arrivals {
        Arrivals { waiting: players.into_iter().map(|p| (p, VecDeque::new())).collect(), held: 0 }
    }

    /// Whether `player`'s messages must wait for the source's `End`.
    pub fn is_waiting(&self, player: u64) -> bool {
        self.waiting.contains_key(&player)
    }

    /// Holds a message of `player`'s new connection; false when over [`MAX_HELD`].
    pub fn hold(&mut self, player: u64, to: u64, data: Vec<u8>) -> bool {
        if self.held >= MAX_HELD {
            return false;
        }
        let Some(q) = self.waiting.get_mut(&player) else { return false };
        q.push_back((to, data));
        self.held += 1;
        true
    }

    /// The source's `End` for `player`: what its new connection sent meanwhile, now in order.
    pub fn end(&mut self, player: u64) -> VecDeque<(u64, Vec<u8>)> {
        let q = self.waiting.remove(&player).unwrap_or_default();
        self.held -= q.len();
        q
    }

    /// Whether every moving player's old connection has ended.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// The links a target made for the moving players, detached until each rejoins.
pub type Placeholders = Vec<Arc<PlayerLink>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_waits_for_its_old_ones_end_and_is_bounded() {
        let mut a = Arrivals::expect([1, 2]);
        assert!(a.is_waiting(1) && !a.is_waiting(3));
        assert!(a.hold(1, 0, b"new-1".to_vec()));
        assert!(a.hold(1, 0, b"new-2".to_vec()));
        assert!(!a.hold(3, 0, b"not moving".to_vec()));
        let q: Vec<_> = a.end(1).into_iter().map(|(_, d)| d).collect();
        assert_eq!(q, vec![b"new-1".to_vec(), b"new-2".to_vec()]);
        assert!(!a.is_waiting(1) && !a.is_empty());
        for _ in 0..MAX_HELD {
            assert!(a.hold(2, 0, vec![]));
        }
        assert!(!a.hold(2, 0, vec![]), "bounded");
        assert_eq!(a.end(2).len(), MAX_HELD);
        assert!(a.is_empty());
    }
}
