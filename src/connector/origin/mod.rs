//! Origins: dialing (TCP, unix sockets, TLS over either), the per-core keep-alive pool and the
//! HTTP/1.1 exchange ([`http`]). Each core owns its pool and TLS configs (`Rc`/`RefCell`, no
//! locks); an origin connection never leaves the core that dialled it.
//!
//! # Copies
//! Origin sockets are wrapped in compio's `AsyncStream` (`futures-io` over owned-buffer I/O):
//! the kernel fills that stream's buffer, and one copy moves bytes into the `BytesMut` the HTTP
//! decoder splits into `Bytes` for h2 (no further copy until h2/TLS framing). Writes copy request
//! bytes once into the stream's write buffer. With TLS, rustls' own buffers replace those copies.

pub mod h2;
pub mod http;
mod tls;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use compio::io::compat::AsyncStream;
use compio::net::{TcpStream, UnixStream};
use futures_util::io::{AsyncRead, AsyncWrite};

pub use tls::OriginTls;

use crate::runtime::{TcpTuning, apply_tuning};

/// Buffer of an origin socket's `AsyncStream`, per direction.
const STREAM_BUF: usize = 64 * 1024;

/// Any origin byte stream.
pub trait OriginIo: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> OriginIo for T {}

/// A connected origin stream.
pub type OriginStream = Box<dyn OriginIo>;

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
}

/// Opens a new connection to the origin.
pub async fn dial(d: &Dial, tls: &OriginTls) -> Result<OriginStream, DialError> {
    dial_alpn(d, tls).await.map(|(s, _)| s)
}

/// Opens a new connection; the flag says whether TLS negotiated HTTP/2.
pub async fn dial_alpn(d: &Dial, tls: &OriginTls) -> Result<(OriginStream, bool), DialError> {
    match &d.target {
        Target::Tcp { host, port } => {
            let addr = join(host, *port);
            let connect = TcpStream::connect((host.as_str(), *port));
            let tcp = match compio::time::timeout(d.connect_timeout, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => return Err(DialError::Connect { addr, source }),
                Err(_) => return Err(DialError::ConnectTimeout { addr }),
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
                None => Ok((
                    Box::new(Box::pin(AsyncStream::with_capacity(STREAM_BUF, tcp))),
                    false,
                )),
                Some(p) => tls.connect(tcp, p, d.tls_timeout, &addr).await,
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
                None => Ok((
                    Box::new(Box::pin(AsyncStream::with_capacity(STREAM_BUF, sock))),
                    false,
                )),
                Some(p) => tls.connect(sock, p, d.tls_timeout, path).await,
            }
        }
    }
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
    idle: RefCell<HashMap<PoolKey, Vec<Idle>>>,
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
