//! ICMP proxying (spec §4.4: v2 type IP, v3 type ICMP): echo requests from the edge go to their
//! destination through unprivileged ping sockets (`SOCK_DGRAM`/`IPPROTO_ICMP`, allowed when the
//! process's group is within `net.ipv4.ping_group_range`), and each echo reply comes back to the
//! edge as a raw IP packet addressed to the original source, as cloudflared does.
//!
//! One *funnel* per (source, destination, echo ID): a ping socket connected to the destination.
//! The kernel gives the socket its own echo ID (its port) and delivers it only the replies that
//! carry it; the reply's ID is rewritten back to the original one. A funnel closes after
//! [`FUNNEL_IDLE`] without a request or a reply (cloudflared's 10 s).
//!
//! When ping sockets are not allowed, [`availability`] logs cloudflared's lines once at start
//! (the `ping_group_range` warning, then `ICMP proxy feature is disabled`) and every ICMP packet
//! is dropped and counted. Packets other than echo requests, malformed packets and packets
//! whose TTL would expire are dropped and counted too. Nothing here panics on peer input.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use compio::BufResult;
use compio::runtime::JoinHandle;

/// A funnel with no request or reply for this long is closed (cloudflared's `icmpFunnelTimeout`).
pub const FUNNEL_IDLE: Duration = Duration::from_secs(10);
/// Funnels one connection holds at once; requests that would open more are dropped.
pub const MAX_FUNNELS: usize = 1024;
/// TTL (hop limit) of the reply packets built here (cloudflared's `packet.DefaultTTL`).
pub const REPLY_TTL: u8 = 64;
const PING_GROUP_PATH: &str = "/proc/sys/net/ipv4/ping_group_range";

/// Which families ping sockets work for in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Availability {
    /// ICMPv4 echo can be proxied.
    pub v4: bool,
    /// ICMPv6 echo can be proxied.
    pub v6: bool,
}

static AVAILABLE: OnceLock<Availability> = OnceLock::new();

/// Probes (once per process, logging as cloudflared 2026.8.2 does at start) whether ping sockets
/// can be opened.
pub fn availability() -> Availability {
    *AVAILABLE.get_or_init(|| {
        let v4 = match check_ping_group().and_then(|()| probe(false)) {
            Ok(()) => Ok(()),
            Err(e) => Err(e),
        };
        let v6 = probe(true);
        match (&v4, &v6) {
            (Err(e4), Err(e6)) => {
                let err = format!("cannot create ICMPv4 proxy: {e4} nor ICMPv6 proxy: {e6}");
                log::debug!(error = err.as_str(); "ICMP proxy feature is disabled");
                log::warn!(error = err.as_str(); "ICMP proxy feature is disabled");
            }
            (Err(e), Ok(())) => {
                log::debug!(error:% = e; "failed to create ICMPv4 proxy, only ICMPv6 proxy is created")
            }
            (Ok(()), Err(e)) => {
                log::debug!(error:% = e; "failed to create ICMPv6 proxy, only ICMPv4 proxy is created")
            }
            (Ok(()), Ok(())) => {}
        }
        Availability {
            v4: v4.is_ok(),
            v6: v6.is_ok(),
        }
    })
}

/// cloudflared's `ping_group_range` check (IPv4 only), with its warning when it fails.
fn check_ping_group() -> Result<(), String> {
    let r = std::fs::read_to_string(PING_GROUP_PATH)
        .map_err(|e| format!("open {PING_GROUP_PATH}: {e}"))
        .and_then(|text| {
            let nums: Vec<u64> = text
                .split_whitespace()
                .take(2)
                .filter_map(|n| n.parse().ok())
                .collect();
            let [min, max] = nums[..] else {
                return Err(format!("did not find group range in {PING_GROUP_PATH}"));
            };
            // /proc/self belongs to the process's effective user and group.
            let gid = std::os::unix::fs::MetadataExt::gid(
                &std::fs::metadata("/proc/self").map_err(|e| format!("stat /proc/self: {e}"))?,
            );
            let gid = u64::from(gid);
            if gid < min || gid > max {
                return Err(format!(
                    "Group ID {gid} is not between ping group {min} to {max}"
                ));
            }
            Ok(())
        });
    if let Err(e) = &r {
        log::warn!(error = e.as_str(); "The user running cloudflared process has a GID (group ID) that is not within ping_group_range. You might need to add that user to a group within that range, or instead update the range to encompass a group the user is already in by modifying {PING_GROUP_PATH}. Otherwise cloudflared will not be able to ping this network");
    }
    r
}

fn ping_socket(v6: bool) -> std::io::Result<socket2::Socket> {
    let (domain, proto) = if v6 {
        (socket2::Domain::IPV6, socket2::Protocol::ICMPV6)
    } else {
        (socket2::Domain::IPV4, socket2::Protocol::ICMPV4)
    };
    socket2::Socket::new(domain, socket2::Type::DGRAM, Some(proto))
}

fn probe(v6: bool) -> Result<(), String> {
    let s = ping_socket(v6).map_err(|e| format!("socket: {e}"))?;
    let any: SocketAddr = if v6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    s.bind(&any.into())
        .map_err(|e| format!("listen ip{}:icmp: {e}", if v6 { "6" } else { "4" }))
}

/// An echo request parsed from the edge's IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoRequest<'a> {
    /// The pinging host (the reply's destination).
    pub src: IpAddr,
    /// The pinged host.
    pub dst: IpAddr,
    /// TTL or hop limit as received.
    pub ttl: u8,
    /// Echo identifier.
    pub id: u16,
    /// Echo sequence number.
    pub seq: u16,
    /// Echo data.
    pub data: &'a [u8],
}

/// Why a packet is not proxied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than its headers say.
    #[error("truncated IP packet ({0} bytes)")]
    Truncated(usize),
    /// Not IPv4 or IPv6.
    #[error("unknown IP version {0}")]
    Version(u8),
    /// Not ICMP (or ICMPv6, without extension headers).
    #[error("IP protocol {0} is not ICMP")]
    NotIcmp(u8),
    /// ICMP, but not an echo request.
    #[error("ICMP type {0} code {1} is not an echo request")]
    NotEcho(u8, u8),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses an IPv4 or IPv6 packet carrying an ICMP echo request.
pub fn parse_echo(p: &[u8]) -> Result<EchoRequest<'_>, PacketError> {
    let first = *p.first().ok_or(PacketError::Truncated(0))?;
    let (src, dst, ttl, icmp, echo_type) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if p.len() < 20 || ihl < 20 || p.len() < ihl {
                return Err(PacketError::Truncated(p.len()));
            }
            let total = usize::from(be16(p, 2));
            if total < ihl || total > p.len() {
                return Err(PacketError::Truncated(p.len()));
            }
            if p[9] != 1 {
                return Err(PacketError::NotIcmp(p[9]));
            }
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            (IpAddr::V4(src), IpAddr::V4(dst), p[8], &p[ihl..total], 8u8)
        }
        6 => {
            if p.len() < 40 {
                return Err(PacketError::Truncated(p.len()));
            }
            let total = 40 + usize::from(be16(p, 4));
            if total > p.len() {
                return Err(PacketError::Truncated(p.len()));
            }
            if p[6] != 58 {
                return Err(PacketError::NotIcmp(p[6]));
            }
            let src: [u8; 16] = p[8..24]
                .try_into()
                .map_err(|_| PacketError::Truncated(p.len()))?;
            let dst: [u8; 16] = p[24..40]
                .try_into()
                .map_err(|_| PacketError::Truncated(p.len()))?;
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            (IpAddr::V6(src), IpAddr::V6(dst), p[7], &p[40..total], 128u8)
        }
        v => return Err(PacketError::Version(v)),
    };
    if icmp.len() < 8 {
        return Err(PacketError::Truncated(p.len()));
    }
    if icmp[0] != echo_type || icmp[1] != 0 {
        return Err(PacketError::NotEcho(icmp[0], icmp[1]));
    }
    Ok(EchoRequest {
        src,
        dst,
        ttl,
        id: be16(icmp, 4),
        seq: be16(icmp, 6),
        data: &icmp[8..],
    })
}

/// The Internet checksum (RFC 1071) of `parts` concatenated (each part even-length except the
/// last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(u16::from_be_bytes([*last, 0]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The ICMP echo message (request or reply) with a valid checksum (ICMPv6's covers the
/// pseudo-header of `src`, `dst`).
fn echo_message(
    v6: bool,
    reply: bool,
    id: u16,
    seq: u16,
    data: &[u8],
    src: IpAddr,
    dst: IpAddr,
) -> Vec<u8> {
    let ty = match (v6, reply) {
        (false, false) => 8,
        (false, true) => 0,
        (true, false) => 128,
        (true, true) => 129,
    };
    let mut m = Vec::with_capacity(8 + data.len());
    m.extend_from_slice(&[ty, 0, 0, 0]);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let sum = match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) if v6 => {
            let len = (m.len() as u32).to_be_bytes();
            checksum(&[&s.octets(), &d.octets(), &len, &[0, 0, 0, 58], &m])
        }
        _ => checksum(&[&m]),
    };
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// The IP packet of an echo reply from `from` to `to`.
pub fn reply_packet(from: IpAddr, to: IpAddr, id: u16, seq: u16, data: &[u8]) -> Option<Vec<u8>> {
    let v6 = from.is_ipv6();
    let mut m = Vec::with_capacity(8 + data.len());
    m.extend_from_slice(&[if v6 { 129 } else { 0 }, 0, 0, 0]);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    wrap_icmp(m, from, to)
}

/// The ICMP time-exceeded (in transit) packet answering `original` (a packet whose TTL
/// expired), from `router` to `to`: as much of the original as RFC 1812 (IPv4, 576-byte
/// packets) or RFC 4443 (IPv6, 1280) allow, as cloudflared's `NewICMPTTLExceedPacket`.
pub fn ttl_exceeded_packet(original: &[u8], router: IpAddr, to: IpAddr) -> Option<Vec<u8>> {
    let (ty, keep) = match router {
        IpAddr::V4(_) => (11u8, 576 - 20 - 8),
        IpAddr::V6(_) => (3u8, 1280 - 40 - 8),
    };
    let mut m = vec![ty, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&original[..original.len().min(keep)]);
    wrap_icmp(m, router, to)
}

/// Sets the checksum of ICMP message `m` and wraps it in an IP header from `from` to `to`.
fn wrap_icmp(mut m: Vec<u8>, from: IpAddr, to: IpAddr) -> Option<Vec<u8>> {
    match (from, to) {
        (IpAddr::V4(f), IpAddr::V4(t)) => {
            let sum = checksum(&[&m]);
            m[2..4].copy_from_slice(&sum.to_be_bytes());
            let total = u16::try_from(20 + m.len()).ok()?;
            let mut p = Vec::with_capacity(usize::from(total));
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0, REPLY_TTL, 1, 0, 0]);
            p.extend_from_slice(&f.octets());
            p.extend_from_slice(&t.octets());
            let sum = checksum(&[&p]);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            p.extend_from_slice(&m);
            Some(p)
        }
        (IpAddr::V6(f), IpAddr::V6(t)) => {
            let len = u16::try_from(m.len()).ok()?;
            let sum = checksum(&[
                &f.octets(),
                &t.octets(),
                &u32::from(len).to_be_bytes(),
                &[0, 0, 0, 58],
                &m,
            ]);
            m[2..4].copy_from_slice(&sum.to_be_bytes());
            let mut p = Vec::with_capacity(40 + m.len());
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&[58, REPLY_TTL]);
            p.extend_from_slice(&f.octets());
            p.extend_from_slice(&t.octets());
            p.extend_from_slice(&m);
            Some(p)
        }
        _ => None,
    }
}

/// One funnel: the ping socket and what its reply task needs.
struct Funnel {
    /// Non-blocking handle for sends (a `dup` of the reader's socket).
    send: std::net::UdpSocket,
    active: Rc<Cell<Instant>>,
    task: Option<JoinHandle<()>>,
}

type FunnelKey = (IpAddr, IpAddr, u16);

/// Sends one reply IP packet to the edge, in the connection's datagram encoding.
pub type ReplyFn = Box<dyn Fn(&[u8])>;

/// The ICMP funnels of one connection. `reply` sends a reply IP packet to the edge (the
/// connection's datagram encoding).
pub struct IcmpFunnels {
    available: Availability,
    funnels: RefCell<HashMap<FunnelKey, Funnel>>,
    stats: std::sync::Arc<super::UdpStats>,
    reply: ReplyFn,
}

impl IcmpFunnels {
    /// Funnels for one connection; `reply` gets each reply packet.
    pub fn new(stats: std::sync::Arc<super::UdpStats>, reply: ReplyFn) -> Rc<IcmpFunnels> {
        Rc::new(IcmpFunnels {
            available: availability(),
            funnels: RefCell::new(HashMap::new()),
            stats,
            reply,
        })
    }

    /// Proxies one IP packet from the edge, or drops (and counts) it.
    pub fn request(self: &Rc<Self>, packet: &[u8]) {
        if let Err(e) = self.try_request(packet) {
            self.stats.dropped();
            log::debug!(error:% = e; "dropped an ICMP packet");
        }
    }

    fn try_request(self: &Rc<Self>, packet: &[u8]) -> Result<(), String> {
        let echo = parse_echo(packet).map_err(|e| e.to_string())?;
        let v6 = echo.dst.is_ipv6();
        if !(if v6 {
            self.available.v6
        } else {
            self.available.v4
        }) {
            return Err(format!(
                "ICMPv{} proxy was not instantiated",
                if v6 { 6 } else { 4 }
            ));
        }
        if echo.ttl <= 1 {
            // As cloudflared: answer time-exceeded from the connector's ICMP source (the
            // unspecified address: ringflare does not probe for the machine's address).
            let router = if v6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            let p = ttl_exceeded_packet(packet, router, echo.src).ok_or("TTL exceeded packet")?;
            (self.reply)(&p);
            return Ok(());
        }
        self.stats.icmp_requests.fetch_add(1, Relaxed);
        let key = (echo.src, echo.dst, echo.id);
        if !self.funnels.borrow().contains_key(&key) {
            self.open(key)?;
        }
        let funnels = self.funnels.borrow();
        let f = funnels.get(&key).ok_or("funnel vanished")?;
        f.active.set(Instant::now());
        // The kernel sets the echo ID (the socket's port) and, for ICMPv6, the checksum.
        let msg = echo_message(v6, false, 0, echo.seq, echo.data, echo.src, echo.dst);
        f.send
            .send(&msg)
            .map_err(|e| format!("send to {}: {e}", echo.dst))?;
        log::debug!(src:% = echo.src, dst:% = echo.dst, echoID = echo.id, seq = echo.seq; "Received ICMP request");
        Ok(())
    }

    fn open(self: &Rc<Self>, key: FunnelKey) -> Result<(), String> {
        if self.funnels.borrow().len() >= MAX_FUNNELS {
            return Err(format!(
                "too many ICMP funnels on this connection (limit {MAX_FUNNELS})"
            ));
        }
        let (src, dst, id) = key;
        let s =
            ping_socket(dst.is_ipv6()).map_err(|e| format!("failed to open ICMP socket: {e}"))?;
        s.connect(&SocketAddr::new(dst, 0).into())
            .map_err(|e| format!("failed to open ICMP socket: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let send: std::net::UdpSocket = s.into();
        let recv = send
            .try_clone()
            .and_then(compio::net::UdpSocket::from_std)
            .map_err(|e| e.to_string())?;
        let active = Rc::new(Cell::new(Instant::now()));
        let task =
            compio::runtime::spawn(run_funnel(Rc::downgrade(self), key, recv, active.clone()));
        log::debug!(src:% = src, dst:% = dst, originalEchoID = id; "Opened ICMP funnel");
        self.funnels.borrow_mut().insert(
            key,
            Funnel {
                send,
                active,
                task: Some(task),
            },
        );
        Ok(())
    }

    /// Funnels open now.
    pub fn len(&self) -> usize {
        self.funnels.borrow().len()
    }

    /// Whether no funnel is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the funnel's replies until it idles out; each goes back to the edge with the original
/// echo ID, from the pinged host to the pinging one.
async fn run_funnel(
    owner: Weak<IcmpFunnels>,
    key: FunnelKey,
    socket: compio::net::UdpSocket,
    active: Rc<Cell<Instant>>,
) {
    let (src, dst, id) = key;
    let reader = async {
        let mut buf = Vec::with_capacity(1500);
        loop {
            buf.clear();
            let BufResult(r, b) = socket.recv(buf).await;
            buf = b;
            let Ok(n) = r else { return };
            let msg = &buf[..n.min(buf.len())];
            // Replies only (the kernel also delivers errors as reads that fail).
            let reply_type = if dst.is_ipv6() { 129 } else { 0 };
            if msg.len() < 8 || msg[0] != reply_type {
                continue;
            }
            active.set(Instant::now());
            let Some(owner) = owner.upgrade() else { return };
            match reply_packet(dst, src, id, be16(msg, 6), &msg[8..]) {
                Some(p) => {
                    owner.stats.icmp_replies.fetch_add(1, Relaxed);
                    (owner.reply)(&p);
                }
                None => owner.stats.dropped(),
            }
        }
    };
    let idler = async {
        loop {
            let due = active.get() + FUNNEL_IDLE;
            let now = Instant::now();
            if now >= due {
                return;
            }
            compio::time::sleep(due - now).await;
        }
    };
    futures_util::future::select(std::pin::pin!(reader), std::pin::pin!(idler)).await;
    if let Some(owner) = owner.upgrade()
        && let Some(mut f) = owner.funnels.borrow_mut().remove(&key)
    {
        if let Some(t) = f.task.take() {
            t.detach();
        }
        log::debug!(src:% = src, dst:% = dst, originalEchoID = id; "Closed ICMP funnel");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_request(ttl: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let icmp = echo_message(false, false, id, seq, data, [0; 4].into(), [0; 4].into());
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, ttl, 1, 0, 0, 10, 0, 0, 1, 127, 0, 0, 1]);
        p.extend_from_slice(&icmp);
        p
    }

    #[test]
    fn parses_an_ipv4_echo_request() {
        let p = v4_request(64, 0x1234, 7, b"hello");
        let e = parse_echo(&p).unwrap();
        assert_eq!(e.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(e.dst, IpAddr::from([127, 0, 0, 1]));
        assert_eq!((e.ttl, e.id, e.seq, e.data), (64, 0x1234, 7, &b"hello"[..]));
    }

    #[test]
    fn hostile_packets_are_errors_not_panics() {
        let good = v4_request(64, 1, 1, b"x");
        for n in 0..good.len() {
            let _ = parse_echo(&good[..n]);
        }
        let mut bad = good.clone();
        bad[0] = 0x4f; // IHL 60 > packet
        assert!(parse_echo(&bad).is_err());
        let mut bad = good.clone();
        bad[2] = 0xff; // total length > packet
        assert!(parse_echo(&bad).is_err());
        let mut bad = good.clone();
        bad[9] = 17;
        assert_eq!(parse_echo(&bad), Err(PacketError::NotIcmp(17)));
        let mut bad = good;
        bad[20] = 0; // an echo reply
        assert_eq!(parse_echo(&bad), Err(PacketError::NotEcho(0, 0)));
        assert!(parse_echo(&[0x60; 39]).is_err());
        assert_eq!(parse_echo(&[0x10; 30]), Err(PacketError::Version(1)));
    }

    #[test]
    fn ttl_exceeded_quotes_the_original_within_576_bytes() {
        let req = v4_request(1, 7, 1, &[0xab; 1000]);
        let router = IpAddr::from([0, 0, 0, 0]);
        let to = IpAddr::from([10, 0, 0, 1]);
        let p = ttl_exceeded_packet(&req, router, to).unwrap();
        assert_eq!(p.len(), 576);
        assert_eq!(checksum(&[&p[..20]]), 0);
        assert_eq!(checksum(&[&p[20..]]), 0);
        assert_eq!((p[20], p[21]), (11, 0));
        assert_eq!(&p[28..48], &req[..20], "the original header is quoted");
        assert_eq!(&p[16..20], &[10, 0, 0, 1]);
    }

    #[test]
    fn reply_packets_have_valid_checksums() {
        let from = IpAddr::from([127, 0, 0, 1]);
        let to = IpAddr::from([10, 0, 0, 1]);
        let p = reply_packet(from, to, 0x1234, 9, b"odd").unwrap();
        assert_eq!(checksum(&[&p[..20]]), 0, "IPv4 header checksum");
        assert_eq!(checksum(&[&p[20..]]), 0, "ICMP checksum");
        assert_eq!((p[8], p[9]), (REPLY_TTL, 1));
        assert_eq!(&p[12..16], &[127, 0, 0, 1]);
        assert_eq!(&p[16..20], &[10, 0, 0, 1]);
        assert_eq!((p[20], be16(&p, 24), be16(&p, 26)), (0, 0x1234, 9));
        let (f6, t6): (IpAddr, IpAddr) = ("::1".parse().unwrap(), "fd00::1".parse().unwrap());
        let p = reply_packet(f6, t6, 5, 6, b"v6 data").unwrap();
        let (IpAddr::V6(f), IpAddr::V6(t)) = (f6, t6) else {
            unreachable!()
        };
        let len = ((p.len() - 40) as u32).to_be_bytes();
        assert_eq!(
            checksum(&[&f.octets(), &t.octets(), &len, &[0, 0, 0, 58], &p[40..]]),
            0
        );
        assert_eq!(p[40], 129);
    }
}
