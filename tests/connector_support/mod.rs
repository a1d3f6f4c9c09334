//! Test bed for the connector: a minimal in-test edge (TLS server + HTTP/2 *client* + capnp
//! RegistrationServer, speaking the edge side of spec §3 over loopback), the real `ringflare`
//! binary as a child process, and small blocking origins on std threads.
#![allow(dead_code)]

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use compio::net::TcpListener;
use compio::tls::TlsAcceptor;
use h2::client::SendRequest;
use ringflare::config::credentials::{Credentials, encode_token};
use ringflare::config::secret::Secret;
use ringflare::proto::headers::{RESPONSE_HEADERS, RESPONSE_META, deserialize_headers};
use ringflare::proto::{
    ConnectionDetails, ConnectionResponse, RegisterConnectionParams, RegistrationServer, RpcError,
    serve_registration,
};
use ringflare::runtime::h2io;
use ringflare::runtime::h2stream::{H2Reader, H2Writer, send_all};
use ringflare::tls::{EdgeCa, edge_server_config};
use uuid::Uuid;

thread_local! {
    static LAST_LOG: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

pub const TIMEOUT: Duration = Duration::from_secs(60);

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

pub fn token() -> String {
    encode_token(&Credentials {
        account_tag: "0123456789abcdef0123456789abcdef".into(),
        tunnel_secret: Secret::new(vec![9; 32]),
        tunnel_id: Uuid::parse_str("6ff42ae2-765d-4adf-8112-31c55c1551ef").unwrap(),
        endpoint: String::new(),
    })
}

/// The connector binary as a child process; killed on drop. stderr goes to `log`.
pub struct Connector {
    pub child: Child,
    pub log: PathBuf,
}

impl Connector {
    /// `tunnel_flags` come before `run`, `run_flags` after it.
    pub fn start(
        edge: &TestEdge,
        config: Option<&Path>,
        tunnel_flags: &[&str],
        run_flags: &[&str],
    ) -> Connector {
        let mut flags: Vec<String> = vec!["--ha-connections".into(), "1".into()];
        flags.extend(tunnel_flags.iter().map(|s| (*s).to_owned()));
        Connector::spawn(
            &[edge.addr()],
            &edge.ca,
            &token(),
            config,
            &flags,
            run_flags,
        )
    }

    /// Starts the binary against any edge addresses with the given token.
    pub fn spawn(
        edges: &[SocketAddr],
        ca: &Path,
        token: &str,
        config: Option<&Path>,
        tunnel_flags: &[String],
        run_flags: &[&str],
    ) -> Connector {
        Connector::spawn_env(edges, ca, token, config, tunnel_flags, run_flags, &[])
    }

    /// Like [`Connector::spawn`] with extra environment variables.
    pub fn spawn_env(
        edges: &[SocketAddr],
        ca: &Path,
        token: &str,
        config: Option<&Path>,
        tunnel_flags: &[String],
        run_flags: &[&str],
        env: &[(&str, &str)],
    ) -> Connector {
        // Logs live outside the edge's temp dir so a failing test can still print them.
        let logs = std::env::temp_dir().join("ringflare-test-logs");
        let _ = std::fs::create_dir_all(&logs);
        let log = logs.join(format!("connector-{}.log", Uuid::new_v4()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringflare"));
        cmd.arg("tunnel");
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        for e in edges {
            cmd.args(["--edge", &e.to_string()]);
        }
        cmd.arg("--cacert")
            .arg(ca)
            .args(["--metrics", "127.0.0.1:0"]);
        // The default `auto` starts on QUIC with a token, and TestEdge speaks only http2:
        // pass `--protocol http2` unless the test chose a protocol (`--protocol auto` too).
        if !tunnel_flags.iter().any(|f| f == "--protocol") {
            cmd.args(["--protocol", "http2"]);
        }
        cmd.args(tunnel_flags)
            .arg("run")
            .args(["--token", token])
            .args(run_flags)
            .env_remove("TUNNEL_TOKEN")
            .envs(env.iter().copied())
            .env("HOME", &logs)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        LAST_LOG.with(|l| *l.borrow_mut() = Some(log.clone()));
        Connector {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once `done` holds for it, or as it is after `limit`: the connector writes a
    /// line after the event the test observed (e.g. the registration reply reaches the edge
    /// before the connector logs it).
    pub fn log_when(&self, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let log = self.log_text();
            if done(&log) || std::time::Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// CPU seconds (user + system) the connector process used so far, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        // USER_HZ is 100 on Linux.
        Some(ticks / 100.0)
    }

    /// The metrics address from the `Starting metrics server on ...` line.
    pub fn metrics_addr(&self) -> Option<String> {
        let log = self.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("Starting metrics server on "))?;
        let rest = line.split("Starting metrics server on ").nth(1)?;
        Some(rest.trim_end_matches("/metrics").to_owned())
    }

    /// Polls for exit without blocking the async runtime; returns the exit code.
    pub async fn exited(&mut self, limit: Duration) -> Option<i32> {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            compio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Waits for exit with a bound; returns the exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- connector log ----\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP/1.1 origin on a std thread: answers each request with its method, path,
/// headers and body echoed back; counts accepted connections. Stops when the test process ends.
pub struct EchoOrigin {
    pub addr: SocketAddr,
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

pub fn echo_origin() -> EchoOrigin {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || serve_echo(stream));
        }
    });
    EchoOrigin { addr, connections }
}

/// Serves keep-alive requests on one connection until the peer closes it.
pub fn serve_echo<S: Read + Write>(stream: S) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_owned();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            headers.push(h);
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(length, 0);
            reader.read_exact(&mut body).unwrap();
        }
        let mut out = format!("{}\n", line.trim_end()).into_bytes();
        for h in &headers {
            out.extend_from_slice(h.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"\n");
        out.extend_from_slice(&body);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Origin: echo\r\nContent-Length: {}\r\n\r\n",
            out.len()
        );
        let w = reader.get_mut();
        if w.write_all(head.as_bytes()).is_err() || w.write_all(&out).is_err() {
            return;
        }
    }
}

/// A TCP echo origin (raw bytes back).
pub fn tcp_echo() -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

/// Runs `f` on a fresh compio runtime of `driver`, bounded by [`TIMEOUT`].
pub fn block_on<F: std::future::Future>(driver: ringflare::runtime::DriverKind, f: F) -> F::Output {
    let rt = ringflare::runtime::build_runtime(driver).unwrap();
    rt.block_on(async {
        match compio::time::timeout(TIMEOUT, f).await {
            Ok(v) => v,
            Err(_) => {
                let log = LAST_LOG
                    .with(|l| l.borrow().clone())
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_default();
                panic!("test did not finish in time; last connector log:\n{log}");
            }
        }
    })
}

/// A GET request to `path` on `host`.
pub fn get(host: &str, path: &str) -> http::Request<()> {
    http::Request::get(format!("https://{host}{path}"))
        .body(())
        .unwrap()
}

/// An origin that streams each request body straight back (same length) as it arrives, so
/// upload and download run at the same time; serves keep-alive requests.
pub fn streaming_echo_origin() -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::with_capacity(256 * 1024, stream);
                loop {
                    let mut length = 0u64;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = h.trim_end().to_ascii_lowercase();
                        if lower.is_empty() {
                            break;
                        }
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
                    if reader.get_mut().write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let mut left = length;
                    let mut buf = vec![0u8; 256 * 1024];
                    while left > 0 {
                        let want = buf.len().min(left as usize);
                        let n = match reader.read(&mut buf[..want]) {
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if reader.get_mut().write_all(&buf[..n]).is_err() {
                            return;
                        }
                        left -= n as u64;
                    }
                }
            });
        }
    });
    addr
}

/// FNV-1a over a byte stream, for end-to-end checksums without holding the data.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf29ce484222325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

/// Deterministic pseudo-random chunk `i` of a test payload.
pub fn payload_chunk(i: u64, len: usize) -> Bytes {
    let mut x = i.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
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

/// A blocking HTTP GET to the metrics server: (status line, body).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Polls `cond` every 10 ms, up to `limit`; true when it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        compio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}
