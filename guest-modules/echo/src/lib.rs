//! `echo`: sends every message back to its sender and answers `signal` with its own body.
//!
//! The signal `commit KEY VALUE` commits that pair, so that operators and tests can drive a
//! durable commit through the admin API alone. `commit-bulk PREFIX COUNT BYTES` commits COUNT
//! pairs `PREFIX{i}` (i below COUNT) with BYTES-byte values in one call: how `outpost
//! bench-forward` drives the edge → core path at full rate.
//!
//! Created with the config `commit-ticks`, the room commits on every tick: `ticks/{room}/last`
//! and `ticks/{room}/k{n % 4}` both get the tick's number `n` (from 1), a count that moves with
//! the room (`snapshot`/`restore`). The signal `ticks` answers the count, `stop-ticks` stops the
//! commits and answers it: how tests check that a moving room's commits reach the core exactly
//! once, each key at its last value.

wit_bindgen::generate!({ world: "room", path: "../../wit" });

use outpost::room::host;
use outpost::room::types::Delivery;
use std::cell::RefCell;

/// The tick commits: the room id, whether they run, and how many ticks committed so far.
#[derive(Default)]
struct Ticks {
    room: String,
    on: bool,
    n: u64,
}

thread_local! {
    static TICKS: RefCell<Ticks> = RefCell::new(Ticks::default());
}

struct Echo;

impl Guest for Echo {
    fn init(room: String, config: Vec<u8>) -> Result<(), String> {
        TICKS.with(|t| *t.borrow_mut() = Ticks { room, on: config == b"commit-ticks", n: 0 });
        Ok(())
    }
    fn join(_p: Player) -> Result<(), String> {
        Ok(())
    }
    fn leave(_who: PlayerId) {}
    fn message(sender: PlayerId, data: Vec<u8>) {
        host::send(sender, &data, Delivery::Reliable);
    }
    fn tick(_now_ms: u64) {
        TICKS.with(|t| {
            let mut t = t.borrow_mut();
            if t.on {
                t.n += 1;
                let n = t.n.to_string();
                host::commit(&format!("ticks/{}/last", t.room), n.as_bytes());
                host::commit(&format!("ticks/{}/k{}", t.room, t.n % 4), n.as_bytes());
            }
        });
    }
    fn signal(data: Vec<u8>) -> Vec<u8> {
        if data == b"ticks" || data == b"stop-ticks" {
            return TICKS.with(|t| {
                let mut t = t.borrow_mut();
                t.on &= data == b"ticks";
                t.n.to_string().into_bytes()
            });
        }
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
        TICKS.with(|t| {
            let t = t.borrow();
            if t.on || t.n > 0 { format!("{} {}", t.on, t.n).into_bytes() } else { Vec::new() }
        })
    }
    fn restore(state: Vec<u8>) -> Result<(), String> {
        if state.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&state);
        let (on, n) = text.split_once(' ').ok_or("bad snapshot")?;
        let n = n.parse::<u64>().map_err(|e| format!("bad snapshot: {e}"))?;
        TICKS.with(|t| {
            let mut t = t.borrow_mut();
            (t.on, t.n) = (on == "true", n);
        });
        Ok(())
    }
}

export!(Echo);
