//! The built-in edge's QUIC side (spec §4, §5): connector connections over UDP on the same
//! tunnel listen addresses as http2.
//!
//! Lifecycle of one connection:
//! 1. QUIC handshake (TLS 1.3, ALPN `argotunnel`) within `handshake_timeout`;
//! 2. the connector's first bidirectional stream is the control stream: raw capnp RPC with
//!    the edge serving `RegistrationServer`; `registerConnection` must arrive within
//!    `register_timeout` and is checked as on http2 (`tunnel::authorize`);
//! 3. registered: the registration is visible to `Edge::registered`; the connection lives
//!    until the control stream ends, the connector unregisters or closes, or the edge stops;
//! 4. close with QUIC error code 0 and a reason.
//!
//! Not yet: eyeball requests are not routed to QUIC connections (data streams opened by the
//! edge need a cross-core stream opener, since compio-quic connections are `!Send`).
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

use super::registry::{Registration, Shared};
use super::tunnel::{TaskCount, already_registered, authorize};
use crate::proto::{
    ConnectionDetails, ConnectionError, ConnectionResponse, RegisterConnectionParams,
    RegistrationServer, RpcError, serve_registration,
};
use crate::runtime::StopSignal;

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
}

/// What the registration server tells the connection task.
enum Event {
    Registered,
    Refused(String),
    Unregistered,
}

/// Per-connection state the RPC server shares with the connection task.
struct State {
    /// (tunnel id, edge connection id) once registered.
    registered: RefCell<Option<(Uuid, Uuid)>>,
    events: mpsc::UnboundedSender<Event>,
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
        let state = Rc::new(State {
            registered: RefCell::new(None),
            events: events_tx,
        });
        let server = QuicRegistration {
            shared: self.shared.clone(),
            state: state.clone(),
            listener: self.listener,
            peer: self.peer,
            worker: self.worker,
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
                    linger(rpc.as_mut()).await;
                    break Ok("connector unregistered".to_owned());
                }
                Step::Event(None) => {}
                Step::RpcEnded(None) if registered => {
                    break Ok("control stream closed by connector".to_owned());
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
        if let Some((tunnel_id, conn_id)) = state.registered.borrow_mut().take() {
            self.shared.remove(&tunnel_id, &conn_id);
        }
        outcome
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
    listener: SocketAddr,
    peer: SocketAddr,
    worker: usize,
}

impl QuicRegistration {
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
        *self.state.registered.borrow_mut() = Some((tunnel_id, connection_id));
        self.shared.record(Registration {
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
        });
        let _ = self.state.events.unbounded_send(Event::Registered);
        Ok(ConnectionResponse::Details(ConnectionDetails {
            uuid: *connection_id.as_bytes(),
            location_name: self.shared.location.clone(),
            tunnel_is_remotely_managed: false,
        }))
    }

    async fn unregister_connection(&self) -> Result<(), RpcError> {
        if let Some((tunnel_id, conn_id)) = *self.state.registered.borrow() {
            self.shared.remove(&tunnel_id, &conn_id);
            log::info!(tunnelID:% = tunnel_id, connection:% = conn_id, protocol = "quic";
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
