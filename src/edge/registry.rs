//! State shared by every core: the tunnels, host routing, live connections, registrations.
//!
//! Reads on the request path are lock-free (`ArcSwap` snapshots of each tunnel's
//! connections, an immutable host table); writes happen on (un)registration only.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use uuid::Uuid;

use super::stream::Opener;
use super::{EdgeOptions, EdgeTunnel};

/// One registered connector connection, as [`super::Edge::registered`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The tunnel it serves.
    pub tunnel_id: Uuid,
    /// `connIndex` the connector sent (0..HA-1).
    pub conn_index: u8,
    /// The connector's id (`ClientInfo.clientId`, a random UUID per connector process).
    pub client_id: Uuid,
    /// Connector version (`2025.5.0`, `DEV`, ...).
    pub version: String,
    /// Connector `GOOS_GOARCH`.
    pub arch: String,
    /// Features the connector announced.
    pub features: Vec<String>,
    /// The id the edge gave this connection (`ConnectionDetails.uuid`).
    pub connection_id: Uuid,
    /// The tunnel listener the connector dialled.
    pub listener: SocketAddr,
    /// The connector's address.
    pub peer: SocketAddr,
    /// Worker (core) the connection lives on.
    pub worker: usize,
    /// The transport it registered over: `http2` or `quic`.
    pub protocol: &'static str,
}

/// A live connection eyeball requests may use.
pub(crate) struct ConnHandle {
    /// Edge-side connection id.
    pub id: Uuid,
    /// The connector's connIndex, for logs.
    pub conn_index: u8,
    /// Opens streams on the connection; `Send + Sync`, so usable from any core.
    pub opener: Opener,
    /// The worker thread the connection lives on (where it registered): an eyeball on that
    /// thread reaches it without a cross-core wake.
    home: std::thread::ThreadId,
    /// Streams in flight on this connection.
    active: AtomicUsize,
    /// Set by `unregisterConnection`: no new work.
    draining: AtomicBool,
    /// Woken when `active` drops to zero.
    idle: AtomicWaker,
}

impl ConnHandle {
    pub fn new(id: Uuid, conn_index: u8, send: h2::client::SendRequest<Bytes>) -> Self {
        Self::with_opener(id, conn_index, Opener::H2(send))
    }

    /// A handle for a connection that lives on the calling thread.
    pub fn with_opener(id: Uuid, conn_index: u8, opener: Opener) -> Self {
        Self {
            id,
            conn_index,
            opener,
            home: std::thread::current().id(),
            active: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            idle: AtomicWaker::new(),
        }
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Resolves once no stream is in flight.
    pub async fn idle(&self) {
        std::future::poll_fn(|cx| {
            self.idle.register(cx.waker());
            if self.active() == 0 {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
}

/// Counts one in-flight stream on a connection for as long as it lives.
pub(crate) struct StreamGuard {
    pub conn: Arc<ConnHandle>,
}

impl StreamGuard {
    fn new(conn: Arc<ConnHandle>) -> Self {
        conn.active.fetch_add(1, Ordering::AcqRel);
        Self { conn }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.conn.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn.idle.wake();
        }
    }
}

/// Round robin from `start` over the live connections that pass `filter`, taking the less
/// loaded of the first two found.
fn pick(
    conns: &[Arc<ConnHandle>],
    start: usize,
    filter: impl Fn(&ConnHandle) -> bool,
) -> Option<&Arc<ConnHandle>> {
    let n = conns.len();
    let mut best: Option<&Arc<ConnHandle>> = None;
    let mut seen = 0;
    for i in 0..n {
        let Some(c) = conns.get((start + i) % n) else {
            continue;
        };
        if c.is_draining() || !filter(c) {
            continue;
        }
        if best.is_none_or(|b| c.active() < b.active()) {
            best = Some(c);
        }
        seen += 1;
        if seen == 2 {
            break;
        }
    }
    best
}

/// A tunnel and its live connections.
struct TunnelState {
    tunnel: EdgeTunnel,
    conns: ArcSwap<Vec<Arc<ConnHandle>>>,
    next: AtomicUsize,
}

/// Host → tunnel index, built once at start.
#[derive(Debug, Default)]
struct HostTable {
    exact: HashMap<String, usize>,
    /// `(".example.com", tunnel)`, longest suffix first.
    suffixes: Vec<(String, usize)>,
    any: Option<usize>,
}

impl HostTable {
    fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(t) = self.exact.get(host) {
            return Some(*t);
        }
        self.suffixes
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, t)| *t)
            .or(self.any)
    }
}

/// Why a host could not be served.
pub(crate) enum RouteError {
    /// No tunnel claims the host.
    UnknownHost,
    /// The tunnel exists but has no usable connection.
    NoConnector(Uuid),
}

/// Everything the cores share.
pub(crate) struct Shared {
    tunnels: Vec<TunnelState>,
    by_id: HashMap<Uuid, usize>,
    hosts: HostTable,
    /// Registrations by edge connection id, plus a condvar for `wait_registered`.
    regs: Mutex<HashMap<Uuid, Registration>>,
    regs_changed: Condvar,
    /// Count and last body of `updateLocalConfiguration` uploads.
    local_configs: Mutex<(usize, Option<Vec<u8>>)>,
    pub location: String,
    /// `-LOCATION`, the tail of every ray ID.
    ray_suffix: String,
    pub handshake_timeout: Duration,
    pub register_timeout: Duration,
    pub drain_timeout: Duration,
    pub response_timeout: Duration,
    pub eyeball_head_timeout: Duration,
    pub max_eyeball_connections: usize,
    /// Open eyeball connections per listener (0: plain, 1: TLS), all cores together.
    pub eyeball_open: [AtomicUsize; 2],
    /// Per-process random base for Cf-Ray ids, plus a counter.
    ray_base: u64,
    ray_counter: AtomicU64,
    /// UDP routes' connections and counters (see `udp`).
    pub udp: Arc<super::udp::Hub>,
}

impl Shared {
    pub fn new(opts: &EdgeOptions) -> Result<Self, String> {
        let mut by_id = HashMap::new();
        let mut hosts = HostTable::default();
        for (i, t) in opts.tunnels.iter().enumerate() {
            if by_id.insert(t.tunnel_id, i).is_some() {
                return Err(format!("tunnel {} is listed twice", t.tunnel_id));
            }
            for name in &t.hostnames {
                let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
                let clash = if name == "*" {
                    hosts.any.replace(i).is_some()
                } else if let Some(suffix) = name.strip_prefix("*.") {
                    if suffix.is_empty() {
                        return Err(format!("tunnel {}: empty wildcard", t.tunnel_id));
                    }
                    let suffix = format!(".{suffix}");
                    let dup = hosts.suffixes.iter().any(|(s, _)| *s == suffix);
                    hosts.suffixes.push((suffix, i));
                    dup
                } else if name.is_empty() || name.contains('*') || name.contains('/') {
                    return Err(format!(
                        "tunnel {}: invalid hostname {name:?} (use a name, *.suffix or *)",
                        t.tunnel_id
                    ));
                } else {
                    hosts.exact.insert(name.clone(), i).is_some()
                };
                if clash {
                    return Err(format!("hostname {name:?} is routed to two tunnels"));
                }
            }
        }
        hosts
            .suffixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(Self {
            tunnels: opts
                .tunnels
                .iter()
                .map(|t| TunnelState {
                    tunnel: t.clone(),
                    conns: ArcSwap::from_pointee(Vec::new()),
                    next: AtomicUsize::new(0),
                })
                .collect(),
            by_id,
            hosts,
            regs: Mutex::new(HashMap::new()),
            regs_changed: Condvar::new(),
            local_configs: Mutex::new((0, None)),
            location: opts.location.clone(),
            ray_suffix: format!("-{}", opts.location.to_ascii_uppercase()),
            handshake_timeout: opts.handshake_timeout,
            register_timeout: opts.register_timeout,
            drain_timeout: opts.drain_timeout,
            response_timeout: opts.response_timeout,
            eyeball_head_timeout: opts.eyeball_head_timeout,
            max_eyeball_connections: opts.max_eyeball_connections,
            eyeball_open: [AtomicUsize::new(0), AtomicUsize::new(0)],
            ray_base: uuid::Uuid::new_v4().as_u64_pair().0,
            ray_counter: AtomicU64::new(0),
            udp: Arc::new(super::udp::Hub::new(opts)),
        })
    }

    /// The tunnel with this id.
    pub fn tunnel(&self, id: &Uuid) -> Option<&EdgeTunnel> {
        self.by_id
            .get(id)
            .and_then(|i| self.tunnels.get(*i))
            .map(|t| &t.tunnel)
    }

    /// Picks a connection for `host` (lowercase, no port): round robin over the tunnel's
    /// live connections, taking the less loaded of the next two. Connections that live on the
    /// calling thread come first: a stream on one of them is opened, fed and answered without
    /// waking another core (two cross-core wakes per request saved, the main cost of a c=1
    /// request through the edge); other cores' connections serve only when this core has none.
    pub fn route(&self, host: &str) -> Result<StreamGuard, RouteError> {
        let idx = self.hosts.lookup(host).ok_or(RouteError::UnknownHost)?;
        let Some(state) = self.tunnels.get(idx) else {
            return Err(RouteError::UnknownHost);
        };
        let conns = state.conns.load();
        let start = state.next.fetch_add(1, Ordering::Relaxed);
        let here = std::thread::current().id();
        pick(&conns, start, |c| c.home == here)
            .or_else(|| pick(&conns, start, |_| true))
            .map(|c| StreamGuard::new(c.clone()))
            .ok_or(RouteError::NoConnector(state.tunnel.tunnel_id))
    }

    /// Publishes a registered connection.
    pub fn add(&self, handle: Arc<ConnHandle>, reg: Registration) {
        if let Some(state) = self
            .by_id
            .get(&reg.tunnel_id)
            .and_then(|i| self.tunnels.get(*i))
        {
            state.conns.rcu(|v| {
                let mut v = Vec::clone(v);
                v.push(handle.clone());
                v
            });
        }
        let mut regs = self.regs.lock().unwrap_or_else(|p| p.into_inner());
        regs.insert(reg.connection_id, reg);
        self.regs_changed.notify_all();
    }

    /// Removes a connection from routing (no new work) and from the registrations.
    pub fn remove(&self, tunnel_id: &Uuid, conn_id: &Uuid) {
        if let Some(state) = self.by_id.get(tunnel_id).and_then(|i| self.tunnels.get(*i)) {
            state.conns.rcu(|v| {
                v.iter()
                    .filter(|c| c.id != *conn_id)
                    .cloned()
                    .collect::<Vec<_>>()
            });
        }
        let mut regs = self.regs.lock().unwrap_or_else(|p| p.into_inner());
        if regs.remove(conn_id).is_some() {
            self.regs_changed.notify_all();
        }
    }

    /// Whether a live connection already has this (tunnel, client, connIndex).
    pub fn is_duplicate(&self, tunnel_id: &Uuid, client_id: &Uuid, conn_index: u8) -> bool {
        let regs = self.regs.lock().unwrap_or_else(|p| p.into_inner());
        regs.values().any(|r| {
            r.tunnel_id == *tunnel_id && r.client_id == *client_id && r.conn_index == conn_index
        })
    }

    pub fn registrations(&self) -> Vec<Registration> {
        let regs = self.regs.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Registration> = regs.values().cloned().collect();
        v.sort_by_key(|r| (r.tunnel_id, r.client_id, r.conn_index));
        v
    }

    pub fn wait_registered(&self, done: impl Fn(usize) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut regs = self.regs.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if done(regs.len()) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            regs = match self.regs_changed.wait_timeout(regs, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    pub fn record_local_config(&self, config: Vec<u8>) {
        let mut lc = self.local_configs.lock().unwrap_or_else(|p| p.into_inner());
        lc.0 += 1;
        lc.1 = Some(config);
    }

    pub fn local_configs(&self) -> (usize, Option<Vec<u8>>) {
        self.local_configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Drops every connection handle and registration (after the workers stopped).
    pub fn clear(&self) {
        for t in &self.tunnels {
            t.conns.store(Arc::new(Vec::new()));
        }
        let mut regs = self.regs.lock().unwrap_or_else(|p| p.into_inner());
        regs.clear();
        self.regs_changed.notify_all();
    }

    /// A Cf-Ray value: 16 hex digits and the colo, like `8f2a...-RFL01`.
    pub fn next_ray(&self) -> Ray {
        let n = self.ray_counter.fetch_add(1, Ordering::Relaxed);
        // Spread consecutive ids over all digits (odd multiplier: a bijection on u64).
        let id = self.ray_base ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut text = String::with_capacity(16 + self.ray_suffix.len());
        // Writing into a String sized for it: no further allocation.
        let _ = write!(text, "{id:016x}{}", self.ray_suffix);
        Ray(Bytes::from(text))
    }
}

/// A request's ray ID (`8f0a1b2c3d4e5f60-LHR`): one buffer, shared (not copied) by the request
/// header to the connector, the response header to the visitor, logs and error pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ray(Bytes);

impl Ray {
    pub fn as_str(&self) -> &str {
        // Built from hex digits and the location, which the options hold as a `String`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    #[cfg(test)]
    pub fn from_static(text: &'static str) -> Ray {
        Ray(Bytes::from_static(text.as_bytes()))
    }

    /// The ID as a header value (a reference to the same buffer).
    pub fn bytes(&self) -> Bytes {
        self.0.clone()
    }
}

impl std::fmt::Display for Ray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_with_tunnel(tunnel_id: Uuid) -> Shared {
        let mut opts = EdgeOptions::new("/nonexistent");
        opts.tunnels.push(EdgeTunnel {
            account_tag: "acct".into(),
            tunnel_id,
            secret: crate::config::Secret::new(vec![1; 32]),
            hostnames: vec!["*".into()],
        });
        Shared::new(&opts).unwrap()
    }

    /// Ray IDs: 16 lower-case hex digits, `-`, the location upper-cased; never the same twice
    /// in a row.
    #[test]
    fn ray_ids_are_hex_and_location() {
        let mut opts = EdgeOptions::new("/nonexistent");
        opts.location = "lhr".into();
        let shared = Shared::new(&opts).unwrap();
        let (a, b) = (shared.next_ray(), shared.next_ray());
        for ray in [&a, &b] {
            let (id, loc) = ray.as_str().split_once('-').unwrap();
            assert_eq!(id.len(), 16, "{ray}");
            assert!(
                id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{ray}"
            );
            assert_eq!(loc, "LHR");
        }
        assert_ne!(a, b);
    }

    fn registration(tunnel_id: Uuid, conn_index: u8, connection_id: Uuid) -> Registration {
        Registration {
            tunnel_id,
            conn_index,
            client_id: Uuid::nil(),
            version: "test".into(),
            arch: "test".into(),
            features: Vec::new(),
            connection_id,
            listener: SocketAddr::from(([127, 0, 0, 1], 1)),
            peer: SocketAddr::from(([127, 0, 0, 1], 2)),
            worker: 0,
            protocol: "http2",
        }
    }

    /// A handle whose home is another thread (as a connection on another core).
    fn foreign_handle(conn_index: u8) -> Arc<ConnHandle> {
        std::thread::spawn(move || {
            let (opener, _rx) = super::super::stream::quic_opener();
            Arc::new(ConnHandle::with_opener(Uuid::new_v4(), conn_index, opener))
        })
        .join()
        .unwrap()
    }

    fn local_handle(conn_index: u8) -> Arc<ConnHandle> {
        let (opener, _rx) = super::super::stream::quic_opener();
        Arc::new(ConnHandle::with_opener(Uuid::new_v4(), conn_index, opener))
    }

    /// Requests routed from a core that holds a connection stay on that core, however loaded
    /// the round robin would otherwise spread them; with no local connection, or only a
    /// draining one, other cores' connections serve.
    #[test]
    fn route_prefers_a_connection_on_the_calling_thread() {
        let tunnel_id = Uuid::new_v4();
        let shared = shared_with_tunnel(tunnel_id);
        let far = [foreign_handle(0), foreign_handle(1), foreign_handle(2)];
        for h in &far {
            shared.add(h.clone(), registration(tunnel_id, h.conn_index, h.id));
        }
        // No local connection: the others serve.
        let g = shared.route("example.com").ok().unwrap();
        assert!(far.iter().any(|h| h.id == g.conn.id));
        drop(g);

        let near = local_handle(3);
        shared.add(near.clone(), registration(tunnel_id, 3, near.id));
        let mut guards = Vec::new();
        for _ in 0..16 {
            let g = shared.route("example.com").ok().unwrap();
            assert_eq!(g.conn.id, near.id);
            guards.push(g);
        }
        assert_eq!(near.active(), 16);
        drop(guards);

        near.set_draining();
        let g = shared.route("example.com").ok().unwrap();
        assert_ne!(g.conn.id, near.id);
    }
}
