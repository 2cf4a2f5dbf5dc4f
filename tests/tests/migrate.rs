//! Rooms that move (issue 26), with real processes: a router, edge nodes heartbeating into it,
//! real QUIC players that follow their room.

use outpost_client::{Client, Event};
use outpost_proto::CloseCode;
use outpost_tests::{Edge, Router, TicketKey, guest, registered, wait_for};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// An edge with `id` heartbeating into `router`, taking tickets of `key`.
fn edge(router: &Router, key: &TicketKey, id: &str) -> Edge {
    edge_with(router, key, id, &[])
}

/// [`edge`] with more flags.
fn edge_with(router: &Router, key: &TicketKey, id: &str, extra: &[&str]) -> Edge {
    let pubkey = format!("--ticket-pubkey={}", key.public);
    let url = router.url();
    let mut args =
        vec!["--id", id, "--router", &url, "--lat", "51.5", "--lon", "-0.1", "--heartbeat-interval", "200ms", &pubkey];
    args.extend_from_slice(extra);
    Edge::start(&args).unwrap()
}

fn migrate(edge: &Edge, room: &str, to: &str) -> outpost_tests::Reply {
    edge.admin("POST", &format!("/v1/rooms/{room}/migrate"), format!("{{\"to\":\"{to}\"}}").as_bytes())
}

/// The echo guest's answers to `c`, as numbers, until `until` of them came or the time is up;
/// and whether the client reported a move.
async fn echoes(c: &mut Client, until: usize) -> (Vec<u32>, Option<String>) {
    let (mut got, mut moved) = (Vec::new(), None);
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < until {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.recv_timeout(left).await {
            Some(Event::Message { data, reliable: true, .. }) if data.len() == 4 => {
                got.push(u32::from_be_bytes(data[..4].try_into().unwrap()))
            }
            Some(Event::Message { .. }) => {}
            Some(Event::Moved { node }) => moved = Some(node),
            Some(Event::Closed(r)) => panic!("closed: {r} after {} echoes", got.len()),
            None => break,
        }
    }
    (got, moved)
}

/// Two players of an echo room keep sending numbered reliable messages while the room moves
/// from A to B: both follow it on their own, every number comes back exactly once and in order,
/// and the room is on B (with both players) and gone from A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moves_with_its_players_and_every_reliable_message_arrives_once_in_order() {
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let a = edge(&router, &key, "edge-a");
    let b = edge(&router, &key, "edge-b");
    // Only A has the module: B fetches it from A during the move.
    assert_eq!(a.upload("echo", &guest("echo")).status, 201);
    registered(&router, &["edge-a", "edge-b"]);
    let mut players = Vec::new();
    for (id, name) in [(1, "ada"), (2, "bob")] {
        players.push(a.player(&key, "echo", Some("m"), id, name).await.unwrap());
    }
    const N: u32 = 300;
    let mut tasks = Vec::new();
    for mut c in players {
        tasks.push(tokio::spawn(async move {
            // Sent while the room moves (the client's event queue holds the echoes meanwhile).
            for n in 0..N {
                c.send(0, &n.to_be_bytes()).await.expect("sending through the move");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (got, moved) = echoes(&mut c, N as usize).await;
            (got, moved, c)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = migrate(&a, "m", "edge-b");
    assert_eq!(r.status, 200, "{}", r.text());
    let done = r.json();
    assert_eq!(
        (done["from"].as_str(), done["to"].as_str(), done["players"].as_u64()),
        (Some("edge-a"), Some("edge-b"), Some(2))
    );
    let mut clients = Vec::new();
    for t in tasks {
        let (got, moved, c) = t.await.unwrap();
        assert_eq!(moved.as_deref(), Some("edge-b"), "the client followed the room");
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "every number once, in order");
        clients.push(c);
    }
    let info = b.admin("GET", "/v1/rooms/m", b"").json();
    assert_eq!((info["players"].as_u64(), info["module"].as_str()), (Some(2), Some("echo")), "{info}");
    assert_eq!(a.admin("GET", "/v1/rooms/m", b"").status, 404, "the room left A");
    assert_eq!(b.metric("outpost_players_moved_in_total"), 2.0);
    assert_eq!(a.metric("outpost_rooms_moved_out_total"), 1.0);

    // And back, with the operator's command: the players follow again and the room answers.
    let out = outpost_tests::cli_env(
        std::process::Command::new(outpost_tests::bin("outpost"))
            .args(["rooms", "migrate", "m", "--to", "edge-a", "--json"]),
        &router.url(),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((back["from"].as_str(), back["to"].as_str()), (Some("edge-b"), Some("edge-a")), "{back}");
    for c in &mut clients {
        c.send(0, &7u32.to_be_bytes()).await.unwrap();
        let (got, moved) = echoes(c, 1).await;
        assert_eq!((got, moved.as_deref()), (vec![7], Some("edge-a")));
    }
    assert_eq!(a.admin("GET", "/v1/rooms/m", b"").json()["players"], 2);
    let out = outpost_tests::cli_env(
        std::process::Command::new(outpost_tests::bin("outpost"))
            .args(["rooms", "migrate", "nowhere", "--to", "edge-b"]),
        &router.url(),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node lists room \"nowhere\""));
}

/// The echo guest answers `c` (the room is alive where `c` is).
async fn echoes_once(c: &mut Client, n: u32) {
    c.send(0, &n.to_be_bytes()).await.unwrap();
    let (got, _) = echoes(c, 1).await;
    assert_eq!(got, vec![n]);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A hand-off as a source node would post it, for the peer API's own checks.
fn handoff(room: &str, module: &str, version: &str, snapshot: &[u8], source: &Edge) -> serde_json::Value {
    use base64::Engine as _;
    serde_json::json!({
        "room": room, "module": module, "version": version, "config": "", "tick_hz": 20, "max_players": 8,
        "ephemeral": true, "reserved": false,
        "snapshot": base64::engine::general_purpose::STANDARD.encode(snapshot),
        "rng": 7, "now_ms": 1000, "ticks": 20, "players": [{"id": 9, "name": "zed"}],
        "source": source.ready.id, "source_admin_url": source.ready.admin_url,
    })
}

fn peer(edge: &Edge, token: Option<&str>, method: &str, path: &str, body: &serde_json::Value) -> outpost_tests::Reply {
    edge.admin_with(token, method, path, body.to_string().as_bytes())
}

/// Every failure before the point of no return leaves the room playable on the source (the
/// target refuses with 409, the target is unreachable: 502); bad requests get precise statuses;
/// the peer API checks the cluster token, restores or refuses (422), fetches modules or says why
/// not (502); and a move credential admits its player once, on its own node only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_moves_leave_the_room_playable_and_bad_requests_and_credentials_are_refused() {
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let a = edge(&router, &key, "edge-a");
    let b = edge(&router, &key, "edge-b");
    let c = edge(&router, &key, "edge-c");
    for e in [&a, &b] {
        assert_eq!(e.upload("echo", &guest("echo")).status, 201);
    }
    registered(&router, &["edge-a", "edge-b", "edge-c"]);
    let mut p = a.player(&key, "echo", Some("m"), 1, "ada").await.unwrap();
    echoes_once(&mut p, 1).await;

    // Bad requests.
    let r = migrate(&a, "m", "edge-a");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("on that node already"), "{}", r.text());
    let r = migrate(&a, "m", "edge-nowhere");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("no node \\\"edge-nowhere\\\""), "{}", r.text());
    assert_eq!(migrate(&a, "none", "edge-b").status, 404);
    for body in [&b"{}"[..], b"{\"to\":1}", b"not json", b"{\"to\":\"edge-b\",\"x\":1}"] {
        let r = a.admin("POST", "/v1/rooms/m/migrate", body);
        assert_eq!(r.status, 400, "{}: {}", String::from_utf8_lossy(body), r.text());
    }
    assert_eq!(a.admin_with(None, "POST", "/v1/rooms/m/migrate", b"{\"to\":\"edge-b\"}").status, 401);

    // A faulted room does not move.
    assert_eq!(a.upload("trap", &guest("trap")).status, 201);
    assert_eq!(a.admin("POST", "/v1/rooms", br#"{"module":"trap","room":"t"}"#).status, 201);
    a.admin("POST", "/v1/rooms/t/signal", b"boom");
    let r = migrate(&a, "t", "edge-b");
    assert_eq!((r.status, r.json()["code"].as_str()), (409, Some("room-faulted")), "{}", r.text());

    // The target has a room of that id: 409, and the room goes on here.
    assert_eq!(b.admin("POST", "/v1/rooms", br#"{"module":"echo","room":"m"}"#).status, 201);
    let r = migrate(&a, "m", "edge-b");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("refused"), "{}", r.text());
    echoes_once(&mut p, 2).await;

    // The target died (the registry has not noticed yet): 502, and the room goes on here.
    drop(c);
    let r = migrate(&a, "m", "edge-c");
    assert_eq!(r.status, 502, "{}", r.text());
    echoes_once(&mut p, 3).await;
    assert_eq!(a.admin("GET", "/v1/rooms/m", b"").json()["players"], 1);

    // The peer API: the cluster token only.
    let echo = sha256_hex(&guest("echo"));
    let h = handoff("h", "echo", &echo, b"", &a);
    assert_eq!(peer(&b, None, "POST", "/v1/peer/rooms", &h).status, 401, "no token");
    assert_eq!(peer(&b, Some(outpost_tests::ADMIN_TOKEN), "POST", "/v1/peer/rooms", &h).status, 401, "the admin token");
    let bad = peer(&b, Some(outpost_tests::CLUSTER_TOKEN), "POST", "/v1/peer/rooms", &serde_json::json!({"room": 1}));
    assert_eq!(bad.status, 400, "{}", bad.text());
    let mut twice = handoff("t2", "echo", &echo, b"", &a);
    twice["players"] = serde_json::json!([{"id": 9, "name": "zed"}, {"id": 9, "name": "zed"}]);
    let bad = peer(&b, Some(outpost_tests::CLUSTER_TOKEN), "POST", "/v1/peer/rooms", &twice);
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("listed twice"), "{}", bad.text());
    // A hand-off may carry at most 64 stream marks, each naming a stream.
    let mut marks = handoff("t3", "echo", &echo, b"", &a);
    marks["commits_after"] = (0..65).map(|i| serde_json::json!({"stream": format!("e{i}/x"), "seq": 1})).collect();
    let bad = peer(&b, Some(outpost_tests::CLUSTER_TOKEN), "POST", "/v1/peer/rooms", &marks);
    assert_eq!(bad.status, 400, "{}", bad.text());
    marks["commits_after"] = serde_json::json!([{"stream": "", "seq": 1}]);
    let bad = peer(&b, Some(outpost_tests::CLUSTER_TOKEN), "POST", "/v1/peer/rooms", &marks);
    assert!(bad.status == 400 && bad.text().contains("commits_after"), "{}", bad.text());
    // The other peer routes and the drain take no bad body or name either.
    let fwd = serde_json::json!({"items": [{"player": 9, "end": false}]});
    let r = peer(&b, Some(outpost_tests::CLUSTER_TOKEN), "POST", "/v1/peer/rooms/none/forwarded", &fwd);
    assert_eq!(r.status, 400, "an item with neither data nor end: {}", r.text());
    let r = peer(
        &b,
        Some(outpost_tests::CLUSTER_TOKEN),
        "GET",
        "/v1/peer/modules/..%2F..%2Fetc/abc",
        &serde_json::json!(null),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = peer(
        &b,
        Some(outpost_tests::CLUSTER_TOKEN),
        "GET",
        &format!("/v1/peer/modules/echo/{}", "0".repeat(64)),
        &serde_json::json!(null),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(b.admin("POST", "/v1/drain", b"{\"deadline_ms\":\"soon\"}").status, 400);
    assert_eq!(b.admin_with(None, "POST", "/v1/drain", b"").status, 401);
    // A snapshot the module's restore refuses: 422, and nothing is left of the room.
    assert_eq!(b.upload("arena", &guest("arena")).status, 201);
    let arena = sha256_hex(&guest("arena"));
    let r = peer(
        &b,
        Some(outpost_tests::CLUSTER_TOKEN),
        "POST",
        "/v1/peer/rooms",
        &handoff("g", "arena", &arena, b"junk", &a),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(b.admin("GET", "/v1/rooms/g", b"").status, 404);
    // A module version the source does not have either: 502.
    let ghost = handoff("x", "ghost", &"0".repeat(64), b"", &a);
    let r = peer(&b, Some(outpost_tests::CLUSTER_TOKEN), "POST", "/v1/peer/rooms", &ghost);
    assert_eq!((r.status, r.json()["code"].as_str()), (502, Some("module-fetch-failed")), "{}", r.text());

    // Credentials: the one B issued admits player 9 into room h once, on B only.
    let r = peer(&b, Some(outpost_tests::CLUSTER_TOKEN), "POST", "/v1/peer/rooms", &h);
    assert_eq!(r.status, 201, "{}", r.text());
    let credential = r.json()["credentials"]["9"].as_str().unwrap().to_string();
    let other =
        peer(&b, Some(outpost_tests::CLUSTER_TOKEN), "POST", "/v1/peer/rooms", &handoff("h2", "echo", &echo, b"", &a));
    let other = other.json()["credentials"]["9"].as_str().unwrap().to_string();
    let refused = |r: Result<Client, outpost_client::ClientError>| match r {
        Err(outpost_client::ClientError::Refused { code, reason }) => (code, reason),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("joined"),
    };
    let opts = outpost_client::ConnectOptions::default();
    let (code, why) = refused(a.connect(&other, &opts).await);
    assert_eq!(code, CloseCode::MoveRefused, "another node's credential: {why}");
    let (code, _) = refused(b.connect(&format!("mv1.{}", "ab".repeat(32)), &opts).await);
    assert_eq!(code, CloseCode::MoveRefused, "one never issued");
    let back = b.connect(&credential, &opts).await.unwrap();
    assert_eq!((back.joined.player_id, back.joined.room.as_str()), (9, "h"));
    let (code, why) = refused(b.connect(&credential, &opts).await);
    assert_eq!(code, CloseCode::MoveRefused, "replayed: {why}");
    assert!(why.contains("already used"), "{why}");
}

/// `outpost drain` empties a node: its rooms move with their players to the other node, the
/// reply lists each room's outcome, and the node stops by itself; the players go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_moves_every_room_and_stops() {
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let mut a = edge(&router, &key, "edge-a");
    let b = edge(&router, &key, "edge-b");
    let c = edge(&router, &key, "edge-c");
    for e in [&a, &b, &c] {
        assert_eq!(e.upload("echo", &guest("echo")).status, 201);
    }
    registered(&router, &["edge-a", "edge-b", "edge-c"]);
    // C is the busier node, so the least-loaded choice would be B; but the players' addresses
    // measured C at 5 ms and B at 90 ms, and the routers' match placement sends the rooms to C.
    let _busy = c.player(&key, "echo", Some("busy"), 9, "p9").await.unwrap();
    let report = serde_json::json!({
        "ip": "127.0.0.1",
        "results": [{"node": "edge-b", "rtt_ms": 90.0, "loss": 0.0}, {"node": "edge-c", "rtt_ms": 5.0, "loss": 0.0}],
    });
    let r = router.request("POST", "/v1/probes", Some(outpost_tests::ADMIN_TOKEN), &[], report.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for("C's player in its heartbeat", WAIT, || {
        let nodes = router.admin_get("/v1/nodes").json()["nodes"].as_array().cloned().unwrap_or_default();
        nodes.iter().any(|n| n["id"] == "edge-c" && n["players"] == 1).then_some(())
    })
    .unwrap();
    let mut players = Vec::new();
    for (id, room) in [(1, "d1"), (2, "d2"), (3, "d2")] {
        let mut p = a.player(&key, "echo", Some(room), id, &format!("p{id}")).await.unwrap();
        echoes_once(&mut p, id as u32).await;
        players.push(p);
    }
    let url = router.url();
    let run = move || {
        outpost_tests::cli_env(
            std::process::Command::new(outpost_tests::bin("outpost")).args([
                "drain",
                "edge-a",
                "--deadline",
                "20s",
                "--json",
            ]),
            &url,
        )
        .output()
        .unwrap()
    };
    let out = tokio::task::spawn_blocking(run).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (done["moved"].as_u64(), done["failed"].as_u64(), done["acked"].as_bool()),
        (Some(2), Some(0), Some(true)),
        "{done}"
    );
    assert!(done["rooms"].as_array().unwrap().iter().all(|r| r["to"] == "edge-c"), "{done}");
    assert!(a.exited(Duration::from_secs(20)), "the drained node stopped");
    for (i, p) in players.iter_mut().enumerate() {
        let n = 100 + i as u32;
        p.send(0, &n.to_be_bytes()).await.unwrap();
        let (got, moved) = echoes(p, 1).await;
        assert_eq!((got, moved.as_deref()), (vec![n], Some("edge-c")));
    }
    assert_eq!(c.admin("GET", "/v1/rooms/d2", b"").json()["players"], 2);
    let bad = outpost_tests::cli_env(
        std::process::Command::new(outpost_tests::bin("outpost")).args(["drain", "edge-b", "--deadline", "0s"]),
        &router.url(),
    )
    .output()
    .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--deadline must be more than 0"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// `--drain-on-shutdown`: SIGTERM moves the node's rooms and players to another node before it
/// stops; a bad value is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_first_with_drain_on_shutdown() {
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let pubkey = format!("--ticket-pubkey={}", key.public);
    let url = router.url();
    let with = |id: &'static str| {
        let args = ["--id", id, "--router", &url, "--lat", "51.5", "--lon", "-0.1", "--heartbeat-interval", "200ms"];
        let mut args = args.to_vec();
        args.extend([pubkey.as_str(), "--drain-on-shutdown", "20s"]);
        Edge::start(&args).unwrap()
    };
    let mut a = with("edge-a");
    let b = with("edge-b");
    for e in [&a, &b] {
        assert_eq!(e.upload("echo", &guest("echo")).status, 201);
    }
    registered(&router, &["edge-a", "edge-b"]);
    let mut p = a.player(&key, "echo", Some("s"), 1, "ada").await.unwrap();
    echoes_once(&mut p, 1).await;
    a.terminate(Duration::from_secs(25)).unwrap();
    p.send(0, &2u32.to_be_bytes()).await.unwrap();
    let (got, moved) = echoes(&mut p, 1).await;
    assert_eq!((got, moved.as_deref()), (vec![2], Some("edge-b")));
    assert_eq!(b.admin("GET", "/v1/rooms/s", b"").json()["players"], 1);
    for bad in ["0s", "2h", "soon"] {
        let err = Edge::start(&["--drain-on-shutdown", bad]).err().expect("refused");
        assert!(format!("{err:#}").contains("drain_on_shutdown"), "{bad}: {err:#}");
    }
}

/// The source dies mid-move (killed right after the target accepted the room, before any
/// player was told): the room is lost, as any room on a node that dies, and its players'
/// connections end within their idle timeout with a reason, never hang; the target lets the room
/// go once its move credentials expire (30 s: not waited for here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_dies_mid_move_ends_its_players_never_a_hang() {
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let mut a =
        outpost_tests::with_env(&[("OUTPOST_FAILPOINTS", "migrate.after_accept=1")], || edge(&router, &key, "edge-a"));
    let b = edge(&router, &key, "edge-b");
    assert_eq!(a.upload("echo", &guest("echo")).status, 201);
    registered(&router, &["edge-a", "edge-b"]);
    let opts = outpost_client::ConnectOptions { idle: Duration::from_secs(2), ..Default::default() };
    let mut players = Vec::new();
    for id in [1, 2] {
        let ticket = key.ticket(&a, "echo", Some("doomed"), id, &format!("p{id}"));
        let mut p = a.connect(&ticket, &opts).await.unwrap();
        echoes_once(&mut p, id as u32).await;
        players.push(p);
    }
    let url = a.admin_url();
    let call = tokio::task::spawn_blocking(move || {
        outpost_tests::http(
            "POST",
            &format!("{url}/v1/rooms/doomed/migrate"),
            Some(outpost_tests::ADMIN_TOKEN),
            br#"{"to":"edge-b"}"#,
        )
    });
    assert!(a.exited(WAIT), "the failpoint killed the source");
    let _ = call.await;
    assert_eq!(b.admin("GET", "/v1/rooms/doomed", b"").json()["players"], 2, "the target had taken the room");
    for (i, p) in players.iter_mut().enumerate() {
        let started = std::time::Instant::now();
        let closed = tokio::time::timeout(WAIT, p.closed()).await.expect("the connection ends, never hangs");
        assert!(started.elapsed() < Duration::from_secs(15), "player {i} ended within its idle timeout");
        assert!(!closed.reason.is_empty(), "player {i} is told why: {closed:?}");
    }
}

/// Relay-chat: one player sends numbered lines every 10 ms while the room moves, and both
/// players (the sender gets its own broadcast too) read every line once, in order, with no gap.
/// A bad rate in the room's config is refused when the room is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_lines_sent_every_10_ms_through_a_move_arrive_with_no_gap_and_no_duplicate() {
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let a = edge(&router, &key, "edge-a");
    let _b = edge(&router, &key, "edge-b");
    assert_eq!(a.upload("relay-chat", &guest("relay-chat")).status, 201);
    registered(&router, &["edge-a", "edge-b"]);
    let bad = serde_json::json!({"module": "relay-chat", "room": "x", "config": "per-second=fast"});
    let r = a.admin("POST", "/v1/rooms", bad.to_string().as_bytes());
    assert!(r.status >= 400 && r.text().contains("per-second"), "{} {}", r.status, r.text());
    let room = serde_json::json!({"module": "relay-chat", "room": "chat", "config": "per-second=500,burst=50"});
    assert_eq!(a.admin("POST", "/v1/rooms", room.to_string().as_bytes()).status, 201);
    let sender = a.player(&key, "relay-chat", Some("chat"), 1, "ann").await.unwrap();
    let reader = a.player(&key, "relay-chat", Some("chat"), 2, "ben").await.unwrap();
    const LINES: u32 = 300;
    // Each side reads the lines `ann: N` until the last one, and says whether it moved.
    let read = |mut c: Client| {
        tokio::spawn(async move {
            let (mut got, mut moved) = (Vec::new(), None);
            let deadline = tokio::time::Instant::now() + WAIT;
            while got.last() != Some(&(LINES - 1)) {
                match tokio::time::timeout_at(deadline, c.recv()).await.expect("every line in time") {
                    Some(Event::Message { data, .. }) => {
                        if let Some(n) = String::from_utf8_lossy(&data).strip_prefix("ann: ") {
                            got.push(n.parse::<u32>().unwrap());
                        }
                    }
                    Some(Event::Moved { node }) => moved = Some(node),
                    Some(Event::Closed(r)) => panic!("closed: {r}"),
                    None => panic!("the client ended"),
                }
            }
            (got, moved, c)
        })
    };
    let reading = read(reader);
    let sending = tokio::spawn(async move {
        for n in 0..LINES {
            sender.send(0, n.to_string().as_bytes()).await.expect("sending through the move");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sender
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let r = migrate(&a, "chat", "edge-b");
    assert_eq!(r.status, 200, "{}", r.text());
    let sender = sending.await.unwrap();
    let (mine, moved_too, _s) = read(sender).await.unwrap();
    let (theirs, moved, _r) = reading.await.unwrap();
    assert_eq!(theirs, (0..LINES).collect::<Vec<_>>(), "the reader: every line once, in order");
    assert_eq!(mine, (0..LINES).collect::<Vec<_>>(), "the sender's own broadcast too");
    assert_eq!((moved.as_deref(), moved_too.as_deref()), (Some("edge-b"), Some("edge-b")));
}

/// A target that refuses connections past its cap per address (2 here; a whole room's players
/// behind one NAT arrive at once): the refused clients try again, and all eight follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_refused_at_the_targets_connection_cap_try_again_and_follow() {
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let a = edge(&router, &key, "edge-a");
    let b = edge_with(&router, &key, "edge-b", &["--max-joining-per-ip", "2"]);
    assert_eq!(a.upload("echo", &guest("echo")).status, 201);
    registered(&router, &["edge-a", "edge-b"]);
    let mut players = Vec::new();
    for id in 1..=8u64 {
        players.push(a.player(&key, "echo", Some("cap"), id, &format!("p{id}")).await.unwrap());
    }
    let r = migrate(&a, "cap", "edge-b");
    assert_eq!(r.status, 200, "{}", r.text());
    for (i, p) in players.iter_mut().enumerate() {
        let n = i as u32;
        p.send(0, &n.to_be_bytes()).await.unwrap();
        let (got, moved) = echoes(p, 1).await;
        assert_eq!((got, moved.as_deref()), (vec![n], Some("edge-b")), "player {i}");
    }
    assert_eq!(b.metric("outpost_players_moved_in_total"), 8.0);
    assert!(b.metric("outpost_player_connections_refused_total") >= 1.0, "the cap refused some at first");
}

/// `outpost fleet restart` takes three nodes down one at a time through drains while 50 arena
/// bots play in 7 rooms spread over them, every node forwarding to one core (the test stands in
/// for systemd, starting each node again when it stops): no bot is disconnected, every bot
/// follows its room from node to node, and at the end the core holds each player's exact score.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_nodes_drops_no_player_and_the_core_has_every_score() {
    let core = outpost_tests::Core::start(&[]).unwrap();
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let ids = ["edge-a", "edge-b", "edge-c"];
    let forward = ["--core", &core.ready.quic, "--core-cert-sha256", &core.ready.cert_sha256];
    let mut edges: Vec<Option<Edge>> = ids.iter().map(|id| Some(edge_with(&router, &key, id, &forward))).collect();
    for e in edges.iter().flatten() {
        assert_eq!(e.upload("arena", &guest("arena")).status, 201);
    }
    registered(&router, &ids);
    const BOTS: u64 = 50;
    let rooms: Vec<String> = (0..BOTS.div_ceil(8)).map(|r| format!("room-{r}")).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut playing = Vec::new();
    for id in 1..=BOTS {
        let r = ((id - 1) / 8) as usize;
        let e = edges[r % 3].as_ref().unwrap();
        let mut c = e.player(&key, "arena", Some(&rooms[r]), id, &format!("bot{id}")).await.unwrap();
        let stop = stop.clone();
        playing.push(tokio::spawn(async move {
            // A room's bots all run to one corner and then the other, every 2 s, so that
            // whoever is "it" keeps touching, and tagging, the others.
            let since = std::time::Instant::now();
            let mut moves = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let d = if (since.elapsed().as_secs() / 2).is_multiple_of(2) { 127u8 } else { 129 };
                c.send(0, &[b'M', d, d]).await.expect("a bot lost its connection");
                let until = tokio::time::Instant::now() + Duration::from_millis(50);
                while let Ok(Some(ev)) = tokio::time::timeout_at(until, c.recv()).await {
                    match ev {
                        Event::Moved { .. } => moves += 1,
                        Event::Closed(r) => panic!("bot {id} closed: {r}"),
                        Event::Message { .. } => {}
                    }
                }
            }
            (moves, c)
        }));
    }
    // Scores are committed before the restart begins (in each room, the operator's `move` puts
    // whoever is "it" onto another player: a tag), and go on being committed through it.
    for (r, room) in rooms.iter().enumerate() {
        let e = edges[r % 3].as_ref().unwrap();
        wait_for("a tag in the room", WAIT, || {
            let state = e.admin("POST", &format!("/v1/rooms/{room}/signal"), b"state");
            let v: serde_json::Value = serde_json::from_slice(&state.body).ok()?;
            let players = v["players"].as_array()?;
            let it = players.iter().find(|p| p["id"] == v["it"])?;
            let other = players.iter().find(|p| p["id"] != v["it"])?;
            let (dx, dy) = (other["x"].as_f64()? - it["x"].as_f64()?, other["y"].as_f64()? - it["y"].as_f64()?);
            let before = scored(e, room);
            let moved = format!("move {} {dx} {dy}", it["id"]);
            (e.admin("POST", &format!("/v1/rooms/{room}/signal"), moved.as_bytes()).status == 200
                && scored(e, room) > before)
                .then_some(())
        })
        .unwrap();
    }
    wait_for("the scores at the core", WAIT, || {
        (core.metric("outpost_core_updates_applied_total") >= rooms.len() as f64).then_some(())
    })
    .unwrap();
    let url = router.url();
    let cli = tokio::task::spawn_blocking(move || {
        let args = ["fleet", "restart", "--nodes", "edge-a,edge-b,edge-c", "--deadline", "30s", "--wait", "30s"];
        outpost_tests::cli_env(std::process::Command::new(outpost_tests::bin("outpost")).args(args), &url)
            .output()
            .unwrap()
    });
    let started = std::time::Instant::now();
    let mut restarts = 0;
    while !cli.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(200), "the rolling restart never finished");
        for slot in edges.iter_mut() {
            let Some(e) = slot.as_mut() else { continue };
            if e.exited(Duration::from_millis(20)) {
                *slot = Some(slot.take().unwrap().restart().unwrap());
                restarts += 1;
            }
        }
    }
    let out = cli.await.unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(restarts, 3, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("restarted 3 node(s)"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut clients = Vec::new();
    for p in playing {
        let (moves, c) = p.await.expect("every bot played to the end, connected");
        assert!(moves >= 1, "every bot followed its room at least once");
        clients.push(c);
    }
    let edges: Vec<Edge> = edges.into_iter().flatten().collect();
    // Every room is on some node with all its bots; the core has each player's score as the
    // room has it (read until the rooms' scores hold still around the core's read).
    let scores = |edges: &[Edge]| {
        let mut all = std::collections::BTreeMap::new();
        for r in &rooms {
            let here: Vec<&Edge> =
                edges.iter().filter(|e| e.admin("GET", &format!("/v1/rooms/{r}"), b"").status == 200).collect();
            assert_eq!(here.len(), 1, "room {r} is on exactly one node");
            all.extend(arena_state(here[0], r).into_iter().map(|(id, (_, _, score))| (id, score)));
        }
        all
    };
    wait_for("the core to hold every score", WAIT * 3, || {
        let before = scores(&edges);
        assert_eq!(before.len() as u64, BOTS, "every bot is in its room");
        for e in &edges {
            if e.metric("outpost_outbox_acked_seq") != e.metric("outpost_outbox_durable_seq") {
                return None;
            }
        }
        let at_core: std::collections::BTreeMap<u64, u64> = before
            .keys()
            .map(|id| {
                let r = core.get(&format!("/v1/state/player/{id}"), Some(outpost_tests::ADMIN_TOKEN));
                let score = match r.status {
                    404 => 0,
                    _ => r.json()["score"].as_u64().unwrap(),
                };
                (*id, score)
            })
            .collect();
        (scores(&edges) == before && at_core == before).then_some(())
    })
    .unwrap();
    assert_eq!(core.metric("outpost_core_updates_stale_total"), 0.0);
    drop(clients);
    // Bad input: an unknown node stops the restart before anything goes down.
    let out = outpost_tests::cli_env(
        std::process::Command::new(outpost_tests::bin("outpost")).args(["fleet", "restart", "--nodes", "edge-x"]),
        &router.url(),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("edge-x"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The sum of a room's scores.
fn scored(edge: &Edge, room: &str) -> u64 {
    arena_state(edge, room).values().map(|p| p.2).sum()
}

/// The arena state of a room, by player id: (x, y, score).
fn arena_state(edge: &Edge, room: &str) -> std::collections::BTreeMap<u64, (f64, f64, u64)> {
    let r = edge.admin("POST", &format!("/v1/rooms/{room}/signal"), b"state");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["players"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap(),
                (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap(), p["score"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// Two arena rooms of 8 bots each move from A to B at once while the bots play: no bot is
/// disconnected, every bot follows to its room on B, the guest on B sees no join (the same
/// players, scores kept), the rooms' tick counts go on, and the bots' inputs move them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_arena_rooms_of_eight_bots_move_while_the_bots_play() {
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let a = edge(&router, &key, "edge-a");
    let b = edge(&router, &key, "edge-b");
    assert_eq!(a.upload("arena", &guest("arena")).status, 201);
    registered(&router, &["edge-a", "edge-b"]);
    let mut bots = Vec::new();
    for room in ["r0", "r1"] {
        for i in 0..8u64 {
            let id = if room == "r0" { 100 + i } else { 200 + i };
            bots.push(a.player(&key, "arena", Some(room), id, &format!("bot{id}")).await.unwrap());
        }
    }
    // The bots play: inputs every 50 ms, in a direction of their own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut playing = Vec::new();
    for (i, mut c) in bots.into_iter().enumerate() {
        let stop = stop.clone();
        playing.push(tokio::spawn(async move {
            let (dx, dy) = ([127u8, 129, 0, 60][i % 4], [0u8, 60, 127, 129][i % 4]);
            let mut moved = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.send(0, &[b'M', dx, dy]).await.expect("a bot lost its connection");
                let until = tokio::time::Instant::now() + Duration::from_millis(50);
                while let Ok(Some(ev)) = tokio::time::timeout_at(until, c.recv()).await {
                    match ev {
                        Event::Moved { node } => moved = Some(node),
                        Event::Closed(r) => panic!("bot {i} closed: {r}"),
                        Event::Message { .. } => {}
                    }
                }
            }
            (moved, c)
        }));
    }
    wait_for("both rooms full", WAIT, || {
        ["r0", "r1"].iter().all(|r| a.admin("GET", &format!("/v1/rooms/{r}"), b"").json()["players"] == 8).then_some(())
    })
    .unwrap();
    let before: Vec<_> = ["r0", "r1"].iter().map(|r| arena_state(&a, r)).collect();
    let ticks: Vec<u64> = ["r0", "r1"]
        .iter()
        .map(|r| a.admin("GET", &format!("/v1/rooms/{r}"), b"").json()["ticks"].as_u64().unwrap())
        .collect();
    let (r0, r1) = tokio::join!(
        tokio::task::spawn_blocking({
            let url = a.admin_url();
            move || {
                outpost_tests::http(
                    "POST",
                    &format!("{url}/v1/rooms/r0/migrate"),
                    Some(outpost_tests::ADMIN_TOKEN),
                    br#"{"to":"edge-b"}"#,
                )
            }
        }),
        tokio::task::spawn_blocking({
            let url = a.admin_url();
            move || {
                outpost_tests::http(
                    "POST",
                    &format!("{url}/v1/rooms/r1/migrate"),
                    Some(outpost_tests::ADMIN_TOKEN),
                    br#"{"to":"edge-b"}"#,
                )
            }
        }),
    );
    for r in [r0.unwrap(), r1.unwrap()] {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let after_move: Vec<_> = ["r0", "r1"].iter().map(|r| arena_state(&b, r)).collect();
    for (x, y) in before.iter().zip(&after_move) {
        assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "the same players");
        for (id, (_, _, score)) in x {
            assert!(y[id].2 >= *score, "player {id}'s score went back");
        }
    }
    // The bots keep playing on B; their inputs move them there.
    wait_for("the rooms to tick on B", WAIT, || {
        ["r0", "r1"]
            .iter()
            .zip(&ticks)
            .all(|(r, t)| b.admin("GET", &format!("/v1/rooms/{r}"), b"").json()["ticks"].as_u64().unwrap() > t + 10)
            .then_some(())
    })
    .unwrap();
    let later: Vec<_> = ["r0", "r1"].iter().map(|r| arena_state(&b, r)).collect();
    let moving = after_move
        .iter()
        .zip(&later)
        .flat_map(|(x, y)| x.iter().map(move |(id, p)| (p.0 - y[id].0).abs() + (p.1 - y[id].1).abs()))
        .filter(|d| *d > 1.0)
        .count();
    assert!(moving >= 8, "only {moving} of 16 bots moved on B");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in playing {
        let (moved, _c) = p.await.unwrap();
        assert_eq!(moved.as_deref(), Some("edge-b"));
    }
    assert_eq!(b.metric("outpost_players_joined_total"), 0.0, "the guest on B saw no join");
    assert_eq!(b.metric("outpost_players_moved_in_total"), 16.0);
    for r in ["r0", "r1"] {
        assert_eq!(b.admin("GET", &format!("/v1/rooms/{r}"), b"").json()["players"], 8);
    }
}

/// A target that takes the connection and never answers (a hung or dying node) costs the room
/// one node-to-node timeout: the move answers 502 and the room is playable on the source again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_hangs_before_accepting_leaves_the_room_on_the_source() {
    let router = Router::start(&[]).unwrap();
    let key = TicketKey::new();
    let a = edge(&router, &key, "edge-a");
    assert_eq!(a.upload("echo", &guest("echo")).status, 201);
    // A node the registry believes healthy, whose admin API accepts and then says nothing.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut beat = outpost_tests::heartbeat("edge-hung", 51.5, -0.1, &["echo"]);
    beat.admin_url = format!("http://{}", hung.local_addr().unwrap());
    assert_eq!(router.heartbeat(&beat).status, 200);
    registered(&router, &["edge-a", "edge-hung"]);
    let mut p = a.player(&key, "echo", Some("m"), 1, "ada").await.unwrap();
    echoes_once(&mut p, 1).await;
    let started = std::time::Instant::now();
    let r = migrate(&a, "m", "edge-hung");
    let took = started.elapsed();
    assert_eq!(r.status, 502, "{}", r.text());
    eprintln!("a hung target cost the room {took:?} before it ran on the source again");
    echoes_once(&mut p, 2).await;
    assert_eq!(a.admin("GET", "/v1/rooms/m", b"").json()["players"], 1);
    drop(hung);
}
