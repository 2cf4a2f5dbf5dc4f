//! Browser players in real headless Chromium (Debian's, driven by playwright-core from
//! `tests/browser/drive.mjs`): pages served by `outpost play` from `http://127.0.0.1` load the
//! built `clients/ts` bundle, route through a real router and play arena on real edges over
//! WebTransport, or over WebSocket when the page has no WebTransport or the node's WebTransport
//! port is closed, beside native Rust players. A browser that cannot start fails the test.

use outpost_client::{Client, ConnectOptions};
use outpost_tests::{Edge, Router, TicketKey, bin, guest, wait_for};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// One browser at a time on these 2-core machines.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const WAIT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `outpost play` on a free port, serving the built client; returns the process and its URL.
struct Play {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Play {
    fn start() -> Play {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("play.json");
        let child = Command::new(bin("outpost"))
            .args(["play", "--listen", "127.0.0.1:0", "--dir"])
            .arg(repo().join("clients/ts"))
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting outpost play");
        let url = wait_for("the page server", WAIT, || {
            let text = std::fs::read_to_string(&ready).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            v["url"].as_str().map(str::to_string)
        })
        .expect("outpost play serving");
        Play { child, url, _dir: dir }
    }

    /// `http://127.0.0.1:PORT`, what the router and edges allow (`--cors-origin`).
    fn origin(&self) -> String {
        self.url.trim_end_matches('/').to_string()
    }
}

impl Drop for Play {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page driver: its STEP lines, and GO lines back.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Driver {
    fn start(scenario: &str, args: serde_json::Value) -> Driver {
        let dir = repo().join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").exists(),
            "playwright-core is not installed in tests/browser: run `make test` (it runs npm ci)"
        );
        assert!(
            std::path::Path::new("/usr/bin/chromium").exists(),
            "/usr/bin/chromium is missing: `make test` installs it"
        );
        let mut child = Command::new("node")
            .current_dir(&dir)
            .arg("drive.mjs")
            .arg(scenario)
            .arg(args.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting node");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Driver { child, stdin, lines }
    }

    /// The next step the pages reached, with its value; a failed expectation fails the test.
    fn step(&mut self, name: &str) -> serde_json::Value {
        for line in self.lines.by_ref() {
            let line = line.expect("reading the driver");
            if let Some(fail) = line.strip_prefix("FAIL ") {
                panic!("in the browser: {fail}");
            }
            if let Some(rest) = line.strip_prefix("STEP ") {
                let (got, value) = rest.split_once(' ').unwrap_or((rest, "{}"));
                assert_eq!(got, name, "the pages reached {got}, expected {name}");
                return serde_json::from_str(value).expect("a step's JSON");
            }
        }
        let status = self.child.wait().expect("the driver's exit");
        panic!("the driver ended ({status}) before step {name}");
    }

    fn go(&mut self, value: &str) {
        writeln!(self.stdin, "GO {value}").expect("answering the driver");
    }

    fn finish(mut self) {
        let status = self.child.wait().expect("the driver's exit");
        assert!(status.success(), "the driver failed: {status}");
    }
}

/// A native bot in `room` on `edge`, through the router, that walks right (or left, from the right
/// half) and keeps its connection while the pages look.
async fn native_bot(router: &Router, edge: &Edge, room: &str) -> (Client, u64) {
    let route = router.admin_get(&format!("/v1/route?module=arena&name=rustbot&room={room}"));
    assert_eq!(route.status, 200, "{}", route.text());
    let route = route.json();
    assert_eq!(route["node"]["id"], edge.ready.id.as_str());
    let endpoint = outpost_client::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let bot = Client::connect(
        &endpoint,
        edge.ready.quic.parse().unwrap(),
        &edge.ready.cert_sha256,
        route["ticket"].as_str().unwrap(),
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(bot.joined.room, room);
    let id = bot.joined.player_id;
    (bot, id)
}

fn arena_edge(router: &Router, id: &str, origin: &str, extra: &[&str]) -> Edge {
    let mut args = vec!["--cors-origin", origin, "--listen-websocket", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let edge = Edge::routed(router, id, "51.5", "-0.1", &args);
    assert_eq!(edge.upload("arena", &guest("arena")).status, 201);
    wait_for("the router to route arena", WAIT, || {
        (router.admin_get("/v1/route?module=arena").status == 200).then_some(())
    })
    .unwrap();
    edge
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_play_arena_over_webtransport_with_a_native_bot_and_a_websocket_fallback() {
    let _one = BROWSER.lock().await;
    let play = Play::start();
    let router = Router::start(&["--cors-origin", &play.origin()]).unwrap();
    let edge = arena_edge(&router, "browser-1", &play.origin(), &[]);
    let forged = TicketKey::new().ticket(&edge, "arena", None, 77, "eve");
    let shots = repo().join("target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("arena.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut d = Driver::start(
        "two-pages",
        serde_json::json!({
            "play": play.url, "router": router.url(), "forged": forged,
            "screenshot": screenshot.to_str().unwrap(),
        }),
    );

    let ready = d.step("ready");
    let room = ready["room"].as_str().unwrap().to_string();
    let (bot, bot_id) = native_bot(&router, &edge, &room).await;
    d.go(&bot_id.to_string());

    d.step("webtransport-checked");
    // Both pages routed with their own WebTransport measurements, and page A reported them too.
    assert!(router.metric("outpost_router_routes_total{method=\"measured-self\"}") >= 2.0);
    assert!(router.metric("outpost_router_probe_results_total") >= 3.0, "two measured routes and a report");
    // Both pages got the room's state as datagrams: nothing went reliably instead.
    assert_eq!(edge.metric("outpost_player_unreliable_as_reliable_total"), 0.0);
    assert!(screenshot.metadata().map(|m| m.len() > 1000).unwrap_or(false), "screenshot saved");
    d.go("");

    let done = d.step("done");
    assert_eq!(done["c"]["carrier"], "websocket");
    // The WebSocket page's state broadcasts went reliably, counted.
    assert!(edge.metric("outpost_player_unreliable_as_reliable_total") > 0.0);
    let info = edge.admin("GET", &format!("/v1/rooms/{room}"), b"").json();
    assert_eq!(info["players"], 4, "two WebTransport pages, the bot and the WebSocket page: {info}");
    d.finish();
    drop(bot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_falls_back_to_websocket_when_the_webtransport_port_is_closed() {
    let _one = BROWSER.lock().await;
    let play = Play::start();
    let router = Router::start(&["--cors-origin", &play.origin()]).unwrap();
    // The node advertises a WebTransport port nobody listens on (a firewall that drops UDP, or
    // a port taken away): the page must not hang there.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let advertise = format!("https://127.0.0.1:{port}/v1/wt");
    let edge = arena_edge(&router, "browser-2", &play.origin(), &["--advertise-webtransport", &advertise]);
    let mut d = Driver::start("port-closed", serde_json::json!({ "play": play.url, "router": router.url() }));
    let ready = d.step("ready");
    let (bot, bot_id) = native_bot(&router, &edge, ready["room"].as_str().unwrap()).await;
    d.go(&bot_id.to_string());
    let seen = d.step("bot-seen");
    let dx: i8 = if seen["x"].as_f64().unwrap() < 500.0 { 127 } else { -127 };
    bot.send(0, &[b'M', dx as u8, 0]).await.unwrap();
    d.go("");
    let done = d.step("done");
    assert_eq!(done["carrier"], "websocket");
    d.finish();
    drop(bot);
}

/// A page on WebTransport and a page on WebSocket follow their room when it moves to another
/// node: both end up on the target on the carrier they had, the room's state keeps coming, and
/// steering works there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_their_room_to_another_node() {
    let _one = BROWSER.lock().await;
    let play = Play::start();
    let router = Router::start(&["--cors-origin", &play.origin()]).unwrap();
    let a = arena_edge(&router, "browser-a", &play.origin(), &[]);
    let mut d = Driver::start("follow", serde_json::json!({ "play": play.url, "router": router.url() }));
    let ready = d.step("ready");
    assert_eq!(ready["node"], "browser-a");
    let room = ready["room"].as_str().unwrap().to_string();
    // The second node comes up only now, so the routers placed both pages on the first.
    let b = arena_edge(&router, "browser-b", &play.origin(), &[]);
    wait_for("both nodes in the registry", WAIT, || {
        let nodes = router.admin_get("/v1/nodes").json()["nodes"].as_array().cloned().unwrap_or_default();
        (nodes.iter().filter(|n| n["health"] == "healthy").count() == 2).then_some(())
    })
    .unwrap();
    let r = a.admin("POST", &format!("/v1/rooms/{room}/migrate"), br#"{"to":"browser-b"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    d.go("browser-b");
    d.step("done");
    d.finish();
    assert_eq!(b.metric("outpost_players_moved_in_total"), 2.0, "both pages followed with their credentials");
    assert_eq!(a.metric("outpost_rooms_moved_out_total"), 1.0);
}
