//! The router's fast decision (geo-ordered walk that stops early) picks exactly what a full scan
//! of every node picks, over random fleets with down, full, draining and module-less nodes, and
//! with measurements for some of them.

use outpost_proto::api::{Heartbeat, ProbeResult};
use outpost_router::estimate::GeoModel;
use outpost_router::learn::LearnLimits;
use outpost_router::registry::Health;
use outpost_router::routing::{Router, RouterSettings, geo_calibration};
use outpost_router::select::{Candidate, Method, place};
use outpost_router::ticket::Issuer;
use outpost_tests::mmdb;
use proptest::prelude::*;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct NodeSpec {
    lat: f64,
    lon: f64,
    module: bool,
    accepting: bool,
    down: bool,
    capacity: u32,
    players: u32,
    measured: Option<f64>,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (-60.0..70.0f64, -180.0..180.0f64, prop::bool::weighted(0.8), prop::bool::weighted(0.9), prop::bool::weighted(0.1))
        .prop_flat_map(|(lat, lon, module, accepting, down)| {
            (Just((lat, lon, module, accepting, down)), 1..5u32, 0..6u32, prop::option::weighted(0.15, 5.0..400.0f64))
        })
        .prop_map(|((lat, lon, module, accepting, down), capacity, players, measured)| NodeSpec {
            lat: (lat * 2.0).round() / 2.0,
            lon: (lon * 2.0).round() / 2.0,
            module,
            accepting,
            down,
            capacity,
            players,
            measured,
        })
}

fn router(dir: &std::path::Path, client: (f64, f64)) -> Router {
    let path = dir.join("c.mmdb");
    let db = mmdb::build(6, "GeoLite2-City", &[("198.51.100.0/24", mmdb::maxmind_city("C", "XX", client.0, client.1))]);
    std::fs::write(&path, db).unwrap();
    let geo = outpost_router::geo::MmdbGeo::open(&[path], 100).unwrap();
    let settings = RouterSettings {
        alternates: 2,
        prefix_v4: 24,
        prefix_v6: 48,
        cell_deg: 1.0,
        learn: LearnLimits::default(),
        geo_model: GeoModel::default(),
        probe_max_results: 1024,
        reserve: Default::default(),
        candidates: 5,
        candidates_per_region: 2,
    };
    Router::new(
        Box::new(geo),
        Issuer::new(outpost_proto::keys::generate_signing_key(), Duration::from_secs(60)),
        settings,
        10_000,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn fast_decision_equals_a_full_scan(
        nodes in prop::collection::vec(node_spec(), 1..120),
        client in (-60.0..70.0f64, -180.0..180.0f64),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let r = router(dir.path(), client);
        let now = Instant::now() + Duration::from_secs(10);
        for (i, n) in nodes.iter().enumerate() {
            let modules: &[&str] = if n.module { &["m"] } else { &[] };
            let hb = Heartbeat {
                capacity: n.capacity,
                players: n.players,
                interval_ms: 1000,
                accepting: n.accepting,
                boot_id: None,
                version: None,
                redeemed: None,
                features: Vec::new(),
                websocket: None,
                ..outpost_tests::heartbeat(&format!("n{i:03}"), n.lat, n.lon, modules)
            };
            let seen = if n.down { now - Duration::from_secs(5) } else { now };
            r.heartbeat(hb, seen).unwrap();
        }
        let results: Vec<ProbeResult> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some(ProbeResult { node: format!("n{i:03}"), rtt_ms: n.measured?, loss: 0.0 }))
            .collect();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        if !results.is_empty() {
            r.probes(&results, ip, now).unwrap();
        }

        // The full scan: every node, its estimate made the same way, one `place` over all.
        let model = GeoModel::default();
        let client_pos = outpost_router::estimate::LatLon::new(client.0, client.1).unwrap();
        let want = {
            let reg = r.read_registry();
            let measured: Vec<(usize, f64, Method)> = results
                .iter()
                .map(|p| (reg.slot_of(&p.node).unwrap(), p.rtt_ms, Method::MeasuredPrefix))
                .collect();
            let row: Vec<f32> = (0..reg.slot_count())
                .map(|s| reg.get(s).and_then(|n| n.pos).map_or(f32::NAN, |p| model.rtt_ms(client_pos, p) as f32))
                .collect();
            let scale = geo_calibration(&measured, &row);
            let all = reg.nodes().map(|(slot, n)| {
                let health = n.health(now);
                let estimate = match measured.iter().find(|m| m.0 == slot) {
                    Some(m) => Some((m.1, m.2)),
                    None => Some((row[slot] as f64 * scale, Method::Geo)),
                };
                Candidate {
                    index: slot,
                    id: &n.hb.id,
                    healthy: health != Health::Down,
                    accepting: health == Health::Healthy,
                    has_module: n.hb.modules.iter().any(|m| m.name == "m"),
                    capacity: n.hb.capacity,
                    players: reg.players(slot),
                    estimate,
                }
            });
            place(all.collect::<Vec<_>>(), 2).map(|top| top.iter().map(|c| c.id.to_string()).collect::<Vec<_>>())
        };
        let got = r.decide("m", ip, &[], now).map(|d| {
            std::iter::once(d.node.id).chain(d.alternates.into_iter().map(|a| a.id)).collect::<Vec<_>>()
        });
        prop_assert_eq!(got, want);
    }
}
