//! The eyeball side: HTTP/1.1 (keep-alive) from visitors, forwarded as HTTP/2 streams over
//! a registered connector connection (spec §3.4, §3.6, §11 C).
//!
//! Per request: parse the head (`http1`), route by Host, translate to an h2 request with
//! the headers Cloudflare adds, then stream the request body up and the response body down
//! concurrently (so an echoing origin never deadlocks on flow control), rebuilding the
//! response from `cf-cloudflared-response-headers`. Memory per request is bounded by one
//! read buffer, one DATA frame and h2's windows. WebSocket upgrades become a
//! `cf-cloudflared-proxy-connection-upgrade: websocket` stream spliced both ways.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::{cell::RefCell, io, net::SocketAddr, pin::pin, rc::Rc, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use compio::buf::{BufResult, IntoInner, IoBufMut};
use compio::net::TcpListener;
use futures_util::FutureExt;
use futures_util::future::{Either, select};
use futures_util::io::AsyncWrite as FuturesWrite;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use super::pages::{self, ErrorPage};
use super::registry::{Ray, RouteError, Shared};
use super::stream::{self, OpenError, Pending, TunnelResponse, Up};
use super::tunnel::TaskCount;
use crate::http1::{
    BodyDecoder, BodyEvent, BodyFraming, Header, RequestHead, ResponseHead, Version,
    encode_last_chunk, parse_request_head,
};
use crate::proto::headers::{PROXY_CONNECTION_UPGRADE, UPGRADE_WEBSOCKET};
use crate::runtime::{StopSignal, h2io, relay, send};

/// The most bytes read from the eyeball socket at once while a body streams (reads start at
/// [`HEAD_CHUNK`] and double while they come back full). Each read is one DATA frame toward
/// the connector, so a bulk upload costs a quarter of the reads, frames and TLS writes per
/// GB that 64 KiB reads cost, on both sides of the tunnel.
const READ_CHUNK: usize = 256 * 1024;
/// Read size while waiting for a request head: most heads fit, an idle or slow connection
/// holds no more than this (a bigger head grows the buffer in steps of this size).
const HEAD_CHUNK: usize = 4 * 1024;
/// An idle keep-alive connection is closed after this long without a new request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
// Per-connection memory (issue 10 item 6): at rest (idle keep-alive or a slow head) at most
// one [`HEAD_CHUNK`] read buffer (and the head bytes received so far, bounded by the head
// parser's limit) and an empty write queue; the read buffer is released after each request.
// A TLS connection adds its rustls buffers. In flight: one [`READ_CHUNK`] read buffer, the
// write queue (under [`WRITE_BATCH`] bytes of response chunks plus the frame that filled
// it) and h2's stream windows.

/// After the response is complete, how long the rest of an unread request body may take.
const BODY_AFTER_RESPONSE: Duration = Duration::from_secs(10);
/// Connections tried when opening a stream fails before anything was sent.
const OPEN_ATTEMPTS: usize = 3;
/// After one direction of a websocket ends, how long the other may continue.
const WS_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Accepts eyeballs on one core's listener until stop.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: StopSignal,
    tasks: Rc<TaskCount>,
    listener_index: usize,
) {
    loop {
        let accepted = {
            let accept = pin!(listener.accept());
            let stopped = pin!(stop.stopped());
            match select(accept, stopped).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => return,
            }
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                log::warn!(error:% = e; "Accepting an eyeball connection failed");
                compio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = ConnSlot::take(&shared, listener_index) else {
            log::debug!(peer:% = peer; "Eyeball connection refused: connection limit reached");
            refuse(tcp, tls.is_some()).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let stop = stop.clone();
        let guard = tasks.enter_guard();
        let tls = tls.clone();
        // Homed: this task waits on tunnel connections owned by other cores (runtime::relay).
        compio::runtime::spawn(relay::homed(async move {
            let _guard = guard;
            let _slot = slot;
            match tls {
                None => {
                    // Owned-buffer I/O both ways: reads go straight into the connection's
                    // buffer, writes hand the response's own chunks to the kernel.
                    let rd = TcpReader::new(tcp.clone());
                    let wr = TcpWriter::new(tcp);
                    super::until_stopped(&stop, serve(shared, rd, wr, peer, "http")).await;
                }
                Some(config) => {
                    let limit = shared.handshake_timeout;
                    let work = async {
                        match compio::time::timeout(limit, h2io::tls_accept_lean(tcp, config)).await
                        {
                            Ok(Ok(io)) => {
                                // Both halves drive the one rustls connection on this core.
                                let io = Rc::new(RefCell::new(io));
                                let (rd, wr) = (TlsReader(io.clone()), TlsWriter(io));
                                serve(shared.clone(), rd, wr, peer, "https").await
                            }
                            Ok(Err(e)) => {
                                log::debug!(peer:% = peer, error:% = e; "Eyeball TLS handshake failed");
                            }
                            Err(_) => {
                                log::debug!(peer:% = peer; "Eyeball TLS handshake timed out");
                            }
                        }
                    };
                    super::until_stopped(&stop, work).await;
                }
            }
        }))
        .detach();
    }
}

/// One open connection counted against its listener's cap; released on drop.
struct ConnSlot {
    shared: Arc<Shared>,
    index: usize,
}

impl ConnSlot {
    fn take(shared: &Arc<Shared>, index: usize) -> Option<ConnSlot> {
        let open = shared.eyeball_open.get(index)?;
        let max = shared.max_eyeball_connections;
        open.fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .ok()?;
        Some(ConnSlot {
            shared: shared.clone(),
            index,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(open) = self.shared.eyeball_open.get(self.index) {
            open.fetch_sub(1, Relaxed);
        }
    }
}

/// Refuses a connection over the cap: a plain one gets a bare 503 (bounded by a short
/// timeout, never waiting on the visitor), a TLS one is closed.
async fn refuse(mut tcp: compio::net::TcpStream, tls: bool) {
    if !tls {
        const BUSY: &[u8] =
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let write = compio::io::AsyncWriteExt::write_all(&mut tcp, BUSY);
        let _ = compio::time::timeout(Duration::from_millis(100), write).await;
    }
    drop(tcp);
}

/// Serves one eyeball connection (plain or TLS) until it closes.
pub(crate) async fn serve<R, W>(
    shared: Arc<Shared>,
    rd: R,
    wr: W,
    peer: SocketAddr,
    scheme: &'static str,
) where
    R: EyeballRead,
    W: EyeballWrite,
{
    let mut conn = Eyeball {
        shared,
        rd,
        wr,
        buf: BytesMut::new(),
        peer,
        scheme,
    };
    let head_limit = conn.shared.eyeball_head_timeout;
    let mut first = true;
    loop {
        // Wait for the first byte of the next request (a new connection gets the head
        // timeout for it, a keep-alive one the idle timeout), then the whole head must arrive
        // within the head timeout: a slowloris visitor is closed, not waited for.
        if conn.buf.is_empty() {
            let idle = if first { head_limit } else { IDLE_TIMEOUT };
            match compio::time::timeout(idle, read_more(&mut conn.rd, &mut conn.buf, HEAD_CHUNK))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
        first = false;
        let head = match compio::time::timeout(head_limit, conn.read_head()).await {
            Err(_) => {
                log::debug!(peer:% = peer; "Eyeball request head timed out");
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(head))) => head,
            Ok(Err(e)) => {
                log::debug!(peer:% = peer, error:% = e; "Bad request from eyeball");
                let page = ErrorPage {
                    status: e.status(),
                    ..pages::BAD_REQUEST
                };
                let ray = conn.shared.next_ray();
                let _ = conn
                    .write_page(&page, "", &ray, false, Version::Http11)
                    .await;
                break;
            }
        };
        if !conn.exchange(head).await {
            break;
        }
        if conn.buf.is_empty() {
            // Nothing pipelined: give the read buffer back while the connection idles.
            conn.buf = BytesMut::new();
        }
    }
    let _ = conn.wr.close().await;
}

/// One eyeball connection's state.
struct Eyeball<R, W> {
    shared: Arc<Shared>,
    rd: R,
    wr: W,
    /// Bytes read from the eyeball and not yet consumed (pipelined requests included).
    buf: BytesMut,
    peer: SocketAddr,
    scheme: &'static str,
}

/// Reads up to `chunk` more bytes from `rd` into `buf`; 0 at EOF.
async fn read_more<R: EyeballRead>(
    rd: &mut R,
    buf: &mut BytesMut,
    chunk: usize,
) -> io::Result<usize> {
    rd.read_more(buf, chunk).await
}

/// The eyeball's read side: appends what arrives to the connection's buffer.
pub(crate) trait EyeballRead {
    /// Reads about `chunk` more bytes (at most [`READ_CHUNK`]) into `buf`; 0 at EOF.
    async fn read_more(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize>;
}

/// Plain TCP, read with compio's owned-buffer API into the spare capacity of the
/// connection's buffer: nothing is zeroed and nothing is copied after the kernel. Heads are
/// read [`HEAD_CHUNK`] at a time; a body's reads start there and double (up to
/// [`READ_CHUNK`]) only while they come back full, so a small request never holds a large
/// buffer.
pub(crate) struct TcpReader {
    tcp: compio::net::TcpStream,
    body_chunk: usize,
}

impl TcpReader {
    pub(crate) fn new(tcp: compio::net::TcpStream) -> Self {
        Self {
            tcp,
            body_chunk: HEAD_CHUNK,
        }
    }
}

impl EyeballRead for TcpReader {
    async fn read_more(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        let body = chunk > HEAD_CHUNK;
        let want = if body { self.body_chunk } else { chunk };
        let mut owned = std::mem::take(buf);
        owned.reserve(want);
        let before = owned.len();
        // If this future is dropped mid-read (a timeout), the connection is being closed,
        // so losing the buffered bytes with it is fine.
        // `uninit()`: the kernel appends after the bytes already buffered (a plain `read`
        // would write from offset 0).
        let BufResult(result, owned) =
            compio::io::AsyncRead::read(&mut self.tcp, owned.uninit()).await;
        let owned = owned.into_inner();
        let n = owned.len() - before;
        *buf = owned;
        let n = result.map(|_| n)?;
        if body {
            self.body_chunk = if n >= want {
                (want * 2).min(READ_CHUNK)
            } else {
                HEAD_CHUNK
            };
        }
        Ok(n)
    }
}

/// An HTTPS eyeball's rustls connection, shared by its read and write halves on this core
/// (borrowed only inside one poll).
type SharedTls = Rc<RefCell<h2io::ServerTlsIo>>;

/// The TLS eyeball side's reads: decrypted records appended to the connection's buffer
/// (nothing zeroed, no read buffer while the connection waits).
pub(crate) struct TlsReader(SharedTls);

impl EyeballRead for TlsReader {
    async fn read_more(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        let want = chunk.min(READ_CHUNK);
        std::future::poll_fn(|cx| self.0.borrow_mut().poll_read_into(cx, buf, want)).await
    }
}

/// Queued response chunks are written out once they add up to this many bytes, even before
/// a flush: what a connection holds beyond h2's stream window is bounded by it.
const WRITE_BATCH: usize = 64 * 1024;
/// At most this many chunks are queued (one `writev` entry each).
const WRITE_QUEUE_CHUNKS: usize = 16;

/// The eyeball's write side. A response's head and the DATA frames h2 hands over are queued
/// as they are (owned `Bytes`, nothing copied) and go to the kernel together at `flush`, so
/// a small response is one `writev` of its head and body, and a bulk download one write per
/// frame.
pub(crate) trait EyeballWrite {
    /// Queues `chunk`; writes the queue out once it holds [`WRITE_BATCH`] bytes or
    /// [`WRITE_QUEUE_CHUNKS`] chunks.
    async fn write(&mut self, chunk: Bytes) -> io::Result<()>;
    /// Writes out everything queued.
    async fn flush(&mut self) -> io::Result<()>;
    /// Flushes, then ends the write direction.
    async fn close(&mut self) -> io::Result<()>;
}

/// Plain TCP, written with compio's owned-buffer API: the queued chunks themselves are the
/// `writev` entries. At rest it holds an empty queue (at most [`WRITE_QUEUE_CHUNKS`] slots of
/// capacity), no byte buffer.
pub(crate) struct TcpWriter {
    tcp: compio::net::TcpStream,
    queue: Vec<Bytes>,
    queued: usize,
}

impl TcpWriter {
    pub(crate) fn new(tcp: compio::net::TcpStream) -> Self {
        Self {
            tcp,
            queue: Vec::new(),
            queued: 0,
        }
    }
}

impl EyeballWrite for TcpWriter {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.queued += chunk.len();
        self.queue.push(chunk);
        if self.queued >= WRITE_BATCH || self.queue.len() >= WRITE_QUEUE_CHUNKS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.queued = 0;
        if self.queue.len() == 1 {
            let one = self.queue.pop().unwrap_or_default();
            return send::write_all(&mut self.tcp, one).await;
        }
        if self.queue.is_empty() {
            return Ok(());
        }
        // If this future is dropped mid-write the connection is being closed (as for reads).
        let queue = std::mem::take(&mut self.queue);
        let (result, queue) = send::write_vectored_all(&mut self.tcp, queue).await;
        self.queue = queue;
        result
    }

    async fn close(&mut self) -> io::Result<()> {
        self.flush().await?;
        compio::io::AsyncWrite::shutdown(&mut self.tcp).await
    }
}

/// The TLS eyeball side's writes: each chunk is encrypted into rustls' queue, which goes to
/// the kernel as one owned write per flush (or whenever the queue fills); a flush returns
/// once the kernel has every byte, as the eyeball code expects of it.
pub(crate) struct TlsWriter(SharedTls);

impl EyeballWrite for TlsWriter {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        h2io::write_all_with(&chunk, |cx, data| {
            FuturesWrite::poll_write(std::pin::Pin::new(&mut *self.0.borrow_mut()), cx, data)
        })
        .await
    }

    async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            FuturesWrite::poll_flush(std::pin::Pin::new(&mut *self.0.borrow_mut()), cx)
        })
        .await
    }

    async fn close(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            FuturesWrite::poll_close(std::pin::Pin::new(&mut *self.0.borrow_mut()), cx)
        })
        .await
    }
}

/// Connection-specific request headers HTTP/2 forbids, plus `host` (it becomes
/// `:authority`) and names the edge itself sets.
fn dropped_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "cf-connecting-ip"
            | "cf-ray"
            | "cf-visitor"
            | "x-forwarded-proto"
            | "cdn-loop"
            | "expect"
    ) || name.as_str().starts_with("cf-cloudflared-")
}

/// Hop-by-hop response headers that must not be repeated to the eyeball.
fn dropped_response_header(name: &str, upgrade: bool) -> bool {
    match name {
        "connection" | "upgrade" => !upgrade,
        "keep-alive" | "proxy-connection" | "transfer-encoding" | "te" => true,
        _ => false,
    }
}

impl<R: EyeballRead, W: EyeballWrite> Eyeball<R, W> {
    async fn read_head(&mut self) -> Result<Option<RequestHead>, crate::http1::Http1Error> {
        loop {
            if !self.buf.is_empty()
                && let Some(head) = parse_request_head(&mut self.buf)?
            {
                return Ok(Some(head));
            }
            match read_more(&mut self.rd, &mut self.buf, HEAD_CHUNK).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    /// Handles one request; true when the connection may carry another.
    async fn exchange(&mut self, head: RequestHead) -> bool {
        let ray = self.shared.next_ray();
        let framing = match head.body_framing() {
            Ok(f) => f,
            Err(e) => {
                let page = ErrorPage {
                    status: e.status(),
                    ..pages::BAD_REQUEST
                };
                let _ = self.write_page(&page, "", &ray, false, head.version).await;
                return false;
            }
        };
        let has_body = framing != BodyFraming::Empty;
        let keep_alive = head.keep_alive();
        let Some(authority) = authority_of(&head) else {
            let _ = self
                .write_page(&pages::BAD_REQUEST, "", &ray, false, head.version)
                .await;
            return false;
        };
        let host = route_host(authority.as_str());
        let websocket = head.is_websocket_upgrade();
        let Some(mut request) = self.build_request(&head, &authority, &ray, websocket) else {
            let _ = self
                .write_page(&pages::BAD_REQUEST, &host, &ray, false, head.version)
                .await;
            return false;
        };
        let end_of_stream = !has_body && !websocket;
        // A connection that just died may still be listed for a moment: it fails `ready()`
        // before anything was sent, so another connection is tried.
        let mut attempts = 0;
        let (guard, response, body_tx) = loop {
            attempts += 1;
            let guard = match self.shared.route(&host) {
                Ok(g) => g,
                Err(RouteError::UnknownHost) => {
                    log::debug!(host:% = host; "No tunnel for host");
                    return self
                        .write_page(
                            &pages::UNKNOWN_HOST,
                            &host,
                            &ray,
                            keep_alive && !has_body,
                            head.version,
                        )
                        .await;
                }
                Err(RouteError::NoConnector(tunnel)) => {
                    log::debug!(host:% = host, tunnelID:% = tunnel;
                        "No connector registered for tunnel");
                    return self
                        .write_page(
                            &pages::NO_CONNECTOR,
                            &host,
                            &ray,
                            keep_alive && !has_body,
                            head.version,
                        )
                        .await;
                }
            };
            let chunked = framing == BodyFraming::Chunked;
            let opened = stream::open(
                &guard.conn.opener,
                request,
                end_of_stream,
                websocket,
                chunked,
            );
            match opened.await {
                Ok((response, body_tx)) => break (guard, response, body_tx),
                Err(OpenError::Retry(e, unsent)) => {
                    request = *unsent;
                    log::warn!(host:% = host, connection:% = guard.conn.id, error:% = e;
                        "Tunnel connection not usable, trying another");
                    if attempts >= OPEN_ATTEMPTS {
                        return self
                            .write_page(&pages::TUNNEL_FAILED, &host, &ray, false, head.version)
                            .await;
                    }
                }
                Err(OpenError::Failed(e)) => {
                    log::warn!(host:% = host, connection:% = guard.conn.id, error:% = e;
                        "Opening a stream on the tunnel connection failed");
                    return self
                        .write_page(&pages::TUNNEL_FAILED, &host, &ray, false, head.version)
                        .await;
                }
            }
        };
        // Counts this stream on its connection until the exchange ends (drain waits on it).
        let _guard = guard;
        let ctx = Exchange {
            method: head.method.clone(),
            version: head.version,
            keep_alive,
            host,
            ray,
        };
        if websocket {
            return self.websocket(ctx, response, body_tx).await;
        }
        // `Expect: 100-continue` is answered here (as Cloudflare does): the stream is open,
        // so the body has somewhere to go. The header itself is not forwarded.
        if has_body
            && head.version == Version::Http11
            && head.has_token(&header::EXPECT, "100-continue")
            && (self
                .wr
                .write(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"))
                .await
                .is_err()
                || self.wr.flush().await.is_err())
        {
            body_tx_reset(body_tx);
            return false;
        }
        let timeout = self.shared.response_timeout;
        let Eyeball { rd, wr, buf, .. } = self;
        let pump = pin!(async {
            if end_of_stream {
                Ok(())
            } else {
                pump_body(rd, buf, BodyDecoder::new(framing), body_tx).await
            }
        });
        // Cloudflare's 524 clock starts once the request is sent: while the body is still
        // streaming up, the response may take as long as it needs.
        let mut response = response;
        let respond = pin!(&mut response);
        // The response may arrive while the body is still streaming (echo), or before the
        // body was read at all (an early error): handle whichever finishes first.
        let (pumped, response) = match select(pump, respond).await {
            Either::Left((pumped, _)) if bad_body_status(&pumped).is_some() => {
                // No point waiting for the answer to a stream we reset.
                (Some(pumped), Err(&pages::BAD_REQUEST))
            }
            Either::Left((pumped, _)) => {
                let response = match compio::time::timeout(timeout, response).await {
                    Err(_) => Err(&pages::TIMEOUT),
                    Ok(r) => r.map_err(response_error),
                };
                (Some(pumped), response)
            }
            Either::Right((response, pump)) => match response.map_err(response_error) {
                Ok(resp) => {
                    let (pumped, keep) = join_response(pump, wr, resp, &ctx).await;
                    return keep && pumped.is_ok();
                }
                Err(page) => {
                    // The pump (and its stream) is dropped when this function returns.
                    return write_page(wr, page, &ctx.host, &ctx.ray, false, ctx.version).await;
                }
            },
        };
        // The visitor's body was malformed (bad chunk framing): that is the visitor's error
        // (400), whatever the connector made of the reset stream.
        if let Some(status) = pumped.as_ref().and_then(bad_body_status) {
            log::debug!(host:% = ctx.host; "Bad request body from eyeball");
            let page = ErrorPage {
                status,
                ..pages::BAD_REQUEST
            };
            return write_page(wr, &page, &ctx.host, &ctx.ray, false, ctx.version).await;
        }
        match response {
            Ok(resp) => {
                let body_ok = pumped.is_some_and(|p| p.is_ok());
                let keep = write_response(wr, resp, &ctx, false).await;
                keep && body_ok
            }
            Err(page) => write_page(wr, page, &ctx.host, &ctx.ray, false, ctx.version).await,
        }
    }

    /// Builds the HTTP/2 request the connector receives.
    fn build_request(
        &self,
        head: &RequestHead,
        authority: &Authority,
        ray: &Ray,
        websocket: bool,
    ) -> Option<http::Request<()>> {
        let path = path_of(&head.target)?;
        let uri = http::Uri::builder()
            .scheme(self.scheme)
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .ok()?;
        let mut request = http::Request::builder()
            .method(head.method.clone())
            .uri(uri)
            .body(())
            .ok()?;
        let headers = request.headers_mut();
        headers.reserve(head.headers.len() + 8);
        // Headers listed in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        let listed: Vec<&[u8]> = head
            .values(&header::CONNECTION)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .collect();
        let mut forwarded_for: Option<Bytes> = None;
        for h in &head.headers {
            if dropped_request_header(&h.name)
                || listed
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(h.name.as_str().as_bytes()))
            {
                continue;
            }
            if h.name == "x-forwarded-for" {
                forwarded_for = Some(h.value.clone());
                continue;
            }
            if let Ok(value) = HeaderValue::from_maybe_shared(h.value.clone()) {
                headers.append(h.name.clone(), value);
            }
        }
        add_visitor_headers(
            headers,
            self.peer,
            self.scheme,
            forwarded_for,
            ray,
            websocket,
        );
        Some(request)
    }

    /// A websocket: wait for the connector's answer, then splice both ways.
    async fn websocket(&mut self, ctx: Exchange<'_>, response: Pending, mut up: Up) -> bool {
        let resp = match compio::time::timeout(self.shared.response_timeout, response).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => {
                return write_page(
                    &mut self.wr,
                    &pages::TUNNEL_FAILED,
                    &ctx.host,
                    &ctx.ray,
                    false,
                    ctx.version,
                )
                .await;
            }
            Err(_) => {
                up.reset(h2::Reason::CANCEL);
                return write_page(
                    &mut self.wr,
                    &pages::TIMEOUT,
                    &ctx.host,
                    &ctx.ray,
                    false,
                    ctx.version,
                )
                .await;
            }
        };
        if !resp.switched() || resp.connector_error {
            // Not switched: an ordinary response; the request stream is ours to end.
            up.reset(h2::Reason::NO_ERROR);
            let _ = write_response(&mut self.wr, resp, &ctx, false).await;
            return false;
        }
        let Some(mut head) = response_head(&resp, StatusCode::SWITCHING_PROTOCOLS, true) else {
            up.reset(h2::Reason::PROTOCOL_ERROR);
            return bad_gateway(&mut self.wr, &ctx, false).await;
        };
        ensure(&mut head.headers, header::CONNECTION, "Upgrade");
        ensure(&mut head.headers, header::UPGRADE, "websocket");
        if !write_head(&mut self.wr, &head).await {
            return false;
        }
        let mut down = resp.body;
        let Eyeball { rd, wr, buf, .. } = self;
        let upstream = pin!(async move {
            if !buf.is_empty() {
                up.send(buf.split().freeze()).await?;
            }
            loop {
                let n = read_more(rd, buf, READ_CHUNK).await?;
                if n == 0 {
                    let _ = up.finish(None).await;
                    return Ok::<(), io::Error>(());
                }
                up.send(buf.split().freeze()).await?;
            }
        });
        let downstream = pin!(async move {
            while let Some(chunk) = down.data().await {
                let chunk = chunk?;
                let len = chunk.len();
                wr.write(chunk).await?;
                wr.flush().await?;
                down.release(len);
            }
            wr.close().await
        });
        match select(upstream, downstream).await {
            Either::Left((_, downstream)) => {
                let _ = compio::time::timeout(WS_CLOSE_GRACE, downstream).await;
            }
            Either::Right((_, upstream)) => {
                let _ = compio::time::timeout(WS_CLOSE_GRACE, upstream).await;
            }
        }
        false
    }

    async fn write_page(
        &mut self,
        page: &ErrorPage,
        host: &str,
        ray: &Ray,
        keep_alive: bool,
        version: Version,
    ) -> bool {
        write_page(&mut self.wr, page, host, ray, keep_alive, version).await
    }
}

/// The page for a stream that failed before its response headers.
fn response_error(e: String) -> &'static ErrorPage {
    log::debug!(error:% = e; "Tunnel stream failed before the response");
    &pages::TUNNEL_FAILED
}

/// Abandons a request stream whose body will never come.
fn body_tx_reset(mut tx: Up) {
    tx.reset(h2::Reason::CANCEL);
}

/// What the response writer needs to know about the request.
struct Exchange<'a> {
    method: Method,
    version: Version,
    keep_alive: bool,
    host: Cow<'a, str>,
    ray: Ray,
}

/// The response arrived first: write it while the request body keeps streaming, then give
/// the body a bounded time to finish.
async fn join_response<P, W>(
    pump: std::pin::Pin<&mut P>,
    wr: &mut W,
    resp: TunnelResponse,
    ctx: &Exchange<'_>,
) -> (io::Result<()>, bool)
where
    P: Future<Output = io::Result<()>>,
    W: EyeballWrite,
{
    let write = pin!(write_response(wr, resp, ctx, false));
    match select(pump, write).await {
        Either::Left((pumped, write)) => (pumped, write.await),
        Either::Right((keep, pump)) => {
            let pumped = compio::time::timeout(BODY_AFTER_RESPONSE, pump)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
            (pumped, keep)
        }
    }
}

/// Small request-body chunks are gathered up to this size before they become one DATA frame.
const COALESCE_MAX: usize = 16 * 1024;

/// Streams the eyeball's request body into the h2 stream.
async fn pump_body<R: EyeballRead>(
    rd: &mut R,
    buf: &mut BytesMut,
    mut decoder: BodyDecoder,
    mut tx: Up,
) -> io::Result<()> {
    // Body bytes already decoded but not yet sent: small chunks (a visitor's 1-byte chunked
    // body, say) are gathered into one DATA frame instead of one frame each, which would spend
    // the connector's budget for small frames (h2's ENHANCE_YOUR_CALM) and cut every stream on
    // the tunnel connection. Bounded by COALESCE_MAX; sent as soon as the buffered input is
    // used up, so nothing waits for more input that may never come.
    let mut pending = BytesMut::new();
    let result = async {
        loop {
            match decoder.decode(buf).map_err(io::Error::other)? {
                Some(BodyEvent::Data(data)) => {
                    if pending.is_empty() && data.len() >= COALESCE_MAX {
                        tx.send(data).await?;
                    } else {
                        pending.extend_from_slice(&data);
                        if pending.len() >= COALESCE_MAX {
                            tx.send(pending.split().freeze()).await?;
                        }
                    }
                }
                Some(BodyEvent::End { trailers }) => {
                    if !pending.is_empty() {
                        tx.send(pending.split().freeze()).await?;
                    }
                    if trailers.is_empty() {
                        tx.finish(None).await?;
                    } else {
                        let mut map = HeaderMap::new();
                        for t in trailers {
                            if let Ok(v) = HeaderValue::from_maybe_shared(t.value) {
                                map.append(t.name, v);
                            }
                        }
                        tx.finish(Some(map)).await?;
                    }
                    return Ok(());
                }
                None => {
                    if !pending.is_empty() {
                        tx.send(pending.split().freeze()).await?;
                    }
                    let read = compio::time::timeout(IDLE_TIMEOUT, read_more(rd, buf, READ_CHUNK))
                        .await
                        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?;
                    if read? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "eyeball closed during the request body",
                        ));
                    }
                }
            }
        }
    }
    .await;
    if result.is_err() {
        tx.reset(h2::Reason::CANCEL);
    }
    result
}

/// The status for a request body the visitor framed wrongly, when that is why `pumped` failed.
fn bad_body_status(pumped: &io::Result<()>) -> Option<u16> {
    let e = pumped.as_ref().err()?;
    e.get_ref()?
        .downcast_ref::<crate::http1::Http1Error>()
        .map(crate::http1::Http1Error::status)
}

/// The eyeball response head from the connector's origin headers; `None` when they cannot
/// be decoded.
fn response_head(resp: &TunnelResponse, status: StatusCode, upgrade: bool) -> Option<ResponseHead> {
    let mut headers = Vec::with_capacity(16);
    resp.for_each_header(|name, value| {
        let Ok(name) = HeaderName::from_bytes(name) else {
            return;
        };
        if dropped_response_header(name.as_str(), upgrade) {
            return;
        }
        headers.push(Header { name, value });
    })?;
    Some(ResponseHead { status, headers })
}

/// Adds `name: value` unless a field of that name is present.
fn ensure(headers: &mut Vec<Header>, name: HeaderName, value: &'static str) {
    if !headers.iter().any(|h| h.name == name) {
        headers.push(Header {
            name,
            value: Bytes::from_static(value.as_bytes()),
        });
    }
}

/// Writes a response head; false on failure (the connection must close).
async fn write_head<W: EyeballWrite>(wr: &mut W, head: &ResponseHead) -> bool {
    let mut out = BytesMut::with_capacity(512);
    if head.encode(&mut out).is_err() {
        return false;
    }
    wr.write(out.freeze()).await.is_ok() && wr.flush().await.is_ok()
}

/// Writes the connector's response to the eyeball; true when the connection stays usable.
async fn write_response<W: EyeballWrite>(
    wr: &mut W,
    resp: TunnelResponse,
    ctx: &Exchange<'_>,
    _upgrade: bool,
) -> bool {
    if resp.connector_error {
        log::debug!(host:% = ctx.host, status = resp.status.as_u16(); "Connector reported an origin error");
        return bad_gateway(wr, ctx, ctx.keep_alive).await;
    }
    let Some(mut head) = response_head(&resp, resp.status, false) else {
        log::warn!(host:% = ctx.host; "Connector sent undecodable response headers");
        return bad_gateway(wr, ctx, false).await;
    };
    let mut body = resp.body;
    let status = resp.status.as_u16();
    let no_body = ctx.method == Method::HEAD || status < 200 || status == 204 || status == 304;
    let mut content_length = None;
    for h in &head.headers {
        if h.name == header::CONTENT_LENGTH {
            let parsed = std::str::from_utf8(&h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            match (parsed, content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => {
                    return bad_gateway(wr, ctx, false).await;
                }
            }
        }
    }
    let chunked = !no_body && content_length.is_none() && ctx.version == Version::Http11;
    let mut keep_alive = ctx.keep_alive && (no_body || content_length.is_some() || chunked);
    if chunked {
        head.headers.push(Header {
            name: header::TRANSFER_ENCODING,
            value: Bytes::from_static(b"chunked"),
        });
    }
    add_edge_headers(&mut head.headers, &ctx.ray, keep_alive, ctx.version);
    let mut encoded = BytesMut::with_capacity(512);
    if let Err(e) = head.encode(&mut encoded) {
        // A value with CR/LF/NUL (possible inside base64-serialized headers) would split
        // the response: refuse it as a bad gateway instead.
        log::warn!(host:% = ctx.host, error:% = e; "Connector sent an unencodable response header");
        return bad_gateway(wr, ctx, false).await;
    }
    if wr.write(encoded.freeze()).await.is_err() {
        return false;
    }
    if no_body {
        return wr.flush().await.is_ok() && keep_alive;
    }
    let mut sent: u64 = 0;
    // The head goes out with the first frame when that is already here, else at once (an
    // event stream's head must not wait for its first event).
    let mut next = match body.data().now_or_never() {
        Some(n) => n,
        None => {
            if wr.flush().await.is_err() {
                return false;
            }
            body.data().await
        }
    };
    while let Some(chunk) = next {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                log::debug!(host:% = ctx.host, error:% = e; "Tunnel stream failed mid-response");
                return false;
            }
        };
        let len = chunk.len();
        sent += len as u64;
        if content_length.is_some_and(|cl| sent > cl) {
            return false;
        }
        let written = if chunked {
            if len == 0 {
                Ok(())
            } else {
                let size = Bytes::from(format!("{len:x}\r\n"));
                async {
                    wr.write(size).await?;
                    wr.write(chunk).await?;
                    wr.write(Bytes::from_static(b"\r\n")).await
                }
                .await
            }
        } else {
            wr.write(chunk).await
        };
        if written.is_err() {
            // Dropping `body` resets the stream (CANCEL), so the connector stops too.
            log::debug!(host:% = ctx.host, ray:% = ctx.ray, sent = sent; "Eyeball went away: response aborted");
            return false;
        }
        body.release(len);
        // Take the next frame if it is already here; flush only before waiting. A bulk
        // download then costs one write per socket buffer, while an event stream (the
        // connector flushes each event as its own frame) still reaches the eyeball at once.
        next = match body.data().now_or_never() {
            Some(n) => n,
            None => {
                if wr.flush().await.is_err() {
                    return false;
                }
                body.data().await
            }
        };
    }
    if let Some(cl) = content_length
        && sent != cl
    {
        return false;
    }
    if !chunked && wr.flush().await.is_err() {
        return false;
    }
    if chunked {
        let trailers = match body.trailers().await {
            Ok(Some(map)) => map
                .iter()
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: Bytes::copy_from_slice(value.as_bytes()),
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(_) => return false,
        };
        let mut out = BytesMut::with_capacity(64);
        if encode_last_chunk(&trailers, &mut out).is_err() {
            keep_alive = false;
            out.clear();
            let _ = encode_last_chunk(&[], &mut out);
        }
        if wr.write(out.freeze()).await.is_err() || wr.flush().await.is_err() {
            return false;
        }
    }
    keep_alive
}

/// `Cf-Ray`, `Server: cloudflare` (only when the origin sent no `Server`, so origin headers
/// stay intact) and the keep-alive decision.
fn add_edge_headers(headers: &mut Vec<Header>, ray: &Ray, keep_alive: bool, version: Version) {
    headers.push(Header {
        name: HeaderName::from_static("cf-ray"),
        value: ray.bytes(),
    });
    ensure(headers, header::SERVER, "cloudflare");
    match (keep_alive, version) {
        (false, _) => headers.push(Header {
            name: header::CONNECTION,
            value: Bytes::from_static(b"close"),
        }),
        (true, Version::Http10) => headers.push(Header {
            name: header::CONNECTION,
            value: Bytes::from_static(b"keep-alive"),
        }),
        (true, Version::Http11) => {}
    }
}

/// Writes the 502 page for an exchange whose connector answered unusably.
async fn bad_gateway<W: EyeballWrite>(wr: &mut W, ctx: &Exchange<'_>, keep_alive: bool) -> bool {
    write_page(
        wr,
        &pages::BAD_GATEWAY,
        &ctx.host,
        &ctx.ray,
        keep_alive,
        ctx.version,
    )
    .await
}

/// Writes an error page; returns `keep_alive` when it was written.
async fn write_page<W: EyeballWrite>(
    wr: &mut W,
    page: &ErrorPage,
    host: &str,
    ray: &Ray,
    keep_alive: bool,
    version: Version,
) -> bool {
    let body = page.body(host, ray.as_str());
    let mut headers = vec![
        Header {
            name: header::CONTENT_TYPE,
            value: Bytes::from_static(b"text/html; charset=UTF-8"),
        },
        Header {
            name: header::CONTENT_LENGTH,
            value: Bytes::from(body.len().to_string()),
        },
    ];
    add_edge_headers(&mut headers, ray, keep_alive, version);
    let head = ResponseHead {
        status: StatusCode::from_u16(page.status).unwrap_or(StatusCode::BAD_GATEWAY),
        headers,
    };
    let mut out = BytesMut::with_capacity(body.len() + 256);
    if head.encode(&mut out).is_err() {
        return false;
    }
    out.extend_from_slice(&body);
    wr.write(out.freeze()).await.is_ok() && wr.flush().await.is_ok() && keep_alive
}

/// The request's authority: the Host header, or the authority of an absolute-form target.
fn authority_of(head: &RequestHead) -> Option<Authority> {
    let mut hosts = head.values(&header::HOST);
    let first = hosts.next();
    if hosts.next().is_some() {
        // RFC 9112 §3.2: more than one Host field is a 400.
        return None;
    }
    if let Some(host) = first {
        // A slice of the head's own buffer: no copy.
        let trimmed = host.trim_ascii();
        if trimmed.is_empty() {
            return None;
        }
        return Authority::from_maybe_shared(host.slice_ref(trimmed)).ok();
    }
    let uri = http::Uri::from_maybe_shared(head.target.clone()).ok()?;
    uri.into_parts().authority
}

/// Host for routing: lowercase, without port or trailing dot (borrowed when it already is).
fn route_host(authority: &str) -> Cow<'_, str> {
    let host = if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets; only a port after `]` is dropped.
        match authority.find(']') {
            Some(i) => authority.get(..=i).unwrap_or(authority),
            None => authority,
        }
    } else {
        authority.split_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The `:path` for a request target: origin-form as is (the head's own bytes, not a copy),
/// absolute-form reduced to its path.
fn path_of(target: &Bytes) -> Option<PathAndQuery> {
    std::str::from_utf8(target).ok()?;
    if target.starts_with(b"/") || target[..] == *b"*" {
        return PathAndQuery::from_maybe_shared(target.clone()).ok();
    }
    let uri = http::Uri::from_maybe_shared(target.clone()).ok()?;
    Some(
        uri.into_parts()
            .path_and_query
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    )
}

/// The headers Cloudflare's edge adds to a visitor's request (spec §4.2): the visitor's
/// address (also appended to any `X-Forwarded-For` it sent), scheme, ray ID, loop marker.
fn add_visitor_headers(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    scheme: &'static str,
    forwarded_for: Option<Bytes>,
    ray: &Ray,
    websocket: bool,
) {
    let ip = peer.ip().to_canonical().to_string();
    let xff = match forwarded_for {
        Some(prev) if !prev.is_empty() => {
            format!("{}, {ip}", String::from_utf8_lossy(&prev))
        }
        _ => ip.clone(),
    };
    // Values built here are moved in (`String` to `HeaderValue` does not copy); constant
    // ones are static.
    let put = |headers: &mut HeaderMap, name: &'static str, value: Option<HeaderValue>| {
        if let Some(v) = value {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put(headers, "cf-connecting-ip", HeaderValue::try_from(ip).ok());
    put(headers, "x-forwarded-for", HeaderValue::try_from(xff).ok());
    put(
        headers,
        "x-forwarded-proto",
        Some(HeaderValue::from_static(scheme)),
    );
    let visitor = if scheme == "https" {
        r#"{"scheme":"https"}"#
    } else {
        r#"{"scheme":"http"}"#
    };
    put(
        headers,
        "cf-visitor",
        Some(HeaderValue::from_static(visitor)),
    );
    // A new value on every request: sent as a literal that is never indexed (RFC 7541
    // §6.2.3), so it does not churn both sides' HPACK tables. Indexed, each one evicted
    // the oldest entries, which are the headers that repeat on every request, and those
    // then went out as literals again.
    let ray = HeaderValue::from_maybe_shared(ray.bytes())
        .ok()
        .map(|mut v| {
            v.set_sensitive(true);
            v
        });
    put(headers, "cf-ray", ray);
    put(
        headers,
        "cdn-loop",
        Some(HeaderValue::from_static("cloudflare")),
    );
    if websocket {
        put(
            headers,
            PROXY_CONNECTION_UPGRADE,
            Some(HeaderValue::from_static(UPGRADE_WEBSOCKET)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_headers_send_the_ray_never_indexed() {
        let mut headers = HeaderMap::new();
        let peer: SocketAddr = "127.0.0.9:5555".parse().unwrap();
        let prev = Some(Bytes::from_static(b"10.0.0.1"));
        add_visitor_headers(
            &mut headers,
            peer,
            "https",
            prev,
            &Ray::from_static("8f0a1b2c3d4e5f60-LHR"),
            false,
        );
        let ray = &headers["cf-ray"];
        assert_eq!(ray, "8f0a1b2c3d4e5f60-LHR");
        // h2 encodes a sensitive value as a never-indexed literal, outside both HPACK tables.
        assert!(
            ray.is_sensitive(),
            "a per-request value must not enter the HPACK tables"
        );
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(headers["cf-connecting-ip"], "127.0.0.9");
        assert_eq!(headers["cf-visitor"], r#"{"scheme":"https"}"#);
        for name in [
            "cf-connecting-ip",
            "x-forwarded-for",
            "cf-visitor",
            "cdn-loop",
        ] {
            assert!(
                !headers[name].is_sensitive(),
                "{name} repeats: it should be indexed"
            );
        }
        assert!(headers.get(PROXY_CONNECTION_UPGRADE).is_none());
    }

    #[test]
    fn route_host_strips_port_and_case() {
        assert_eq!(route_host("Example.COM:8080"), "example.com");
        assert_eq!(route_host("example.com."), "example.com");
        assert_eq!(route_host("[::1]:80"), "[::1]");
        assert_eq!(route_host("[::1]"), "[::1]");
    }

    #[test]
    fn path_of_forms() {
        let path = |t: &'static [u8]| path_of(&Bytes::from_static(t)).map(|p| p.to_string());
        assert_eq!(path(b"/a?b=c").as_deref(), Some("/a?b=c"));
        assert_eq!(path(b"http://h/x?y").as_deref(), Some("/x?y"));
        assert_eq!(path(b"http://h").as_deref(), Some("/"));
        assert_eq!(path(b"*").as_deref(), Some("*"));
        assert_eq!(path(b"/\xff"), None, "not UTF-8");
    }
}
