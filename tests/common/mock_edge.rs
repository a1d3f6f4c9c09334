//! A minimal in-test edge for the connector binary: TLS server + HTTP/2 *client* + capnp
//! RegistrationServer, speaking the edge side of spec §3 over loopback; requests it sends to
//! the connector and the responses it collects.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use compio::net::TcpListener;
use compio::tls::TlsAcceptor;
use h2::client::SendRequest;
use ringflare::proto::headers::{RESPONSE_HEADERS, RESPONSE_META, deserialize_headers};
use ringflare::proto::{
    ConnectionDetails, ConnectionResponse, RegisterConnectionParams, RegistrationServer, RpcError,
    serve_registration,
};
use ringflare::runtime::h2io;
use ringflare::runtime::h2stream::{H2Reader, H2Writer, send_all};
use ringflare::tls::{EdgeCa, edge_server_config};
use uuid::Uuid;

use super::hashing::{Fnv, payload_chunk};

/// What the in-test edge saw on one control stream.
#[derive(Default)]
pub struct Seen {
    pub params: Option<RegisterConnectionParams>,
    pub unregistered: bool,
}

struct Registrar(Rc<RefCell<Seen>>, Option<(String, bool)>);

impl RegistrationServer for Registrar {
    async fn register_connection(
        &self,
        params: RegisterConnectionParams,
    ) -> Result<ConnectionResponse, RpcError> {
        self.0.borrow_mut().params = Some(params);
        if let Some((cause, should_retry)) = &self.1 {
            return Ok(ConnectionResponse::Error(
                ringflare::proto::ConnectionError {
                    cause: cause.clone(),
                    retry_after: 0,
                    should_retry: *should_retry,
                },
            ));
        }
        Ok(ConnectionResponse::Details(ConnectionDetails {
            uuid: *Uuid::new_v4().as_bytes(),
            location_name: "test01".into(),
            tunnel_is_remotely_managed: false,
        }))
    }

    async fn unregister_connection(&self) -> Result<(), RpcError> {
        self.0.borrow_mut().unregistered = true;
        Ok(())
    }

    async fn update_local_configuration(&self, _: Vec<u8>) -> Result<(), RpcError> {
        Ok(())
    }
}

/// The in-test edge's listener and CA.
pub struct TestEdge {
    /// When set, registrations are refused with this cause and shouldRetry.
    pub refuse: RefCell<Option<(String, bool)>>,
    pub listener: TcpListener,
    pub acceptor: TlsAcceptor,
    pub ca: PathBuf,
    pub dir: tempfile::TempDir,
}

/// A connector connection with its control stream open and nothing said on it yet.
pub struct OpenControl {
    /// The task driving the HTTP/2 connection; dropping it closes the TCP connection.
    pub task: compio::runtime::JoinHandle<()>,
    pub client: SendRequest<Bytes>,
    /// The connector's response on the control stream (its body carries the RPC bytes).
    pub response: http::Response<h2::RecvStream>,
    /// The control stream's send half.
    pub control: h2::SendStream<Bytes>,
}

/// One registered connector connection, seen from the edge.
pub struct EdgeConn {
    /// The task driving the HTTP/2 connection; dropping it closes the TCP connection.
    pub task: Option<compio::runtime::JoinHandle<()>>,
    pub client: SendRequest<Bytes>,
    pub seen: Rc<RefCell<Seen>>,
    /// The control stream's send half: dropping it closes the control stream.
    pub control: Option<h2::SendStream<Bytes>>,
}

impl TestEdge {
    pub async fn new() -> TestEdge {
        let dir = tempfile::tempdir().unwrap();
        let ca = EdgeCa::load_or_create(dir.path()).unwrap();
        let acceptor = TlsAcceptor::from(edge_server_config(&ca).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestEdge {
            refuse: RefCell::new(None),
            listener,
            acceptor,
            ca: ca.ca_pem_path().to_owned(),
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Accepts a connector's TLS + HTTP/2 connection and opens the control stream, leaving
    /// what happens on it to the caller (registration, a refusal, a reset).
    pub async fn open_control(&self) -> OpenControl {
        let (tcp, _) = self.listener.accept().await.unwrap();
        let tls = self.acceptor.accept(tcp).await.unwrap();
        let (client, conn) = h2::client::handshake(h2io::tls(tls)).await.unwrap();
        let task = compio::runtime::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.unwrap();
        let req = http::Request::get("https://h2.cftunnel.com/")
            .header("cf-cloudflared-proxy-connection-upgrade", "control-stream")
            .body(())
            .unwrap();
        let (resp, control) = client.send_request(req, false).unwrap();
        let response = resp.await.unwrap();
        OpenControl {
            task,
            client,
            response,
            control,
        }
    }

    /// Accepts a connector, opens the control stream and waits for registration.
    pub async fn accept(&self) -> EdgeConn {
        let OpenControl {
            task,
            client,
            response: resp,
            control,
        } = self.open_control().await;
        let seen = Rc::new(RefCell::new(Seen::default()));
        let reader = H2Reader::new(resp.into_body());
        // The writer side of the control stream goes to the RPC system.
        let registrar = Registrar(seen.clone(), self.refuse.borrow().clone());
        let rpc = serve_registration(registrar, reader, H2Writer::new(control));
        compio::runtime::spawn(async move {
            let _ = rpc.await;
        })
        .detach();
        for _ in 0..600 {
            if seen.borrow().params.is_some() {
                break;
            }
            compio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen.borrow().params.is_some(), "connector did not register");
        EdgeConn {
            task: Some(task),
            client,
            seen,
            control: None,
        }
    }

    /// Closes the listener and listens again on the same address after `down` (an edge restart).
    pub async fn restart(&mut self, down: Duration) {
        let addr = self.addr();
        let old = std::mem::replace(
            &mut self.listener,
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        );
        drop(old);
        compio::time::sleep(down).await;
        self.listener = ringflare::runtime::bind_reuseport(addr).unwrap();
    }

    /// Accepts a TCP+TLS connection and returns the raw TLS stream (misbehaviour tests).
    pub async fn accept_raw(&self) -> compio::tls::TlsStream<compio::net::TcpStream> {
        let (tcp, _) = self.listener.accept().await.unwrap();
        self.acceptor.accept(tcp).await.unwrap()
    }
}

/// A response as the edge rebuilds it for the eyeball.
pub struct Reply {
    pub status: u16,
    pub meta: String,
    /// Deserialized origin headers.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl EdgeConn {
    /// A second handle on the same connection (for concurrent requests).
    pub fn handle(&self) -> EdgeConn {
        EdgeConn {
            task: None,
            client: self.client.clone(),
            seen: self.seen.clone(),
            control: None,
        }
    }

    /// Drops the connection abruptly, as a crashing edge would.
    pub fn kill(&mut self) {
        self.task = None;
    }

    /// Sends a request with an optional body and collects the whole response.
    pub async fn request(&mut self, req: http::Request<()>, body: Option<Bytes>) -> Reply {
        let client = self.client.clone().ready().await.unwrap();
        let mut client = client;
        let (resp, mut send) = client.send_request(req, body.is_none()).unwrap();
        if let Some(body) = body {
            send_all(&mut send, body).await.unwrap();
            send.send_data(Bytes::new(), true).unwrap();
        }
        let resp = resp.await.unwrap();
        collect(resp).await
    }
}

pub async fn collect(resp: http::Response<h2::RecvStream>) -> Reply {
    let status = resp.status().as_u16();
    let meta = resp
        .headers()
        .get(RESPONSE_META)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let headers = resp
        .headers()
        .get(RESPONSE_HEADERS)
        .map(|v| deserialize_headers(v.to_str().unwrap()).unwrap())
        .unwrap_or_default();
    let mut recv = resp.into_body();
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    Reply {
        status,
        meta,
        headers,
        body,
    }
}

/// A GET request to `path` on `host`.
pub fn get(host: &str, path: &str) -> http::Request<()> {
    http::Request::get(format!("https://{host}{path}"))
        .body(())
        .unwrap()
}

/// Streams `total` bytes up through `conn` to a streaming echo origin and checks that the
/// same bytes come back, holding at most one chunk of each direction in memory.
pub async fn echo_transfer(conn: &mut EdgeConn, host: &str, total: u64) {
    const CHUNK: usize = 256 * 1024;
    let mut client = conn.client.clone().ready().await.unwrap();
    let req = http::Request::post(format!("https://{host}/echo"))
        .header("content-length", total.to_string())
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    let upload = async move {
        let mut sum = Fnv::default();
        let mut sent = 0u64;
        let mut i = 0;
        while sent < total {
            let len = CHUNK.min((total - sent) as usize);
            let chunk = payload_chunk(i, len);
            sum.update(&chunk);
            send_all(&mut send, chunk).await.unwrap();
            sent += len as u64;
            i += 1;
        }
        send.send_data(Bytes::new(), true).unwrap();
        sum.0
    };
    let download = async move {
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut sum = Fnv::default();
        let mut got = 0u64;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            sum.update(&chunk);
            got += chunk.len() as u64;
        }
        (got, sum.0)
    };
    let (up, (got, down)) = futures_util::future::join(upload, download).await;
    assert_eq!(got, total);
    assert_eq!(up, down, "checksum of echoed bytes differs");
}
