//! `outpost probe --report` teaches the router real delays. The client lives in a network
//! namespace of its own, joined to the host by a veth pair, with the address 81.2.69.160, which
//! GeoIP places in London. Two nodes heartbeat into the router: `london` and `singapore`. Each
//! node's beacon is reached through a relay that delays every probe by a fixed time, London's by
//! 40 ms and Singapore's by 1 ms (a userspace stand-in for `tc netem`, whose kernel module,
//! sch_netem, this machine's kernel lacks). Geography alone sends the client to London; after
//! one probe report the router sends it to Singapore, which is really nearer in delay.
//!
//! Needs root (network namespaces) and fails without it: a test that passes by skipping would
//! hide that it never ran. `make test` runs as root in CI.

use outpost_tests::mmdb;
use outpost_tests::{Edge, Router, bin, cli_env, wait_for};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const HOST_IP: &str = "10.231.0.1";
/// The tests share one namespace layout (addresses, names), so they take turns.
static NAMESPACE: std::sync::Mutex<()> = std::sync::Mutex::new(());
const CLIENT_IP: &str = "81.2.69.160";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2 (`ip`)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A namespace and veth pair, removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Netns {
        let id = std::process::id() % 10_000_000;
        let (name, host, client) = (format!("opns{id}"), format!("oph{id}"), format!("opc{id}"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name: name.clone() };
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &client]);
        ip(&["link", "set", &client, "netns", &name]);
        ip(&["addr", "add", &format!("{HOST_IP}/32"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        ip(&["route", "add", &format!("{CLIENT_IP}/32"), "dev", &host]);
        for args in [
            vec!["addr", "add", "81.2.69.160/32", "dev", &client],
            vec!["link", "set", &client, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "10.231.0.1/32", "dev", &client],
        ] {
            let mut full = vec!["netns", "exec", &name, "ip"];
            full.extend(args);
            ip(&full);
        }
        ns
    }

    /// Runs `outpost` inside the namespace.
    fn outpost(&self, router: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(bin("outpost")).args(args);
        cli_env(&mut cmd, router).output().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A UDP relay on the host side of the veth that delays each probe by `delay` on its way to the
/// beacon. Stops on drop.
struct DelayRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    sock: Option<UdpSocket>,
    delay: Duration,
}

impl DelayRelay {
    fn bind(delay: Duration) -> DelayRelay {
        let sock = UdpSocket::bind((HOST_IP, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        DelayRelay { addr: sock.local_addr().unwrap(), stop: Arc::new(AtomicBool::new(false)), sock: Some(sock), delay }
    }

    /// Starts relaying to `beacon`.
    fn start(&mut self, beacon: SocketAddr) {
        let down = self.sock.take().unwrap();
        let up = UdpSocket::bind("127.0.0.1:0").unwrap();
        up.connect(beacon).unwrap();
        up.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        // Probes wait in a bounded queue until due; the delay is constant, so order is arrival order.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Instant, Vec<u8>)>(1024);
        let (stop, delay) = (self.stop.clone(), self.delay);
        let (down2, up2, client2, stop2) =
            (down.try_clone().unwrap(), up.try_clone().unwrap(), client.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = down.recv_from(&mut buf) {
                    *client.lock().unwrap() = Some(from);
                    let _ = tx.try_send((Instant::now() + delay, buf[..n].to_vec()));
                }
            }
        });
        std::thread::spawn(move || {
            while let Ok((due, bytes)) = rx.recv() {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let _ = up2.send(&bytes);
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(n) = up.recv(&mut buf)
                    && let Some(to) = *client2.lock().unwrap()
                {
                    let _ = down2.send_to(&buf[..n], to);
                }
            }
        });
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_probe_report_sends_the_player_to_the_node_nearest_in_delay_not_in_geography() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "network namespaces need root: run the tests as root");
    let _one_at_a_time = NAMESPACE.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let geoip = dir.path().join("city.mmdb");
    let london_city = mmdb::flat_city("London", "GB", 51.51, -0.09);
    std::fs::write(&geoip, mmdb::build(4, "DBIP-City-Lite", &[("81.2.69.0/24", london_city)])).unwrap();
    let router =
        Router::start(&["--listen-http", &format!("{HOST_IP}:0"), "--geoip", geoip.to_str().unwrap()]).unwrap();
    let url = format!("http://{}", router.ready.http);

    let mut relays = Vec::new();
    let mut edges = Vec::new();
    for (id, lat, lon, delay_ms) in [("london", "51.50", "-0.12", 40), ("singapore", "1.35", "103.82", 1)] {
        let mut relay = DelayRelay::bind(Duration::from_millis(delay_ms));
        let edge = Edge::routed(&router, id, lat, lon, &["--advertise-probe", &relay.addr.to_string()]);
        relay.start(edge.ready.probe.parse().unwrap());
        relays.push(relay);
        edges.push(edge);
    }
    wait_for("both nodes with echo", Duration::from_secs(10), || {
        let v = json(&ns.outpost(&url, &["nodes", "--json"]));
        let with_echo = v["nodes"].as_array()?.iter().filter(|n| n["modules"].to_string().contains("echo")).count();
        (with_echo == 2).then_some(())
    })
    .unwrap();

    // From the namespace the router sees 81.2.69.160: London by geography.
    let before = json(&ns.outpost(&url, &["route", "--module", "echo", "--json"]));
    assert_eq!(before["client"]["ip"], CLIENT_IP, "{before}");
    assert_eq!(before["node"]["id"], "london", "{before}");
    assert_eq!(before["estimate"]["method"], "geo", "{before}");

    let rows = json(&ns.outpost(&url, &["probe", "--all", "--count", "10", "--interval", "5ms", "--report", "--json"]));
    let rows = rows.as_array().unwrap();
    let median = |id: &str| -> f64 {
        rows.iter()
            .find(|r| r["node"] == id)
            .and_then(|r| r["median_ms"].as_f64())
            .unwrap_or_else(|| panic!("{rows:?}"))
    };
    assert!(median("london") >= 40.0, "the relay delays London by 40 ms: {rows:?}");
    assert!(median("singapore") < median("london") - 20.0, "{rows:?}");
    assert_eq!(rows[0]["node"], "singapore", "sorted by median: {rows:?}");

    let after = json(&ns.outpost(&url, &["route", "--module", "echo", "--json"]));
    assert_eq!(after["node"]["id"], "singapore", "measured delay beats geography: {after}");
    assert_eq!(after["estimate"]["method"], "measured-prefix", "{after}");
}

/// West Africa by geography, Europe by delay: the three nearest nodes are in Lagos's own region,
/// whose paths detour through Europe, and the right node (Madrid) is fourth by distance. With
/// `--candidates 3` and two per region, Madrid reaches the candidate list only through the
/// per-region rule; the geo route picks a West African node, and `outpost connect`, probing by
/// default, lands on Madrid.
#[test]
fn probing_the_candidates_finds_the_node_that_geography_misses() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "network namespaces need root: run the tests as root");
    let _one_at_a_time = NAMESPACE.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let geoip = dir.path().join("city.mmdb");
    let lagos = mmdb::flat_city("Lagos", "NG", 6.45, 3.39);
    std::fs::write(&geoip, mmdb::build(4, "DBIP-City-Lite", &[("81.2.69.0/24", lagos)])).unwrap();
    let router = Router::start(&[
        "--listen-http",
        &format!("{HOST_IP}:0"),
        "--geoip",
        geoip.to_str().unwrap(),
        "--candidates",
        "3",
        "--candidates-per-region",
        "2",
    ])
    .unwrap();
    let url = format!("http://{}", router.ready.http);
    // (id, region, lat, lon, one-way delay to its beacon, ms): 8 nodes in 4 regions.
    let fleet = [
        ("lome", "af-west", "6.13", "1.22", 120),
        ("accra", "af-west", "5.60", "-0.19", 110),
        ("abidjan", "af-west", "5.36", "-4.01", 130),
        ("madrid", "eu-west", "40.42", "-3.70", 30),
        ("london", "eu-west", "51.50", "-0.12", 45),
        ("johannesburg", "af-south", "-26.20", "28.05", 150),
        ("capetown", "af-south", "-33.92", "18.42", 160),
        ("dubai", "me", "25.20", "55.27", 140),
    ];
    let mut relays = Vec::new();
    let mut edges = Vec::new();
    let quic = format!("{HOST_IP}:0");
    for (id, region, lat, lon, delay_ms) in fleet {
        let mut relay = DelayRelay::bind(Duration::from_millis(delay_ms));
        let advertise = relay.addr.to_string();
        let extra = ["--region", region, "--advertise-probe", &advertise, "--listen-quic", &quic];
        let edge = Edge::routed(&router, id, lat, lon, &extra);
        relay.start(edge.ready.probe.parse().unwrap());
        relays.push(relay);
        edges.push(edge);
    }
    wait_for("all eight nodes with echo", Duration::from_secs(20), || {
        let v = json(&ns.outpost(&url, &["nodes", "--json"]));
        let with_echo = v["nodes"].as_array()?.iter().filter(|n| n["modules"].to_string().contains("echo")).count();
        (with_echo == 8).then_some(())
    })
    .unwrap();

    // By geography alone: a West African node.
    let geo = json(&ns.outpost(&url, &["route", "--module", "echo", "--json"]));
    assert_eq!(geo["estimate"]["method"], "geo", "{geo}");
    let geo_pick = geo["node"]["id"].as_str().unwrap().to_string();
    assert!(["lome", "accra", "abidjan"].contains(&geo_pick.as_str()), "{geo}");

    // The three nearest by geography are all West African; Madrid is in the list of three
    // only because no region may fill more than two places.
    let km = |lat: f64, lon: f64| {
        let (a, b) = (6.45f64.to_radians(), lat.to_radians());
        let h = ((b - a) / 2.0).sin().powi(2) + a.cos() * b.cos() * ((lon - 3.39).to_radians() / 2.0).sin().powi(2);
        2.0 * 6371.0 * h.sqrt().asin()
    };
    let mut by_distance: Vec<(f64, &str)> =
        fleet.iter().map(|f| (km(f.2.parse().unwrap(), f.3.parse().unwrap()), f.0)).collect();
    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
    let nearest3: Vec<&str> = by_distance[..3].iter().map(|d| d.1).collect();
    assert!(!nearest3.contains(&"madrid"), "{by_distance:?}");
    assert_eq!(by_distance[3].1, "madrid", "{by_distance:?}");
    let reply = outpost_tests::http(
        "GET",
        &format!("{url}/v1/candidates?module=echo&ip={CLIENT_IP}"),
        Some(outpost_tests::ADMIN_TOKEN),
        b"",
    );
    let list: outpost_proto::api::CandidateList = serde_json::from_slice(&reply.body).unwrap();
    let ids: Vec<&str> = list.candidates.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[2], "madrid", "{ids:?}");
    assert!(ids[..2].iter().all(|i| nearest3.contains(i)), "{ids:?}");

    // `outpost connect` probes the candidates by default and lands on Madrid.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name]).arg(bin("outpost")).args(["connect", "--module", "echo", "--json"]);
    let out = cli_env(&mut cmd, &url).stdin(std::process::Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let joined: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "joined")
        .unwrap_or_else(|| panic!("no joined event: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(joined["node"], "madrid", "{joined}");
    assert_eq!(joined["method"], "measured-self", "{joined}");
    let probe_ms = joined["probed"]["probe_ms"].as_f64().unwrap();
    assert!(probe_ms < 1000.0, "probing is bounded: {joined}");
    let measured = joined["probed"]["results"].as_array().unwrap();
    assert_eq!(measured.len(), 3, "{joined}");

    // `--no-probe` routes as geography says; the router has since learned this prefix, so it
    // now says Madrid too, by measurement.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name]).arg(bin("outpost")).args([
        "connect",
        "--module",
        "echo",
        "--json",
        "--no-probe",
    ]);
    let out = cli_env(&mut cmd, &url).stdin(std::process::Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"node\":\"madrid\"") && stdout.contains("measured-prefix"), "{stdout}");
}
