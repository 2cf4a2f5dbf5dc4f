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
}
