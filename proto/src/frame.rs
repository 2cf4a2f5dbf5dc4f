//! Player wire frames on QUIC, sans-I/O.
//!
//! Reliable traffic is a sequence of frames on the bi stream the client opens:
//! `len u32 BE | type u8 | body`, where `len` counts the type byte and the body. Unreliable traffic
//! is one QUIC datagram per message: `peer u64 BE | data`. In both directions `peer` is the other
//! party: a client writes the player it addresses (0 = the room), the node writes who it is from
//! (0 = the room's guest).
//!
//! [`FrameDecoder`] takes bytes as they arrive and yields frames, refusing a length over its limit
//! before buffering it, so a hostile client cannot make the node allocate.

use crate::CloseCode;

/// Frame type bytes.
pub mod kind {
    /// Client → node: join with a ticket.
    pub const JOIN: u8 = 0x01;
    /// Node → client: joined.
    pub const JOINED: u8 = 0x02;
    /// Node → client: refused (the connection closes with the same code).
    pub const REFUSED: u8 = 0x03;
    /// Node → client: the room moved to another node; rejoin there with the credential.
    pub const MOVED: u8 = 0x04;
    /// Either way: a reliable message.
    pub const MESSAGE: u8 = 0x10;
}

/// Where a player's room went, as a `Moved` frame tells it: the target node's player addresses
/// and pins, and the single-use credential the target issued for this player and room. The body
/// is JSON: it is sent once per move, and carries the same fields as a route reply's node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MoveTarget {
    /// The target node's id.
    pub node: String,
    /// Its QUIC player address (`ip:port`).
    pub quic: String,
    /// Lowercase hex SHA-256 of its player certificate, for pinning.
    pub cert_sha256: String,
    /// Its WebTransport endpoint, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webtransport: Option<crate::api::WebTransportEndpoint>,
    /// Its WebSocket URL, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<String>,
    /// What the client sends as the ticket of its `Join` on the target: opaque, single use,
    /// bound to the player, the room and the target, valid for at most 30 seconds.
    pub credential: String,
}

/// Saved state as carried in `Joined`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavedState {
    /// Nothing stored for this player.
    None,
    /// The stored bytes.
    Found(Vec<u8>),
    /// The core did not answer in time.
    Unavailable,
}

/// One reliable frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `Join{ticket}`.
    Join { ticket: String },
    /// `Joined{player_id, room, tick_hz, saved}`.
    Joined { player_id: u64, room: String, tick_hz: u32, saved: SavedState },
    /// `Refused{code, reason}`.
    Refused { code: CloseCode, reason: String },
    /// A message: to a peer (client → node) or from one (node → client).
    Message { peer: u64, data: Vec<u8> },
    /// `Moved{target}`: the room is on another node now. The client finishes its stream (the
    /// node forwards what it read up to the end), connects to the target and joins with
    /// `target.credential` as the ticket, keeping its player id and room.
    Moved { target: Box<MoveTarget> },
}

/// Why bytes are not a valid frame; maps to the close code the node uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Length over the limit.
    #[error("frame of {0} bytes is over the limit of {1}")]
    TooLarge(usize, usize),
    /// Unknown type or bad body.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl FrameError {
    /// The close code for this error.
    pub fn code(&self) -> CloseCode {
        match self {
            FrameError::TooLarge(..) => CloseCode::MessageTooLarge,
            FrameError::Malformed(_) => CloseCode::FrameMalformed,
        }
    }
}

fn malformed(m: &str) -> FrameError {
    FrameError::Malformed(m.to_string())
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Join { ticket } => {
                out.push(kind::JOIN);
                out.extend_from_slice(ticket.as_bytes());
            }
            Frame::Joined { player_id, room, tick_hz, saved } => {
                out.push(kind::JOINED);
                out.extend_from_slice(&player_id.to_be_bytes());
                out.extend_from_slice(&tick_hz.to_be_bytes());
                // The length is one byte. Room ids are at most 64 ASCII characters, but cut on a
                // character boundary anyway, so the frame never carries invalid UTF-8.
                let mut end = room.len().min(255);
                while !room.is_char_boundary(end) {
                    end -= 1;
                }
                let room = &room.as_bytes()[..end];
                out.push(room.len() as u8);
                out.extend_from_slice(room);
                match saved {
                    SavedState::None => out.push(0),
                    SavedState::Found(b) => {
                        out.push(1);
                        out.extend_from_slice(b);
                    }
                    SavedState::Unavailable => out.push(2),
                }
            }
            Frame::Refused { code, reason } => {
                out.push(kind::REFUSED);
                out.extend_from_slice(&code.to_u32().to_be_bytes());
                out.extend_from_slice(reason.as_bytes());
            }
            Frame::Message { peer, data } => {
                out.push(kind::MESSAGE);
                out.extend_from_slice(&peer.to_be_bytes());
                out.extend_from_slice(data);
            }
            Frame::Moved { target } => {
                out.push(kind::MOVED);
                // Serializing plain strings to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, target);
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The encoded frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// Decodes one frame body (type byte and what follows).
    pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
        let (&t, rest) = body.split_first().ok_or_else(|| malformed("empty frame"))?;
        match t {
            kind::JOIN => Ok(Frame::Join {
                ticket: String::from_utf8(rest.to_vec()).map_err(|_| malformed("ticket is not UTF-8"))?,
            }),
            kind::JOINED => {
                if rest.len() < 13 {
                    return Err(malformed("short Joined"));
                }
                let player_id = u64::from_be_bytes(rest[..8].try_into().map_err(|_| malformed("id"))?);
                let tick_hz = u32::from_be_bytes(rest[8..12].try_into().map_err(|_| malformed("tick"))?);
                let room_len = rest[12] as usize;
                let rest = &rest[13..];
                if rest.len() < room_len + 1 {
                    return Err(malformed("short Joined room"));
                }
                let room = String::from_utf8(rest[..room_len].to_vec()).map_err(|_| malformed("room is not UTF-8"))?;
                let saved = match (rest[room_len], &rest[room_len + 1..]) {
                    (0, []) => SavedState::None,
                    (1, b) => SavedState::Found(b.to_vec()),
                    (2, []) => SavedState::Unavailable,
                    _ => return Err(malformed("bad saved state")),
                };
                Ok(Frame::Joined { player_id, room, tick_hz, saved })
            }
            kind::REFUSED => {
                if rest.len() < 4 {
                    return Err(malformed("short Refused"));
                }
                let n = u32::from_be_bytes(rest[..4].try_into().map_err(|_| malformed("code"))?);
                let code = CloseCode::from_u32(n).ok_or_else(|| malformed("unknown refuse code"))?;
                Ok(Frame::Refused { code, reason: String::from_utf8_lossy(&rest[4..]).into_owned() })
            }
            kind::MESSAGE => {
                let (peer, data) = decode_peer(rest)?;
                Ok(Frame::Message { peer, data: data.to_vec() })
            }
            kind::MOVED => {
                let target: MoveTarget =
                    serde_json::from_slice(rest).map_err(|e| FrameError::Malformed(format!("bad Moved: {e}")))?;
                Ok(Frame::Moved { target: Box::new(target) })
            }
            other => Err(FrameError::Malformed(format!("unknown frame type 0x{other:02x}"))),
        }
    }
}

/// Splits `peer u64 BE | data` (a datagram, or a message body).
pub fn decode_peer(bytes: &[u8]) -> Result<(u64, &[u8]), FrameError> {
    if bytes.len() < 8 {
        return Err(malformed("message shorter than its 8-byte peer id"));
    }
    let peer = u64::from_be_bytes(bytes[..8].try_into().map_err(|_| malformed("peer"))?);
    Ok((peer, &bytes[8..]))
}

/// Encodes `peer u64 BE | data` (a datagram).
pub fn encode_peer(peer: u64, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + data.len());
    v.extend_from_slice(&peer.to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Incremental decoder over a byte stream with a per-frame size limit.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames whose body is over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { buf: Vec::new(), max_frame }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match self.next_body()? {
            Some(body) => Frame::decode_body(&body).map(Some),
            None => Ok(None),
        }
    }

    /// The next complete frame body (type byte and what follows), undecoded: other protocols
    /// with the same `len | type | body` framing (the edge → core link) decode it themselves.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge(len, self.max_frame));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }

    /// Bytes buffered and not yet decoded (bounded by the frame limit plus one read).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_split_anywhere() {
        let frames = vec![
            Frame::Join { ticket: "abc.def".into() },
            Frame::Joined { player_id: 9, room: "r-1".into(), tick_hz: 20, saved: SavedState::Found(vec![1, 2]) },
            Frame::Joined { player_id: 9, room: "".into(), tick_hz: 20, saved: SavedState::Unavailable },
            Frame::Joined { player_id: 9, room: "x".into(), tick_hz: 1, saved: SavedState::None },
            Frame::Refused { code: CloseCode::RoomFull, reason: "full".into() },
            Frame::Message { peer: 3, data: vec![7; 100] },
            Frame::Message { peer: 0, data: vec![] },
            Frame::Moved { target: Box::new(target()) },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.encode_into(&mut wire);
        }
        for split in [1, 3, 7, wire.len()] {
            let mut d = FrameDecoder::new(1000);
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames);
        }
    }

    fn target() -> MoveTarget {
        MoveTarget {
            node: "edge-b".into(),
            quic: "127.0.0.1:7700".into(),
            cert_sha256: "ab".repeat(32),
            webtransport: None,
            websocket: Some("ws://127.0.0.1:7701/v1/ws".into()),
            credential: "mv1.x".into(),
        }
    }

    #[test]
    fn bad_frames_have_codes() {
        let mut d = FrameDecoder::new(16);
        d.push(&[0, 0, 1, 0]);
        assert_eq!(d.next_frame().unwrap_err().code(), CloseCode::MessageTooLarge);
        let moved_without_credential = [&[kind::MOVED][..], br#"{"node":"b","quic":"x","cert_sha256":"y"}"#].concat();
        for body in [
            &[0x7fu8][..],
            &[],
            &[kind::MESSAGE, 1, 2],
            &[kind::REFUSED, 0, 0, 0, 1],
            &[kind::JOIN, 0xff],
            &[kind::MOVED],
            &[kind::MOVED, b'{'],
            &moved_without_credential,
        ] {
            let mut d = FrameDecoder::new(1000);
            let mut wire = (body.len() as u32).to_be_bytes().to_vec();
            wire.extend_from_slice(body);
            d.push(&wire);
            assert_eq!(d.next_frame().unwrap_err().code(), CloseCode::FrameMalformed, "{body:?}");
        }
        assert!(decode_peer(&[1, 2, 3]).is_err());
        assert_eq!(decode_peer(&encode_peer(5, b"hi")).unwrap(), (5, &b"hi"[..]));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn saved() -> impl Strategy<Value = SavedState> {
            prop_oneof![
                Just(SavedState::None),
                Just(SavedState::Unavailable),
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(SavedState::Found),
            ]
        }

        fn frame() -> impl Strategy<Value = Frame> {
            prop_oneof![
                ".{0,40}".prop_map(|ticket| Frame::Join { ticket }),
                (any::<u64>(), "[a-zA-Z0-9._-]{0,64}", any::<u32>(), saved())
                    .prop_map(|(player_id, room, tick_hz, saved)| Frame::Joined { player_id, room, tick_hz, saved }),
                (proptest::sample::select(CloseCode::ALL.to_vec()), ".{0,40}")
                    .prop_map(|(code, reason)| Frame::Refused { code, reason }),
                (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300))
                    .prop_map(|(peer, data)| Frame::Message { peer, data }),
                (".{0,20}", ".{0,40}").prop_map(|(node, credential)| Frame::Moved {
                    target: Box::new(MoveTarget { node, credential, ..target() })
                }),
            ]
        }

        proptest! {
            /// Whatever a client sends, decoding answers Ok or Err and never panics; what decodes
            /// re-encodes to a frame that decodes the same.
            #[test]
            fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
                if let Ok(f) = Frame::decode_body(&body) {
                    let wire = f.encode();
                    prop_assert_eq!(Frame::decode_body(&wire[4..]), Ok(f));
                }
            }

            /// Valid frames cut short or with one byte changed, the likeliest hostile inputs to
            /// reach each length check, still decode to Ok or Err and never panic.
            #[test]
            fn cut_and_altered_frames_never_panic(
                f in frame(),
                cut in any::<prop::sample::Index>(),
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
            ) {
                let wire = f.encode();
                let body = &wire[4..];
                for n in [cut.index(body.len() + 1), body.len().saturating_sub(1)] {
                    if let Ok(g) = Frame::decode_body(&body[..n]) {
                        prop_assert_eq!(Frame::decode_body(&g.encode()[4..]), Ok(g));
                    }
                }
                let mut altered = body.to_vec();
                let i = at.index(altered.len());
                altered[i] = byte;
                if let Ok(g) = Frame::decode_body(&altered) {
                    prop_assert_eq!(Frame::decode_body(&g.encode()[4..]), Ok(g));
                }
            }

            /// Any sequence of frames survives any split of the stream into reads.
            #[test]
            fn frames_round_trip_in_any_chunking(
                frames in proptest::collection::vec(frame(), 1..8),
                cuts in proptest::collection::vec(1usize..64, 1..16),
            ) {
                let mut wire = Vec::new();
                for f in &frames {
                    f.encode_into(&mut wire);
                }
                let mut d = FrameDecoder::new(4096);
                let (mut got, mut at, mut i) = (Vec::new(), 0, 0);
                while at < wire.len() {
                    let end = (at + cuts[i % cuts.len()]).min(wire.len());
                    d.push(&wire[at..end]);
                    while let Some(f) = d.next_frame().unwrap() {
                        got.push(f);
                    }
                    at = end;
                    i += 1;
                }
                prop_assert_eq!(got, frames);
                prop_assert_eq!(d.buffered(), 0);
            }

            /// Hostile byte streams: every read ends in a frame, a wait for more, or an error with
            /// a close code, and once decoded frames are taken, less than one frame is buffered.
            #[test]
            fn hostile_streams_stay_bounded(reads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..96), 0..24)) {
                const LIMIT: usize = 64;
                let mut d = FrameDecoder::new(LIMIT);
                for read in reads {
                    d.push(&read);
                    loop {
                        match d.next_frame() {
                            Ok(Some(_)) => continue,
                            Ok(None) => break,
                            Err(e) => {
                                prop_assert!(matches!(e.code(), CloseCode::MessageTooLarge | CloseCode::FrameMalformed));
                                return Ok(());
                            }
                        }
                    }
                    prop_assert!(d.buffered() < 4 + LIMIT, "buffered {}", d.buffered());
                }
            }
        }

        #[test]
        fn a_long_non_ascii_room_is_cut_on_a_character_boundary() {
            let f = Frame::Joined { player_id: 1, room: "é".repeat(200), tick_hz: 20, saved: SavedState::None };
            match Frame::decode_body(&f.encode()[4..]).unwrap() {
                Frame::Joined { room, .. } => assert_eq!(room, "é".repeat(127)),
                other => panic!("decoded {other:?}"),
            }
        }
    }
}
