//! Ed25519 keys in Outpost's text form: base64url without padding of the 32 raw bytes.
//!
//! A public key in that form is what the router publishes (ready file, `GET /v1/pubkey`) and what
//! edges take with `--ticket-pubkey`. A signing key file holds the 32-byte seed in the same form.
//! Key files are read and written by `outpost-net` (mode 0600, atomic rename); this module only
//! turns text into keys and back.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{SigningKey, VerifyingKey};

pub use ed25519_dalek::{SigningKey as Ed25519SigningKey, VerifyingKey as Ed25519PublicKey};

/// A key that did not decode.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not base64url without padding.
    #[error("key is not base64url: {0}")]
    Encoding(#[from] base64::DecodeError),
    /// Decoded, but not 32 bytes.
    #[error("key must be 32 bytes, got {0}")]
    Length(usize),
    /// 32 bytes, but not a valid Ed25519 point.
    #[error("not a valid Ed25519 public key")]
    Invalid,
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = URL_SAFE_NO_PAD.decode(text.trim())?;
    bytes.as_slice().try_into().map_err(|_| KeyError::Length(bytes.len()))
}

/// The text form of a public key.
pub fn public_key_to_text(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// Parses a public key's text form.
pub fn public_key_from_text(text: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&decode32(text)?).map_err(|_| KeyError::Invalid)
}

/// The text form of a signing key (its seed).
pub fn signing_key_to_text(key: &SigningKey) -> String {
    URL_SAFE_NO_PAD.encode(key.to_bytes())
}

/// Parses a signing key's text form.
pub fn signing_key_from_text(text: &str) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&decode32(text)?))
}

/// A fresh random signing key.
pub fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_text() {
        let sk = generate_signing_key();
        let text = signing_key_to_text(&sk);
        assert_eq!(text.len(), 43);
        assert!(!text.contains('='));
        let back = signing_key_from_text(&text).unwrap();
        assert_eq!(back.to_bytes(), sk.to_bytes());
        let pk = public_key_from_text(&public_key_to_text(&sk.verifying_key())).unwrap();
        assert_eq!(pk, sk.verifying_key());
    }

    #[test]
    fn bad_key_text_is_a_clear_error() {
        assert!(matches!(public_key_from_text("!!"), Err(KeyError::Encoding(_))));
        assert!(matches!(public_key_from_text("AAAA"), Err(KeyError::Length(3))));
    }
}
