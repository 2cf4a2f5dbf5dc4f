//! The router at fleet scale, as real processes: routes from the client's own measurements,
//! whole matches placed on one node (whose room takes only the match's players), several
//! routers sharing one ticket key and what they learn, and every bad input refused precisely.

use outpost_proto::api::{CandidateList, MatchPlacement, NodeList, Route};
use outpost_tests::mmdb::{self, Value};
use outpost_tests::{ADMIN_TOKEN, CLUSTER_TOKEN, Edge, Router, guest, heartbeat, wait_for};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// (network, city, country, lat, lon); one address of each is `x.x.x.7`.
const CITIES: &[(&str, &str, &str, f64, f64)] = &[
    ("81.2.69.0/24", "London", "GB", 51.51, -0.09),
    ("5.9.0.0/24", "Berlin", "DE", 52.52, 13.40),
    ("8.8.0.0/24", "New York", "US", 40.71, -74.01),
    ("41.58.0.0/24", "Lagos", "NG", 6.45, 3.39),
];

const LONDON: &str = "81.2.69.7";
const BERLIN: &str = "5.9.0.7";
const NEW_YORK: &str = "8.8.0.7";
const LAGOS: &str = "41.58.0.7";

fn geoip(dir: &Path) -> PathBuf {
    let rows: Vec<(&str, Value)> =
        CITIES.iter().map(|&(net, city, cc, lat, lon)| (net, mmdb::maxmind_city(city, cc, lat, lon))).collect();
    let path = dir.join("cities.mmdb");
    std::fs::write(&path, mmdb::build(6, "GeoLite2-City", &rows)).unwrap();
    path
}

fn post(r: &Router, path: &str, token: Option<&str>, body: &serde_json::Value) -> outpost_tests::Reply {
    r.request("POST", path, token, &[], &serde_json::to_vec(body).unwrap())
}

fn route(reply: outpost_tests::Reply) -> Route {
    assert_eq!(reply.status, 200, "{}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

#[test]
fn a_measured_route_beats_geography_and_teaches_the_clients_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let r = Router::start(&["--geoip", geoip(dir.path()).to_str().unwrap()]).unwrap();
    for (id, lat, lon) in [("london", 51.50, -0.12), ("singapore", 1.35, 103.82), ("newyork", 40.71, -74.0)] {
        assert_eq!(r.heartbeat(&heartbeat(id, lat, lon, &["arena"])).status, 200);
    }
    let get = |ip: &str| route(r.admin_get(&format!("/v1/route?module=arena&ip={ip}")));
    assert_eq!(get(LONDON).node.id, "london");
    assert_eq!(get(LONDON).estimate.method, "geo");

    // This London client's own measurements say Singapore is nearer in delay (a misleading
    // geography): the measured route follows them.
    let results = serde_json::json!({"results": [
        {"node": "london", "rtt_ms": 90.0, "loss": 0.0},
        {"node": "singapore", "rtt_ms": 12.0, "loss": 0.0},
        {"node": "nowhere", "rtt_ms": 1.0, "loss": 0.0},
    ]});
    let measured =
        route(post(&r, &format!("/v1/route?module=arena&ip={LONDON}&name=Ada"), Some(ADMIN_TOKEN), &results));
    assert_eq!(measured.node.id, "singapore", "{measured:?}");
    assert_eq!(measured.estimate.method, "measured-self");
    assert_eq!(measured.estimate.rtt_ms, Some(12.0));
    assert_eq!(measured.alternates[0].id, "london", "measured paths come before geography");

    // Learned as a probe report: another client of the same /24 now gets Singapore too.
    let neighbour = get("81.2.69.99");
    assert_eq!(neighbour.node.id, "singapore");
    assert_eq!(neighbour.estimate.method, "measured-prefix");
    assert_eq!(r.metric("outpost_router_routes_total{method=\"measured-self\"}"), 1.0);
    assert_eq!(r.metric("outpost_router_probe_results_total"), 2.0, "the unknown node is not learned");

    // Candidates for a New York client: the nearest by estimate, one per region label here.
    let list: CandidateList =
        serde_json::from_slice(&r.admin_get(&format!("/v1/candidates?module=arena&ip={NEW_YORK}")).body).unwrap();
    let ids: Vec<&str> = list.candidates.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(ids, ["newyork", "london", "singapore"]);
    assert!(list.candidates.iter().all(|c| c.method == "geo" && c.probe_addr == "127.0.0.1:7702"));
}

#[test]
fn bad_input_to_the_new_endpoints_gets_a_precise_status() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-player-auth-secret-of-32-bytes!";
    let peer_token = dir.path().join("peer.token");
    std::fs::write(&peer_token, "peer-token-0123456789abcdef").unwrap();
    let r = Router::start(&[
        "--geoip",
        geoip(dir.path()).to_str().unwrap(),
        "--player-auth-secret",
        secret,
        "--peer-token-file",
        peer_token.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(r.heartbeat(&heartbeat("london", 51.5, -0.12, &["arena"])).status, 200);
    let auth = |id: u64| outpost_proto::ids::player_auth(secret.as_bytes(), &id.to_string());
    let expect = |reply: outpost_tests::Reply, status: u16, code: &str, says: &str| {
        let text = reply.text();
        assert_eq!(reply.status, status, "{text}");
        assert!(text.contains(code) && text.contains(says), "want {code} / {says:?}: {text}");
    };

    // Candidates for a module nobody has, and without a module.
    expect(r.admin_get("/v1/candidates?module=golf"), 503, "no-module", "golf");
    expect(r.admin_get("/v1/candidates"), 400, "bad-request", "module is required");

    // Routes with bad results: negative, absurd, NaN (not JSON at all), too many, too big.
    let q = format!("/v1/route?module=arena&player=7&auth={}", auth(7));
    let body =
        |rtt: serde_json::Value| serde_json::json!({"results": [{"node": "london", "rtt_ms": rtt, "loss": 0.0}]});
    expect(post(&r, &q, None, &body((-5.0).into())), 400, "bad-request", "results[0]: rtt_ms");
    expect(post(&r, &q, None, &body(1e9.into())), 400, "bad-request", "results[0]: rtt_ms");
    let nan = r.request("POST", &q, None, &[], br#"{"results":[{"node":"london","rtt_ms":NaN}]}"#);
    expect(nan, 400, "bad-request", "malformed JSON");
    let many: Vec<serde_json::Value> =
        (0..65).map(|i| serde_json::json!({"node": format!("n{i}"), "rtt_ms": 10.0})).collect();
    expect(post(&r, &q, None, &serde_json::json!({"results": many})), 400, "bad-request", "1 to 64 results");
    expect(post(&r, &q, None, &serde_json::json!({"results": []})), 400, "bad-request", "1 to 64 results");
    // A body declared over --max-body-bytes is refused before it is read (so the request is
    // sent by hand: a client writing the whole body would meet a closed connection).
    let mut tcp = std::net::TcpStream::connect(&r.ready.http).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("POST {q} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{{", 65 << 10);
    std::io::Write::write_all(&mut tcp, head.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut tcp, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("too-large"), "{answer}");
    expect(post(&r, "/v1/route?module=arena&player=7&auth=00", None, &body(10.0.into())), 401, "unauthorized", "auth");

    // Matches: empty, oversized, duplicated, one bad auth, no token, a bad max_rtt_ms.
    let player = |id: u64| serde_json::json!({"id": id, "name": format!("p{id}"), "auth": auth(id), "ip": LONDON});
    let matched = |players: Vec<serde_json::Value>| serde_json::json!({"module": "arena", "players": players});
    expect(post(&r, "/v1/matches", Some(ADMIN_TOKEN), &matched(vec![])), 400, "bad-request", "1 to 100 players");
    let many = (0..101).map(player).collect();
    expect(post(&r, "/v1/matches", Some(ADMIN_TOKEN), &matched(many)), 400, "bad-request", "got 101");
    let dup = vec![player(1), player(2), player(1)];
    expect(post(&r, "/v1/matches", Some(ADMIN_TOKEN), &matched(dup)), 400, "bad-request", "players[2].id");
    let mut forged = player(3);
    forged["auth"] = auth(4).into();
    expect(
        post(&r, "/v1/matches", Some(ADMIN_TOKEN), &matched(vec![player(1), forged])),
        401,
        "unauthorized",
        "players[1].auth",
    );
    expect(post(&r, "/v1/matches", None, &matched(vec![player(1)])), 401, "unauthorized", "matchmaker");
    let mut far = matched(vec![player(1)]);
    far["max_rtt_ms"] = (-1.0).into();
    expect(post(&r, "/v1/matches", Some(ADMIN_TOKEN), &far), 400, "bad-request", "max_rtt_ms");
    // The only node lacks the match-tickets feature (a heartbeat from before it): no node.
    expect(post(&r, "/v1/matches", Some(ADMIN_TOKEN), &matched(vec![player(1)])), 503, "no-node-available", "match");

    // A peer forward with the wrong token, or the cluster token every edge holds.
    let fwd = serde_json::json!({"origin": "r9", "reports": [{"ip": LONDON, "results": [{"node": "london", "rtt_ms": 1.0}]}]});
    expect(post(&r, "/v1/peer/probes", Some("wrong-token-0123456789"), &fwd), 401, "unauthorized", "peer token");
    expect(post(&r, "/v1/peer/probes", Some(CLUSTER_TOKEN), &fwd), 401, "unauthorized", "peer token");
    let ok = post(&r, "/v1/peer/probes", Some("peer-token-0123456789abcdef"), &fwd);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(r.metric("outpost_router_peer_received_total"), 1.0);
}

fn nodes(r: &Router) -> NodeList {
    serde_json::from_slice(&r.admin_get("/v1/nodes").body).unwrap()
}

async fn join(node: &outpost_proto::api::RouteNode, ticket: &str) -> outpost_client::Client {
    let endpoint = outpost_client::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    outpost_client::Client::connect(
        &endpoint,
        node.quic_addr.parse().unwrap(),
        &node.cert_sha256,
        ticket,
        &outpost_client::ConnectOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("joining {}: {e}", node.id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_players_from_four_places_get_one_node_and_one_room_of_eight_that_nobody_else_enters() {
    let dir = tempfile::tempdir().unwrap();
    let mm_token = dir.path().join("mm.token");
    std::fs::write(&mm_token, "matchmaker-token-0123456789").unwrap();
    let router = Router::start(&[
        "--geoip",
        geoip(dir.path()).to_str().unwrap(),
        "--matchmaker-token-file",
        mm_token.to_str().unwrap(),
    ])
    .unwrap();
    let frankfurt = Edge::routed(&router, "frankfurt", "50.11", "8.68", &["--listen-websocket", "127.0.0.1:0"]);
    let _newyork = Edge::routed(&router, "newyork", "40.71", "-74.0", &[]);
    // A node nearer to the group's worst player than Frankfurt, whose heartbeat lacks the
    // match-tickets feature: it must never be chosen for a match.
    let mut old = heartbeat("paris-old", 48.85, 2.35, &["echo"]);
    old.interval_ms = 600_000;
    assert_eq!(router.heartbeat(&old).status, 200);
    wait_for("both edges with echo and the feature", Duration::from_secs(10), || {
        let list = nodes(&router);
        let ok = |id: &str| {
            list.nodes.iter().any(|n| {
                n.heartbeat.id == id
                    && n.health == "healthy"
                    && n.heartbeat.modules.iter().any(|m| m.name == "echo")
                    && n.heartbeat.features.iter().any(|f| f == "match-tickets")
            })
        };
        (ok("frankfurt") && ok("newyork")).then_some(())
    })
    .unwrap();

    let places = [LONDON, BERLIN, NEW_YORK, LAGOS];
    let players: Vec<serde_json::Value> = (0..8u64)
        .map(|i| serde_json::json!({"id": 100 + i, "name": format!("p{i}"), "ip": places[i as usize % 4]}))
        .collect();
    let body = serde_json::json!({"module": "echo", "players": players});
    let reply = post(&router, "/v1/matches", Some("matchmaker-token-0123456789"), &body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let placed: MatchPlacement = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(placed.node.id, "frankfurt", "lowest worst-player RTT among nodes that support matches: {placed:?}");
    assert_eq!(placed.tickets.len(), 8);
    let ws = placed.node.websocket.as_ref().map(|w| w.url.clone());
    assert_eq!(ws, frankfurt.ready.websocket, "the node's WebSocket URL travels in its heartbeat to the reply");
    let list: CandidateList =
        serde_json::from_slice(&router.admin_get(&format!("/v1/candidates?module=echo&ip={BERLIN}")).body).unwrap();
    let f = list.candidates.iter().find(|c| c.node == "frankfurt").unwrap();
    let probe = f.websocket_probe.as_deref().unwrap_or_default();
    assert!(probe.starts_with("ws://127.0.0.1:") && probe.ends_with("/v1/probe"), "browsers get a probe URL: {f:?}");
    assert!(placed.worst_rtt_ms.is_some_and(|w| w > 50.0), "New York to Frankfurt by geography: {placed:?}");
    assert_eq!(placed.estimates["102"].method, "geo");

    // All eight join, into the one room, whose cap is the group's size.
    let mut clients = Vec::new();
    for (id, ticket) in &placed.tickets {
        let c = join(&placed.node, ticket).await;
        assert_eq!(c.joined.room, placed.room, "player {id}");
        assert_eq!(c.joined.player_id.to_string(), *id);
        clients.push(c);
    }
    let info = frankfurt.admin("GET", &format!("/v1/rooms/{}", placed.room), b"").json();
    assert_eq!((info["max_players"].as_u64(), info["players"].as_u64()), (Some(8), Some(8)), "{info}");

    // A ninth player with an ordinary ticket for the module is placed elsewhere, never in the
    // match's room; after one leaves, still never there.
    drop(clients.pop());
    let ninth = route(router.admin_get(&format!("/v1/route?module=echo&ip={BERLIN}&player=9")));
    assert_eq!(ninth.node.id, "frankfurt");
    let c9 = join(&ninth.node, &ninth.ticket).await;
    assert_ne!(c9.joined.room, placed.room);

    // Within max_rtt_ms a match is placed; beyond it, 503 with each player's best reachable.
    let mut strict = body.clone();
    strict["max_rtt_ms"] = 20.0.into();
    let refused = post(&router, "/v1/matches", Some(ADMIN_TOKEN), &strict);
    assert_eq!(refused.status, 503, "{}", refused.text());
    let v = refused.json();
    assert_eq!(v["code"], "max-rtt-exceeded");
    let best_ny = v["best_rtt_ms"]["102"].as_f64().unwrap();
    assert!(best_ny < 20.0, "New York's best is its own node: {v}");
    assert!(v["best_rtt_ms"]["103"].as_f64().unwrap() > 20.0, "Lagos has no node within 20 ms: {v}");
    assert_eq!(router.metric("outpost_router_matches_placed_total"), 1.0);

    // A node asks where a room's players are best served (cluster token, players by address).
    let ask = serde_json::json!({"module": "echo", "players": [
        {"id": 1, "name": "a", "ip": NEW_YORK}, {"id": 2, "name": "b", "ip": NEW_YORK}]});
    let reply = post(&router, "/v1/matches", Some(CLUSTER_TOKEN), &ask);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["node"]["id"], "newyork");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routers_share_a_key_and_what_they_learn_and_losing_one_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ticket-key");
    let keygen = std::process::Command::new(outpost_tests::bin("outpost"))
        .args(["ticket", "keygen", "--json", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let pubkey =
        serde_json::from_slice::<serde_json::Value>(&keygen.stdout).unwrap()["pubkey"].as_str().unwrap().to_string();
    let peer_token = dir.path().join("peer.token");
    std::fs::write(&peer_token, "peer-token-0123456789abcdef").unwrap();
    let geo = geoip(dir.path());
    let common = |extra: &[&str]| {
        let mut a = vec!["--geoip", geo.to_str().unwrap(), "--ticket-key", key.to_str().unwrap()];
        a.extend(["--peer-token-file", peer_token.to_str().unwrap()]);
        a.extend(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let start = |extra: &[&str]| {
        let args = common(extra);
        Router::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap()
    };
    // Ports are picked at start, so router 1 (started last) forwards to 2 and 3, and to a peer
    // that is down, whose forwards are dropped and counted.
    let r2 = start(&[]);
    let r3 = start(&[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let peers = format!("{},{},http://{dead}", r2.url(), r3.url());
    let mut r1 = start(&["--id", "router-1", "--peer", &peers]);
    for r in [&r1, &r2, &r3] {
        assert_eq!(r.ready.pubkey, pubkey, "one fleet, one ticket key");
    }
    let routers = format!("{},{},{}", r1.url(), r2.url(), r3.url());
    let edge = |id: &str, lat: &str, lon: &str| {
        let pk = format!("--ticket-pubkey={pubkey}");
        let args = ["--id", id, "--router", &routers, "--lat", lat, "--lon", lon, "--heartbeat-interval", "200ms", &pk];
        let e = Edge::start(&args).unwrap();
        assert_eq!(e.upload("echo", &guest("echo")).status, 201);
        e
    };
    let _london = edge("london", "51.50", "-0.12");
    let _newyork = edge("newyork", "40.71", "-74.0");
    let both_healthy = |r: &Router| {
        let list = nodes(r);
        let ok = |id: &str| {
            list.nodes.iter().any(|n| n.heartbeat.id == id && n.health == "healthy" && !n.heartbeat.modules.is_empty())
        };
        (ok("london") && ok("newyork")).then_some(())
    };
    for r in [&r1, &r2, &r3] {
        wait_for("every router to see both edges", Duration::from_secs(10), || both_healthy(r)).unwrap();
    }

    // A London client's report to router 1 changes the route router 2 gives its prefix.
    let at = |r: &Router, ip: &str| route(r.admin_get(&format!("/v1/route?module=echo&ip={ip}")));
    assert_eq!(at(&r2, LONDON).node.id, "london");
    let report = serde_json::json!({"results": [{"node": "london", "rtt_ms": 150.0}, {"node": "newyork", "rtt_ms": 20.0}], "ip": LONDON});
    assert_eq!(post(&r1, "/v1/probes", Some(ADMIN_TOKEN), &report).status, 200);
    let learned = wait_for("router 2 to learn router 1's report", Duration::from_secs(10), || {
        let r = at(&r2, "81.2.69.200");
        (r.estimate.method == "measured-prefix").then_some(r)
    })
    .unwrap();
    assert_eq!(learned.node.id, "newyork");
    wait_for("the dead peer's forward to be dropped and counted", Duration::from_secs(10), || {
        (r1.metric("outpost_router_peer_dropped_total") >= 1.0).then_some(())
    })
    .unwrap();
    assert_eq!(r2.metric("outpost_router_peer_forwarded_total"), 0.0, "a forward is never forwarded again");
    assert!(r1.metric("outpost_router_peer_forwarded_total") >= 2.0);

    // Router 1 dies. The edges' heartbeats to 2 and 3 go on, each router's on its own loop (a
    // dead router delays none of the others), and a ticket from router 3 joins.
    r1.kill();
    let beats = |r: &Router| r.metric("outpost_router_heartbeats_total");
    let (b2, b3) = (beats(&r2), beats(&r3));
    wait_for("ten more heartbeats at routers 2 and 3", Duration::from_secs(10), || {
        (beats(&r2) >= b2 + 10.0 && beats(&r3) >= b3 + 10.0).then_some(())
    })
    .unwrap();
    for r in [&r2, &r3] {
        assert!(nodes(r).nodes.iter().all(|n| n.health == "healthy" && n.age_s < 0.6), "{:?}", nodes(r));
    }
    let from3 = route(r3.admin_get(&format!("/v1/route?module=echo&ip={BERLIN}&player=33")));
    let c = join(&from3.node, &from3.ticket).await;
    assert_eq!(c.joined.player_id, 33);
    // Clients fail over: the CLI given all three routers, the first dead, still routes.
    let out = std::process::Command::new(outpost_tests::bin("outpost"))
        .args(["route", "--module", "echo", "--json", "--router", &routers])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn browser_pages_of_configured_origins_may_call_the_public_routes_and_read_their_errors() {
    const GAME: &str = "https://game.example.com";
    // Without --cors-origin nothing changes: no page is allowed.
    let plain = Router::start(&["--client-burst", "2", "--client-rate", "0.01"]).unwrap();
    let pre = plain.request("OPTIONS", "/v1/route", None, &[("Origin", GAME)], b"");
    assert_eq!(pre.status, 403, "{}", pre.text());
    assert!(pre.text().contains("cors-origin") && pre.text().contains(GAME), "{}", pre.text());
    let get = plain.request("GET", "/v1/pubkey", None, &[("Origin", GAME)], b"");
    assert_eq!((get.status, get.header("access-control-allow-origin")), (200, None));

    let r = Router::start(&["--cors-origin", GAME, "--client-burst", "2", "--client-rate", "0.01"]).unwrap();
    assert_eq!(r.heartbeat(&heartbeat("london", 51.5, -0.12, &["arena"])).status, 200);
    // Preflight of every public route: answered without a token, and never spending the
    // client's rate limit (a burst of 2 here, and 40 preflights).
    for _ in 0..10 {
        for path in ["/v1/route", "/v1/probes", "/v1/pubkey", "/v1/candidates"] {
            let pre =
                r.request("OPTIONS", path, None, &[("Origin", GAME), ("Access-Control-Request-Method", "POST")], b"");
            assert_eq!(pre.status, 204, "{path}: {}", pre.text());
            assert_eq!(pre.header("access-control-allow-origin"), Some(GAME));
            assert!(pre.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")));
            assert!(pre.header("access-control-allow-headers").is_some_and(|h| h.contains("content-type")));
        }
    }
    let ok = r.request("GET", "/v1/route?module=arena", None, &[("Origin", GAME)], b"");
    assert_eq!(ok.status, 200, "the preflights spent nothing: {}", ok.text());
    assert_eq!(ok.header("access-control-allow-origin"), Some(GAME));
    assert_eq!(ok.header("vary"), Some("origin"));
    // Errors carry the headers too, so the page can read why: a 400, a 503, a 429.
    let bad = r.request("POST", "/v1/probes", None, &[("Origin", GAME)], b"{");
    assert_eq!((bad.status, bad.header("access-control-allow-origin")), (400, Some(GAME)));
    let limited = r.request("GET", "/v1/candidates?module=golf", None, &[("Origin", GAME)], b"");
    assert_eq!(
        (limited.status, limited.header("access-control-allow-origin")),
        (429, Some(GAME)),
        "{}",
        limited.text()
    );
    // Another origin, and an operator route, get no CORS headers; a preflight for them is 403
    // or not a route at all.
    let evil = r.request("GET", "/v1/pubkey", None, &[("Origin", "https://evil.example.net")], b"");
    assert_eq!((evil.status, evil.header("access-control-allow-origin")), (200, None));
    let pre = r.request("OPTIONS", "/v1/route", None, &[("Origin", "https://evil.example.net")], b"");
    assert_eq!(pre.status, 403);
    let nodes = r.request("GET", "/v1/nodes", Some(ADMIN_TOKEN), &[("Origin", GAME)], b"");
    assert_eq!((nodes.status, nodes.header("access-control-allow-origin")), (200, None));
    assert_eq!(r.request("OPTIONS", "/v1/nodes", None, &[("Origin", GAME)], b"").status, 405);
}
