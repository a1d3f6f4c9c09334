//! One HA connection to the edge over QUIC (spec §4, §5.3-§5.4): a UDP endpoint, the QUIC
//! handshake as `quic.cftunnel.com` with ALPN `argotunnel`, the control stream (the first
//! client-initiated bidirectional stream) carrying registration, then the connection until the
//! edge closes it or shutdown ends it. The retry loop is `edge_conn::run`'s, shared with http2.
//!
//! Edge-opened bidirectional streams are served on this core: data streams through
//! `connector::stream` (their QUIC side is `stream::quic`), RPC streams (`CloudflaredServer`:
//! configuration updates, UDP session calls) for at most `--rpc-timeout` each. A stream whose
//! preamble is unknown or malformed is reset with code 0, as cloudflared does.
//!
//! Memory budget of one connection (the windows are set in `crate::quic`'s config):
//! - at rest: quinn's slot per stream the edge may open (4096 granted, about 0.75 MiB);
//! - sending (downloads): at most `SEND_WINDOW` (8 MiB) of response bytes written to quinn and
//!   not yet acknowledged, shared by all its streams; a writer waits beyond it;
//! - receiving (uploads): at most the stream window (6 MiB) per stream and the connection
//!   window (30 MiB) in all, held by quinn only while an origin reads slower than the edge
//!   sends; a stream itself holds one gathered chunk (`stream::quic::MAX_CHUNK`, 64 KiB);
//! - per stream otherwise: its task and the decoded request head (a few KiB).

use std::cell::Cell;
use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use compio::quic::{Connection, Endpoint, RecvStream, SendStream};
use futures_channel::mpsc;
use futures_util::{FutureExt, StreamExt};

use super::core::Core;
use super::edge_conn::{
    ConnError, ControlEvent, FirstRegistered, InflightCount, on_registered, register_params,
    run_control,
};
use super::options::ConnectorOptions;
use super::protocol::Protocol;
use super::stream::quic::{self, Opened};
use super::udp::{self, UdpSessions};
use crate::proto::rpc::RpcError;
use crate::proto::rpc::{CloudflaredServer, serve_cloudflared};
use crate::proto::rpc_types::{
    RegisterUdpSessionParams, RegisterUdpSessionResponse, UnregisterUdpSessionParams,
    UpdateConfigurationResponse,
};
use crate::quic::{HANDSHAKE_TIMEOUT, QuicSettings, bind_udp};
use crate::tls::{EdgeRoots, KxPolicy, QUIC_SERVER_NAME, connector_quic_client_config_with};

/// How long the close frame gets to leave before the endpoint is dropped.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// The small-buffer warning is logged once per process, not once per connection.
static BUFFER_WARNED: AtomicBool = AtomicBool::new(false);

/// The key-agreement policy `--post-quantum` selects.
pub fn kx_policy(options: &ConnectorOptions) -> KxPolicy {
    if options.post_quantum {
        KxPolicy::StrictPostQuantum
    } else {
        KxPolicy::PreferPostQuantum
    }
}

fn client_tls(options: &ConnectorOptions) -> Result<Arc<rustls::ClientConfig>, ConnError> {
    let roots = match &options.cacert {
        Some(p) => EdgeRoots::CaFile(p.clone()),
        None => EdgeRoots::Cloudflare,
    };
    connector_quic_client_config_with(roots, kx_policy(options))
        .map_err(|e| ConnError::Dial(e.to_string()))
}

fn dial_err(options: &ConnectorOptions, cause: impl std::fmt::Display) -> ConnError {
    let hint = if options.post_quantum {
        " (--post-quantum offers only X25519MLKEM768; the edge must support it)"
    } else {
        ""
    };
    ConnError::Dial(format!("failed to dial to edge with quic: {cause}{hint}"))
}

/// Opens the UDP endpoint and completes the QUIC handshake with `addr`.
async fn dial(core: &Core, addr: SocketAddr) -> Result<(Endpoint, Connection), ConnError> {
    let o = &core.shared.options;
    let config = o
        .quic
        .client(client_tls(o)?, addr.ip())
        .map_err(|e| ConnError::Dial(e.to_string()))?;
    let local = match (o.edge_bind, addr) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, SocketAddr::V4(_)) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        (None, SocketAddr::V6(_)) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let (udp, buffers) = bind_udp(local, false).map_err(|e| dial_err(o, e))?;
    if !buffers.sufficient() && !BUFFER_WARNED.swap(true, Ordering::Relaxed) {
        buffers.warn_if_small(local);
    }
    let endpoint =
        Endpoint::new(udp, QuicSettings::endpoint(), None, None).map_err(|e| dial_err(o, e))?;
    let connecting = endpoint
        .connect(addr, QUIC_SERVER_NAME, Some(config))
        .map_err(|e| dial_err(o, e))?;
    match compio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok((endpoint, conn)),
        // Nothing answered for the idle timeout: quic-go's IdleTimeoutError, whose text
        // cloudflared logs and which marks QUIC as blocked (edge_conn::quic_broken).
        Ok(Err(compio::quic::ConnectionError::TimedOut)) => {
            Err(dial_err(o, "timeout: no recent network activity"))
        }
        Ok(Err(e)) => Err(dial_err(o, e)),
        Err(_) => Err(dial_err(o, "timeout: handshake did not complete in time")),
    }
}

/// One connection attempt over QUIC; `Ok` when shutdown ended it.
pub(super) async fn serve_once(
    core: &Rc<Core>,
    index: u8,
    addr: SocketAddr,
    attempt: u32,
    registered: &Rc<Cell<bool>>,
    first: &FirstRegistered,
) -> Result<(), ConnError> {
    let (endpoint, conn) = dial(core, addr).await?;
    let result = serve_conn(core, index, addr, attempt, registered, first, &conn).await;
    log_stats(index, &conn);
    conn.close(0u32.into(), b"");
    let _ = compio::time::timeout(CLOSE_FLUSH, endpoint.shutdown()).await;
    result
}

/// quinn's counters for the connection (packets, losses, congestion events, path MTU, RTT,
/// window): what to look at first when a QUIC connection is slow.
fn log_stats(index: u8, conn: &Connection) {
    let s = conn.stats();
    log::debug!(connIndex = index, rtt:? = s.path.rtt, cwnd = s.path.cwnd, mtu = s.path.current_mtu,
        sent_packets = s.path.sent_packets, lost_packets = s.path.lost_packets,
        lost_bytes = s.path.lost_bytes, congestion_events = s.path.congestion_events,
        udp_tx_datagrams = s.udp_tx.datagrams, udp_tx_ios = s.udp_tx.ios,
        udp_rx_datagrams = s.udp_rx.datagrams, udp_rx_ios = s.udp_rx.ios,
        stream_data_blocked = s.frame_tx.stream_data_blocked,
        data_blocked = s.frame_tx.data_blocked; "QUIC connection stats");
}

enum Step {
    Control(Option<ControlEvent>),
    Accept(Result<(SendStream, RecvStream), compio::quic::ConnectionError>),
    Stop,
    Deadline,
    Drained,
}

/// Serves one edge-opened stream to its end.
async fn serve_stream(
    core: Rc<Core>,
    index: u8,
    udp: UdpSessions,
    send: SendStream,
    recv: RecvStream,
) {
    match quic::open(send, recv).await {
        Ok(Opened::Data(stream)) => super::stream::serve(&core, stream, index).await,
        Ok(Opened::Rpc {
            send,
            recv,
            pending,
        }) => {
            let reader = futures_util::io::AsyncReadExt::chain(
                futures_util::io::Cursor::new(pending),
                recv.into_compat(),
            );
            let server = RpcServer(core.clone(), udp);
            let driver = serve_cloudflared(server, reader, send.into_compat());
            // One short-lived stream per call: served for at most --rpc-timeout.
            let limit = core.shared.options.rpc_timeout;
            if let Ok(Err(e)) = compio::time::timeout(limit, driver).await {
                log::debug!(connIndex = index, error:% = e; "RPC stream ended");
            }
        }
        Err(e) => {
            log::debug!(connIndex = index, error:% = e; "Failed to handle QUIC stream");
        }
    }
}

/// The connector's `CloudflaredServer` on QUIC RPC streams; session calls go to the
/// connection's UDP session manager.
struct RpcServer(Rc<Core>, UdpSessions);

impl CloudflaredServer for RpcServer {
    async fn update_configuration(
        &self,
        version: i32,
        config: Vec<u8>,
    ) -> Result<UpdateConfigurationResponse, RpcError> {
        let started = std::time::Instant::now();
        let text = String::from_utf8_lossy(&config);
        let r = super::stream::config_push::apply(&self.0, version, &text);
        let stats = &self.0.shared.rpc_server;
        stats.update_configuration.record(started, true);
        Ok(UpdateConfigurationResponse {
            latest_applied_version: r.last_applied_version,
            err: r.err,
        })
    }

    async fn register_udp_session(
        &self,
        params: RegisterUdpSessionParams,
    ) -> Result<RegisterUdpSessionResponse, RpcError> {
        let started = std::time::Instant::now();
        let r = self.1.rpc_register(params);
        let stats = &self.0.shared.rpc_server;
        stats.register_udp_session.record(started, r.is_ok());
        r
    }

    async fn unregister_udp_session(
        &self,
        params: UnregisterUdpSessionParams,
    ) -> Result<(), RpcError> {
        let started = std::time::Instant::now();
        let r = self.1.rpc_unregister(params);
        let stats = &self.0.shared.rpc_server;
        stats.unregister_udp_session.record(started, r.is_ok());
        r
    }
}

async fn serve_conn(
    core: &Rc<Core>,
    index: u8,
    addr: SocketAddr,
    attempt: u32,
    registered: &Rc<Cell<bool>>,
    first: &FirstRegistered,
    conn: &Connection,
) -> Result<(), ConnError> {
    let (send, recv) = conn
        .open_bi()
        .map_err(|e| ConnError::Control(e.to_string()))?;
    let (ev_tx, mut ev_rx) = mpsc::unbounded::<ControlEvent>();
    // cloudflared sends the edge's IP as originLocalIp on QUIC (spec §5.3).
    let params = register_params(core, index, addr.ip(), attempt);
    let _control = compio::runtime::spawn(run_control(
        core.clone(),
        recv.into_compat(),
        send.into_compat(),
        params,
        // A clone: the loop keeps a sender, so the channel never reports "closed".
        ev_tx.clone(),
        index,
    ));
    // UDP sessions (spec §4.4) live as long as this connection: dropping the task and the
    // manager at return closes every session socket.
    let o = &core.shared.options;
    let sessions = udp::quic::sessions_for(
        conn,
        index,
        udp::quic::version_for(&o.features),
        o.rpc_timeout,
        core.shared.clone(),
        core.shared.udp.clone(),
    );
    let _datagrams = compio::runtime::spawn(udp::quic::serve(conn.clone(), sessions.clone()));
    let mut stop = pin!(core.stop.stopped().fuse());
    let mut stopping = false;
    let mut unregistered = false;
    let inflight = Rc::new(InflightCount::default());
    let mut deadline: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = None;
    let mut accept = pin!(conn.accept_bi());
    loop {
        let step = poll_fn(|cx| {
            if let Poll::Ready(ev) = ev_rx.poll_next_unpin(cx) {
                return Poll::Ready(Step::Control(ev));
            }
            if !stopping && stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Stop);
            }
            if let Some(d) = deadline.as_mut()
                && d.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Step::Deadline);
            }
            if unregistered && inflight.poll_zero(cx) {
                return Poll::Ready(Step::Drained);
            }
            if let Poll::Ready(r) = accept.as_mut().poll(cx) {
                return Poll::Ready(Step::Accept(r));
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Accept(Ok((send, recv))) => {
                accept.set(conn.accept_bi());
                let guard = inflight.enter();
                let core = core.clone();
                let sessions = sessions.clone();
                compio::runtime::spawn(async move {
                    serve_stream(core, index, sessions, send, recv).await;
                    drop(guard);
                })
                .detach();
            }
            Step::Accept(Err(e)) => {
                if stopping {
                    return Ok(());
                }
                log::debug!(connIndex = index, error:% = e; "QUIC connection ended");
                // An edge that went silent is not one that closed: say so, as cloudflared does.
                if matches!(e, compio::quic::ConnectionError::TimedOut) {
                    return Err(ConnError::QuicIdleTimeout);
                }
                return Err(ConnError::EdgeClosed);
            }
            Step::Control(Some(ControlEvent::Registered(details))) => {
                registered.set(true);
                first.set();
                on_registered(core, index, addr, &details, Protocol::Quic);
            }
            Step::Control(Some(ControlEvent::Failed(e))) => return Err(e),
            Step::Control(Some(ControlEvent::Closed(reason))) => {
                if !stopping {
                    return Err(ConnError::Control(reason));
                }
            }
            Step::Control(Some(ControlEvent::Unregistered)) => {
                core.shared
                    .set_conn(usize::from(index), |s| s.registered = false);
                // The edge sends no new streams now; the ones in flight finish (within the
                // grace period) before the connection closes.
                unregistered = true;
            }
            Step::Drained => return Ok(()),
            Step::Control(None) => {}
            Step::Stop => {
                stopping = true;
                deadline = Some(Box::pin(compio::time::sleep(
                    core.shared.options.grace_period,
                )));
            }
            Step::Deadline => return Ok(()),
        }
    }
}
