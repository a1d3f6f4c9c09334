//! Origins: dialing (TCP, unix sockets, TLS over either), the per-core keep-alive pool and the
//! HTTP/1.1 exchange ([`http`]). Each core owns its pool and TLS configs (`Rc`/`RefCell`, no
//! locks); an origin connection never leaves the core that dialled it.
//!
//! # Copies
//! Plain origins are bare compio sockets driven with owned buffers: the kernel writes straight
//! into the spare capacity of the `BytesMut` the HTTP decoder splits into `Bytes` for h2 (not
//! zeroed first, no copy), and request head and body `Bytes` go to the kernel as they are
//! (vectored for chunk framing). TLS origins are rustls driven over the socket with owned
//! buffers ([`OriginTlsIo`], `runtime::h2io::RustlsIo`): the kernel writes ciphertext into an
//! owned buffer (the core's provided-buffer pool while idle, so an idle or pooled TLS
//! connection holds no read buffer), rustls decrypts it and its plaintext is appended to the
//! decoder's `BytesMut` (never zeroed first); HTTP/2 origins hand that stream to `h2` directly.
//! No origin socket goes through a poll-style compatibility layer.

#![forbid(unsafe_code)]

pub mod h2;
pub mod http;
mod tls;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use compio::net::{TcpStream, UnixStream};

pub use tls::{OriginTls, OriginTlsIo};

use super::proxy_connect;
use super::proxy_env::ProxyUrl;
use crate::runtime::{TcpTuning, apply_tuning, read_pooled, send};

/// The most one idle read of a stream service's origin socket takes at a time (WebSocket-wrapped
/// TCP, private TCP, SOCKS, and a WebSocket upgrade's response head): such a read may wait for
/// hours and must not pin an HTTP-sized buffer meanwhile.
pub const STREAM_SERVICE_BUF: usize = 4 * 1024;

/// A connected origin stream: one concrete type, so a connection taken from the pool and
/// returned to it is the same value, never wrapped again (a `Box<dyn>` per check-in once made
/// every read recurse through one more layer per reuse).
///
/// Plain TCP and unix origins are the bare compio sockets, driven with owned buffers
/// ([`OriginRead`], [`OriginWrite`]); TLS origins are rustls over the socket with owned
/// buffers ([`OriginTlsIo`]). Either splits into halves and reunites into the same value.
pub enum OriginStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(TlsOrigin),
}

/// A TLS origin connection over TCP or a unix socket.
pub enum TlsOrigin {
    Tcp(Box<OriginTlsIo<TcpStream>>),
    Unix(Box<OriginTlsIo<UnixStream>>),
}

/// Runs `$e` with `$io` bound to the [`OriginTlsIo`] inside a [`TlsOrigin`], whatever its
/// socket.
macro_rules! with_tls {
    ($tls:expr, $io:ident => $e:expr) => {
        match $tls {
            TlsOrigin::Tcp($io) => $e,
            TlsOrigin::Unix($io) => $e,
        }
    };
}

impl OriginStream {
    /// Read and write halves that can be driven at once. A bare socket's halves are two
    /// handles of one descriptor (compio sockets are reference-counted); a TLS connection's
    /// halves share its rustls state on this core (`Rc`, borrowed only inside one poll).
    pub fn split(self) -> (OriginRead, OriginWrite) {
        match self {
            OriginStream::Tcp(s) => (OriginRead::Tcp(s.clone()), OriginWrite::Tcp(s)),
            OriginStream::Unix(s) => (OriginRead::Unix(s.clone()), OriginWrite::Unix(s)),
            OriginStream::Tls(t) => {
                let shared = Rc::new(RefCell::new(t));
                (OriginRead::Tls(shared.clone()), OriginWrite::Tls(shared))
            }
        }
    }
}

/// Puts the halves of a split connection back together for the pool: the result is the
/// connection itself, not a wrapper around it. `None` when the halves are of two connections.
pub fn reunite(rd: OriginRead, wr: OriginWrite) -> Option<OriginStream> {
    use std::os::fd::AsRawFd;
    match (rd, wr) {
        (OriginRead::Tcp(r), OriginWrite::Tcp(w)) => {
            (r.as_raw_fd() == w.as_raw_fd()).then_some(OriginStream::Tcp(w))
        }
        (OriginRead::Unix(r), OriginWrite::Unix(w)) => {
            (r.as_raw_fd() == w.as_raw_fd()).then_some(OriginStream::Unix(w))
        }
        (OriginRead::Tls(r), OriginWrite::Tls(w)) if Rc::ptr_eq(&r, &w) => {
            drop(r);
            Rc::into_inner(w).map(|t| OriginStream::Tls(t.into_inner()))
        }
        _ => None,
    }
}

/// The read half of an [`OriginStream`].
pub enum OriginRead {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Rc<RefCell<TlsOrigin>>),
}

/// The write half of an [`OriginStream`].
pub enum OriginWrite {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Rc<RefCell<TlsOrigin>>),
}

/// One read that appends at most `want` bytes to a `BytesMut`; 0 at EOF.
pub trait ReadInto {
    fn read_into(
        &mut self,
        buf: &mut BytesMut,
        want: usize,
    ) -> impl std::future::Future<Output = io::Result<usize>>;
}

/// Reads once with an owned buffer: the kernel writes into `buf`'s spare capacity (never
/// zeroed first), after the bytes already in it.
async fn owned_read<R: compio::io::AsyncRead>(
    r: &mut R,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<usize> {
    use compio::buf::{IntoInner, IoBuf};
    let mut owned = std::mem::take(buf);
    if owned.capacity() - owned.len() < want {
        owned.reserve(want);
    }
    let len = owned.len();
    // compio fills a buffer from its `buf_len()`: the slice begins at the current length.
    let compio::BufResult(res, slice) = r.read(owned.slice(len..len + want)).await;
    *buf = slice.into_inner();
    res
}

impl ReadInto for OriginRead {
    async fn read_into(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        #[cfg(test)]
        tests::probe();
        match self {
            OriginRead::Tcp(s) => owned_read(s, buf, want).await,
            OriginRead::Unix(s) => owned_read(s, buf, want).await,
            OriginRead::Tls(t) => {
                // Plaintext is appended straight from rustls' records; the borrow lasts one
                // poll, so the write half can run in between.
                std::future::poll_fn(|cx| {
                    let r = with_tls!(&mut *t.borrow_mut(), io => io.poll_read_into(cx, buf, want));
                    if r.is_pending() && buf.is_empty() {
                        // A read that has to wait holds no buffer of its own (idle upgraded
                        // streams, a slow origin's response).
                        *buf = BytesMut::new();
                    }
                    r
                })
                .await
            }
        }
    }
}

impl OriginRead {
    /// One read of at most `want` bytes, appended to `buf`, for a stream that may sit idle
    /// for hours (upgraded WebSockets, TCP streams): a bare socket reads into a buffer of the
    /// core's provided-buffer pool, which the kernel picks only when data has arrived
    /// (io_uring), and the bytes are copied out at once, so a waiting read holds no buffer of
    /// its own. Where the pool has no buffer free, and on the poll driver (whose fallback pool
    /// hands a buffer to a read when it starts, not when data arrives), it is
    /// [`ReadInto::read_into`].
    pub async fn read_idle(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        let take = |data: &[u8]| buf.extend_from_slice(data);
        let pooled = match self {
            OriginRead::Tcp(s) => read_pooled(s, want, take).await,
            OriginRead::Unix(s) => read_pooled(s, want, take).await,
            OriginRead::Tls(_) => None,
        };
        match pooled {
            Some(r) => r,
            // Boxed: the owned read's state is not part of every idle stream's task (an
            // allocation per read on the poll driver, or while the pool has none free).
            None => Box::pin(self.read_into(buf, want)).await,
        }
    }
}

/// An [`OriginRead`] read with [`OriginRead::read_idle`], at most [`STREAM_SERVICE_BUF`] at a
/// time: for reading a WebSocket upgrade's response head, which may take a while to come and
/// must not pin an HTTP-sized buffer per waiting upgrade meanwhile.
pub struct IdleRead<'a>(pub &'a mut OriginRead);

impl ReadInto for IdleRead<'_> {
    async fn read_into(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        self.0.read_idle(buf, want.min(STREAM_SERVICE_BUF)).await
    }
}

impl OriginWrite {
    /// Writes all of `data`; a bare socket gets the `Bytes` itself (no copy).
    pub async fn write_bytes(&mut self, data: Bytes) -> io::Result<()> {
        #[cfg(test)]
        tests::probe();
        match self {
            OriginWrite::Tcp(s) => send::write_all(s, data).await,
            OriginWrite::Unix(s) => send::write_all(s, data).await,
            OriginWrite::Tls(t) => tls_write_all(t, &data).await,
        }
    }

    /// Writes all of `bufs` in order, in one vectored write where the socket is bare.
    pub async fn write_vectored<const N: usize>(&mut self, bufs: [Bytes; N]) -> io::Result<()> {
        use compio::io::AsyncWriteExt as _;
        match self {
            OriginWrite::Tcp(s) => s.write_vectored_all(bufs).await.0,
            OriginWrite::Unix(s) => s.write_vectored_all(bufs).await.0,
            OriginWrite::Tls(t) => {
                for b in bufs {
                    tls_write_all(t, &b).await?;
                }
                Ok(())
            }
        }
    }

    /// Pushes buffered bytes to the socket and waits until the kernel has them all (bare
    /// sockets buffer nothing; a TLS connection's queued records go out).
    pub async fn flush(&mut self) -> io::Result<()> {
        use futures_util::io::AsyncWrite as _;
        match self {
            OriginWrite::Tcp(_) | OriginWrite::Unix(_) => Ok(()),
            OriginWrite::Tls(t) => {
                std::future::poll_fn(|cx| {
                    with_tls!(&mut *t.borrow_mut(), io => std::pin::Pin::new(&mut **io).poll_flush(cx))
                })
                .await
            }
        }
    }

    /// Ends the write direction (`shutdown(SHUT_WR)`, or TLS close_notify).
    pub async fn close(&mut self) -> io::Result<()> {
        use compio::io::AsyncWrite as _;
        match self {
            OriginWrite::Tcp(s) => s.shutdown().await,
            OriginWrite::Unix(s) => s.shutdown().await,
            OriginWrite::Tls(t) => {
                use futures_util::io::AsyncWrite as _;
                std::future::poll_fn(|cx| {
                    with_tls!(&mut *t.borrow_mut(), io => std::pin::Pin::new(&mut **io).poll_close(cx))
                })
                .await
            }
        }
    }
}

/// Writes all of `data` to a TLS origin: encrypted into rustls' queue, which goes to the
/// kernel as one owned write per flush (or whenever the queue is full).
async fn tls_write_all(t: &Rc<RefCell<TlsOrigin>>, data: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWrite as _;
    crate::runtime::h2io::write_all_with(data, |cx, data| {
        with_tls!(&mut *t.borrow_mut(), io => std::pin::Pin::new(&mut **io).poll_write(cx, data))
    })
    .await
}

/// Where an origin lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Tcp { host: String, port: u16 },
    Unix { path: String },
}

/// How to reach an origin: address, TLS, and the timeouts and keepalive of its rule.
#[derive(Debug, Clone)]
pub struct Dial {
    pub target: Target,
    /// SNI / verified name when TLS is used.
    pub tls: Option<TlsParams>,
    pub connect_timeout: Duration,
    pub tls_timeout: Duration,
    pub tcp_keep_alive: Duration,
}

/// The TLS side of a [`Dial`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsParams {
    pub server_name: String,
    pub ca_pool: String,
    pub no_verify: bool,
    /// `http2Origin`: offer h2 by ALPN.
    pub http2: bool,
}

/// The pool key: everything that makes two connections interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    target: Target,
    tls: Option<TlsParams>,
}

impl Dial {
    pub fn key(&self) -> PoolKey {
        PoolKey {
            target: self.target.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// Why an origin could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("dial tcp {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("dial tcp {addr}: i/o timeout")]
    ConnectTimeout { addr: String },
    #[error("TLS handshake with {addr}: {reason}")]
    Tls { addr: String, reason: String },
    /// Through `HTTP(S)_PROXY`: "proxyconnect tcp: ...", as Go's transport says.
    #[error("{0}")]
    Proxy(io::Error),
}

/// Opens a new connection to the origin.
pub async fn dial(d: &Dial, tls: &OriginTls) -> Result<OriginStream, DialError> {
    dial_alpn(d, tls).await.map(|(s, _)| s)
}

/// Opens a new connection; the flag says whether TLS negotiated HTTP/2.
pub async fn dial_alpn(d: &Dial, tls: &OriginTls) -> Result<(OriginStream, bool), DialError> {
    dial_sized(d, tls, true).await
}

/// Opens a connection for a stream service (WebSocket-wrapped TCP, private TCP): no TLS. The
/// socket is bare: such a stream may sit idle for hours, and an idle bare socket read with
/// [`OriginRead::read_idle`] holds no buffer. Never through an HTTP proxy (cloudflared dials
/// these directly).
pub async fn dial_stream(d: &Dial) -> Result<OriginStream, DialError> {
    dial_sized(d, &OriginTls::default(), false)
        .await
        .map(|(s, _)| s)
}

/// Opens a connection for a WebSocket upgrade (TLS as the rule says): it leaves HTTP once
/// upgraded and may then idle for hours; plain origins get a bare socket, as [`dial_stream`].
pub async fn dial_upgrade(d: &Dial, tls: &OriginTls) -> Result<OriginStream, DialError> {
    dial_sized(d, tls, true).await.map(|(s, _)| s)
}

/// The `HTTP_PROXY`/`HTTPS_PROXY` proxy an HTTP request to `d` goes through, if any.
fn http_proxy(d: &Dial) -> Option<&'static ProxyUrl> {
    let Target::Tcp { host, port } = &d.target else {
        return None;
    };
    let scheme = if d.tls.is_some() { "https" } else { "http" };
    proxy_connect::global().proxy_for(scheme, host, *port)
}

/// The proxy hook of the HTTP exchange: a plain-http request going through a proxy gets an
/// absolute-form target (`http://host:port/path`) and the proxy's credentials, as Go sends it.
/// `None` when the request goes straight to the origin; else the target and the
/// `Proxy-Authorization` value, if the proxy has credentials.
pub fn proxy_request(d: &Dial, target: &str) -> Option<(String, Option<Bytes>)> {
    let (Some(proxy), Target::Tcp { host, port }, None) = (http_proxy(d), &d.target, &d.tls) else {
        return None;
    };
    Some((
        format!("http://{}{target}", join(host, *port)),
        proxy_connect::authorization(proxy),
    ))
}

/// Plain origins are bare sockets; TLS ones are rustls over the socket ([`OriginTlsIo`]).
/// `proxied`: HTTP requests, which honour `HTTP(S)_PROXY`.
async fn dial_sized(
    d: &Dial,
    tls: &OriginTls,
    proxied: bool,
) -> Result<(OriginStream, bool), DialError> {
    match &d.target {
        Target::Tcp { host, port } => {
            let proxy = proxied.then(|| http_proxy(d)).flatten();
            let addr = join(host, *port);
            let tcp = match proxy {
                None => tcp_connect(d, host, *port).await?,
                Some(p) => via_proxy(d, p, host, *port).await?,
            };
            let keepalive = (!d.tcp_keep_alive.is_zero()).then_some(d.tcp_keep_alive);
            // Tuning failures only cost latency; the connection is still usable.
            let _ = apply_tuning(
                &tcp,
                TcpTuning {
                    nodelay: true,
                    keepalive,
                },
            );
            match &d.tls {
                // Plain sockets stay bare: the stream services read them with owned buffers
                // too ([`OriginRead::read_idle`]).
                None => Ok((OriginStream::Tcp(tcp), false)),
                Some(p) => {
                    let (s, h2) = tls.connect(tcp, p, d.tls_timeout, &addr).await?;
                    Ok((OriginStream::Tls(TlsOrigin::Tcp(Box::new(s))), h2))
                }
            }
        }
        Target::Unix { path } => {
            let connect = UnixStream::connect(path.as_str());
            let sock = match compio::time::timeout(d.connect_timeout, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => {
                    return Err(DialError::Connect {
                        addr: path.clone(),
                        source,
                    });
                }
                Err(_) => return Err(DialError::ConnectTimeout { addr: path.clone() }),
            };
            match &d.tls {
                None => Ok((OriginStream::Unix(sock), false)),
                Some(p) => {
                    let (s, h2) = tls.connect(sock, p, d.tls_timeout, path).await?;
                    Ok((OriginStream::Tls(TlsOrigin::Unix(Box::new(s))), h2))
                }
            }
        }
    }
}

async fn tcp_connect(d: &Dial, host: &str, port: u16) -> Result<TcpStream, DialError> {
    let addr = join(host, port);
    match compio::time::timeout(d.connect_timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(DialError::Connect { addr, source }),
        Err(_) => Err(DialError::ConnectTimeout { addr }),
    }
}

/// A connection to `proxy` carrying bytes for `host:port`: a CONNECT tunnel for TLS origins,
/// the bare proxy connection for plain http (whose requests then go in absolute form).
async fn via_proxy(
    d: &Dial,
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
) -> Result<TcpStream, DialError> {
    proxy_connect::supported(proxy).map_err(DialError::Proxy)?;
    let mut tcp = tcp_connect(d, &proxy.host, proxy.port)
        .await
        .map_err(|e| DialError::Proxy(proxy_connect::proxy_error(e)))?;
    if d.tls.is_some() {
        let connect = proxy_connect::tunnel(&mut tcp, host, port, proxy);
        match compio::time::timeout(d.connect_timeout, connect).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DialError::Proxy(e)),
            Err(_) => {
                let addr = join(&proxy.host, proxy.port);
                return Err(DialError::ConnectTimeout { addr });
            }
        }
    }
    Ok(tcp)
}

/// `net.JoinHostPort`.
pub fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An idle connection and when it went idle.
struct Idle {
    stream: OriginStream,
    since: Instant,
}

/// Idle keep-alive connections of one core, per origin.
#[derive(Default)]
pub struct Pool {
    /// foldhash: SipHash was ~1.4k instructions per request for two lookups of a key that
    /// comes from the configuration, not from a peer.
    idle: RefCell<HashMap<PoolKey, Vec<Idle>, foldhash::fast::RandomState>>,
}

impl Pool {
    /// The most recently used idle connection that has not timed out.
    pub fn checkout(&self, key: &PoolKey, idle_timeout: Duration) -> Option<OriginStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        // Expired connections are dropped (closed) here rather than by a timer.
        list.retain(|c| now.duration_since(c.since) < idle_timeout);
        list.pop().map(|c| c.stream)
    }

    /// Returns a reusable connection; beyond `max_idle` per origin it is closed instead.
    pub fn checkin(&self, key: PoolKey, stream: OriginStream, max_idle: usize) {
        if max_idle == 0 {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key).or_default();
        if list.len() >= max_idle {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            since: Instant::now(),
        });
    }

    /// Idle connections to `key` (tests and metrics).
    pub fn idle_count(&self, key: &PoolKey) -> usize {
        self.idle.borrow().get(key).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    //! The pool's return path keeps a connection's per-request work constant however often it
    //! is reused: the depth at which its socket is polled and the polls per request are measured
    //! over 1,000 reuses of one pooled loopback connection.

    use std::cell::Cell;
    use std::io::{Read, Write};

    use super::*;

    thread_local! {
        /// (polls, lowest stack address seen) since the last reset.
        static PROBE: Cell<(usize, usize)> = const { Cell::new((0, usize::MAX)) };
    }

    /// Called from every read and write poll of an [`OriginStream`].
    pub(super) fn probe() {
        let marker = 0u8;
        let depth = std::ptr::addr_of!(marker) as usize;
        PROBE.with(|p| {
            let (n, low) = p.get();
            p.set((n + 1, low.min(depth)));
        });
    }

    fn take_probe() -> (usize, usize) {
        PROBE.with(|p| p.replace((0, usize::MAX)))
    }

    const REUSES: usize = 1000;

    /// A keep-alive origin on loopback answering `REUSES` requests on one connection.
    fn origin() -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            for _ in 0..REUSES {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.clear();
                if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
        });
        addr
    }

    #[compio::test]
    async fn pooled_connection_costs_the_same_after_1000_reuses() {
        let addr = origin();
        let d = Dial {
            target: Target::Tcp {
                host: "127.0.0.1".into(),
                port: addr.port(),
            },
            tls: None,
            connect_timeout: Duration::from_secs(5),
            tls_timeout: Duration::from_secs(5),
            tcp_keep_alive: Duration::ZERO,
        };
        let pool = Pool::default();
        let key = d.key();
        let mut first = None;
        let mut last = (0, 0);
        for i in 0..REUSES {
            let stream = match pool.checkout(&key, Duration::from_secs(60)) {
                Some(s) => s,
                None => {
                    assert_eq!(i, 0, "the pooled connection was lost at request {i}");
                    dial(&d, &OriginTls::default()).await.unwrap()
                }
            };
            let (mut rd, mut wr) = stream.split();
            take_probe();
            wr.write_bytes(Bytes::from_static(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
                .await
                .unwrap();
            wr.flush().await.unwrap();
            let mut resp = BytesMut::new();
            while resp.len() < 40 {
                let want = 40 - resp.len();
                let n = rd.read_into(&mut resp, want).await.unwrap();
                assert!(n > 0, "origin closed");
            }
            assert!(resp.ends_with(b"ok"));
            let sample = take_probe();
            // The same path the proxy takes to return a connection.
            let stream = reunite(rd, wr).expect("halves of one connection");
            pool.checkin(key.clone(), stream, 4);
            if i == 1 {
                first = Some(sample);
            }
            last = sample;
        }
        let (first_polls, first_depth) = first.unwrap();
        let (last_polls, last_depth) = last;
        assert!(
            last_polls <= first_polls + 2,
            "polls per request grew with reuse: {first_polls} -> {last_polls}"
        );
        // A wrapper added per reuse would put the socket 1,000 frames deeper on the stack.
        assert!(
            first_depth.abs_diff(last_depth) < 4096,
            "the socket is polled deeper after {REUSES} reuses: {first_depth:#x} -> {last_depth:#x}"
        );
        assert_eq!(pool.idle_count(&key), 1);
    }

    /// A keep-alive https origin on loopback answering every request on its connections; the
    /// counter says how many connections it accepted.
    fn tls_origin(
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let config = config.clone();
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut s = rustls::StreamOwned::new(conn, s);
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(resp).and_then(|()| s.flush()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// An https origin connection goes back to the pool and serves the next requests (one TLS
    /// connection for all of them), and while it sits there it holds no ciphertext read buffer
    /// (rustls over owned buffers, the buffer released once drained). Both io drivers.
    #[test]
    fn https_origin_is_pooled_and_idles_without_a_read_buffer() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::tls::EdgeCa::load_or_create(dir.path()).unwrap();
        let (addr, accepted) = tls_origin(crate::tls::edge_server_config(&ca).unwrap());
        for driver in [
            crate::runtime::DriverKind::IoUring,
            crate::runtime::DriverKind::Poll,
        ] {
            let Ok(rt) = crate::runtime::build_runtime(driver) else {
                // No io_uring here (blocked by the sandbox): the poll pass still runs.
                continue;
            };
            let before = accepted.load(Ordering::SeqCst);
            rt.block_on(async {
                let d = Dial {
                    target: Target::Tcp {
                        host: "127.0.0.1".into(),
                        port: addr.port(),
                    },
                    tls: Some(TlsParams {
                        server_name: "origin.test".into(),
                        ca_pool: String::new(),
                        no_verify: true,
                        http2: false,
                    }),
                    connect_timeout: Duration::from_secs(5),
                    tls_timeout: Duration::from_secs(5),
                    tcp_keep_alive: Duration::ZERO,
                };
                let tls = OriginTls::default();
                let pool = Pool::default();
                let key = d.key();
                for i in 0..20 {
                    let stream = match pool.checkout(&key, Duration::from_secs(60)) {
                        Some(s) => s,
                        None => {
                            assert_eq!(i, 0, "{driver:?}: the pooled connection was lost at {i}");
                            dial(&d, &tls).await.unwrap()
                        }
                    };
                    let (mut rd, mut wr) = stream.split();
                    wr.write_bytes(Bytes::from_static(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
                        .await
                        .unwrap();
                    wr.flush().await.unwrap();
                    let mut resp = BytesMut::new();
                    while resp.len() < 40 {
                        let want = 40 - resp.len();
                        let n = rd.read_into(&mut resp, want).await.unwrap();
                        assert!(n > 0, "{driver:?}: origin closed");
                    }
                    assert!(resp.ends_with(b"ok"), "{driver:?}: {resp:?}");
                    let stream = reunite(rd, wr).expect("halves of one connection");
                    let OriginStream::Tls(TlsOrigin::Tcp(io)) = &stream else {
                        panic!("{driver:?}: an https origin is not a TLS stream");
                    };
                    assert_eq!(
                        io.read_buf_capacity(),
                        0,
                        "{driver:?}: an idle TLS origin connection holds a read buffer"
                    );
                    pool.checkin(key.clone(), stream, 4);
                }
                assert_eq!(pool.idle_count(&key), 1);
            });
            assert_eq!(
                accepted.load(Ordering::SeqCst) - before,
                1,
                "{driver:?}: 20 requests took more than one TLS connection"
            );
        }
    }
}
