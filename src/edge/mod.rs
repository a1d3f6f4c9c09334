//! The built-in edge: the Cloudflare side of the tunnel protocol, on this machine.
//!
//! `ringflare edge` accepts connectors (cloudflared or ringflare) on its tunnel listeners,
//! speaks the edge side of the http2 transport (spec §3, §11: TLS server, HTTP/2 *client*,
//! control stream with `RegistrationServer`), and forwards HTTP/1.1 requests from its eyeball
//! listener over the registered connections. It owns: listeners and their accept loops
//! (one `SO_REUSEPORT` listener per core and address), connector connection lifecycles,
//! the registry of live connections and the host→tunnel routing, eyeball request
//! translation and error pages, and the `edge` command line (state directory, `edge.yml`).
//! It never does: QUIC, remote configuration pushes, or anything of the connector.
//!
//! # Cross-core design
//! A connector connection lives on the core that accepted it: its TLS stream, the h2
//! connection driver and the control-stream RPC (`!Send`) run there. Its
//! `h2::client::SendRequest` is `Send + Clone`, so an eyeball request accepted on any core
//! opens its stream directly on that handle; h2's shared stream state carries frames to the
//! owning core's driver, which compio wakes across threads. There is no per-request channel
//! hop and no copy between cores. The set of live connections per tunnel is an `ArcSwap`
//! snapshot, read lock-free on every request and replaced only on (un)registration.

mod cli;
mod config;
mod eyeball;
mod pages;
mod quic;
mod registry;
mod stream;
mod tunnel;
mod udp;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    time::Duration,
};

use uuid::Uuid;

use crate::config::Secret;
use crate::runtime::{IoDriver, SocketError, StopSignal, WorkerConfig, WorkerCtx, Workers};
use crate::tls::{EdgeCa, TlsError};

pub use cli::run_cli;
pub use config::{
    DEFAULT_CONFIG_NAME, EdgeConfigError, EdgeFile, EdgeFileTunnel, InitOutcome, default_state_dir,
    init_state_dir, load_edge_file,
};
pub use registry::Registration;
pub use udp::{DEFAULT_UDP_IDLE, DEFAULT_UDP_MAX_SESSIONS, UdpRoute, UdpStats};

use registry::Shared;

/// Default tunnel listener, as cloudflared's `--edge 127.0.0.1:7844` examples use.
pub const DEFAULT_TUNNEL_LISTEN: &str = "127.0.0.1:7844";
/// Default eyeball listener.
pub const DEFAULT_EYEBALL_LISTEN: &str = "127.0.0.1:8080";

/// One tunnel the edge knows: its credentials and the hostnames routed to it.
#[derive(Debug, Clone)]
pub struct EdgeTunnel {
    /// Account tag the connector must present.
    pub account_tag: String,
    /// The tunnel's id.
    pub tunnel_id: Uuid,
    /// The tunnel secret (raw bytes); `Debug` prints a mask.
    pub secret: Secret,
    /// Exact hostnames, `*.suffix` wildcards, or `*` for every host no other tunnel claims.
    pub hostnames: Vec<String>,
}

/// Everything [`Edge::start`] needs.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Where the CA, the server certificate and tunnel credentials live.
    pub state_dir: PathBuf,
    /// Tunnel (connector-facing) listeners; one connector connection per `--edge` address.
    pub tunnel_listen: Vec<SocketAddr>,
    /// Eyeball (visitor-facing) HTTP/1.1 listener; port 0 picks a free port.
    pub eyeball_listen: SocketAddr,
    /// Optional HTTPS eyeball listener (HTTP/1.1 over TLS; certificate from the edge CA).
    pub eyeball_tls_listen: Option<SocketAddr>,
    /// Names the HTTPS eyeball certificate is valid for; empty means `localhost`,
    /// `127.0.0.1`, `::1` and every tunnel hostname (`*.suffix` kept as a wildcard SAN).
    pub eyeball_tls_hostnames: Vec<String>,
    /// The tunnels this edge accepts.
    pub tunnels: Vec<EdgeTunnel>,
    /// Worker threads; 0 means one per available core.
    pub workers: usize,
    /// io_uring, poll, or automatic choice.
    pub io_driver: IoDriver,
    /// Do not pin workers to cores (several processes sharing a small machine).
    pub no_pinning: bool,
    /// Colo name returned in `ConnectionDetails.locationName` and used in `Cf-Ray`.
    pub location: String,
    /// Limit for TLS handshake, HTTP/2 preface and the control stream's response headers.
    pub handshake_timeout: Duration,
    /// Limit between the control stream opening and a `registerConnection` call.
    pub register_timeout: Duration,
    /// After `unregisterConnection`: how long in-flight requests may take before closing.
    pub drain_timeout: Duration,
    /// How long an eyeball request waits for the connector's response headers (then 524).
    pub response_timeout: Duration,
    /// Limit for a whole request head, from its first byte (and for the first byte of a new
    /// connection's first request); then the connection is closed.
    pub eyeball_head_timeout: Duration,
    /// Open connections each eyeball listener accepts (all cores together); more are refused.
    pub max_eyeball_connections: usize,
    /// Accept the X25519MLKEM768 key agreement (as Cloudflare's edge does); off simulates an
    /// edge without ML-KEM, against which `--post-quantum` must fail.
    pub post_quantum: bool,
    /// UDP routes: eyeball datagrams on `listen` become sessions toward `dest` through a
    /// QUIC-registered connector (see `udp`). Port 0 picks a free port.
    pub udp_routes: Vec<UdpRoute>,
    /// A UDP session with no traffic either way for this long is closed (also the idle hint
    /// given to the connector).
    pub udp_idle_timeout: Duration,
    /// Sessions each UDP route holds at once; datagrams of further sources are dropped.
    pub udp_max_sessions: usize,
}

impl EdgeOptions {
    /// Defaults: tunnel listener 127.0.0.1:7844, eyeball 127.0.0.1:8080, no tunnels.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            tunnel_listen: vec![SocketAddr::from(([127, 0, 0, 1], 7844))],
            eyeball_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            eyeball_tls_listen: None,
            eyeball_tls_hostnames: Vec::new(),
            tunnels: Vec::new(),
            workers: 0,
            io_driver: IoDriver::Auto,
            no_pinning: false,
            location: "rfl01".to_owned(),
            handshake_timeout: Duration::from_secs(15),
            register_timeout: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(100),
            eyeball_head_timeout: DEFAULT_HEAD_TIMEOUT,
            max_eyeball_connections: DEFAULT_MAX_EYEBALL_CONNECTIONS,
            post_quantum: true,
            udp_routes: Vec::new(),
            udp_idle_timeout: DEFAULT_UDP_IDLE,
            udp_max_sessions: DEFAULT_UDP_MAX_SESSIONS,
        }
    }
}

/// Default [`EdgeOptions::eyeball_head_timeout`]: 10 s for the whole request head (nginx's
/// `client_header_timeout` is 60 s; a demo/benchmark edge has no slow visitors to wait for).
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`EdgeOptions::max_eyeball_connections`].
pub const DEFAULT_MAX_EYEBALL_CONNECTIONS: usize = 16_384;

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The CA or server certificate could not be loaded or created.
    #[error("edge certificate: {0}")]
    Tls(#[from] TlsError),
    /// A listener could not be bound.
    #[error("binding listener: {0}")]
    Bind(#[from] SocketError),
    /// The worker pool did not start.
    #[error("starting workers: {0}")]
    Workers(#[from] crate::runtime::SpawnError),
    /// A worker failed to bind its listeners.
    #[error("worker {worker}: {message}")]
    WorkerBind {
        /// Worker index.
        worker: usize,
        /// What failed.
        message: String,
    },
    /// The options are inconsistent (no listener, duplicate tunnel id, bad hostname, ...).
    #[error("invalid edge options: {0}")]
    Options(String),
}

/// A running edge. Dropping it stops it too (without waiting for the workers).
pub struct Edge {
    /// The per-core workers; `None` once shut down.
    workers: Option<Workers<()>>,
    /// State shared by every core.
    shared: Arc<Shared>,
    /// Bound tunnel listener addresses, in option order.
    tunnel_addrs: Vec<SocketAddr>,
    /// Bound eyeball address.
    eyeball_addr: SocketAddr,
    /// Bound HTTPS eyeball address, if configured.
    eyeball_tls_addr: Option<SocketAddr>,
    /// `ca.pem` in the state directory.
    ca_pem_path: PathBuf,
    /// Bound UDP route addresses, in option order.
    udp_addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("tunnel_addrs", &self.tunnel_addrs)
            .field("eyeball_addr", &self.eyeball_addr)
            .finish_non_exhaustive()
    }
}

/// What each worker needs to start serving.
struct WorkerPlan {
    shared: Arc<Shared>,
    acceptor: Arc<rustls::ServerConfig>,
    tunnel_addrs: Vec<SocketAddr>,
    eyeball_addr: SocketAddr,
    eyeball_tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// QUIC on the tunnel addresses (UDP, same ports).
    quic: compio::quic::ServerConfig,
    /// The UDP routes' bound sockets, taken by worker 0.
    udp_routes: std::sync::Mutex<Vec<(UdpRoute, std::net::UdpSocket)>>,
}

/// The tunnel addresses worker `index` of `workers` accepts TCP connectors on.
///
/// With at least as many addresses as workers (production's four HA connections, one per
/// address, on a machine of up to four cores), each address is listened on by one worker,
/// round robin: the connections are then spread evenly over the cores, so an eyeball request
/// finds a tunnel connection on its own core (`registry::route`) instead of crossing to
/// another core and back (two cross-thread wakes per request on each side). With
/// `SO_REUSEPORT` on every core the kernel placed them by hash: four connections over two
/// cores all landed on one an eighth of the time. With fewer addresses than workers every
/// worker listens on every address, and the kernel spreads the connections.
fn tunnel_addrs_of(addrs: &[SocketAddr], index: usize, workers: usize) -> Vec<SocketAddr> {
    if workers > 1 && addrs.len() >= workers {
        addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| i % workers == index % workers)
            .map(|(_, a)| *a)
            .collect()
    } else {
        addrs.to_vec()
    }
}

impl Edge {
    /// Loads (or creates) the CA, binds every listener on every core and returns once all
    /// are bound. Logs the listener addresses and the driver line.
    pub fn start(opts: EdgeOptions) -> Result<Edge, EdgeError> {
        if opts.tunnel_listen.is_empty() {
            return Err(EdgeError::Options("no tunnel listen address".into()));
        }
        let ca = EdgeCa::load_or_create(&opts.state_dir)?;
        let tls = crate::tls::edge_server_config_with(&ca, opts.post_quantum)?;
        let quic = crate::quic::QuicSettings::default()
            .server(crate::tls::edge_quic_server_config_with(
                &ca,
                opts.post_quantum,
            )?)
            .map_err(|e| EdgeError::Options(e.to_string()))?;
        let shared = Arc::new(Shared::new(&opts).map_err(EdgeError::Options)?);

        // Port 0 must resolve to one port shared by every core's listener: reserve it with a
        // bound (never listening) SO_REUSEPORT socket until the workers have bound theirs.
        let mut reservations = Vec::new();
        let mut tunnel_addrs = Vec::with_capacity(opts.tunnel_listen.len());
        for addr in &opts.tunnel_listen {
            tunnel_addrs.push(reserve(*addr, &mut reservations)?);
        }
        let eyeball_addr = reserve(opts.eyeball_listen, &mut reservations)?;
        let eyeball_tls = match opts.eyeball_tls_listen {
            Some(addr) => {
                let addr = reserve(addr, &mut reservations)?;
                Some((addr, eyeball_acceptor(&opts)?))
            }
            None => None,
        };
        let eyeball_tls_addr = eyeball_tls.as_ref().map(|(a, _)| *a);
        let mut udp_sockets = Vec::with_capacity(opts.udp_routes.len());
        let mut udp_addrs = Vec::with_capacity(opts.udp_routes.len());
        for route in &opts.udp_routes {
            let bind_err = |op: &'static str| {
                move |source| {
                    EdgeError::Bind(SocketError {
                        op,
                        addr: route.listen.to_string(),
                        source,
                    })
                }
            };
            let socket = std::net::UdpSocket::bind(route.listen).map_err(bind_err("bind"))?;
            socket
                .set_nonblocking(true)
                .map_err(bind_err("O_NONBLOCK"))?;
            udp_addrs.push(socket.local_addr().map_err(bind_err("getsockname"))?);
            udp_sockets.push((route.clone(), socket));
        }

        let plan = Arc::new(WorkerPlan {
            shared: shared.clone(),
            acceptor: tls,
            tunnel_addrs: tunnel_addrs.clone(),
            eyeball_addr,
            eyeball_tls,
            quic,
            udp_routes: std::sync::Mutex::new(udp_sockets),
        });
        let (bound_tx, bound_rx) = mpsc::channel::<(usize, Result<(), String>)>();
        let config = WorkerConfig {
            threads: std::num::NonZeroUsize::new(opts.workers),
            io_driver: opts.io_driver,
            no_pinning: opts.no_pinning,
        };
        let workers = Workers::spawn(config, move |ctx: WorkerCtx| {
            let plan = plan.clone();
            let bound_tx = bound_tx.clone();
            async move { worker_main(ctx, plan, bound_tx).await }
        })?;
        let mut edge = Edge {
            workers: Some(workers),
            shared,
            tunnel_addrs,
            eyeball_addr,
            eyeball_tls_addr,
            ca_pem_path: ca.ca_pem_path().to_owned(),
            udp_addrs,
        };
        let count = edge.workers.as_ref().map_or(0, Workers::len);
        for _ in 0..count {
            match bound_rx.recv_timeout(Duration::from_secs(30)) {
                Ok((_, Ok(()))) => {}
                Ok((worker, Err(message))) => {
                    edge.stop_workers();
                    return Err(EdgeError::WorkerBind { worker, message });
                }
                Err(_) => {
                    edge.stop_workers();
                    return Err(EdgeError::WorkerBind {
                        worker: 0,
                        message: "workers did not bind their listeners in time".into(),
                    });
                }
            }
        }
        drop(reservations);
        if let Some(w) = &edge.workers {
            log::info!("{}", w.driver_report().log_line());
            for (i, pin) in w.pinning().iter().enumerate() {
                if let crate::runtime::PinOutcome::Failed(why) = pin {
                    log::warn!(worker = i, reason:% = why; "Could not pin worker to a core");
                }
            }
            log::info!(workers = w.len(); "Edge workers started");
        }
        for addr in &edge.tunnel_addrs {
            log::info!(addr:% = addr; "Edge listening for tunnel connections");
        }
        log::info!(addr:% = edge.eyeball_addr; "Edge listening for eyeball HTTP requests");
        if let Some(addr) = edge.eyeball_tls_addr {
            log::info!(addr:% = addr; "Edge listening for eyeball HTTPS requests");
        }
        for (addr, route) in edge.udp_addrs.iter().zip(&opts.udp_routes) {
            log::info!(addr:% = addr, dest:% = route.dest; "Edge listening for eyeball UDP");
        }
        Ok(edge)
    }

    /// The bound tunnel listener addresses (port 0 resolved), in option order.
    pub fn tunnel_addrs(&self) -> &[SocketAddr] {
        &self.tunnel_addrs
    }

    /// The bound eyeball address.
    pub fn eyeball_addr(&self) -> SocketAddr {
        self.eyeball_addr
    }

    /// The bound HTTPS eyeball address, when one was configured.
    pub fn eyeball_tls_addr(&self) -> Option<SocketAddr> {
        self.eyeball_tls_addr
    }

    /// The bound UDP route addresses (port 0 resolved), in option order.
    pub fn udp_route_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The UDP routes' counters (all routes and connections together).
    pub fn udp_stats(&self) -> UdpStats {
        self.shared.udp.stats()
    }

    /// `ca.pem`: what connectors get as `--cacert`.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// Snapshot of the registered connections.
    pub fn registered(&self) -> Vec<Registration> {
        self.shared.registrations()
    }

    /// Waits until at least `n` connections are registered; false on timeout.
    pub fn wait_registered(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_registered(|count| count >= n, timeout)
    }

    /// Waits until at most `n` connections are registered; false on timeout.
    pub fn wait_registered_at_most(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_registered(|count| count <= n, timeout)
    }

    /// How many `updateLocalConfiguration` uploads the edge received (and the last one).
    pub fn local_configs(&self) -> (usize, Option<Vec<u8>>) {
        self.shared.local_configs()
    }

    /// Stops the listeners, closes every connection and joins the workers.
    pub fn shutdown(mut self) {
        self.stop_workers();
    }

    fn stop_workers(&mut self) {
        if let Some(mut workers) = self.workers.take() {
            workers.stop();
            for result in workers.join() {
                if let Err(e) = result {
                    log::error!(error:% = e; "Edge worker failed");
                }
            }
            self.shared.clear();
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // compio aborts the process when a task on another runtime is woken from a
            // panicking thread; leave the workers running (the process is going down) so
            // the panic is reported instead of an abort.
            if let Some(workers) = self.workers.take() {
                std::mem::forget(workers);
            }
            return;
        }
        if let Some(workers) = self.workers.as_mut() {
            workers.stop();
        }
    }
}

/// The HTTPS eyeball listener's TLS config: a leaf from the edge CA for the configured names.
fn eyeball_acceptor(opts: &EdgeOptions) -> Result<Arc<rustls::ServerConfig>, EdgeError> {
    let mut names = opts.eyeball_tls_hostnames.clone();
    if names.is_empty() {
        names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for t in &opts.tunnels {
            names.extend(t.hostnames.iter().filter(|h| *h != "*").cloned());
        }
    }
    let (chain, key) = crate::tls::issue_leaf_certificate(&opts.state_dir, &names)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|source| {
            EdgeError::Tls(TlsError::Config {
                what: "eyeball HTTPS server config",
                source,
            })
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Resolves port 0 by binding a non-listening `SO_REUSEPORT` socket; returns the address
/// every worker binds.
///
/// A fixed port is first probed with a plain bind: `SO_REUSEPORT` would otherwise let this edge
/// join a port another process (a second edge, say) already listens on and silently split the
/// connections between the two.
fn reserve(addr: SocketAddr, keep: &mut Vec<socket2::Socket>) -> Result<SocketAddr, EdgeError> {
    let err = |op: &'static str| {
        move |source| {
            EdgeError::Bind(SocketError {
                op,
                addr: addr.to_string(),
                source,
            })
        }
    };
    if addr.port() != 0 {
        let probe = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(err("socket"))?;
        if addr.is_ipv6() {
            probe.set_only_v6(true).map_err(err("IPV6_V6ONLY"))?;
        }
        probe.set_reuse_address(true).map_err(err("SO_REUSEADDR"))?;
        probe.bind(&addr.into()).map_err(err("bind"))?;
        return Ok(addr);
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(err("socket"))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err("IPV6_V6ONLY"))?;
    }
    socket
        .set_reuse_address(true)
        .map_err(err("SO_REUSEADDR"))?;
    socket.set_reuse_port(true).map_err(err("SO_REUSEPORT"))?;
    socket.bind(&addr.into()).map_err(err("bind"))?;
    let bound = socket
        .local_addr()
        .map_err(err("getsockname"))?
        .as_socket()
        .ok_or_else(|| EdgeError::Options(format!("{addr}: not an IP socket")))?;
    keep.push(socket);
    Ok(bound)
}

/// One core: bind this core's listeners, report, run accept loops until stop.
async fn worker_main(
    ctx: WorkerCtx,
    plan: Arc<WorkerPlan>,
    bound_tx: mpsc::Sender<(usize, Result<(), String>)>,
) {
    let tunnel_addrs = tunnel_addrs_of(&plan.tunnel_addrs, ctx.index, ctx.count);
    let mut tunnel_listeners = Vec::with_capacity(tunnel_addrs.len());
    for addr in tunnel_addrs {
        match crate::runtime::bind_reuseport(addr) {
            Ok(l) => tunnel_listeners.push((addr, l)),
            Err(e) => {
                let _ = bound_tx.send((ctx.index, Err(e.to_string())));
                return;
            }
        }
    }
    let mut quic_endpoints = Vec::with_capacity(plan.tunnel_addrs.len());
    for addr in &plan.tunnel_addrs {
        match bind_quic(*addr, &plan.quic, ctx.index) {
            Ok(e) => quic_endpoints.push((*addr, e)),
            Err(e) => {
                let _ = bound_tx.send((ctx.index, Err(e)));
                return;
            }
        }
    }
    let eyeball = match crate::runtime::bind_reuseport(plan.eyeball_addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = bound_tx.send((ctx.index, Err(e.to_string())));
            return;
        }
    };
    let eyeball_tls = match &plan.eyeball_tls {
        Some((addr, acceptor)) => match crate::runtime::bind_reuseport(*addr) {
            Ok(l) => Some((l, acceptor.clone())),
            Err(e) => {
                let _ = bound_tx.send((ctx.index, Err(e.to_string())));
                return;
            }
        },
        None => None,
    };
    let _ = bound_tx.send((ctx.index, Ok(())));
    drop(bound_tx);

    let tasks = std::rc::Rc::new(tunnel::TaskCount::default());
    for (addr, listener) in tunnel_listeners {
        let plan = plan.clone();
        let stop = ctx.stop.clone();
        let tasks = tasks.clone();
        let worker = ctx.index;
        compio::runtime::spawn(async move {
            tunnel::accept_loop(
                listener,
                addr,
                plan.shared.clone(),
                plan.acceptor.clone(),
                worker,
                stop,
                tasks,
            )
            .await;
        })
        .detach();
    }
    for (addr, endpoint) in quic_endpoints {
        let shared = plan.shared.clone();
        let stop = ctx.stop.clone();
        let tasks = tasks.clone();
        let worker = ctx.index;
        compio::runtime::spawn(async move {
            quic::accept_loop(endpoint, addr, shared, worker, stop, tasks).await;
        })
        .detach();
    }
    {
        let shared = plan.shared.clone();
        let stop = ctx.stop.clone();
        let tasks = tasks.clone();
        compio::runtime::spawn(async move {
            eyeball::accept_loop(eyeball, shared, None, stop, tasks, 0).await;
        })
        .detach();
    }
    if ctx.index == 0 {
        let routes = std::mem::take(
            &mut *plan
                .udp_routes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (route, socket) in routes {
            match compio::net::UdpSocket::from_std(socket) {
                Ok(socket) => {
                    let hub = plan.shared.udp.clone();
                    let stop = ctx.stop.clone();
                    compio::runtime::spawn(udp::run_route(route, socket, hub, stop)).detach();
                }
                Err(e) => {
                    log::error!(listen:% = route.listen, error:% = e; "UDP route not served")
                }
            }
        }
    }
    if let Some((listener, acceptor)) = eyeball_tls {
        let shared = plan.shared.clone();
        let stop = ctx.stop.clone();
        let tasks = tasks.clone();
        compio::runtime::spawn(async move {
            eyeball::accept_loop(listener, shared, Some(acceptor), stop, tasks, 1).await;
        })
        .detach();
    }
    ctx.stop.stopped().await;
    // Every connection task also watches the stop signal; give them a moment to close their
    // sockets (GOAWAY / FIN) before the runtime drops whatever is left.
    tasks.wait_idle(Duration::from_secs(2)).await;
}

/// This core's QUIC endpoint on a tunnel address: UDP with SO_REUSEPORT, so every core
/// serves a share of the connections (the kernel keeps each 4-tuple on one socket).
fn bind_quic(
    addr: SocketAddr,
    config: &compio::quic::ServerConfig,
    worker: usize,
) -> Result<compio::quic::Endpoint, String> {
    let (udp, buffers) = crate::quic::bind_udp(addr, true)
        .map_err(|e| format!("binding QUIC on udp {addr}: {e}"))?;
    if worker == 0 {
        buffers.warn_if_small(addr);
    }
    compio::quic::Endpoint::new(
        udp,
        crate::quic::QuicSettings::endpoint(),
        Some(config.clone()),
        None,
    )
    .map_err(|e| format!("starting QUIC on udp {addr}: {e}"))
}

/// Runs `fut` until it finishes or `stop` fires; true when it finished.
pub(crate) async fn until_stopped<F: std::future::Future<Output = ()>>(
    stop: &StopSignal,
    fut: F,
) -> bool {
    use futures_util::future::{Either, select};
    let fut = std::pin::pin!(fut);
    let stopped = std::pin::pin!(stop.stopped());
    matches!(select(fut, stopped).await, Either::Left(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_listeners_are_spread_over_the_workers() {
        let addrs: Vec<SocketAddr> = (1..=4)
            .map(|i| SocketAddr::from(([127, 0, 0, i], 7844)))
            .collect();
        // Four addresses, two workers: two each, every address exactly once.
        let w0 = tunnel_addrs_of(&addrs, 0, 2);
        let w1 = tunnel_addrs_of(&addrs, 1, 2);
        assert_eq!(w0, vec![addrs[0], addrs[2]]);
        assert_eq!(w1, vec![addrs[1], addrs[3]]);
        // Four workers: one each.
        for i in 0..4 {
            assert_eq!(tunnel_addrs_of(&addrs, i, 4), vec![addrs[i]]);
        }
        // Fewer addresses than workers, or one worker: everyone listens on everything.
        assert_eq!(tunnel_addrs_of(&addrs[..1], 1, 2), vec![addrs[0]]);
        assert_eq!(tunnel_addrs_of(&addrs, 0, 1), addrs);
    }
}
