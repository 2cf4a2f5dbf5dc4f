//! In-process placement with 1,000 registered nodes: the router's decision (module bitset,
//! per-position geo rows, single-pass top-k) against a naive scan that computes every node's
//! great-circle estimate, filters and sorts, in the same run.
//!
//! Also times minting one ticket (the Ed25519 signature every route pays), the candidate list a
//! probing client asks for, a route from the client's own measurements, and match placement for
//! 8 and 100 players.
//!
//! `cargo bench -p outpost-router --bench placement`

use criterion::{Criterion, criterion_group, criterion_main};
use outpost_proto::api::{Heartbeat, MatchPlayer, MatchRequest, ProbeResult};
use outpost_router::estimate::{GeoModel, LatLon};
use outpost_router::learn::LearnLimits;
use outpost_router::registry::Health;
use outpost_router::routing::{Router, RouterSettings};
use outpost_router::ticket::Issuer;
use outpost_tests::mmdb;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const NODES: usize = 1000;
const CITIES: u32 = 64;

/// A deterministic spread of points over the inhabited latitudes.
fn point(i: u32) -> (f64, f64) {
    let x = (i as f64 * 0.618_033_988_75).fract();
    let y = (i as f64 * 0.414_213_562_37).fract();
    (-50.0 + 110.0 * y, -180.0 + 360.0 * x)
}

fn city_ip(c: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(20, (c / 256) as u8, (c % 256) as u8, 9))
}

fn setup() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let nets: Vec<String> = (0..CITIES).map(|c| format!("20.{}.{}.0/24", c / 256, c % 256)).collect();
    let rows: Vec<(&str, mmdb::Value)> = (0..CITIES)
        .map(|c| {
            let (lat, lon) = point(10_000 + c);
            (nets[c as usize].as_str(), mmdb::maxmind_city(&format!("city{c}"), "XX", lat, lon))
        })
        .collect();
    let path = dir.path().join("cities.mmdb");
    std::fs::write(&path, mmdb::build(6, "GeoLite2-City", &rows)).unwrap();
    let geo = outpost_router::geo::MmdbGeo::open(&[path], 100_000).unwrap();
    let settings = RouterSettings {
        alternates: 2,
        prefix_v4: 24,
        prefix_v6: 48,
        cell_deg: 1.0,
        learn: LearnLimits::default(),
        geo_model: GeoModel::default(),
        probe_max_results: 64,
        reserve: Default::default(),
        candidates: 5,
        candidates_per_region: 2,
    };
    let issuer = Issuer::new(outpost_proto::keys::generate_signing_key(), Duration::from_secs(60));
    let router = Router::new(Box::new(geo), issuer, settings, 10_000);
    let now = Instant::now();
    for i in 0..NODES as u32 {
        let (lat, lon) = point(i);
        let modules: &[&str] = if i % 10 == 0 { &[] } else { &["arena"] };
        let hb = Heartbeat {
            capacity: u32::MAX,
            players: i % 50,
            interval_ms: 600_000,
            accepting: i % 37 != 0,
            boot_id: None,
            version: None,
            redeemed: None,
            features: vec![outpost_proto::api::FEATURE_MATCH_TICKETS.into()],
            websocket: None,
            ..outpost_tests::heartbeat(&format!("node-{i}"), lat, lon, modules)
        };
        router.heartbeat(hb, now).unwrap();
    }
    (router, dir)
}

/// What a router without indexes or caches would do: look at every node, compute its
/// great-circle estimate, keep the eligible ones, sort them all.
fn naive(router: &Router, ip: IpAddr, now: Instant) -> Option<String> {
    let pos: Option<LatLon> = router.locate(ip).and_then(|g| g.pos);
    let model = GeoModel::default();
    let reg = router.read_registry();
    let mut all: Vec<(f64, f64, &str)> = reg
        .nodes()
        .filter(|(_, n)| n.hb.modules.iter().any(|m| m.name == "arena"))
        .filter(|(_, n)| n.health(now) == Health::Healthy && n.hb.players < n.hb.capacity)
        .map(|(_, n)| {
            let rtt = match (pos, n.pos) {
                (Some(a), Some(b)) => model.rtt_ms(a, b),
                _ => f64::INFINITY,
            };
            (rtt, n.hb.players as f64 / n.hb.capacity as f64, n.hb.id.as_str())
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(b.2)));
    all.first().map(|c| c.2.to_string())
}

fn bench(c: &mut Criterion) {
    let (router, _dir) = setup();
    let now = Instant::now();
    // Both agree before either is timed.
    for city in 0..CITIES {
        let fast = router.decide("arena", city_ip(city), &[], now).unwrap().node.id;
        assert_eq!(Some(fast), naive(&router, city_ip(city), now), "city {city}");
    }
    let mut g = c.benchmark_group("placement_1000_nodes");
    let mut i = 0u32;
    g.bench_function("router_decide", |b| {
        b.iter(|| {
            i = (i + 1) % CITIES;
            black_box(router.decide("arena", city_ip(i), &[], now).unwrap());
        })
    });
    g.bench_function("naive_scan_sort", |b| {
        b.iter(|| {
            i = (i + 1) % CITIES;
            black_box(naive(&router, city_ip(i), now));
        })
    });
    // What a probing client asks first, and the route it then asks for with five results.
    g.bench_function("candidates", |b| {
        b.iter(|| {
            i = (i + 1) % CITIES;
            black_box(router.candidates("arena", city_ip(i), now).unwrap());
        })
    });
    let own: Vec<ProbeResult> = (1..=5u32)
        .map(|k| ProbeResult { node: format!("node-{}", k * 7), rtt_ms: 20.0 + k as f64, loss: 0.0 })
        .collect();
    g.bench_function("measured_route_decide", |b| {
        b.iter(|| {
            i = (i + 1) % CITIES;
            black_box(router.decide("arena", city_ip(i), &own, now).unwrap());
        })
    });
    for players in [8usize, 100] {
        let req = MatchRequest {
            module: "arena".into(),
            players: (0..players as u64)
                .map(|p| MatchPlayer {
                    id: p,
                    name: format!("p{p}"),
                    auth: None,
                    ip: Some(city_ip(p as u32 % CITIES).to_string()),
                    results: Vec::new(),
                })
                .collect(),
            max_rtt_ms: None,
            room: Some("bench".into()),
            max_players: None,
        };
        let clients: Vec<Option<IpAddr>> =
            req.players.iter().map(|p| p.ip.as_ref().map(|ip| ip.parse().unwrap())).collect();
        let wall = std::time::SystemTime::now();
        g.bench_function(format!("match_{players}_players_decide"), |b| {
            b.iter(|| black_box(router.decide_match(&req, &clients, now).unwrap()));
        });
        g.bench_function(format!("match_{players}_players_with_tickets"), |b| {
            b.iter(|| black_box(router.place_match(&req, &clients, now, wall).unwrap()));
        });
    }
    g.finish();

    // What every route pays besides placement: one Ed25519 ticket signature.
    let issuer = Issuer::new(outpost_proto::keys::generate_signing_key(), Duration::from_secs(60));
    let wall = std::time::SystemTime::now();
    c.bench_function("ticket_mint_ed25519", |b| {
        b.iter(|| black_box(issuer.mint(42, "bench", "node-1", "arena", wall)));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
