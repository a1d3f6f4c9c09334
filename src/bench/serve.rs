//! `ringflare bench serve`: the trivial origin every benchmark is measured against.
//!
//! Thread-per-core like the rest of ringflare: each worker binds its own `SO_REUSEPORT`
//! listener and serves keep-alive HTTP/1.1 with [`crate::http1`]. Routes:
//! - `GET /bytes/N`: N bytes (`x`), streamed from a static buffer, so 1 GiB allocates nothing;
//! - `POST|PUT /upload`: reads the body and answers `{"bytes":N,"sum":S}` (S = the sum of all
//!   body bytes modulo 2^64, a checksum any client can recompute);
//! - `GET /ws` with an upgrade: WebSocket echo of every data frame;
//! - anything else: 404.
//!
//! With `--tcp-listen` a raw TCP echo listener runs beside it. It never logs per request.

use std::net::SocketAddr;
use std::num::NonZeroUsize;

use bytes::{Buf, BytesMut};
use compio::BufResult;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use socket2::{Domain, Socket, Type};

use crate::http1::{BodyDecoder, BodyEvent, RequestHead, parse_request_head};
use crate::runtime::{IoDriver, WorkerConfig, WorkerCtx, Workers, bind_reuseport};

use super::io::read_append;
use super::ws;

/// Response bodies are cut from this static buffer.
static FILL: [u8; 256 * 1024] = [b'x'; 256 * 1024];
/// Per-connection read buffer.
const READ_BUF: usize = 128 * 1024;

/// What `bench serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// HTTP listen address (port 0 picks a free port, shared by every worker).
    pub listen: SocketAddr,
    /// Raw TCP echo listen address, if wanted.
    pub tcp_listen: Option<SocketAddr>,
    /// Worker threads (default: one per core).
    pub threads: Option<NonZeroUsize>,
    /// I/O driver.
    pub io_driver: IoDriver,
    /// Pin workers to cores.
    pub pin: bool,
}

/// A running origin; dropping it stops the workers.
pub struct Origin {
    /// The HTTP address actually bound.
    pub http: SocketAddr,
    /// The TCP echo address actually bound.
    pub tcp: Option<SocketAddr>,
    /// The worker pool.
    pub workers: Workers<()>,
    /// Held so a port-0 address stays reserved until every worker has bound it.
    _reservations: Vec<Socket>,
}

/// Reserves `addr` (resolving port 0) with `SO_REUSEPORT` and without listening, so the
/// workers' listeners can share the port and no connection lands on this socket.
fn reserve(addr: SocketAddr) -> std::io::Result<(Socket, SocketAddr)> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    let bound = s
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an inet socket"))?;
    Ok((s, bound))
}

/// Starts the origin's workers.
pub fn start(cfg: &ServeConfig) -> Result<Origin, String> {
    let (http_res, http) =
        reserve(cfg.listen).map_err(|e| format!("binding {}: {e}", cfg.listen))?;
    let mut reservations = vec![http_res];
    let tcp = match cfg.tcp_listen {
        Some(a) => {
            let (s, bound) = reserve(a).map_err(|e| format!("binding {a}: {e}"))?;
            reservations.push(s);
            Some(bound)
        }
        None => None,
    };
    let config = WorkerConfig {
        threads: cfg.threads,
        io_driver: cfg.io_driver,
        no_pinning: !cfg.pin,
    };
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let workers = Workers::spawn(config, move |ctx: WorkerCtx| {
        worker(ctx, http, tcp, bound_tx.clone())
    })
    .map_err(|e| format!("starting origin workers: {e}"))?;
    // Workers bind inside their runtimes; report "listening" only once every one has, or a
    // client racing the announcement would hit the non-listening reservation and be refused.
    for _ in 0..workers.len() {
        match bound_rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("origin workers did not bind their listeners in time".into()),
        }
    }
    Ok(Origin {
        http,
        tcp,
        workers,
        _reservations: reservations,
    })
}

async fn worker(
    ctx: WorkerCtx,
    http: SocketAddr,
    tcp: Option<SocketAddr>,
    bound: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let listener = match bind_reuseport(http) {
        Ok(l) => l,
        Err(e) => {
            let _ = bound.send(Err(format!("bench serve worker {}: {e}", ctx.index)));
            return;
        }
    };
    if let Some(addr) = tcp {
        match bind_reuseport(addr) {
            Ok(l) => compio::runtime::spawn(accept_loop(l, tcp_echo)).detach(),
            Err(e) => {
                let _ = bound.send(Err(format!("bench serve worker {}: {e}", ctx.index)));
                return;
            }
        }
    }
    let _ = bound.send(Ok(()));
    let stop = ctx.stop.clone();
    futures_util::future::select(
        Box::pin(accept_loop(listener, http_connection)),
        Box::pin(stop.stopped()),
    )
    .await;
}

async fn accept_loop<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                compio::runtime::spawn(handler(stream)).detach();
            }
            // EMFILE and friends: back off briefly instead of spinning.
            Err(_) => compio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
}

/// Serves keep-alive HTTP/1.1 requests until the client closes or errs.
async fn http_connection(mut stream: TcpStream) {
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let mut out = BytesMut::with_capacity(4096);
    loop {
        let head = match read_head(&mut stream, buf).await {
            (Ok(Some(h)), b) => {
                buf = b;
                h
            }
            (Ok(None), _) => return,
            (Err(()), _) => {
                let _ = stream.write_all(&b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..]).await;
                return;
            }
        };
        if head.is_websocket_upgrade() && head.target.as_ref() == b"/ws" {
            ws_echo(stream, buf, &head).await;
            return;
        }
        let keep_alive = head.keep_alive();
        let (res, b, o) = respond(&mut stream, &head, buf, out).await;
        (buf, out) = (b, o);
        if res.is_err() || !keep_alive {
            return;
        }
    }
}

/// Reads until a request head is parsed; `Ok(None)` on a clean close between requests.
async fn read_head(
    stream: &mut TcpStream,
    mut buf: BytesMut,
) -> (Result<Option<RequestHead>, ()>, BytesMut) {
    loop {
        match parse_request_head(&mut buf) {
            Ok(Some(h)) => return (Ok(Some(h)), buf),
            Ok(None) => {}
            Err(_) => return (Err(()), buf),
        }
        let (n, b) = read_more(stream, buf).await;
        buf = b;
        match n {
            Some(0) if buf.is_empty() => return (Ok(None), buf),
            Some(0) | None => return (Err(()), buf),
            Some(_) => {}
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: BytesMut) -> (Option<usize>, BytesMut) {
    let (res, b) = read_append(stream, buf, READ_BUF / 4).await;
    (res.ok(), b)
}

/// Reads the request body, counting bytes and summing them; `None` on a broken body.
async fn drain_body(
    stream: &mut TcpStream,
    head: &RequestHead,
    mut buf: BytesMut,
) -> (Option<(u64, u64)>, BytesMut) {
    let Ok(framing) = head.body_framing() else {
        return (None, buf);
    };
    let mut decoder = BodyDecoder::new(framing);
    let (mut bytes, mut sum) = (0u64, 0u64);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(BodyEvent::Data(d))) => {
                bytes += d.len() as u64;
                sum = d.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
            }
            Ok(Some(BodyEvent::End { .. })) => return (Some((bytes, sum)), buf),
            Ok(None) => {
                let (n, b) = read_more(stream, buf).await;
                buf = b;
                if !matches!(n, Some(1..)) {
                    return (None, buf);
                }
            }
            Err(_) => return (None, buf),
        }
    }
}

/// Routes one request and writes its response.
async fn respond(
    stream: &mut TcpStream,
    head: &RequestHead,
    buf: BytesMut,
    mut out: BytesMut,
) -> (Result<(), ()>, BytesMut, BytesMut) {
    let (body, buf) = drain_body(stream, head, buf).await;
    let Some((bytes, sum)) = body else {
        return (Err(()), buf, out);
    };
    let path = head.target.as_ref();
    out.clear();
    let res = if let Some(n) = path.strip_prefix(b"/bytes/").and_then(parse_len) {
        out.extend_from_slice(format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n").as_bytes());
        send_bytes(stream, out, n).await
    } else if path == b"/upload" {
        let body = format!("{{\"bytes\":{bytes},\"sum\":{sum}}}");
        out.extend_from_slice(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
        write(stream, out).await
    } else {
        out.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        write(stream, out).await
    };
    let (r, out) = res;
    (r, buf, out)
}

fn parse_len(s: &[u8]) -> Option<u64> {
    let s = s.split(|b| *b == b'?').next().unwrap_or_default();
    std::str::from_utf8(s).ok()?.parse().ok()
}

async fn write(stream: &mut TcpStream, out: BytesMut) -> (Result<(), ()>, BytesMut) {
    let BufResult(res, out) = stream.write_all(out).await;
    (res.map_err(|_| ()), out)
}

/// Writes the head in `out`, then `n` body bytes; small bodies go in the same write.
async fn send_bytes(
    stream: &mut TcpStream,
    mut out: BytesMut,
    n: u64,
) -> (Result<(), ()>, BytesMut) {
    let inline = n.min((16 * 1024) as u64) as usize;
    out.extend_from_slice(&FILL[..inline]);
    let (res, out) = write(stream, out).await;
    let mut remaining = n - inline as u64;
    if res.is_err() {
        return (res, out);
    }
    while remaining > 0 {
        let k = remaining.min(FILL.len() as u64) as usize;
        let BufResult(r, _) = stream.write_all(&FILL[..k]).await;
        if r.is_err() {
            return (Err(()), out);
        }
        remaining -= k as u64;
    }
    (Ok(()), out)
}

/// Answers the upgrade, then echoes every data frame unmasked until close or error.
async fn ws_echo(mut stream: TcpStream, mut buf: BytesMut, head: &RequestHead) {
    let key = head
        .values(&http::header::SEC_WEBSOCKET_KEY)
        .next()
        .map(|k| ws::accept_key(k))
        .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {key}\r\n\r\n"
    );
    if stream.write_all(resp.into_bytes()).await.0.is_err() {
        return;
    }
    let mut out = BytesMut::with_capacity(4096);
    loop {
        let h = match ws::parse_head(&buf) {
            Ok(Some(h)) if buf.len() as u64 >= h.head_len as u64 + h.len => h,
            Ok(_) => {
                let (n, b) = read_more(&mut stream, buf).await;
                buf = b;
                if !matches!(n, Some(1..)) {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        buf.advance(h.head_len);
        // Bounded by ws::MAX_PAYLOAD, checked in parse_head.
        let mut payload = buf.split_to(h.len as usize);
        if let Some(k) = h.mask {
            ws::apply_mask(&mut payload, k, 0);
        }
        let opcode = match h.opcode {
            ws::OP_PING => ws::OP_PONG,
            ws::OP_PONG => continue,
            op => op,
        };
        out.clear();
        ws::encode_frame(opcode, &payload, None, &mut out);
        let BufResult(res, o) = stream.write_all(out).await;
        out = o;
        if res.is_err() || opcode == ws::OP_CLOSE {
            return;
        }
    }
}

/// Raw TCP echo: writes back whatever arrives.
async fn tcp_echo(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(READ_BUF);
    loop {
        buf.clear();
        let BufResult(res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let BufResult(res, b) = stream.write_all(buf).await;
        buf = b;
        if res.is_err() {
            return;
        }
    }
}
