//! The edge outbox's record format on disk: `len u32 | crc32 u32 | body`, the body being
//! `seq u64 | room (u16 length + bytes) | key (u16 length + bytes) | value (u32 length + bytes) |
//! lineage u64 | moves u32` (the room's [`RoomEpoch`]), big-endian. Records written before room
//! epochs existed end after the value and read as epoch zero, so an upgraded node drains the
//! outbox its older binary left. The CRC covers the body, so a torn or flipped record is found, never read as data.
//! The outbox (in `edge-node`) owns the files; this is only the bytes, so it can be fuzzed alone.

use crate::link::{RoomEpoch, WireUpdate};

/// Appends one record. Room and key are at most 65,535 bytes (the host bounds keys far below).
pub fn encode_record(out: &mut Vec<u8>, seq: u64, room: &str, epoch: RoomEpoch, key: &str, value: &[u8]) {
    let mut body = Vec::with_capacity(8 + 2 + room.len() + 2 + key.len() + 4 + value.len() + 12);
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend_from_slice(&(room.len() as u16).to_be_bytes());
    body.extend_from_slice(room.as_bytes());
    body.extend_from_slice(&(key.len() as u16).to_be_bytes());
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(&(value.len() as u32).to_be_bytes());
    body.extend_from_slice(value);
    body.extend_from_slice(&epoch.lineage.to_be_bytes());
    body.extend_from_slice(&epoch.moves.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Decodes the record at the start of `buf`: `Some((seq, update, record length))`, or `None` when
/// the bytes are not a whole valid record (short, a bad CRC, fields that do not fit, not UTF-8).
pub fn decode_record(buf: &[u8]) -> Option<(u64, WireUpdate, usize)> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(buf.get(4..8)?.try_into().ok()?);
    let body = buf.get(8..8usize.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let seq = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let mut at = 8;
    let mut field = |width: usize| -> Option<&[u8]> {
        let n = match width {
            2 => u16::from_be_bytes(body.get(at..at + 2)?.try_into().ok()?) as usize,
            _ => u32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize,
        };
        let v = body.get(at + width..(at + width).checked_add(n)?)?;
        at += width + n;
        Some(v)
    };
    let room = String::from_utf8(field(2)?.to_vec()).ok()?;
    let key = String::from_utf8(field(2)?.to_vec()).ok()?;
    let value = field(4)?.to_vec();
    let epoch = match body.get(at..)? {
        [] => RoomEpoch::default(),
        rest if rest.len() == 12 => RoomEpoch {
            lineage: u64::from_be_bytes(rest[..8].try_into().ok()?),
            moves: u32::from_be_bytes(rest[8..].try_into().ok()?),
        },
        _ => return None,
    };
    Some((seq, WireUpdate { room, key, value, epoch }, 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_any_damage_is_refused() {
        let mut buf = Vec::new();
        let epoch = RoomEpoch { lineage: 0xfeed, moves: 2 };
        encode_record(&mut buf, 7, "room-1", epoch, "player/9", b"score");
        encode_record(&mut buf, 8, "", RoomEpoch::default(), "", b"");
        let (seq, u, n) = decode_record(&buf).unwrap();
        assert_eq!(
            (seq, u.room.as_str(), u.key.as_str(), u.value.as_slice(), u.epoch),
            (7, "room-1", "player/9", &b"score"[..], epoch)
        );
        let (seq, u, m) = decode_record(&buf[n..]).unwrap();
        assert_eq!((seq, u.key.as_str(), n + m), (8, "", buf.len()));
        for cut in 0..n {
            assert!(decode_record(&buf[..cut]).is_none(), "a record cut at {cut} is refused");
        }
        for i in 0..n {
            let mut bad = buf[..n].to_vec();
            bad[i] ^= 0x40;
            assert!(decode_record(&bad).is_none_or(|(_, _, len)| len != n), "a flipped byte {i} is refused");
        }
    }

    #[test]
    fn a_record_written_before_room_epochs_reads_as_epoch_zero() {
        // The layout an older node wrote: the body ends after the value.
        let mut body = 3u64.to_be_bytes().to_vec();
        for field in [&b"r"[..], b"k"] {
            body.extend_from_slice(&(field.len() as u16).to_be_bytes());
            body.extend_from_slice(field);
        }
        body.extend_from_slice(&2u32.to_be_bytes());
        body.extend_from_slice(b"vv");
        let mut old = (body.len() as u32).to_be_bytes().to_vec();
        old.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        old.extend_from_slice(&body);
        let (seq, u, n) = decode_record(&old).unwrap();
        assert_eq!((seq, u.value.as_slice(), u.epoch, n), (3, &b"vv"[..], RoomEpoch::default(), old.len()));
        // A tail that is neither nothing nor a whole epoch is damage.
        body.push(0);
        let mut odd = (body.len() as u32).to_be_bytes().to_vec();
        odd.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        odd.extend_from_slice(&body);
        assert!(decode_record(&odd).is_none());
    }
}
