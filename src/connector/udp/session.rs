//! One UDP session (a "flow" under datagram v3): a connected UDP socket toward the private
//! destination and the task that pumps it both ways until the session idles out, its socket
//! fails, or the manager drops it.
//!
//! Owns: the socket (closed when the task ends or is cancelled), the bounded queue of payloads
//! waiting to be written to the origin, the last-activity instant. Never does: touch the session
//! table (the manager does, through the `on_end` callback it passes in).

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use compio::BufResult;
use compio::net::UdpSocket;
use futures_channel::mpsc;
use futures_util::StreamExt;
use futures_util::future::{Either, select};

/// Payloads queued toward the origin per session before new ones are dropped. The writer is a
/// local UDP send, normally far faster than the edge can deliver, so a short queue suffices and
/// bounds memory to about 32 × 1280 bytes per session.
pub const QUEUE_DEPTH: usize = 32;

/// Largest packet read from the origin (cloudflared's 1500); anything over the 1280-byte
/// datagram payload limit is dropped after the read.
const ORIGIN_READ_SIZE: usize = 1500;

/// Why a session's task ended by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// Nothing crossed the session in either direction for this long.
    Idle(Duration),
    /// Reading from the origin socket failed (for example ICMP port unreachable).
    Origin(String),
}

/// Opens the connected socket toward `dest`: bound to the unspecified address of its family
/// (an ephemeral port), as Go's `net.Dial("udp", ...)`.
pub fn dial(dest: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let local = match dest.ip() {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(dest)?;
    Ok(socket)
}

/// The running half of a session: everything its task needs.
pub struct Pump {
    /// The connected origin socket.
    pub socket: UdpSocket,
    /// Payloads from the edge, written to the origin in order.
    pub inbound: mpsc::Receiver<Bytes>,
    /// Last time a payload crossed in either direction; the idle timer reads it.
    pub active: Rc<Cell<Instant>>,
    /// Close after this long without traffic.
    pub idle: Duration,
}

impl Pump {
    /// Runs until the session idles out or its origin read fails. `forward` receives every
    /// packet read from the origin (it encodes and sends, or drops, the datagram).
    pub async fn run(self, mut forward: impl FnMut(&[u8])) -> EndReason {
        let Pump {
            socket,
            mut inbound,
            active,
            idle,
        } = self;
        let reader = async {
            let mut buf = Vec::with_capacity(ORIGIN_READ_SIZE);
            loop {
                buf.clear();
                let BufResult(r, b) = socket.recv(buf).await;
                buf = b;
                match r {
                    Ok(n) => {
                        active.set(Instant::now());
                        forward(&buf[..n.min(buf.len())]);
                    }
                    Err(e) => return EndReason::Origin(e.to_string()),
                }
            }
        };
        let writer = async {
            // Ends only when the manager drops the queue's sender, which also cancels this task.
            while let Some(payload) = inbound.next().await {
                active.set(Instant::now());
                if let BufResult(Err(e), _) = socket.send(payload).await {
                    log::error!(error:% = e; "Failed to write payload to session");
                }
            }
            std::future::pending::<EndReason>().await
        };
        let idler = async {
            loop {
                let due = active.get() + idle;
                let now = Instant::now();
                if now >= due {
                    return EndReason::Idle(idle);
                }
                compio::time::sleep(due - now).await;
            }
        };
        let (reader, writer, idler) = (pin!(reader), pin!(writer), pin!(idler));
        match select(select(reader, idler), writer).await {
            Either::Left((Either::Left((r, _)), _)) | Either::Left((Either::Right((r, _)), _)) => r,
            Either::Right((r, _)) => r,
        }
    }
}
