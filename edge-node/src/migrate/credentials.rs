//! Move credentials: what a player who follows its room to another node presents there instead
//! of a router ticket. The target node issues one per moving player when it accepts a room; the
//! source hands it to the player in the `Moved` frame; the player sends it as the ticket of its
//! `Join` on the target.
//!
//! A credential is 256 random bits, meaningful only in the table of the node that issued it: it
//! names nothing, so it cannot be forged or pointed at another player, room or node, and no edge
//! needs the router's signing key. It is redeemed once (taken out of the table) and expires after
//! [`TTL`]. The table is bounded: a node holding [`MAX_PENDING`] unredeemed credentials accepts no
//! more rooms until some are used or expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a credential stays valid: the issue asks for at most 30 s.
pub const TTL: Duration = Duration::from_secs(30);
/// Credentials waiting for their player, at most.
pub const MAX_PENDING: usize = 65_536;
/// What every credential starts with, so a join tells one from a router ticket without a lookup.
pub const PREFIX: &str = "mv1.";

/// Why a credential was not accepted; each closes the player with `move-refused`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Never issued here, already redeemed, or issued by another node.
    #[error("the move credential is unknown here or already used")]
    Unknown,
    /// Issued here, but over [`TTL`] ago.
    #[error("the move credential expired")]
    Expired,
    /// The table is full.
    #[error("too many moves are waiting for their players")]
    Full,
}

/// The credentials a node has issued and not yet seen redeemed, each with what it admits
/// (`T`: the player's place in its room).
pub struct MoveCredentials<T> {
    pending: Mutex<HashMap<String, (T, Instant)>>,
}

impl<T> Default for MoveCredentials<T> {
    fn default() -> Self {
        MoveCredentials { pending: Mutex::default() }
    }
}

impl<T> MoveCredentials<T> {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, (T, Instant)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a credential that admits `what`, until [`TTL`] from `now`.
    pub fn issue(&self, what: T, now: Instant) -> Result<String, CredentialError> {
        let mut table = self.table();
        if table.len() >= MAX_PENDING {
            table.retain(|_, (_, expires)| *expires > now);
            if table.len() >= MAX_PENDING {
                return Err(CredentialError::Full);
            }
        }
        let text = format!("{PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
        table.insert(text.clone(), (what, now + TTL));
        Ok(text)
    }

    /// Takes `text` out of the table: once only, and only before it expires.
    pub fn redeem(&self, text: &str, now: Instant) -> Result<T, CredentialError> {
        let (what, expires) = self.table().remove(text).ok_or(CredentialError::Unknown)?;
        if expires <= now {
            return Err(CredentialError::Expired);
        }
        Ok(what)
    }

    /// Withdraws the credentials whose `what` matches (a hand-off that was abandoned).
    pub fn withdraw(&self, matches: impl Fn(&T) -> bool) {
        self.table().retain(|_, (what, _)| !matches(what));
    }

    /// Credentials waiting.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a join's ticket text is a move credential rather than a router ticket.
pub fn is_credential(ticket: &str) -> bool {
    ticket.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_redeemed_once_for_its_own_player_and_room() {
        let c = MoveCredentials::default();
        let now = Instant::now();
        let a = c.issue((7, "room-1"), now).unwrap();
        let b = c.issue((8, "room-1"), now).unwrap();
        assert!(is_credential(&a) && a != b && a.len() == PREFIX.len() + 64);
        assert_eq!(c.redeem(&a, now + Duration::from_secs(1)), Ok((7, "room-1")));
        assert_eq!(c.redeem(&a, now), Err(CredentialError::Unknown), "replayed");
        assert_eq!(c.redeem("mv1.00", now), Err(CredentialError::Unknown), "never issued");
        assert_eq!(c.redeem("", now), Err(CredentialError::Unknown));
        // Another node's table never saw it.
        assert_eq!(MoveCredentials::<(u64, &str)>::default().redeem(&b, now), Err(CredentialError::Unknown));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn credentials_expire_and_withdraw_with_their_room() {
        let c = MoveCredentials::default();
        let now = Instant::now();
        let a = c.issue((7, "room-1"), now).unwrap();
        assert_eq!(c.redeem(&a, now + TTL), Err(CredentialError::Expired));
        let b = c.issue((8, "room-2"), now).unwrap();
        let d = c.issue((9, "room-3"), now).unwrap();
        c.withdraw(|(_, room)| *room == "room-2");
        assert_eq!(c.redeem(&b, now), Err(CredentialError::Unknown));
        assert!(c.redeem(&d, now).is_ok());
        assert!(c.is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_makes_room_from_expired_ones() {
        let c = MoveCredentials::default();
        let now = Instant::now();
        for i in 0..MAX_PENDING as u64 {
            c.issue(i, now).unwrap();
        }
        assert_eq!(c.issue(1, now), Err(CredentialError::Full));
        assert!(c.issue(1, now + TTL).is_ok(), "expired ones are dropped to make room");
        assert_eq!(c.len(), 1);
    }
}
