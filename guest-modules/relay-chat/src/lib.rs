//! `relay-chat`: a chat room. Joins and leaves are announced by name, each message is broadcast as
//! `name: text`, and each player may send at most [`BURST`] messages at once, refilled at
//! [`PER_SECOND`] a second (the guest enforces this itself, on the room's clock); a room's config
//! `per-second=N,burst=M` sets both (a game that chats faster, or a test sending a line every
//! 10 ms). Operator signals: `who` lists the names, `kick NAME [REASON]` removes a player with
//! that reason, and any other text is announced as a notice.

wit_bindgen::generate!({ world: "room", path: "../../wit" });

use outpost::room::host;
use outpost::room::types::{Delivery, LogLevel};
use std::collections::BTreeMap;
use std::sync::Mutex;

const BURST: f64 = 5.0;
const PER_SECOND: f64 = 2.0;
const MAX_TEXT: usize = 500;

struct Member {
    name: String,
    tokens: f64,
}

struct Chat {
    members: BTreeMap<u64, Member>,
    now_ms: u64,
    last_refill_ms: u64,
    burst: f64,
    per_second: f64,
}

static CHAT: Mutex<Chat> =
    Mutex::new(Chat { members: BTreeMap::new(), now_ms: 0, last_refill_ms: 0, burst: BURST, per_second: PER_SECOND });

/// The rate a room's config sets: `per-second=N,burst=M`, either part optional; each a number
/// from 0.1 to 10,000.
fn parse_rate(config: &[u8]) -> Result<(f64, f64), String> {
    let (mut per_second, mut burst) = (PER_SECOND, BURST);
    let text = std::str::from_utf8(config).map_err(|_| "config is not UTF-8".to_string())?;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| format!("config {part:?}: expected key=value"))?;
        let n: f64 = value.trim().parse().map_err(|_| format!("config {key}: {value:?} is not a number"))?;
        if !(0.1..=10_000.0).contains(&n) {
            return Err(format!("config {key}: {n} is not between 0.1 and 10000"));
        }
        match key.trim() {
            "per-second" => per_second = n,
            "burst" => burst = n,
            other => return Err(format!("config: unknown key {other:?} (per-second, burst)")),
        }
    }
    Ok((per_second, burst))
}

fn chat() -> std::sync::MutexGuard<'static, Chat> {
    CHAT.lock().unwrap_or_else(|e| e.into_inner())
}

fn announce(text: &str) {
    host::broadcast(text.as_bytes(), Delivery::Reliable);
}

struct RelayChat;

impl Guest for RelayChat {
    fn init(_room: String, config: Vec<u8>) -> Result<(), String> {
        let (per_second, burst) = parse_rate(&config)?;
        let mut c = chat();
        (c.per_second, c.burst) = (per_second, burst);
        Ok(())
    }

    fn join(p: Player) -> Result<(), String> {
        let name = p.name.trim().to_string();
        let mut c = chat();
        if c.members.values().any(|m| m.name == name) {
            return Err(format!("the name {name:?} is taken in this room"));
        }
        let tokens = c.burst;
        c.members.insert(p.id, Member { name: name.clone(), tokens });
        drop(c);
        announce(&format!("* {name} joined"));
        Ok(())
    }

    fn leave(who: PlayerId) {
        let left = chat().members.remove(&who);
        if let Some(m) = left {
            announce(&format!("* {} left", m.name));
        }
    }

    fn message(sender: PlayerId, data: Vec<u8>) {
        let mut c = chat();
        let Some(m) = c.members.get_mut(&sender) else {
            return;
        };
        if m.tokens < 1.0 {
            drop(c);
            host::send(sender, b"* slow down: you are sending too fast", Delivery::Reliable);
            return;
        }
        m.tokens -= 1.0;
        let mut text = String::from_utf8_lossy(&data).into_owned();
        text.truncate(text.floor_char_boundary(MAX_TEXT));
        let line = format!("{}: {}", m.name, text.trim_end());
        drop(c);
        announce(&line);
    }

    fn tick(now_ms: u64) {
        let mut c = chat();
        if c.last_refill_ms == 0 {
            c.last_refill_ms = now_ms;
        }
        let dt = now_ms.saturating_sub(c.last_refill_ms) as f64 / 1000.0;
        c.now_ms = now_ms;
        c.last_refill_ms = now_ms;
        let (per_second, burst) = (c.per_second, c.burst);
        for m in c.members.values_mut() {
            m.tokens = (m.tokens + dt * per_second).min(burst);
        }
    }

    fn signal(data: Vec<u8>) -> Vec<u8> {
        match data.as_slice() {
            b"who" => {
                let c = chat();
                let names: Vec<&str> = c.members.values().map(|m| m.name.as_str()).collect();
                names.join("\n").into_bytes()
            }
            [b'k', b'i', b'c', b'k', b' ', rest @ ..] => {
                // `kick NAME [REASON]`: a moderator removes a player, who is told the reason.
                let rest = String::from_utf8_lossy(rest);
                let (name, reason) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
                let reason = match reason.trim() {
                    "" => "removed by a moderator",
                    r => r,
                };
                let who = chat().members.iter().find(|(_, m)| m.name == name).map(|(id, _)| *id);
                match who {
                    Some(id) => {
                        host::kick(id, reason);
                        b"kicked".to_vec()
                    }
                    None => format!("error: nobody called {name:?} is here").into_bytes(),
                }
            }
            other => {
                let text = String::from_utf8_lossy(other);
                host::log(LogLevel::Info, &format!("operator notice: {text}"));
                announce(&format!("* notice: {text}"));
                b"ok".to_vec()
            }
        }
    }

    fn snapshot() -> Vec<u8> {
        let c = chat();
        let mut out = Vec::new();
        for (id, m) in &c.members {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(m.name.len() as u32).to_le_bytes());
            out.extend_from_slice(m.name.as_bytes());
        }
        out
    }

    fn restore(state: Vec<u8>) -> Result<(), String> {
        let mut members = BTreeMap::new();
        let mut rest = state.as_slice();
        while !rest.is_empty() {
            if rest.len() < 12 {
                return Err("truncated snapshot".into());
            }
            let id = u64::from_le_bytes(rest[..8].try_into().map_err(|_| "bad id")?);
            let len = u32::from_le_bytes(rest[8..12].try_into().map_err(|_| "bad len")?) as usize;
            rest = &rest[12..];
            if rest.len() < len {
                return Err("truncated name".into());
            }
            let name = String::from_utf8(rest[..len].to_vec()).map_err(|_| "name is not utf-8")?;
            rest = &rest[len..];
            members.insert(id, Member { name, tokens: 0.0 });
        }
        let mut c = chat();
        for m in members.values_mut() {
            m.tokens = c.burst;
        }
        c.members = members;
        Ok(())
    }
}

export!(RelayChat);
