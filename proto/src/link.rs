//! The edge → core link's frames, sans-I/O. Same framing as player frames
//! (`len u32 BE | type u8 | body`, see [`crate::frame::FrameDecoder`]), on one bi stream per
//! link for the update stream, and one short bi stream per player-state load.
//!
//! The update stream: the edge sends `Hello`, the core answers `Welcome` with the stream's
//! high-water mark (or `Refused` and closes), then the edge sends `Batch`es in order and the core
//! answers each with `Ack` up to the sequence number now durable. A load stream is `Load` → `Value`;
//! a position stream is `Position` → `Positioned` (how far the core has another edge's stream: a
//! node that took over a moving room holds the room's commits until the core has everything the
//! room committed on its last node). Strings are `len u16 | UTF-8`; values are `len u32 | bytes`.
//!
//! A batch's updates carry their room's [`RoomEpoch`] (type `0x12`); a batch with none (older
//! edges, tools) goes as the untagged `0x10`, read as epoch zero, so cores can be upgraded before
//! edges.

use crate::frame::FrameError;

/// Frame type bytes.
pub mod kind {
    /// Edge → core: authenticate and name the stream.
    pub const HELLO: u8 = 0x01;
    /// Core → edge: accepted; here is the stream's high-water mark.
    pub const WELCOME: u8 = 0x02;
    /// Core → edge: refused (the core closes the connection after it).
    pub const REFUSED: u8 = 0x03;
    /// Edge → core: updates from `first_seq` on, without room epochs (edges before 0.26).
    pub const BATCH_UNTAGGED: u8 = 0x10;
    /// Edge → core: updates from `first_seq` on, each with its room's epoch.
    pub const BATCH: u8 = 0x12;
    /// Core → edge: durable up to this sequence number.
    pub const ACK: u8 = 0x11;
    /// Edge → core: read one key.
    pub const LOAD: u8 = 0x20;
    /// Core → edge: the key's value, if any.
    pub const VALUE: u8 = 0x21;
    /// Edge → core: how far is this stream?
    pub const POSITION: u8 = 0x22;
    /// Core → edge: the stream's high-water mark.
    pub const POSITIONED: u8 = 0x23;
}

/// ALPN of the edge → core link.
pub const ALPN_CORE: &[u8] = b"outpost-core/1";
/// Longest key, bytes.
pub const MAX_KEY: usize = 1024;
/// Longest room id or stream name, bytes.
pub const MAX_NAME: usize = 256;

/// Which life of a room wrote an update: rooms that move between nodes write from several
/// outbox streams, and the core must not let a late write of an earlier stop overwrite what the
/// room wrote after it moved. `lineage` is drawn at random when the room is created (a new room
/// under an old id is another lineage) and `moves` counts its moves; lineage 0 is untagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct RoomEpoch {
    /// The room's lineage, random, fixed for its life.
    pub lineage: u64,
    /// How many times it has moved.
    pub moves: u32,
}

impl RoomEpoch {
    /// Whether a write of `self` must give way to a key's current writer `stored`: the same
    /// room's life, an earlier stop of it.
    pub fn is_older_than(&self, stored: &RoomEpoch) -> bool {
        self.lineage != 0 && self.lineage == stored.lineage && self.moves < stored.moves
    }
}

/// One committed update as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireUpdate {
    /// The committing room.
    pub room: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The committing room's epoch.
    pub epoch: RoomEpoch,
}

/// One link frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreFrame {
    /// `Hello{token, edge, stream}`.
    Hello { token: String, edge: String, stream: String },
    /// `Welcome{high_water}`.
    Welcome { high_water: u64 },
    /// `Refused{reason}`.
    Refused { reason: String },
    /// `Batch{first_seq, updates}`: the updates carry `first_seq`, `first_seq + 1`, ...
    Batch { first_seq: u64, updates: Vec<WireUpdate> },
    /// `Ack{up_to}`.
    Ack { up_to: u64 },
    /// `Load{key}`.
    Load { key: String },
    /// `Value{value}`.
    Value { value: Option<Vec<u8>> },
    /// `Position{stream}`.
    Position { stream: String },
    /// `Positioned{high_water}`.
    Positioned { high_water: u64 },
}

fn malformed(m: &str) -> FrameError {
    FrameError::Malformed(m.to_string())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// A cursor over a frame body that never reads past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(malformed(&format!("short {what}")));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u64(&mut self, what: &str) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.take(8, what)?.try_into().map_err(|_| malformed(what))?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().map_err(|_| malformed(what))?))
    }
    fn str(&mut self, what: &str, max: usize) -> Result<String, FrameError> {
        let n = u16::from_be_bytes(self.take(2, what)?.try_into().map_err(|_| malformed(what))?) as usize;
        if n > max {
            return Err(malformed(&format!("{what} of {n} bytes is over {max}")));
        }
        String::from_utf8(self.take(n, what)?.to_vec()).map_err(|_| malformed(&format!("{what} is not UTF-8")))
    }
    fn bytes(&mut self, what: &str) -> Result<Vec<u8>, FrameError> {
        let n = self.u32(what)? as usize;
        Ok(self.take(n, what)?.to_vec())
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.0.is_empty() { Ok(()) } else { Err(malformed("trailing bytes")) }
    }
}

impl CoreFrame {
    /// Encodes the frame with its length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            CoreFrame::Hello { token, edge, stream } => {
                body.push(kind::HELLO);
                put_str(&mut body, token);
                put_str(&mut body, edge);
                put_str(&mut body, stream);
            }
            CoreFrame::Welcome { high_water } => {
                body.push(kind::WELCOME);
                body.extend_from_slice(&high_water.to_be_bytes());
            }
            CoreFrame::Refused { reason } => {
                body.push(kind::REFUSED);
                put_str(&mut body, reason);
            }
            CoreFrame::Batch { first_seq, updates } => {
                // A batch with no room epochs in it goes in the older layout, which every core reads.
                let tagged = updates.iter().any(|u| u.epoch != RoomEpoch::default());
                body.push(if tagged { kind::BATCH } else { kind::BATCH_UNTAGGED });
                body.extend_from_slice(&first_seq.to_be_bytes());
                body.extend_from_slice(&(updates.len() as u32).to_be_bytes());
                for u in updates {
                    put_str(&mut body, &u.room);
                    put_str(&mut body, &u.key);
                    put_bytes(&mut body, &u.value);
                    if tagged {
                        body.extend_from_slice(&u.epoch.lineage.to_be_bytes());
                        body.extend_from_slice(&u.epoch.moves.to_be_bytes());
                    }
                }
            }
            CoreFrame::Ack { up_to } => {
                body.push(kind::ACK);
                body.extend_from_slice(&up_to.to_be_bytes());
            }
            CoreFrame::Load { key } => {
                body.push(kind::LOAD);
                put_str(&mut body, key);
            }
            CoreFrame::Value { value } => {
                body.push(kind::VALUE);
                match value {
                    None => body.push(0),
                    Some(v) => {
                        body.push(1);
                        put_bytes(&mut body, v);
                    }
                }
            }
            CoreFrame::Position { stream } => {
                body.push(kind::POSITION);
                put_str(&mut body, stream);
            }
            CoreFrame::Positioned { high_water } => {
                body.push(kind::POSITIONED);
                body.extend_from_slice(&high_water.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes one frame body (type byte and what follows), checking every length.
    pub fn decode_body(body: &[u8]) -> Result<CoreFrame, FrameError> {
        let (&t, rest) = body.split_first().ok_or_else(|| malformed("empty frame"))?;
        let mut r = Reader(rest);
        let frame = match t {
            kind::HELLO => CoreFrame::Hello {
                token: r.str("token", 1024)?,
                edge: r.str("edge", MAX_NAME)?,
                stream: r.str("stream", MAX_NAME)?,
            },
            kind::WELCOME => CoreFrame::Welcome { high_water: r.u64("high_water")? },
            kind::REFUSED => CoreFrame::Refused { reason: r.str("reason", u16::MAX as usize)? },
            kind::BATCH | kind::BATCH_UNTAGGED => {
                let tagged = t == kind::BATCH;
                let first_seq = r.u64("first_seq")?;
                let n = r.u32("count")? as usize;
                // Each update takes at least 8 bytes, so a count the body cannot hold is refused
                // before anything is allocated for it.
                if n > r.0.len() / 8 {
                    return Err(malformed("batch count larger than its body"));
                }
                let mut updates = Vec::with_capacity(n);
                for _ in 0..n {
                    let (room, key, value) = (r.str("room", MAX_NAME)?, r.str("key", MAX_KEY)?, r.bytes("value")?);
                    let epoch = if tagged {
                        RoomEpoch { lineage: r.u64("lineage")?, moves: r.u32("moves")? }
                    } else {
                        RoomEpoch::default()
                    };
                    updates.push(WireUpdate { room, key, value, epoch });
                }
                if first_seq == 0 && !updates.is_empty() {
                    return Err(malformed("sequence numbers start at 1"));
                }
                CoreFrame::Batch { first_seq, updates }
            }
            kind::ACK => CoreFrame::Ack { up_to: r.u64("up_to")? },
            kind::LOAD => CoreFrame::Load { key: r.str("key", MAX_KEY)? },
            kind::VALUE => match r.take(1, "presence")?[0] {
                0 => CoreFrame::Value { value: None },
                1 => CoreFrame::Value { value: Some(r.bytes("value")?) },
                _ => return Err(malformed("bad presence byte")),
            },
            kind::POSITION => CoreFrame::Position { stream: r.str("stream", MAX_NAME)? },
            kind::POSITIONED => CoreFrame::Positioned { high_water: r.u64("high_water")? },
            other => return Err(FrameError::Malformed(format!("unknown frame type 0x{other:02x}"))),
        };
        r.end()?;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    fn all() -> Vec<CoreFrame> {
        vec![
            CoreFrame::Hello { token: "t".into(), edge: "e1".into(), stream: "e1/abc".into() },
            CoreFrame::Welcome { high_water: 42 },
            CoreFrame::Refused { reason: "wrong cluster token".into() },
            CoreFrame::Batch {
                first_seq: 7,
                updates: vec![
                    WireUpdate {
                        room: "r".into(),
                        key: "player/1".into(),
                        value: b"v".to_vec(),
                        epoch: RoomEpoch { lineage: u64::MAX, moves: 3 },
                    },
                    WireUpdate { room: "r".into(), key: "k".into(), value: vec![], epoch: RoomEpoch::default() },
                ],
            },
            CoreFrame::Batch { first_seq: 0, updates: vec![] },
            CoreFrame::Ack { up_to: 8 },
            CoreFrame::Load { key: "player/9".into() },
            CoreFrame::Value { value: None },
            CoreFrame::Value { value: Some(b"saved".to_vec()) },
            CoreFrame::Position { stream: "e2/def".into() },
            CoreFrame::Positioned { high_water: 99 },
        ]
    }

    #[test]
    fn an_untagged_batch_of_an_older_edge_reads_as_epoch_zero() {
        let mut body = vec![kind::BATCH_UNTAGGED];
        body.extend_from_slice(&5u64.to_be_bytes());
        body.extend_from_slice(&1u32.to_be_bytes());
        put_str(&mut body, "r");
        put_str(&mut body, "k");
        put_bytes(&mut body, b"v");
        let want = WireUpdate { room: "r".into(), key: "k".into(), value: b"v".to_vec(), epoch: RoomEpoch::default() };
        assert_eq!(
            CoreFrame::decode_body(&body).unwrap(),
            CoreFrame::Batch { first_seq: 5, updates: vec![want.clone()] }
        );
        // A batch without epochs is written that way too, so older cores read it.
        let untagged = CoreFrame::Batch { first_seq: 5, updates: vec![want.clone()] }.encode();
        assert_eq!(&untagged[4..], &body[..]);
        // A tagged batch cut inside an update's epoch is refused.
        let epoch = RoomEpoch { lineage: 1, moves: 0 };
        let tagged = CoreFrame::Batch { first_seq: 1, updates: vec![WireUpdate { epoch, ..want }] }.encode();
        assert_eq!(tagged[4], kind::BATCH);
        assert!(CoreFrame::decode_body(&tagged[4..tagged.len() - 1]).is_err());
    }

    #[test]
    fn only_an_earlier_stop_of_the_same_room_gives_way() {
        let e = |lineage, moves| RoomEpoch { lineage, moves };
        assert!(e(7, 1).is_older_than(&e(7, 2)));
        assert!(!e(7, 2).is_older_than(&e(7, 2)), "the same stop writes in stream order");
        assert!(!e(7, 3).is_older_than(&e(7, 2)));
        assert!(!e(8, 0).is_older_than(&e(7, 2)), "another room (or a new room under an old id)");
        assert!(!e(0, 0).is_older_than(&e(0, 5)), "untagged writes are never refused");
    }

    #[test]
    fn frames_round_trip_through_the_decoder_split_anywhere() {
        let bytes: Vec<u8> = all().iter().flat_map(|f| f.encode()).collect();
        for cut in [1, 3, 7, 64] {
            let mut d = FrameDecoder::new(1 << 20);
            let mut got = Vec::new();
            for chunk in bytes.chunks(cut) {
                d.push(chunk);
                while let Some(body) = d.next_body().unwrap() {
                    got.push(CoreFrame::decode_body(&body).unwrap());
                }
            }
            assert_eq!(got, all());
        }
    }

    #[test]
    fn hostile_bodies_are_refused_without_panics_or_huge_allocations() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x7f],
            vec![kind::WELCOME, 1, 2],
            vec![kind::BATCH, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
            [vec![kind::LOAD], 5000u16.to_be_bytes().to_vec(), vec![b'a'; 5000]].concat(),
            vec![kind::VALUE, 2],
            [CoreFrame::Ack { up_to: 1 }.encode()[4..].to_vec(), vec![0]].concat(),
            [vec![kind::BATCH], 0u64.to_be_bytes().to_vec(), 1u32.to_be_bytes().to_vec(), vec![0; 8]].concat(),
            [vec![kind::HELLO], 2u16.to_be_bytes().to_vec(), vec![0xff, 0xfe], vec![0, 0, 0, 0]].concat(),
            vec![kind::POSITIONED, 0, 0, 0],
            [vec![kind::POSITION], 300u16.to_be_bytes().to_vec(), vec![b's'; 300]].concat(),
        ];
        for body in cases {
            assert!(CoreFrame::decode_body(&body).is_err(), "{body:?}");
        }
    }
}
