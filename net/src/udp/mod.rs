//! UDP sockets for QUIC: binding with large kernel buffers, quinn endpoints on them, and the
//! pieces of a loop that drives `quinn-proto` itself ([`batch`], [`proto_loop`]).

pub mod batch;
pub mod proto_loop;

use std::net::SocketAddr;

/// Socket buffer size asked for on QUIC sockets. Linux's default (208 KiB) overflows when a busy
/// node or a bot process with many connections on one socket falls a few milliseconds behind: the
/// kernel drops datagrams (`RcvbufErrors`), QUIC backs off, and under sustained loss a connection
/// can go silent long enough to hit its idle timeout. The kernel caps the request at
/// `net.core.rmem_max`/`wmem_max` (raise them on busy hosts; see deploy/INSTALL.md).
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

/// A QUIC endpoint on `bind` with [`UDP_BUFFER_BYTES`] socket buffers (as much of them as the
/// kernel grants), serving `server` when given.
pub fn quic_endpoint(bind: SocketAddr, server: Option<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    quic_endpoint_sized(bind, server, UDP_BUFFER_BYTES)
}

/// A QUIC endpoint on `bind` with `buffer` bytes of socket buffers each way.
pub fn quic_endpoint_sized(
    bind: SocketAddr,
    server: Option<quinn::ServerConfig>,
    buffer: usize,
) -> std::io::Result<quinn::Endpoint> {
    let socket = bind_udp(bind, buffer)?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, quic_runtime()?)
}

/// A UDP socket bound to `bind` with `buffer` bytes of kernel buffers each way.
pub fn bind_udp(bind: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let domain = if bind.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if bind.is_ipv6() {
        // Dual-stack where the OS allows it, as quinn's own binding does.
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

fn quic_runtime() -> std::io::Result<std::sync::Arc<dyn quinn::Runtime>> {
    quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime to drive the QUIC endpoint"))
}
