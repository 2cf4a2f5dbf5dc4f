//! A moving room's commits reach the core exactly once and in order (issue 26, point 3), with
//! real processes: a core, a router, edge nodes whose links to the core pass through the tests'
//! own relays so that a test can cut them, and the echo guest committing on every tick.

use outpost_tests::{Core, Edge, Router, TicketKey, guest, registered, relay, wait_for};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// An edge `id` in the fleet of `router`, forwarding to `core` through `link`.
fn edge(router: &Router, key: &TicketKey, core: &Core, link: &relay::Cut, id: &str, extra: &[&str]) -> Edge {
    let (pubkey, url, addr) = (format!("--ticket-pubkey={}", key.public), router.url(), link.addr.to_string());
    let mut args = vec![
        "--id",
        id,
        "--router",
        &url,
        "--lat",
        "51.5",
        "--lon",
        "-0.1",
        "--heartbeat-interval",
        "200ms",
        &pubkey,
        "--core",
        &addr,
        "--core-cert-sha256",
        &core.ready.cert_sha256,
    ];
    args.extend_from_slice(extra);
    Edge::start(&args).unwrap()
}

fn migrate(edge: &Edge, room: &str, to: &str) {
    let r = edge.admin("POST", &format!("/v1/rooms/{room}/migrate"), format!("{{\"to\":\"{to}\"}}").as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Waits until `edge`'s guests have committed `more` times past what they had.
fn commits_go_on(edge: &Edge, more: f64) {
    let from = edge.metric("outpost_guest_commits_total");
    wait_for("commits on the node", WAIT, || (edge.metric("outpost_guest_commits_total") >= from + more).then_some(()))
        .unwrap();
}

/// A key's value at the core, as a number.
fn at_core(core: &Core, key: &str) -> Option<u64> {
    let r = core.get(&format!("/v1/state?prefix={key}&limit=2"), Some(outpost_tests::ADMIN_TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    let items = r.json()["items"].as_array().cloned().unwrap_or_default();
    items.iter().find(|i| i["key"] == key).and_then(|i| i["value"].as_str()?.parse().ok())
}

/// Stops the room's tick commits and returns how many ticks committed (two keys each).
fn stop(edge: &Edge, room: &str) -> u64 {
    let r = edge.signal(room, "stop-ticks");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().trim().parse().unwrap()
}

/// Every key holds the room's last value for it: `last` is `n`, `k{i}` the last tick ≤ n with
/// tick % 4 == i.
fn keys_hold_their_last_values(core: &Core, room: &str, n: u64) {
    assert_eq!(at_core(core, &format!("ticks/{room}/last")), Some(n));
    for i in 0..4u64 {
        let want = n - ((n % 4 + 4 - i) % 4);
        assert_eq!(at_core(core, &format!("ticks/{room}/k{i}")), Some(want), "k{i} after {n} ticks");
    }
}

fn create_committing_room(edge: &Edge, room: &str) {
    let body = serde_json::json!({"module": "echo", "room": room, "config": "commit-ticks", "tick_hz": 20});
    let r = edge.admin("POST", "/v1/rooms", body.to_string().as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
}

/// A room committing on every tick moves A → B → C → A, each source's link to the core cut
/// before it hands the room on, so that every target gets the room while the core lacks what it
/// committed before. Each target holds the room's commits until the core has its earlier nodes'
/// streams past the hand-off's marks; once the links heal, the core has applied every commit
/// exactly once, nothing was refused as stale, and each key holds its last value.
#[test]
fn a_room_moved_a_b_c_a_with_cut_core_links_commits_exactly_once_in_order() {
    let core = Core::start(&[]).unwrap();
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let links: Vec<relay::Cut> = (0..3).map(|_| relay::udp(core.ready.quic.parse().unwrap())).collect();
    let ids = ["edge-a", "edge-b", "edge-c"];
    let edges: Vec<Edge> =
        ids.iter().zip(&links).map(|(id, l)| edge(&router, &key, &core, l, id, &["--commit-hold", "5m"])).collect();
    let (a, b, c) = (&edges[0], &edges[1], &edges[2]);
    // Only A has the module; B and C fetch it from the node before them.
    assert_eq!(a.upload("echo", &guest("echo")).status, 201);
    registered(&router, &ids);
    create_committing_room(a, "t");
    wait_for("A's commits at the core", WAIT, || at_core(&core, "ticks/t/last").filter(|n| *n >= 3)).unwrap();

    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        links[from].cut();
        commits_go_on(&edges[from], 20.0);
        migrate(&edges[from], "t", ids[to]);
        commits_go_on(&edges[to], 20.0);
        assert_eq!(edges[to].metric("outpost_commit_holds_total"), 1.0, "{} held the room's commits", ids[to]);
    }
    let before_heal = at_core(&core, "ticks/t/last").unwrap();
    for l in &links {
        l.heal();
    }
    let n = stop(a, "t");
    assert!(n >= before_heal + 40, "{n} ticks, {before_heal} at the core before the links healed");
    wait_for("every commit at the core", WAIT, || {
        (core.metric("outpost_core_updates_applied_total") >= (2 * n) as f64).then_some(())
    })
    .unwrap();
    for e in [a, b, c] {
        wait_for("the outbox acked", WAIT, || {
            (e.metric("outpost_outbox_acked_seq") == e.metric("outpost_outbox_durable_seq")).then_some(())
        })
        .unwrap();
        assert_eq!(e.metric("outpost_commit_holds_expired_total"), 0.0);
    }
    assert_eq!(core.metric("outpost_core_updates_applied_total"), (2 * n) as f64, "exactly once");
    assert_eq!(core.metric("outpost_core_updates_stale_total"), 0.0, "in order: nothing came late");
    keys_hold_their_last_values(&core, "t", n);
}

/// A source whose link to the core stays cut past the target's `--commit-hold`: the target's
/// commits go without it, and when the source's come at last, the core's per-key room epochs
/// refuse them as stale where the room wrote the key since; each key still holds its last value,
/// and every commit was either applied or refused as stale, never both, never lost.
#[test]
fn past_the_hold_a_late_source_cannot_overwrite_what_the_room_wrote_after_it_moved() {
    let core = Core::start(&[]).unwrap();
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let (la, lb) = (relay::udp(core.ready.quic.parse().unwrap()), relay::udp(core.ready.quic.parse().unwrap()));
    let a = edge(&router, &key, &core, &la, "edge-a", &[]);
    let b = edge(&router, &key, &core, &lb, "edge-b", &["--commit-hold", "1s"]);
    assert_eq!(a.upload("echo", &guest("echo")).status, 201);
    registered(&router, &["edge-a", "edge-b"]);
    create_committing_room(&a, "t");
    wait_for("A's commits at the core", WAIT, || at_core(&core, "ticks/t/last").filter(|n| *n >= 3)).unwrap();
    la.cut();
    commits_go_on(&a, 10.0);
    migrate(&a, "t", "edge-b");
    wait_for("the hold given up", WAIT, || (b.metric("outpost_commit_holds_expired_total") == 1.0).then_some(()))
        .unwrap();
    // B's commits reach the core while A's last ones are still stuck behind the cut.
    wait_for("B's commits at the core", WAIT, || (b.metric("outpost_outbox_acked_seq") > 0.0).then_some(())).unwrap();
    assert!(a.metric("outpost_outbox_acked_seq") < a.metric("outpost_outbox_durable_seq"));
    commits_go_on(&b, 10.0);
    la.heal();
    wait_for("A's late commits at the core", WAIT, || {
        (a.metric("outpost_outbox_acked_seq") == a.metric("outpost_outbox_durable_seq")).then_some(())
    })
    .unwrap();
    let n = stop(&b, "t");
    wait_for("every commit accounted for", WAIT, || {
        let seen = core.metric("outpost_core_updates_applied_total") + core.metric("outpost_core_updates_stale_total");
        (seen >= (2 * n) as f64).then_some(())
    })
    .unwrap();
    let (applied, stale) =
        (core.metric("outpost_core_updates_applied_total"), core.metric("outpost_core_updates_stale_total"));
    assert_eq!(applied + stale, (2 * n) as f64, "{applied} applied, {stale} stale");
    assert!(stale >= 2.0, "A's late commits were refused: {stale}");
    keys_hold_their_last_values(&core, "t", n);
}
