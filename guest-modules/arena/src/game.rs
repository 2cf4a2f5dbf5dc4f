//! The arena game as a pure state machine: inputs and the clock go in, [`Effect`]s come out.
//!
//! Nothing here calls the host, so the rules are unit-tested natively. Rules: players move at
//! [`SPEED`] in the direction of their last input, stay inside the walls, push each other apart
//! when they overlap, and the player who is "it" tags whoever they touch (scoring a point, which
//! is committed as the tagger's progress). The tagged player becomes "it" after a short cooldown.

use std::collections::BTreeMap;

/// Arena size, in world units.
pub const WIDTH: f32 = 1000.0;
/// Arena size, in world units.
pub const HEIGHT: f32 = 1000.0;
/// Player radius.
pub const RADIUS: f32 = 20.0;
/// Movement speed, units per second.
pub const SPEED: f32 = 200.0;
/// After a tag, nobody can be tagged for this long (no instant tag-back).
pub const TAG_COOLDOWN_MS: u64 = 1000;
/// Players this close (beyond touching edges) count as in contact for tagging, so two players
/// resting against each other after a push can still tag.
pub const CONTACT_MARGIN: f32 = 1.0;
/// Relaxation passes per resolve.
pub const RESOLVE_PASSES: usize = 8;
/// Longest step integrated at once, so a stalled room does not teleport players through walls.
pub const MAX_STEP_MS: u64 = 250;
/// Players a room holds at most, whatever the host allows.
pub const MAX_PLAYERS: usize = 64;
/// Ids of players spawned by operator signal start here, far from router-issued ids.
pub const BOT_ID_BASE: u64 = 1 << 62;
/// Version byte in broadcast frames, so clients can see which build runs the room.
pub const FRAME_VERSION: u8 = if cfg!(feature = "v2") { 2 } else { 1 };

/// What the game asks the host to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send to everyone; `reliable` picks streams over datagrams.
    Broadcast { data: Vec<u8>, reliable: bool },
    /// Send to one player.
    Send { to: u64, data: Vec<u8>, reliable: bool },
    /// Commit authoritative state.
    Commit { key: String, value: Vec<u8> },
}

/// One player in the arena.
#[derive(Debug, Clone, PartialEq)]
pub struct Avatar {
    pub name: String,
    pub x: f32,
    pub y: f32,
    pub vx: f32,
    pub vy: f32,
    pub score: u32,
}

/// The whole game state: everything `snapshot` must carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Game {
    pub players: BTreeMap<u64, Avatar>,
    pub it: Option<u64>,
    pub now_ms: u64,
    pub last_tick_ms: Option<u64>,
    pub immune_until_ms: u64,
    pub rng: u64,
    pub next_bot: u64,
    pub ticks: u32,
}

impl Game {
    /// An empty arena whose spawn points come from `seed`.
    pub fn new(seed: u64) -> Self {
        Game {
            players: BTreeMap::new(),
            it: None,
            now_ms: 0,
            last_tick_ms: None,
            immune_until_ms: 0,
            rng: seed | 1,
            next_bot: BOT_ID_BASE,
            ticks: 0,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: small, deterministic, and carried in the snapshot.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn spawn_point(&mut self) -> (f32, f32) {
        let span_x = (WIDTH - 2.0 * RADIUS) as u64;
        let span_y = (HEIGHT - 2.0 * RADIUS) as u64;
        let x = RADIUS + (self.next_random() % span_x) as f32;
        let y = RADIUS + (self.next_random() % span_y) as f32;
        (x, y)
    }

    /// Adds a player, restoring their score from saved progress if there is any.
    pub fn join(&mut self, id: u64, name: &str, saved: Option<&[u8]>) -> Result<Vec<Effect>, String> {
        if self.players.contains_key(&id) {
            return Err(format!("player {id} is already in this arena"));
        }
        if self.players.len() >= MAX_PLAYERS {
            return Err(format!("the arena holds at most {MAX_PLAYERS} players"));
        }
        let score = saved.and_then(parse_progress).unwrap_or(0);
        let (x, y) = self.spawn_point();
        self.players.insert(id, Avatar { name: name.to_string(), x, y, vx: 0.0, vy: 0.0, score });
        if self.it.is_none() {
            self.it = Some(id);
        }
        Ok(self.resolve())
    }

    /// Adds an operator-spawned player and returns its id.
    pub fn spawn(&mut self, name: &str) -> Result<(u64, Vec<Effect>), String> {
        let id = self.next_bot;
        let fx = self.join(id, name, None)?;
        self.next_bot += 1;
        Ok((id, fx))
    }

    /// Removes a player; "it" passes to the lowest remaining id.
    pub fn leave(&mut self, id: u64) {
        self.players.remove(&id);
        if self.it == Some(id) {
            self.it = self.players.keys().next().copied();
        }
    }

    /// A player's input: `b'M', dx: i8, dy: i8`, the direction to move in (0,0 stops); or a ping,
    /// `b'P', payload…` (at most 64 bytes), answered to the sender as `b'p', payload…` so clients
    /// can show their latency. Anything else is ignored: a bad input cannot break the room.
    pub fn input(&mut self, id: u64, data: &[u8]) -> Vec<Effect> {
        if data.first() == Some(&b'P') && data.len() <= 65 && self.players.contains_key(&id) {
            let mut reply = data.to_vec();
            reply[0] = b'p';
            return vec![Effect::Send { to: id, data: reply, reliable: false }];
        }
        self.steer(id, data);
        Vec::new()
    }

    fn steer(&mut self, id: u64, data: &[u8]) {
        let [b'M', dx, dy] = *data else { return };
        let Some(p) = self.players.get_mut(&id) else {
            return;
        };
        let (dx, dy) = (dx as i8 as f32, dy as i8 as f32);
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 {
            (p.vx, p.vy) = (0.0, 0.0);
        } else {
            (p.vx, p.vy) = (dx / len * SPEED, dy / len * SPEED);
        }
    }

    /// Moves a player directly by (dx, dy), as the operator's `move` signal does.
    pub fn displace(&mut self, id: u64, dx: f32, dy: f32) -> Result<Vec<Effect>, String> {
        if !dx.is_finite() || !dy.is_finite() {
            return Err("dx and dy must be finite numbers".into());
        }
        let p = self.players.get_mut(&id).ok_or_else(|| format!("no player {id}"))?;
        p.x += dx;
        p.y += dy;
        Ok(self.resolve())
    }

    /// Advances the world to `now_ms` and broadcasts the positions.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let dt_ms = match self.last_tick_ms {
            Some(last) => now_ms.saturating_sub(last).min(MAX_STEP_MS),
            None => 0,
        };
        self.last_tick_ms = Some(now_ms);
        self.now_ms = now_ms;
        self.ticks = self.ticks.wrapping_add(1);
        let dt = dt_ms as f32 / 1000.0;
        for p in self.players.values_mut() {
            p.x += p.vx * dt;
            p.y += p.vy * dt;
        }
        let mut fx = self.resolve();
        if !self.players.is_empty() {
            fx.push(Effect::Broadcast { data: self.frame(), reliable: false });
        }
        fx
    }

    /// Walls, then pairwise pushes, then walls again; tags whoever "it" touches.
    fn resolve(&mut self) -> Vec<Effect> {
        // The pair loop works on references gathered once, in id order: looking each player up in
        // the map for every pair made this loop most of a tick's cost (a 64-player room ticked in
        // about 0.3 ms).
        let mut avatars: Vec<(u64, &mut Avatar)> = self.players.iter_mut().map(|(&id, p)| (id, p)).collect();
        for (_, p) in avatars.iter_mut() {
            clamp_to_walls(p);
        }
        let mut touching = Vec::new();
        // A few relaxation passes: one push can shove a player into a third one or into a wall,
        // so repeat until nobody overlaps (bounded, so a packed arena cannot stall the tick).
        for _ in 0..RESOLVE_PASSES {
            let mut moved = false;
            for i in 0..avatars.len() {
                let (head, tail) = avatars.split_at_mut(i + 1);
                let (a, pa) = &mut head[i];
                for (b, pb) in tail.iter_mut() {
                    let (dx, dy) = (pb.x - pa.x, pb.y - pa.y);
                    let dist = (dx * dx + dy * dy).sqrt();
                    if dist >= 2.0 * RADIUS + CONTACT_MARGIN {
                        continue;
                    }
                    if !touching.contains(&(*a, *b)) {
                        touching.push((*a, *b));
                    }
                    if dist >= 2.0 * RADIUS - 1e-3 {
                        continue;
                    }
                    moved = true;
                    let (nx, ny) = if dist > 1e-6 { (dx / dist, dy / dist) } else { (1.0, 0.0) };
                    let overlap = 2.0 * RADIUS - dist;
                    // Each takes half; whatever a wall stops one from taking, the other takes.
                    let (ox, oy) = (pa.x, pa.y);
                    pa.x -= nx * overlap / 2.0;
                    pa.y -= ny * overlap / 2.0;
                    clamp_to_walls(pa);
                    let a_took = -((pa.x - ox) * nx + (pa.y - oy) * ny);
                    let rest = overlap - a_took;
                    pb.x += nx * rest;
                    pb.y += ny * rest;
                    clamp_to_walls(pb);
                }
            }
            if !moved {
                break;
            }
        }
        let mut fx = Vec::new();
        for (a, b) in touching {
            let Some(it) = self.it else { break };
            if self.now_ms < self.immune_until_ms {
                break;
            }
            let tagged = if it == a {
                b
            } else if it == b {
                a
            } else {
                continue;
            };
            if let Some(tagger) = self.players.get_mut(&it) {
                tagger.score += 1;
                fx.push(Effect::Commit {
                    key: format!("player/{it}"),
                    value: progress_json(&tagger.name, tagger.score).into_bytes(),
                });
            }
            self.it = Some(tagged);
            self.immune_until_ms = self.now_ms + TAG_COOLDOWN_MS;
        }
        fx
    }

    /// The broadcast frame: `b'S', version, ticks u32, count u8, then per player
    /// `id u64, x u16, y u16, score u16, flags u8` (little-endian; flags bit 0 = "it").
    pub fn frame(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + self.players.len() * 15);
        out.push(b'S');
        out.push(FRAME_VERSION);
        out.extend_from_slice(&self.ticks.to_le_bytes());
        out.push(self.players.len().min(255) as u8);
        for (&id, p) in self.players.iter().take(255) {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(p.x.round() as u16).to_le_bytes());
            out.extend_from_slice(&(p.y.round() as u16).to_le_bytes());
            out.extend_from_slice(&(p.score.min(u16::MAX as u32) as u16).to_le_bytes());
            out.push(u8::from(self.it == Some(id)));
        }
        out
    }

    /// Operator view of the game, stable across ticks when nobody moves.
    pub fn state_json(&self) -> String {
        let players: Vec<String> = self
            .players
            .iter()
            .map(|(id, p)| {
                format!(
                    "{{\"id\":{id},\"name\":{},\"x\":{:.3},\"y\":{:.3},\"score\":{}}}",
                    json_string(&p.name),
                    p.x,
                    p.y,
                    p.score
                )
            })
            .collect();
        let it = self.it.map_or("null".to_string(), |i| i.to_string());
        format!("{{\"it\":{it},\"players\":[{}]}}", players.join(","))
    }

    /// The full state, for hot upgrade.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = Vec::new();
        w.push(1u8);
        w.extend_from_slice(&self.it.map_or(u64::MAX, |i| i).to_le_bytes());
        w.push(u8::from(self.it.is_some()));
        w.extend_from_slice(&self.now_ms.to_le_bytes());
        w.extend_from_slice(&self.last_tick_ms.map_or(u64::MAX, |i| i).to_le_bytes());
        w.push(u8::from(self.last_tick_ms.is_some()));
        w.extend_from_slice(&self.immune_until_ms.to_le_bytes());
        w.extend_from_slice(&self.rng.to_le_bytes());
        w.extend_from_slice(&self.next_bot.to_le_bytes());
        w.extend_from_slice(&self.ticks.to_le_bytes());
        w.extend_from_slice(&(self.players.len() as u32).to_le_bytes());
        for (&id, p) in &self.players {
            w.extend_from_slice(&id.to_le_bytes());
            w.extend_from_slice(&(p.name.len() as u32).to_le_bytes());
            w.extend_from_slice(p.name.as_bytes());
            for f in [p.x, p.y, p.vx, p.vy] {
                w.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            w.extend_from_slice(&p.score.to_le_bytes());
        }
        w
    }

    /// Rebuilds a game from [`Game::snapshot`] bytes; every length is checked.
    pub fn restore(bytes: &[u8]) -> Result<Game, String> {
        let mut r = Reader(bytes);
        if r.u8()? != 1 {
            return Err("unknown arena snapshot version".into());
        }
        let it = r.u64()?;
        let it = (r.u8()? == 1).then_some(it);
        let now_ms = r.u64()?;
        let last = r.u64()?;
        let last_tick_ms = (r.u8()? == 1).then_some(last);
        let immune_until_ms = r.u64()?;
        let rng = r.u64()?;
        let next_bot = r.u64()?;
        let ticks = r.u32()?;
        let n = r.u32()? as usize;
        if n > MAX_PLAYERS {
            return Err(format!("snapshot has {n} players, more than {MAX_PLAYERS}"));
        }
        let mut players = BTreeMap::new();
        for _ in 0..n {
            let id = r.u64()?;
            let len = r.u32()? as usize;
            let name = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| "player name is not UTF-8")?;
            let mut f = [0f32; 4];
            for v in &mut f {
                *v = f32::from_bits(r.u32()?);
            }
            let score = r.u32()?;
            players.insert(id, Avatar { name, x: f[0], y: f[1], vx: f[2], vy: f[3], score });
        }
        if !r.0.is_empty() {
            return Err("trailing bytes after arena snapshot".into());
        }
        Ok(Game { players, it, now_ms, last_tick_ms, immune_until_ms, rng, next_bot, ticks })
    }
}

fn clamp_to_walls(p: &mut Avatar) {
    if p.x < RADIUS || p.x > WIDTH - RADIUS {
        p.x = p.x.clamp(RADIUS, WIDTH - RADIUS);
        p.vx = 0.0;
    }
    if p.y < RADIUS || p.y > HEIGHT - RADIUS {
        p.y = p.y.clamp(RADIUS, HEIGHT - RADIUS);
        p.vy = 0.0;
    }
}

/// The progress committed under `player/{id}`.
pub fn progress_json(name: &str, score: u32) -> String {
    format!("{{\"name\":{},\"score\":{score}}}", json_string(name))
}

/// Reads the score back from committed progress; `None` if it is not ours.
pub fn parse_progress(bytes: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(bytes).ok()?;
    let rest = &text[text.find("\"score\":")? + 8..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated arena snapshot".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "short")?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "short")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn place(g: &mut Game, id: u64, x: f32, y: f32) {
        let p = g.players.get_mut(&id).unwrap();
        (p.x, p.y) = (x, y);
    }

    #[test]
    fn walls_stop_players_and_their_velocity() {
        let mut g = Game::new(1);
        g.join(1, "a", None).unwrap();
        place(&mut g, 1, 500.0, 500.0);
        g.input(1, &[b'M', 127, 0]);
        g.tick(0);
        for t in 1..=40 {
            g.tick(t * 250);
        }
        let p = &g.players[&1];
        assert_eq!(p.x, WIDTH - RADIUS);
        assert_eq!(p.vx, 0.0);
        assert_eq!(p.y, 500.0);
        g.displace(1, -5000.0, -5000.0).unwrap();
        let p = &g.players[&1];
        assert_eq!((p.x, p.y), (RADIUS, RADIUS));
    }

    #[test]
    fn overlapping_players_are_pushed_apart() {
        let mut g = Game::new(1);
        g.join(1, "a", None).unwrap();
        g.join(2, "b", None).unwrap();
        g.it = None; // no tagging in this test
        place(&mut g, 1, 500.0, 500.0);
        place(&mut g, 2, 510.0, 500.0);
        g.resolve();
        let (a, b) = (&g.players[&1], &g.players[&2]);
        let d = ((b.x - a.x).powi(2) + (b.y - a.y).powi(2)).sqrt();
        assert!((d - 2.0 * RADIUS).abs() < 1e-3, "distance {d}");
        assert!(a.x < 500.0 && b.x > 510.0, "pushed symmetrically");
    }

    #[test]
    fn stacked_players_are_separated_even_against_a_wall() {
        let mut g = Game::new(1);
        g.join(1, "a", None).unwrap();
        g.join(2, "b", None).unwrap();
        g.it = None;
        place(&mut g, 1, RADIUS, RADIUS);
        place(&mut g, 2, RADIUS + 5.0, RADIUS);
        g.resolve();
        let (a, b) = (&g.players[&1], &g.players[&2]);
        assert_eq!((a.x, a.y), (RADIUS, RADIUS), "the cornered player stays inside the walls");
        let d = ((b.x - a.x).powi(2) + (b.y - a.y).powi(2)).sqrt();
        assert!(d >= 2.0 * RADIUS - 0.01, "separated in one resolve even against a wall: {d}");
    }

    #[test]
    fn tag_scores_commits_and_passes_it_with_cooldown() {
        let mut g = Game::new(1);
        g.join(1, "ada", None).unwrap();
        g.join(2, "bob", None).unwrap();
        place(&mut g, 1, 100.0, 100.0);
        place(&mut g, 2, 300.0, 100.0);
        g.tick(10_000);
        assert_eq!(g.it, Some(1));
        let fx = g.displace(1, 170.0, 0.0).unwrap();
        assert_eq!(fx, vec![Effect::Commit { key: "player/1".into(), value: br#"{"name":"ada","score":1}"#.to_vec() }]);
        assert_eq!(g.it, Some(2));
        // Tag-back during the cooldown does nothing.
        assert!(g.displace(2, -5.0, 0.0).unwrap().is_empty());
        assert_eq!(g.players[&2].score, 0);
        g.tick(10_000 + TAG_COOLDOWN_MS);
        assert_eq!(g.it, Some(1), "touching after the cooldown tags back");
        assert_eq!(g.players[&2].score, 1);
    }

    #[test]
    fn returning_player_gets_their_score_back() {
        let mut g = Game::new(1);
        g.join(5, "eve", Some(progress_json("eve", 41).as_bytes())).unwrap();
        assert_eq!(g.players[&5].score, 41);
        g.join(6, "mal", Some(b"garbage")).unwrap();
        assert_eq!(g.players[&6].score, 0);
    }

    #[test]
    fn bad_inputs_and_snapshots_are_rejected_without_panicking() {
        let mut g = Game::new(1);
        g.join(1, "a", None).unwrap();
        for bad in [&b""[..], b"M", b"Mxyz", b"\xff\xff\xff", &[b'P'; 100]] {
            assert!(g.input(1, bad).is_empty());
        }
        assert_eq!(g.input(1, b"P123"), vec![Effect::Send { to: 1, data: b"p123".to_vec(), reliable: false }]);
        assert!(g.input(99, b"P123").is_empty(), "no pong for a player not in the arena");
        assert!(g.displace(1, f32::NAN, 0.0).is_err());
        assert!(g.displace(99, 1.0, 0.0).is_err());
        let snap = g.snapshot();
        for cut in 0..snap.len() {
            assert!(Game::restore(&snap[..cut]).is_err());
        }
        assert!(Game::restore(&[2]).is_err());
    }

    #[test]
    fn frame_has_each_player() {
        let mut g = Game::new(3);
        g.join(1, "a", None).unwrap();
        g.join(2, "b", None).unwrap();
        let f = g.frame();
        assert_eq!(f.len(), 7 + 2 * 15);
        assert_eq!(&f[..2], &[b'S', FRAME_VERSION]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8),
        Leave(u8),
        Input(u8, i8, i8),
        Move(u8, i16, i16),
        Tick(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u8>().prop_map(|i| Op::Join(i % 12)),
            any::<u8>().prop_map(|i| Op::Leave(i % 12)),
            (any::<u8>(), any::<i8>(), any::<i8>()).prop_map(|(i, x, y)| Op::Input(i % 12, x, y)),
            (any::<u8>(), any::<i16>(), any::<i16>()).prop_map(|(i, x, y)| Op::Move(i % 12, x, y)),
            any::<u16>().prop_map(Op::Tick),
        ]
    }

    proptest! {
        #[test]
        fn restore_of_snapshot_is_the_same_game(seed in any::<u64>(), ops in proptest::collection::vec(op(), 0..60)) {
            let mut g = Game::new(seed);
            let mut now = 0u64;
            for o in ops {
                match o {
                    Op::Join(i) => { let _ = g.join(i as u64, &format!("p{i}"), None); }
                    Op::Leave(i) => g.leave(i as u64),
                    Op::Input(i, x, y) => { g.input(i as u64, &[b'M', x as u8, y as u8]); }
                    Op::Move(i, x, y) => { let _ = g.displace(i as u64, x as f32, y as f32); }
                    Op::Tick(d) => { now += d as u64; g.tick(now); }
                }
            }
            let back = Game::restore(&g.snapshot()).unwrap();
            prop_assert_eq!(&back, &g);
            prop_assert_eq!(back.state_json(), g.state_json());
        }
    }
}
