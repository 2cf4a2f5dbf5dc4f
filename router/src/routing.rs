//! The router's decisions over its live state: take heartbeats, learn from probe reports, and
//! route a client. The HTTP layer only parses, authorizes and maps errors; everything a route
//! depends on is here, with the clock passed in, so it is tested without sockets.

use crate::addr::PrefixKey;
use crate::estimate::{GeoModel, LatLon};
use crate::geo::{CellKey, GeoInfo, GeoLookup};
use crate::learn::{LearnLimits, Measurement, SampleError, Table, check_sample};
use crate::registry::{Health, Registry, RegistryError};
use crate::select::{Candidate, Method, NoNode, place};
use crate::telemetry::Metrics;
use crate::ticket::Issuer;
use outpost_proto::api::{Heartbeat, ProbeAck, ProbeResult, Route, RouteClient, RouteEstimate, RouteNode};
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
    pub metrics: Metrics,
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
    if hb.cert_sha256.len() != 64 || !hb.cert_sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(Field("cert_sha256", "must be 64 lowercase hex digits".into()));
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
            metrics: Metrics::default(),
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

    /// Learns from a client's measurements. The whole batch is checked before any of it counts.
    pub fn probes(&self, results: &[ProbeResult], client: IpAddr, now: Instant) -> Result<ProbeAck, ProbeError> {
        let max = self.settings.probe_max_results;
        if results.is_empty() || results.len() > max {
            return Err(ProbeError::Count(max, results.len()));
        }
        for (i, r) in results.iter().enumerate() {
            outpost_proto::ids::check_name("node", &r.node).map_err(|e| ProbeError::Node(i, e.to_string()))?;
            check_sample(r.rtt_ms, r.loss).map_err(|e| ProbeError::Sample(i, e))?;
        }
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
        let d = match self.decide(req.module, req.client, now) {
            Ok(d) => d,
            Err(e) => {
                self.metrics.routes_unavailable.inc();
                return Err(e);
            }
        };
        let by_method = match d.method {
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

    /// The placement decision alone (no ticket): the chosen node, the alternates and the
    /// estimate. Counts the player against the chosen node until its next heartbeat.
    pub fn decide(&self, module: &str, client: IpAddr, now: Instant) -> Result<Decision, NoNode> {
        let client = crate::addr::canonical(client);
        let geo = self.locate(client);
        let pos = geo.as_ref().and_then(|g| g.pos);
        let limits = &self.settings.learn;
        let prefix = PrefixKey::of(client, self.settings.prefix_v4, self.settings.prefix_v6);
        let by_prefix = self.prefixes.estimates(&prefix, now, limits);
        let by_cell = match pos {
            Some(p) => self.cells.estimates(&CellKey::of(p, self.settings.cell_deg), now, limits),
            None => Vec::new(),
        };
        let reg = self.read_registry();
        // Measured paths win over the model: per slot, the prefix estimate, else the cell's.
        let mut measured: Vec<(usize, f64, Method)> = Vec::with_capacity(by_prefix.len() + by_cell.len());
        for (id, rtt) in &by_prefix {
            if let Some(s) = reg.slot_of(id) {
                measured.push((s, *rtt, Method::MeasuredPrefix));
            }
        }
        for (id, rtt) in &by_cell {
            if let Some(s) = reg.slot_of(id)
                && !measured.iter().any(|m| m.0 == s)
            {
                measured.push((s, *rtt, Method::MeasuredCell));
            }
        }
        let with_module = reg.module_slots(module);
        if with_module.is_empty() {
            return Err(NoNode::NoModule);
        }
        let has_module = |slot: usize| with_module.binary_search(&(slot as u32)).is_ok();
        let is_measured = |slot: usize| measured.iter().any(|m| m.0 == slot);
        let row = pos.map(|p| self.geo_row(&reg, p));
        let scale = row.as_ref().map_or(1.0, |row| geo_calibration(&measured, &row.rtt));
        let candidate = |slot: usize, estimate: Option<(f64, Method)>| {
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
        };
        // Measured nodes always compete; of the rest, walk by geo RTT and stop once enough
        // eligible nodes are in hand and the next one is strictly farther (it cannot place).
        let keep = self.settings.alternates + 1;
        let mut pool: Vec<Candidate<'_>> =
            measured.iter().filter(|m| has_module(m.0)).filter_map(|m| candidate(m.0, Some((m.1, m.2)))).collect();
        match &row {
            Some(row) => {
                let (mut eligible, mut last) = (0, f32::NEG_INFINITY);
                for &slot in &row.order {
                    let slot = slot as usize;
                    let g = row.rtt[slot];
                    if eligible >= keep && g > last {
                        break;
                    }
                    if !has_module(slot) || is_measured(slot) {
                        continue;
                    }
                    let Some(c) = candidate(slot, Some((g as f64 * scale, Method::Geo))) else { continue };
                    if c.eligible() {
                        eligible += 1;
                        last = g;
                    }
                    pool.push(c);
                }
                if eligible < keep {
                    let rest = row.unplaced.iter().map(|&s| s as usize);
                    pool.extend(rest.filter(|&s| has_module(s) && !is_measured(s)).filter_map(|s| candidate(s, None)));
                }
            }
            None => {
                let rest = reg.with_module(module).filter(|&s| !is_measured(s));
                pool.extend(rest.filter_map(|s| candidate(s, None)).collect::<Vec<_>>());
            }
        }
        let top = place(pool, self.settings.alternates)?;
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
            geo,
        })
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
        ];
        for (field, hb) in cases {
            let e = check_heartbeat(&hb).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
