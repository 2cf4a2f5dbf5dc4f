//! WebTransport players (`--listen-webtransport`) join the same rooms as native QUIC players with
//! the same tickets, frames, limits and codes, over real HTTP/3 sessions from the Rust
//! WebTransport client; the node's own browser certificates are published through heartbeats and
//! routes; bad handshakes, requests and sessions are refused precisely and the node stays healthy.

use bytes::BufMut as _;
use outpost_client::webtransport::{WtClient, close_reason, open};
use outpost_client::{Client, ConnectOptions, Event};
use outpost_net::tls::der_sha256 as sha256_hex;
use outpost_proto::CloseCode;
use outpost_tests::{Edge, Router, TicketKey, wait_for};
use std::time::Duration;
use web_transport_quinn::Session;

const GAME: &str = "http://127.0.0.1:8080";
const WAIT: Duration = Duration::from_secs(10);

fn endpoint() -> quinn::Endpoint {
    outpost_client::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn wt(edge: &Edge) -> outpost_proto::api::WebTransportEndpoint {
    edge.ready.webtransport.clone().expect("the ready file has the WebTransport endpoint")
}

fn edge(key: &TicketKey, extra: &[&str]) -> Edge {
    let pk = format!("--ticket-pubkey={}", key.public);
    let mut args = vec!["--cors-origin", GAME, &pk, "--max-message-bytes", "1024"];
    args.extend_from_slice(extra);
    Edge::start(&args).unwrap()
}

async fn next_message(c: &mut WtClient) -> (u64, Vec<u8>, bool) {
    match c.recv_timeout(WAIT).await.expect("a message in time") {
        Event::Message { from, data, reliable } => (from, data, reliable),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webtransport_player_and_a_quic_player_share_a_room_through_the_router() {
    let router = Router::start(&[]).unwrap();
    let edge = Edge::routed(&router, "wt-1", "51.5", "-0.1", &["--cors-origin", GAME]);
    assert_eq!(edge.upload("relay-chat", &outpost_tests::guest("relay-chat")).status, 201);
    let ep = wt(&edge);
    assert!(ep.url.starts_with("https://127.0.0.1:") && ep.url.ends_with("/v1/wt"), "{}", ep.url);
    assert_eq!(ep.probe_url.as_deref(), Some(ep.url.replace("/v1/wt", "/v1/probe").as_str()));
    // The node's own certificate, kept in the data dir: the published hash is the file's.
    assert_eq!(ep.cert_sha256.len(), 1, "{ep:?}");
    let files: Vec<_> = std::fs::read_dir(edge.data_dir.join("webtransport"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".cert.der"))
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(sha256_hex(&std::fs::read(&files[0]).unwrap()), ep.cert_sha256[0]);
    let info = edge.admin("GET", "/v1/info", b"").json();
    assert_eq!(info["webtransport"]["url"], ep.url.as_str());
    assert_eq!(info["webtransport"]["cert_sha256"][0], ep.cert_sha256[0].as_str());

    // The router learns the endpoint from heartbeats and hands it out with the route.
    let route = wait_for("a route with the webtransport endpoint", WAIT, || {
        let r = router.admin_get("/v1/route?module=relay-chat&name=web");
        (r.status == 200 && !r.json()["node"]["webtransport"].is_null()).then(|| r.json())
    })
    .unwrap();
    assert_eq!(route["node"]["webtransport"]["url"], ep.url.as_str());
    assert_eq!(route["node"]["webtransport"]["cert_sha256"][0], ep.cert_sha256[0].as_str());
    let nodes = router.admin_get("/v1/nodes").json();
    assert!(nodes["nodes"][0]["features"].to_string().contains("webtransport"), "{nodes}");

    // The page's player joins with the route's ticket, URL and hashes; a native player routes
    // into the same chat room.
    let hashes: Vec<String> = serde_json::from_value(route["node"]["webtransport"]["cert_sha256"].clone()).unwrap();
    let e = endpoint();
    let ticket = route["ticket"].as_str().unwrap();
    let mut web = WtClient::connect(&e, &ep.url, &hashes, ticket, &ConnectOptions::default()).await.unwrap();
    let native_route = router.admin_get("/v1/route?module=relay-chat&name=native").json();
    let native = Client::connect(
        &e,
        edge.ready.quic.parse().unwrap(),
        &edge.ready.cert_sha256,
        native_route["ticket"].as_str().unwrap(),
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(native.joined.room, web.joined.room, "same room");
    native.send(0, b"hello from native").await.unwrap();
    loop {
        let (from, data, reliable) = next_message(&mut web).await;
        if data == b"native: hello from native" {
            assert_eq!((from, reliable), (0, true));
            break;
        }
    }
    web.close();
    let room = native.joined.room.clone();
    wait_for("the page's player to leave", WAIT, || {
        (edge.admin("GET", &format!("/v1/rooms/{room}"), b"").json()["players"] == 1).then_some(())
    })
    .unwrap();

    // The certificate survives a restart (routes handed out before still pin it).
    drop(native);
    let edge = edge.restart().unwrap();
    assert_eq!(wt(&edge).cert_sha256, ep.cert_sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webtransport_and_quic_players_exchange_reliable_frames_and_real_datagrams() {
    let key = TicketKey::new();
    let edge = edge(&key, &[]);
    let ep = wt(&edge);
    let e = endpoint();
    let ticket = key.ticket(&edge, "relay", Some("r1"), 1, "web");
    let mut web = WtClient::connect(&e, &ep.url, &ep.cert_sha256, &ticket, &ConnectOptions::default()).await.unwrap();
    let ticket = key.ticket(&edge, "relay", Some("r1"), 2, "native");
    let mut native = Client::connect(
        &e,
        edge.ready.quic.parse().unwrap(),
        &edge.ready.cert_sha256,
        &ticket,
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!((web.joined.room.as_str(), native.joined.room.as_str()), ("r1", "r1"));

    web.send(2, b"reliable from the page").await.unwrap();
    loop {
        match native.recv_timeout(WAIT).await {
            Some(Event::Message { from: 1, data, reliable: true }) => {
                assert_eq!(data, b"reliable from the page");
                break;
            }
            Some(Event::Message { .. }) => continue,
            other => panic!("{other:?}"),
        }
    }
    native.send(1, b"reliable to the page").await.unwrap();
    assert_eq!(next_message(&mut web).await, (2, b"reliable to the page".to_vec(), true));
    // Datagrams may be lost even on loopback: send until one arrives, each way.
    let mut got = None;
    for _ in 0..50 {
        native.send_datagram(1, b"unreliable to the page").unwrap();
        if let Some(Event::Message { from, data, reliable }) = web.recv_timeout(Duration::from_millis(100)).await {
            got = Some((from, data, reliable));
            break;
        }
    }
    assert_eq!(got, Some((2, b"unreliable to the page".to_vec(), false)));
    let mut got = None;
    for _ in 0..50 {
        web.send_datagram(2, b"unreliable from the page").unwrap();
        if let Some(Event::Message { from, data, reliable }) = native.recv_timeout(Duration::from_millis(100)).await {
            got = Some((from, data, reliable));
            break;
        }
    }
    assert_eq!(got, Some((1, b"unreliable from the page".to_vec(), false)));
    assert_eq!(edge.metric("outpost_player_unreliable_as_reliable_total"), 0.0, "WebTransport has datagrams");
}

/// A raw HTTP/3 connection to the endpoint, as a hostile client would open it.
async fn raw_h3(edge: &Edge) -> quinn::Connection {
    let ep = wt(edge);
    let pins: Vec<&str> = ep.cert_sha256.iter().map(String::as_str).collect();
    let cfg =
        outpost_net::tls::pinned_client_config_any(&pins, b"h3", outpost_net::tls::transport(Duration::from_secs(10)))
            .unwrap();
    let addr = ep.url.trim_start_matches("https://").split('/').next().unwrap().parse().unwrap();
    endpoint().connect_with(cfg, addr, "outpost.invalid").unwrap().await.unwrap()
}

/// The code a connection was closed with by the node.
async fn closed_code(conn: &quinn::Connection) -> u64 {
    match tokio::time::timeout(WAIT, conn.closed()).await.expect("closed in time") {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("{other}"),
    }
}

/// A QPACK field section with only static-table references and literal values (RFC 9204).
fn headers_frame(fields: &[(u8, Option<&str>)]) -> Vec<u8> {
    let mut block = vec![0x00, 0x00];
    for (index, value) in fields {
        match value {
            None => block.push(0xc0 | index),
            Some(v) => {
                block.push(0x50 | index);
                block.push(v.len() as u8);
                block.extend_from_slice(v.as_bytes());
            }
        }
    }
    let mut out = vec![0x01];
    web_transport_quinn::proto::VarInt::from_u32(block.len() as u32).encode(&mut out);
    out.extend(block);
    out
}

async fn send_settings(conn: &quinn::Connection) -> quinn::SendStream {
    let mut settings = web_transport_quinn::proto::Settings::default();
    settings.enable_webtransport(1);
    let mut buf = Vec::new();
    settings.encode(&mut buf);
    let mut uni = conn.open_uni().await.unwrap();
    uni.write_all(&buf).await.unwrap();
    uni
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_and_requests_are_refused_and_the_node_stays_healthy() {
    let key = TicketKey::new();
    let edge = edge(&key, &[]);
    let ep = wt(&edge);
    let opts = ConnectOptions { timeout: Duration::from_secs(5), ..ConnectOptions::default() };

    // Malformed HTTP/3: a control stream whose SETTINGS frame is cut short.
    let conn = raw_h3(&edge).await;
    let mut uni = conn.open_uni().await.unwrap();
    uni.write_all(&[0x00, 0x04, 0x40, 0xff, 0x01]).await.unwrap();
    uni.finish().unwrap();
    assert_eq!(closed_code(&conn).await, 0x101, "H3_GENERAL_PROTOCOL_ERROR");

    // Garbage where the CONNECT request's HEADERS frame belongs.
    let conn = raw_h3(&edge).await;
    let _control = send_settings(&conn).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    send.finish().unwrap();
    assert_eq!(closed_code(&conn).await, 0x101);

    // A CONNECT without the WebTransport protocol (a plain HTTP/3 CONNECT).
    let conn = raw_h3(&edge).await;
    let _control = send_settings(&conn).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let authority = ep.url.trim_start_matches("https://").split('/').next().unwrap().to_string();
    // :method CONNECT (15), :scheme https (23), :authority (0), :path (1); no :protocol.
    let frame = headers_frame(&[(15, None), (23, None), (0, Some(&authority)), (1, Some("/v1/wt"))]);
    send.write_all(&frame).await.unwrap();
    assert_eq!(closed_code(&conn).await, 0x101);

    // An unknown path, and a page of an origin that is not allowed.
    let wrong = ep.url.replace("/v1/wt", "/v1/nope");
    // (The node answers 404 and 403; the client library reports the end of the CONNECT stream
    // rather than the status, so the node's count of refused sessions is what is checked.)
    let refused = edge.metric("outpost_players_refused_total");
    assert!(open(&endpoint(), &wrong, &ep.cert_sha256, &opts).await.is_err(), "an unknown path is refused");
    assert_eq!(edge.metric("outpost_players_refused_total"), refused + 1.0);
    let conn = raw_h3(&edge).await;
    let request = web_transport_quinn::proto::ConnectRequest::new(url::Url::parse(&ep.url).unwrap()).with_header(
        web_transport_quinn::http::header::ORIGIN,
        web_transport_quinn::http::HeaderValue::from_static("https://evil.example.net"),
    );
    assert!(Session::connect(conn, request).await.is_err(), "another origin's page is refused");
    assert_eq!(edge.metric("outpost_players_refused_total"), refused + 2.0);

    // A forged ticket: the Refused frame (which the client reports), then the close capsule
    // with the code as it is.
    let forged = TicketKey::new().ticket(&edge, "relay", None, 5, "eve");
    match WtClient::connect(&endpoint(), &ep.url, &ep.cert_sha256, &forged, &opts).await {
        Err(outpost_client::ClientError::Refused { code: CloseCode::BadTicket, reason }) => {
            assert!(reason.contains("signature"), "{reason}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a forged ticket joined"),
    }

    // A join without a ticket.
    match WtClient::connect(&endpoint(), &ep.url, &ep.cert_sha256, "", &opts).await {
        Err(outpost_client::ClientError::Refused { code: CloseCode::BadTicket, .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an empty ticket joined"),
    }

    assert_eq!(edge.admin_with(None, "GET", "/healthz", b"").status, 200);
    let good = key.ticket(&edge, "relay", Some("ok"), 9, "ok");
    let c = WtClient::connect(&endpoint(), &ep.url, &ep.cert_sha256, &good, &opts).await.unwrap();
    assert_eq!(c.joined.room, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sessions_are_closed_with_their_code() {
    let key = TicketKey::new();
    let edge = edge(&key, &["--join-timeout", "1s", "--max-joining-per-ip", "2", "--player-rate", "5"]);
    let ep = wt(&edge);
    let opts = ConnectOptions { timeout: Duration::from_secs(5), ..ConnectOptions::default() };

    // Sessions that never join hold their address's joining places until the join timeout.
    let e = endpoint();
    let idle1 = open(&e, &ep.url, &ep.cert_sha256, &opts).await.unwrap();
    let idle2 = open(&e, &ep.url, &ep.cert_sha256, &opts).await.unwrap();
    let third = open(&e, &ep.url, &ep.cert_sha256, &opts).await;
    assert!(third.is_err(), "a third unjoined connection from one address is refused");
    for s in [&idle1, &idle2] {
        let why = close_reason(&tokio::time::timeout(WAIT, s.closed()).await.unwrap());
        assert_eq!(why.code, Some(CloseCode::FrameMalformed), "{why}");
        assert!(why.reason.contains("join timeout"), "{why}");
    }

    // A frame over --max-message-bytes.
    let join = |id: u64| key.ticket(&edge, "relay", Some("r"), id, "p");
    let c = match WtClient::connect(&endpoint(), &ep.url, &ep.cert_sha256, &join(1), &opts).await {
        Ok(c) => c,
        Err(e) => panic!("{e}: {}", edge.log_text()),
    };
    c.send(0, &[0u8; 4096]).await.unwrap();
    let why = tokio::time::timeout(WAIT, c.closed()).await.unwrap();
    assert_eq!(why.code, Some(CloseCode::MessageTooLarge), "{why}");

    // A flood over --player-rate.
    let c = WtClient::connect(&endpoint(), &ep.url, &ep.cert_sha256, &join(2), &opts).await.unwrap();
    for _ in 0..400 {
        if c.send(0, b"spam").await.is_err() {
            break;
        }
    }
    let why = tokio::time::timeout(WAIT, c.closed()).await.unwrap();
    assert_eq!(why.code, Some(CloseCode::RateLimited), "{why}");

    // The node is fine.
    let c = WtClient::connect(&endpoint(), &ep.url, &ep.cert_sha256, &join(3), &opts).await.unwrap();
    assert_eq!(c.joined.player_id, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_probe_over_webtransport_within_the_beacons_rate_and_never_get_more_than_they_sent() {
    use outpost_proto::beacon::{Probe, encode_request, parse_reply};
    let key = TicketKey::new();
    let edge = edge(&key, &["--probe-rate", "0.01", "--probe-burst", "3"]);
    let ep = wt(&edge);
    let e = endpoint();
    let session =
        open(&e, ep.probe_url.as_deref().unwrap(), &ep.cert_sha256, &ConnectOptions::default()).await.unwrap();
    let mut answered = 0;
    for seq in 0..5u32 {
        let probe = encode_request(Probe { seq, sent_us: 7 }, 64);
        // A lost datagram is sent again; the rate limit counts every one that arrives.
        session.send_datagram(bytes::Bytes::from(probe.clone())).unwrap();
        if let Ok(Ok(b)) = tokio::time::timeout(Duration::from_millis(300), session.read_datagram()).await {
            assert!(b.len() <= probe.len(), "never more bytes than the probe");
            assert_eq!(parse_reply(&b).map(|r| r.seq), Some(seq));
            answered += 1;
        }
    }
    assert_eq!(answered, 3, "the burst of 3, then the source's rate");
    assert_eq!(edge.metric("outpost_probe_rate_limited_total"), 2.0);
    let mut junk = Vec::new();
    junk.put_slice(b"not a probe at all");
    session.send_datagram(junk.into()).unwrap();
    let why = close_reason(&tokio::time::timeout(WAIT, session.closed()).await.unwrap());
    assert_eq!((why.code, why.reason.as_str()), (Some(CloseCode::FrameMalformed), "not a beacon probe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_signed_pair_needs_no_published_hashes() {
    let dir = tempfile::tempdir().unwrap();
    outpost_tests::issue_cert(dir.path(), "edge-wt");
    let (cert, pem_key) = (dir.path().join("edge-wt.pem"), dir.path().join("edge-wt.key"));
    let key = TicketKey::new();
    let edge =
        edge(&key, &["--webtransport-cert", cert.to_str().unwrap(), "--webtransport-key", pem_key.to_str().unwrap()]);
    let ep = wt(&edge);
    assert!(ep.cert_sha256.is_empty(), "{ep:?}");
    assert!(!edge.data_dir.join("webtransport").exists(), "no certificates of its own");
    // The node presents the CA-signed certificate (pinned here by its hash, as a test can).
    let leaf = outpost_net::tls::pem_cert_sha256(&cert).unwrap();
    let ticket = key.ticket(&edge, "relay", Some("ca"), 4, "ca");
    let c = WtClient::connect(&endpoint(), &ep.url, &[leaf], &ticket, &ConnectOptions::default()).await.unwrap();
    assert_eq!(c.joined.room, "ca");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webtransport_player_that_stops_reading_is_closed_as_a_slow_consumer() {
    let key = TicketKey::new();
    let edge = edge(&key, &outpost_tests::SLOW_READER_FLAGS);
    let ep = wt(&edge);
    let e = endpoint();
    // The slow player joins, then never reads its stream again.
    let slow = open(&e, &ep.url, &ep.cert_sha256, &ConnectOptions::default()).await.unwrap();
    let (mut send, mut recv) = slow.open_bi().await.unwrap();
    let join = outpost_proto::frame::Frame::Join { ticket: key.ticket(&edge, "relay", Some("s"), 1, "slow") };
    send.write_all(&join.encode()).await.unwrap();
    let mut first = [0u8; 64];
    assert!(recv.read(&mut first).await.unwrap().is_some(), "Joined");
    // A fast player floods it with reliable messages until the node gives up on it.
    let ticket = key.ticket(&edge, "relay", Some("s"), 2, "fast");
    let fast = WtClient::connect(&e, &ep.url, &ep.cert_sha256, &ticket, &ConnectOptions::default()).await.unwrap();
    let closed = async {
        for _ in 0..20_000 {
            if fast.send(1, &[7u8; 1000]).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        std::future::pending::<()>().await;
    };
    let why = tokio::select! {
        why = slow.closed() => close_reason(&why),
        _ = closed => unreachable!(),
        _ = tokio::time::sleep(WAIT) => panic!("the slow player was never closed"),
    };
    assert_eq!(why.code, Some(CloseCode::SlowConsumer), "{why}");
    assert_eq!(edge.admin_with(None, "GET", "/healthz", b"").status, 200);
}
