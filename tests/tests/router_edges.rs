//! Real edge-nodes heartbeat into a real region router; a routed player joins the chosen node
//! over real QUIC with the router's ticket; a killed node is called down and avoided.

use outpost_proto::api::{NodeList, Route};
use outpost_tests::mmdb;
use outpost_tests::{Edge, Router, wait_for};
use std::time::Duration;

fn edge(router: &Router, id: &str, lat: &str, lon: &str) -> Edge {
    Edge::routed(router, id, lat, lon, &[])
}

fn nodes(r: &Router) -> NodeList {
    serde_json::from_slice(&r.admin_get("/v1/nodes").body).unwrap()
}

fn route_berlin(r: &Router) -> Option<Route> {
    let reply = r.admin_get("/v1/route?module=echo&ip=5.9.0.7&player=5&name=Bo");
    (reply.status == 200).then(|| serde_json::from_slice(&reply.body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_register_players_join_the_routed_node_and_a_killed_node_is_avoided() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    std::fs::write(
        &db,
        mmdb::build(6, "GeoLite2-City", &[("5.9.0.0/24", mmdb::maxmind_city("Berlin", "DE", 52.52, 13.4))]),
    )
    .unwrap();
    let router = Router::start(&["--geoip", db.to_str().unwrap()]).unwrap();
    let london = edge(&router, "london", "51.5", "-0.12");
    let frankfurt = edge(&router, "frankfurt", "50.11", "8.68");

    // Both report in, healthy, with the module they were given.
    wait_for("both nodes healthy with echo", Duration::from_secs(10), || {
        let list = nodes(&router);
        let ok = |id: &str| {
            list.nodes.iter().any(|n| {
                n.heartbeat.id == id && n.health == "healthy" && n.heartbeat.modules.iter().any(|m| m.name == "echo")
            })
        };
        (ok("london") && ok("frankfurt")).then_some(())
    })
    .unwrap();
    let listed = nodes(&router);
    let f = listed.nodes.iter().find(|n| n.heartbeat.id == "frankfurt").unwrap();
    assert_eq!(f.heartbeat.quic_addr, frankfurt.ready.quic);
    assert_eq!(f.heartbeat.cert_sha256, frankfurt.ready.cert_sha256);
    assert_eq!(f.heartbeat.interval_ms, 200);
    assert!(f.age_s < 5.0);

    // Berlin goes to Frankfurt, and the routed ticket gets a player in there.
    let route = route_berlin(&router).expect("a route");
    assert_eq!(route.node.id, "frankfurt");
    assert_eq!(route.alternates[0].id, "london");
    let f = nodes(&router).nodes.into_iter().find(|n| n.heartbeat.id == "frankfurt").unwrap();
    assert_eq!(f.reserved, 1, "the ticket holds a place until it is redeemed");
    let endpoint = outpost_client::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = outpost_client::Client::connect(
        &endpoint,
        route.node.quic_addr.parse().unwrap(),
        &route.node.cert_sha256,
        &route.ticket,
        &outpost_client::ConnectOptions::default(),
    )
    .await
    .expect("the routed ticket is accepted by the routed node");
    assert_eq!(client.joined.player_id, 5);
    // The node's next heartbeat counts the player and the redeemed ticket, whose place the
    // router then releases.
    wait_for("frankfurt to report its player", Duration::from_secs(10), || {
        nodes(&router)
            .nodes
            .iter()
            .find(|n| {
                n.heartbeat.id == "frankfurt"
                    && n.heartbeat.players == 1
                    && n.heartbeat.redeemed == Some(1)
                    && n.reserved == 0
            })
            .map(|_| ())
    })
    .unwrap();
    let f = nodes(&router).nodes.into_iter().find(|n| n.heartbeat.id == "frankfurt").unwrap();
    assert!(f.heartbeat.boot_id.as_ref().is_some_and(|b| b.len() == 16), "{:?}", f.heartbeat.boot_id);
    assert_eq!(f.heartbeat.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    drop(client);

    // Kill Frankfurt: three missed 200 ms intervals later it is down and Berlin goes to London.
    drop(frankfurt);
    wait_for("frankfurt to be down", Duration::from_secs(10), || {
        nodes(&router).nodes.iter().find(|n| n.heartbeat.id == "frankfurt" && n.health == "down").map(|_| ())
    })
    .unwrap();
    for _ in 0..5 {
        let route = route_berlin(&router).expect("a route");
        assert_eq!(route.node.id, "london");
        assert!(route.alternates.is_empty());
    }
    assert!(london.metric("outpost_heartbeats_sent_total") >= 1.0);
    assert_eq!(router.metric("outpost_router_nodes{health=\"down\"}"), 1.0);
}

#[test]
fn a_wrong_cluster_token_is_refused_and_counted_on_the_edge() {
    let router = Router::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("cluster-token");
    std::fs::write(&token, "not-the-cluster-token").unwrap();
    let url = router.url();
    let e = Edge::start(&[
        "--router",
        &url,
        "--lat",
        "1",
        "--lon",
        "1",
        "--heartbeat-interval",
        "100ms",
        "--cluster-token-file",
        token.to_str().unwrap(),
    ])
    .unwrap();
    wait_for("a failed heartbeat", Duration::from_secs(10), || {
        (e.metric("outpost_heartbeat_failures_total") >= 1.0).then_some(())
    })
    .unwrap();
    assert_eq!(e.metric("outpost_heartbeats_sent_total"), 0.0);
    assert!(e.log_text().contains("401"), "{}", e.log_text());
    assert!(nodes(&router).nodes.is_empty());
    assert!(router.metric("outpost_router_heartbeats_rejected_total") >= 1.0);
}

#[test]
fn a_draining_edge_tells_the_router_at_once() {
    let router = Router::start(&[]).unwrap();
    let url = router.url();
    // A 5 s interval: "down" would take 15 s, so seeing not-accepting first proves the farewell.
    let mut e =
        Edge::start(&["--id", "drainer", "--router", &url, "--lat", "1", "--lon", "1", "--heartbeat-interval", "5s"])
            .unwrap();
    wait_for("the first heartbeat", Duration::from_secs(10), || {
        nodes(&router).nodes.iter().find(|n| n.heartbeat.id == "drainer" && n.health == "healthy").map(|_| ())
    })
    .unwrap();
    e.terminate(Duration::from_secs(10)).unwrap();
    let list = nodes(&router);
    let n = list.nodes.iter().find(|n| n.heartbeat.id == "drainer").unwrap();
    assert_eq!(n.health, "not-accepting", "{n:?}");
    assert!(!n.heartbeat.accepting);
    assert!(e.log_text().contains("told the router this node is draining"));
}
