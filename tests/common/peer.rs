//! A minimal connector-side peer for the built-in edge, built from `proto` and
//! `runtime::h2io`: TLS client with the edge CA, HTTP/2 server with cloudflared's SETTINGS,
//! control stream + `RegistrationClient`, data streams answered by path with serialized
//! headers (the peer's "origin"). It runs on its own thread and compio runtime.

use std::{
    cell::RefCell, net::SocketAddr, path::PathBuf, rc::Rc, sync::mpsc, thread, time::Duration,
};

use bytes::Bytes;
use compio::net::TcpStream;
use compio::tls::TlsConnector;
use futures_channel::{mpsc as fmpsc, oneshot};
use futures_util::{AsyncWriteExt, StreamExt};
use h2::{RecvStream, server::SendResponse};
use ringflare::edge::Edge;
use ringflare::proto::headers::{
    PROXY_CONNECTION_UPGRADE, RESPONSE_HEADERS, RESPONSE_META, serialize_headers,
};
use ringflare::proto::http2::{META_CLOUDFLARED, META_ORIGIN, websocket_accept};
use ringflare::proto::{
    ClientInfo, ConnectionOptions, ConnectionResponse, RegisterConnectionParams,
    RegistrationClient, TunnelAuth, TunnelSecret,
};
use ringflare::runtime::h2stream::{H2Reader, H2Writer, send_all};
use ringflare::runtime::{DriverKind, build_runtime, h2io};
use ringflare::tls::{EdgeRoots, H2_SERVER_NAME, connector_client_config};
use uuid::Uuid;

use super::hashing::{fnv, pattern};
use super::tunnel::TestTunnel;
use super::wait::WAIT;

/// What the peer does on its control stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Register and serve requests.
    Register,
    /// Write bytes that are not capnp RPC.
    Garbage,
    /// Write a capnp frame header announcing more than it sends, then end the stream.
    Truncated,
    /// Accept the control stream but never answer it.
    NeverAnswer,
    /// Answer the control stream but never register.
    NeverRegister,
}

/// What happened to the peer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    Registered {
        location: String,
    },
    Refused(String),
    RpcFailed(String),
    Unregistered,
    /// The edge closed the HTTP/2 connection (or it failed).
    Closed,
}

enum Command {
    Unregister,
    /// Unregister, then end the control stream (END_STREAM), like cloudflared's
    /// shutdown, while other streams keep running.
    UnregisterAndClose,
    /// Tear down the RPC without unregistering.
    CloseControl,
}

/// A running test peer (its own thread and compio runtime).
pub struct Peer {
    pub events: mpsc::Receiver<PeerEvent>,
    commands: fmpsc::UnboundedSender<Command>,
    thread: Option<thread::JoinHandle<()>>,
}

pub struct PeerConfig {
    pub edge: SocketAddr,
    pub ca: PathBuf,
    pub account: String,
    pub tunnel_id: Uuid,
    pub secret: Vec<u8>,
    pub conn_index: u8,
    pub client_id: Uuid,
    pub name: String,
    pub behavior: Behavior,
}

impl PeerConfig {
    pub fn new(edge: &Edge, addr: SocketAddr, t: &TestTunnel, name: &str) -> Self {
        Self {
            edge: addr,
            ca: edge.ca_pem_path().to_owned(),
            account: t.account.clone(),
            tunnel_id: t.id,
            secret: t.secret.clone(),
            conn_index: 0,
            client_id: Uuid::new_v4(),
            name: name.into(),
            behavior: Behavior::Register,
        }
    }
}

/// The registration a connector-side peer sends: the tunnel's auth, this connection's index and
/// client id, `features` and `version` in the client info, origin IP 127.0.0.1.
pub fn register_params(
    account: &str,
    secret: &[u8],
    tunnel_id: Uuid,
    conn_index: u8,
    client_id: Uuid,
    features: &[&str],
    version: &str,
) -> RegisterConnectionParams {
    RegisterConnectionParams {
        auth: TunnelAuth {
            account_tag: account.to_owned(),
            tunnel_secret: TunnelSecret::new(secret.to_vec()),
        },
        tunnel_id: *tunnel_id.as_bytes(),
        conn_index,
        options: ConnectionOptions {
            client: ClientInfo {
                client_id: client_id.as_bytes().to_vec(),
                features: features.iter().map(|f| (*f).to_owned()).collect(),
                version: version.into(),
                arch: "linux_amd64".into(),
            },
            origin_local_ip: ConnectionOptions::ip_bytes([127, 0, 0, 1].into()),
            replace_existing: false,
            compression_quality: 0,
            num_previous_attempts: 0,
        },
    }
}

impl Peer {
    pub fn start(cfg: PeerConfig) -> Peer {
        let (events_tx, events) = mpsc::channel();
        let (commands, commands_rx) = fmpsc::unbounded();
        let thread = thread::spawn(move || {
            let rt = build_runtime(DriverKind::Poll).unwrap();
            rt.block_on(run_peer(cfg, events_tx, commands_rx));
        });
        Peer {
            events,
            commands,
            thread: Some(thread),
        }
    }

    /// Waits for the next event.
    pub fn next_event(&self) -> PeerEvent {
        self.events
            .recv_timeout(WAIT)
            .expect("peer event within the timeout")
    }

    /// Waits for registration; panics on anything else.
    pub fn expect_registered(&self) {
        match self.next_event() {
            PeerEvent::Registered { .. } => {}
            other => panic!("expected registration, got {other:?}"),
        }
    }

    pub fn unregister(&self) {
        let _ = self.commands.unbounded_send(Command::Unregister);
    }

    pub fn close_control(&self) {
        let _ = self.commands.unbounded_send(Command::CloseControl);
    }

    pub fn unregister_and_close(&self) {
        let _ = self.commands.unbounded_send(Command::UnregisterAndClose);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if thread::panicking() {
            // Waking the peer's runtime from a panicking thread makes compio abort; let the
            // failing test report its panic instead.
            if let Some(t) = self.thread.take() {
                std::mem::forget(t);
            }
            std::mem::forget(self.commands.clone());
            return;
        }
        self.commands.close_channel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run_peer(
    cfg: PeerConfig,
    events: mpsc::Sender<PeerEvent>,
    mut commands: fmpsc::UnboundedReceiver<Command>,
) {
    let tcp = TcpStream::connect(cfg.edge).await.unwrap();
    let tls_cfg = connector_client_config(EdgeRoots::CaFile(cfg.ca.clone())).unwrap();
    let tls = TlsConnector::from(tls_cfg)
        .connect(H2_SERVER_NAME, tcp)
        .await
        .unwrap();
    let mut conn = h2io::connector_h2_server()
        .handshake::<_, Bytes>(h2io::tls(tls))
        .await
        .unwrap();
    let (ctrl_tx, ctrl_rx) = oneshot::channel();
    let name = Rc::new(cfg.name.clone());
    let gate: Gate = Rc::new(RefCell::new(Vec::new()));
    let closed_events = events.clone();
    let behavior = cfg.behavior;
    compio::runtime::spawn(async move {
        let mut ctrl_tx = Some(ctrl_tx);
        while let Some(next) = conn.accept().await {
            let Ok((req, respond)) = next else { break };
            let is_control = req
                .headers()
                .get(PROXY_CONNECTION_UPGRADE)
                .is_some_and(|v| v == "control-stream");
            if is_control && let Some(tx) = ctrl_tx.take() {
                let _ = tx.send((req, respond));
                continue;
            }
            let name = name.clone();
            let gate = gate.clone();
            compio::runtime::spawn(async move {
                let _ = handle(req, respond, &name, &gate).await;
            })
            .detach();
        }
        let _ = closed_events.send(PeerEvent::Closed);
    })
    .detach();

    let Ok((req, mut respond)) = ctrl_rx.await else {
        return;
    };
    if behavior == Behavior::NeverAnswer {
        let _keep = (req, respond);
        let _ = commands.next().await;
        return;
    }
    let send = respond
        .send_response(http::Response::new(()), false)
        .unwrap();
    let recv = req.into_body();
    let mut writer = H2Writer::new(send);
    let reader = H2Reader::new(recv);
    match behavior {
        Behavior::Garbage => {
            let _ = writer.write_all(&[0xFF; 64]).await;
            let _keep = reader;
            let _ = commands.next().await;
            return;
        }
        Behavior::Truncated => {
            // One segment of 100 words announced, 8 bytes sent, then END_STREAM.
            let mut frame = vec![0, 0, 0, 0, 100, 0, 0, 0];
            frame.extend_from_slice(&[0; 8]);
            let _ = writer.write_all(&frame).await;
            let _ = writer.close().await;
            let _keep = reader;
            let _ = commands.next().await;
            return;
        }
        Behavior::NeverRegister => {
            let _keep = (reader, writer);
            let _ = commands.next().await;
            return;
        }
        Behavior::Register | Behavior::NeverAnswer => {}
    }
    let reader = Killable::new(reader);
    let writer = Killable::new(writer);
    let (kill_r, kill_w) = (reader.clone(), writer.clone());
    let (client, driver) = RegistrationClient::connect(reader, writer);
    compio::runtime::spawn(async move {
        let _ = driver.await;
    })
    .detach();
    let params = register_params(
        &cfg.account,
        &cfg.secret,
        cfg.tunnel_id,
        cfg.conn_index,
        cfg.client_id,
        &["serialized_headers"],
        "test-peer",
    );
    match client.register_connection(&params).await {
        Ok(ConnectionResponse::Details(d)) => {
            let _ = events.send(PeerEvent::Registered {
                location: d.location_name,
            });
        }
        Ok(ConnectionResponse::Error(e)) => {
            let _ = events.send(PeerEvent::Refused(e.cause));
        }
        Err(e) => {
            let _ = events.send(PeerEvent::RpcFailed(e.to_string()));
        }
    }
    while let Some(cmd) = commands.next().await {
        let unregister = matches!(cmd, Command::Unregister | Command::UnregisterAndClose);
        if unregister && client.unregister_connection().await.is_ok() {
            let _ = events.send(PeerEvent::Unregistered);
        }
        if matches!(cmd, Command::UnregisterAndClose | Command::CloseControl) {
            // End the control stream as cloudflared does at shutdown: END_STREAM, then
            // drop both halves (the RPC system cannot reach them any more).
            if let Some(mut w) = kill_w.take() {
                let _ = w.close().await;
            }
            kill_r.take();
        }
    }
}

/// A stream half the test can drop from outside the RPC system (which keeps its
/// connection alive through internal references).
struct Killable<T>(Rc<RefCell<Option<T>>>);

impl<T> Clone for Killable<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Killable<T> {
    fn new(inner: T) -> Self {
        Self(Rc::new(RefCell::new(Some(inner))))
    }

    fn take(&self) -> Option<T> {
        self.0.borrow_mut().take()
    }
}

impl<T: futures_util::AsyncRead + Unpin> futures_util::AsyncRead for Killable<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.0.borrow_mut().as_mut() {
            Some(r) => std::pin::Pin::new(r).poll_read(cx, buf),
            None => std::task::Poll::Ready(Ok(0)),
        }
    }
}

impl<T: futures_util::AsyncWrite + Unpin> futures_util::AsyncWrite for Killable<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.0.borrow_mut().as_mut() {
            Some(w) => std::pin::Pin::new(w).poll_write(cx, buf),
            None => std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.0.borrow_mut().as_mut() {
            Some(w) => std::pin::Pin::new(w).poll_flush(cx),
            None => std::task::Poll::Ready(Ok(())),
        }
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.0.borrow_mut().as_mut() {
            Some(w) => std::pin::Pin::new(w).poll_close(cx),
            None => std::task::Poll::Ready(Ok(())),
        }
    }
}

type Gate = Rc<RefCell<Vec<oneshot::Sender<()>>>>;

/// Builds the connector's response head: status, serialized headers, origin meta.
fn response(status: u16, headers: &[(&str, &str)]) -> http::Response<()> {
    let mut b = http::Response::builder()
        .status(status)
        .header(RESPONSE_HEADERS, serialize_headers(headers.iter().copied()))
        .header(RESPONSE_META, META_ORIGIN)
        // A sniffed header Go may add; the edge must ignore it.
        .header("content-type", "text/x-must-be-ignored");
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("content-length") {
            b = b.header("content-length", *v);
        }
    }
    b.body(()).unwrap()
}

fn query(req: &http::Request<RecvStream>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// Sends every DATA frame of `body` back on `send`, then ends the stream.
async fn echo_body(
    mut body: h2::RecvStream,
    mut send: h2::SendStream<Bytes>,
) -> Result<(), h2::Error> {
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let len = chunk.len();
        send_all(&mut send, chunk).await?;
        body.flow_control().release_capacity(len)?;
    }
    send.send_data(Bytes::new(), true)
}

async fn read_body(body: &mut RecvStream) -> Result<Vec<u8>, h2::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The peer's "origin": answers by path.
async fn handle(
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    name: &str,
    gate: &Gate,
) -> Result<(), h2::Error> {
    let path = req.uri().path().to_owned();
    if req
        .headers()
        .get(PROXY_CONNECTION_UPGRADE)
        .is_some_and(|v| v == "websocket")
    {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let accept = websocket_accept(&key);
        let send = respond.send_response(
            response(
                200,
                &[
                    ("Connection", "Upgrade"),
                    ("Upgrade", "websocket"),
                    ("Sec-Websocket-Accept", &accept),
                ],
            ),
            false,
        )?;
        return echo_body(req.into_body(), send).await;
    }
    match path.as_str() {
        "/echo" => {
            let send = respond.send_response(
                response(
                    200,
                    &[
                        ("Content-Type", "application/octet-stream"),
                        ("X-Peer", name),
                    ],
                ),
                false,
            )?;
            echo_body(req.into_body(), send).await
        }
        "/hash" => {
            let mut body = req.into_body();
            let data = read_body(&mut body).await?;
            let text = format!("{} {:016x}", data.len(), fnv(&data));
            let len = text.len().to_string();
            let mut send = respond.send_response(
                response(
                    200,
                    &[("Content-Type", "text/plain"), ("Content-Length", &len)],
                ),
                false,
            )?;
            send.send_data(Bytes::from(text), true)
        }
        "/big" => {
            let n = query(&req, "n").unwrap_or(0) as usize;
            let data = Bytes::from(pattern(n, 7));
            let len = n.to_string();
            let mut send = respond.send_response(
                response(
                    200,
                    &[
                        ("Content-Length", &len),
                        ("X-Sum", &format!("{:016x}", fnv(&data))),
                    ],
                ),
                false,
            )?;
            send_all(&mut send, data).await?;
            send.send_data(Bytes::new(), true)
        }
        "/zeros" => {
            // Bulk download without per-byte work at the origin: one shared 1 MiB chunk.
            let n = query(&req, "n").unwrap_or(0) as usize;
            let len = n.to_string();
            let mut send =
                respond.send_response(response(200, &[("Content-Length", &len)]), false)?;
            let chunk = Bytes::from(vec![0u8; 1 << 20]);
            let mut left = n;
            while left > 0 {
                let take = left.min(chunk.len());
                send_all(&mut send, chunk.slice(..take)).await?;
                left -= take;
            }
            send.send_data(Bytes::new(), true)
        }
        "/discard" => {
            // Bulk upload: count the bytes, answer with the count.
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(chunk) = body.data().await {
                let chunk = chunk?;
                n += chunk.len();
                body.flow_control().release_capacity(chunk.len())?;
            }
            let text = n.to_string();
            let len = text.len().to_string();
            let mut send =
                respond.send_response(response(200, &[("Content-Length", &len)]), false)?;
            send.send_data(Bytes::from(text), true)
        }
        "/chunked" => {
            let mut send = respond.send_response(
                response(200, &[("Content-Type", "text/plain"), ("X-Peer", name)]),
                false,
            )?;
            for i in 0..5 {
                send.send_data(Bytes::from(format!("part{i};")), false)?;
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-trailer", http::HeaderValue::from_static("done"));
            send.send_trailers(trailers)
        }
        "/sse" => {
            let (tx, rx) = oneshot::channel();
            gate.borrow_mut().push(tx);
            let mut send = respond.send_response(
                response(
                    200,
                    &[
                        ("Content-Type", "text/event-stream"),
                        ("Cache-Control", "no-cache"),
                    ],
                ),
                false,
            )?;
            send.send_data(Bytes::from_static(b"data: one\n\n"), false)?;
            let _ = rx.await;
            send.send_data(Bytes::from_static(b"data: two\n\n"), true)
        }
        "/sse-next" => {
            for tx in gate.borrow_mut().drain(..) {
                let _ = tx.send(());
            }
            let mut send =
                respond.send_response(response(200, &[("Content-Length", "0")]), false)?;
            send.send_data(Bytes::new(), true)
        }
        "/slow" => {
            let ms = query(&req, "ms").unwrap_or(500);
            compio::time::sleep(Duration::from_millis(ms)).await;
            let mut send = respond.send_response(
                response(200, &[("Content-Length", "4"), ("X-Peer", name)]),
                false,
            )?;
            send.send_data(Bytes::from_static(b"slow"), true)
        }
        "/bad-serialized" => {
            let resp = http::Response::builder()
                .status(200)
                .header(RESPONSE_HEADERS, "not base64!:x;y")
                .header(RESPONSE_META, META_ORIGIN)
                .body(())
                .unwrap();
            respond.send_response(resp, true)?;
            Ok(())
        }
        "/crlf-header" => {
            let mut send = respond.send_response(
                response(
                    200,
                    &[
                        ("X-Evil", "a\r\nSet-Cookie: injected=1"),
                        ("Content-Length", "2"),
                    ],
                ),
                false,
            )?;
            send.send_data(Bytes::from_static(b"ok"), true)
        }
        "/truncate" => {
            let mut send =
                respond.send_response(response(200, &[("Content-Length", "100000")]), false)?;
            send.send_data(Bytes::from(vec![b'x'; 1000]), false)?;
            compio::time::sleep(Duration::from_millis(50)).await;
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            Ok(())
        }
        "/origin-down" => {
            let resp = http::Response::builder()
                .status(502)
                .header(RESPONSE_META, META_CLOUDFLARED)
                .body(())
                .unwrap();
            respond.send_response(resp, true)?;
            Ok(())
        }
        "/headers" => {
            let mut lines: Vec<String> = req
                .headers()
                .iter()
                .map(|(n, v)| format!("{}: {}", n, v.to_str().unwrap_or("?")))
                .collect();
            lines.push(format!(
                ":authority: {}",
                req.uri().authority().map_or("", |a| a.as_str())
            ));
            lines.push(format!(
                ":path: {}",
                req.uri().path_and_query().map_or("", |a| a.as_str())
            ));
            lines.push(format!(":method: {}", req.method()));
            let text = lines.join("\n");
            let len = text.len().to_string();
            let mut send = respond.send_response(
                response(
                    200,
                    &[
                        ("Content-Length", &len),
                        ("X-Peer", name),
                        ("Set-Cookie", "a=1"),
                        ("Set-Cookie", "b=2"),
                        ("Server", "test-origin"),
                    ],
                ),
                false,
            )?;
            send.send_data(Bytes::from(text), true)
        }
        _ => {
            let text = format!("hello from {name}");
            let len = text.len().to_string();
            let mut send = respond.send_response(
                response(
                    200,
                    &[
                        ("Content-Type", "text/plain"),
                        ("Content-Length", &len),
                        ("X-Peer", name),
                    ],
                ),
                false,
            )?;
            send.send_data(Bytes::from(text), true)
        }
    }
}
