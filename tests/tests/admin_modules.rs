//! Module uploads through the admin API of a real edge-node process.

use outpost_tests::{ADMIN_TOKEN, Edge, guest};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn upload_is_idempotent_listed_and_survives_restart_without_compiling() {
    let edge = Edge::start(&[]).unwrap();
    let echo = guest("echo");
    let r = edge.upload("echo", &echo);
    assert_eq!(r.status, 201, "{}", r.text());
    let info = r.json();
    assert_eq!(info["version"], outpost_proto::ids::sha256_hex(&echo));
    assert_eq!(info["size"], echo.len() as u64);
    assert_eq!(info["name"], "echo");

    let again = edge.upload("echo", &echo);
    assert_eq!(again.status, 200, "same bytes again: {}", again.text());
    assert_eq!(again.json()["version"], info["version"]);
    assert_eq!(edge.metric("outpost_module_compiles_total"), 1.0);

    let list = edge.admin("GET", "/v1/modules", b"").json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "echo");
    assert_eq!(edge.admin("GET", "/v1/modules/echo", b"").json()["version"], info["version"]);

    let edge = edge.restart().unwrap();
    let list = edge.admin("GET", "/v1/modules", b"").json();
    assert_eq!(list[0]["name"], "echo", "still listed after restart");
    assert_eq!(list[0]["version"], info["version"]);
    assert_eq!(edge.metric("outpost_module_compiles_total"), 0.0, "loaded from the disk cache");
    assert_eq!(edge.metric("outpost_module_cache_loads_total"), 1.0);
    // And it is usable: a room runs on the reloaded module.
    edge.create_room("echo", "after-restart");
    assert_eq!(edge.signal("after-restart", "hi").text(), "hi");
}

#[test]
fn missing_or_wrong_token_is_401_and_health_is_open() {
    let edge = Edge::start(&[]).unwrap();
    for token in [None, Some("wrong"), Some(""), Some("test-admin-token-012345678")] {
        let r = edge.admin_with(token, "GET", "/v1/modules", b"");
        assert_eq!(r.status, 401, "token {token:?}");
        assert_eq!(r.json()["code"], "unauthorized");
    }
    let r = edge.admin_with(Some("wrong"), "PUT", "/v1/modules/echo", &guest("echo"));
    assert_eq!(r.status, 401);
    assert_eq!(edge.admin_with(None, "GET", "/healthz", b"").status, 200);
    assert_eq!(edge.admin_with(None, "GET", "/metrics", b"").status, 200);
    assert_eq!(edge.metric("outpost_admin_unauthorized_total"), 5.0);
    assert!(!edge.log_text().contains(ADMIN_TOKEN), "the token never appears in logs");
}

#[test]
fn oversized_upload_gets_413_at_once_without_reading_the_rest() {
    let edge = Edge::start(&["--max-upload-bytes", "1048576"]).unwrap();
    let mut s = TcpStream::connect(&edge.ready.admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "PUT /v1/modules/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\n\r\n",
        64 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    // Send 1 MiB of the declared 64 MiB, then stall with the connection open.
    let started = Instant::now();
    let chunk = vec![0u8; 64 << 10];
    for _ in 0..16 {
        if s.write_all(&chunk).is_err() {
            break; // the server may already have answered and closed
        }
    }
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("over the limit"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(15), "answered without waiting for the body");
    // The node is fine afterwards.
    assert_eq!(edge.admin("GET", "/v1/modules", b"").status, 200);

    // A body with no declared length is cut at the limit too.
    let mut s = TcpStream::connect(&edge.ready.admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "PUT /v1/modules/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    for _ in 0..20 {
        let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = s.write_all(&chunk);
        let _ = s.write_all(b"\r\n");
    }
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"));
}

#[test]
fn not_wasm_core_module_and_wrong_world_get_422_naming_the_problem() {
    let edge = Edge::start(&[]).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("text", b"hello, this is not wasm".to_vec(), "not-wasm", "not a WebAssembly binary"),
        ("empty", Vec::new(), "not-wasm", "not a WebAssembly binary"),
        ("core", b"\0asm\x01\0\0\0".to_vec(), "not-a-component", "core WebAssembly module, not a component"),
        ("garbage", [b"\0asm\x0d\0\x01\0".to_vec(), vec![0xff; 64]].concat(), "invalid-component", "invalid component"),
        ("other", guest("wrong-world"), "wrong-world", "outpost:room"),
    ];
    for (name, bytes, code, text) in cases {
        let r = edge.upload(name, &bytes);
        assert_eq!(r.status, 422, "{name}: {}", r.text());
        let body = r.json();
        assert_eq!(body["code"], code, "{name}: {body}");
        assert!(body["error"].as_str().unwrap().contains(text), "{name}: {body}");
    }
    // The wrong world's message names what is missing.
    let other = edge.upload("other", &guest("wrong-world")).json();
    let msg = other["error"].as_str().unwrap();
    assert!(msg.contains("outpost:room/host") || msg.contains("init"), "{msg}");
    // Nothing bad was stored.
    assert_eq!(edge.admin("GET", "/v1/modules", b"").json().as_array().unwrap().len(), 0);
    // Bad names and query values are 400.
    assert_eq!(edge.upload("bad%20name", &guest("echo")).status, 400);
    assert_eq!(edge.admin("PUT", "/v1/modules/echo?tick_hz=0", &guest("echo")).status, 400);
    assert_eq!(edge.admin("PUT", "/v1/modules/echo?max_players=lots", &guest("echo")).status, 400);
    assert_eq!(edge.upload("relay", &guest("echo")).status, 409);
}

#[test]
fn concurrent_uploads_of_one_name_are_serialised_and_the_last_answered_stays_live_after_a_restart() {
    let edge = Edge::start(&[]).unwrap();
    let echo = guest("echo");
    // Six identical uploads at once: one creates, five find it live; none fails.
    let mut statuses: Vec<u16> = std::thread::scope(|s| {
        let uploads: Vec<_> = (0..6).map(|_| s.spawn(|| edge.upload("same", &echo))).collect();
        uploads.into_iter().map(|u| u.join().unwrap().status).collect()
    });
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 201]);

    // Different bytes to one name at once: every upload answers 2xx, and the version live
    // afterwards is the one whose answer came last.
    let versions = [guest("echo"), guest("relay-chat"), guest("trap")];
    let answered = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..12 {
            let (edge, answered, bytes) = (&edge, &answered, &versions[i % versions.len()]);
            s.spawn(move || {
                let r = edge.upload("raced", bytes);
                assert!(r.status == 200 || r.status == 201, "{}: {}", r.status, r.text());
                let version = r.json()["version"].as_str().unwrap().to_string();
                answered.lock().unwrap().push(version);
            });
        }
    });
    let last = answered.into_inner().unwrap().pop().unwrap();
    assert_eq!(edge.admin("GET", "/v1/modules/raced", b"").json()["version"], last.as_str());

    // A crash mid-write leaves a temporary file; the restart removes it and keeps the version.
    let stale = edge.data_dir.join("modules/raced/module.json.tmp-4242-7");
    std::fs::write(&stale, b"{half a rec").unwrap();
    let edge = edge.restart().unwrap();
    assert_eq!(edge.admin("GET", "/v1/modules/raced", b"").json()["version"], last.as_str());
    assert!(!stale.exists(), "the stale temporary file is swept at start");
}
