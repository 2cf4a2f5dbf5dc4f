//! `echo`: sends every message back to its sender and answers `signal` with its own body.
//!
//! The signal `commit KEY VALUE` commits that pair, so that operators and tests can drive a
//! durable commit through the admin API alone. `commit-bulk PREFIX COUNT BYTES` commits COUNT
//! pairs `PREFIX{i}` (i below COUNT) with BYTES-byte values in one call: how `outpost
//! bench-forward` drives the edge → core path at full rate.

wit_bindgen::generate!({ world: "room", path: "../../wit" });

use outpost::room::host;
use outpost::room::types::Delivery;

struct Echo;

impl Guest for Echo {
    fn init(_room: String, _config: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
    fn join(_p: Player) -> Result<(), String> {
        Ok(())
    }
    fn leave(_who: PlayerId) {}
    fn message(sender: PlayerId, data: Vec<u8>) {
        host::send(sender, &data, Delivery::Reliable);
    }
    fn tick(_now_ms: u64) {}
    fn signal(data: Vec<u8>) -> Vec<u8> {
        if let Some(rest) = data.strip_prefix(b"commit ") {
            let text = String::from_utf8_lossy(rest);
            let Some((key, value)) = text.split_once(' ') else {
                return b"error: usage: commit KEY VALUE".to_vec();
            };
            host::commit(key, value.as_bytes());
            return format!("committed {key}").into_bytes();
        }
        if let Some(rest) = data.strip_prefix(b"commit-bulk ") {
            let text = String::from_utf8_lossy(rest);
            let parts: Vec<&str> = text.split(' ').collect();
            let (Some(prefix), Some(Ok(count)), Some(Ok(bytes))) =
                (parts.first(), parts.get(1).map(|c| c.parse::<u32>()), parts.get(2).map(|b| b.parse::<usize>()))
            else {
                return b"error: usage: commit-bulk PREFIX COUNT BYTES".to_vec();
            };
            let value = vec![b'x'; bytes.min(1 << 16)];
            for i in 0..count {
                // The host faults the room past its per-call output limit: a bound the guest need
                // not repeat.
                host::commit(&format!("{prefix}{i}"), &value);
            }
            return format!("committed {count}").into_bytes();
        }
        data
    }
    fn snapshot() -> Vec<u8> {
        Vec::new()
    }
    fn restore(_state: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

export!(Echo);
