//! The node registry: what each edge last said about itself and when.
//!
//! Pure state with the clock as an argument, so the health rule is tested on an injected clock.
//! Nodes live in stable slots; each module keeps the sorted list of the slots that have it, so a route
//! walks only the nodes with the module, and the per-position geo estimates can be cached by
//! slot (see [`Registry::layout_generation`]).

use crate::estimate::LatLon;
use outpost_proto::api::{Heartbeat, NodeStatus};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How many missed intervals make a node `down`.
pub const MISSED_INTERVALS: u32 = 3;

/// A node's health as placement and `GET /v1/nodes` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Heartbeats current and taking joins.
    Healthy,
    /// Heartbeats current but refusing joins (draining, outbox full).
    NotAccepting,
    /// No heartbeat for more than [`MISSED_INTERVALS`] of its interval.
    Down,
}

impl Health {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::NotAccepting => "not-accepting",
            Health::Down => "down",
        }
    }
}

/// One registered node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its last heartbeat.
    pub hb: Heartbeat,
    /// When that arrived.
    pub last_seen: Instant,
    /// Its position, checked.
    pub pos: Option<LatLon>,
}

impl Node {
    /// The health rule: down after [`MISSED_INTERVALS`] intervals without a heartbeat.
    pub fn health(&self, now: Instant) -> Health {
        let limit = Duration::from_millis(self.hb.interval_ms) * MISSED_INTERVALS;
        if now.saturating_duration_since(self.last_seen) > limit {
            Health::Down
        } else if !self.hb.accepting {
            Health::NotAccepting
        } else {
            Health::Healthy
        }
    }
}

/// Why a heartbeat was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry holds `--max-nodes` already and this is a new id.
    #[error("the registry is full ({0} nodes); raise --max-nodes")]
    Full(usize),
}

/// How the router holds places for the tickets it hands out.
#[derive(Debug, Clone, Copy)]
pub struct ReservePolicy {
    /// A ticket's lifetime: an unredeemed ticket's place is released when it expires.
    pub ticket_ttl: Duration,
    /// The most of a node's free places this router's unredeemed tickets may hold, 0 to 1.
    /// With several routers, give each its part (0.5 among two: 0.25 each).
    pub share: f64,
}

impl Default for ReservePolicy {
    fn default() -> Self {
        ReservePolicy { ticket_ttl: Duration::from_secs(60), share: 0.5 }
    }
}

/// The places a node's unredeemed tickets hold. Anyone may ask for routes, so these must not be
/// able to make a node look full: they are released when the node reports them redeemed or when
/// the ticket expires, and placement counts them only up to [`ReservePolicy::share`] of the
/// node's free places.
#[derive(Debug, Default)]
struct Reservations {
    /// Tickets handed out, by the second (since the registry's epoch) they were made, oldest
    /// first.
    by_second: VecDeque<(u64, u32)>,
    /// The node's `boot_id` and `redeemed` at its last heartbeat.
    seen: Option<(String, u64)>,
}

impl Reservations {
    fn total(&self) -> u32 {
        self.by_second.iter().fold(0u32, |t, b| t.saturating_add(b.1))
    }

    fn expire(&mut self, second: u64, ttl_s: u64) {
        while self.by_second.front().is_some_and(|b| b.0 + ttl_s < second) {
            self.by_second.pop_front();
        }
    }

    /// Releases `n` places, oldest first (tickets are mostly redeemed in the order made).
    fn release(&mut self, mut n: u64) {
        while n > 0 {
            let Some(front) = self.by_second.front_mut() else { return };
            let take = u64::from(front.1).min(n);
            front.1 -= take as u32;
            n -= take;
            if front.1 == 0 {
                self.by_second.pop_front();
            }
        }
    }

    /// What the node's heartbeat says about the tickets it redeemed.
    fn heartbeat(&mut self, boot_id: Option<&str>, redeemed: Option<u64>) {
        match (boot_id, redeemed) {
            (Some(boot), Some(redeemed)) => {
                match &self.seen {
                    Some((b, before)) if b == boot => self.release(redeemed.saturating_sub(*before)),
                    // A restarted node spent nothing this router knows of; what it reserved
                    // before stays until it expires. A node seen for the first time: likewise.
                    _ => {}
                }
                self.seen = Some((boot.to_string(), redeemed));
            }
            // A node older than `redeemed`: its player count is the only news, so places are
            // held until its next heartbeat, as before.
            _ => {
                self.by_second.clear();
                self.seen = None;
            }
        }
    }
}

/// All nodes.
#[derive(Debug)]
pub struct Registry {
    slots: Vec<Option<Node>>,
    /// Unredeemed tickets per slot ([`Reservations`]), and their count for lock-free reads.
    reservations: Vec<Mutex<Reservations>>,
    reserved: Vec<AtomicU32>,
    policy: ReservePolicy,
    epoch: Instant,
    by_id: HashMap<String, usize>,
    /// Module name → the slots that have it, ascending. A list, not a bitset over all slots:
    /// a bitset sized to the highest slot, per module name, grew with a node's slot number for
    /// each of its up to 1,024 names (gigabytes at the caps); a list holds what exists.
    modules: HashMap<String, Vec<u32>>,
    layout: u64,
    max_nodes: usize,
}

impl Registry {
    /// An empty registry of at most `max_nodes` nodes.
    pub fn new(max_nodes: usize) -> Registry {
        Registry {
            slots: Vec::new(),
            reservations: Vec::new(),
            reserved: Vec::new(),
            policy: ReservePolicy::default(),
            epoch: Instant::now(),
            by_id: HashMap::new(),
            modules: HashMap::new(),
            layout: 0,
            max_nodes,
        }
    }

    /// Sets how places are reserved for tickets.
    pub fn set_reserve_policy(&mut self, policy: ReservePolicy) {
        self.policy = policy;
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Runs `f` on a slot's reservations, then refreshes its lock-free count.
    fn with_reservations(&self, slot: usize, now: Instant, f: impl FnOnce(&mut Reservations)) {
        let (Some(r), Some(count)) = (self.reservations.get(slot), self.reserved.get(slot)) else { return };
        let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
        r.expire(self.second(now), self.policy.ticket_ttl.as_secs().max(1));
        f(&mut r);
        count.store(r.total(), Ordering::Relaxed);
    }

    /// Takes a (validated) heartbeat.
    pub fn upsert(&mut self, hb: Heartbeat, now: Instant) -> Result<(), RegistryError> {
        let pos = LatLon::new(hb.lat, hb.lon);
        let slot = match self.by_id.get(&hb.id) {
            Some(&i) => i,
            None => {
                if self.by_id.len() >= self.max_nodes {
                    return Err(RegistryError::Full(self.max_nodes));
                }
                let i = match self.slots.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => {
                        self.slots.push(None);
                        self.reservations.push(Mutex::default());
                        self.reserved.push(AtomicU32::new(0));
                        self.slots.len() - 1
                    }
                };
                // A slot taken over by another node starts with nothing reserved.
                self.with_reservations(i, now, |r| *r = Reservations::default());
                self.by_id.insert(hb.id.clone(), i);
                self.layout += 1;
                i
            }
        };
        let old = self.slots[slot].take();
        if let Some(old) = &old {
            if old.pos != pos {
                self.layout += 1;
            }
            for m in &old.hb.modules {
                if !hb.modules.iter().any(|n| n.name == m.name) {
                    self.remove_from_module(&m.name, slot);
                }
            }
        }
        for m in &hb.modules {
            let slots = self.modules.entry(m.name.clone()).or_default();
            if let Err(at) = slots.binary_search(&(slot as u32)) {
                slots.insert(at, slot as u32);
            }
        }
        let (boot, redeemed) = (hb.boot_id.clone(), hb.redeemed);
        self.slots[slot] = Some(Node { hb, last_seen: now, pos });
        self.with_reservations(slot, now, |r| r.heartbeat(boot.as_deref(), redeemed));
        Ok(())
    }

    /// Holds a place on `slot` for a ticket just made.
    pub fn note_routed(&self, slot: usize, now: Instant) {
        let second = self.second(now);
        self.with_reservations(slot, now, |r| match r.by_second.back_mut() {
            Some(last) if last.0 == second => last.1 = last.1.saturating_add(1),
            _ => r.by_second.push_back((second, 1)),
        });
    }

    /// Unredeemed, unexpired tickets this router made for `slot` (as of the last route or
    /// heartbeat of that node).
    pub fn reserved(&self, slot: usize) -> u32 {
        self.reserved.get(slot).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Players on `slot` as placement counts them: the node's last report plus its reserved
    /// places, these at most [`ReservePolicy::share`] of the free places.
    pub fn players(&self, slot: usize) -> u32 {
        let Some(n) = self.get(slot) else { return 0 };
        let free = n.hb.capacity.saturating_sub(n.hb.players);
        let cap = (f64::from(free) * self.policy.share).floor() as u32;
        n.hb.players.saturating_add(self.reserved(slot).min(cap))
    }

    fn remove_from_module(&mut self, module: &str, slot: usize) {
        if let Some(slots) = self.modules.get_mut(module) {
            if let Ok(at) = slots.binary_search(&(slot as u32)) {
                slots.remove(at);
            }
            if slots.is_empty() {
                self.modules.remove(module);
            }
        }
    }

    /// Forgets nodes that have been down for longer than `forget_after`; returns how many.
    pub fn sweep(&mut self, now: Instant, forget_after: Duration) -> usize {
        let mut gone = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(n) = slot
                && now.saturating_duration_since(n.last_seen) > forget_after
                && n.health(now) == Health::Down
            {
                gone.push(i);
            }
        }
        for &i in &gone {
            self.with_reservations(i, now, |r| *r = Reservations::default());
            if let Some(n) = self.slots[i].take() {
                self.by_id.remove(&n.hb.id);
                for m in &n.hb.modules {
                    self.remove_from_module(&m.name, i);
                }
            }
        }
        if !gone.is_empty() {
            self.layout += 1;
        }
        gone.len()
    }

    /// Changes whenever a slot gains, loses or moves a node: cached per-slot data (geo estimates)
    /// made under another value is stale.
    pub fn layout_generation(&self) -> u64 {
        self.layout
    }

    /// The node in `slot`.
    pub fn get(&self, slot: usize) -> Option<&Node> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// The slot of a node id.
    pub fn slot_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// How many slots exist (some may be empty).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Registered nodes.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// No node registered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every node, in slot order.
    pub fn nodes(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|n| (i, n)))
    }

    /// The slots of the nodes that have `module`, ascending; empty when none do.
    pub fn module_slots(&self, module: &str) -> &[u32] {
        self.modules.get(module).map_or(&[][..], Vec::as_slice)
    }

    /// The slots of the nodes that have `module`.
    pub fn with_module(&self, module: &str) -> impl Iterator<Item = usize> + '_ {
        self.module_slots(module).iter().map(|&s| s as usize)
    }

    /// Counts by health: (healthy, not accepting, down).
    pub fn health_counts(&self, now: Instant) -> (u64, u64, u64) {
        let mut c = (0, 0, 0);
        for (_, n) in self.nodes() {
            match n.health(now) {
                Health::Healthy => c.0 += 1,
                Health::NotAccepting => c.1 += 1,
                Health::Down => c.2 += 1,
            }
        }
        c
    }

    /// `GET /v1/nodes`.
    pub fn status(&self, now: Instant) -> Vec<NodeStatus> {
        self.nodes()
            .map(|(slot, n)| NodeStatus {
                health: n.health(now).as_str().to_string(),
                age_s: now.saturating_duration_since(n.last_seen).as_secs_f64(),
                reserved: self.reserved(slot),
                heartbeat: n.hb.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use outpost_proto::api::NodeModule;

    pub(crate) fn hb(id: &str, modules: &[&str]) -> Heartbeat {
        Heartbeat {
            id: id.into(),
            region: "test".into(),
            lat: 51.5,
            lon: -0.1,
            quic_addr: "127.0.0.1:7701".into(),
            probe_addr: "127.0.0.1:7702".into(),
            admin_url: "http://127.0.0.1:7703".into(),
            admin_tls_sha256: None,
            cert_sha256: "00".repeat(32),
            capacity: 100,
            players: 0,
            rooms: 0,
            modules: modules.iter().map(|m| NodeModule { name: m.to_string(), version: "v".into() }).collect(),
            cpu: 0.0,
            interval_ms: 2000,
            accepting: true,
            boot_id: None,
            version: None,
            redeemed: None,
            features: Vec::new(),
            websocket: None,
            webtransport: None,
        }
    }

    #[test]
    fn down_after_exactly_three_missed_intervals_and_back_with_the_next_heartbeat() {
        let t0 = Instant::now();
        let mut r = Registry::new(10);
        r.upsert(hb("a", &["arena"]), t0).unwrap();
        let node = |r: &Registry| r.get(r.slot_of("a").unwrap()).unwrap().clone();
        let ms = Duration::from_millis;
        assert_eq!(node(&r).health(t0 + ms(5999)), Health::Healthy);
        assert_eq!(node(&r).health(t0 + ms(6000)), Health::Healthy);
        assert_eq!(node(&r).health(t0 + ms(6001)), Health::Down);
        r.upsert(hb("a", &["arena"]), t0 + ms(9000)).unwrap();
        assert_eq!(node(&r).health(t0 + ms(9001)), Health::Healthy);
        r.upsert(Heartbeat { accepting: false, ..hb("a", &["arena"]) }, t0 + ms(9500)).unwrap();
        assert_eq!(node(&r).health(t0 + ms(9501)), Health::NotAccepting);
        assert_eq!(r.health_counts(t0 + ms(9501)), (0, 1, 0));
    }

    #[test]
    fn module_lists_follow_heartbeats() {
        let t0 = Instant::now();
        let mut r = Registry::new(200);
        for i in 0..130 {
            let m: &[&str] = if i % 2 == 0 { &["arena"] } else { &["chat"] };
            r.upsert(hb(&format!("n{i}"), m), t0).unwrap();
        }
        assert_eq!(r.with_module("arena").count(), 65);
        assert!(r.with_module("arena").all(|s| r.get(s).unwrap().hb.modules[0].name == "arena"));
        r.upsert(hb("n0", &["chat"]), t0).unwrap();
        assert_eq!(r.with_module("arena").count(), 64);
        assert_eq!(r.with_module("chat").count(), 66);
        assert_eq!(r.with_module("nothing").count(), 0);
        let before = r.layout_generation();
        r.upsert(hb("n1", &["chat"]), t0).unwrap();
        assert_eq!(r.layout_generation(), before, "a heartbeat from the same place keeps the layout");
        r.upsert(Heartbeat { lat: 10.0, ..hb("n1", &["chat"]) }, t0).unwrap();
        assert_ne!(r.layout_generation(), before, "a node that moved changes it");
    }

    #[test]
    fn full_registry_refuses_new_ids_and_sweep_frees_slots() {
        let t0 = Instant::now();
        let mut r = Registry::new(2);
        r.upsert(hb("a", &["m"]), t0).unwrap();
        r.upsert(hb("b", &["m"]), t0).unwrap();
        assert_eq!(r.upsert(hb("c", &["m"]), t0), Err(RegistryError::Full(2)));
        r.upsert(hb("a", &["m"]), t0).unwrap();
        let later = t0 + Duration::from_secs(3600);
        r.upsert(hb("b", &["m"]), later).unwrap();
        assert_eq!(r.sweep(later, Duration::from_secs(600)), 1);
        assert!(r.slot_of("a").is_none());
        assert_eq!(r.with_module("m").count(), 1);
        r.upsert(hb("c", &["m"]), later).unwrap();
        assert_eq!(r.slot_of("c"), Some(0), "the freed slot is reused");
    }

    #[test]
    fn reserved_places_count_up_to_a_share_of_the_free_ones_and_go_when_redeemed_or_expired() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Registry::new(10);
        r.set_reserve_policy(ReservePolicy { ticket_ttl: s(60), share: 0.5 });
        let beat = |players: u32, boot: &str, redeemed: u64| Heartbeat {
            capacity: 100,
            players,
            boot_id: Some(boot.into()),
            redeemed: Some(redeemed),
            features: Vec::new(),
            websocket: None,
            webtransport: None,
            ..hb("n", &["arena"])
        };
        r.upsert(beat(0, "b1", 0), t0).unwrap();
        let slot = r.slot_of("n").unwrap();
        for i in 0..80 {
            r.note_routed(slot, t0 + Duration::from_millis(i * 10));
        }
        assert_eq!(r.reserved(slot), 80);
        assert_eq!(r.players(slot), 50, "80 unredeemed tickets count as at most half the free places");
        // The node redeemed 30 and has 30 players: 50 stay reserved, capped at half of 70 free.
        r.upsert(beat(30, "b1", 30), t0 + s(2)).unwrap();
        assert_eq!(r.reserved(slot), 50);
        assert_eq!(r.players(slot), 30 + 35);
        // A restarted node (new boot id) spent nothing this router knows of.
        r.upsert(beat(0, "b2", 3), t0 + s(4)).unwrap();
        assert_eq!(r.reserved(slot), 50);
        r.upsert(beat(5, "b2", 8), t0 + s(6)).unwrap();
        assert_eq!(r.reserved(slot), 45, "5 redeemed since the restart");
        // Tickets expire with their lifetime.
        r.upsert(beat(5, "b2", 8), t0 + s(62)).unwrap();
        assert_eq!(r.reserved(slot), 0);
        assert_eq!(r.players(slot), 5);
        // A node that does not report `redeemed` (older than the field) holds places until its
        // next heartbeat, as before.
        r.note_routed(slot, t0 + s(63));
        assert_eq!(r.reserved(slot), 1);
        r.upsert(Heartbeat { capacity: 100, ..hb("n", &["arena"]) }, t0 + s(64)).unwrap();
        assert_eq!(r.reserved(slot), 0);
        // A full node stays full: no free place, nothing reserved counts.
        r.upsert(beat(100, "b3", 0), t0 + s(65)).unwrap();
        r.note_routed(slot, t0 + s(65));
        assert_eq!(r.players(slot), 100);
    }

    #[test]
    fn module_lists_hold_what_exists_whatever_the_slot_numbers() {
        let mut r = Registry::new(3000);
        let t0 = Instant::now();
        for i in 0..2000 {
            r.upsert(hb(&format!("n{i}"), &["arena"]), t0).unwrap();
        }
        // The last slot announces 1,024 module names: one entry each, not 1,024 lists sized
        // to slot 1,999.
        let names: Vec<String> = (0..1024).map(|m| format!("m{m}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        r.upsert(hb("n1999", &refs), t0).unwrap();
        let entries: usize = r.modules.values().map(Vec::len).sum();
        assert_eq!(entries, 1999 + 1024);
        assert_eq!(r.with_module("m7").collect::<Vec<_>>(), [r.slot_of("n1999").unwrap()]);
        // Dropping them drops the lists.
        r.upsert(hb("n1999", &["arena"]), t0).unwrap();
        assert_eq!(r.modules.len(), 1);
        assert_eq!(r.with_module("arena").count(), 2000);
    }
}
