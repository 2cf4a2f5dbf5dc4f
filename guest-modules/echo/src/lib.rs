//! `echo`: sends every message back to its sender and answers `signal` with its own body.
//!
//! The signal `commit KEY VALUE` commits that pair, so that operators and tests can drive a
//! durable commit through the admin API alone.

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
