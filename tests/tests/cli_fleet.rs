//! `outpost probe`, `outpost route` and `outpost nodes` against a real router and real edges.

use outpost_tests::{Edge, Router, bin, cli_env, guest, wait_for};
use std::process::{Command, Output};
use std::time::Duration;

fn outpost(router: &Router, args: &[&str]) -> Output {
    cli_env(Command::new(bin("outpost")).args(args), &router.url()).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn probe_reports_teach_the_router_and_route_explains_the_choice() {
    let router = Router::start(&[]).unwrap();
    let url = router.url();
    let edges: Vec<Edge> = [("paris", "48.85", "2.35"), ("tokyo", "35.68", "139.69")]
        .iter()
        .map(|(id, lat, lon)| {
            let e = Edge::start(&[
                "--id",
                id,
                "--router",
                &url,
                "--lat",
                lat,
                "--lon",
                lon,
                "--heartbeat-interval",
                "200ms",
            ])
            .unwrap();
            assert_eq!(e.upload("echo", &guest("echo")).status, 201);
            e
        })
        .collect();
    wait_for("both nodes with echo", Duration::from_secs(10), || {
        let v = json(&outpost(&router, &["nodes", "--json"]));
        let ready =
            v["nodes"].as_array()?.iter().filter(|n| n["modules"].as_array().is_some_and(|m| !m.is_empty())).count();
        (ready == 2).then_some(())
    })
    .unwrap();
    let table = String::from_utf8(outpost(&router, &["nodes"]).stdout).unwrap();
    assert!(table.starts_with("NODE") && table.contains("paris") && table.contains("tokyo"), "{table}");
    // Each node's boot id (first 8 hex digits) and binary version, so a restart shows.
    let listed = json(&outpost(&router, &["nodes", "--json"]));
    for n in listed["nodes"].as_array().unwrap() {
        let boot: String = n["boot_id"].as_str().unwrap().chars().take(8).collect();
        assert!(table.contains(&boot), "{boot} in {table}");
    }
    assert!(table.contains("BOOT") && table.contains(env!("CARGO_PKG_VERSION")), "{table}");

    // Loopback, no GeoIP: the router knows nothing of this client yet.
    let before = json(&outpost(&router, &["route", "--module", "echo", "--json"]));
    assert_eq!(before["estimate"]["method"], "none");

    // The candidates for the module by default (here both nodes), the router's pick marked.
    let rows = json(&outpost(
        &router,
        &["probe", "--module", "echo", "--count", "5", "--interval", "5ms", "--report", "--json"],
    ));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in rows {
        for k in ["min_ms", "median_ms", "p95_ms", "jitter_ms"] {
            let v = r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
            assert!((0.0..1000.0).contains(&v), "{k} = {v}");
        }
        assert_eq!(r["loss"], 0.0);
    }
    assert_eq!(rows.iter().filter(|r| r["pick"] == true).count(), 1);
    assert_eq!(router.metric("outpost_router_probe_results_total"), 2.0);

    // Now this client's prefix (127.0.0.0/24) has measurements, and the route says so.
    let after = json(&outpost(&router, &["route", "--module", "echo", "--json"]));
    assert_eq!(after["estimate"]["method"], "measured-prefix", "{after}");
    // The measured-fastest node wins (on loopback two medians can tie; then either may).
    let median = |id: &serde_json::Value| rows.iter().find(|r| &r["node"] == id).and_then(|r| r["median_ms"].as_f64());
    let best = rows.iter().filter_map(|r| r["median_ms"].as_f64()).fold(f64::INFINITY, f64::min);
    assert_eq!(median(&after["node"]["id"]), Some(best), "the measured-fastest node wins: {after} {rows:?}");
    let text = String::from_utf8(outpost(&router, &["route", "--module", "echo"]).stdout).unwrap();
    assert!(text.contains("by measured-prefix") && text.contains("client   127.0.0.1"), "{text}");

    // Probing named beacons needs no router; an address with no beacon is all loss and a failure.
    let beacon = format!("paris={}", edges[0].ready.probe);
    let one = json(&outpost(&router, &["probe", "--node", &beacon, "--count", "3", "--json"]));
    assert_eq!(one[0]["node"], "paris");
    let silent = outpost(&router, &["probe", "--node", "127.0.0.1:9", "--count", "2", "--timeout", "200ms"]);
    assert!(!silent.status.success());
    assert!(String::from_utf8_lossy(&silent.stderr).contains("no beacon answered"));
}

#[test]
fn fleet_commands_explain_a_missing_router_and_bad_tokens() {
    let out = Command::new(bin("outpost"))
        .args(["nodes"])
        .env_remove("OUTPOST_ROUTER")
        .env("HOME", std::env::temp_dir().join("outpost-no-home"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--router"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(bin("outpost")).args(["nodes", "--config", "/nonexistent/outpost.toml"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let router = Router::start(&[]).unwrap();
    let out = Command::new(bin("outpost"))
        .args(["nodes", "--router", &router.url(), "--token", "wrong"])
        .env("HOME", std::env::temp_dir().join("outpost-no-home"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("token"), "{err}");
}

fn fleet_of_three(router: &Router) -> Vec<Edge> {
    let url = router.url();
    let edges: Vec<Edge> = ["alpha", "bravo", "charlie"]
        .iter()
        .map(|id| {
            Edge::start(&["--id", id, "--router", &url, "--lat", "10", "--lon", "10", "--heartbeat-interval", "200ms"])
                .unwrap()
        })
        .collect();
    wait_for("three registered nodes", Duration::from_secs(10), || {
        let v = json(&outpost(router, &["nodes", "--json"]));
        (v["nodes"].as_array()?.len() == 3).then_some(())
    })
    .unwrap();
    edges
}

#[test]
fn deploy_reaches_every_node_names_the_ones_that_failed_and_a_canary_stops_a_bad_rollout() {
    let router = Router::start(&[]).unwrap();
    let mut edges = fleet_of_three(&router);
    let arena = outpost_tests::target_dir().join("guests/arena.wasm");
    let arena = arena.to_str().unwrap();

    let done = json(&outpost(&router, &["deploy", arena, "--name", "arena", "--json"]));
    let results = done["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r["ok"] == true), "{done}");
    let modules = json(&outpost(&router, &["modules", "--json"]));
    for n in modules.as_array().unwrap() {
        assert_eq!(n["modules"][0]["name"], "arena", "{n}");
    }
    let table = String::from_utf8(outpost(&router, &["modules"]).stdout).unwrap();
    assert_eq!(table.lines().filter(|l| l.contains("arena")).count(), 3, "{table}");

    // A canary whose module traps on its first signal: only the canary node ever sees it.
    let trap = outpost_tests::target_dir().join("guests/trap.wasm");
    let out = outpost(&router, &["deploy", trap.to_str().unwrap(), "--name", "trapper", "--canary", "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("canary alpha failed") && err.contains("2 other node"), "{err}");
    for e in &edges[1..] {
        assert_eq!(e.admin("GET", "/v1/modules/trapper", b"").status, 404, "the rollout stopped before {}", e.ready.id);
    }
    // A good module passes its canary and reaches everyone.
    let echo = outpost_tests::target_dir().join("guests/echo.wasm");
    let ok =
        outpost(&router, &["deploy", echo.to_str().unwrap(), "--name", "echo", "--canary", "--canary-signal", "hi"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let text = String::from_utf8(ok.stdout).unwrap();
    assert!(text.contains("alpha (canary)") && text.matches(" ok ").count() == 3, "{text}");

    // One node down: the others get it, the command fails and names the dead one.
    let charlie = edges.pop().unwrap();
    drop(charlie);
    let out = outpost(&router, &["deploy", arena, "--name", "arena2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deploy failed on 1 of 3 nodes: charlie"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("charlie") && text.contains("FAILED"), "{text}");
    for e in &edges {
        assert_eq!(e.admin("GET", "/v1/modules/arena2", b"").status, 200);
    }
    let rooms = outpost(&router, &["rooms", "--nodes", "alpha,bravo", "--json"]);
    assert_eq!(json(&rooms).as_array().unwrap().len(), 2);
    let unknown = outpost(&router, &["rooms", "--nodes", "zulu"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("\"zulu\" is not registered"));
}

/// Reads a child's stream line by line on a thread, so the test can wait with a deadline.
fn lines_of(r: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(r)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn expect_line(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => continue,
            Err(e) => panic!("no line with {what:?}: {e}"),
        }
    }
}

#[test]
fn connect_chats_through_a_relay_chat_room() {
    use std::io::Write as _;
    use std::process::Stdio;
    let router = Router::start(&[]).unwrap();
    let url = router.url();
    let pubkey = format!("--ticket-pubkey={}", router.ready.pubkey);
    let edge =
        Edge::start(&["--router", &url, "--lat", "1", "--lon", "1", "--heartbeat-interval", "200ms", &pubkey]).unwrap();
    assert_eq!(edge.upload("relay-chat", &guest("relay-chat")).status, 201);
    wait_for("the node with relay-chat", Duration::from_secs(10), || {
        let v = json(&outpost(&router, &["nodes", "--json"]));
        v["nodes"][0]["modules"].as_array().is_some_and(|m| !m.is_empty()).then_some(())
    })
    .unwrap();
    let spawn = |name: &str, extra: &[&str]| {
        Command::new(bin("outpost"))
            .args(["connect", "--module", "relay-chat", "--name", name])
            .args(extra)
            .env("OUTPOST_ROUTER", router.url())
            .env("HOME", std::env::temp_dir().join("outpost-no-home"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut ada = spawn("ada", &[]);
    let ada_out = lines_of(ada.stdout.take().unwrap());
    let ada_err = lines_of(ada.stderr.take().unwrap());
    expect_line(&ada_err, "joined room");
    // Bob speaks JSON lines, as a program driving `outpost connect` would.
    let mut bob = spawn("bob", &["--json"]);
    let bob_out = lines_of(bob.stdout.take().unwrap());
    let joined: serde_json::Value = serde_json::from_str(&expect_line(&bob_out, "\"joined\"")).unwrap();
    assert!(joined["player"].as_u64().is_some() && joined["room"].is_string(), "{joined}");
    expect_line(&ada_out, "* bob joined");

    let mut ada_in = ada.stdin.take().unwrap();
    writeln!(ada_in, "hello from ada").unwrap();
    let msg: serde_json::Value = serde_json::from_str(&expect_line(&bob_out, "hello")).unwrap();
    assert_eq!((msg["event"].as_str(), msg["text"].as_str()), (Some("message"), Some("ada: hello from ada")), "{msg}");
    assert!(msg["data_b64"].is_string());
    let mut bob_in = bob.stdin.take().unwrap();
    writeln!(bob_in, "hi ada").unwrap();
    expect_line(&ada_out, "bob: hi ada");

    // Ctrl-D: ada leaves politely and exits 0; bob sees it.
    drop(ada_in);
    let status = wait_for("ada to exit", Duration::from_secs(10), || ada.try_wait().ok().flatten()).unwrap();
    assert!(status.success());
    expect_line(&bob_out, "* ada left");
    drop(bob_in);
    wait_for("bob to exit", Duration::from_secs(10), || bob.try_wait().ok().flatten()).unwrap();
}
