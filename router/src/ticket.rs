//! Minting join tickets. The format and its verification live in `outpost_proto::ticket`, which
//! the edges use too; this is only the router's key and clock.

use ed25519_dalek::SigningKey;
use outpost_proto::ticket::TicketPayload;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The router's ticket signer.
pub struct Issuer {
    key: SigningKey,
    pubkey: String,
    ttl: Duration,
}

/// A minted ticket.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The ticket text.
    pub ticket: String,
    /// Expiry, RFC 3339 UTC.
    pub expires_at: String,
}

impl Issuer {
    /// Loads the signing key from `path`, or makes one there (mode 0600) on first start.
    pub fn load_or_generate(path: &Path, ttl: Duration) -> Result<Issuer, outpost_net::files::KeyFileError> {
        Ok(Issuer::new(outpost_net::files::load_or_generate_signing_key(path)?, ttl))
    }

    /// Loads the signing key from `path`, which must exist (a fleet's shared key).
    pub fn load(path: &Path, ttl: Duration) -> Result<Issuer, outpost_net::files::KeyFileError> {
        Ok(Issuer::new(outpost_net::files::load_signing_key(path)?, ttl))
    }

    /// An issuer with a given key.
    pub fn new(key: SigningKey, ttl: Duration) -> Issuer {
        let pubkey = outpost_proto::keys::public_key_to_text(&key.verifying_key());
        Issuer { key, pubkey, ttl }
    }

    /// The public key's text form, as edges are configured with it.
    pub fn pubkey(&self) -> &str {
        &self.pubkey
    }

    /// A ticket for `player` into `module` on `node`, valid from `now` for the configured TTL.
    pub fn mint(&self, player: u64, name: &str, node: &str, module: &str, now: SystemTime) -> Minted {
        let exp = self.exp(now);
        self.sign(TicketPayload::new(player, name, node, module, None, exp), exp)
    }

    /// A v2 match ticket: `player` into the reserved `room` of `max_players` on `node`.
    #[allow(clippy::too_many_arguments)]
    pub fn mint_match(
        &self,
        player: u64,
        name: &str,
        node: &str,
        module: &str,
        room: &str,
        max_players: u32,
        now: SystemTime,
    ) -> Minted {
        let exp = self.exp(now);
        self.sign(TicketPayload::for_match(player, name, node, module, room, max_players, exp), exp)
    }

    /// Whole seconds, rounded up, so a ticket never expires before its TTL.
    fn exp(&self, now: SystemTime) -> u64 {
        (now + self.ttl).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }

    fn sign(&self, payload: TicketPayload, exp: u64) -> Minted {
        Minted {
            ticket: payload.sign(&self.key),
            expires_at: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(exp)).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::ticket::{TicketError, verify};

    #[test]
    fn minted_tickets_verify_with_the_public_key_until_they_expire() {
        let issuer = Issuer::new(outpost_proto::keys::generate_signing_key(), Duration::from_secs(60));
        let key = outpost_proto::keys::public_key_from_text(issuer.pubkey()).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let m = issuer.mint(7, "ana", "edge-1", "arena", now);
        assert_eq!(m.expires_at, "2027-01-15T08:01:00Z");
        let p = verify(&m.ticket, &key, "edge-1", 1_800_000_059).unwrap();
        assert_eq!((p.player, p.name.as_str(), p.module.as_str()), (7, "ana", "arena"));
        assert!(matches!(verify(&m.ticket, &key, "edge-1", 1_800_000_061), Err(TicketError::Expired(_))));
        assert!(matches!(verify(&m.ticket, &key, "edge-2", 1_800_000_000), Err(TicketError::WrongNode(_))));
    }
}
