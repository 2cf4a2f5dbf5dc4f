//! HTTPS on the router and the edge admin API: the CLI and the edges trust a fleet CA (`--ca`,
//! `--router-ca`) or a pinned certificate hash, and refuse a server whose certificate does not
//! match.

use outpost_tests::{Edge, Router, bin, cli_env, issue_cert as issue, wait_for};
use std::process::{Command, Output};
use std::time::Duration;

fn outpost(router: &str, args: &[&str]) -> Output {
    cli_env(Command::new(bin("outpost")).args(args), router).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn router_and_admin_apis_answer_over_tls_and_a_mismatched_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let router_pin = issue(dir, "router");
    let edge_pin = issue(dir, "edge");
    let path = |f: &str| dir.join(f).to_string_lossy().to_string();
    let ca = path("ca/ca.pem");

    let router = Router::start(&["--tls-cert", &path("router.pem"), "--tls-key", &path("router.key")]).unwrap();
    let url = router.ready.url.clone();
    assert!(url.starts_with("https://"), "{url}");
    assert_eq!(router.ready.tls_sha256.as_deref(), Some(router_pin.as_str()));

    let edge = Edge::start(&[
        "--id",
        "secure",
        "--tls-cert",
        &path("edge.pem"),
        "--tls-key",
        &path("edge.key"),
        "--router",
        &url,
        "--router-ca",
        &ca,
        "--lat",
        "1",
        "--lon",
        "2",
        "--heartbeat-interval",
        "200ms",
    ])
    .unwrap();
    assert!(edge.ready.admin_url.starts_with("https://"), "{}", edge.ready.admin_url);
    assert_eq!(edge.ready.admin_tls_sha256.as_deref(), Some(edge_pin.as_str()));

    // The edge's heartbeats reach the router over TLS, checked against the fleet CA.
    let nodes = wait_for("the TLS edge registered", Duration::from_secs(10), || {
        let out = outpost(&url, &["nodes", "--json", "--ca", &ca]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["nodes"].as_array()?.len() == 1).then_some(v)
    })
    .unwrap();
    assert_eq!(nodes["nodes"][0]["admin_url"], edge.ready.admin_url.as_str());

    // The CLI reaches the node's admin API (URL from the router) over TLS too.
    let modules = outpost(&url, &["modules", "--json", "--ca", &ca]);
    assert!(modules.status.success(), "{}", stderr(&modules));

    // Pins: both pinned works; only the router's pinned and the node is refused, by name.
    let both = format!("{router_pin},{edge_pin}");
    assert!(outpost(&url, &["modules", "--json", "--pin-sha256", &both]).status.success());
    let half = outpost(&url, &["modules", "--pin-sha256", &router_pin]);
    assert!(!half.status.success());
    assert!(stderr(&half).contains("secure"), "the failing node is named: {}", stderr(&half));

    // A certificate that does not match: refused, non-zero, and said why.
    let wrong = outpost(&url, &["nodes", "--pin-sha256", &"ab".repeat(32)]);
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("does not match the pinned"), "{}", stderr(&wrong));
    let public = outpost(&url, &["nodes"]);
    assert!(!public.status.success(), "a private CA is not trusted by default");
    assert!(stderr(&public).to_lowercase().contains("certificate"), "{}", stderr(&public));
    let both_trusts = outpost(&url, &["nodes", "--ca", &ca, "--pin-sha256", &router_pin]);
    assert!(stderr(&both_trusts).contains("not both"), "{}", stderr(&both_trusts));

    // Plain HTTP to the TLS port gets nothing useful, and the router stays up.
    let plain = outpost(&format!("http://{}", router.ready.http), &["nodes"]);
    assert!(!plain.status.success());
    assert!(outpost(&url, &["nodes", "--ca", &ca]).status.success());

    // An edge pinning the wrong router certificate never registers, and counts its failures.
    let impostor = Edge::start(&[
        "--id",
        "misled",
        "--router",
        &url,
        "--router-cert-sha256",
        &"cd".repeat(32),
        "--lat",
        "1",
        "--lon",
        "2",
        "--heartbeat-interval",
        "100ms",
    ])
    .unwrap();
    wait_for("heartbeat failures", Duration::from_secs(10), || {
        (impostor.metric("outpost_heartbeat_failures_total") >= 2.0).then_some(())
    })
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&outpost(&url, &["nodes", "--json", "--ca", &ca]).stdout).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1, "only the edge that trusted the right certificate: {v}");
}
