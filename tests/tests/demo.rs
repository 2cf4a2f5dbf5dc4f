//! `make demo` runs `scripts/demo.sh`; this runs the same script, with its defaults (200 bots for
//! 30 s), and checks what it printed: three nodes up, arena deployed to all three, every bot
//! joined and none disconnected, and scores stored in the core.

use std::path::Path;
use std::process::Command;

fn section<'a>(out: &'a str, title: &str) -> &'a str {
    let start = out.find(title).unwrap_or_else(|| panic!("no section {title:?} in:\n{out}"));
    let rest = &out[start..];
    let end = rest[title.len()..].find("\n== ").map_or(rest.len(), |e| e + title.len());
    &rest[..end]
}

#[test]
fn the_demo_runs_to_the_end_and_shows_the_system_working() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    outpost_tests::bin("outpost");
    let out = Command::new("bash").arg(repo.join("scripts/demo.sh")).output().unwrap();
    // Colour codes off, so the section titles read plainly.
    let text = String::from_utf8_lossy(&out.stdout).replace("\u{1b}[1m", "").replace("\u{1b}[0m", "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{text}\n{err}");

    let nodes = section(&text, "== 4.");
    for id in ["london", "singapore", "newyork"] {
        assert!(nodes.lines().any(|l| l.starts_with(id) && l.contains("healthy")), "{id} not up:\n{nodes}");
    }
    let deploy = section(&text, "== 5.");
    assert!(deploy.contains("london (canary)"), "{deploy}");
    let ok_rows =
        deploy.lines().filter(|l| l.split_whitespace().nth(1) == Some("ok") || l.contains("(canary)  ok")).count();
    assert_eq!(ok_rows, 3, "arena deployed to all three:\n{deploy}");
    assert!(deploy.contains("3 node(s) in"), "{deploy}");

    let routes = section(&text, "== 6.");
    assert!(routes.contains("(London, GB)") && routes.contains("node     london"), "{routes}");
    let probe = section(&text, "== 7.");
    assert_eq!(probe.lines().filter(|l| l.contains("127.0.0.1:") && l.ends_with("0%")).count(), 3, "{probe}");
    assert!(probe.contains("by measured-prefix"), "the report taught the router:\n{probe}");

    let bots = section(&text, "== 10.");
    assert!(bots.contains("bots joined: 200 of 200; join failures: 0"), "{bots}");
    assert!(bots.contains("disconnects: none"), "{bots}");

    let scores = section(&text, "== 11.");
    let stored: u32 = scores
        .lines()
        .find(|l| l.contains(" players have scores stored"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no score count:\n{scores}"));
    assert!(stored >= 2, "ada and bob at least:\n{scores}");
    assert!(scores.contains("player/") && scores.contains("score "), "{scores}");

    let drain = section(&text, "== 12.");
    assert!(drain.contains("demo-match now runs on"), "the match moved off London:\n{drain}");
    assert!(drain.contains(r#""name":"ada""#), "with its players' state:\n{drain}");

    assert!(text.contains("done in"), "{text}");
}

/// `make play` runs `scripts/play.sh`: a router, two edges and the page; it prints the URL, serves
/// the page and the routers' address, and stops everything on Ctrl-C.
#[test]
fn make_play_serves_the_page_and_stops_cleanly_on_ctrl_c() {
    use std::io::{BufRead as _, BufReader};
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    outpost_tests::bin("outpost");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new("bash")
        .arg(repo.join("scripts/play.sh"))
        .env("PLAY_PORT", port.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let url = loop {
        let line = lines.next().unwrap_or_else(|| panic!("play.sh ended early:\n{printed}")).unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.strip_prefix("Play: open ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    assert_eq!(url, format!("http://127.0.0.1:{port}/"));
    assert!(printed.contains("london") && printed.contains("paris") && printed.contains("WebTransport https://"));
    let page = outpost_tests::http("GET", &url, None, b"");
    assert!(page.status == 200 && page.text().contains("Outpost arena"), "{}", page.text());
    let config = outpost_tests::http("GET", &format!("{url}config.json"), None, b"").json();
    let router = config["routers"][0].as_str().unwrap().to_string();
    outpost_tests::wait_for("the router to route arena", std::time::Duration::from_secs(10), || {
        (outpost_tests::http("GET", &format!("{router}/v1/route?module=arena"), None, b"").status == 200).then_some(())
    })
    .unwrap();

    // Ctrl-C: everything stops, the script says so and exits 0.
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l == "stopped."), "{rest:?}");
    assert!(child.wait().unwrap().success());
    assert!(std::net::TcpStream::connect(router.trim_start_matches("http://")).is_err(), "the router stopped");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the page server stopped");
}

/// `outpost play` refuses bad flags with a precise message and a non-zero exit, and serves only
/// the page's and the bundle's files, to GET only.
#[test]
fn outpost_play_refuses_bad_flags_and_serves_only_its_files() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = repo.join("clients/ts");
    let play = |args: &[&str]| {
        let out = Command::new(outpost_tests::bin("outpost")).arg("play").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let dir_arg = dir.to_str().unwrap();
    let err = play(&["--dir", dir_arg, "--router", "ftp://127.0.0.1:1", "--listen", "127.0.0.1:0"]);
    assert!(err.contains("is not an http:// or https:// URL"), "{err}");
    let err = play(&["--dir", "/nonexistent/outpost", "--listen", "127.0.0.1:0"]);
    assert!(err.contains("is missing: build the client first"), "{err}");
    let err = play(&["--dir", dir_arg, "--listen", "127.0.0.1:notaport"]);
    assert!(err.contains("--listen"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let err = play(&["--dir", dir_arg, "--listen", &busy]);
    assert!(err.contains(&format!("listen: binding {busy}")), "{err}");

    // Serving: the page and the bundle, nothing else, GET only.
    let tmp = tempfile::tempdir().unwrap();
    let ready = tmp.path().join("play.json");
    let mut child = Command::new(outpost_tests::bin("outpost"))
        .args(["play", "--dir", dir_arg, "--listen", "127.0.0.1:0", "--router", "http://127.0.0.1:9", "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = outpost_tests::wait_for("the page server", std::time::Duration::from_secs(10), || {
        let text = std::fs::read(&ready).ok()?;
        serde_json::from_slice::<serde_json::Value>(&text).ok()?["url"].as_str().map(str::to_string)
    })
    .unwrap();
    assert_eq!(outpost_tests::http("GET", &format!("{url}dist/src/index.js"), None, b"").status, 200);
    let config = outpost_tests::http("GET", &format!("{url}config.json"), None, b"").json();
    assert_eq!(config["routers"][0], "http://127.0.0.1:9");
    for path in ["package.json", "play/../package.json", "play/%2e%2e/package.json", "dist/test/frames.test.js"] {
        let r = outpost_tests::http("GET", &format!("{url}{path}"), None, b"");
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    assert_eq!(outpost_tests::http("POST", &url, None, b"x").status, 405);
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "SIGTERM stops it cleanly");
}
