//! One HA connection to the edge over QUIC (spec §4, §5.3-§5.4): a UDP endpoint, the QUIC
//! handshake as `quic.cftunnel.com` with ALPN `argotunnel`, the control stream (the first
//! client-initiated bidirectional stream) carrying registration, then the connection until the
//! edge closes it or shutdown ends it. The retry loop is `edge_conn::run`'s, shared with http2.
//!
//! Not yet: edge-opened data and RPC streams are refused (reset with code 0, as cloudflared
//! does for a stream it cannot serve) until they are served through `connector::stream`'s
//! transport-agnostic interface.

use std::cell::Cell;
use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use compio::quic::{Connection, Endpoint};
use futures_channel::mpsc;
use futures_util::{FutureExt, StreamExt};

use super::core::Core;
use super::edge_conn::{
    ConnError, ControlEvent, FirstRegistered, on_registered, register_params, run_control,
};
use super::options::ConnectorOptions;
use super::protocol::Protocol;
use super::udp;
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
    conn.close(0u32.into(), b"");
    let _ = compio::time::timeout(CLOSE_FLUSH, endpoint.shutdown()).await;
    result
}

enum Step {
    Control(Option<ControlEvent>),
    Accept(Result<(), compio::quic::ConnectionError>),
    Stop,
    Deadline,
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
    let udp = udp::quic::sessions_for(
        conn,
        index,
        udp::quic::version_for(&o.features),
        o.rpc_timeout,
        core.shared.clone(),
        core.shared.udp.clone(),
    );
    let _datagrams = compio::runtime::spawn(udp::quic::serve(conn.clone(), udp.clone()));
    let mut stop = pin!(core.stop.stopped().fuse());
    let mut stopping = false;
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
            if let Poll::Ready(r) = accept.as_mut().poll(cx) {
                return Poll::Ready(Step::Accept(r.map(|(mut send, mut recv)| {
                    // Data and RPC streams are not served over QUIC yet: refuse the stream.
                    let _ = send.reset(0u32.into());
                    let _ = recv.stop(0u32.into());
                })));
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Accept(Ok(())) => {
                log::debug!(connIndex = index; "refused an edge-opened QUIC stream: not served over QUIC yet");
                accept.set(conn.accept_bi());
            }
            Step::Accept(Err(e)) => {
                if stopping {
                    return Ok(());
                }
                log::debug!(connIndex = index, error:% = e; "QUIC connection ended");
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
                // No data streams are served over QUIC yet, so nothing is left to drain.
                return Ok(());
            }
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
