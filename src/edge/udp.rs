//! The built-in edge's UDP routes (`ringflare edge --udp-route LISTEN=DEST`): every eyeball
//! source address that sends to LISTEN becomes one UDP session toward the private destination
//! DEST, opened through a registered QUIC connector connection (spec §4.3), so warp-routing UDP
//! forwarding is testable end to end on one machine.
//!
//! Two halves, on different cores:
//! - **the route** ([`run_route`], on worker 0): owns the eyeball socket and the table
//!   eyeball address -> session; picks a connection for each new source, sends it the payloads,
//!   sends replies back to the source, and closes sessions idle for `udp_idle_timeout`;
//! - **the connection side** ([`attach`], on the QUIC connection's core, started when a
//!   connector registers over QUIC while routes exist): opens each session on the connector
//!   as its datagram version says (v2: `registerUdpSession` on an RPC stream the edge opens,
//!   then v2 datagrams; v3: the registration datagram, then v3 payload datagrams), decodes the
//!   connector's datagrams back to the route, unregisters idle v2 sessions, and serves the
//!   connector's own `unregisterUdpSession` calls on the RPC streams it opens.
//!
//! The halves talk over bounded channels (commands to the connection; replies to the route,
//! dropped and counted when full) and one unbounded but session-bounded channel of ended
//! sessions. Bounded: `udp_max_sessions` sessions per route, [`PENDING_PER_SESSION`] payloads
//! held while a v2 registration is in flight. Nothing here panics on peer input; malformed
//! datagrams are dropped and counted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use compio::BufResult;
use compio::quic::Connection;
use futures_channel::mpsc;
use futures_util::StreamExt;
use futures_util::future::select;
use uuid::Uuid;

use crate::connector::backoff::go_duration;
use crate::connector::udp::DatagramVersion;
use crate::connector::udp::quic::version_for;
use crate::proto::datagram::{SessionId, v2, v3};
use crate::proto::framing::RPC_STREAM_SIGNATURE;
use crate::proto::rpc_types::{
    RegisterUdpSessionParams, RegisterUdpSessionResponse, UnregisterUdpSessionParams,
    UpdateConfigurationResponse,
};
use crate::proto::{CloudflaredClient, CloudflaredServer, RpcError, serve_cloudflared};
use crate::runtime::{StopSignal, relay};

/// Default [`super::EdgeOptions::udp_idle_timeout`]: sessions with no traffic either way for
/// this long are closed (and the connector is told the same idle time as its hint).
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(60);
/// Default [`super::EdgeOptions::udp_max_sessions`], per route.
pub const DEFAULT_UDP_MAX_SESSIONS: usize = 1024;
/// Commands queued toward one connection's core before payloads are dropped.
const COMMAND_QUEUE: usize = 1024;
/// Replies queued toward one route's socket before they are dropped.
const REPLY_QUEUE: usize = 1024;
/// Payloads held per session while its v2 registration is in flight; more are dropped.
pub const PENDING_PER_SESSION: usize = 16;
/// Limit for one session RPC (register or unregister) on the connector.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest datagram read from an eyeball; larger ones are truncated by the kernel and dropped
/// by the codec's size check.
const EYEBALL_READ_SIZE: usize = 2048;

/// One `--udp-route`: eyeballs send to `listen`, the connector forwards to `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpRoute {
    /// The edge's eyeball UDP address.
    pub listen: SocketAddr,
    /// The private destination the connector dials.
    pub dest: SocketAddr,
    /// Only this tunnel's connections carry the route; `None`: any tunnel's.
    pub tunnel: Option<Uuid>,
}

impl FromStr for UdpRoute {
    type Err = String;

    /// `LISTEN=DEST` or `LISTEN=DEST@TUNNEL-ID`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid --udp-route {s:?} (want LISTEN=DEST or LISTEN=DEST@TUNNEL-ID)");
        let (listen, rest) = s.split_once('=').ok_or_else(bad)?;
        let (dest, tunnel) = match rest.split_once('@') {
            Some((d, t)) => (d, Some(Uuid::parse_str(t).map_err(|_| bad())?)),
            None => (rest, None),
        };
        Ok(UdpRoute {
            listen: listen.trim().parse().map_err(|_| bad())?,
            dest: dest.trim().parse().map_err(|_| bad())?,
            tunnel,
        })
    }
}

/// Counters of every route and connection together (see [`super::Edge::udp_stats`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpStats {
    /// Sessions open now.
    pub active: u64,
    /// Sessions opened since start (the connector may still refuse them).
    pub opened: u64,
    /// Sessions the connector refused (max-active-flows, dial failure) or no connector took.
    pub refused: u64,
    /// Sessions the edge closed after `udp_idle_timeout`.
    pub idle_closed: u64,
    /// Sessions the connector closed (its own idle timeout, origin error).
    pub connector_closed: u64,
    /// Payload datagrams sent to connectors.
    pub to_connector: u64,
    /// Payloads sent back to eyeballs.
    pub to_eyeball: u64,
    /// Payloads or datagrams dropped (full queue, unknown session, malformed, too large).
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    active: AtomicU64,
    opened: AtomicU64,
    refused: AtomicU64,
    idle_closed: AtomicU64,
    connector_closed: AtomicU64,
    to_connector: AtomicU64,
    to_eyeball: AtomicU64,
    dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// What the route tells a connection's core.
enum Command {
    /// Open session `id` toward `dest` for `eyeball`; `first` is its first payload.
    Open {
        id: SessionId,
        dest: SocketAddr,
        eyeball: SocketAddr,
        first: Bytes,
        route: RouteLink,
    },
    /// One more payload for an open session.
    Payload { id: SessionId, payload: Bytes },
    /// The route closed the session (idle).
    Close { id: SessionId, reason: String },
}

/// The way back to a route: replies (bounded) and ended sessions (one message per session).
#[derive(Clone)]
struct RouteLink {
    replies: mpsc::Sender<(SocketAddr, Bytes)>,
    ended: mpsc::UnboundedSender<(SocketAddr, SessionId)>,
}

/// A registered QUIC connection that carries UDP sessions.
struct ConnEntry {
    key: u64,
    tunnel: Uuid,
    commands: mpsc::Sender<Command>,
}

/// State shared by every core: the routes' settings, the UDP-capable connections, counters.
pub(crate) struct Hub {
    enabled: bool,
    idle: Duration,
    max_sessions: usize,
    conns: Mutex<Vec<ConnEntry>>,
    next_conn: AtomicUsize,
    next_key: AtomicU64,
    counters: Counters,
}

impl Hub {
    pub fn new(opts: &super::EdgeOptions) -> Hub {
        Hub {
            enabled: !opts.udp_routes.is_empty(),
            idle: opts.udp_idle_timeout.max(Duration::from_millis(100)),
            max_sessions: opts.udp_max_sessions.max(1),
            conns: Mutex::new(Vec::new()),
            next_conn: AtomicUsize::new(0),
            next_key: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UdpStats {
        let c = &self.counters;
        UdpStats {
            active: c.active.load(Relaxed),
            opened: c.opened.load(Relaxed),
            refused: c.refused.load(Relaxed),
            idle_closed: c.idle_closed.load(Relaxed),
            connector_closed: c.connector_closed.load(Relaxed),
            to_connector: c.to_connector.load(Relaxed),
            to_eyeball: c.to_eyeball.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
        }
    }

    /// A connection for a new session (round robin), restricted to `tunnel` when given.
    fn pick(&self, tunnel: Option<Uuid>) -> Option<mpsc::Sender<Command>> {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let fit: Vec<&ConnEntry> = conns
            .iter()
            .filter(|c| tunnel.is_none_or(|t| t == c.tunnel))
            .collect();
        if fit.is_empty() {
            return None;
        }
        let i = self.next_conn.fetch_add(1, Relaxed) % fit.len();
        Some(fit[i].commands.clone())
    }

    fn remove(&self, key: u64) {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|c| c.key != key);
    }
}

// ---------------------------------------------------------------------------------------------
// The route (eyeball side).

/// One session as the route sees it.
struct RouteSession {
    id: SessionId,
    conn: mpsc::Sender<Command>,
    last: Instant,
}

/// Serves one route until `stop`: eyeball datagrams in, replies out, idle sessions closed.
pub(crate) async fn run_route(
    route: UdpRoute,
    socket: compio::net::UdpSocket,
    hub: Arc<Hub>,
    stop: StopSignal,
) {
    let (replies_tx, mut replies) = mpsc::channel::<(SocketAddr, Bytes)>(REPLY_QUEUE);
    let (ended_tx, mut ended) = mpsc::unbounded::<(SocketAddr, SessionId)>();
    let link = RouteLink {
        replies: replies_tx,
        ended: ended_tx,
    };
    let table: RefCell<HashMap<SocketAddr, RouteSession>> = RefCell::new(HashMap::new());
    let socket = &socket;
    let c = &hub.counters;
    let end = |eyeball: &SocketAddr, id: Option<SessionId>| {
        let mut t = table.borrow_mut();
        if t.get(eyeball)
            .is_some_and(|s| id.is_none_or(|id| s.id == id))
        {
            t.remove(eyeball);
            c.active.fetch_sub(1, Relaxed);
        }
    };
    let reader = async {
        let mut buf = Vec::with_capacity(EYEBALL_READ_SIZE);
        let mut failures = 0u32;
        loop {
            buf.clear();
            let BufResult(r, b) = socket.recv_from(buf).await;
            buf = b;
            let (n, from) = match r {
                Ok(x) => x,
                // A transient error (an ICMP error of an earlier send): keep serving, unless
                // the socket keeps failing.
                Err(e) if failures < 64 => {
                    failures += 1;
                    log::debug!(listen:% = route.listen, error:% = e; "UDP route read failed");
                    continue;
                }
                Err(e) => {
                    log::error!(listen:% = route.listen, error:% = e; "UDP route stopped: its socket keeps failing");
                    return;
                }
            };
            failures = 0;
            let payload = Bytes::copy_from_slice(&buf[..n.min(buf.len())]);
            dispatch(&route, &hub, &table, &link, from, payload, &end);
        }
    };
    let writer = async {
        while let Some((to, payload)) = replies.next().await {
            if let Some(s) = table.borrow_mut().get_mut(&to) {
                s.last = Instant::now();
            }
            match socket.send_to(payload, to).await {
                BufResult(Ok(_), _) => bump(&c.to_eyeball),
                BufResult(Err(e), _) => {
                    bump(&c.dropped);
                    log::debug!(eyeball:% = to, error:% = e; "UDP route reply failed");
                }
            }
        }
    };
    let ender = async {
        while let Some((eyeball, id)) = ended.next().await {
            end(&eyeball, Some(id));
        }
    };
    let sweeper = async {
        let tick = (hub.idle / 4).max(Duration::from_millis(50));
        loop {
            compio::time::sleep(tick).await;
            let now = Instant::now();
            let idle: Vec<SocketAddr> = table
                .borrow()
                .iter()
                .filter(|(_, s)| now.duration_since(s.last) >= hub.idle)
                .map(|(a, _)| *a)
                .collect();
            for eyeball in idle {
                let Some(s) = table.borrow_mut().remove(&eyeball) else {
                    continue;
                };
                c.active.fetch_sub(1, Relaxed);
                bump(&c.idle_closed);
                let reason = format!("session idle for {}", go_duration(hub.idle));
                log::debug!(sessionID = s.id.hex(), eyeball:% = eyeball; "UDP session closed: {reason}");
                let mut conn = s.conn;
                let _ = conn.try_send(Command::Close { id: s.id, reason });
            }
        }
    };
    let all = async {
        let (reader, writer, ender, sweeper) =
            (pin!(reader), pin!(writer), pin!(ender), pin!(sweeper));
        let _ = select(select(reader, writer), select(ender, sweeper)).await;
    };
    super::until_stopped(&stop, all).await;
    let n = table.borrow().len() as u64;
    c.active.fetch_sub(n.min(c.active.load(Relaxed)), Relaxed);
}

/// One eyeball datagram: to its session, or a new session on a connection.
fn dispatch(
    route: &UdpRoute,
    hub: &Hub,
    table: &RefCell<HashMap<SocketAddr, RouteSession>>,
    link: &RouteLink,
    from: SocketAddr,
    payload: Bytes,
    end: &impl Fn(&SocketAddr, Option<SessionId>),
) {
    let c = &hub.counters;
    {
        let mut t = table.borrow_mut();
        if let Some(s) = t.get_mut(&from) {
            s.last = Instant::now();
            let id = s.id;
            match s.conn.try_send(Command::Payload { id, payload }) {
                Ok(()) => return,
                Err(e) if e.is_full() => {
                    bump(&c.dropped);
                    return;
                }
                Err(e) => {
                    // The connection is gone: open the session again elsewhere.
                    drop(t);
                    end(&from, Some(id));
                    let Command::Payload { payload, .. } = e.into_inner() else {
                        return;
                    };
                    return open(route, hub, table, link, from, payload);
                }
            }
        }
    }
    open(route, hub, table, link, from, payload);
}

fn open(
    route: &UdpRoute,
    hub: &Hub,
    table: &RefCell<HashMap<SocketAddr, RouteSession>>,
    link: &RouteLink,
    from: SocketAddr,
    first: Bytes,
) {
    let c = &hub.counters;
    if table.borrow().len() >= hub.max_sessions {
        bump(&c.refused);
        bump(&c.dropped);
        log::warn!(listen:% = route.listen, eyeball:% = from, limit = hub.max_sessions;
            "Too many UDP sessions on this route: dropped a new session's datagram");
        return;
    }
    let Some(mut conn) = hub.pick(route.tunnel) else {
        bump(&c.refused);
        bump(&c.dropped);
        log::warn!(listen:% = route.listen, eyeball:% = from;
            "No QUIC connector connection for the UDP route: dropped datagram");
        return;
    };
    let id = SessionId(*Uuid::new_v4().as_bytes());
    let cmd = Command::Open {
        id,
        dest: route.dest,
        eyeball: from,
        first,
        route: link.clone(),
    };
    if conn.try_send(cmd).is_err() {
        bump(&c.dropped);
        return;
    }
    bump(&c.opened);
    c.active.fetch_add(1, Relaxed);
    log::debug!(sessionID = id.hex(), eyeball:% = from, dst:% = route.dest; "Opening UDP session");
    table.borrow_mut().insert(
        from,
        RouteSession {
            id,
            conn,
            last: Instant::now(),
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The connection side.

/// Where a session stands on its connection.
enum Phase {
    /// v2: `registerUdpSession` in flight; payloads wait here.
    Registering(Vec<Bytes>),
    /// Open (v3 from the registration datagram on: the connector answers it, and payloads
    /// that race the answer are for a flow it is opening).
    Open,
}

struct ConnSession {
    eyeball: SocketAddr,
    route: RouteLink,
    phase: Phase,
}

/// One connection's sessions (on its core).
struct ConnState {
    conn: Connection,
    version: DatagramVersion,
    conn_index: u8,
    hub: Arc<Hub>,
    sessions: RefCell<HashMap<SessionId, ConnSession>>,
}

impl ConnState {
    fn send(&self, d: Vec<u8>) {
        match self.conn.send_datagram(Bytes::from(d)) {
            Ok(()) => bump(&self.hub.counters.to_connector),
            Err(e) => {
                bump(&self.hub.counters.dropped);
                log::debug!(connIndex = self.conn_index, error:% = e; "UDP datagram to connector not sent");
            }
        }
    }

    fn send_payload(&self, id: SessionId, payload: &[u8]) {
        let mut d = Vec::with_capacity(payload.len() + v3::PAYLOAD_HEADER_LEN + 17);
        let r = match self.version {
            DatagramVersion::V2 => v2::encode_udp(id, payload, &mut d),
            DatagramVersion::V3 => v3::encode_payload(id, payload, &mut d),
        };
        match r {
            Ok(()) => self.send(d),
            Err(e) => {
                bump(&self.hub.counters.dropped);
                log::debug!(sessionID = id.hex(), error:% = e; "UDP payload dropped");
            }
        }
    }

    /// Ends a session on this side and tells its route; `refused` counts it as refused.
    fn end(&self, id: SessionId, refused: bool) {
        if let Some(s) = self.sessions.borrow_mut().remove(&id) {
            if refused {
                bump(&self.hub.counters.refused);
            }
            let _ = s.route.ended.unbounded_send((s.eyeball, id));
        }
    }

    fn command(self: &Rc<Self>, cmd: Command) {
        match cmd {
            Command::Open {
                id,
                dest,
                eyeball,
                first,
                route,
            } => self.open(id, dest, eyeball, first, route),
            Command::Payload { id, payload } => {
                let ready = {
                    let mut sessions = self.sessions.borrow_mut();
                    match sessions.get_mut(&id).map(|s| &mut s.phase) {
                        Some(Phase::Open) => Some(payload),
                        Some(Phase::Registering(held)) if held.len() < PENDING_PER_SESSION => {
                            held.push(payload);
                            None
                        }
                        _ => {
                            bump(&self.hub.counters.dropped);
                            None
                        }
                    }
                };
                if let Some(p) = ready {
                    self.send_payload(id, &p);
                }
            }
            Command::Close { id, reason } => {
                let Some(_) = self.sessions.borrow_mut().remove(&id) else {
                    return;
                };
                if self.version == DatagramVersion::V2 {
                    // v3 has no close message: the connector idles the flow out itself.
                    let me = self.clone();
                    compio::runtime::spawn(async move {
                        let params = UnregisterUdpSessionParams {
                            session_id: id.0.to_vec(),
                            message: reason,
                        };
                        let call = me.rpc(|c| async move { c.unregister_udp_session(&params).await });
                        if let Err(e) = call.await {
                            log::debug!(sessionID = id.hex(), error = e.as_str(); "unregisterUdpSession failed");
                        }
                    })
                    .detach();
                }
            }
        }
    }

    fn open(
        self: &Rc<Self>,
        id: SessionId,
        dest: SocketAddr,
        eyeball: SocketAddr,
        first: Bytes,
        route: RouteLink,
    ) {
        let idle = self.hub.idle;
        match self.version {
            DatagramVersion::V3 => {
                let mut d = Vec::new();
                let reg = v3::Registration {
                    request_id: id,
                    dest,
                    traced: false,
                    idle_hint: idle,
                    payload: &first,
                };
                if let Err(e) = v3::encode_registration(&reg, &mut d) {
                    bump(&self.hub.counters.dropped);
                    bump(&self.hub.counters.refused);
                    let _ = route.ended.unbounded_send((eyeball, id));
                    log::debug!(sessionID = id.hex(), error:% = e; "UDP registration not encoded");
                    return;
                }
                self.sessions.borrow_mut().insert(
                    id,
                    ConnSession {
                        eyeball,
                        route,
                        phase: Phase::Open,
                    },
                );
                self.send(d);
            }
            DatagramVersion::V2 => {
                let held = if first.is_empty() {
                    Vec::new()
                } else {
                    vec![first]
                };
                self.sessions.borrow_mut().insert(
                    id,
                    ConnSession {
                        eyeball,
                        route,
                        phase: Phase::Registering(held),
                    },
                );
                let me = self.clone();
                compio::runtime::spawn(async move {
                    let params = RegisterUdpSessionParams {
                        session_id: id.0.to_vec(),
                        dst_ip: match dest.ip() {
                            std::net::IpAddr::V4(a) => a.octets().to_vec(),
                            std::net::IpAddr::V6(a) => a.octets().to_vec(),
                        },
                        dst_port: dest.port(),
                        close_after_idle_hint: i64::try_from(idle.as_nanos()).unwrap_or(i64::MAX),
                        trace_context: String::new(),
                    };
                    let r = me
                        .rpc(|c| async move { c.register_udp_session(&params).await })
                        .await;
                    me.registered(id, dest, r);
                })
                .detach();
            }
        }
    }

    /// The answer to a v2 registration.
    fn registered(
        &self,
        id: SessionId,
        dest: SocketAddr,
        r: Result<RegisterUdpSessionResponse, String>,
    ) {
        let err = match r {
            Ok(RegisterUdpSessionResponse { err: None, .. }) => None,
            Ok(RegisterUdpSessionResponse { err: Some(e), .. }) => Some(e),
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            log::warn!(connIndex = self.conn_index, sessionID = id.hex(), dst:% = dest, error = e.as_str();
                "Connector refused UDP session");
            self.end(id, true);
            return;
        }
        let held = match self.sessions.borrow_mut().get_mut(&id) {
            Some(s) => match std::mem::replace(&mut s.phase, Phase::Open) {
                Phase::Registering(held) => held,
                Phase::Open => Vec::new(),
            },
            // Closed while registering: leave it to the connector's idle timeout.
            None => return,
        };
        log::debug!(connIndex = self.conn_index, sessionID = id.hex(), dst:% = dest; "UDP session registered");
        for p in held {
            self.send_payload(id, &p);
        }
    }

    /// One call on a new RPC stream to the connector's `CloudflaredServer`.
    async fn rpc<T, F, Fut>(&self, call: F) -> Result<T, String>
    where
        F: FnOnce(CloudflaredClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, RpcError>>,
    {
        let work = async {
            let (send, recv) = self.conn.open_bi().map_err(|e| e.to_string())?;
            let mut writer = send.into_compat();
            futures_util::AsyncWriteExt::write_all(&mut writer, &RPC_STREAM_SIGNATURE)
                .await
                .map_err(|e| e.to_string())?;
            let (client, driver) = CloudflaredClient::connect(recv.into_compat(), writer);
            let _driver = compio::runtime::spawn(driver);
            call(client).await.map_err(|e| e.to_string())
        };
        compio::time::timeout(RPC_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err("rpc timeout".to_owned()))
    }

    /// One datagram from the connector.
    fn datagram(&self, d: &Bytes) {
        let c = &self.hub.counters;
        let (id, payload) = match self.version {
            DatagramVersion::V2 => match v2::decode(d) {
                Ok(v2::Datagram::Udp { session, payload }) => (session, payload),
                Ok(_) => {
                    bump(&c.dropped);
                    return;
                }
                Err(e) => {
                    bump(&c.dropped);
                    log::debug!(connIndex = self.conn_index, error:% = e; "Malformed datagram from connector");
                    return;
                }
            },
            DatagramVersion::V3 => match v3::decode(d) {
                Ok(v3::Datagram::Payload {
                    request_id,
                    payload,
                }) => (request_id, payload),
                Ok(v3::Datagram::RegistrationResponse {
                    request_id,
                    status,
                    message,
                }) => {
                    if status != v3::ResponseStatus::Ok {
                        log::warn!(connIndex = self.conn_index, flowID = request_id.hex(),
                            status:? = status, error:% = String::from_utf8_lossy(message);
                            "Connector refused UDP flow");
                        self.end(request_id, true);
                    }
                    return;
                }
                Ok(_) => {
                    bump(&c.dropped);
                    return;
                }
                Err(e) => {
                    bump(&c.dropped);
                    log::debug!(connIndex = self.conn_index, error:% = e; "Malformed datagram from connector");
                    return;
                }
            },
        };
        let mut sessions = self.sessions.borrow_mut();
        let Some(s) = sessions.get_mut(&id) else {
            bump(&c.dropped);
            return;
        };
        if s.route
            .replies
            .try_send((s.eyeball, d.slice_ref(payload)))
            .is_err()
        {
            bump(&c.dropped);
        }
    }
}

/// The connector's calls on the RPC streams it opens: `unregisterUdpSession` (v2).
struct ConnectorCalls(Rc<ConnState>);

impl CloudflaredServer for ConnectorCalls {
    async fn update_configuration(
        &self,
        _: i32,
        _: Vec<u8>,
    ) -> Result<UpdateConfigurationResponse, RpcError> {
        Err(RpcError::failed("not served by the edge"))
    }

    async fn register_udp_session(
        &self,
        _: RegisterUdpSessionParams,
    ) -> Result<RegisterUdpSessionResponse, RpcError> {
        Err(RpcError::failed("not served by the edge"))
    }

    async fn unregister_udp_session(&self, p: UnregisterUdpSessionParams) -> Result<(), RpcError> {
        if let Some(id) = SessionId::from_slice(&p.session_id)
            && self.0.sessions.borrow().contains_key(&id)
        {
            bump(&self.0.hub.counters.connector_closed);
            log::debug!(connIndex = self.0.conn_index, sessionID = id.hex(), reason = p.message.as_str();
                "Connector closed UDP session");
            self.0.end(id, false);
        }
        Ok(())
    }
}

/// Starts carrying UDP sessions on a registered QUIC connection (on its core), when the edge
/// has UDP routes. The work ends with the connection or at `stop`.
pub(crate) fn attach(
    conn: &Connection,
    tunnel: Uuid,
    conn_index: u8,
    features: &[String],
    hub: &Arc<Hub>,
    stop: &StopSignal,
) {
    if !hub.enabled {
        return;
    }
    let (commands_tx, mut commands) = mpsc::channel::<Command>(COMMAND_QUEUE);
    let key = hub.next_key.fetch_add(1, Relaxed);
    let state = Rc::new(ConnState {
        conn: conn.clone(),
        version: version_for(features),
        conn_index,
        hub: hub.clone(),
        sessions: RefCell::new(HashMap::new()),
    });
    hub.conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(ConnEntry {
            key,
            tunnel,
            commands: commands_tx,
        });
    log::debug!(connIndex = conn_index, version:? = state.version; "QUIC connection carries UDP routes");
    let stop = stop.clone();
    // Homed: the route on another core wakes it through the command channel.
    compio::runtime::spawn(relay::homed(async move {
        let st = state.clone();
        let inbound = async {
            while let Ok(d) = st.conn.recv_datagram().await {
                st.datagram(&d);
            }
        };
        let cmds = async {
            while let Some(cmd) = commands.next().await {
                st.command(cmd);
            }
            std::future::pending::<()>().await;
        };
        let calls = async {
            while let Ok((send, recv)) = st.conn.accept_bi().await {
                let server = ConnectorCalls(st.clone());
                compio::runtime::spawn(async move {
                    let mut reader = recv.into_compat();
                    let mut sig = [0u8; 6];
                    let read = futures_util::AsyncReadExt::read_exact(&mut reader, &mut sig);
                    if !matches!(compio::time::timeout(RPC_TIMEOUT, read).await, Ok(Ok(())))
                        || sig != RPC_STREAM_SIGNATURE
                    {
                        return;
                    }
                    let _ = compio::time::timeout(
                        RPC_TIMEOUT,
                        serve_cloudflared(server, reader, send.into_compat()),
                    )
                    .await;
                })
                .detach();
            }
            std::future::pending::<()>().await;
        };
        let work = async {
            let (inbound, cmds, calls) = (pin!(inbound), pin!(cmds), pin!(calls));
            let _ = select(inbound, select(cmds, calls)).await;
        };
        super::until_stopped(&stop, work).await;
        state.hub.remove(key);
        let ids: Vec<SessionId> = state.sessions.borrow().keys().copied().collect();
        for id in ids {
            state.end(id, false);
        }
    }))
    .detach();
}
