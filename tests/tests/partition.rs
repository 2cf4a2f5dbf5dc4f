//! Partitions, cut with the tests' own relays (`outpost_tests::relay`): the edge's link to its
//! core cut for a while (the outbox grows, the node says so, and everything arrives exactly once
//! when the link heals); the edge's heartbeats to the router cut (down after three intervals,
//! back with the next heartbeat); and an edge that reaches its router but not its core (it tells
//! the router it is not accepting once its outbox passes the soft limit, and accepting again when
//! the core is back).

use outpost_proto::api::NodeList;
use outpost_tests::{Core, Edge, Router, guest, held, relay, signal_raw, wait_for};
use std::time::Duration;

fn commit(edge: &Edge, call: usize) {
    let reply = signal_raw(&edge.ready.admin, "ledger", &format!("commit-bulk c{call}/ 20 100"));
    assert_eq!(reply, Some((200, "committed 20".to_string())), "call {call}");
}

fn edge_via(core: &Core, link: &relay::Cut, extra: &[&str]) -> Edge {
    let addr = link.addr.to_string();
    let mut args = vec!["--core", &addr, "--core-cert-sha256", &core.ready.cert_sha256];
    args.extend_from_slice(extra);
    let e = Edge::start(&args).unwrap();
    assert_eq!(e.upload("echo", &guest("echo")).status, 201);
    e.create_room("echo", "ledger");
    e
}

#[test]
fn a_cut_core_link_grows_the_outbox_and_heals_with_everything_delivered_once() {
    let core = Core::start(&[]).unwrap();
    let link = relay::udp(core.ready.quic.parse().unwrap());
    let edge = edge_via(&core, &link, &[]);
    commit(&edge, 0);
    wait_for("call 0 at the core", Duration::from_secs(15), || (held(&core, 0).len() == 20).then_some(())).unwrap();
    link.cut();
    for call in 1..=30 {
        commit(&edge, call);
    }
    // The node keeps the commits and says the core is not acking them.
    wait_for("a dead link counted", Duration::from_secs(30), || {
        (edge.metric("outpost_core_link_failures_total") >= 1.0).then_some(())
    })
    .unwrap();
    assert_eq!(edge.metric("outpost_outbox_durable_seq"), 620.0);
    assert_eq!(edge.metric("outpost_outbox_acked_seq"), 20.0);
    assert!(edge.metric("outpost_outbox_bytes") > 0.0);
    link.heal();
    wait_for("the outbox drained", Duration::from_secs(60), || {
        (edge.metric("outpost_outbox_acked_seq") == 620.0).then_some(())
    })
    .unwrap();
    for call in 0..=30 {
        assert_eq!(held(&core, call).len(), 20, "call {call}");
    }
    assert_eq!(core.metric("outpost_core_updates_applied_total"), 620.0, "exactly once");
}

/// The flags of an edge `id` heartbeating every 200 ms to the router at `url`.
fn heartbeating(id: &str, url: &str, router: &Router) -> Vec<String> {
    let pubkey = format!("--ticket-pubkey={}", router.ready.pubkey);
    ["--id", id, "--router", url, "--lat", "1", "--lon", "1", "--heartbeat-interval", "200ms", &pubkey]
        .map(String::from)
        .to_vec()
}

fn health(router: &Router, id: &str) -> Option<String> {
    let list: NodeList = serde_json::from_slice(&router.admin_get("/v1/nodes").body).ok()?;
    list.nodes.into_iter().find(|n| n.heartbeat.id == id).map(|n| n.health)
}

#[test]
fn a_node_cut_from_the_router_is_down_after_three_intervals_and_back_with_its_next_heartbeat() {
    let router = Router::start(&[]).unwrap();
    let link = relay::tcp(router.ready.http.parse().unwrap());
    let url = format!("http://{}", link.addr);
    let args = heartbeating("cut", &url, &router);
    let edge = Edge::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    wait_for("healthy", Duration::from_secs(10), || (health(&router, "cut")? == "healthy").then_some(())).unwrap();
    link.cut();
    wait_for("down", Duration::from_secs(10), || (health(&router, "cut")? == "down").then_some(())).unwrap();
    let list: NodeList = serde_json::from_slice(&router.admin_get("/v1/nodes").body).unwrap();
    let age = list.nodes.iter().find(|n| n.heartbeat.id == "cut").unwrap().age_s;
    assert!(age > 0.6, "down only once its last heartbeat is three 200 ms intervals old, not at {age} s");
    wait_for("failures counted", Duration::from_secs(10), || {
        (edge.metric("outpost_heartbeat_failures_total") >= 1.0).then_some(())
    })
    .unwrap();
    link.heal();
    wait_for("healthy again", Duration::from_secs(10), || (health(&router, "cut")? == "healthy").then_some(()))
        .unwrap();
}

#[test]
fn an_edge_that_reaches_its_router_but_not_its_core_stops_taking_players_until_the_core_is_back() {
    let core = Core::start(&[]).unwrap();
    let router = Router::start(&[]).unwrap();
    let link = relay::udp(core.ready.quic.parse().unwrap());
    let url = router.url();
    let mut args = heartbeating("halfway", &url, &router);
    args.extend(["--outbox-max-bytes", "262144", "--outbox-soft-bytes", "32768"].map(String::from));
    let edge = edge_via(&core, &link, &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for("healthy", Duration::from_secs(10), || (health(&router, "halfway")? == "healthy").then_some(())).unwrap();
    link.cut();
    // 20 calls of 20 × 100-byte commits: past the 32 KiB soft limit, under the hard one.
    for call in 0..20 {
        commit(&edge, call);
    }
    wait_for("not accepting at the router", Duration::from_secs(30), || {
        (health(&router, "halfway")? == "not-accepting").then_some(())
    })
    .unwrap();
    let h = edge.admin_with(None, "GET", "/healthz", b"");
    assert_eq!(h.status, 503);
    assert!(h.text().contains("outbox over its soft limit"), "{}", h.text());
    link.heal();
    wait_for("accepting again", Duration::from_secs(60), || (health(&router, "halfway")? == "healthy").then_some(()))
        .unwrap();
    wait_for("drained", Duration::from_secs(30), || (edge.metric("outpost_outbox_acked_seq") == 400.0).then_some(()))
        .unwrap();
    assert_eq!(core.metric("outpost_core_updates_applied_total"), 400.0);
}
