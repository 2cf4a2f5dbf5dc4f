//! `outpost probe`, `outpost route` and `outpost nodes` against a real router and real edges.

use outpost_tests::{ADMIN_TOKEN, Edge, Router, bin, guest, wait_for};
use std::process::{Command, Output};
use std::time::Duration;

fn outpost(router: &Router, args: &[&str]) -> Output {
    Command::new(bin("outpost"))
        .args(args)
        .env("OUTPOST_ROUTER", router.url())
        .env("OUTPOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("HOME", std::env::temp_dir().join("outpost-no-home"))
        .output()
        .unwrap()
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

    // Loopback, no GeoIP: the router knows nothing of this client yet.
    let before = json(&outpost(&router, &["route", "--module", "echo", "--json"]));
    assert_eq!(before["estimate"]["method"], "none");

    let rows = json(&outpost(&router, &["probe", "--count", "5", "--interval", "5ms", "--report", "--json"]));
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
    let fastest = rows[0]["node"].as_str().unwrap();
    assert_eq!(after["node"]["id"], fastest, "the measured-fastest node wins");
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
