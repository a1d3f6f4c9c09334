//! One HA connection to the edge over the http2 transport (spec §3.1, §3.3, §5.3-§5.4) and its
//! retry loop (§1.5-§1.6): dial TCP, TLS as `h2.cftunnel.com`, run the HTTP/2 *server*, take
//! the edge's control stream, register, serve data streams until the edge closes the connection
//! or shutdown ends it; then back off and reconnect. All of it runs on one core.

use std::cell::Cell;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use compio::net::TcpStream;
use futures_channel::mpsc;
use futures_util::{FutureExt, StreamExt};
use h2::RecvStream;
use h2::server::SendResponse;
use http::Request;
use uuid::Uuid;

use super::backoff::{Backoff, go_duration, random_unit};
use super::connection_state::{
    Action, ConnState, End, Event, PING_INTERVAL, PING_TIMEOUT, Timings,
};
use super::core::Core;
use super::protocol::Protocol;
use crate::proto::http2::{RequestKind, classify};
use crate::proto::{
    ClientInfo, ConnectionDetails, ConnectionOptions, ConnectionResponse, RegisterConnectionParams,
    RegistrationClient, TunnelAuth, TunnelSecret,
};
use crate::runtime::h2stream::{H2Reader, H2Writer};
use crate::runtime::{TcpTuning, apply_tuning, h2io};
use crate::tls::H2_SERVER_NAME;

/// TCP connect and TLS handshake timeouts (cloudflared's fixed 15 s).
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the edge has to send the HTTP/2 preface and open the control stream.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// Base of the per-connection backoff.
const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// How a connection attempt ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("DialError: {0}")]
    Dial(String),
    #[error("{0}")]
    Handshake(String),
    /// The edge refused the registration.
    #[error("{cause}")]
    Register { cause: String, permanent: bool },
    #[error("Lost connection with the edge")]
    EdgeClosed,
    /// Nothing came from the edge for the QUIC idle timeout on an established connection:
    /// quic-go's IdleTimeoutError, logged with its text as cloudflared does.
    #[error("timeout: no recent network activity")]
    QuicIdleTimeout,
    #[error("control stream failed: {0}")]
    Control(String),
    #[error("registerConnection timed out after {0:?}")]
    RpcTimeout(Duration),
    #[error("http2 connection: {0}")]
    H2(String),
    /// The edge left a liveness PING unanswered (a hung edge).
    #[error("timeout waiting for PING response: the edge did not answer within {0:?}")]
    Unresponsive(Duration),
}

/// What a connection's control task tells the connection loop.
pub(super) enum ControlEvent {
    Registered(ConnectionDetails),
    Failed(ConnError),
    /// The RPC system ended (control stream closed or garbage).
    Closed(String),
    Unregistered,
}

/// What wakes the control thread, which otherwise sleeps.
pub enum Wake {
    /// A connection can never succeed: exit with this error.
    Fatal(String),
    /// SIGTERM or SIGINT arrived (the handler also set the flag naming it).
    Signal,
}

/// Sent to the supervisor when a connection cannot ever succeed.
pub type FatalTx = std::sync::mpsc::Sender<Wake>;

/// The edge addresses all connections share, and how many connections take from them.
#[derive(Clone)]
pub struct EdgeAddrs {
    pub all: std::sync::Arc<[SocketAddr]>,
    pub ha: usize,
}

impl EdgeAddrs {
    /// Connection `index`'s address after `rotation` rotations: connections start on distinct
    /// addresses and move to ones no other connection starts on (spec §1.4).
    pub fn pick(&self, index: u8, rotation: usize) -> Option<SocketAddr> {
        let len = self.all.len();
        let spare = len.saturating_sub(self.ha);
        let i = usize::from(index);
        let slot = if rotation == 0 || spare == 0 {
            i
        } else {
            self.ha + (i + rotation - 1) % spare
        };
        self.all.get(slot % len.max(1)).copied()
    }
}

/// Runs HA connection `index` until shutdown. Connection 0 reports a permanent registration
/// failure at startup on `fatal` (cloudflared exits then).
pub async fn run(
    core: Rc<Core>,
    index: u8,
    addrs: EdgeAddrs,
    first_registered: FirstRegistered,
    fatal: FatalTx,
) {
    let mut rotation = 0usize;
    let Some(mut addr) = addrs.pick(index, rotation) else {
        return;
    };
    let mut backoff = Backoff::new(BACKOFF_BASE, core.shared.options.retries);
    if index > 0 {
        // cloudflared starts connection 1 as soon as connection 0 registered, then the next
        // ones 1 s apart (supervisor: start, then sleep registrationInterval): 0/0/1/2 s.
        let stop = core.stop.clone();
        let wait = async {
            first_registered.wait().await;
            compio::time::sleep(Duration::from_secs(u64::from(index - 1))).await;
        };
        if select_stop(wait, &stop).await.is_none() {
            return;
        }
    }
    let mut ever_registered = false;
    let selector = core.shared.options.protocol;
    let mut protocol = match selector.fallback {
        Some(f) if core.shared.protocol_fell_back.load(Relaxed) => f,
        _ => selector.initial,
    };
    loop {
        if core.stop.is_stopped() {
            return;
        }
        let attempt = backoff.retries();
        let registered = Rc::new(Cell::new(false));
        let result = match protocol {
            Protocol::Quic => {
                super::quic_conn::serve_once(
                    &core,
                    index,
                    addr,
                    attempt,
                    &registered,
                    &first_registered,
                )
                .await
            }
            Protocol::Http2 => {
                serve_once(&core, index, addr, attempt, &registered, &first_registered).await
            }
        };
        core.shared
            .set_conn(usize::from(index), |s| s.registered = false);
        if registered.get() {
            ever_registered = true;
            backoff.reset();
        }
        let err = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        if core.stop.is_stopped() {
            return;
        }
        match &err {
            ConnError::EdgeClosed => log::info!(connIndex = index; "Lost connection with the edge"),
            ConnError::Register { cause, permanent } => {
                core.shared.register_fail.fetch_add(1, Relaxed);
                log::error!(connIndex = index, error = cause.as_str(); "Register tunnel error from server side");
                let fatal_now = index == 0
                    && !ever_registered
                    && !first_registered.is_set()
                    && *permanent
                    && !cause.contains("Unauthorized");
                if fatal_now {
                    let _ = fatal.send(Wake::Fatal(format!(
                        "Register tunnel error from server side: {cause}"
                    )));
                    return;
                }
            }
            other => {
                log::error!(connIndex = index, error = other.to_string().as_str(); "Connection terminated")
            }
        }
        // Dial failures and duplicate connections move to another address (spec §1.4).
        let dup = matches!(&err, ConnError::Register { cause, .. } if cause == "EDUPCONN");
        if (dup || matches!(err, ConnError::Dial(_))) && addrs.all.len() > addrs.ha {
            rotation += 1;
            if let Some(next) = addrs.pick(index, rotation) {
                log::debug!(connIndex = index, ip = next.ip().to_string().as_str(); "switching to another edge address");
                addr = next;
            }
        }
        let (wait, cap) = backoff.next(random_unit());
        log::info!(
            connIndex = index, event = 0, ip = addr.ip().to_string().as_str();
            "Retrying connection in up to {}", go_duration(cap)
        );
        let stop = core.stop.clone();
        if select_stop(compio::time::sleep(wait), &stop)
            .await
            .is_none()
        {
            return;
        }
        // After the backoff, as cloudflared's selectNextProtocol: switch `auto` to its fallback
        // when QUIC looks blocked or the retries ran out, unless some connection already
        // registered with the current transport.
        let switch = next_protocol(
            selector,
            protocol,
            &err,
            backoff.reached_max(),
            first_registered.is_set(),
        );
        if let Some((fallback, broken)) = switch {
            if broken {
                log::warn!(connIndex = index; "{QUIC_BLOCKED}");
            }
            log::info!(connIndex = index; "Switching to fallback protocol {fallback}");
            protocol = fallback;
            core.shared.protocol_fell_back.store(true, Relaxed);
            backoff.reset();
        }
    }
}

/// cloudflared's `selectNextProtocol` after a failed attempt on `current`: the fallback to
/// switch to (and whether QUIC looked blocked), or `None` to stay. Only `auto` has a fallback;
/// nothing switches once any connection registered with the current transport.
fn next_protocol(
    selector: super::protocol::ProtocolSelector,
    current: Protocol,
    err: &ConnError,
    retries_exhausted: bool,
    some_connection_registered: bool,
) -> Option<(Protocol, bool)> {
    let fallback = selector.fallback?;
    if current == fallback || some_connection_registered {
        return None;
    }
    let broken = current == Protocol::Quic && quic_broken(err);
    (broken || retries_exhausted).then_some((fallback, broken))
}

/// cloudflared's warning when QUIC cannot reach the edge (supervisor/tunnel.go).
const QUIC_BLOCKED: &str = "If this log occurs persistently, and cloudflared is unable to connect to Cloudflare Network with `quic` protocol, then most likely your machine/network is getting its egress UDP to port 7844 (or others) blocked or dropped. Make sure to allow egress connectivity as per https://developers.cloudflare.com/cloudflare-one/connections/connect-apps/configuration/ports-and-ips/\nIf you are using private routing to this Tunnel, then ICMP, UDP (and Private DNS Resolution) will not work unless your cloudflared can connect with Cloudflare Network with `quic`.";

/// cloudflared's `isQuicBroken`: the QUIC handshake or an established connection timed out
/// (nothing answers on UDP), or the socket was not permitted to send.
fn quic_broken(err: &ConnError) -> bool {
    match err {
        ConnError::QuicIdleTimeout => true,
        ConnError::Dial(m) => {
            m.contains("timed out")
                || m.contains("timeout")
                || m.contains("operation not permitted")
        }
        _ => false,
    }
}

/// Runs `fut` unless shutdown starts first (`None` then).
async fn select_stop<F: Future>(fut: F, stop: &crate::runtime::StopSignal) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut stopped = pin!(stop.stopped());
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// TCP connect, from `--edge-bind-address` when given.
async fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = bind else {
        return TcpStream::connect(addr).await;
    };
    let socket = if ip.is_ipv4() {
        compio::net::TcpSocket::new_v4().await?
    } else {
        compio::net::TcpSocket::new_v6().await?
    };
    socket.bind(SocketAddr::new(ip, 0)).await?;
    socket.connect(addr).await
}

/// Set once, by the first connection that registers; waited on by the others.
#[derive(Clone)]
pub struct FirstRegistered {
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tx: std::sync::Arc<std::sync::Mutex<Option<futures_channel::oneshot::Sender<()>>>>,
    rx: futures_util::future::Shared<futures_channel::oneshot::Receiver<()>>,
}

impl Default for FirstRegistered {
    fn default() -> Self {
        let (tx, rx) = futures_channel::oneshot::channel();
        FirstRegistered {
            flag: Default::default(),
            tx: std::sync::Arc::new(std::sync::Mutex::new(Some(tx))),
            rx: rx.shared(),
        }
    }
}

impl FirstRegistered {
    pub fn set(&self) {
        if !self.flag.swap(true, Relaxed)
            && let Ok(mut tx) = self.tx.lock()
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(());
        }
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Relaxed)
    }

    pub async fn wait(&self) {
        let _ = self.rx.clone().await;
    }
}

/// One connection attempt. `Ok(())` only when it ended because of shutdown.
async fn serve_once(
    core: &Rc<Core>,
    index: u8,
    addr: SocketAddr,
    attempt: u32,
    registered: &Rc<Cell<bool>>,
    first: &FirstRegistered,
) -> Result<(), ConnError> {
    let tcp =
        match compio::time::timeout(DIAL_TIMEOUT, connect(addr, core.shared.options.edge_bind))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnError::Dial(format!("dial tcp {addr}: {e}"))),
            Err(_) => return Err(ConnError::Dial(format!("dial tcp {addr}: i/o timeout"))),
        };
    let _ = apply_tuning(&tcp, TcpTuning::default());
    let local_ip = tcp
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let tls = match compio::time::timeout(
        DIAL_TIMEOUT,
        h2io::tls_connect(tcp, core.edge_tls.clone(), H2_SERVER_NAME),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(ConnError::Dial(format!(
                "TLS handshake with edge {addr}: {e}"
            )));
        }
        Err(_) => {
            return Err(ConnError::Dial(format!(
                "TLS handshake with edge {addr}: timeout"
            )));
        }
    };
    let handshake = h2io::connector_h2_server().handshake(tls);
    let mut conn = match compio::time::timeout(PREFACE_TIMEOUT, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(ConnError::Handshake(format!("http2 handshake: {e}"))),
        Err(_) => {
            return Err(ConnError::Handshake(
                "edge sent no HTTP/2 preface in time".into(),
            ));
        }
    };
    let (ev_tx, mut ev_rx) = mpsc::unbounded::<ControlEvent>();
    let params = register_params(core, index, local_ip, attempt);
    let inflight = Rc::new(InflightCount::default());
    // The control-stream task belongs to this connection: held here, it is cancelled when
    // the connection ends (a detached one would outlive it and unregister a dead connection
    // at shutdown).
    let mut _control_task: Option<compio::runtime::JoinHandle<()>> = None;
    let mut stop = pin!(core.stop.stopped());
    let mut state = ConnState::new(
        Instant::now(),
        Timings {
            control: PREFACE_TIMEOUT,
            ping_interval: PING_INTERVAL,
            ping_timeout: PING_TIMEOUT,
            grace: core.shared.options.grace_period,
        },
    );
    let mut ping = conn.ping_pong();
    let mut timer_at = state.next_deadline();
    let mut timer = Box::pin(compio::time::sleep_until(timer_at));
    let mut control_reason = String::new();
    loop {
        if state.next_deadline() != timer_at {
            timer_at = state.next_deadline();
            timer = Box::pin(compio::time::sleep_until(timer_at));
        }
        let stopping = state.stopping();
        let wants_drained = state.wants_drained();
        let step = poll_fn(|cx| {
            if let Poll::Ready(ev) = ev_rx.poll_next_unpin(cx) {
                return Poll::Ready(Step::Control(ev));
            }
            if !stopping && stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Event(Event::Stop));
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Event(Event::Tick));
            }
            if wants_drained && inflight.poll_zero(cx) {
                return Poll::Ready(Step::Event(Event::Drained));
            }
            if let Some(p) = ping.as_mut()
                && let Poll::Ready(r) = p.poll_pong(cx)
            {
                match r {
                    Ok(_) => return Poll::Ready(Step::Event(Event::Pong)),
                    // The connection is closing; poll_accept reports how it ended.
                    Err(_) => ping = None,
                }
            }
            conn.poll_accept(cx)
                .map(|a| Step::Accept(a.map(|r| r.map(Box::new))))
        })
        .await;
        let now = Instant::now();
        let action = match step {
            Step::Event(ev) => state.on(now, ev),
            Step::Accept(None) => state.on(now, Event::ConnectionEnded),
            Step::Accept(Some(Err(e))) => match state.on(now, Event::ConnectionEnded) {
                Action::Finish(End::EdgeClosed) if !(e.is_io() || e.is_go_away()) => {
                    return Err(ConnError::H2(e.to_string()));
                }
                action => action,
            },
            Step::Accept(Some(Ok(accepted))) => {
                let kind = classify(
                    accepted
                        .0
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_bytes())),
                );
                let control = kind == RequestKind::ControlStream;
                match state.on(now, Event::Accepted { control }) {
                    Action::StartControl => {
                        let (req, respond) = *accepted;
                        let task = control_stream(
                            core.clone(),
                            req,
                            respond,
                            params.clone(),
                            ev_tx.clone(),
                            index,
                        );
                        _control_task = Some(compio::runtime::spawn(task));
                    }
                    _ => {
                        let core = core.clone();
                        let guard = inflight.enter();
                        // The task captures the stream still boxed, and unboxes it (freeing
                        // the box) as it hands it to `serve`: a future keeps what it captures
                        // for its whole life, which is hours for an idle WebSocket.
                        compio::runtime::spawn(async move {
                            let (req, respond) = {
                                let accepted = accepted;
                                *accepted
                            };
                            let stream = super::stream::h2::H2Stream { req, respond };
                            super::stream::serve(&core, stream, index).await;
                            drop(guard);
                        })
                        .detach();
                    }
                }
                Action::None
            }
            Step::Control(Some(ControlEvent::Registered(details))) => {
                registered.set(true);
                first.set();
                on_registered(core, index, addr, &details, Protocol::Http2);
                state.on(now, Event::Registered)
            }
            Step::Control(Some(ControlEvent::Failed(e))) => return Err(e),
            Step::Control(Some(ControlEvent::Closed(reason))) => {
                control_reason = reason;
                state.on(now, Event::ControlClosed)
            }
            Step::Control(Some(ControlEvent::Unregistered)) => state.on(now, Event::Unregistered),
            Step::Control(None) => Action::None,
        };
        match action {
            Action::None | Action::StartControl | Action::ServeStream | Action::MarkRegistered => {}
            Action::MarkUnregistered => {
                core.shared
                    .set_conn(usize::from(index), |s| s.registered = false);
            }
            Action::SendPing => {
                if let Some(p) = ping.as_mut() {
                    // Fails only while a PING is already out, which the state rules out.
                    let _ = p.send_ping(h2::Ping::opaque());
                }
            }
            Action::GoAway => {
                // Unregistered and idle: say goodbye with GOAWAY and let h2 finish the close.
                conn.graceful_shutdown();
            }
            Action::Finish(end) => {
                return match end {
                    End::Shutdown => Ok(()),
                    End::EdgeClosed => Err(ConnError::EdgeClosed),
                    End::NoControl => Err(ConnError::Handshake(
                        "edge opened no control stream in time".into(),
                    )),
                    End::ControlClosed => Err(ConnError::Control(control_reason)),
                    End::Unresponsive => Err(ConnError::Unresponsive(PING_TIMEOUT)),
                };
            }
        }
    }
}

/// A stream the edge opened: the request and the handle to answer it.
type Accepted = Box<(Request<RecvStream>, SendResponse<Bytes>)>;

enum Step {
    Accept(Option<Result<Accepted, h2::Error>>),
    Control(Option<ControlEvent>),
    Event(Event),
}

/// Data streams in flight on one connection, with a waker for "reached zero".
#[derive(Default)]
pub(super) struct InflightCount {
    n: Cell<usize>,
    waker: Cell<Option<Waker>>,
}

pub(super) struct InflightGuard(Rc<InflightCount>);

impl InflightCount {
    pub(super) fn enter(self: &Rc<Self>) -> InflightGuard {
        self.n.set(self.n.get() + 1);
        InflightGuard(self.clone())
    }

    pub(super) fn poll_zero(&self, cx: &mut std::task::Context<'_>) -> bool {
        if self.n.get() == 0 {
            return true;
        }
        self.waker.set(Some(cx.waker().clone()));
        false
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let n = self.0.n.get().saturating_sub(1);
        self.0.n.set(n);
        if n == 0
            && let Some(w) = self.0.waker.take()
        {
            w.wake();
        }
    }
}

pub(super) fn on_registered(
    core: &Core,
    index: u8,
    addr: SocketAddr,
    d: &ConnectionDetails,
    protocol: Protocol,
) {
    let id = Uuid::from_bytes(d.uuid);
    core.shared.register_success.fetch_add(1, Relaxed);
    core.shared.set_conn(usize::from(index), |s| {
        s.registered = true;
        s.connection_id = Some(id);
        s.location = d.location_name.clone();
        s.edge_addr = addr.to_string();
    });
    log::info!(
        connIndex = index,
        connection = id.to_string().as_str(),
        event = 0,
        ip = addr.ip().to_string().as_str(),
        location = d.location_name.as_str(),
        protocol = protocol.as_str();
        "Registered tunnel connection"
    );
}

/// The registration request cloudflared sends (spec §5.3).
pub(super) fn register_params(
    core: &Core,
    index: u8,
    local_ip: IpAddr,
    attempt: u32,
) -> RegisterConnectionParams {
    let o = &core.shared.options;
    let mut features: Vec<String> = [
        "allow_remote_config",
        "serialized_headers",
        "support_datagram_v2",
        "support_quic_eof",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for f in &o.features {
        if !features.contains(f) && f != "support_datagram_v3" {
            features.push(f.clone());
        }
    }
    RegisterConnectionParams {
        auth: TunnelAuth {
            account_tag: o.credentials.account_tag.clone(),
            tunnel_secret: TunnelSecret::new(o.credentials.tunnel_secret.expose().to_vec()),
        },
        tunnel_id: *o.credentials.tunnel_id.as_bytes(),
        conn_index: index,
        options: ConnectionOptions {
            client: ClientInfo {
                client_id: core.shared.connector_id.as_bytes().to_vec(),
                features,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                arch: arch(),
            },
            origin_local_ip: ConnectionOptions::ip_bytes(local_ip),
            replace_existing: false,
            compression_quality: 0,
            num_previous_attempts: u8::try_from(attempt).unwrap_or(u8::MAX),
        },
    }
}

/// `GOOS_GOARCH`, e.g. `linux_amd64`.
pub fn arch() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}_{arch}", std::env::consts::OS)
}

/// The control stream: register, wait for shutdown, unregister (spec §3.3, §3.9).
async fn control_stream(
    core: Rc<Core>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    params: RegisterConnectionParams,
    events: mpsc::UnboundedSender<ControlEvent>,
    index: u8,
) {
    let send = match respond.send_response(http::Response::new(()), false) {
        Ok(s) => s,
        Err(e) => {
            let _ = events.unbounded_send(ControlEvent::Closed(e.to_string()));
            return;
        }
    };
    run_control(
        core,
        H2Reader::new(req.into_body()),
        H2Writer::resetting_on_drop(send),
        params,
        events,
        index,
    )
    .await;
}

/// The control stream's RPC, for either transport: register, upload the local configuration,
/// wait for shutdown, unregister (spec §3.3, §3.9, §5.3-§5.4).
pub(super) async fn run_control<R, W>(
    core: Rc<Core>,
    reader: R,
    writer: W,
    params: RegisterConnectionParams,
    events: mpsc::UnboundedSender<ControlEvent>,
    index: u8,
) where
    R: futures_util::AsyncRead + Unpin + 'static,
    W: futures_util::AsyncWrite + Unpin + 'static,
{
    let (client, driver) = RegistrationClient::connect(reader, writer);
    let driver_events = events.clone();
    // Kept (not detached) so the control stream can be ended after unregistering.
    let driver_task = compio::runtime::spawn(async move {
        let reason = match driver.await {
            Ok(()) => "control stream closed by the edge".to_owned(),
            Err(e) => format!("control stream: {e}"),
        };
        let _ = driver_events.unbounded_send(ControlEvent::Closed(reason));
    });
    let o = &core.shared.options;
    let rpc = &core.shared.rpc_client;
    let started = std::time::Instant::now();
    let reply = compio::time::timeout(o.rpc_timeout, client.register_connection(&params)).await;
    rpc.register_connection.record(
        started,
        matches!(reply, Ok(Ok(ConnectionResponse::Details(_)))),
    );
    let details = match reply {
        Ok(Ok(ConnectionResponse::Details(d))) => d,
        Ok(Ok(ConnectionResponse::Error(e))) => {
            let _ = events.unbounded_send(ControlEvent::Failed(ConnError::Register {
                cause: e.cause,
                permanent: !e.should_retry,
            }));
            return;
        }
        Ok(Err(e)) => {
            let _ = events.unbounded_send(ControlEvent::Failed(ConnError::Register {
                cause: e.to_string(),
                permanent: true,
            }));
            return;
        }
        Err(_) => {
            let _ =
                events.unbounded_send(ControlEvent::Failed(ConnError::RpcTimeout(o.rpc_timeout)));
            return;
        }
    };
    let remotely_managed = details.tunnel_is_remotely_managed;
    let _ = events.unbounded_send(ControlEvent::Registered(details));
    if index == 0 && !remotely_managed {
        // cloudflared uploads its local configuration from connection 0 (spec §5.4).
        let json = local_config_json(&core.shared.ingress.load());
        let started = std::time::Instant::now();
        let reply =
            compio::time::timeout(o.rpc_timeout, client.update_local_configuration(&json)).await;
        let ok = matches!(reply, Ok(Ok(())));
        rpc.update_local_configuration.record(started, ok);
        // As cloudflared: every upload is a push, a failed one also an error.
        core.shared.local_config_pushes.fetch_add(1, Relaxed);
        if !ok {
            core.shared.local_config_push_errors.fetch_add(1, Relaxed);
        }
        match reply {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::warn!(error = e.to_string().as_str(); "unable to send local configuration")
            }
            Err(_) => log::warn!("unable to send local configuration: timed out"),
        }
    }
    core.stop.stopped().await;
    let started = std::time::Instant::now();
    let reply = compio::time::timeout(o.grace_period, client.unregister_connection()).await;
    rpc.unregister_connection
        .record(started, matches!(reply, Ok(Ok(()))));
    match reply {
        Ok(Ok(())) => log::info!(connIndex = index, event = 0; "Unregistered tunnel connection"),
        Ok(Err(e)) => {
            log::warn!(connIndex = index, error = e.to_string().as_str(); "unregisterConnection failed")
        }
        Err(_) => log::warn!(connIndex = index; "unregisterConnection timed out"),
    }
    // As cloudflared: the control-stream handler returns, which ends the stream; an edge
    // takes that as the cue to close the connection once its in-flight requests are done.
    drop(client);
    drop(driver_task);
    let _ = events.unbounded_send(ControlEvent::Unregistered);
}

/// The `updateLocalConfiguration` JSON: the ingress rules as cloudflared uploads them
/// (`hostname`, `path`, `service`, `originRequest`; non-default options are not itemised).
pub fn local_config_json(table: &crate::ingress::IngressTable) -> Vec<u8> {
    let rules: Vec<serde_json::Value> = table
        .ingress()
        .rules
        .iter()
        .map(|r| {
            let mut rule = serde_json::Map::new();
            if !r.hostname.is_empty() {
                rule.insert("hostname".into(), r.hostname.clone().into());
            }
            if let Some(p) = &r.path {
                rule.insert("path".into(), p.as_str().into());
            }
            rule.insert("service".into(), r.service.to_string().into());
            rule.insert(
                "originRequest".into(),
                serde_json::Value::Object(Default::default()),
            );
            serde_json::Value::Object(rule)
        })
        .collect();
    let doc = serde_json::json!({ "ingress": rules, "warp-routing": {} });
    serde_json::to_vec(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_http2_as_cloudflared() {
        use super::super::protocol::ProtocolSelector;
        let auto = ProtocolSelector::resolve("auto", true).unwrap().selector;
        let quic = ProtocolSelector::resolve("quic", true).unwrap().selector;
        let timeout = ConnError::Dial(
            "failed to dial to edge with quic: timeout: handshake did not complete in time".into(),
        );
        let refused = ConnError::Dial("failed to dial to edge with quic: refused".into());
        // UDP blocked: switch at once, with the warning.
        assert_eq!(
            next_protocol(auto, Protocol::Quic, &timeout, false, false),
            Some((Protocol::Http2, true))
        );
        // Another failure: only once the retries ran out.
        assert_eq!(
            next_protocol(auto, Protocol::Quic, &refused, false, false),
            None
        );
        assert_eq!(
            next_protocol(auto, Protocol::Quic, &refused, true, false),
            Some((Protocol::Http2, false))
        );
        // Never once a connection registered, never from the fallback, never when static.
        assert_eq!(
            next_protocol(auto, Protocol::Quic, &timeout, true, true),
            None
        );
        assert_eq!(
            next_protocol(auto, Protocol::Http2, &timeout, true, false),
            None
        );
        assert_eq!(
            next_protocol(quic, Protocol::Quic, &timeout, true, false),
            None
        );
        assert!(!quic_broken(&ConnError::EdgeClosed));
        assert!(quic_broken(&ConnError::QuicIdleTimeout));
    }

    #[test]
    fn addresses_rotate_through_spares_only() {
        let all: Vec<SocketAddr> = (1..=6)
            .map(|i| SocketAddr::from(([127, 0, 0, i], 7844)))
            .collect();
        let addrs = EdgeAddrs {
            all: all.clone().into(),
            ha: 4,
        };
        assert_eq!(addrs.pick(1, 0), Some(all[1]));
        assert_eq!(addrs.pick(1, 1), Some(all[5]));
        assert_eq!(addrs.pick(1, 2), Some(all[4]));
        let exact = EdgeAddrs {
            all: all[..2].to_vec().into(),
            ha: 2,
        };
        assert_eq!(exact.pick(1, 3), Some(all[1]), "no spare: keep the address");
    }
}
