//! Fuzz targets: each takes arbitrary bytes to one of the parsers that face the network, a file
//! or a flag, and checks what must hold for any input: no panic, bounded work, and for what does
//! parse, that encoding it again gives the same meaning. The fuzzers in `fuzz/` (cargo-fuzz,
//! libFuzzer) call these; `tests/replay.rs` runs every corpus entry and every crash found through
//! them in `make test`. Nothing here links wasmtime: the admin API's routing and the outbox's
//! records are pure modules of `outpost-proto`.

use outpost_proto::frame::{Frame, FrameDecoder};
use outpost_proto::link::CoreFrame;

/// A target: any bytes in, a panic if something that must hold does not.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus folder and fuzz binary have.
pub const TARGETS: &[(&str, Target)] = &[
    ("player_frames", player_frames),
    ("player_datagrams", player_datagrams),
    ("link_frames", link_frames),
    ("outbox_records", outbox_records),
    ("tickets", tickets),
    ("key_text", key_text),
    ("beacon", beacon),
    ("api_json", api_json),
    ("admin_routes", admin_routes),
];

/// Largest player frame the node accepts by default (`--max-message-bytes` + header).
const MAX_PLAYER_FRAME: usize = 64 << 10;

/// A player's stream, fed in pieces whose sizes come from the input: frames come out whole or
/// not at all, and each re-encodes to a frame that decodes the same.
pub fn player_frames(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else { return };
    let mut d = FrameDecoder::new(MAX_PLAYER_FRAME);
    let step = usize::from(split).max(1);
    for chunk in data.chunks(step) {
        d.push(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => check_frame(&f),
                Ok(None) => break,
                // The node closes the connection at the first bad frame; so does the target.
                Err(_) => return,
            }
        }
        assert!(d.buffered() <= MAX_PLAYER_FRAME + data.len(), "the decoder holds more than it was given");
    }
}

fn check_frame(f: &Frame) {
    let bytes = f.encode();
    let mut again = FrameDecoder::new(usize::MAX >> 1);
    again.push(&bytes);
    let back = again.next_frame().expect("an encoded frame decodes").expect("whole");
    assert_eq!(&back, f, "a frame re-encodes to itself");
}

/// A datagram's peer header.
pub fn player_datagrams(data: &[u8]) {
    if let Ok((peer, payload)) = outpost_proto::frame::decode_peer(data) {
        assert_eq!(outpost_proto::frame::encode_peer(peer, payload), data);
    }
}

/// An edge ↔ core link frame body.
pub fn link_frames(data: &[u8]) {
    if let Ok(f) = CoreFrame::decode_body(data) {
        let bytes = f.encode();
        // The encoding is a 4-byte length, then the body.
        let again = CoreFrame::decode_body(&bytes[4..]).expect("an encoded link frame decodes");
        assert_eq!(format!("{again:?}"), format!("{f:?}"), "a link frame re-encodes to itself");
    }
}

/// Outbox segment bytes, as a crash or a bad disk may leave them: records decode one after
/// another until the first that is not whole and valid, and each re-encodes to its own bytes (a
/// record of the layout before room epochs gains an epoch zero, and reads back the same).
pub fn outbox_records(data: &[u8]) {
    let mut at = 0;
    while let Some((seq, u, n)) = outpost_proto::outbox::decode_record(&data[at..]) {
        assert!(n > 0 && at + n <= data.len());
        let mut again = Vec::new();
        outpost_proto::outbox::encode_record(&mut again, seq, &u.room, u.epoch, &u.key, &u.value);
        if again.len() == n {
            assert_eq!(again, data[at..at + n], "a record re-encodes to its bytes");
        } else {
            let back = outpost_proto::outbox::decode_record(&again).map(|(s, u, _)| (s, u));
            assert_eq!(back, Some((seq, u)), "an older record reads back the same");
        }
        at += n;
    }
}

/// The key every ticket target checks against (fixed, so crashes replay).
fn ticket_key() -> outpost_proto::keys::Ed25519SigningKey {
    outpost_proto::keys::Ed25519SigningKey::from_bytes(&[7u8; 32])
}

/// A ticket as a player presents it: refused with a code, or valid for this node only.
pub fn tickets(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let key = ticket_key().verifying_key();
    if let Ok(t) = outpost_proto::ticket::verify(&text, &key, "node-1", 1_800_000_000) {
        assert_eq!(t.node, "node-1");
    }
}

/// Key and certificate-pin text, as files and flags give them.
pub fn key_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(k) = outpost_proto::keys::public_key_from_text(&text) {
        let again = outpost_proto::keys::public_key_to_text(&k);
        assert_eq!(outpost_proto::keys::public_key_from_text(&again).ok(), Some(k));
    }
    if let Ok(k) = outpost_proto::keys::signing_key_from_text(&text) {
        let again = outpost_proto::keys::signing_key_to_text(&k);
        assert_eq!(outpost_proto::keys::signing_key_from_text(&again).map(|k| k.to_bytes()).ok(), Some(k.to_bytes()));
    }
    let _ = outpost_net::tls::parse_pin(&text);
}

/// A probe datagram at the beacon, and a reply at the client.
pub fn beacon(data: &[u8]) {
    let mut d = data.to_vec();
    if outpost_proto::beacon::make_reply(&mut d) {
        assert_eq!(d.len(), data.len(), "a reply is never larger than its request");
        assert!(outpost_proto::beacon::parse_reply(&d).is_some());
    }
    let _ = outpost_proto::beacon::parse_reply(data);
}

/// The JSON bodies the router and the edge take: heartbeats (then the router's field checks),
/// probe batches, route replies (a client reads them), room creation.
pub fn api_json(data: &[u8]) {
    use outpost_proto::api::{CreateRoom, Heartbeat, ProbeBatch, Route};
    if let Ok(hb) = serde_json::from_slice::<Heartbeat>(data) {
        let _ = outpost_router::routing::check_heartbeat(&hb);
    }
    let _ = serde_json::from_slice::<ProbeBatch>(data);
    let _ = serde_json::from_slice::<Route>(data);
    let _ = serde_json::from_slice::<CreateRoom>(data);
}

/// The admin API's routing: `METHOD\npath\nquery`.
pub fn admin_routes(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (method, path, query) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Ok(r) = outpost_proto::admin::route(method, path, query) {
        assert!(path.contains("healthz") || path.contains("metrics") || r.needs_token());
    }
}

/// Valid examples of each target's input, to start a corpus from.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use outpost_proto::api::{CreateRoom, Heartbeat, NodeModule};
    let mut out = Vec::new();
    let frames = [
        Frame::Join { ticket: "t".into() },
        Frame::Message { peer: 3, data: b"hello".to_vec() },
        Frame::Refused { code: outpost_proto::CloseCode::Kicked, reason: "bye".into() },
    ];
    let mut stream = vec![7u8];
    for f in &frames {
        stream.extend_from_slice(&f.encode());
    }
    out.push(("player_frames", stream));
    out.push(("player_datagrams", outpost_proto::frame::encode_peer(42, b"pos 1 2")));
    let link = CoreFrame::Hello { token: "t".into(), edge: "edge-1".into(), stream: "edge-1/a".into() }.encode();
    out.push(("link_frames", link[4..].to_vec()));
    let mut records = Vec::new();
    let epoch = outpost_proto::link::RoomEpoch { lineage: 9, moves: 1 };
    outpost_proto::outbox::encode_record(&mut records, 1, "room", epoch, "player/1", b"score");
    outpost_proto::outbox::encode_record(&mut records, 2, "room", Default::default(), "k", b"");
    out.push(("outbox_records", records));
    let t = outpost_proto::ticket::TicketPayload::new(5, "Bo", "node-1", "arena", None, 1_800_000_060);
    out.push(("tickets", t.sign(&ticket_key()).into_bytes()));
    out.push(("key_text", outpost_proto::keys::public_key_to_text(&ticket_key().verifying_key()).into_bytes()));
    out.push(("key_text", "ab".repeat(32).into_bytes()));
    out.push((
        "beacon",
        outpost_proto::beacon::encode_request(outpost_proto::beacon::Probe { seq: 1, sent_us: 2 }, 64),
    ));
    let hb = Heartbeat {
        id: "n1".into(),
        region: "eu".into(),
        lat: 50.1,
        lon: 8.7,
        quic_addr: "127.0.0.1:7701".into(),
        probe_addr: "127.0.0.1:7702".into(),
        admin_url: "http://127.0.0.1:7703".into(),
        admin_tls_sha256: None,
        cert_sha256: "ab".repeat(32),
        capacity: 100,
        players: 1,
        rooms: 1,
        modules: vec![NodeModule { name: "arena".into(), version: "v".into() }],
        cpu: 0.5,
        interval_ms: 2000,
        accepting: true,
        boot_id: Some("b".into()),
        version: Some("0.1.0".into()),
        redeemed: Some(3),
        features: vec!["match-tickets".into()],
        websocket: None,
        webtransport: None,
    };
    out.push(("api_json", serde_json::to_vec(&hb).unwrap_or_default()));
    out.push(("api_json", br#"{"results":[{"node":"n1","rtt_ms":12.5,"loss":0.0}]}"#.to_vec()));
    out.push((
        "api_json",
        br#"{"module":"arena","players":[{"id":1,"name":"a","ip":"1.2.3.4","results":[{"node":"n1","rtt_ms":9}]}],"max_rtt_ms":80}"#.to_vec(),
    ));
    let m = outpost_proto::ticket::TicketPayload::for_match(7, "ada", "n1", "arena", "match-1", 8, u64::MAX);
    out.push(("tickets", m.sign(&ticket_key()).into_bytes()));
    let room = CreateRoom {
        module: "arena".into(),
        room: Some("r".into()),
        config: None,
        tick_hz: Some(20),
        max_players: None,
    };
    out.push(("api_json", serde_json::to_vec(&room).unwrap_or_default()));
    out.push(("admin_routes", b"POST\n/v1/rooms/r1/signal\n".to_vec()));
    out.push(("admin_routes", b"DELETE\n/v1/modules/arena\nforce=true".to_vec()));
    out
}
