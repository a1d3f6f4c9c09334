//! Connector connections: TLS, HTTP/2 client role, the control stream and registration.
//!
//! Lifecycle of one connection (spec §3.1, §3.3, §3.9, §11 B):
//! 1. TLS handshake and the HTTP/2 preface, within `handshake_timeout`;
//! 2. open the control stream (no END_STREAM) and wait for its response headers;
//! 3. serve `RegistrationServer` over it; `registerConnection` must arrive within
//!    `register_timeout`, and is checked against the configured tunnels;
//! 4. registered: the connection is published for eyeball traffic until the control stream
//!    ends, the connection fails, the edge stops, or the connector unregisters; after
//!    `unregisterConnection` no new work is routed, in-flight streams get `drain_timeout`;
//! 5. close: drop every handle so h2 sends GOAWAY, then drop the socket.
//!
//! A refused registration, a connector that never registers, and bytes that are not capnp
//! RPC all end in step 5 with one log line saying why. Nothing here panics on peer input.

use std::{
    cell::{Cell, RefCell},
    future::{Future, poll_fn},
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::Poll,
    time::Duration,
};

use bytes::Bytes;
use compio::net::{TcpListener, TcpStream};
use futures_channel::mpsc;
use futures_util::{FutureExt, StreamExt};

use uuid::Uuid;

use super::registry::{ConnHandle, Registration, Shared};
use crate::proto::headers::{PROXY_CONNECTION_UPGRADE, UPGRADE_CONTROL_STREAM};
use crate::proto::{
    ConnectionDetails, ConnectionError, ConnectionResponse, RegisterConnectionParams,
    RegistrationServer, RpcError, serve_registration,
};
use crate::runtime::h2stream::{H2Reader, H2Writer};
use crate::runtime::{StopSignal, TcpTuning, apply_tuning, h2io, relay};

/// How long a closing connection waits for the connector to end the control stream (so
/// the last RPC reply is delivered) before the socket is dropped.
const LINGER: Duration = Duration::from_secs(1);
/// How long h2 gets to send GOAWAY and flush after every handle is dropped.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// Live connection tasks on one core, so the worker can wait for them at shutdown.
#[derive(Default)]
pub(crate) struct TaskCount {
    live: Cell<usize>,
}

impl TaskCount {
    /// Counts a task until the guard drops.
    pub fn enter_guard(self: &Rc<Self>) -> TaskGuard {
        self.live.set(self.live.get() + 1);
        TaskGuard(self.clone())
    }

    /// Waits (bounded) until no task is live.
    pub async fn wait_idle(&self, limit: Duration) {
        let step = Duration::from_millis(5);
        let mut waited = Duration::ZERO;
        while self.live.get() > 0 && waited < limit {
            compio::time::sleep(step).await;
            waited += step;
        }
    }
}

/// Decrements the live count on drop.
pub(crate) struct TaskGuard(Rc<TaskCount>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.live.set(self.0.live.get().saturating_sub(1));
    }
}

/// Accepts connectors on one core's listener until stop.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    listen_addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Arc<rustls::ServerConfig>,
    worker: usize,
    stop: StopSignal,
    tasks: Rc<TaskCount>,
) {
    loop {
        let accepted = {
            let accept = std::pin::pin!(listener.accept());
            let stopped = std::pin::pin!(stop.stopped());
            match futures_util::future::select(accept, stopped).await {
                futures_util::future::Either::Left((r, _)) => r,
                futures_util::future::Either::Right(_) => return,
            }
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                log::warn!(addr:% = listen_addr, error:% = e; "Accepting a tunnel connection failed");
                // Out of descriptors and similar: do not spin.
                compio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn = Connection {
            shared: shared.clone(),
            listener: listen_addr,
            peer,
            worker,
        };
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        let guard = tasks.enter_guard();
        compio::runtime::spawn(relay::homed(async move {
            let _guard = guard;
            let finished = super::until_stopped(&stop, conn.serve(tcp, acceptor)).await;
            if !finished {
                log::debug!(peer:% = peer; "Closed tunnel connection: edge shutting down");
            }
        }))
        .detach();
    }
}

/// One connector connection's identity.
struct Connection {
    shared: Arc<Shared>,
    listener: SocketAddr,
    peer: SocketAddr,
    worker: usize,
}

/// What the registration server reports to the connection task.
enum Event {
    Registered,
    Refused(String),
    Unregistered,
}

/// Per-connection state the RPC server shares with the connection task (same core).
struct ConnState {
    /// The published handle, once registered.
    handle: RefCell<Option<(Arc<ConnHandle>, Uuid)>>,
    events: mpsc::UnboundedSender<Event>,
}

/// Why a connection ended before or instead of a clean close.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("TLS handshake timed out after {0:?}")]
    TlsTimeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP/2 handshake timed out after {0:?}")]
    H2Timeout(Duration),
    #[error("HTTP/2 handshake failed: {0}")]
    H2(h2::Error),
    #[error("opening the control stream failed: {0}")]
    ControlOpen(h2::Error),
    #[error("connector did not answer the control stream within {0:?}")]
    ControlTimeout(Duration),
    #[error("connector answered the control stream with status {0}")]
    ControlStatus(u16),
}

impl Connection {
    async fn serve(self, tcp: TcpStream, acceptor: Arc<rustls::ServerConfig>) {
        if let Err(e) = self.serve_inner(tcp, acceptor).await {
            log::warn!(peer:% = self.peer, listener:% = self.listener, error:% = e;
                "Closed tunnel connection");
        }
    }

    async fn serve_inner(
        &self,
        tcp: TcpStream,
        acceptor: Arc<rustls::ServerConfig>,
    ) -> Result<(), ConnError> {
        let _ = apply_tuning(&tcp, TcpTuning::default());
        let limit = self.shared.handshake_timeout;
        let tls = compio::time::timeout(limit, h2io::tls_accept(tcp, acceptor))
            .await
            .map_err(|_| ConnError::TlsTimeout(limit))?
            .map_err(ConnError::Tls)?;
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .max_frame_size(1 << 20)
            .max_concurrent_reset_streams(1024)
            .max_send_buffer_size(1 << 20)
            .enable_push(false);
        let (send, h2conn) = compio::time::timeout(limit, builder.handshake(tls))
            .await
            .map_err(|_| ConnError::H2Timeout(limit))?
            .map_err(ConnError::H2)?;
        // The h2 connection task owns the socket; dropping it closes the connection. Eyeball
        // tasks on other cores wake it through the relay (runtime::relay explains why).
        let mut driver = Once::new(compio::runtime::spawn(relay::homed(h2conn)));

        let result = self.control(send, &mut driver).await;
        // Close: every handle is gone now, so h2 sends GOAWAY and finishes; bound the wait.
        let _ = compio::time::timeout(CLOSE_FLUSH, driver.done()).await;
        drop(driver);
        result
    }

    /// Opens the control stream and runs the connection until it should close.
    async fn control<D: Future>(
        &self,
        send: h2::client::SendRequest<Bytes>,
        driver: &mut Once<D>,
    ) -> Result<(), ConnError> {
        let limit = self.shared.handshake_timeout;
        let mut ready = compio::time::timeout(limit, send.clone().ready())
            .await
            .map_err(|_| ConnError::ControlTimeout(limit))?
            .map_err(ConnError::ControlOpen)?;
        let request = http::Request::get("https://h2.cftunnel.com/")
            .header(PROXY_CONNECTION_UPGRADE, UPGRADE_CONTROL_STREAM)
            .body(())
            .map_err(|_| ConnError::ControlStatus(0))?;
        let (response, ctrl_send) = ready
            .send_request(request, false)
            .map_err(ConnError::ControlOpen)?;
        let response = compio::time::timeout(limit, response)
            .await
            .map_err(|_| ConnError::ControlTimeout(limit))?
            .map_err(ConnError::ControlOpen)?;
        if response.status() != http::StatusCode::OK {
            return Err(ConnError::ControlStatus(response.status().as_u16()));
        }
        let ctrl_recv = response.into_body();

        let (events_tx, mut events) = mpsc::unbounded();
        let state = Rc::new(ConnState {
            handle: RefCell::new(None),
            events: events_tx,
        });
        let server = EdgeRegistration {
            shared: self.shared.clone(),
            state: state.clone(),
            send: send.clone(),
            listener: self.listener,
            peer: self.peer,
            worker: self.worker,
        };
        drop(send);
        let mut rpc = Once::new(serve_registration(
            server,
            H2Reader::new(ctrl_recv),
            H2Writer::new(ctrl_send),
        ));

        let mut register_deadline = Box::pin(compio::time::sleep(self.shared.register_timeout));
        let mut registered = false;
        // Why the connection is closing, logged once at the end.
        let closing: Result<String, String> = loop {
            let step = poll_fn(|cx| {
                if let Poll::Ready(r) = rpc.poll_once(cx) {
                    let error = r.and_then(Result::err).map(|e| e.to_string());
                    return Poll::Ready(Step::RpcEnded(error));
                }
                if let Poll::Ready(ev) = events.poll_next_unpin(cx) {
                    return Poll::Ready(Step::Event(ev));
                }
                if driver.poll_once(cx).is_ready() {
                    return Poll::Ready(Step::ConnectionEnded);
                }
                if !registered && register_deadline.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Step::RegisterTimeout);
                }
                Poll::Pending
            })
            .await;
            match step {
                Step::Event(Some(Event::Registered)) => registered = true,
                Step::Event(Some(Event::Refused(reason))) => {
                    self.linger(&mut rpc, driver).await;
                    break Err(format!("registration refused: {reason}"));
                }
                Step::Event(Some(Event::Unregistered)) => {
                    self.drain(&state, &mut rpc).await;
                    self.linger(&mut rpc, driver).await;
                    break Ok("connector unregistered".to_owned());
                }
                Step::Event(None) => {}
                Step::RpcEnded(error) if registered => {
                    // cloudflared ends the control stream right after unregisterConnection
                    // (END_STREAM then RST_STREAM), and a connector may end it without
                    // unregistering: either way the connection may still carry in-flight
                    // requests, so stop routing to it, drain, then close.
                    self.unpublish(&state);
                    self.drain(&state, &mut rpc).await;
                    break Ok(match error {
                        None => "control stream closed by connector".to_owned(),
                        Some(e) => format!("control stream ended: {e}"),
                    });
                }
                Step::RpcEnded(None) => {
                    break Err("control stream ended before registration".to_owned());
                }
                Step::RpcEnded(Some(e)) => {
                    break Err(format!("control stream error: {e}"));
                }
                Step::ConnectionEnded => break Err("connection closed by connector".to_owned()),
                Step::RegisterTimeout => {
                    break Err(format!(
                        "connector did not register within {:?}",
                        self.shared.register_timeout
                    ));
                }
            }
        };
        // Unpublish before dropping handles, so no eyeball picks a closing connection.
        let handle = state.handle.borrow_mut().take();
        if let Some((h, tunnel_id)) = &handle {
            self.shared.remove(tunnel_id, &h.id);
        }
        match (&closing, &handle) {
            (Ok(why), Some((h, tunnel_id))) => log::info!(
                tunnelID:% = tunnel_id, connIndex = h.conn_index, connection:% = h.id,
                peer:% = self.peer, reason:% = why; "Closed tunnel connection"),
            (Ok(why), None) => log::info!(peer:% = self.peer, reason:% = why;
                "Closed tunnel connection"),
            (Err(why), Some((h, tunnel_id))) => log::warn!(
                tunnelID:% = tunnel_id, connIndex = h.conn_index, connection:% = h.id,
                peer:% = self.peer, reason:% = why; "Closed tunnel connection"),
            (Err(why), None) => log::warn!(peer:% = self.peer, listener:% = self.listener,
                reason:% = why; "Closed tunnel connection"),
        }
        drop(handle);
        drop(rpc);
        Ok(())
    }

    /// Stops routing new requests to this connection.
    fn unpublish(&self, state: &ConnState) {
        if let Some((h, tunnel_id)) = state.handle.borrow().as_ref() {
            h.set_draining();
            self.shared.remove(tunnel_id, &h.id);
        }
    }

    /// After unregistration: wait for in-flight streams (bounded by `drain_timeout`), while
    /// the RPC keeps running so its replies (the unregister Return) go out.
    async fn drain<R: Future>(&self, state: &ConnState, rpc: &mut Once<R>) {
        let handle = state.handle.borrow().as_ref().map(|(h, _)| h.clone());
        let Some(handle) = handle else { return };
        let mut idle = std::pin::pin!(handle.idle());
        let wait = poll_fn(|cx| {
            let _ = rpc.poll_once(cx);
            idle.as_mut().poll(cx)
        });
        if compio::time::timeout(self.shared.drain_timeout, wait)
            .await
            .is_err()
        {
            log::warn!(connection:% = handle.id, inflight = handle.active();
                "Drain timeout: closing tunnel connection with requests in flight");
        }
    }

    /// Keeps the RPC and the connection running until the connector ends the control
    /// stream or `LINGER` passes, so the last reply reaches it.
    async fn linger<R: Future, D: Future>(&self, rpc: &mut Once<R>, driver: &mut Once<D>) {
        let wait = poll_fn(|cx| {
            if rpc.poll_once(cx).is_ready() || driver.poll_once(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let _ = compio::time::timeout(LINGER, wait).await;
    }
}

/// One iteration's outcome of the connection loop.
enum Step {
    RpcEnded(Option<String>),
    Event(Option<Event>),
    ConnectionEnded,
    RegisterTimeout,
}

/// The edge's `RegistrationServer` for one connection.
struct EdgeRegistration {
    shared: Arc<Shared>,
    state: Rc<ConnState>,
    send: h2::client::SendRequest<Bytes>,
    listener: SocketAddr,
    peer: SocketAddr,
    worker: usize,
}

/// Compares secrets without an early exit on the first differing byte.
fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to a second `registerConnection` on one connection.
pub(super) fn already_registered() -> ConnectionResponse {
    ConnectionResponse::Error(ConnectionError {
        cause: "connection already registered".into(),
        retry_after: 0,
        should_retry: false,
    })
}

/// Checks a `registerConnection` against the configured tunnels, for either transport: the
/// connector's client id, or the cause to refuse with.
pub(super) fn authorize(
    shared: &Shared,
    params: &RegisterConnectionParams,
) -> Result<Uuid, &'static str> {
    let tunnel_id = Uuid::from_bytes(params.tunnel_id);
    let Some(tunnel) = shared.tunnel(&tunnel_id) else {
        return Err("Unauthorized: Failed to get tunnel");
    };
    if !secrets_equal(
        params.auth.account_tag.as_bytes(),
        tunnel.account_tag.as_bytes(),
    ) || !secrets_equal(params.auth.tunnel_secret.expose(), tunnel.secret.expose())
    {
        return Err("Unauthorized: Invalid tunnel secret");
    }
    let client_id = Uuid::from_slice(&params.options.client.client_id).unwrap_or_default();
    if shared.is_duplicate(&tunnel_id, &client_id, params.conn_index) {
        return Err("EDUPCONN");
    }
    Ok(client_id)
}

impl EdgeRegistration {
    fn refuse(&self, tunnel_id: &Uuid, conn_index: u8, cause: &str) -> ConnectionResponse {
        log::warn!(tunnelID:% = tunnel_id, connIndex = conn_index, peer:% = self.peer,
            cause:% = cause; "Refused tunnel registration");
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

impl RegistrationServer for EdgeRegistration {
    async fn register_connection(
        &self,
        params: RegisterConnectionParams,
    ) -> Result<ConnectionResponse, RpcError> {
        let tunnel_id = Uuid::from_bytes(params.tunnel_id);
        let conn_index = params.conn_index;
        if self.state.handle.borrow().is_some() {
            // A second registration on one connection: refuse without dropping the first.
            return Ok(already_registered());
        }
        let client = &params.options.client;
        let client_id = match authorize(&self.shared, &params) {
            Ok(id) => id,
            Err(cause) => return Ok(self.refuse(&tunnel_id, conn_index, cause)),
        };
        let connection_id = Uuid::new_v4();
        let handle = Arc::new(ConnHandle::new(
            connection_id,
            conn_index,
            self.send.clone(),
        ));
        let registration = Registration {
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
            protocol: "http2",
        };
        log::info!(tunnelID:% = tunnel_id, connIndex = conn_index, connection:% = connection_id,
            clientID:% = client_id, clientVersion:% = client.version, arch:% = client.arch,
            peer:% = self.peer, listener:% = self.listener, worker = self.worker;
            "Registered tunnel connection");
        *self.state.handle.borrow_mut() = Some((handle.clone(), tunnel_id));
        self.shared.add(handle, registration);
        let _ = self.state.events.unbounded_send(Event::Registered);
        Ok(ConnectionResponse::Details(ConnectionDetails {
            uuid: *connection_id.as_bytes(),
            location_name: self.shared.location.clone(),
            tunnel_is_remotely_managed: false,
        }))
    }

    async fn unregister_connection(&self) -> Result<(), RpcError> {
        let handle = self.state.handle.borrow().clone();
        match handle {
            Some((h, tunnel_id)) => {
                h.set_draining();
                self.shared.remove(&tunnel_id, &h.id);
                log::info!(tunnelID:% = tunnel_id, connIndex = h.conn_index, connection:% = h.id,
                    inflight = h.active(); "Unregistered tunnel connection");
                let _ = self.state.events.unbounded_send(Event::Unregistered);
            }
            None => {
                log::warn!(peer:% = self.peer; "unregisterConnection on an unregistered connection");
                let _ = self.state.events.unbounded_send(Event::Unregistered);
            }
        }
        Ok(())
    }

    async fn update_local_configuration(&self, config: Vec<u8>) -> Result<(), RpcError> {
        log::info!(peer:% = self.peer, bytes = config.len(); "Received local configuration");
        self.shared.record_local_config(config);
        Ok(())
    }
}

/// A future polled until it completes once; afterwards it reports `None` at once, so it can
/// be polled in several loops without the "polled after completion" hazard.
struct Once<F: Future> {
    fut: Option<Pin<Box<F>>>,
}

impl<F: Future> Once<F> {
    fn new(fut: F) -> Self {
        Self {
            fut: Some(Box::pin(fut)),
        }
    }

    /// `Ready(Some(out))` on completion, `Ready(None)` ever after.
    fn poll_once(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<F::Output>> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Ready(None);
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(out) => {
                self.fut = None;
                Poll::Ready(Some(out))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Resolves when the future has completed (now or earlier).
    async fn done(&mut self) {
        poll_fn(|cx| self.poll_once(cx).map(|_| ())).await;
    }
}
