//! WebSocket players (`--listen-websocket`) join the same rooms as native QUIC players, with
//! the same tickets, frames, limits and codes (close code 4000 + (code − 0x100)), from a real
//! WebSocket client over TCP; bad upgrades and bad frames are refused precisely.

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use outpost_client::{Client, ConnectOptions, Event};
use outpost_proto::CloseCode;
use outpost_proto::frame::{Frame, FrameDecoder};
use outpost_tests::{Edge, TicketKey, wait_for};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const GAME: &str = "https://game.example.com";
const WAIT: Duration = Duration::from_secs(10);

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn edge(key: &TicketKey, extra: &[&str]) -> Edge {
    let pk = format!("--ticket-pubkey={}", key.public);
    let mut args = vec!["--listen-websocket", "127.0.0.1:0", "--cors-origin", GAME, &pk, "--max-message-bytes", "1024"];
    args.extend_from_slice(extra);
    Edge::start(&args).unwrap()
}

/// Opens a WebSocket to the edge's advertised URL with `origin` (and `path` instead of the
/// advertised one when given); the HTTP status on a refused upgrade.
async fn open(edge: &Edge, origin: Option<&str>, path: Option<&str>) -> Result<Ws, u16> {
    let url = edge.ready.websocket.clone().expect("the ready file has the websocket URL");
    let url = match path {
        Some(p) => format!("ws://{}{p}", url.trim_start_matches("ws://").split('/').next().unwrap()),
        None => url,
    };
    let mut req = url.as_str().into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    let host = url.trim_start_matches("ws://").split('/').next().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn send_frame(ws: &mut Ws, f: Frame) {
    ws.send(Message::Binary(Bytes::from(f.encode()))).await.unwrap();
}

/// The next frame, or the close (code, reason).
async fn next(ws: &mut Ws) -> Result<Frame, (u16, String)> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("an answer in time") {
            Some(Ok(Message::Binary(b))) => {
                let mut d = FrameDecoder::new(1 << 20);
                d.push(&b);
                return Ok(d.next_frame().unwrap().expect("one whole frame per message"));
            }
            Some(Ok(Message::Close(Some(c)))) => return Err((u16::from(c.code), c.reason.to_string())),
            Some(Ok(Message::Close(None))) | None => return Err((0, String::new())),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err((0, e.to_string())),
        }
    }
}

fn code(c: CloseCode) -> u16 {
    c.to_websocket()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_player_and_a_quic_player_share_a_room() {
    let key = TicketKey::new();
    let edge = edge(&key, &[]);
    let url = edge.ready.websocket.clone().unwrap();
    assert!(url.starts_with("ws://127.0.0.1:") && url.ends_with("/v1/ws"), "{url}");

    // The page joins over WebSocket with the same Join frame and ticket as on QUIC.
    let mut ws = open(&edge, Some(GAME), None).await.unwrap();
    send_frame(&mut ws, Frame::Join { ticket: key.ticket(&edge, "relay", Some("r1"), 1, "web") }).await;
    match next(&mut ws).await {
        Ok(Frame::Joined { player_id, room, .. }) => assert_eq!((player_id, room.as_str()), (1, "r1")),
        other => panic!("{other:?}"),
    }
    // A native player joins the same room.
    let endpoint = outpost_client::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let ticket = key.ticket(&edge, "relay", Some("r1"), 2, "native");
    let mut native = Client::connect(
        &endpoint,
        edge.ready.quic.parse().unwrap(),
        &edge.ready.cert_sha256,
        &ticket,
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(native.joined.room, "r1");

    // WebSocket → QUIC, reliable.
    send_frame(&mut ws, Frame::Message { peer: 2, data: b"hello from the page".to_vec() }).await;
    loop {
        match native.recv_timeout(WAIT).await {
            Some(Event::Message { from: 1, data, .. }) => {
                assert_eq!(data, b"hello from the page");
                break;
            }
            Some(Event::Message { .. }) => continue,
            other => panic!("{other:?}"),
        }
    }
    // QUIC → WebSocket, reliable and unreliable: both arrive as frames, the unreliable one
    // counted as sent reliably.
    native.send(1, b"reliable to the page").await.unwrap();
    native.send_datagram(1, b"unreliable to the page").unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match next(&mut ws).await {
            Ok(Frame::Message { peer: 2, data }) => got.push(data),
            Ok(_) => continue,
            Err(e) => panic!("{e:?}"),
        }
    }
    got.sort();
    assert_eq!(got, vec![b"reliable to the page".to_vec(), b"unreliable to the page".to_vec()]);
    wait_for("the unreliable message counted as reliable", WAIT, || {
        (edge.metric("outpost_player_unreliable_as_reliable_total") >= 1.0).then_some(())
    })
    .unwrap();

    // The page leaves politely; the native player is told by the room.
    ws.close(None).await.unwrap();
    wait_for("the page's player to leave", WAIT, || {
        let info = edge.admin("GET", "/v1/rooms/r1", b"").json();
        (info["players"] == 1).then_some(())
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upgrades_tickets_and_frames_are_refused_with_the_websocket_code() {
    let key = TicketKey::new();
    let edge = edge(&key, &["--join-timeout", "1s"]);
    // The path and the origin are checked before the upgrade.
    assert_eq!(open(&edge, Some(GAME), Some("/elsewhere")).await.err(), Some(404));
    assert_eq!(open(&edge, Some("https://evil.example.net"), None).await.err(), Some(403));
    assert!(open(&edge, None, None).await.is_ok(), "a client that is not a browser sends no Origin");

    // A forged ticket: the Refused frame first, so the page can show why, then the close.
    let mut ws = open(&edge, Some(GAME), None).await.unwrap();
    let forged = TicketKey::new().ticket(&edge, "relay", None, 5, "eve");
    send_frame(&mut ws, Frame::Join { ticket: forged }).await;
    match next(&mut ws).await {
        Ok(Frame::Refused { code: c, reason }) => {
            assert_eq!(c, CloseCode::BadTicket);
            assert!(reason.contains("signature"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let (c, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(c, 4001, "bad-ticket is 4000 + 0x01");
    assert!(reason.contains("signature"), "{reason}");

    // A join without a ticket.
    let mut ws = open(&edge, Some(GAME), None).await.unwrap();
    send_frame(&mut ws, Frame::Join { ticket: String::new() }).await;
    assert!(matches!(next(&mut ws).await, Ok(Frame::Refused { code: CloseCode::BadTicket, .. })));
    assert_eq!(next(&mut ws).await.unwrap_err().0, 4001);

    // A message that is not exactly one frame, a text message, a frame over the size limit.
    let join = |id: u64| Frame::Join { ticket: key.ticket(&edge, "relay", Some("r2"), id, "p") };
    let mut two = join(6).encode();
    two.extend(Frame::Message { peer: 0, data: b"x".to_vec() }.encode());
    let mut ws = open(&edge, Some(GAME), None).await.unwrap();
    ws.send(Message::Binary(Bytes::from(two))).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap_err().0, code(CloseCode::FrameMalformed));

    let mut ws = open(&edge, Some(GAME), None).await.unwrap();
    ws.send(Message::Text("{\"join\":1}".into())).await.unwrap();
    let (c, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!((c, reason.contains("binary")), (code(CloseCode::FrameMalformed), true), "{reason}");

    let mut ws = open(&edge, Some(GAME), None).await.unwrap();
    send_frame(&mut ws, join(7)).await;
    assert!(matches!(next(&mut ws).await, Ok(Frame::Joined { .. })));
    send_frame(&mut ws, Frame::Message { peer: 0, data: vec![0; 4096] }).await;
    assert_eq!(next(&mut ws).await.unwrap_err().0, code(CloseCode::MessageTooLarge));

    // A session that never joins is closed at the join timeout.
    let mut ws = open(&edge, Some(GAME), None).await.unwrap();
    let (c, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(c, code(CloseCode::FrameMalformed), "{reason}");
    assert!(reason.contains("join timeout"), "{reason}");

    // The node is fine: a good player still joins.
    let mut ws = open(&edge, Some(GAME), None).await.unwrap();
    send_frame(&mut ws, join(8)).await;
    assert!(matches!(next(&mut ws).await, Ok(Frame::Joined { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_probe_over_websocket_within_the_beacons_rate_and_never_get_more_than_they_sent() {
    use outpost_proto::beacon::{Probe, encode_request, parse_reply};
    let key = TicketKey::new();
    let edge = edge(&key, &["--probe-rate", "0.01", "--probe-burst", "3"]);
    let mut ws = open(&edge, Some(GAME), Some("/v1/probe")).await.unwrap();
    let mut answered = 0;
    for seq in 0..5u32 {
        let probe = encode_request(Probe { seq, sent_us: 7 }, 64);
        ws.send(Message::Binary(Bytes::from(probe.clone()))).await.unwrap();
        if let Ok(Some(Ok(Message::Binary(b)))) = tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
            assert!(b.len() <= probe.len(), "never more bytes than the probe");
            assert_eq!(parse_reply(&b).map(|r| r.seq), Some(seq));
            answered += 1;
        }
    }
    assert_eq!(answered, 3, "the burst of 3, then the source's rate");
    assert_eq!(edge.metric("outpost_probe_rate_limited_total"), 2.0);
    // Anything that is not a probe ends the session with a policy close.
    ws.send(Message::Binary(Bytes::from_static(b"not a probe at all"))).await.unwrap();
    let (c, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!((c, reason.as_str()), (1008, "not a beacon probe"));
    // The probe URL is the play URL's sibling, and other origins are refused here too.
    assert_eq!(open(&edge, Some("https://evil.example.net"), Some("/v1/probe")).await.err(), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_ca_signed_pair_carries_the_same_join() {
    let dir = tempfile::tempdir().unwrap();
    outpost_tests::issue_cert(dir.path(), "edge-ws");
    let (cert, pem_key) = (dir.path().join("edge-ws.pem"), dir.path().join("edge-ws.key"));
    let key = TicketKey::new();
    let edge = edge(&key, &["--websocket-cert", cert.to_str().unwrap(), "--websocket-key", pem_key.to_str().unwrap()]);
    let url = edge.ready.websocket.clone().unwrap();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    // A client that trusts the fleet CA, as a browser trusts a public one.
    let trust = outpost_net::tls::HttpsTrust::CaFile(dir.path().join("ca/ca.pem"));
    let tls = outpost_net::tls::https_client_config(&trust).unwrap();
    let host = url.trim_start_matches("wss://").split('/').next().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream).await.unwrap();
    let join = Frame::Join { ticket: key.ticket(&edge, "relay", Some("tls"), 9, "sec") }.encode();
    ws.send(Message::Binary(Bytes::from(join))).await.unwrap();
    let b = match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Binary(b))) => b,
        other => panic!("{other:?}"),
    };
    let mut d = FrameDecoder::new(1 << 20);
    d.push(&b);
    assert!(matches!(d.next_frame(), Ok(Some(Frame::Joined { player_id: 9, .. }))));
    // Plain ws:// to the same port is not a TLS handshake: refused, and the node stays up.
    let plain = tokio::net::TcpStream::connect(&host).await.unwrap();
    let ws_url = url.replacen("wss://", "ws://", 1);
    assert!(tokio_tungstenite::client_async(ws_url.as_str(), plain).await.is_err());
    assert_eq!(edge.admin("GET", "/healthz", b"").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_player_that_stops_reading_is_closed_as_a_slow_consumer() {
    let key = TicketKey::new();
    let edge = edge(&key, &outpost_tests::SLOW_READER_FLAGS);
    // The slow page joins, then never reads again (its socket's buffers fill, then the node's).
    let mut slow = open(&edge, Some(GAME), None).await.unwrap();
    send_frame(&mut slow, Frame::Join { ticket: key.ticket(&edge, "relay", Some("s"), 1, "slow") }).await;
    assert!(matches!(next(&mut slow).await, Ok(Frame::Joined { .. })));
    let endpoint = outpost_client::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let ticket = key.ticket(&edge, "relay", Some("s"), 2, "fast");
    let fast = Client::connect(
        &endpoint,
        edge.ready.quic.parse().unwrap(),
        &edge.ready.cert_sha256,
        &ticket,
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    // Flood until the node closes the slow player (bounded in count and time).
    let players = || edge.admin("GET", "/v1/rooms/s", b"").json()["players"].as_u64();
    let deadline = std::time::Instant::now() + WAIT;
    let mut sent = 0;
    while players() == Some(2) {
        assert!(std::time::Instant::now() < deadline, "the slow page was never closed ({sent} messages sent)");
        for _ in 0..200 {
            fast.send(1, &[7u8; 1000]).await.unwrap();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(players(), Some(1), "only the fast player is left");
    assert_eq!(edge.metric("outpost_players_slow_consumer_total"), 1.0, "closed as a slow consumer");
}
