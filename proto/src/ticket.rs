//! Join tickets: `base64url(payload) "." base64url(signature)`, the payload a compact JSON object
//! signed with the router's Ed25519 key.
//!
//! Verification here is offline and stateless (signature, expiry, node). Single use needs memory
//! of seen nonces, which [`ReplayGuard`] keeps, bounded by the tickets' own expiry.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

use crate::CloseCode;

/// The ticket format version of an ordinary ticket (one player, any room of the module, or a
/// named room).
pub const TICKET_VERSION: u32 = 1;
/// The version of a match ticket: it names a room reserved for one match, with the room's
/// `max_players`. Only nodes that advertise `match-tickets` in their heartbeat are given these.
pub const TICKET_VERSION_MATCH: u32 = 2;
/// Largest ticket text accepted, so a hostile client cannot make us decode megabytes.
pub const MAX_TICKET_LEN: usize = 2048;
/// Default for how long a ticket may be valid, counted from when a node checks it. Routers issue
/// tickets for a minute (at most an hour); a day leaves room for other issuers and clock skew
/// while bounding how long a node keeps each nonce.
pub const DEFAULT_MAX_TICKET_LIFETIME_S: u64 = 24 * 3600;

/// What a ticket grants: one player, on one node, into one module (and maybe one room), until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketPayload {
    /// Format version, [`TICKET_VERSION`].
    pub v: u32,
    /// The player id, vouched for by the game's login service through the router.
    pub player: u64,
    /// Display name; clients never choose it themselves.
    pub name: String,
    /// The node id the ticket is valid on.
    pub node: String,
    /// The module to join.
    pub module: String,
    /// A specific room, or any open room of the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// 16 random bytes, base64url, for single use.
    pub nonce: String,
    /// v2: the room is reserved for one match and holds at most this many players; a node
    /// creates it with this cap and places nobody without such a ticket in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_max_players: Option<u32>,
}

impl TicketPayload {
    /// A payload with a fresh random nonce.
    pub fn new(player: u64, name: &str, node: &str, module: &str, room: Option<&str>, exp: u64) -> Self {
        let nonce: [u8; 16] = rand::random();
        TicketPayload {
            v: TICKET_VERSION,
            player,
            name: name.to_owned(),
            node: node.to_owned(),
            module: module.to_owned(),
            room: room.map(str::to_owned),
            exp,
            nonce: URL_SAFE_NO_PAD.encode(nonce),
            match_max_players: None,
        }
    }

    /// A v2 match ticket: `room` is reserved for the match and holds at most `max_players`.
    pub fn for_match(
        player: u64,
        name: &str,
        node: &str,
        module: &str,
        room: &str,
        max_players: u32,
        exp: u64,
    ) -> Self {
        TicketPayload {
            v: TICKET_VERSION_MATCH,
            match_max_players: Some(max_players),
            ..TicketPayload::new(player, name, node, module, Some(room), exp)
        }
    }

    /// The reserved room and its cap, for a match ticket.
    pub fn reserved_room(&self) -> Option<(&str, u32)> {
        Some((self.room.as_deref()?, self.match_max_players?))
    }

    /// Signs the payload into the ticket text form.
    pub fn sign(&self, key: &SigningKey) -> String {
        let json = serde_json::to_vec(self).expect("ticket payload always serializes");
        let sig = key.sign(&json);
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&json), URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

/// Why a ticket was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not two base64url parts, not JSON, wrong version, or too long.
    #[error("malformed ticket: {0}")]
    Malformed(String),
    /// The signature does not verify under the router's key.
    #[error("ticket signature does not verify")]
    BadSignature,
    /// `exp` is in the past.
    #[error("ticket expired at {0}")]
    Expired(u64),
    /// The ticket names another node.
    #[error("ticket is for node {0:?}")]
    WrongNode(String),
    /// The ticket is valid for longer (first, in seconds) than the node's limit (second): a
    /// node keeps every accepted nonce until its ticket expires, so it takes no ticket it would
    /// have to remember for longer than that.
    #[error("ticket valid for {0} s, over this node's limit of {1} s")]
    TooLong(u64, u64),
    /// The nonce was seen before.
    #[error("ticket already used")]
    Replayed,
    /// The node holds as many unexpired nonces as it may. The ticket may be fine: the node
    /// cannot take it now without forgetting a nonce that could still be replayed.
    #[error("the node holds {0} unexpired tickets, its limit; retry shortly or on another node")]
    TooManyLive(usize),
}

impl TicketError {
    /// The close code a player sees for this error.
    pub fn code(&self) -> CloseCode {
        match self {
            TicketError::Malformed(_) | TicketError::BadSignature | TicketError::TooLong(..) => CloseCode::BadTicket,
            TicketError::Expired(_) => CloseCode::TicketExpired,
            TicketError::WrongNode(_) => CloseCode::WrongNode,
            TicketError::Replayed => CloseCode::TicketReplayed,
            // Not the ticket's fault: a client should retry, not throw the ticket away.
            TicketError::TooManyLive(_) => CloseCode::NodeNotAccepting,
        }
    }
}

/// Checks signature, version, expiry (against `now_unix`) and node. Does not check single use.
pub fn verify(ticket: &str, key: &VerifyingKey, node_id: &str, now_unix: u64) -> Result<TicketPayload, TicketError> {
    if ticket.len() > MAX_TICKET_LEN {
        return Err(TicketError::Malformed(format!("longer than {MAX_TICKET_LEN} bytes")));
    }
    let (body, sig) =
        ticket.split_once('.').ok_or_else(|| TicketError::Malformed("expected payload.signature".into()))?;
    let body = URL_SAFE_NO_PAD.decode(body).map_err(|e| TicketError::Malformed(format!("payload: {e}")))?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|e| TicketError::Malformed(format!("signature: {e}")))?;
    let sig: [u8; 64] =
        sig.as_slice().try_into().map_err(|_| TicketError::Malformed("signature must be 64 bytes".into()))?;
    key.verify(&body, &Signature::from_bytes(&sig)).map_err(|_| TicketError::BadSignature)?;
    let payload: TicketPayload =
        serde_json::from_slice(&body).map_err(|e| TicketError::Malformed(format!("payload json: {e}")))?;
    match (payload.v, &payload.room, payload.match_max_players) {
        (TICKET_VERSION, _, None) => {}
        (TICKET_VERSION_MATCH, Some(_), Some(1..)) => {}
        (TICKET_VERSION | TICKET_VERSION_MATCH, ..) => {
            return Err(TicketError::Malformed(format!(
                "a v{} ticket with room {:?} and match_max_players {:?}",
                payload.v, payload.room, payload.match_max_players
            )));
        }
        (v, ..) => return Err(TicketError::Malformed(format!("unsupported version {v}"))),
    }
    if payload.exp <= now_unix {
        return Err(TicketError::Expired(payload.exp));
    }
    if payload.node != node_id {
        return Err(TicketError::WrongNode(payload.node));
    }
    Ok(payload)
}

/// Remembers nonces of accepted tickets until they expire, so each ticket works once.
///
/// Memory is bounded by `capacity`: when full, the guard refuses new tickets rather than forget a
/// nonce that could still be replayed, which keeps "single use" true under a flood.
#[derive(Debug)]
pub struct ReplayGuard {
    by_exp: BTreeMap<u64, Vec<String>>,
    seen: HashSet<String>,
    capacity: usize,
    max_lifetime_s: u64,
}

impl ReplayGuard {
    /// A guard that holds at most `capacity` live nonces, each for at most `max_lifetime_s`.
    pub fn new(capacity: usize, max_lifetime_s: u64) -> Self {
        ReplayGuard { by_exp: BTreeMap::new(), seen: HashSet::new(), capacity, max_lifetime_s }
    }

    /// Records the ticket's nonce; `Err(Replayed)` if it was already used, `Err(TooLong)` if it
    /// would have to be remembered for longer than this guard's limit.
    pub fn check_and_insert(&mut self, t: &TicketPayload, now_unix: u64) -> Result<(), TicketError> {
        let valid_for = t.exp.saturating_sub(now_unix);
        if valid_for > self.max_lifetime_s {
            return Err(TicketError::TooLong(valid_for, self.max_lifetime_s));
        }
        self.expire(now_unix);
        if self.seen.contains(&t.nonce) {
            return Err(TicketError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(TicketError::TooManyLive(self.capacity));
        }
        self.seen.insert(t.nonce.clone());
        self.by_exp.entry(t.exp).or_default().push(t.nonce.clone());
        Ok(())
    }

    fn expire(&mut self, now_unix: u64) {
        while let Some(entry) = self.by_exp.first_entry() {
            if *entry.key() >= now_unix {
                break;
            }
            for n in entry.remove() {
                self.seen.remove(&n);
            }
        }
    }

    /// Live nonces held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_signing_key;

    fn mint(exp: u64) -> (SigningKey, TicketPayload, String) {
        let k = generate_signing_key();
        let p = TicketPayload::new(7, "ada", "node-a", "arena", None, exp);
        let t = p.sign(&k);
        (k, p, t)
    }

    #[test]
    fn valid_ticket_verifies() {
        let (k, p, t) = mint(1000);
        assert_eq!(verify(&t, &k.verifying_key(), "node-a", 999).unwrap(), p);
    }

    #[test]
    fn a_ticket_valid_for_longer_than_the_guard_keeps_nonces_is_refused_unburnt() {
        let mut g = ReplayGuard::new(10, 3600);
        let t = TicketPayload::new(7, "ada", "node-a", "arena", None, 1000 + 3601);
        let err = g.check_and_insert(&t, 1000).unwrap_err();
        assert_eq!(err, TicketError::TooLong(3601, 3600));
        assert_eq!(err.code(), CloseCode::BadTicket);
        assert!(g.is_empty(), "a refused ticket holds no slot");
        // An hour exactly is accepted, once.
        g.check_and_insert(&t, 1001).unwrap();
        assert_eq!(g.check_and_insert(&t, 1001), Err(TicketError::Replayed));
    }

    #[test]
    fn each_bad_ticket_has_its_own_error_and_code() {
        let (k, _, t) = mint(1000);
        let pk = k.verifying_key();
        let other = generate_signing_key().verifying_key();
        let cases: Vec<(&str, Result<TicketPayload, TicketError>, CloseCode)> = vec![
            ("forged", verify(&t, &other, "node-a", 1), CloseCode::BadTicket),
            ("expired", verify(&t, &pk, "node-a", 1000), CloseCode::TicketExpired),
            ("wrong node", verify(&t, &pk, "node-b", 1), CloseCode::WrongNode),
            ("no dot", verify("abc", &pk, "node-a", 1), CloseCode::BadTicket),
            ("not base64", verify("!!.??", &pk, "node-a", 1), CloseCode::BadTicket),
            ("short sig", verify("e30.AAAA", &pk, "node-a", 1), CloseCode::BadTicket),
            ("huge", verify(&"a".repeat(5000), &pk, "node-a", 1), CloseCode::BadTicket),
        ];
        for (name, got, code) in cases {
            assert_eq!(got.unwrap_err().code(), code, "{name}");
        }
    }

    #[test]
    fn match_tickets_are_v2_and_must_carry_room_and_cap() {
        let k = generate_signing_key();
        let pk = k.verifying_key();
        let t = TicketPayload::for_match(7, "ada", "node-a", "arena", "m-1", 8, 1000);
        assert_eq!(t.v, TICKET_VERSION_MATCH);
        let got = verify(&t.sign(&k), &pk, "node-a", 1).unwrap();
        assert_eq!(got.reserved_room(), Some(("m-1", 8)));
        assert_eq!(TicketPayload::new(7, "ada", "node-a", "arena", Some("r"), 1000).reserved_room(), None);
        let bad = [
            TicketPayload { match_max_players: None, ..t.clone() },
            TicketPayload { room: None, ..t.clone() },
            TicketPayload { match_max_players: Some(0), ..t.clone() },
            TicketPayload { v: TICKET_VERSION, ..t.clone() },
            TicketPayload { v: 3, ..t.clone() },
        ];
        for b in bad {
            assert!(matches!(verify(&b.sign(&k), &pk, "node-a", 1), Err(TicketError::Malformed(_))), "{b:?}");
        }
    }

    #[test]
    fn tampered_payload_fails_signature() {
        let (k, _, t) = mint(1000);
        let (_, sig) = t.split_once('.').unwrap();
        let evil = TicketPayload::new(7, "root", "node-a", "arena", None, 1000);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap());
        let forged = format!("{body}.{sig}");
        assert_eq!(verify(&forged, &k.verifying_key(), "node-a", 1), Err(TicketError::BadSignature));
    }

    #[test]
    fn replay_guard_refuses_second_use_and_forgets_expired() {
        let (_, p, _) = mint(100);
        let mut g = ReplayGuard::new(10, DEFAULT_MAX_TICKET_LIFETIME_S);
        g.check_and_insert(&p, 50).unwrap();
        assert_eq!(g.check_and_insert(&p, 60), Err(TicketError::Replayed));
        g.expire(101);
        assert!(g.is_empty());
    }

    #[test]
    fn replay_guard_is_bounded() {
        let mut g = ReplayGuard::new(2, DEFAULT_MAX_TICKET_LIFETIME_S);
        for i in 0..2 {
            g.check_and_insert(&TicketPayload::new(i, "p", "n", "m", None, 100), 0).unwrap();
        }
        let full = g.check_and_insert(&TicketPayload::new(9, "p", "n", "m", None, 100), 0).unwrap_err();
        assert_eq!(full, TicketError::TooManyLive(2));
        assert_eq!(full.code(), CloseCode::NodeNotAccepting, "a full guard is not the ticket's fault");
        assert_eq!(g.len(), 2);
        // Once the held tickets expire, new ones are taken again.
        g.check_and_insert(&TicketPayload::new(9, "p", "n", "m", None, 200), 101).unwrap();
        assert_eq!(g.len(), 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever a client sends as a ticket is refused with an error, never a panic.
            #[test]
            fn arbitrary_text_is_refused(text in ".{0,300}") {
                let k = generate_signing_key();
                prop_assert!(verify(&text, &k.verifying_key(), "node-a", 1).is_err());
            }

            /// Changing any one character of a valid ticket either fails to verify or (where the
            /// change decodes to the same bytes) grants exactly what the original did.
            #[test]
            fn one_changed_character_grants_nothing_new(at in any::<prop::sample::Index>(), with in "[A-Za-z0-9_.=+/-]") {
                let (k, p, t) = mint(1000);
                let i = at.index(t.len());
                let mut changed = t.clone();
                changed.replace_range(i..i + 1, &with);
                match verify(&changed, &k.verifying_key(), "node-a", 1) {
                    Ok(got) => prop_assert_eq!(got, p),
                    Err(e) => prop_assert!(matches!(e, TicketError::Malformed(_) | TicketError::BadSignature), "{e:?}"),
                }
            }
        }
    }
}
