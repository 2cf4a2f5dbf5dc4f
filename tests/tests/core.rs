//! The core region as a real process: the edge link (hello, batches, acks, loads), idempotent
//! replay, kill -9 in the middle of a stream, bad links, HTTP reads, and the PostgreSQL store
//! with two cores sharing it.

use outpost_net::link::{FrameStream, LinkError};
use outpost_proto::link::{CoreFrame, WireUpdate};
use outpost_tests::pg::PgCluster;
use outpost_tests::{ADMIN_TOKEN, CLUSTER_TOKEN, Core, wait_for};

fn upd(key: &str, value: &str) -> WireUpdate {
    WireUpdate { room: "room-1".into(), key: key.into(), value: value.as_bytes().to_vec(), epoch: Default::default() }
}

/// N updates: each writes its own key `k/{i}` = `{i}`, and every tenth also appears as the hot
/// key `hot` = `v{i}`, so the hot key is written N/10 times and must end at its last value.
fn stream_of(n: u64) -> Vec<WireUpdate> {
    (1..=n)
        .map(|i| if i % 10 == 0 { upd("hot", &format!("v{i}")) } else { upd(&format!("k/{i}"), &i.to_string()) })
        .collect()
}

fn check_all_present(core: &Core, n: u64) {
    for i in (1..=n).filter(|i| i % 10 != 0) {
        let r = core.get(&format!("/v1/state/k/{i}"), Some(ADMIN_TOKEN));
        assert_eq!((r.status, r.text()), (200, i.to_string()), "k/{i}");
    }
    let last_hot = (1..=n).rev().find(|i| i % 10 == 0).unwrap();
    assert_eq!(core.get("/v1/state/hot", Some(ADMIN_TOKEN)).text(), format!("v{last_hot}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acked_when_durable_and_replays_change_nothing() {
    let core = Core::start(&[]).unwrap();
    let mut link = core.link("edge-1", "edge-1/a").await.unwrap();
    assert_eq!(link.high_water, 0);
    let all = stream_of(100);
    for (i, chunk) in all.chunks(25).enumerate() {
        let first = 1 + 25 * i as u64;
        assert_eq!(link.send_batch(first, chunk.to_vec()).await.unwrap(), first + 24);
    }
    check_all_present(&core, 100);
    assert_eq!(core.metric("outpost_core_updates_applied_total"), 100.0);
    // Reconnect: the core says where the stream is; a replayed batch is acked and ignored.
    drop(link);
    let mut again = core.link("edge-1", "edge-1/a").await.unwrap();
    assert_eq!(again.high_water, 100);
    assert_eq!(again.send_batch(51, all[50..75].to_vec()).await.unwrap(), 100);
    assert_eq!(again.send_batch(96, [all[95..].to_vec(), vec![upd("k/new", "x")]].concat()).await.unwrap(), 101);
    assert_eq!(core.metric("outpost_core_updates_applied_total"), 101.0);
    assert_eq!(core.metric("outpost_core_updates_replayed_total"), 30.0);
    // Loads ride their own streams.
    assert_eq!(again.load("k/new").await.unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(again.load("player/404").await.unwrap(), None);
    // Prefix reads.
    let items = core.get("/v1/state?prefix=k/9&limit=5", Some(CLUSTER_TOKEN)).json();
    let keys: Vec<&str> = items["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["k/9", "k/91", "k/92", "k/93", "k/94"]);
    assert_eq!(items["items"][0]["value"], "9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_killed_mid_stream_loses_nothing_and_applies_each_update_once() {
    const N: u64 = 2000;
    let core = Core::start(&[]).unwrap();
    let all = stream_of(N);
    let mut link = core.link("edge-1", "edge-1/a").await.unwrap();
    let mut acked = 0;
    // Send the first half, then kill -9 while a batch may be in flight.
    while acked < N / 2 {
        let chunk = all[acked as usize..(acked + 50) as usize].to_vec();
        acked = link.send_batch(acked + 1, chunk).await.unwrap();
    }
    let in_flight =
        CoreFrame::Batch { first_seq: acked + 1, updates: all[acked as usize..acked as usize + 50].to_vec() };
    link.send_raw(&in_flight.encode()).await.unwrap();
    let core = core.kill9_and_restart().unwrap();
    // The edge reconnects and resends from what the core says it has.
    let mut link = core.link("edge-1", "edge-1/a").await.unwrap();
    let durable_before = link.high_water;
    assert!(durable_before >= acked, "the core lost acked updates: {durable_before} < {acked}");
    let mut next = durable_before;
    while next < N {
        let end = (next + 50).min(N);
        next = link.send_batch(next + 1, all[next as usize..end as usize].to_vec()).await.unwrap();
    }
    check_all_present(&core, N);
    // Before the kill the core had applied exactly `durable_before`; since, exactly the rest.
    assert_eq!(durable_before + core.metric("outpost_core_updates_applied_total") as u64, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_links_are_refused_and_the_core_stays_up() {
    let core = Core::start(&[]).unwrap();
    match core.link_with("not-the-token", "edge-1", "edge-1/a").await {
        Err(LinkError::Refused(r)) => assert!(r.contains("wrong cluster token"), "{r}"),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("a wrong token was accepted"),
    }
    // Malformed bytes after a good hello.
    let mut link = core.link("edge-1", "edge-1/a").await.unwrap();
    link.send_raw(&[0, 0, 0, 3, 0x7f, 1, 2]).await.unwrap();
    match link.next_frame().await {
        Err(LinkError::Refused(r)) => assert!(r.contains("unknown frame type"), "{r}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A frame over the limit is refused before it is buffered.
    let mut link = core.link("edge-1", "edge-1/a").await.unwrap();
    link.send_raw(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(matches!(link.next_frame().await, Err(LinkError::Refused(r)) if r.contains("over the limit")));
    // A gap: the stream is at 0 and the batch starts at 5.
    let mut link = core.link("edge-1", "edge-1/a").await.unwrap();
    match link.send_batch(5, vec![upd("k", "v")]).await {
        Err(LinkError::Refused(r)) => assert!(r.contains("gap"), "{r}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Each refusal is counted before the edge can read it.
    assert_eq!(core.metric("outpost_core_links_refused_total"), 4.0);
    assert_eq!(core.metric("outpost_core_updates_applied_total"), 0.0);
    assert_eq!(core.get("/healthz", None).status, 200);
    let mut good = core.link("edge-2", "edge-2/a").await.unwrap();
    assert_eq!(good.send_batch(1, vec![upd("k", "v")]).await.unwrap(), 1);
    // Reads need a token; a prefix read needs a prefix and a sane limit.
    assert_eq!(core.get("/v1/state/k", None).status, 401);
    assert_eq!(core.get("/v1/state/k", Some("wrong")).status, 401);
    assert_eq!(core.get("/v1/state/nope", Some(ADMIN_TOKEN)).status, 404);
    assert_eq!(core.get("/v1/state", Some(ADMIN_TOKEN)).status, 400);
    assert_eq!(core.get("/v1/state?prefix=k&limit=0", Some(ADMIN_TOKEN)).status, 400);
    assert_eq!(core.get("/v1/state?prefix=k&limit=lots", Some(ADMIN_TOKEN)).status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cores_on_one_postgresql_store_fail_over_without_duplicates() {
    let pg = PgCluster::start().unwrap();
    let url = pg.url();
    let a = Core::start(&["--store", &url]).unwrap();
    let b = Core::start(&["--store", &url]).unwrap();
    let all = stream_of(300);
    let mut link = a.link("edge-1", "edge-1/a").await.unwrap();
    assert_eq!(link.send_batch(1, all[..200].to_vec()).await.unwrap(), 200);
    drop(link);
    drop(a);
    // The edge fails over to the second core, which knows the stream from the shared store.
    let mut link = b.link("edge-1", "edge-1/a").await.unwrap();
    assert_eq!(link.high_water, 200);
    assert_eq!(link.send_batch(151, all[150..].to_vec()).await.unwrap(), 300);
    assert_eq!(b.metric("outpost_core_updates_applied_total"), 100.0);
    assert_eq!(b.metric("outpost_core_updates_replayed_total"), 50.0);
    check_all_present(&b, 300);
    assert_eq!(link.load("k/1").await.unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn bench_core_streams_durable_updates_and_compares_with_fsync() {
    let core = Core::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("core.json");
    std::fs::write(&ready, serde_json::to_vec(&core.ready).unwrap()).unwrap();
    let out = std::process::Command::new(outpost_tests::bin("outpost-bench"))
        .args(["core", "--json", "--updates", "1000", "--batch", "100", "--core-ready"])
        .arg(&ready)
        .arg("--baseline-dir")
        .arg(dir.path())
        .env("OUTPOST_CLUSTER_TOKEN", CLUSTER_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["updates_per_s"].as_f64().unwrap() > 0.0 && r["ratio"].as_f64().unwrap() > 0.0, "{r}");
    // Ten thousand distinct players' keys were written, the last value of each survives.
    assert_eq!(core.metric("outpost_core_updates_applied_total"), 1000.0);
    assert_eq!(core.get("/v1/state/player/999/score", Some(ADMIN_TOKEN)).text(), "x".repeat(64));
}

/// An edge that opens its update stream and never finishes a hello is told why and counted as
/// refused once the hello timeout passes; the core stays up for the next edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_never_says_hello_is_refused_with_a_reason() {
    let core = Core::start(&["--hello-timeout", "300ms"]).unwrap();
    let endpoint = outpost_client::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let cfg = outpost_net::tls::pinned_client_config(
        &core.ready.cert_sha256,
        outpost_proto::link::ALPN_CORE,
        outpost_net::tls::transport(std::time::Duration::from_secs(30)),
    )
    .unwrap();
    let conn = endpoint.connect_with(cfg, core.ready.quic.parse().unwrap(), "outpost-core").unwrap().await.unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut frames = FrameStream::new(send, recv, 1 << 16);
    // Half of a frame's length prefix: the core sees the stream, and no hello ever completes.
    frames.write_raw(&[0, 0]).await.unwrap();
    let wait = std::time::Duration::from_secs(10);
    let frame = tokio::time::timeout(wait, frames.read()).await.unwrap().unwrap().unwrap();
    assert!(matches!(&frame, CoreFrame::Refused { reason } if reason.contains("no hello in time")), "{frame:?}");
    assert_eq!(core.metric("outpost_core_links_refused_total"), 1.0);
    assert!(core.link("edge-1", "edge-1/a").await.is_ok());
}

/// An edge that goes away, cleanly or in the middle of a frame, is gone, not refused: the core
/// tells the two apart by the kind of error, and only a refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_goes_away_is_not_counted_as_refused() {
    let core = Core::start(&[]).unwrap();
    let mut link = core.link("edge-1", "edge-1/a").await.unwrap();
    assert_eq!(link.send_batch(1, vec![upd("k", "v")]).await.unwrap(), 1);
    link.close();
    let mut link = core.link("edge-1", "edge-1/a").await.unwrap();
    // Three of a frame's four length bytes, then the edge hangs up.
    link.send_raw(&[0, 0, 0]).await.unwrap();
    link.close();
    wait_for("both links to end", std::time::Duration::from_secs(10), || {
        (core.metric("outpost_core_links_active") == 0.0).then_some(())
    })
    .unwrap();
    assert_eq!(core.metric("outpost_core_links_refused_total"), 0.0);
    assert_eq!(core.metric("outpost_core_updates_applied_total"), 1.0);
    assert!(core.link("edge-2", "edge-2/a").await.is_ok());
}

/// A QUIC connection to the core's link port that has said nothing yet.
async fn stranger(core: &Core) -> Result<quinn::Connection, String> {
    let addr: std::net::SocketAddr = core.ready.quic.parse().unwrap();
    let endpoint = outpost_net::udp::quic_endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let cfg = outpost_net::tls::pinned_client_config(
        &core.ready.cert_sha256,
        outpost_proto::link::ALPN_CORE,
        outpost_net::tls::transport(std::time::Duration::from_secs(30)),
    )
    .unwrap();
    let conn = endpoint.connect_with(cfg, addr, "outpost-core").unwrap().await.map_err(|e| e.to_string())?;
    // The endpoint must outlive the connection; the test process ends soon anyway.
    std::mem::forget(endpoint);
    Ok(conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_say_hello_cannot_make_the_core_buffer() {
    use std::time::Duration;
    let core = Core::start(&["--hello-timeout", "3s"]).unwrap();
    let pid = core.pid();
    let before = outpost_tests::peak_rss_kib(pid);
    // Eight connections, each opening 100 streams and writing 1 MiB to each, without a hello.
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let conn = stranger(&core).await.unwrap();
        attackers.push(tokio::spawn(async move {
            let mut writers = Vec::new();
            for _ in 0..100 {
                let conn = conn.clone();
                writers.push(tokio::spawn(async move {
                    let (mut send, _recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                    send.write_all(&vec![0x55u8; 1 << 20]).await.map_err(|e| e.to_string())
                }));
            }
            // Until the core hangs up on the stranger (its hello deadline) or 10 s have gone.
            let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
            for w in writers {
                w.abort();
            }
            closed.map(|e| e.to_string()).map_err(|_| "the core never closed the connection".to_string())
        }));
    }
    for a in attackers {
        let closed = a.await.unwrap().unwrap();
        // Refused for what it sent instead of a hello (here the junk reads as a huge frame).
        assert!(closed.contains("closed by peer"), "{closed}");
    }
    let after = outpost_tests::peak_rss_kib(pid);
    eprintln!("core peak RSS {before} KiB -> {after} KiB under 8 x 100 streams x 1 MiB without hello");
    assert!(after - before < 32 << 10, "the core's peak grew {before} -> {after} KiB");
    assert!(core.metric("outpost_core_links_refused_total") >= 8.0);
    // A real edge still links, sends a batch bigger than a stranger's window, and loads.
    let mut link = core.link("edge-1", "edge-1/a").await.unwrap();
    let big: Vec<WireUpdate> = (0..200).map(|i| upd(&format!("big/{i}"), &"v".repeat(1000))).collect();
    assert_eq!(link.send_batch(1, big).await.unwrap(), 200);
    // More loads at once than a link's load streams: they wait for a stream, none fails.
    let link = std::sync::Arc::new(link);
    let loads: Vec<_> = (0..100)
        .map(|i| {
            let link = link.clone();
            tokio::spawn(async move { link.load(&format!("big/{i}")).await.map_err(|e| e.to_string()) })
        })
        .collect();
    for l in loads {
        assert_eq!(l.await.unwrap().unwrap().map(|v| v.len()), Some(1000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_over_the_pending_and_total_caps_are_refused_at_the_handshake() {
    use std::time::{Duration, Instant};
    let core = Core::start(&["--max-pending-links", "2", "--max-links", "3", "--hello-timeout", "30s"]).unwrap();
    let a = stranger(&core).await.unwrap();
    let b = stranger(&core).await.unwrap();
    let third = stranger(&core).await.unwrap_err();
    assert!(third.contains("refused"), "{third}");
    // Once the strangers hang up, their places are free again (polled, with a deadline).
    a.close(0u32.into(), b"bye");
    b.close(0u32.into(), b"bye");
    let deadline = Instant::now() + Duration::from_secs(20);
    let _edge1 = loop {
        match core.link("edge-1", "edge-1/a").await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("no place freed: {e}"),
        }
    };
    // Two welcomed links and a stranger fill the three places: a third edge is refused.
    let _edge2 = core.link("edge-2", "edge-2/a").await.unwrap();
    let _c = stranger(&core).await.unwrap();
    let over = core.link("edge-3", "edge-3/a").await.err().expect("a fourth link is refused");
    assert!(over.to_string().contains("refused"), "{over}");
    assert!(core.metric("outpost_core_links_refused_total") >= 2.0);
}
