//! Which incoming QUIC connections the node takes on, decided before any handshake work.
//!
//! Every connection costs memory (about 40–60 KiB each, measured in BENCHMARKS.md) from its first
//! packet, and until it has sent a valid `Join` nobody has vouched for it. So the node caps its
//! open connections (`--max-connections`) and the connections from one IP that have not joined
//! yet (`--max-joining-per-ip`), and refuses the rest with a stateless QUIC `CONNECTION_REFUSED`
//! that costs one packet. Past half the cap, a client must also prove its address with a QUIC
//! retry before the node keeps any state for it, so spoofed handshakes cannot fill the node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What to do with an incoming connection.
#[derive(Debug)]
pub enum Verdict {
    /// Take it on; the slot is released when it is dropped.
    Accept(ConnSlot),
    /// Ask the client to prove its address first (a QUIC retry), then decide again.
    Retry,
    /// Refuse it, for the reason given.
    Refuse(&'static str),
}

/// The node's connection counts and caps.
#[derive(Debug)]
pub struct Admission {
    max_open: usize,
    max_joining_per_ip: u32,
    open: AtomicUsize,
    joining: Mutex<HashMap<IpAddr, u32>>,
}

impl Admission {
    /// Caps of `max_open` connections in all and `max_joining_per_ip` not yet joined per IP.
    pub fn new(max_open: usize, max_joining_per_ip: u32) -> Arc<Self> {
        Arc::new(Admission { max_open, max_joining_per_ip, open: AtomicUsize::new(0), joining: Mutex::default() })
    }

    fn joining(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.joining.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides for a connection from `ip`; `validated` is whether the client already proved its
    /// address with a retry.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, validated: bool) -> Verdict {
        // A v4 client on a dual-stack socket shows as ::ffff:a.b.c.d; count it as a.b.c.d.
        let ip = ip.to_canonical();
        let mut joining = self.joining();
        let open = self.open.load(Ordering::SeqCst);
        if open >= self.max_open {
            return Verdict::Refuse("the node is at its connection limit");
        }
        if joining.get(&ip).copied().unwrap_or(0) >= self.max_joining_per_ip {
            return Verdict::Refuse("too many connections from this address have not joined yet");
        }
        if !validated && open >= self.max_open / 2 {
            return Verdict::Retry;
        }
        *joining.entry(ip).or_insert(0) += 1;
        self.open.fetch_add(1, Ordering::SeqCst);
        Verdict::Accept(ConnSlot { admission: self.clone(), ip, joining: true })
    }

    /// Open connections, joined or not.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections from `ip` that have not joined yet.
    #[cfg(test)]
    fn joining_from(&self, ip: IpAddr) -> u32 {
        self.joining().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    fn done_joining(&self, ip: IpAddr) {
        let mut joining = self.joining();
        if let Some(n) = joining.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Only addresses with a connection in flight are kept, so the map stays small.
                joining.remove(&ip);
            }
        }
    }
}

/// One admitted connection's place in the counts.
#[derive(Debug)]
pub struct ConnSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
    joining: bool,
}

impl ConnSlot {
    /// The connection has joined: it no longer counts against its address's joining cap.
    pub fn joined(&mut self) {
        if std::mem::replace(&mut self.joining, false) {
            self.admission.done_joining(self.ip);
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.joined();
        self.admission.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn slot(v: Verdict) -> ConnSlot {
        match v {
            Verdict::Accept(s) => s,
            other => panic!("expected Accept, got {other:?}"),
        }
    }

    #[test]
    fn caps_open_connections_and_frees_them_on_drop() {
        let a = Admission::new(4, 10);
        let s: Vec<ConnSlot> = (0..4).map(|i| slot(a.admit(ip(&format!("10.0.0.{i}")), true))).collect();
        assert_eq!(a.open(), 4);
        assert!(matches!(a.admit(ip("10.0.0.9"), true), Verdict::Refuse("the node is at its connection limit")));
        drop(s);
        assert_eq!(a.open(), 0);
        assert!(matches!(a.admit(ip("10.0.0.9"), true), Verdict::Accept(_)));
    }

    #[test]
    fn caps_joining_connections_per_address_until_they_join() {
        let a = Admission::new(100, 2);
        let mut first = slot(a.admit(ip("192.0.2.1"), true));
        let _second = slot(a.admit(ip("192.0.2.1"), true));
        assert!(matches!(a.admit(ip("192.0.2.1"), true), Verdict::Refuse(_)));
        // The same address written as v4-mapped v6 is the same address.
        assert!(matches!(a.admit(ip("::ffff:192.0.2.1"), true), Verdict::Refuse(_)));
        // Other addresses are not affected.
        assert!(matches!(a.admit(ip("192.0.2.2"), true), Verdict::Accept(_)));
        first.joined();
        first.joined(); // twice is once
        assert_eq!(a.joining_from(ip("192.0.2.1")), 1);
        let third = slot(a.admit(ip("192.0.2.1"), true));
        drop(third);
        drop(first);
        assert_eq!(a.joining_from(ip("192.0.2.1")), 1, "only the second is still joining");
        assert_eq!(a.open(), 1);
    }

    #[test]
    fn past_half_the_cap_unvalidated_clients_must_retry() {
        let a = Admission::new(4, 10);
        let _s: Vec<ConnSlot> = (0..2).map(|_| slot(a.admit(ip("10.0.0.1"), false))).collect();
        assert!(matches!(a.admit(ip("10.0.0.2"), false), Verdict::Retry));
        assert!(matches!(a.admit(ip("10.0.0.2"), true), Verdict::Accept(_)));
    }
}
