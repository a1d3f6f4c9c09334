//! UDP sockets for QUIC with the large kernel buffers a fast QUIC connection needs.
//!
//! quic-go (cloudflared) asks for 7 MiB receive and send buffers and prints a warning users
//! search for when the kernel caps them. ringflare asks for the same, first with the
//! privileged `SO_*BUFFORCE` (works as root / CAP_NET_ADMIN), then within the sysctl limits, and
//! logs one warning that names the sysctl to raise when it got less.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// The receive and send buffer size asked for, as quic-go does.
pub const SOCKET_BUFFER: usize = 7 << 20;

/// What the kernel granted (as it reports it: Linux doubles the value asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferReport {
    /// SO_RCVBUF after setup.
    pub recv: usize,
    /// SO_SNDBUF after setup.
    pub send: usize,
}

impl BufferReport {
    /// True when both buffers reached the size asked for.
    pub fn sufficient(&self) -> bool {
        self.recv >= SOCKET_BUFFER && self.send >= SOCKET_BUFFER
    }

    /// Logs the warning naming the sysctls when a buffer is too small.
    pub fn warn_if_small(&self, addr: SocketAddr) {
        if self.recv < SOCKET_BUFFER {
            log::warn!(addr:% = addr, wanted_kib = SOCKET_BUFFER >> 10, got_kib = self.recv >> 10;
                "QUIC UDP receive buffer is smaller than wanted; throughput may suffer. Raise the host limit: sysctl -w net.core.rmem_max={}", SOCKET_BUFFER);
        }
        if self.send < SOCKET_BUFFER {
            log::warn!(addr:% = addr, wanted_kib = SOCKET_BUFFER >> 10, got_kib = self.send >> 10;
                "QUIC UDP send buffer is smaller than wanted; throughput may suffer. Raise the host limit: sysctl -w net.core.wmem_max={}", SOCKET_BUFFER);
        }
    }
}

/// Binds a UDP socket on `addr` for a QUIC endpoint, with large buffers where allowed.
/// `reuse_port` lets several cores' sockets share one port (the edge).
pub fn bind_udp(
    addr: SocketAddr,
    reuse_port: bool,
) -> io::Result<(compio::net::UdpSocket, BufferReport)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    let report = grow_buffers(&socket);
    socket.bind(&addr.into())?;
    let udp = compio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
    Ok((udp, report))
}

/// Asks for `SOCKET_BUFFER` both ways; failures only shrink the report.
fn grow_buffers(socket: &Socket) -> BufferReport {
    use rustix::net::sockopt;
    if sockopt::set_socket_recv_buffer_size_force(socket, SOCKET_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if sockopt::set_socket_send_buffer_size_force(socket, SOCKET_BUFFER).is_err() {
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    }
    BufferReport {
        recv: socket.recv_buffer_size().unwrap_or(0),
        send: socket.send_buffer_size().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_and_reports_buffers() {
        let rt = crate::runtime::build_runtime(crate::runtime::DriverKind::Poll).unwrap();
        let (port, report) = rt.block_on(async {
            let (udp, report) = bind_udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
            (udp.local_addr().unwrap().port(), report)
        });
        assert_ne!(port, 0);
        // The kernel grants at least its default; whether 7 MiB is allowed depends on the host.
        assert!(report.recv > 0 && report.send > 0, "{report:?}");
        let small = BufferReport {
            recv: 212_992,
            send: SOCKET_BUFFER,
        };
        assert!(!small.sufficient());
        assert!(
            BufferReport {
                recv: SOCKET_BUFFER * 2,
                send: SOCKET_BUFFER * 2
            }
            .sufficient()
        );
    }
}
