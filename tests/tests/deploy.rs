//! The deployment kit in `deploy/`: the systemd units pass `systemd-analyze verify`, and the example
//! configs, with only their host-specific values replaced, start the real services, which then
//! work together over HTTPS (edge heartbeat into the router, a commit reaching the core).

use outpost_tests::{ADMIN_TOKEN, CLUSTER_TOKEN, Core, Edge, Router, bin, guest, https, wait_for};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = bin("edge-node").parent().unwrap().to_path_buf();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        // The units name the installed paths; point them at the binaries just built.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/"), "{}", path.display());
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        let copy = tmp.path().join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        units.push(copy);
    }
    units.sort();
    assert_eq!(units.len(), 3, "one unit per service: {units:?}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian package systemd; `make test` installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // A misspelled directive or a bad value is only a warning to systemd: none is allowed here.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("outpost-")).collect();
    assert!(ours.is_empty(), "systemd-analyze warned: {ours:?}");

    // And it does catch a broken unit (so the check above can fail).
    let broken = tmp.path().join("outpost-broken.service");
    std::fs::write(&broken, "[Service]\nExecStart=/nonexistent/edge-node\n").unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&broken).output().unwrap();
    assert!(!out.status.success() || !out.stderr.is_empty());
}

/// The example config with `/etc/outpost`, `/var/lib/outpost` and the listed values replaced.
fn example(name: &str, etc: &Path, var: &Path, extra: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(repo().join("deploy/config").join(name)).unwrap();
    let geoip = repo().join("data/geoip");
    for (from, to) in extra {
        assert!(text.contains(from), "{name} has no {from:?}");
        text = text.replace(from, to);
    }
    text = text
        .replace("/var/lib/outpost/geoip", geoip.to_str().unwrap())
        .replace("/var/lib/outpost", var.to_str().unwrap())
        .replace("/etc/outpost", etc.to_str().unwrap());
    let out = etc.join(name);
    std::fs::write(&out, text).unwrap();
    out
}

#[test]
fn example_configs_start_real_services_that_work_together_over_https() {
    let tmp = tempfile::tempdir().unwrap();
    let (etc, var) = (tmp.path().join("etc"), tmp.path().join("var"));
    std::fs::create_dir_all(&var).unwrap();
    for name in ["router", "edge", "core"] {
        let out = Command::new(bin("outpost"))
            .args(["cert", "--ca-dir"])
            .arg(etc.join("tls"))
            .arg("--out-dir")
            .arg(etc.join("tls"))
            .args(["--name", name, "--san", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::write(etc.join("admin-token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    std::fs::write(etc.join("cluster-token"), format!("{CLUSTER_TOKEN}\n")).unwrap();
    let ca = etc.join("tls/ca.pem");

    let core_cfg = example("core.toml", &etc, &var, &[]);
    let core = Core::start(&["--config", core_cfg.to_str().unwrap()]).unwrap();
    let router_cfg = example("router.toml", &etc, &var, &[]);
    let router = Router::start(&["--config", router_cfg.to_str().unwrap()]).unwrap();
    assert!(router.ready.url.starts_with("https://"), "the example serves HTTPS: {}", router.ready.url);

    let edge_cfg = example(
        "edge.toml",
        &etc,
        &var,
        &[
            ("https://router.example.net:7700", &router.ready.url),
            ("REPLACE-WITH-THE-ROUTERS-TICKET-PUBKEY", &router.ready.pubkey),
            ("198.51.100.20:7710", &core.ready.quic),
            ("REPLACE-WITH-THE-CORES-CERT-SHA256", &core.ready.cert_sha256),
            ("https://fra-1.example.net:7703", "https://127.0.0.1:7703"),
            ("203.0.113.10", "127.0.0.1"),
        ],
    );
    let edge = Edge::start(&["--config", edge_cfg.to_str().unwrap(), "--heartbeat-interval", "200ms"]).unwrap();
    let admin = edge.ready.admin_url.clone();
    assert!(admin.starts_with("https://"), "{admin}");

    let router_url = router.ready.url.clone();
    wait_for("fra-1 registered over HTTPS", Duration::from_secs(10), || {
        let r = https("GET", &format!("{router_url}/v1/nodes"), Some(ADMIN_TOKEN), b"", &ca);
        r.text().contains("\"fra-1\"").then_some(())
    })
    .unwrap();

    let put = https("PUT", &format!("{admin}/v1/modules/echo"), Some(ADMIN_TOKEN), &guest("echo"), &ca);
    assert_eq!(put.status, 201, "{}", put.text());
    let room = https("POST", &format!("{admin}/v1/rooms"), Some(ADMIN_TOKEN), br#"{"module":"echo","room":"r"}"#, &ca);
    assert_eq!(room.status, 201, "{}", room.text());
    let sig = https("POST", &format!("{admin}/v1/rooms/r/signal"), Some(ADMIN_TOKEN), b"commit deploy/check ok", &ca);
    assert_eq!(sig.status, 200, "{}", sig.text());
    let core_url = format!("https://{}", core.ready.http);
    wait_for("the commit at the core", Duration::from_secs(15), || {
        let r = https("GET", &format!("{core_url}/v1/state/deploy/check"), Some(ADMIN_TOKEN), b"", &ca);
        (r.status == 200 && r.text() == "ok").then_some(())
    })
    .unwrap();
}
