//! `relay-chat`: a chat room. Joins and leaves are announced by name, each message is broadcast as
//! `name: text`, and each player may send at most [`BURST`] messages at once, refilled at
//! [`PER_SECOND`] a second (the guest enforces this itself, on the room's clock). Operator
//! signals: `who` lists the names, `kick NAME [REASON]` removes a player with that reason, and
//! any other text is announced as a notice.

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
}

static CHAT: Mutex<Chat> = Mutex::new(Chat { members: BTreeMap::new(), now_ms: 0, last_refill_ms: 0 });

fn chat() -> std::sync::MutexGuard<'static, Chat> {
    CHAT.lock().unwrap_or_else(|e| e.into_inner())
}

fn announce(text: &str) {
    host::broadcast(text.as_bytes(), Delivery::Reliable);
}

struct RelayChat;

impl Guest for RelayChat {
    fn init(_room: String, _config: Vec<u8>) -> Result<(), String> {
        Ok(())
    }

    fn join(p: Player) -> Result<(), String> {
        let name = p.name.trim().to_string();
        let mut c = chat();
        if c.members.values().any(|m| m.name == name) {
            return Err(format!("the name {name:?} is taken in this room"));
        }
        c.members.insert(p.id, Member { name: name.clone(), tokens: BURST });
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
        for m in c.members.values_mut() {
            m.tokens = (m.tokens + dt * PER_SECOND).min(BURST);
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
            members.insert(id, Member { name, tokens: BURST });
        }
        chat().members = members;
        Ok(())
    }
}

export!(RelayChat);
