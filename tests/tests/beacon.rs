//! The probe beacon of a real edge-node: echo, no amplification, malformed drops, rate limits.

use outpost_proto::beacon::{self, Probe};
use outpost_tests::Edge;
use std::net::UdpSocket;
use std::time::Duration;

fn socket(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind(format!("{ip}:0")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    s
}

#[test]
fn beacon_echoes_without_amplifying_and_drops_malformed() {
    let edge = Edge::start(&["--probe-rate", "1000", "--probe-burst", "1000"]).unwrap();
    let s = socket("127.0.0.1");
    s.connect(&edge.ready.probe).unwrap();
    let mut buf = [0u8; 2048];
    for (seq, len) in [16usize, 17, 64, 100, 512, 1000, 1200].into_iter().enumerate() {
        let p = Probe { seq: seq as u32, sent_us: 42 + seq as u64 };
        let req = beacon::encode_request(p, len);
        s.send(&req).unwrap();
        let n = s.recv(&mut buf).unwrap();
        assert!(n <= req.len(), "reply {n} > request {}", req.len());
        assert_eq!(n, req.len());
        assert_eq!(beacon::parse_reply(&buf[..n]), Some(p));
    }
    // Malformed: too short, wrong magic, a reply, oversized. None is answered.
    let mut reply = beacon::encode_request(Probe { seq: 1, sent_us: 1 }, 32);
    beacon::make_reply(&mut reply);
    for bad in [vec![1u8; 3], vec![0u8; 64], reply, vec![b'O'; 1500]] {
        s.send(&bad).unwrap();
        assert!(s.recv(&mut buf).is_err(), "no reply to a malformed probe");
    }
    assert_eq!(edge.metric("outpost_probe_malformed_total"), 4.0);
    assert_eq!(edge.metric("outpost_probe_replies_total"), 7.0);
}

#[test]
fn flooding_source_is_rate_limited_while_another_is_answered() {
    let edge = Edge::start(&["--probe-rate", "5", "--probe-burst", "10"]).unwrap();
    let flooder = socket("127.0.0.1");
    flooder.set_nonblocking(true).unwrap();
    for i in 0..500u32 {
        let _ = flooder.send_to(&beacon::encode_request(Probe { seq: i, sent_us: 0 }, 64), &edge.ready.probe);
    }
    // Count what came back to the flooder: at most the burst plus a little refill.
    flooder.set_nonblocking(false).unwrap();
    flooder.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 2048];
    let mut replies = 0;
    while flooder.recv_from(&mut buf).is_ok() {
        replies += 1;
    }
    assert!((10..50).contains(&replies), "flooder got {replies} replies");
    // Another source (a different loopback address) is still answered.
    let other = socket("127.0.0.2");
    other.send_to(&beacon::encode_request(Probe { seq: 7, sent_us: 9 }, 32), &edge.ready.probe).unwrap();
    let (n, _) = other.recv_from(&mut buf).unwrap();
    assert_eq!(beacon::parse_reply(&buf[..n]).unwrap().seq, 7);
    // The kernel may drop some of a non-blocking burst before the beacon reads it, so count only
    // what is certain: the beacon refused some, and answered no more than the bucket allows.
    let limited = edge.metric("outpost_probe_rate_limited_total");
    assert!(limited > 0.0, "the flooding source was rate limited");
    assert!(edge.metric("outpost_probe_replies_total") < 51.0);
}
