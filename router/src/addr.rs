//! Who the client is: the address a route or a probe report is made for, and the network prefix it
//! is learned under. Pure functions over addresses.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// `::ffff:a.b.c.d` (what a `[::]` socket shows for an IPv4 peer) as the IPv4 address it is, so
/// GeoIP and prefixes see one form per client.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client of a request: the socket peer, unless that peer is a trusted proxy, in which case
/// the nearest `X-Forwarded-For` hop that is not itself a trusted proxy. Hops are read right to
/// left because only the right end of the header was written by proxies we trust; anything left
/// of the first untrusted hop could have been made up by the client.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let mut client = peer;
    for hop in header.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // A malformed hop ends what we can believe; the last good one is the client.
            break;
        };
        client = canonical(ip);
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// The network a client address is learned under: its /`v4_len` or /`v6_len` prefix, packed as
/// the masked address in 128 bits plus the length, so that the key is small and hashes fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrefixKey {
    bits: u128,
    len: u8,
    v4: bool,
}

impl PrefixKey {
    /// The prefix of `ip` (canonicalized first).
    pub fn of(ip: IpAddr, v4_len: u8, v6_len: u8) -> PrefixKey {
        match canonical(ip) {
            IpAddr::V4(v4) => {
                let len = v4_len.min(32);
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                PrefixKey { bits: (u32::from(v4) & mask) as u128, len, v4: true }
            }
            IpAddr::V6(v6) => {
                let len = v6_len.min(128);
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                PrefixKey { bits: u128::from(v6) & mask, len, v4: false }
            }
        }
    }

    /// CIDR text, for logs.
    pub fn to_cidr(self) -> String {
        if self.v4 {
            format!("{}/{}", std::net::Ipv4Addr::from(self.bits as u32), self.len)
        } else {
            format!("{}/{}", Ipv6Addr::from(self.bits), self.len)
        }
    }
}

/// Parses `--trusted-proxy` values: CIDRs, or single addresses meaning just that host.
pub fn parse_cidrs(values: &[String]) -> Result<Vec<IpNet>, String> {
    values
        .iter()
        .map(|v| {
            let v = v.trim();
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{v:?} is not a CIDR like 10.0.0.0/8 or an address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_v4_is_canonicalized() {
        assert_eq!(canonical(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = parse_cidrs(&["10.0.0.0/8".into(), "127.0.0.1".into()]).unwrap();
        let cases = [
            ("untrusted peer: header ignored", "203.0.113.9", Some("198.51.100.1"), "203.0.113.9"),
            ("trusted peer, one hop", "10.1.2.3", Some("198.51.100.1"), "198.51.100.1"),
            ("mapped trusted peer", "::ffff:10.1.2.3", Some("198.51.100.1"), "198.51.100.1"),
            ("client-made left part skipped", "10.1.2.3", Some("6.6.6.6, 198.51.100.1, 10.9.9.9"), "198.51.100.1"),
            ("no header", "10.1.2.3", None, "10.1.2.3"),
            ("garbage stops the walk", "10.1.2.3", Some("1.2.3.4, nonsense"), "10.1.2.3"),
            ("all hops trusted", "127.0.0.1", Some("10.0.0.1"), "10.0.0.1"),
        ];
        for (name, peer, header, want) in cases {
            assert_eq!(client_ip(ip(peer), header, &trusted), ip(want), "{name}");
        }
        assert!(parse_cidrs(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn prefixes_group_neighbours() {
        let a = PrefixKey::of(ip("198.51.100.17"), 24, 48);
        assert_eq!(a, PrefixKey::of(ip("::ffff:198.51.100.200"), 24, 48));
        assert_ne!(a, PrefixKey::of(ip("198.51.101.17"), 24, 48));
        assert_eq!(a.to_cidr(), "198.51.100.0/24");
        let b = PrefixKey::of(ip("2001:db8:1:2::5"), 24, 48);
        assert_eq!(b, PrefixKey::of(ip("2001:db8:1:ffff::1"), 24, 48));
        assert_eq!(b.to_cidr(), "2001:db8:1::/48");
        assert_eq!(PrefixKey::of(ip("1.2.3.4"), 0, 0).to_cidr(), "0.0.0.0/0");
    }
}
