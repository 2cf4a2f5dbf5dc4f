//! Hostile HTTP clients against the real servers (issue 23, hole 1): bodies trickled a byte at a
//! time, bodies that stop half way, and bodies sent with requests refused before their body is
//! read, over HTTP and HTTPS. Memory is judged by each process's peak resident size (`VmHWM`):
//! the allocator keeps what it freed, so the peak is what an attack cost.
//!
//! Before the fix, one connection trickling 26 KB held ~100 MB in the router, and twenty
//! unauthenticated uploads took the edge from 92 to 592 MB.

use outpost_tests::{Edge, Router, bin, issue_cert, peak_rss_kib};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Most a process's peak may grow under the attacks below, KiB. The bodies involved are at most
/// 64 KiB each; the rest is tasks, buffers and the allocator's slack.
const PEAK_GROWTH_KIB: u64 = 32 << 10;

/// One write per byte, paced so that each byte arrives in a packet of its own, as an attacker
/// trickling a body would send it.
const PACE: Duration = Duration::from_micros(100);

/// Sends `head`, then one byte per write until `bytes` are sent, the server stops reading, or
/// `stop` is set; returns what the server answered, read to the end (the server's close).
fn trickle(addr: SocketAddr, head: &str, bytes: usize) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut w = s.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            for _ in 0..bytes {
                if stop.load(Ordering::Relaxed) || w.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(PACE);
            }
        })
    };
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    // A reset after the reply arrived is fine: the reply is what the client needed.
    assert!(read.is_ok() || !text.is_empty(), "no reply: {read:?}");
    text
}

fn in_parallel(n: usize, f: impl Fn() -> String + Send + Sync + 'static) -> Vec<String> {
    let f = Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || f())
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn status(reply: &str) -> &str {
    reply.get(9..12).unwrap_or(reply)
}

#[test]
fn trickled_bodies_cost_the_router_no_more_than_their_bytes() {
    let router = Router::start(&[]).unwrap();
    let addr: SocketAddr = router.ready.http.parse().unwrap();
    let before = peak_rss_kib(router.pid());
    // Eight anonymous probe reports of 8 KB each (under the 64 KiB limit), a byte at a time.
    let head = "POST /v1/probes HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\nContent-Length: 8192\r\n\r\n";
    let replies = in_parallel(8, move || trickle(addr, head, 8192));
    let after = peak_rss_kib(router.pid());
    for r in &replies {
        // The bytes are not JSON: refused once read whole.
        assert_eq!(status(r), "400", "{r}");
        assert!(r.contains("malformed JSON"), "{r}");
    }
    eprintln!("router peak RSS {before} KiB -> {after} KiB under 8 trickled 8 KB bodies");
    assert!(after - before < PEAK_GROWTH_KIB, "router peak grew {before} -> {after} KiB");
    assert_eq!(router.admin_get("/healthz").status, 200);
}

#[test]
fn a_body_that_stops_half_way_gets_408_and_a_closed_connection() {
    let router = Router::start(&["--body-read-timeout", "300ms"]).unwrap();
    let mut s = TcpStream::connect(&router.ready.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"POST /v1/probes HTTP/1.1\r\nHost: r\r\nContent-Length: 100\r\n\r\n{\"results\":").unwrap();
    let mut out = String::new();
    // Reading to the end also shows the server closed the connection.
    s.read_to_string(&mut out).unwrap();
    assert_eq!(status(&out), "408", "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
    assert!(out.contains(r#""code":"timeout""#) && out.contains("did not arrive within 300ms"), "{out}");

    let bad = Command::new(bin("region-router")).args(["--body-read-timeout", "1h"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("body_read_timeout: must be between 50ms and 5m"), "{err}");
}

#[test]
fn refused_uploads_are_answered_after_a_bounded_discard_and_cost_the_edge_little() {
    let edge = Edge::start(&[]).unwrap();
    let addr: SocketAddr = edge.ready.admin.parse().unwrap();
    let before = peak_rss_kib(edge.pid());
    // Twenty uploads without the token, each declaring 1 MB and sending it a byte at a time for
    // as long as the connection lasts.
    let head = "PUT /v1/modules/m HTTP/1.1\r\nHost: e\r\nContent-Length: 1000000\r\n\r\n";
    let replies = in_parallel(20, move || trickle(addr, head, 1_000_000));
    let after = peak_rss_kib(edge.pid());
    for r in &replies {
        assert_eq!(status(r), "401", "{r}");
        assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    }
    eprintln!("edge peak RSS {before} KiB -> {after} KiB under 20 refused trickled uploads");
    assert!(after - before < PEAK_GROWTH_KIB, "edge peak grew {before} -> {after} KiB");
    assert_eq!(edge.metric("outpost_admin_unauthorized_total"), 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_holds_over_https() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let tmp = tempfile::tempdir().unwrap();
    issue_cert(tmp.path(), "edge");
    let path = |f: &str| tmp.path().join(f).to_string_lossy().to_string();
    let edge = Edge::start(&["--tls-cert", &path("edge.pem"), "--tls-key", &path("edge.key")]).unwrap();
    let trust = outpost_net::tls::HttpsTrust::CaFile(tmp.path().join("ca/ca.pem"));
    let tls = outpost_net::tls::https_client_config(&trust).unwrap();
    let before = peak_rss_kib(edge.pid());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (addr, tls) = (edge.ready.admin.to_string(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let io = outpost_net::tls::connect_http(&addr, Some(&tls)).await.unwrap();
            let (mut rd, mut wr) = tokio::io::split(io);
            let writer = tokio::spawn(async move {
                wr.write_all(b"PUT /v1/modules/m HTTP/1.1\r\nHost: e\r\nContent-Length: 1000000\r\n\r\n").await?;
                for _ in 0..1_000_000 {
                    wr.write_all(b"x").await?;
                    wr.flush().await?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok::<_, std::io::Error>(())
            });
            let mut out = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut out)).await;
            writer.abort();
            let text = String::from_utf8_lossy(&out).to_string();
            assert!(matches!(read, Ok(Ok(_))) || !text.is_empty(), "no reply over TLS: {read:?}");
            text
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(status(&r), "401", "{r}");
        assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    }
    let after = peak_rss_kib(edge.pid());
    eprintln!("edge (HTTPS) peak RSS {before} KiB -> {after} KiB under 8 refused trickled uploads");
    assert!(after - before < PEAK_GROWTH_KIB, "edge peak grew {before} -> {after} KiB");
}
