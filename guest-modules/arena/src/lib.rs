//! `arena`: a small authoritative tag game (rules in [`game`]), wired to the host.
//!
//! Players send `b'M', dx, dy` inputs; every tick the room broadcasts compact binary positions.
//! Operator signals drive and inspect it through the admin API alone:
//! `spawn NAME` → new player id, `move ID DX DY` → "ok", `state` → JSON, `clock` → the room's
//! `now_ms` and the tag cooldown's end as JSON, `version` → build version.

pub mod game;

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "room", path: "../../wit" });

    use crate::game::{Effect, FRAME_VERSION, Game};
    use outpost::room::host;
    use outpost::room::types::{Delivery, Saved};
    use std::sync::Mutex;

    static GAME: Mutex<Option<Game>> = Mutex::new(None);

    fn with_game<T>(f: impl FnOnce(&mut Game) -> T) -> T {
        let mut guard = GAME.lock().unwrap_or_else(|e| e.into_inner());
        let game = guard.get_or_insert_with(|| Game::new(host::random()));
        f(game)
    }

    fn apply(effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Broadcast { data, reliable } => {
                    let how = if reliable { Delivery::Reliable } else { Delivery::Unreliable };
                    host::broadcast(&data, how);
                }
                Effect::Send { to, data, reliable } => {
                    let how = if reliable { Delivery::Reliable } else { Delivery::Unreliable };
                    host::send(to, &data, how);
                }
                Effect::Commit { key, value } => host::commit(&key, &value),
            }
        }
    }

    fn signal_text(text: &str) -> Result<String, String> {
        let mut words = text.split_whitespace();
        match words.next() {
            Some("spawn") => {
                let name = words.next().unwrap_or("bot");
                let (id, fx) = with_game(|g| g.spawn(name))?;
                apply(fx);
                Ok(id.to_string())
            }
            Some("move") => {
                let mut num = |what: &str| -> Result<&str, String> {
                    words.next().ok_or_else(|| format!("usage: move ID DX DY (missing {what})"))
                };
                let id: u64 = num("ID")?.parse().map_err(|_| "ID must be an integer".to_string())?;
                let dx: f32 = num("DX")?.parse().map_err(|_| "DX must be a number".to_string())?;
                let dy: f32 = num("DY")?.parse().map_err(|_| "DY must be a number".to_string())?;
                let fx = with_game(|g| g.displace(id, dx, dy))?;
                apply(fx);
                Ok("ok".into())
            }
            Some("state") => Ok(with_game(|g| g.state_json())),
            // The room's clock as the game last saw it, and when the last tag's cooldown ends.
            Some("clock") => {
                Ok(with_game(|g| format!("{{\"now_ms\":{},\"immune_until_ms\":{}}}", g.now_ms, g.immune_until_ms)))
            }
            Some("version") => Ok(format!("arena {FRAME_VERSION}")),
            _ => Err("unknown signal; try: spawn NAME | move ID DX DY | state | clock | version".into()),
        }
    }

    struct Arena;

    impl Guest for Arena {
        fn init(_room: String, _config: Vec<u8>) -> Result<(), String> {
            with_game(|_| ());
            Ok(())
        }

        fn join(p: Player) -> Result<(), String> {
            let saved = match &p.saved {
                Saved::Found(bytes) => Some(bytes.as_slice()),
                Saved::None | Saved::Unavailable => None,
            };
            let fx = with_game(|g| g.join(p.id, &p.name, saved))?;
            apply(fx);
            Ok(())
        }

        fn leave(who: PlayerId) {
            with_game(|g| g.leave(who));
        }

        fn message(sender: PlayerId, data: Vec<u8>) {
            let fx = with_game(|g| g.input(sender, &data));
            apply(fx);
        }

        fn tick(now_ms: u64) {
            let fx = with_game(|g| g.tick(now_ms));
            apply(fx);
        }

        fn signal(data: Vec<u8>) -> Vec<u8> {
            let text = String::from_utf8_lossy(&data);
            match signal_text(text.trim()) {
                Ok(s) => s.into_bytes(),
                Err(e) => format!("error: {e}").into_bytes(),
            }
        }

        fn snapshot() -> Vec<u8> {
            with_game(|g| g.snapshot())
        }

        fn restore(state: Vec<u8>) -> Result<(), String> {
            if cfg!(feature = "broken-restore") {
                return Err("this arena build cannot restore snapshots (broken-restore)".into());
            }
            let game = Game::restore(&state)?;
            *GAME.lock().unwrap_or_else(|e| e.into_inner()) = Some(game);
            Ok(())
        }
    }

    export!(Arena);
}
