//! The latency-probe datagram: `magic(4) | seq u32 BE | client time u64 BE | padding`.
//!
//! The beacon replies with the same bytes and the magic flipped from request to reply, so a reply is
//! never larger than its request and the beacon keeps no state. Padding lets a client probe with
//! realistic packet sizes.

/// Magic of a probe request.
pub const REQUEST_MAGIC: [u8; 4] = *b"OPq1";
/// Magic of a probe reply.
pub const REPLY_MAGIC: [u8; 4] = *b"OPr1";
/// Smallest valid probe: magic, sequence number and timestamp.
pub const MIN_LEN: usize = 16;
/// Largest probe the beacon answers; bigger datagrams are dropped as malformed.
pub const MAX_LEN: usize = 1200;

/// A probe's contents as the client wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Client-chosen sequence number.
    pub seq: u32,
    /// Client clock at send time, in microseconds (opaque to the beacon).
    pub sent_us: u64,
}

/// Encodes a request, padded with zeros to `len` bytes (at least [`MIN_LEN`]).
pub fn encode_request(p: Probe, len: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(len.max(MIN_LEN));
    buf.extend_from_slice(&REQUEST_MAGIC);
    buf.extend_from_slice(&p.seq.to_be_bytes());
    buf.extend_from_slice(&p.sent_us.to_be_bytes());
    buf.resize(len.clamp(MIN_LEN, MAX_LEN), 0);
    buf
}

/// Turns a request into its reply in place. `false` means the datagram is not a valid request
/// and must be dropped without an answer.
pub fn make_reply(datagram: &mut [u8]) -> bool {
    if datagram.len() < MIN_LEN || datagram.len() > MAX_LEN || datagram[..4] != REQUEST_MAGIC {
        return false;
    }
    datagram[..4].copy_from_slice(&REPLY_MAGIC);
    true
}

/// Parses a reply; `None` for anything that is not one.
pub fn parse_reply(datagram: &[u8]) -> Option<Probe> {
    if datagram.len() < MIN_LEN || datagram[..4] != REPLY_MAGIC {
        return None;
    }
    let seq = u32::from_be_bytes(datagram[4..8].try_into().ok()?);
    let sent_us = u64::from_be_bytes(datagram[8..16].try_into().ok()?);
    Some(Probe { seq, sent_us })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_request_with_flipped_magic_and_same_size() {
        for len in [0, 16, 17, 100, 1200, 5000] {
            let p = Probe { seq: 9, sent_us: 123456 };
            let mut d = encode_request(p, len);
            let before = d.len();
            assert!(make_reply(&mut d));
            assert_eq!(d.len(), before);
            assert_eq!(parse_reply(&d), Some(p));
        }
    }

    #[test]
    fn malformed_datagrams_get_no_reply() {
        let mut short = REQUEST_MAGIC.to_vec();
        assert!(!make_reply(&mut short));
        let mut wrong = vec![0u8; 32];
        assert!(!make_reply(&mut wrong));
        let mut reply = encode_request(Probe { seq: 1, sent_us: 1 }, 16);
        assert!(make_reply(&mut reply));
        assert!(!make_reply(&mut reply), "a reply must not be answered again (no reflection loops)");
        let mut huge = encode_request(Probe { seq: 1, sent_us: 1 }, 16);
        huge.resize(MAX_LEN + 1, 0);
        assert!(!make_reply(&mut huge));
    }
}
