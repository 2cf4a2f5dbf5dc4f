//! Links a test can cut: a UDP relay (for QUIC, edge → core) and a TCP relay (for HTTP,
//! edge → router) on loopback, each forwarding to one target until [`Cut::cut`] and again
//! after [`Cut::heal`]. While cut, the UDP relay drops every datagram and the TCP relay closes
//! every connection and refuses new ones, as a partition would look from either side. There is
//! no iptables or nft here, and `ip link set down` needs namespaces for both ends; this cuts the
//! same paths without them.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The switch of a relay; dropping it stops the relay.
pub struct Cut {
    /// Where peers connect instead of the target.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Cut {
    /// Cuts the link: nothing passes until [`Cut::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets traffic pass again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// A UDP relay to `target` for one peer at a time (the latest to send).
pub fn udp(target: SocketAddr) -> Cut {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&front, &back] {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    }
    let relay =
        Cut { addr: front.local_addr().unwrap(), cut: Arc::default(), stop: Arc::default(), open: Arc::default() };
    let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let (f2, b2) = (front.try_clone().unwrap(), back.try_clone().unwrap());
    let (cut, stop, peer2) = (relay.cut.clone(), relay.stop.clone(), peer.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                *peer2.lock().unwrap() = Some(from);
                if !cut.load(Ordering::SeqCst) {
                    let _ = back.send_to(&buf[..n], target);
                }
            }
        }
    });
    let (cut, stop) = (relay.cut.clone(), relay.stop.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((n, _)) = b2.recv_from(&mut buf) {
                let to = *peer.lock().unwrap();
                if let (Some(to), false) = (to, cut.load(Ordering::SeqCst)) {
                    let _ = f2.send_to(&buf[..n], to);
                }
            }
        }
    });
    relay
}

/// A TCP relay to `target`.
pub fn tcp(target: SocketAddr) -> Cut {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let relay =
        Cut { addr: listener.local_addr().unwrap(), cut: Arc::default(), stop: Arc::default(), open: Arc::default() };
    let (cut, stop, open) = (relay.cut.clone(), relay.stop.clone(), relay.open.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((client, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            if cut.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            let _ = client.set_nonblocking(false);
            let Ok(server) = TcpStream::connect(target) else { continue };
            {
                let mut open = open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
            }
            for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
    relay
}
