//! The router's decisions over its live state: take heartbeats, learn from probe reports, and
//! route a client. The HTTP layer only parses, authorizes and maps errors; everything a route
//! depends on is here, with the clock passed in, so it is tested without sockets.

use crate::addr::PrefixKey;
use crate::estimate::{GeoModel, LatLon};
use crate::geo::{CellKey, GeoInfo, GeoLookup};
use crate::learn::{LearnLimits, Measurement, SampleError, Table, check_sample};
use crate::registry::{Health, Registry, RegistryError};
use crate::select::{Candidate, MatchNode, Method, NoMatch, NoNode, place};
use crate::telemetry::Metrics;
use crate::ticket::Issuer;
use outpost_proto::api::{
    FEATURE_MATCH_TICKETS, Heartbeat, MatchPlacement, MatchRequest, PlayerEstimate, ProbeAck, ProbeCandidate,
    ProbeResult, Route, RouteClient, RouteEstimate, RouteNode,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

/// What placement needs besides the registry.
pub struct RouterSettings {
    /// Alternates listed.
    pub alternates: usize,
    /// Prefix lengths for learning.
    pub prefix_v4: u8,
    /// See `prefix_v4`.
    pub prefix_v6: u8,
    /// Geo cell size, degrees.
    pub cell_deg: f64,
    /// Learning bounds.
    pub learn: LearnLimits,
    /// The geo model.
    pub geo_model: GeoModel,
    /// Results in one probe batch.
    pub probe_max_results: usize,
    /// How places are held for tickets not yet redeemed.
    pub reserve: crate::registry::ReservePolicy,
    /// Nodes in a candidate list.
    pub candidates: usize,
    /// Most candidates from one region.
    pub candidates_per_region: usize,
}

/// Geo RTTs from one client position to every registry slot (NaN where a node has no position),
/// cached per position and registry layout: computing 1,000 great circles per route would cost
/// more than the rest of the route together.
/// The slots in ascending order of that RTT let a route stop walking once it has enough
/// eligible nodes, instead of looking at all of them.
struct GeoRow {
    rtt: Vec<f32>,
    order: Vec<u32>,
    unplaced: Vec<u32>,
}

/// The router.
pub struct Router {
    /// Registered nodes.
    pub registry: RwLock<Registry>,
    geo: Box<dyn GeoLookup>,
    prefixes: Table<PrefixKey>,
    cells: Table<CellKey>,
    rows: moka::sync::Cache<(u64, u64, u64), Arc<GeoRow>>,
    issuer: Issuer,
    settings: RouterSettings,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// A heartbeat that cannot be taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HeartbeatError {
    /// A field is malformed.
    #[error("heartbeat field {0}: {1}")]
    Field(&'static str, String),
    /// No room for another node.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A probe batch that cannot be taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    /// Empty or over the limit.
    #[error("a batch holds 1 to {0} results, got {1}")]
    Count(usize, usize),
    /// A bad node id.
    #[error("results[{0}].node: {1}")]
    Node(usize, String),
    /// An absurd value.
    #[error("results[{0}]: {1}")]
    Sample(usize, SampleError),
}

/// Who a route is for.
#[derive(Debug, Clone)]
pub struct RouteRequest<'a> {
    /// Module name (checked).
    pub module: &'a str,
    /// Player id.
    pub player: u64,
    /// Display name (checked).
    pub name: &'a str,
    /// The client address.
    pub client: IpAddr,
    /// The client's own measurements, made just now (checked and learned by the caller).
    pub own: &'a [ProbeResult],
}

/// Checks a heartbeat's fields; the registry only ever holds checked ones.
pub fn check_heartbeat(hb: &Heartbeat) -> Result<(), HeartbeatError> {
    use HeartbeatError::Field;
    let text = |field: &'static str, s: &str, max: usize| {
        if s.len() > max || s.chars().any(char::is_control) {
            return Err(Field(field, format!("at most {max} bytes of printable text")));
        }
        Ok(())
    };
    outpost_proto::ids::check_name("id", &hb.id).map_err(|e| Field("id", e.to_string()))?;
    text("region", &hb.region, 64)?;
    LatLon::new(hb.lat, hb.lon)
        .ok_or_else(|| Field("lat", format!("({}, {}) is not a point on Earth", hb.lat, hb.lon)))?;
    for (field, addr) in [("quic_addr", &hb.quic_addr), ("probe_addr", &hb.probe_addr)] {
        addr.parse::<SocketAddr>().map_err(|_| Field(field, format!("{addr:?} is not ip:port")))?;
    }
    text("admin_url", &hb.admin_url, 256)?;
    text("boot_id", hb.boot_id.as_deref().unwrap_or(""), 64)?;
    text("version", hb.version.as_deref().unwrap_or(""), 64)?;
    if !(hb.admin_url.starts_with("http://") || hb.admin_url.starts_with("https://")) {
        return Err(Field("admin_url", "must be an http:// or https:// URL".into()));
    }
    if !is_sha256_hex(&hb.cert_sha256) {
        return Err(Field("cert_sha256", "must be 64 lowercase hex digits".into()));
    }
    if let Some(ws) = &hb.websocket {
        for url in std::iter::once(&ws.url).chain(&ws.probe_url) {
            text("websocket", url, 256)?;
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(Field("websocket", "urls must be ws:// or wss:// URLs".into()));
            }
        }
    }
    if let Some(wt) = &hb.webtransport {
        for url in std::iter::once(&wt.url).chain(&wt.probe_url) {
            text("webtransport", url, 256)?;
            if !url.starts_with("https://") {
                return Err(Field("webtransport", "urls must be https:// URLs".into()));
            }
        }
        if wt.cert_sha256.len() > 4 {
            return Err(Field("webtransport", "at most 4 certificate hashes".into()));
        }
        if !wt.cert_sha256.iter().all(|h| is_sha256_hex(h)) {
            return Err(Field("webtransport", "certificate hashes must be 64 lowercase hex digits".into()));
        }
    }
    if hb.features.len() > 32 {
        return Err(Field("features", "at most 32".into()));
    }
    for f in &hb.features {
        text("features", f, 64)?;
    }
    if hb.modules.len() > 1024 {
        return Err(Field("modules", "at most 1024".into()));
    }
    for m in &hb.modules {
        outpost_proto::ids::check_name("module", &m.name).map_err(|e| Field("modules", e.to_string()))?;
        text("modules", &m.version, 128)?;
    }
    if !(hb.cpu.is_finite() && (0.0..=4096.0).contains(&hb.cpu)) {
        return Err(Field("cpu", format!("{} is not a core count", hb.cpu)));
    }
    if !(50..=600_000).contains(&hb.interval_ms) {
        return Err(Field("interval_ms", "must be between 50 and 600000".into()));
    }
    Ok(())
}

fn is_sha256_hex(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How far off the geo model is for this client, from the nodes it has measured: the median of
/// measured ÷ modelled RTT, clamped to 0.5..=5. Unmeasured nodes' geo estimates are scaled by it,
/// so that measurements win where they exist (a client whose paths run three times the model
/// does not get sent to an unmeasured node because the model is optimistic about it), while a
/// new node that is really nearer still gets its chance.
pub fn geo_calibration(measured: &[(usize, f64, Method)], row: &[f32]) -> f64 {
    let mut ratios: Vec<f64> = measured
        .iter()
        .filter_map(|&(slot, rtt, _)| {
            let g = *row.get(slot)? as f64;
            (g.is_finite() && g > 0.0).then_some(rtt / g)
        })
        .collect();
    if ratios.is_empty() {
        return 1.0;
    }
    ratios.sort_by(f64::total_cmp);
    let m = ratios.len() / 2;
    let median = if ratios.len() % 2 == 1 { ratios[m] } else { (ratios[m - 1] + ratios[m]) / 2.0 };
    median.clamp(0.5, 5.0)
}

fn route_node(n: &Heartbeat) -> RouteNode {
    RouteNode {
        id: n.id.clone(),
        quic_addr: n.quic_addr.clone(),
        cert_sha256: n.cert_sha256.clone(),
        region: n.region.clone(),
        probe_addr: n.probe_addr.clone(),
        websocket: n.websocket.clone(),
        webtransport: n.webtransport.clone(),
    }
}

impl Router {
    /// A router over `geo`, signing with `issuer`.
    pub fn new(geo: Box<dyn GeoLookup>, issuer: Issuer, settings: RouterSettings, max_nodes: usize) -> Router {
        let mut registry = Registry::new(max_nodes);
        registry.set_reserve_policy(settings.reserve);
        Router {
            registry: RwLock::new(registry),
            geo,
            prefixes: Table::new(settings.learn.max_prefixes),
            cells: Table::new(settings.learn.max_cells),
            rows: moka::sync::Cache::new(2048),
            issuer,
            settings,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// The ticket signer.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Where GeoIP puts `ip`.
    pub fn locate(&self, ip: IpAddr) -> Option<Arc<GeoInfo>> {
        self.geo.lookup(ip)
    }

    fn write_registry(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Read access to the registry (a poisoned lock still holds consistent data: every write is
    /// a whole-slot replace).
    pub fn read_registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a heartbeat.
    pub fn heartbeat(&self, hb: Heartbeat, now: Instant) -> Result<(), HeartbeatError> {
        check_heartbeat(&hb)?;
        self.write_registry().upsert(hb, now)?;
        Ok(())
    }

    /// Checks a batch of client measurements: 1 to `--probe-max-results` of them, each with a
    /// valid node id and a plausible RTT and loss.
    pub fn check_results(&self, results: &[ProbeResult]) -> Result<(), ProbeError> {
        let max = self.settings.probe_max_results;
        if results.is_empty() || results.len() > max {
            return Err(ProbeError::Count(max, results.len()));
        }
        for (i, r) in results.iter().enumerate() {
            outpost_proto::ids::check_name("node", &r.node).map_err(|e| ProbeError::Node(i, e.to_string()))?;
            check_sample(r.rtt_ms, r.loss).map_err(|e| ProbeError::Sample(i, e))?;
        }
        Ok(())
    }

    /// Learns from a client's measurements. The whole batch is checked before any of it counts.
    pub fn probes(&self, results: &[ProbeResult], client: IpAddr, now: Instant) -> Result<ProbeAck, ProbeError> {
        self.check_results(results)?;
        let client = crate::addr::canonical(client);
        let prefix = PrefixKey::of(client, self.settings.prefix_v4, self.settings.prefix_v6);
        let cell = self.locate(client).and_then(|g| g.pos).map(|p| CellKey::of(p, self.settings.cell_deg));
        let known: Vec<bool> = {
            let reg = self.read_registry();
            results.iter().map(|r| reg.slot_of(&r.node).is_some()).collect()
        };
        let mut ack = ProbeAck { accepted: 0, unknown_nodes: 0 };
        let limits = &self.settings.learn;
        for (r, known) in results.iter().zip(known) {
            if !known {
                ack.unknown_nodes += 1;
                continue;
            }
            let m = Measurement { source: client, rtt_ms: r.rtt_ms, loss: r.loss };
            self.prefixes.record(prefix, &r.node, m, now, limits);
            if let Some(cell) = cell {
                self.cells.record(cell, &r.node, m, now, limits);
            }
            ack.accepted += 1;
        }
        self.metrics.probe_reports.inc();
        self.metrics.probe_results.inc_by(ack.accepted as u64);
        Ok(ack)
    }

    fn geo_row(&self, reg: &Registry, pos: LatLon) -> Arc<GeoRow> {
        let key = (pos.lat.to_bits(), pos.lon.to_bits(), reg.layout_generation());
        self.rows.get_with(key, || {
            let mut row = GeoRow { rtt: vec![f32::NAN; reg.slot_count()], order: Vec::new(), unplaced: Vec::new() };
            for (slot, n) in reg.nodes() {
                match n.pos {
                    Some(p) => {
                        row.rtt[slot] = self.settings.geo_model.rtt_ms(pos, p) as f32;
                        row.order.push(slot as u32);
                    }
                    None => row.unplaced.push(slot as u32),
                }
            }
            row.order.sort_by(|&a, &b| row.rtt[a as usize].total_cmp(&row.rtt[b as usize]));
            Arc::new(row)
        })
    }

    /// Chooses a node for `req` and mints its ticket.
    pub fn route(&self, req: &RouteRequest<'_>, now: Instant, wall: SystemTime) -> Result<Route, NoNode> {
        let d = match self.decide(req.module, req.client, req.own, now) {
            Ok(d) => d,
            Err(e) => {
                self.metrics.routes_unavailable.inc();
                return Err(e);
            }
        };
        let by_method = match d.method {
            Method::MeasuredSelf => &self.metrics.routes_measured_self,
            Method::MeasuredPrefix => &self.metrics.routes_measured_prefix,
            Method::MeasuredCell => &self.metrics.routes_measured_cell,
            Method::Geo => &self.metrics.routes_geo,
            Method::None => &self.metrics.routes_none,
        };
        by_method.inc();
        let minted = self.issuer.mint(req.player, req.name, &d.node.id, req.module, wall);
        let pos = d.geo.as_ref().and_then(|g| g.pos);
        Ok(Route {
            node: d.node,
            alternates: d.alternates,
            ticket: minted.ticket,
            expires_at: minted.expires_at,
            player: req.player,
            estimate: RouteEstimate {
                rtt_ms: d.rtt_ms.map(|r| (r * 10.0).round() / 10.0),
                method: d.method.as_str().into(),
            },
            client: RouteClient {
                ip: d.client.to_string(),
                country: d.geo.as_ref().and_then(|g| g.country.clone()),
                city: d.geo.as_ref().and_then(|g| g.city.clone()),
                lat: pos.map(|p| p.lat),
                lon: pos.map(|p| p.lon),
            },
        })
    }

    /// What the router knows of one client's paths: its own measurements (`own`), then its
    /// prefix's, then its cell's, then geography scaled by [`geo_calibration`].
    fn view(&self, reg: &Registry, client: Option<IpAddr>, own: &[ProbeResult], now: Instant) -> ClientView {
        let geo = client.and_then(|c| self.locate(c));
        let pos = geo.as_ref().and_then(|g| g.pos);
        let limits = &self.settings.learn;
        let by_prefix = match client {
            Some(c) => self.prefixes.estimates(
                &PrefixKey::of(c, self.settings.prefix_v4, self.settings.prefix_v6),
                now,
                limits,
            ),
            None => Vec::new(),
        };
        let by_cell = match pos {
            Some(p) => self.cells.estimates(&CellKey::of(p, self.settings.cell_deg), now, limits),
            None => Vec::new(),
        };
        // Measured paths win over the model: per slot, the client's own, else the prefix's,
        // else the cell's.
        let mut measured: Vec<(usize, f64, Method)> = Vec::with_capacity(own.len() + by_prefix.len() + by_cell.len());
        let mut add = |id: &str, rtt: f64, method: Method| {
            if let Some(s) = reg.slot_of(id)
                && !measured.iter().any(|m| m.0 == s)
            {
                measured.push((s, rtt, method));
            }
        };
        for r in own {
            add(&r.node, r.rtt_ms + r.loss * limits.loss_penalty_ms, Method::MeasuredSelf);
        }
        for (id, rtt) in &by_prefix {
            add(id, *rtt, Method::MeasuredPrefix);
        }
        for (id, rtt) in &by_cell {
            add(id, *rtt, Method::MeasuredCell);
        }
        let row = pos.map(|p| self.geo_row(reg, p));
        let scale = row.as_ref().map_or(1.0, |row| geo_calibration(&measured, &row.rtt));
        ClientView { geo, measured, row, scale }
    }

    fn candidate<'r>(
        reg: &'r Registry,
        slot: usize,
        estimate: Option<(f64, Method)>,
        now: Instant,
    ) -> Option<Candidate<'r>> {
        let n = reg.get(slot)?;
        let health = n.health(now);
        Some(Candidate {
            index: slot,
            id: &n.hb.id,
            healthy: health != Health::Down,
            accepting: health == Health::Healthy,
            has_module: true,
            capacity: n.hb.capacity,
            players: reg.players(slot),
            estimate,
        })
    }

    /// Eligible nodes with `module` for the client of `view`, lowest estimate first, lazily:
    /// the measured ones merged into the geo order, then the nodes with no position. A caller
    /// that needs a few stops early instead of sorting the fleet.
    fn by_estimate<'r>(
        &self,
        reg: &'r Registry,
        view: &'r ClientView,
        module: &'r str,
        now: Instant,
    ) -> impl Iterator<Item = Candidate<'r>> + 'r {
        let with_module = reg.module_slots(module);
        let has_module = move |slot: usize| with_module.binary_search(&(slot as u32)).is_ok();
        let mut measured: Vec<Candidate<'r>> = view
            .measured
            .iter()
            .filter(|m| has_module(m.0))
            .filter_map(|m| Self::candidate(reg, m.0, Some((m.1, m.2)), now))
            .filter(Candidate::eligible)
            .collect();
        measured.sort_by(|a, b| {
            a.estimate.map(|e| e.0).unwrap_or(f64::INFINITY).total_cmp(&b.estimate.map_or(f64::INFINITY, |e| e.0))
        });
        let scale = view.scale;
        let is_measured = move |slot: usize| view.measured.iter().any(|m| m.0 == slot);
        let (order, unplaced): (
            Box<dyn Iterator<Item = Candidate<'r>> + 'r>,
            Box<dyn Iterator<Item = Candidate<'r>> + 'r>,
        ) = match &view.row {
            Some(row) => (
                Box::new(
                    row.order
                        .iter()
                        .map(|&s| s as usize)
                        .filter(move |&s| has_module(s) && !is_measured(s))
                        .filter_map(move |s| {
                            Self::candidate(reg, s, Some((row.rtt[s] as f64 * scale, Method::Geo)), now)
                        }),
                ),
                Box::new(
                    row.unplaced
                        .iter()
                        .map(|&s| s as usize)
                        .filter(move |&s| has_module(s) && !is_measured(s))
                        .filter_map(move |s| Self::candidate(reg, s, None, now)),
                ),
            ),
            None => (
                Box::new(std::iter::empty()),
                Box::new(
                    with_module
                        .iter()
                        .map(|&s| s as usize)
                        .filter(move |&s| !is_measured(s))
                        .filter_map(move |s| Self::candidate(reg, s, None, now)),
                ),
            ),
        };
        let mut geo = order.filter(Candidate::eligible).peekable();
        let mut measured = measured.into_iter().peekable();
        let merged = std::iter::from_fn(move || {
            let key = |c: &Candidate<'_>| c.estimate.map_or(f64::INFINITY, |e| e.0);
            match (measured.peek(), geo.peek()) {
                (Some(m), Some(g)) if key(g) < key(m) => geo.next(),
                (Some(_), _) => measured.next(),
                (None, _) => geo.next(),
            }
        });
        merged.chain(unplaced.filter(Candidate::eligible))
    }

    /// The nodes a client should measure for `module`: `--candidates` eligible nodes with the
    /// lowest estimates, at most `--candidates-per-region` from one region.
    pub fn candidates(&self, module: &str, client: IpAddr, now: Instant) -> Result<Vec<ProbeCandidate>, NoNode> {
        let client = crate::addr::canonical(client);
        let reg = self.read_registry();
        if reg.module_slots(module).is_empty() {
            return Err(NoNode::NoModule);
        }
        let view = self.view(&reg, Some(client), &[], now);
        let region = |c: &Candidate<'_>| reg.get(c.index).map_or("", |n| n.hb.region.as_str());
        let ordered = self.by_estimate(&reg, &view, module, now).map(|c| (region(&c), c));
        let picked =
            crate::select::pick_candidates(ordered, self.settings.candidates, self.settings.candidates_per_region);
        if picked.is_empty() {
            return Err(NoNode::NoneAvailable);
        }
        self.metrics.candidate_lists.inc();
        Ok(picked
            .iter()
            .filter_map(|c| {
                let n = reg.get(c.index)?;
                Some(ProbeCandidate {
                    node: n.hb.id.clone(),
                    region: n.hb.region.clone(),
                    probe_addr: n.hb.probe_addr.clone(),
                    websocket_probe: n.hb.websocket.as_ref().and_then(|w| w.probe_url.clone()),
                    webtransport: n.hb.webtransport.clone(),
                    rtt_ms: c.estimate.map(|e| round1(e.0)),
                    method: c.estimate.map_or(Method::None, |e| e.1).as_str().into(),
                })
            })
            .collect())
    }

    /// The placement decision alone (no ticket): the chosen node, the alternates and the
    /// estimate, from the client's own measurements `own` first. Counts the player against the
    /// chosen node until its next heartbeat.
    pub fn decide(&self, module: &str, client: IpAddr, own: &[ProbeResult], now: Instant) -> Result<Decision, NoNode> {
        let client = crate::addr::canonical(client);
        let reg = self.read_registry();
        if reg.module_slots(module).is_empty() {
            return Err(NoNode::NoModule);
        }
        let view = self.view(&reg, Some(client), own, now);
        // Lowest estimate first, so the best `1 + alternates` are the first ones; load breaks
        // exact ties among them (placement sorts them again with its full order).
        let keep = self.settings.alternates + 1;
        let mut pool: Vec<Candidate<'_>> = Vec::with_capacity(keep + 4);
        let mut last = f64::NEG_INFINITY;
        for c in self.by_estimate(&reg, &view, module, now) {
            let e = c.estimate.map_or(f64::INFINITY, |e| e.0);
            if pool.len() >= keep && e > last {
                break;
            }
            last = e;
            pool.push(c);
        }
        let top = if pool.is_empty() {
            // Every node with the module is down, not accepting or full.
            return Err(NoNode::NoneAvailable);
        } else {
            place(pool, self.settings.alternates)?
        };
        let best = top[0];
        reg.note_routed(best.index, now);
        let node = |c: &Candidate<'_>| reg.get(c.index).map(|n| route_node(&n.hb));
        let (rtt_ms, method) = best.estimate.map_or((None, Method::None), |(r, m)| (Some(r), m));
        Ok(Decision {
            node: node(&best).ok_or(NoNode::NoneAvailable)?,
            alternates: top[1..].iter().filter_map(node).collect(),
            rtt_ms,
            method,
            client,
            geo: view.geo,
        })
    }

    /// Places a whole match on one node (see [`crate::select::place_match`]): only nodes that
    /// advertise match tickets and have room for every player. Mints one v2 ticket per player.
    pub fn place_match(
        &self,
        req: &MatchRequest,
        clients: &[Option<IpAddr>],
        now: Instant,
        wall: SystemTime,
    ) -> Result<MatchPlacement, MatchError> {
        let d = self.decide_match(req, clients, now)?;
        let players = req.players.len() as u32;
        let max_players = req.max_players.unwrap_or(players);
        let room = req.room.clone().unwrap_or_else(|| format!("match-{}", hex_id()));
        let mut tickets = std::collections::BTreeMap::new();
        let mut estimates = std::collections::BTreeMap::new();
        let mut expires_at = String::new();
        for (p, e) in req.players.iter().zip(&d.estimates) {
            let minted = self.issuer.mint_match(p.id, &p.name, &d.node.id, &req.module, &room, max_players, wall);
            expires_at = minted.expires_at;
            tickets.insert(p.id.to_string(), minted.ticket);
            estimates.insert(
                p.id.to_string(),
                PlayerEstimate {
                    rtt_ms: e.map(|e| round1(e.0)),
                    method: e.map_or(Method::None, |e| e.1).as_str().into(),
                },
            );
        }
        self.metrics.matches_placed.inc();
        Ok(MatchPlacement { node: d.node, room, tickets, estimates, worst_rtt_ms: d.worst_rtt_ms, expires_at })
    }

    /// The match decision alone (no tickets): the node and each player's estimate to it.
    /// Counts the players against the node until its next heartbeat.
    pub fn decide_match(
        &self,
        req: &MatchRequest,
        clients: &[Option<IpAddr>],
        now: Instant,
    ) -> Result<MatchDecision, MatchError> {
        let reg = self.read_registry();
        let module = req.module.as_str();
        let with_module = reg.module_slots(module);
        if with_module.is_empty() {
            return Err(MatchError::NoNode(NoNode::NoModule.reason(module)));
        }
        let players = req.players.len() as u32;
        let nodes: Vec<MatchNode<'_>> = with_module
            .iter()
            .filter_map(|&s| {
                let c = Self::candidate(&reg, s as usize, None, now)?;
                let n = reg.get(s as usize)?;
                let fits = c.healthy && c.accepting && c.players.saturating_add(players) <= c.capacity;
                let supports = n.hb.features.iter().any(|f| f == FEATURE_MATCH_TICKETS);
                (fits && supports).then(|| MatchNode { index: c.index, id: c.id, load: c.load() })
            })
            .collect();
        if nodes.is_empty() {
            return Err(MatchError::NoNode(format!(
                "no healthy node with module {module:?} supports match tickets and has room for {players} players"
            )));
        }
        let views: Vec<ClientView> = req
            .players
            .iter()
            .zip(clients)
            .map(|(p, &ip)| self.view(&reg, ip.map(crate::addr::canonical), &p.results, now))
            .collect();
        let estimate = |p: usize, slot: usize| views[p].estimate(slot).map(|e| e.0);
        let (node, score) =
            crate::select::place_match(&nodes, views.len(), estimate, req.max_rtt_ms).map_err(|e| match e {
                NoMatch::NoNode => MatchError::NoNode(format!("no node can take a match of {players} for {module:?}")),
                NoMatch::TooFar { worst, best_per_player } => MatchError::TooFar {
                    worst,
                    best: req.players.iter().zip(best_per_player).map(|(p, b)| (p.id, b.map(round1))).collect(),
                },
            })?;
        for _ in 0..players {
            reg.note_routed(node.index, now);
        }
        let hb = &reg.get(node.index).ok_or(MatchError::NoNode("the chosen node was forgotten".into()))?.hb;
        Ok(MatchDecision {
            node: route_node(hb),
            estimates: views.iter().map(|v| v.estimate(node.index)).collect(),
            worst_rtt_ms: (score.unknown == 0).then_some(round1(score.worst)),
        })
    }
}

/// Where a match goes.
#[derive(Debug, Clone)]
pub struct MatchDecision {
    /// The node.
    pub node: RouteNode,
    /// Each player's estimate to it and how it was made, in player order.
    pub estimates: Vec<Option<(f64, Method)>>,
    /// The worst player's estimate, when every player has one.
    pub worst_rtt_ms: Option<f64>,
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn hex_id() -> String {
    rand::random::<[u8; 6]>().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a match was not placed.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchError {
    /// No node can take it (the reason says why).
    NoNode(String),
    /// The best node is over `max_rtt_ms` for some player.
    TooFar {
        /// The best node's worst estimate.
        worst: Option<f64>,
        /// Each player's best reachable estimate, by id.
        best: Vec<(u64, Option<f64>)>,
    },
}

/// One client's measured paths and geo row, for placing it.
struct ClientView {
    geo: Option<Arc<GeoInfo>>,
    measured: Vec<(usize, f64, Method)>,
    row: Option<Arc<GeoRow>>,
    scale: f64,
}

impl ClientView {
    /// This client's estimate to the node in `slot`.
    fn estimate(&self, slot: usize) -> Option<(f64, Method)> {
        if let Some(m) = self.measured.iter().find(|m| m.0 == slot) {
            return Some((m.1, m.2));
        }
        let g = *self.row.as_ref()?.rtt.get(slot)?;
        g.is_finite().then_some((g as f64 * self.scale, Method::Geo))
    }
}

/// A placement decision.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The chosen node.
    pub node: RouteNode,
    /// The next best.
    pub alternates: Vec<RouteNode>,
    /// The chosen node's estimate, ms.
    pub rtt_ms: Option<f64>,
    /// How it was made.
    pub method: Method,
    /// The client, canonical.
    pub client: IpAddr,
    /// What GeoIP said of it.
    pub geo: Option<Arc<GeoInfo>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_is_the_clamped_median_ratio() {
        let row = [10.0f32, 20.0, f32::NAN, 40.0];
        let m = |v: &[(usize, f64)]| v.iter().map(|&(s, r)| (s, r, Method::MeasuredPrefix)).collect::<Vec<_>>();
        assert_eq!(geo_calibration(&[], &row), 1.0);
        assert_eq!(geo_calibration(&m(&[(0, 20.0)]), &row), 2.0);
        assert_eq!(geo_calibration(&m(&[(0, 20.0), (1, 80.0), (3, 120.0)]), &row), 3.0);
        assert_eq!(geo_calibration(&m(&[(0, 20.0), (1, 80.0)]), &row), 3.0);
        assert_eq!(geo_calibration(&m(&[(2, 20.0)]), &row), 1.0, "no model for that node");
        assert_eq!(geo_calibration(&m(&[(0, 1000.0)]), &row), 5.0);
        assert_eq!(geo_calibration(&m(&[(0, 1.0)]), &row), 0.5);
    }

    #[test]
    fn heartbeats_are_checked_field_by_field() {
        let good = crate::registry::tests::hb("a", &["m"]);
        assert!(check_heartbeat(&good).is_ok());
        let cases: Vec<(&str, Heartbeat)> = vec![
            ("id", Heartbeat { id: "../x".into(), ..good.clone() }),
            ("region", Heartbeat { region: "r\n".into(), ..good.clone() }),
            ("lat", Heartbeat { lat: f64::NAN, ..good.clone() }),
            ("probe_addr", Heartbeat { probe_addr: "1.2.3.4".into(), ..good.clone() }),
            ("admin_url", Heartbeat { admin_url: "ftp://x".into(), ..good.clone() }),
            ("boot_id", Heartbeat { boot_id: Some("b".repeat(65)), ..good.clone() }),
            ("version", Heartbeat { version: Some("1.0\n".into()), ..good.clone() }),
            ("cert_sha256", Heartbeat { cert_sha256: "AB".repeat(32), ..good.clone() }),
            ("cpu", Heartbeat { cpu: f64::INFINITY, ..good.clone() }),
            ("interval_ms", Heartbeat { interval_ms: 10, ..good.clone() }),
            ("features", Heartbeat { features: vec!["x".into(); 33], ..good.clone() }),
            ("features", Heartbeat { features: vec!["a\u{0}".into()], ..good.clone() }),
        ];
        for (field, hb) in cases {
            let e = check_heartbeat(&hb).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
