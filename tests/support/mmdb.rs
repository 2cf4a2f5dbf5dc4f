//! A small MaxMind DB writer, so tests make real `.mmdb` files with the cities they need, in
//! both record layouts the router reads. It writes the format as published in the MaxMind DB
//! spec (binary search tree, data section, metadata) and the real `maxminddb` reader loads it.
//! It supports what the tests need: non-overlapping networks, 32-bit records, maps, strings,
//! doubles, floats and unsigned ints.

use std::net::IpAddr;

/// A value in the data section.
#[derive(Debug, Clone)]
pub enum Value {
    /// UTF-8 string.
    Str(String),
    /// 64-bit float.
    F64(f64),
    /// 32-bit float.
    F32(f32),
    /// Unsigned 16-bit.
    U16(u16),
    /// Unsigned 32-bit.
    U32(u32),
    /// Unsigned 64-bit.
    U64(u64),
    /// Map with string keys, in order.
    Map(Vec<(String, Value)>),
    /// Array.
    Array(Vec<Value>),
}

/// A map from `(key, value)` pairs.
pub fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A string value.
pub fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

/// A city record in the MaxMind GeoIP2/GeoLite2 City layout.
pub fn maxmind_city(city: &str, country: &str, lat: f64, lon: f64) -> Value {
    map(vec![
        ("city", map(vec![("geoname_id", Value::U32(1)), ("names", map(vec![("en", s(city)), ("de", s(city))]))])),
        ("country", map(vec![("iso_code", s(country)), ("names", map(vec![("en", s(country))]))])),
        (
            "location",
            map(vec![
                ("accuracy_radius", Value::U16(20)),
                ("latitude", Value::F64(lat)),
                ("longitude", Value::F64(lon)),
                ("time_zone", s("UTC")),
            ]),
        ),
    ])
}

/// A city record in the flat DB-IP / ip-location-db layout (floats, as those files store them).
pub fn flat_city(city: &str, country: &str, lat: f64, lon: f64) -> Value {
    map(vec![
        ("city", s(city)),
        ("country_code", s(country)),
        ("latitude", Value::F32(lat as f32)),
        ("longitude", Value::F32(lon as f32)),
        ("state1", s("")),
        ("postcode", s("")),
        ("timezone", s("UTC")),
    ])
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (first, ext): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind <= 7 {
        out.push(kind << 5 | first);
    } else {
        out.push(first);
        out.push(kind - 7);
    }
    out.extend_from_slice(&ext);
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64, width: usize) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take(8 - 1).take_while(|&&b| b == 0).count().max(8 - width);
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

/// Encodes `v` in the MaxMind DB data format.
pub fn encode(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::F64(f) => {
            control(out, 3, 8);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::U16(n) => uint(out, 5, *n as u64, 2),
        Value::U32(n) => uint(out, 6, *n as u64, 4),
        Value::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(out, &Value::Str(k.clone()));
                encode(out, v);
            }
        }
        Value::U64(n) => uint(out, 9, *n, 8),
        Value::Array(items) => {
            control(out, 11, items.len());
            for i in items {
                encode(out, i);
            }
        }
        Value::F32(f) => {
            control(out, 15, 4);
            out.extend_from_slice(&f.to_be_bytes());
        }
    }
}

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(u32),
    Data(usize),
}

/// Builds a database from networks (`"198.51.100.0/24"`) and their records. `ip_version` 6
/// puts IPv4 networks at `::a.b.c.d`, as MaxMind's own files do.
pub fn build(ip_version: u16, database_type: &str, entries: &[(&str, Value)]) -> Vec<u8> {
    let depth: u32 = if ip_version == 6 { 128 } else { 32 };
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty, Record::Empty]];
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for (i, (net, value)) in entries.iter().enumerate() {
        let (addr, len) = net.split_once('/').expect("network as addr/len");
        let addr: IpAddr = addr.parse().expect("network address");
        let len: u32 = len.parse().expect("prefix length");
        // The key sits in the low bits; the tree is walked from bit `depth - 1` down.
        let (key, len): (u128, u32) = match (addr, ip_version) {
            (IpAddr::V4(v4), 4) => (u32::from(v4) as u128, len),
            (IpAddr::V4(v4), _) => (u32::from(v4) as u128, 96 + len),
            (IpAddr::V6(v6), 6) => (u128::from(v6), len),
            (IpAddr::V6(_), _) => panic!("an IPv6 network in an IPv4 database"),
        };
        offsets.push(data.len());
        encode(&mut data, value);
        let mut node = 0usize;
        for d in 0..len {
            let bit = ((key >> (depth - 1 - d)) & 1) as usize;
            if d + 1 == len {
                nodes[node][bit] = Record::Data(i);
                break;
            }
            node = match nodes[node][bit] {
                Record::Node(n) => n as usize,
                Record::Empty => {
                    nodes.push([Record::Empty, Record::Empty]);
                    let n = nodes.len() - 1;
                    nodes[node][bit] = Record::Node(n as u32);
                    n
                }
                Record::Data(_) => panic!("overlapping networks are not supported"),
            };
        }
    }
    let count = nodes.len() as u32;
    let mut out = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Record::Empty => count,
                Record::Node(n) => n,
                Record::Data(i) => count + 16 + offsets[i] as u32,
            };
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let meta = map(vec![
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(1_800_000_000)),
        ("database_type", s(database_type)),
        ("description", map(vec![("en", s("Outpost test database"))])),
        ("ip_version", Value::U16(ip_version)),
        ("languages", Value::Array(vec![s("en")])),
        ("node_count", Value::U32(count)),
        ("record_size", Value::U16(32)),
    ]);
    encode(&mut out, &meta);
    out
}
