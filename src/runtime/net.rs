//! Socket setup for per-core listeners and TCP tuning.
//!
//! Every worker binds its *own* listener on the same address with `SO_REUSEPORT`, so the
//! kernel spreads new connections over cores and no accept queue is shared between threads.
//! This module only creates and configures sockets; it never accepts, reads or writes.

use std::{io, net::SocketAddr, time::Duration};

use compio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// Backlog for per-core listeners (each core has its own queue, so this is per core): as deep
/// as the host allows. Linux caps it at `net.core.somaxconn` (4096 by default since 5.4), as
/// Go's listeners do by reading that value. A fixed 1,024 overflowed when 10,000 visitors
/// opened WebSockets at once through the built-in edge (`bench e2e`, ws_idle: ~5,400 SYNs
/// dropped, each retried by its client a second or more later).
pub const LISTEN_BACKLOG: i32 = i32::MAX;

/// A socket option or bind step that failed, with the address involved.
#[derive(Debug, thiserror::Error)]
#[error("{op} for {addr} failed: {source}")]
pub struct SocketError {
    /// What was being done: `socket`, `setsockopt(SO_REUSEPORT)`, `bind`, `listen`, ...
    pub op: &'static str,
    /// The local address being bound or the socket's address.
    pub addr: String,
    /// The OS error.
    pub source: io::Error,
}

fn step<T>(op: &'static str, addr: &SocketAddr, r: io::Result<T>) -> Result<T, SocketError> {
    r.map_err(|source| SocketError {
        op,
        addr: addr.to_string(),
        source,
    })
}

/// Binds a listener on `addr` with `SO_REUSEPORT` and `SO_REUSEADDR`, registered with the
/// compio runtime of the calling thread. Call it once per worker with the same address.
///
/// Must be called from inside a compio runtime (the listener attaches to the current driver).
pub fn bind_reuseport(addr: SocketAddr) -> Result<TcpListener, SocketError> {
    let socket = step(
        "socket",
        &addr,
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)),
    )?;
    if addr.is_ipv6() {
        // Dual-stack behaviour would make `[::]` and `0.0.0.0` listeners collide.
        step("setsockopt(IPV6_V6ONLY)", &addr, socket.set_only_v6(true))?;
    }
    step(
        "setsockopt(SO_REUSEADDR)",
        &addr,
        socket.set_reuse_address(true),
    )?;
    step(
        "setsockopt(SO_REUSEPORT)",
        &addr,
        socket.set_reuse_port(true),
    )?;
    step("set_nonblocking", &addr, socket.set_nonblocking(true))?;
    step("bind", &addr, socket.bind(&addr.into()))?;
    step("listen", &addr, socket.listen(LISTEN_BACKLOG))?;
    let std_listener: std::net::TcpListener = socket.into();
    step(
        "register listener",
        &addr,
        TcpListener::from_std(std_listener),
    )
}

/// TCP tuning applied to edge and origin connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTuning {
    /// Disable Nagle: HTTP/2 frames and small responses must not wait for more data.
    pub nodelay: bool,
    /// Keepalive idle time and probe interval; `None` leaves keepalive off. Detects dead
    /// peers behind NATs that drop idle flows (cloudflared's default is 30 s).
    pub keepalive: Option<Duration>,
}

impl Default for TcpTuning {
    fn default() -> Self {
        Self {
            nodelay: true,
            keepalive: Some(Duration::from_secs(30)),
        }
    }
}

/// Applies `tuning` to a connected stream.
pub fn apply_tuning(stream: &TcpStream, tuning: TcpTuning) -> io::Result<()> {
    set_nodelay(stream, tuning.nodelay)?;
    if let Some(period) = tuning.keepalive {
        set_keepalive(stream, period)?;
    }
    Ok(())
}

/// Sets `TCP_NODELAY`.
pub fn set_nodelay(stream: &TcpStream, on: bool) -> io::Result<()> {
    stream.set_nodelay(on)
}

/// Turns on keepalive with `period` as both the idle time and the probe interval.
pub fn set_keepalive(stream: &TcpStream, period: Duration) -> io::Result<()> {
    let keepalive = TcpKeepalive::new().with_time(period).with_interval(period);
    SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{DriverKind, build_runtime};

    #[test]
    fn two_listeners_share_one_port_and_tuning_applies() {
        let rt = build_runtime(DriverKind::Poll).unwrap();
        rt.block_on(async {
            let a = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = a.local_addr().unwrap();
            let b = bind_reuseport(addr).unwrap();
            assert_eq!(b.local_addr().unwrap(), addr);
            let stream = TcpStream::connect(addr).await.unwrap();
            apply_tuning(&stream, TcpTuning::default()).unwrap();
            assert!(stream.nodelay().unwrap());
            assert!(SockRef::from(&stream).keepalive().unwrap());
        });
    }
}
