//! UDP sessions (warp-routing) carried in QUIC datagrams, datagram v2 and v3 (spec §4.4).
//!
//! One [`UdpSessions`] per QUIC connection, living on that connection's core (`Rc`, no `Send`).
//! The connection hands it every received datagram ([`UdpSessions::on_datagram`]) and, under v2,
//! the edge's `registerUdpSession`/`unregisterUdpSession` calls; it hands back every datagram to
//! send, and every session it ended by itself, through the [`DatagramSink`] the connection gives
//! it. Per session it owns a connected UDP socket toward the private destination and one task
//! (see [`session`]) that forwards both ways and closes the session after the idle timeout.
//!
//! Bounded everywhere: [`MAX_SESSIONS_PER_CONN`] sessions per connection, [`session::QUEUE_DEPTH`]
//! payloads queued per session (more are dropped, as cloudflared drops), `max-active-flows`
//! through a [`FlowLimiter`] shared with TCP flows. Dropping the manager cancels every session's
//! task and closes every socket. Never does: open QUIC streams (the sink's
//! [`DatagramSink::session_closed`] tells the edge), decode wire bytes (that is
//! `proto::datagram`).

pub mod icmp;
pub mod quic;
pub mod session;
pub mod stats;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use compio::runtime::JoinHandle;
use futures_channel::mpsc;

use self::session::{EndReason, Pump};
use self::stats::DropReason;
pub use self::stats::UdpStats;
use crate::connector::backoff::go_duration;
use crate::proto::datagram::{DatagramError, SessionId, v2, v3};
use crate::proto::rpc_types::{
    RegisterUdpSessionParams, RegisterUdpSessionResponse, UnregisterUdpSessionParams,
};

/// cloudflared's idle timeout when the edge gives no hint (both datagram versions).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(210);

/// Sessions one connection may hold at once, whatever `max-active-flows` says: a bound on the
/// sockets and queues a single edge connection can make this process hold.
pub const MAX_SESSIONS_PER_CONN: usize = 4096;

/// What cloudflared answers a session RPC with under datagram v3.
pub const V3_REGISTER_RPC_ERR: &str = "datagram v3 does not support RegisterUdpSession RPC";
/// The unregister counterpart of [`V3_REGISTER_RPC_ERR`].
pub const V3_UNREGISTER_RPC_ERR: &str = "datagram v3 does not support UnregisterUdpSession RPC";

/// The datagram format a connection negotiated (its `support_datagram_*` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramVersion {
    /// Sessions by RPC, metadata suffixed (cloudflared's default).
    V2,
    /// Sessions by registration datagram, header first.
    V3,
}

/// Where the manager's output goes: the QUIC connection, or a test's recorder.
pub trait DatagramSink {
    /// Sends one datagram to the edge, best effort (QUIC datagrams are unreliable; a full send
    /// buffer drops, never queues without bound).
    fn send_datagram(&self, datagram: Bytes);

    /// A v2 session ended on this side (idle, origin error): the connection tells the edge with
    /// `SessionManager.unregisterUdpSession(id, reason)` on a new RPC stream.
    fn session_closed(&self, id: SessionId, reason: &str);
}

/// `max-active-flows`: the tunnel-wide limit cloudflared's flow limiter enforces over TCP and
/// UDP flows together.
pub trait FlowLimiter {
    /// Takes a slot, or refuses (and counts the refusal) when the limit is reached.
    fn try_acquire(&self) -> bool;
    /// Gives a slot back.
    fn release(&self);
}

/// A stand-alone limiter (`0` = unlimited), for a manager not tied to the connector's state.
#[derive(Debug, Default)]
pub struct FlowLimit {
    /// The limit; 0 means none.
    pub limit: u64,
    /// Slots taken now.
    pub active: AtomicU64,
}

impl FlowLimiter for FlowLimit {
    fn try_acquire(&self) -> bool {
        self.active
            .fetch_update(Relaxed, Relaxed, |n| {
                (self.limit == 0 || n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        let _ = self
            .active
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }
}

/// The connector's limiter: the same counter TCP flows take (`Shared::active_flows`), the limit
/// read per registration from the live ingress's `warp-routing.maxActiveFlows`.
impl FlowLimiter for crate::connector::state::Shared {
    fn try_acquire(&self) -> bool {
        let limit = self.ingress.load().ingress().warp_routing.max_active_flows;
        let taken = self.active_flows.fetch_update(Relaxed, Relaxed, |n| {
            (limit == 0 || n < limit).then_some(n + 1)
        });
        if taken.is_err() {
            self.udp.rate_limited.fetch_add(1, Relaxed);
        }
        taken.is_ok()
    }

    fn release(&self) {
        let _ = self
            .active_flows
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }
}

/// One live session in the table.
struct Entry {
    /// Payloads toward the origin; dropping it ends the session's writer.
    queue: mpsc::Sender<Bytes>,
    /// Shared with the task; a v3 re-registration resets it.
    active: Rc<Cell<Instant>>,
    /// The task; dropping the handle cancels it and closes the socket.
    task: Option<JoinHandle<()>>,
}

struct Inner {
    conn_index: u8,
    version: DatagramVersion,
    sink: Rc<dyn DatagramSink>,
    flows: Arc<dyn FlowLimiter>,
    stats: Arc<UdpStats>,
    sessions: RefCell<HashMap<SessionId, Entry>>,
    /// ICMP echo proxying (v2 IP and v3 ICMP datagrams).
    icmp: Rc<icmp::IcmpFunnels>,
}

/// The UDP sessions of one QUIC connection. Cloning shares the same table.
#[derive(Clone)]
pub struct UdpSessions {
    inner: Rc<Inner>,
}

impl UdpSessions {
    /// A manager for connection `conn_index`, speaking `version`.
    pub fn new(
        conn_index: u8,
        version: DatagramVersion,
        sink: Rc<dyn DatagramSink>,
        flows: Arc<dyn FlowLimiter>,
        stats: Arc<UdpStats>,
    ) -> UdpSessions {
        let reply_sink = sink.clone();
        let icmp_stats = stats.clone();
        let reply = move |packet: &[u8]| {
            let mut out = Vec::with_capacity(packet.len() + 1);
            let r = match version {
                DatagramVersion::V2 => {
                    v2::encode_packet(v2::DatagramType::Ip, packet, &[], &mut out)
                }
                DatagramVersion::V3 => v3::encode_icmp(packet, &mut out),
            };
            match r {
                Ok(()) => reply_sink.send_datagram(out.into()),
                Err(_) => icmp_stats.dropped(),
            }
        };
        let icmp = icmp::IcmpFunnels::new(stats.clone(), Box::new(reply));
        UdpSessions {
            inner: Rc::new(Inner {
                conn_index,
                version,
                sink,
                flows,
                stats,
                sessions: RefCell::new(HashMap::new()),
                icmp,
            }),
        }
    }

    /// Sessions open now on this connection.
    pub fn len(&self) -> usize {
        self.inner.sessions.borrow().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles one datagram from the edge: a payload for a session, or (v3) a registration.
    /// Malformed or unexpected datagrams are logged and dropped; they never end the connection.
    pub fn on_datagram(&self, datagram: Bytes) {
        let r = match self.inner.version {
            DatagramVersion::V2 => self.on_v2(&datagram),
            DatagramVersion::V3 => self.on_v3(&datagram),
        };
        if let Err(e) = r {
            self.inner.stats.dropped();
            log::error!(connIndex = self.inner.conn_index, error:% = e; "Failed to demux datagram");
        }
    }

    fn on_v2(&self, datagram: &Bytes) -> Result<(), DatagramError> {
        match v2::decode(datagram)? {
            v2::Datagram::Udp { session, payload } => {
                let payload = datagram.slice_ref(payload);
                self.to_origin(session, payload);
            }
            v2::Datagram::Ip(packet) | v2::Datagram::IpWithTrace { packet, .. } => {
                self.inner.icmp.request(packet);
            }
            v2::Datagram::TracingSpan { .. } => {
                self.inner.stats.dropped();
                log::debug!(connIndex = self.inner.conn_index; "dropped a tracing-span datagram");
            }
        }
        Ok(())
    }

    fn on_v3(&self, datagram: &Bytes) -> Result<(), DatagramError> {
        match v3::decode(datagram)? {
            v3::Datagram::Registration(r) => {
                let first = datagram.slice_ref(r.payload);
                self.register_v3(&r, first);
            }
            v3::Datagram::Payload {
                request_id,
                payload,
            } => {
                let payload = datagram.slice_ref(payload);
                self.to_origin(request_id, payload);
            }
            v3::Datagram::Icmp(packet) => self.inner.icmp.request(packet),
            v3::Datagram::RegistrationResponse { .. } => {
                log::error!(connIndex = self.inner.conn_index; "unexpected datagram type received: 3");
            }
        }
        Ok(())
    }

    /// Queues `payload` toward session `id`'s origin; drops it when the session is unknown or
    /// its queue is full.
    fn to_origin(&self, id: SessionId, payload: Bytes) {
        let mut sessions = self.inner.sessions.borrow_mut();
        let Some(entry) = sessions.get_mut(&id) else {
            self.inner.stats.dropped();
            self.v3_drop(DropReason::WriteFlowUnknown);
            match self.inner.version {
                DatagramVersion::V2 => {
                    log::error!(sessionID = id.hex(); "session not found")
                }
                DatagramVersion::V3 => {
                    log::error!(flowID = id.hex(); "unable to find flow")
                }
            }
            return;
        };
        if entry.queue.try_send(payload).is_err() {
            self.inner.stats.dropped();
            self.v3_drop(DropReason::WriteFull);
            log::error!(sessionID = id.hex(); "failed to write flow payload to origin: dropped");
        }
    }

    /// `SessionManager.registerUdpSession` (datagram v2). `Err` is a malformed call (the RPC
    /// layer turns it into an exception, as cloudflared's capnp server does); a refused
    /// session is `Ok` with `err` set.
    pub fn register_v2(
        &self,
        p: &RegisterUdpSessionParams,
    ) -> Result<RegisterUdpSessionResponse, String> {
        let refuse = |err: String| {
            Ok(RegisterUdpSessionResponse {
                err: Some(err),
                spans: Vec::new(),
            })
        };
        if self.inner.version == DatagramVersion::V3 {
            return refuse(V3_REGISTER_RPC_ERR.into());
        }
        let id = SessionId::from_slice(&p.session_id)
            .ok_or_else(|| format!("invalid UUID (got {} bytes)", p.session_id.len()))?;
        let Some(ip) = parse_ip(&p.dst_ip) else {
            log::error!(event = 3; "Failed to parse destination proxy IP");
            return refuse("unable to parse destination IP".into());
        };
        let dest = SocketAddr::new(ip, p.dst_port);
        let hint = Duration::from_nanos(u64::try_from(p.close_after_idle_hint).unwrap_or(0));
        match self.open(id, dest, hint, Bytes::new()) {
            Ok(src) => {
                log::debug!(event = 3, sessionID = id.hex(), src:% = src, dst:% = dest; "Registered session");
                Ok(RegisterUdpSessionResponse::default())
            }
            Err(Refused::RateLimited) => {
                log::warn!(event = 3; "Too many concurrent sessions being handled, rejecting udp proxy to {dest}");
                refuse(
                    "failed to start udp session due to rate limiting: too many active flows"
                        .into(),
                )
            }
            Err(Refused::Failed(e)) => {
                log::error!(event = 3, error:% = e; "Failed to create udp proxy to {dest}");
                refuse(e)
            }
            Err(Refused::Exists) => unreachable_exists(),
        }
    }

    /// `SessionManager.unregisterUdpSession` (datagram v2): the edge closed the session. `Err`
    /// under v3, with cloudflared's text.
    pub fn unregister_v2(&self, p: &UnregisterUdpSessionParams) -> Result<(), String> {
        if self.inner.version == DatagramVersion::V3 {
            return Err(V3_UNREGISTER_RPC_ERR.into());
        }
        if let Some(id) = SessionId::from_slice(&p.session_id) {
            let removed = self.inner.sessions.borrow_mut().remove(&id);
            if removed.is_some() {
                self.end_accounting();
                log::debug!(event = 3, sessionID = id.hex(), error = p.message.as_str(); "Session terminated");
            }
        }
        Ok(())
    }

    fn register_v3(&self, r: &v3::Registration<'_>, first: Bytes) {
        let id = r.request_id;
        let status = match self.open(id, r.dest, r.idle_hint, first) {
            Ok(_) => v3::ResponseStatus::Ok,
            Err(Refused::Exists) => {
                // A retried registration: answer again and count it, as cloudflared does.
                if let Some(e) = self.inner.sessions.borrow().get(&id) {
                    e.active.set(Instant::now());
                }
                self.inner.stats.retry_flow_responses.fetch_add(1, Relaxed);
                let conn = self.inner.stats.v3_conns.conn(self.inner.conn_index);
                conn.retry.fetch_add(1, Relaxed);
                log::debug!(flowID = id.hex(); "flow registration response retry");
                v3::ResponseStatus::Ok
            }
            Err(Refused::RateLimited) => {
                log::warn!("Too many concurrent sessions being handled, rejecting udp proxy");
                v3::ResponseStatus::TooManyActiveFlows
            }
            Err(Refused::Failed(e)) => {
                log::error!(flowID = id.hex(), dst:% = r.dest, error:% = e; "flow registration failure");
                v3::ResponseStatus::UnableToBindSocket
            }
        };
        let mut out = Vec::with_capacity(v3::RESPONSE_HEADER_LEN);
        if v3::encode_response(id, status, "", &mut out).is_ok() {
            self.inner.sink.send_datagram(out.into());
        }
    }

    /// Opens a session toward `dest`; returns the local address of its socket.
    fn open(
        &self,
        id: SessionId,
        dest: SocketAddr,
        hint: Duration,
        first: Bytes,
    ) -> Result<SocketAddr, Refused> {
        let v3 = self.inner.version == DatagramVersion::V3;
        if self.inner.sessions.borrow().contains_key(&id) {
            if v3 {
                return Err(Refused::Exists);
            }
            // v2: a second registration of the same ID replaces the first.
            self.inner.sessions.borrow_mut().remove(&id);
            self.end_accounting();
        }
        if self.len() >= MAX_SESSIONS_PER_CONN {
            return Err(Refused::Failed(format!(
                "too many UDP sessions on this connection (limit {MAX_SESSIONS_PER_CONN})"
            )));
        }
        if !self.inner.flows.try_acquire() {
            return Err(Refused::RateLimited);
        }
        let socket = match session::dial(dest)
            .and_then(|s| Ok((s.local_addr()?, compio::net::UdpSocket::from_std(s)?)))
        {
            Ok(s) => s,
            Err(e) => {
                self.inner.flows.release();
                return Err(Refused::Failed(format!(
                    "unable to dial udp to origin {dest}: {e}"
                )));
            }
        };
        let (local, socket) = socket;
        let (mut queue, inbound) = mpsc::channel(session::QUEUE_DEPTH);
        if !first.is_empty() {
            let _ = queue.try_send(first);
        }
        let active = Rc::new(Cell::new(Instant::now()));
        let pump = Pump {
            socket,
            inbound,
            active: active.clone(),
            idle: if hint.is_zero() { DEFAULT_IDLE } else { hint },
        };
        let task = compio::runtime::spawn(run_session(Rc::downgrade(&self.inner), id, pump));
        self.inner.sessions.borrow_mut().insert(
            id,
            Entry {
                queue,
                active,
                task: Some(task),
            },
        );
        self.inner.stats.session_started(v3, self.inner.conn_index);
        Ok(local)
    }

    /// Releases what one ended session held: its flow slot and its gauge.
    fn end_accounting(&self) {
        self.inner.flows.release();
        self.inner.stats.session_ended(
            self.inner.version == DatagramVersion::V3,
            self.inner.conn_index,
        );
    }

    /// Counts a dropped datagram in the connection's v3 vector (v3 only, as cloudflared).
    fn v3_drop(&self, reason: DropReason) {
        if self.inner.version == DatagramVersion::V3 {
            let conn = self.inner.stats.v3_conns.conn(self.inner.conn_index);
            conn.drop_for(reason);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The connection is gone: every session ends with it (tasks cancelled with their handles).
        let v3 = self.version == DatagramVersion::V3;
        for _ in self.sessions.get_mut().drain() {
            self.flows.release();
            self.stats.session_ended(v3, self.conn_index);
        }
    }
}

/// Why a session could not be opened.
enum Refused {
    /// v3: this ID is already open on this connection.
    Exists,
    /// Over `max-active-flows`.
    RateLimited,
    /// The socket could not be opened (or the per-connection bound was hit).
    Failed(String),
}

fn unreachable_exists() -> Result<RegisterUdpSessionResponse, String> {
    // `open` reports `Exists` only under v3, and v2 registration never runs under v3.
    Ok(RegisterUdpSessionResponse::default())
}

/// Go's `net.IP` to an address: 4 bytes, or 16 (a v4-mapped address becomes IPv4, as `To4`).
fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        return Some(IpAddr::V4(Ipv4Addr::from(a)));
    }
    let a = Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?);
    Some(match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    })
}

/// A session's task: pump until it ends by itself, then take it out of the table and, under
/// v2, tell the edge.
async fn run_session(inner: Weak<Inner>, id: SessionId, pump: Pump) {
    let forward = |packet: &[u8]| {
        let Some(inner) = inner.upgrade() else { return };
        let mut out = Vec::with_capacity(packet.len() + v3::PAYLOAD_HEADER_LEN);
        let r = match inner.version {
            DatagramVersion::V2 => v2::encode_udp(id, packet, &mut out),
            DatagramVersion::V3 => v3::encode_payload(id, packet, &mut out),
        };
        match r {
            Ok(()) => inner.sink.send_datagram(out.into()),
            Err(e) => {
                inner.stats.dropped();
                if inner.version == DatagramVersion::V3 {
                    let conn = inner.stats.v3_conns.conn(inner.conn_index);
                    conn.drop_for(DropReason::ReadTooLarge);
                }
                log::error!(sessionID = id.hex(), error:% = e; "Failed to send session payload from destination to transport");
            }
        }
    };
    let reason = pump.run(forward).await;
    let Some(inner) = inner.upgrade() else { return };
    let Some(mut entry) = inner.sessions.borrow_mut().remove(&id) else {
        return;
    };
    // This task is finishing: let its handle go without cancelling it.
    if let Some(t) = entry.task.take() {
        t.detach();
    }
    let manager = UdpSessions { inner };
    manager.end_accounting();
    let v3 = manager.inner.version == DatagramVersion::V3;
    let message = match (&reason, v3) {
        (EndReason::Idle(d), false) => format!("session idle for {}", go_duration(*d)),
        (EndReason::Idle(d), true) => format!("flow was idle for {}", go_duration(*d)),
        (EndReason::Origin(e), _) => e.clone(),
    };
    if v3 {
        if let EndReason::Origin(_) = reason {
            manager.inner.stats.failed_flows.fetch_add(1, Relaxed);
            let conn = manager.inner.stats.v3_conns.conn(manager.inner.conn_index);
            conn.failed.fetch_add(1, Relaxed);
            log::error!(flowID = id.hex(), error = message.as_str(); "flow closed with an error");
        } else {
            log::debug!(flowID = id.hex(); "flow closed: {message}");
        }
    } else {
        manager.inner.sink.session_closed(id, &message);
        log::debug!(event = 3, sessionID = id.hex(), error = message.as_str(); "Session terminated");
    }
}

#[cfg(test)]
mod tests;
