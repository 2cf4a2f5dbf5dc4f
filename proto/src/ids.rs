//! Node ids, module names and certificate fingerprints.

use sha2::{Digest, Sha256};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.', not starting with '.': got {got:?}")]
pub struct BadName {
    /// Which kind of name.
    pub what: &'static str,
    /// What was given (truncated).
    pub got: String,
}

/// Checks a node id, module name or room id: short, printable, and safe as a file name.
pub fn check_name(what: &'static str, s: &str) -> Result<(), BadName> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(BadName { what, got: s.chars().take(80).collect() }) }
}

/// A fresh node id, `edge-` and 12 hex digits.
pub fn generate_node_id() -> String {
    let r: [u8; 6] = rand::random();
    format!("edge-{}", hex::encode(r))
}

/// Lowercase hex SHA-256, used for module versions and certificate fingerprints.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The player-auth value the router checks when it has `--player-auth-secret`:
/// lowercase hex of HMAC-SHA256(secret, the player id as written in the query). The game's login
/// service computes the same with its copy of the secret.
pub fn player_auth(secret: &[u8], player_id: &str) -> String {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(player_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a player-auth value in constant time.
pub fn check_player_auth(secret: &[u8], player_id: &str, auth: &str) -> bool {
    use hmac::Mac as _;
    let Ok(given) = hex::decode(auth) else { return false };
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(player_id.as_bytes());
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "edge-1", "arena_v2", "x.y", &"a".repeat(64)] {
            assert!(check_name("name", good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "..", "sp ace", "é", &"a".repeat(65)] {
            assert!(check_name("name", bad).is_err(), "{bad}");
        }
        let id = generate_node_id();
        assert!(check_name("id", &id).is_ok());
        assert_eq!(sha256_hex(b"").len(), 64);
    }

    #[test]
    fn player_auth_round_trips_and_rejects_others() {
        let a = player_auth(b"secret", "42");
        assert_eq!(a.len(), 64);
        assert!(check_player_auth(b"secret", "42", &a));
        assert!(!check_player_auth(b"secret", "43", &a));
        assert!(!check_player_auth(b"other", "42", &a));
        assert!(!check_player_auth(b"secret", "42", "zz"));
        assert!(!check_player_auth(b"secret", "42", &a[..62]));
    }
}
