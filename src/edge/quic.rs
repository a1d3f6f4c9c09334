//! The built-in edge's QUIC side (spec §4, §5): connector connections over UDP on the same
//! tunnel listen addresses as http2.
//!
//! Lifecycle of one connection:
//! 1. QUIC handshake (TLS 1.3, ALPN `argotunnel`) within `handshake_timeout`;
//! 2. the connector's first bidirectional stream is the control stream: raw capnp RPC with
//!    the edge serving `RegistrationServer`; `registerConnection` must arrive within
//!    `register_timeout` and is checked as on http2 (`tunnel::authorize`);
//! 3. registered: the connection is published for eyeball traffic (its [`Opener`] is a
//!    bounded channel to this core, where one task per request drives the data stream, see
//!    [`super::stream`]) until the control stream ends, the connector unregisters or closes,
//!    or the edge stops; after `unregisterConnection` (or the control stream's end) no new
//!    work is routed and in-flight streams get `drain_timeout`;
//! 4. close with QUIC error code 0 and a reason.
//!
//! Nothing here panics on peer input.

use std::{
    cell::RefCell,
    future::{Future, poll_fn},
    net::SocketAddr,
    pin::pin,
    rc::Rc,
    sync::Arc,
    task::Poll,
    time::Duration,
};

use compio::quic::{Connection, Endpoint, Incoming};
use futures_channel::mpsc;
use futures_util::{FutureExt, StreamExt};
use uuid::Uuid;

use super::registry::{ConnHandle, Registration, Shared};
use super::stream::{OpenRequest, quic_opener, run_quic_stream, serve_opens};
use super::tunnel::{TaskCount, already_registered, authorize};
use crate::proto::{
    ConnectionDetails, ConnectionError, ConnectionResponse, RegisterConnectionParams,
    RegistrationServer, RpcError, serve_registration,
};
use crate::runtime::{StopSignal, relay};

/// How long a closing connection keeps its RPC running so the last reply is delivered.
const LINGER: Duration = Duration::from_secs(1);

/// Accepts QUIC connections on `endpoint` until `stop`; each is served on this core.
pub(crate) async fn accept_loop(
    endpoint: Endpoint,
    listen_addr: SocketAddr,
    shared: Arc<Shared>,
    worker: usize,
    stop: StopSignal,
    tasks: Rc<TaskCount>,
) {
    loop {
        let incoming = {
            let accept = pin!(endpoint.wait_incoming());
            let stopped = pin!(stop.stopped());
            match futures_util::future::select(accept, stopped).await {
                futures_util::future::Either::Left((Some(i), _)) => i,
                _ => break,
            }
        };
        let conn = QuicConn {
            shared: shared.clone(),
            listener: listen_addr,
            peer: incoming.remote_address(),
            worker,
            stop: stop.clone(),
            tasks: tasks.clone(),
        };
        let stop = stop.clone();
        let guard = tasks.enter_guard();
        compio::runtime::spawn(async move {
            let _guard = guard;
            let _ = super::until_stopped(&stop, conn.serve(incoming)).await;
        })
        .detach();
    }
    endpoint.close(0u32.into(), b"edge shutting down");
    // Let the CONNECTION_CLOSE frames go out before the endpoint is dropped.
    let _ = compio::time::timeout(Duration::from_secs(1), endpoint.shutdown()).await;
}

/// One connector connection's identity.
struct QuicConn {
    shared: Arc<Shared>,
    listener: SocketAddr,
    peer: SocketAddr,
    worker: usize,
    stop: StopSignal,
    tasks: Rc<TaskCount>,
}

/// What the registration server tells the connection task.
enum Event {
    Registered,
    Refused(String),
    Unregistered,
}

/// Per-connection state the RPC server shares with the connection task.
struct State {
    /// The published connection and its tunnel, once registered.
    registered: RefCell<Option<(Arc<ConnHandle>, Uuid)>>,
    events: mpsc::UnboundedSender<Event>,
    /// Resolves when the connection task ends; handed to the opener task.
    ended: RefCell<Option<futures_channel::oneshot::Receiver<()>>>,
}

impl QuicConn {
    async fn serve(self, incoming: Incoming) {
        let outcome = self.serve_inner(incoming).await;
        match outcome {
            Ok(why) => log::info!(peer:% = self.peer, reason:% = why, protocol = "quic";
                "Closed tunnel connection"),
            Err(why) => log::warn!(peer:% = self.peer, listener:% = self.listener,
                reason:% = why, protocol = "quic"; "Closed tunnel connection"),
        }
    }

    async fn serve_inner(&self, incoming: Incoming) -> Result<String, String> {
        let limit = self.shared.handshake_timeout;
        let connecting = incoming
            .accept()
            .map_err(|e| format!("QUIC accept failed: {e}"))?;
        let conn = compio::time::timeout(limit, connecting)
            .await
            .map_err(|_| format!("QUIC handshake timed out after {limit:?}"))?
            .map_err(|e| format!("QUIC handshake failed: {e}"))?;
        let result = self.control(&conn).await;
        let s = conn.stats();
        log::debug!(peer:% = self.peer, rtt:? = s.path.rtt, cwnd = s.path.cwnd,
            mtu = s.path.current_mtu, sent_packets = s.path.sent_packets,
            lost_packets = s.path.lost_packets, congestion_events = s.path.congestion_events,
            udp_tx_ios = s.udp_tx.ios, udp_rx_ios = s.udp_rx.ios,
            max_data = s.frame_tx.max_data, max_stream_data = s.frame_tx.max_stream_data;
            "QUIC connection stats");
        let reason = match &result {
            Ok(why) | Err(why) => why.as_bytes(),
        };
        conn.close(0u32.into(), &reason[..reason.len().min(256)]);
        result
    }

    /// Takes the control stream and runs the connection until it should close.
    async fn control(&self, conn: &Connection) -> Result<String, String> {
        let limit = self.shared.handshake_timeout;
        let (send, recv) = match compio::time::timeout(limit, conn.accept_bi()).await {
            Err(_) => {
                return Err(format!(
                    "connector opened no control stream within {limit:?}"
                ));
            }
            // cloudflared's pre-flight probe connects and closes without a stream: not an error.
            Ok(Err(compio::quic::ConnectionError::ApplicationClosed(close))) => {
                return Ok(format!(
                    "closed by connector before the control stream: {close}"
                ));
            }
            Ok(Err(e)) => return Err(format!("waiting for the control stream: {e}")),
            Ok(Ok(streams)) => streams,
        };
        let (events_tx, mut events) = mpsc::unbounded();
        // Dropped when this function returns: the opener task (if any) then ends.
        let (_ending, ended) = futures_channel::oneshot::channel::<()>();
        let state = Rc::new(State {
            registered: RefCell::new(None),
            events: events_tx,
            ended: RefCell::new(Some(ended)),
        });
        let server = QuicRegistration {
            shared: self.shared.clone(),
            state: state.clone(),
            conn: conn.clone(),
            listener: self.listener,
            peer: self.peer,
            worker: self.worker,
            stop: self.stop.clone(),
            tasks: self.tasks.clone(),
        };
        let mut rpc =
            pin!(serve_registration(server, recv.into_compat(), send.into_compat()).fuse());
        let mut closed = pin!(conn.closed().fuse());
        let mut deadline = pin!(compio::time::sleep(self.shared.register_timeout).fuse());
        let mut registered = false;
        let outcome = loop {
            let step = poll_fn(|cx| {
                if let Poll::Ready(r) = rpc.as_mut().poll(cx) {
                    return Poll::Ready(Step::RpcEnded(r.err().map(|e| e.to_string())));
                }
                if let Poll::Ready(ev) = events.poll_next_unpin(cx) {
                    return Poll::Ready(Step::Event(ev));
                }
                if let Poll::Ready(e) = closed.as_mut().poll(cx) {
                    return Poll::Ready(Step::Closed(e.to_string()));
                }
                if !registered && deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Step::RegisterTimeout);
                }
                Poll::Pending
            })
            .await;
            match step {
                Step::Event(Some(Event::Registered)) => registered = true,
                Step::Event(Some(Event::Refused(reason))) => {
                    linger(rpc.as_mut()).await;
                    break Err(format!("registration refused: {reason}"));
                }
                Step::Event(Some(Event::Unregistered)) => {
                    self.drain(&state, rpc.as_mut(), closed.as_mut()).await;
                    linger(rpc.as_mut()).await;
                    break Ok("connector unregistered".to_owned());
                }
                Step::Event(None) => {}
                Step::RpcEnded(error) if registered => {
                    // The connection may still carry in-flight requests: stop routing to
                    // it, drain, then close.
                    unpublish(&self.shared, &state);
                    self.drain(&state, rpc.as_mut(), closed.as_mut()).await;
                    break Ok(match error {
                        None => "control stream closed by connector".to_owned(),
                        Some(e) => format!("control stream ended: {e}"),
                    });
                }
                Step::RpcEnded(None) => {
                    break Err("control stream ended before registration".to_owned());
                }
                Step::RpcEnded(Some(e)) => break Err(format!("control stream error: {e}")),
                Step::Closed(e) if registered => break Ok(format!("connection closed: {e}")),
                Step::Closed(e) => break Err(format!("connection closed: {e}")),
                Step::RegisterTimeout => {
                    break Err(format!(
                        "connector did not register within {:?}",
                        self.shared.register_timeout
                    ));
                }
            }
        };
        if let Some((handle, tunnel_id)) = state.registered.borrow_mut().take() {
            self.shared.remove(&tunnel_id, &handle.id);
        }
        outcome
    }

    /// After unregistration: waits for in-flight streams (bounded by `drain_timeout`, and
    /// only while the connection lives), keeping the RPC running so its replies go out.
    async fn drain<R: Future, C: Future>(
        &self,
        state: &State,
        mut rpc: std::pin::Pin<&mut futures_util::future::Fuse<R>>,
        mut closed: std::pin::Pin<&mut futures_util::future::Fuse<C>>,
    ) {
        let handle = state.registered.borrow().as_ref().map(|(h, _)| h.clone());
        let Some(handle) = handle else { return };
        let mut idle = pin!(handle.idle());
        let wait = poll_fn(|cx| {
            let _ = rpc.as_mut().poll(cx);
            if closed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            idle.as_mut().poll(cx)
        });
        if compio::time::timeout(self.shared.drain_timeout, wait)
            .await
            .is_err()
        {
            log::warn!(connection:% = handle.id, inflight = handle.active(), protocol = "quic";
                "Drain timeout: closing tunnel connection with requests in flight");
        }
    }
}

/// Stops routing new requests to the connection.
fn unpublish(shared: &Shared, state: &State) {
    if let Some((h, tunnel_id)) = state.registered.borrow().as_ref() {
        h.set_draining();
        shared.remove(tunnel_id, &h.id);
    }
}

/// Keeps the RPC running until the connector ends the control stream or `LINGER` passes,
/// so the last reply (a refusal, the unregister Return) reaches it.
async fn linger<F: Future>(rpc: std::pin::Pin<&mut futures_util::future::Fuse<F>>) {
    let _ = compio::time::timeout(LINGER, rpc).await;
}

/// One iteration's outcome of the connection loop.
enum Step {
    RpcEnded(Option<String>),
    Event(Option<Event>),
    Closed(String),
    RegisterTimeout,
}

/// The edge's `RegistrationServer` for one QUIC connection.
struct QuicRegistration {
    shared: Arc<Shared>,
    state: Rc<State>,
    conn: Connection,
    listener: SocketAddr,
    peer: SocketAddr,
    worker: usize,
    stop: StopSignal,
    tasks: Rc<TaskCount>,
}

impl QuicRegistration {
    /// Runs the connection's opener task on this core: one stream task per eyeball request.
    fn spawn_opener(&self, opens: mpsc::Receiver<OpenRequest>) {
        let tasks = self.tasks.clone();
        let stop = self.stop.clone();
        let guard = tasks.enter_guard();
        let conn = self.conn.clone();
        let spawn = move |conn: Connection, open: OpenRequest| {
            let guard = tasks.enter_guard();
            let stop = stop.clone();
            // Homed: woken by eyeball tasks on other cores (runtime::relay).
            compio::runtime::spawn(relay::homed(async move {
                let _guard = guard;
                super::until_stopped(&stop, run_quic_stream(conn, open)).await;
            }))
            .detach();
        };
        let stop = self.stop.clone();
        let Some(ended) = self.state.ended.borrow_mut().take() else {
            return;
        };
        compio::runtime::spawn(relay::homed(async move {
            let _guard = guard;
            super::until_stopped(&stop, serve_opens(conn, opens, ended, spawn)).await;
        }))
        .detach();
    }

    fn refuse(&self, tunnel_id: &Uuid, conn_index: u8, cause: &str) -> ConnectionResponse {
        log::warn!(tunnelID:% = tunnel_id, connIndex = conn_index, peer:% = self.peer,
            cause:% = cause, protocol = "quic"; "Refused tunnel registration");
        let _ = self
            .state
            .events
            .unbounded_send(Event::Refused(cause.to_owned()));
        ConnectionResponse::Error(ConnectionError {
            cause: cause.to_owned(),
            retry_after: 0,
            should_retry: true,
        })
    }
}

impl RegistrationServer for QuicRegistration {
    async fn register_connection(
        &self,
        params: RegisterConnectionParams,
    ) -> Result<ConnectionResponse, RpcError> {
        let tunnel_id = Uuid::from_bytes(params.tunnel_id);
        let conn_index = params.conn_index;
        if self.state.registered.borrow().is_some() {
            return Ok(already_registered());
        }
        let client_id = match authorize(&self.shared, &params) {
            Ok(id) => id,
            Err(cause) => return Ok(self.refuse(&tunnel_id, conn_index, cause)),
        };
        let client = &params.options.client;
        let connection_id = Uuid::new_v4();
        log::info!(tunnelID:% = tunnel_id, connIndex = conn_index, connection:% = connection_id,
            clientID:% = client_id, clientVersion:% = client.version, arch:% = client.arch,
            peer:% = self.peer, listener:% = self.listener, worker = self.worker,
            protocol = "quic"; "Registered tunnel connection");
        let (opener, opens) = quic_opener();
        let handle = Arc::new(ConnHandle::with_opener(connection_id, conn_index, opener));
        self.spawn_opener(opens);
        *self.state.registered.borrow_mut() = Some((handle.clone(), tunnel_id));
        // UDP routes (a no-op without them); before publishing, so a registered connection
        // already carries UDP sessions.
        super::udp::attach(
            &self.conn,
            tunnel_id,
            conn_index,
            &client.features,
            &self.shared.udp,
            &self.stop,
        );
        self.shared.add(
            handle,
            Registration {
                tunnel_id,
                conn_index,
                client_id,
                version: client.version.clone(),
                arch: client.arch.clone(),
                features: client.features.clone(),
                connection_id,
                listener: self.listener,
                peer: self.peer,
                worker: self.worker,
                protocol: "quic",
            },
        );
        let _ = self.state.events.unbounded_send(Event::Registered);
        Ok(ConnectionResponse::Details(ConnectionDetails {
            uuid: *connection_id.as_bytes(),
            location_name: self.shared.location.clone(),
            tunnel_is_remotely_managed: false,
        }))
    }

    async fn unregister_connection(&self) -> Result<(), RpcError> {
        if let Some((handle, tunnel_id)) = self.state.registered.borrow().as_ref() {
            handle.set_draining();
            self.shared.remove(tunnel_id, &handle.id);
            log::info!(tunnelID:% = tunnel_id, connection:% = handle.id, protocol = "quic";
                "Unregistered tunnel connection");
        }
        let _ = self.state.events.unbounded_send(Event::Unregistered);
        Ok(())
    }

    async fn update_local_configuration(&self, config: Vec<u8>) -> Result<(), RpcError> {
        log::info!(peer:% = self.peer, bytes = config.len(); "Received local configuration");
        self.shared.record_local_config(config);
        Ok(())
    }
}
