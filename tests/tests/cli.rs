//! The `outpost` and `outpost-bench` binaries against a real node: tickets and benchmarks.

use outpost_tests::{Edge, TicketKey, bin, guest};
use std::process::Command;

#[test]
fn ticket_keygen_and_mint_make_tickets_the_node_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ticket.key");
    let out = Command::new(bin("outpost")).args(["ticket", "keygen", "--key"]).arg(&key).output().unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let again = Command::new(bin("outpost")).args(["ticket", "keygen", "--json", "--key"]).arg(&key).output().unwrap();
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["pubkey"], public.as_str(), "keygen keeps an existing key");
    let edge = Edge::start(&[&format!("--ticket-pubkey={public}")]).unwrap();
    let out = Command::new(bin("outpost"))
        .args(["ticket", "mint", "--key"])
        .arg(&key)
        .args(["--node", &edge.ready.id, "--module", "relay", "--player", "9", "--name", "ada", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let minted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((minted["player"].as_u64(), minted["ttl_s"].as_u64()), (Some(9), Some(60)));
    let ticket = minted["ticket"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(edge.connect(&ticket, &Default::default())).unwrap();
    assert_eq!(client.joined.player_id, 9);
    // A bad key file is a clear error and a non-zero exit.
    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    let out = Command::new(bin("outpost"))
        .args(["ticket", "mint", "--key"])
        .arg(dir.path().join("bad.key"))
        .args(["--node", "n", "--module", "relay"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.key"));
    // So is a lifetime that nodes would refuse.
    let out = Command::new(bin("outpost"))
        .args(["ticket", "mint", "--key"])
        .arg(&key)
        .args(["--node", "n", "--module", "relay", "--ttl", "2days"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl is at most 86400 s"));
}

fn bench(edge_ready: &std::path::Path, key: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin("outpost-bench"))
        .args(["players", "--json", "--edge-ready"])
        .arg(edge_ready)
        .arg("--key")
        .arg(key)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_reports_relay_and_arena_runs_with_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let tk = TicketKey::new();
    let key = dir.path().join("ticket.key");
    std::fs::write(&key, outpost_proto::keys::signing_key_to_text(&tk.key)).unwrap();
    let edge = Edge::start(&[&format!("--ticket-pubkey={}", tk.public)]).unwrap();
    let ready = dir.path().join("edge.json");
    std::fs::write(&ready, serde_json::to_vec(&edge.ready).unwrap()).unwrap();

    let r = bench(
        &ready,
        &key,
        &[
            "--module",
            "relay",
            "--bots",
            "6",
            "--rate",
            "20",
            "--duration",
            "2",
            "--room-size",
            "3",
            "--baseline",
            "--baseline-threads",
            "1",
        ],
    );
    for field in ["sent", "received", "dropped", "rtt_p50_ms", "rtt_p99_ms", "disconnects", "cpu_us_per_player_tick"] {
        assert!(r.get(field).is_some(), "missing {field}: {r}");
    }
    assert!(r["sent"].as_u64().unwrap() >= 6 * 20, "{r}");
    assert!(r["received"].as_u64().unwrap() > 0);
    assert!(r["rtt_p50_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(r["node"]["bots_joined"], 6);
    assert_eq!(r["disconnects"].as_object().unwrap().len(), 0, "{r}");
    assert!(r["baseline"]["received"].as_u64().unwrap() > 0, "{r}");
    // The echo's own runtime says how many threads it ran on.
    assert_eq!(r["baseline"]["runtime_threads"], 1, "{r}");
    assert!(r["throughput_ratio"].as_f64().unwrap() > 0.0);

    // The same echo driven on quinn-proto from one thread, no async runtime.
    let args = "--module relay --bots 4 --rate 20 --duration 1 --room-size 2 --baseline --baseline-driver proto";
    let r = bench(&ready, &key, &args.split(' ').collect::<Vec<_>>());
    assert_eq!(r["baseline"]["target"], "quinn-proto-echo", "{r}");
    assert_eq!(r["baseline"]["bots_joined"], 4, "{r}");
    assert!(r["baseline"]["echoed"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["baseline"]["received"], r["baseline"]["sent"], "every datagram comes back on loopback: {r}");
    // Measured in clock ticks (10 ms): an echo this short may not use one, so 0 is a fair reading.
    assert!(r["baseline"]["cpu_us_per_message"].as_f64().is_some_and(|c| c >= 0.0), "{r}");

    edge.upload("arena", &guest("arena"));
    let r = bench(
        &ready,
        &key,
        &["--module", "arena", "--bots", "8", "--rate", "20", "--duration", "2", "--room-size", "4"],
    );
    assert_eq!(r["node"]["bots_joined"], 8, "{r}");
    assert!(r["cpu_us_per_player_tick"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["node"]["pongs"].as_u64().unwrap() > 0, "{r}");
    // The node's CPU splits into its room workers (the guests) and the rest (the transport).
    let total = r["node"]["server_cpu_s"].as_f64().unwrap();
    let guests = r["node"]["guest_cpu_s"].as_f64().unwrap();
    assert!((0.0..=total + 0.02).contains(&guests), "guest CPU {guests} s of {total} s: {r}");
    let transport = r["node"]["transport_cpu_us_per_player_tick"].as_f64().unwrap();
    assert!(transport <= r["cpu_us_per_player_tick"].as_f64().unwrap(), "{r}");

    // Over a path with a real round trip (the bots hold their sends for 60 ms), the node's
    // ACK-frequency request lets acknowledgements ride on game datagrams, where raw quinn's
    // defaults send an ACK-only packet for most messages. Two alternated rounds are reported.
    let r = bench(
        &ready,
        &key,
        &[
            "--module",
            "arena",
            "--bots",
            "8",
            "--rate",
            "20",
            "--duration",
            "2",
            "--room-size",
            "8",
            "--baseline",
            "--path-delay-ms",
            "60",
            "--rounds",
            "2",
            "--stagger",
        ],
    );
    assert_eq!(r["rounds"].as_array().map(Vec::len), Some(2), "{r}");
    assert!(r["rtt_p50_ms"].as_f64().unwrap() >= 60.0, "the path delay is in every round trip: {r}");
    assert!(r["baseline"]["rtt_p50_ms"].as_f64().unwrap() >= 60.0, "{r}");
    // Datagrams beyond the messages themselves, per message sent: mostly ACK-only packets.
    let acks = |run: &serde_json::Value| {
        let n = |k: &str| run[k].as_f64().unwrap();
        (n("udp_datagrams") - n("sent") - n("received")) / n("sent")
    };
    for run in [&r["node"], &r["baseline"]] {
        let n = |k: &str| run[k].as_u64().unwrap();
        assert_eq!(n("udp_datagrams_to_server") + n("udp_datagrams_from_server"), n("udp_datagrams"), "{run}");
        assert!(n("udp_datagrams_to_server") > 0 && n("udp_datagrams_from_server") > 0, "{run}");
    }
    assert!(
        acks(&r["node"]) < acks(&r["baseline"]),
        "ACK-only datagrams per message: node {}, raw quinn {}",
        acks(&r["node"]),
        acks(&r["baseline"])
    );
    assert_eq!(r["disconnects"].as_object().unwrap().len(), 0, "{r}");
    // Unasked, the echo runs on tokio's default: a thread per core.
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(r["baseline"]["runtime_threads"].as_u64(), Some(cores), "{r}");
    for round in r["rounds"].as_array().unwrap() {
        assert!(round["transport_cpu_per_player_tick_ratio"].as_f64().is_some(), "{r}");
    }

    // Bad flags are refused with a clear message.
    let out = Command::new(bin("outpost-bench"))
        .args(["players", "--edge-ready"])
        .arg(&ready)
        .arg("--key")
        .arg(&key)
        .args(["--bots", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bots"));
    for (flag, value) in [
        ("--path-delay-ms", "1001"),
        ("--rounds", "0"),
        ("--rounds", "21"),
        ("--baseline-threads", "0"),
        ("--baseline-threads", "257"),
        ("--baseline-threads", "two"),
    ] {
        let out = Command::new(bin("outpost-bench"))
            .args(["players", "--edge-ready"])
            .arg(&ready)
            .arg("--key")
            .arg(&key)
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag), "{flag} {value}");
    }
}

#[test]
fn new_commands_refuse_bad_values_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // Benchmarks and their baselines are `outpost-bench`; the operator commands `outpost`.
    let run = |args: &[&str]| {
        let (binary, args) = match args[0] {
            "bench" => ("outpost-bench", [&["players"], &args[1..]].concat()),
            "bench-forward" => ("outpost-bench", [&["forward"], &args[1..]].concat()),
            "bench-probe" => ("outpost-bench", [&["probe"], &args[1..]].concat()),
            "echo-server" => ("outpost-bench", args.to_vec()),
            _ => ("outpost", args.to_vec()),
        };
        let out = Command::new(bin(binary)).args(&args).output().unwrap();
        assert!(!out.status.success(), "{binary} {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let ca = dir.path().join("ca");
    let ca = ca.to_str().unwrap();
    let out = dir.path().to_str().unwrap();
    assert!(run(&["cert", "--ca-dir", ca, "--out-dir", out, "--name", "../x", "--san", "h"]).contains("--name"));
    assert!(!dir.path().join("ca").exists(), "nothing is written for a refused name");
    let e = run(&["bench-forward", "--edge", "http://127.0.0.1:9", "--batch", "5000"]);
    assert!(e.contains("--batch"), "{e}");
    let e = run(&["bench-forward", "--edge", "http://127.0.0.1:9", "--senders", "0"]);
    assert!(e.contains("--senders"), "{e}");
    let e = run(&["bench-probe", "--node", "127.0.0.1:9", "--rounds", "0"]);
    assert!(e.contains("--rounds"), "{e}");
    let e = run(&["bench-probe", "--node", "not-an-address"]);
    assert!(e.contains("not-an-address"), "{e}");
    let e = run(&["nodes", "--router", "https://127.0.0.1:9", "--pin-sha256", "xyz"]);
    assert!(e.contains("64 lowercase hex"), "{e}");
    let ready = dir.path().join("echo.json");
    let e = run(&["echo-server", "--ready-file", ready.to_str().unwrap(), "--data-dir", out, "--threads", "0"]);
    assert!(e.contains("--threads"), "{e}");
    let e = run(&["echo-server", "--ready-file", ready.to_str().unwrap(), "--data-dir", out, "--driver", "mio"]);
    assert!(e.contains("--driver") && e.contains("proto"), "{e}");
    let e = run(&["bench", "--edge-ready", out, "--key", out, "--baseline-driver", "tokio"]);
    assert!(e.contains("--baseline-driver"), "{e}");
    let e = run(&["bench", "--edge-ready", out, "--key", out, "--baseline-driver", "proto", "--baseline-threads", "2"]);
    assert!(e.contains("--baseline-threads applies to --baseline-driver quinn"), "{e}");
    let args = ["echo-server", "--ready-file", ready.to_str().unwrap(), "--data-dir", out, "--driver", "proto"];
    let e = run(&[&args[..], &["--threads", "2"]].concat());
    assert!(e.contains("--threads applies to --driver quinn"), "{e}");
    assert!(!ready.exists(), "a refused echo server never says it is ready");
}
