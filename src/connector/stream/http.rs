//! One eyeball HTTP (or websocket) request proxied to an HTTP origin, as cloudflared does it
//! (spec §3.4, §3.6, §8.1): rewrite the request, take a pooled connection or dial one, upload the
//! body while the response streams back, return the connection to the pool when both sides
//! ended cleanly.
//!
//! Pipeline: build head -> connect -> (upload ‖ read head -> respond -> stream body) -> pool.
//! Backpressure: the upload releases h2 window only after the bytes went into the origin
//! socket; the download asks h2 for send capacity before each chunk, so the origin socket is
//! not read faster than the edge accepts.
//!
//! # Copies on the payload path
//! Edge -> origin: kernel -> the TLS stream's owned buffer -> rustls (decrypt) -> h2's read
//! buffer -> a DATA `Bytes` (split, not copied) -> the origin stream's write buffer -> kernel.
//! Origin -> edge: kernel -> the origin stream's owned buffer -> one `BytesMut` (the body
//! decoder splits `Bytes` off it without copying) -> h2 (large DATA payloads are chained, not
//! copied) -> rustls (encrypt) -> the TLS stream's write buffer -> kernel. The owned-buffer
//! copies are what io_uring's ownership rules cost without `unsafe`; TLS needs its own. The
//! edge leg is always TLS on the http2 transport, so there is no plain-socket pair to splice.

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::Either;
use http::{HeaderMap, HeaderValue, Method, Request};

use super::pipe::Upgraded;
use super::{BodyReader, BodyWriter, ResponseHead, ResponseSender, StreamError, StreamHead};
use crate::connector::core::Core;
use crate::connector::origin::http::{
    RequestBody, ResponseError, ResponseFraming, decoder, fill, put_canonical, read_head,
    response_framing,
};
use crate::connector::origin::{
    Dial, DialError, IdleRead, OriginStream, dial, dial_alpn, dial_upgrade,
};
use crate::http1::{BodyEvent, BodyFraming};
use crate::ingress::OriginRequest;
use crate::proto::headers::{PROXY_CONNECTION_UPGRADE, TRACE_ID};

/// Why a proxied request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("writing request to origin: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Response(#[from] ResponseError),
    #[error("edge stream: {0}")]
    Edge(#[from] StreamError),
    #[error("http2 origin: {0}")]
    Http2Origin(h2::Error),
    #[error("edge reset the stream")]
    EdgeReset,
    #[error("origin sent no response head within {0:?}")]
    HeadTimeout(std::time::Duration),
}

/// How long the connector waits for an origin's response head. cloudflared sets no
/// `ResponseHeaderTimeout` on its origin transport (ingress/origin_service.go) and relies on the
/// edge, which answers 524 and resets the stream after 100 s; the connector watches for that
/// reset, and stops waiting on its own after the same 100 s should the reset never come.
pub const RESPONSE_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(100);

/// Decoded body chunks smaller than this are gathered into one DATA frame (up to this size)
/// instead of each going out as its own frame.
const BATCH: usize = 16 * 1024;

impl From<ProxyError> for crate::connector::stream::StreamError {
    fn from(e: ProxyError) -> Self {
        use crate::connector::stream::{Cause, StreamError};
        match e {
            ProxyError::Dial(d) => d.into(),
            ProxyError::Write(e) => StreamError::origin(Cause::OriginWrite(e)),
            ProxyError::Response(r) => StreamError::origin(r),
            ProxyError::Edge(e) => e,
            ProxyError::Http2Origin(e) => StreamError::origin(Cause::Http2Origin(e)),
            ProxyError::EdgeReset => {
                StreamError::new(crate::connector::stream::Side::Edge, Cause::EdgeReset)
            }
            ProxyError::HeadTimeout(t) => StreamError::origin(Cause::HeadTimeout(t)),
        }
    }
}

/// What happened to a request, for metrics and logs; `B` and `W` are the stream's body reader
/// and writer, handed back with an upgraded connection.
pub enum Outcome<B, W> {
    /// The origin's status was sent to the edge (the body may still have failed later).
    Responded(u16),
    /// The origin answered a WebSocket upgrade with 101, which went to the edge: the caller
    /// pipes, once it let go of everything else the request needed (the stream may now idle
    /// for hours).
    Upgraded(Upgraded<B, W>),
    /// Nothing was sent before the failure: the caller answers 502.
    Failed(ProxyError),
    /// The head was sent, then the body failed and the stream was reset.
    Aborted { status: u16, error: ProxyError },
}

/// The request as it goes to the origin (spec §8.1): its line and body framing, and the edge
/// request its headers come from. The header list is never collected: [`Outgoing::headers`]
/// walks it from the edge request each time it is written.
pub(super) struct Outgoing<'a> {
    method: Method,
    /// Origin-form target, or absolute-form through an `HTTP_PROXY`.
    target: Cow<'a, str>,
    body: RequestBody,
    req: &'a StreamHead,
    /// The visitor's host: the request's authority, else its `host` header.
    host: &'a [u8],
    opts: &'a OriginRequest,
    websocket: bool,
    connector_id: &'a Bytes,
    tags: &'a [(String, String)],
    /// `Proxy-Authorization` for an `HTTP_PROXY` with credentials.
    proxy_auth: Option<Bytes>,
}

/// Edge request headers that never go to the origin as they came.
const NOT_FORWARDED: [&str; 9] = [
    PROXY_CONNECTION_UPGRADE,
    TRACE_ID,
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Builds the origin request from the edge request (spec §8.1).
pub(super) fn outgoing<'a>(
    core: &'a Core,
    req: &'a StreamHead,
    body_ended: bool,
    opts: &'a OriginRequest,
    websocket: bool,
) -> Outgoing<'a> {
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| req.headers.get("host").map(HeaderValue::as_bytes))
        .unwrap_or_default();
    let length = req
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = if websocket {
        RequestBody::None
    } else {
        match (body_ended, length) {
            (_, Some(n)) => RequestBody::Length(n),
            (true, None) => RequestBody::None,
            (false, None) if opts.disable_chunked_encoding => RequestBody::Raw,
            (false, None) => RequestBody::Chunked,
        }
    };
    let target = req
        .uri
        .path_and_query()
        .map_or(Cow::Borrowed("/"), |p| Cow::Borrowed(p.as_str()));
    Outgoing {
        method: req.method.clone(),
        target,
        body,
        req,
        host,
        opts,
        websocket,
        connector_id: &core.shared.connector_id_text,
        tags: &core.shared.options.tags,
        proxy_auth: None,
    }
}

/// A header name as [`Outgoing::headers`] hands it out: ours are written as they are, the
/// edge's (lower case over HTTP/2) in Go's canonical form, as Go's transport writes them.
#[derive(Clone, Copy, Debug)]
enum Name<'a> {
    Ours(&'a str),
    Edge(&'a str),
}

impl Name<'_> {
    fn as_str(&self) -> &str {
        match self {
            Name::Ours(n) | Name::Edge(n) => n,
        }
    }
}

impl Outgoing<'_> {
    /// Sends the request through an `HTTP_PROXY` when one applies to `d`.
    fn via_proxy(&mut self, d: &Dial) {
        if let Some((target, auth)) = crate::connector::origin::proxy_request(d, &self.target) {
            self.target = Cow::Owned(target);
            self.proxy_auth = auth;
        }
    }

    /// The `Host` the origin gets: `httpHostHeader` when set, else the visitor's.
    fn host_header(&self) -> &[u8] {
        if self.opts.http_host_header.is_empty() {
            self.host
        } else {
            self.opts.http_host_header.as_bytes()
        }
    }

    /// Every header of the origin request, in the order they are written.
    fn headers(&self, mut f: impl FnMut(Name<'_>, &[u8])) {
        f(Name::Ours("Host"), self.host_header());
        if !self.opts.http_host_header.is_empty() {
            f(Name::Ours("X-Forwarded-Host"), self.host);
        }
        for (name, value) in &self.req.headers {
            let name = name.as_str();
            if NOT_FORWARDED.iter().any(|s| name.eq_ignore_ascii_case(s))
                || (self.websocket && name.eq_ignore_ascii_case("sec-websocket-version"))
            {
                continue;
            }
            f(Name::Edge(name), value.as_bytes());
        }
        f(Name::Ours("Cf-Warp-Tag-Id"), self.connector_id);
        for (name, value) in self.tags {
            f(Name::Ours(&format!("Cf-Warp-Tag-{name}")), value.as_bytes());
        }
        if self.websocket {
            f(Name::Ours("Connection"), b"Upgrade");
            f(Name::Ours("Upgrade"), b"websocket");
            f(Name::Ours("Sec-Websocket-Version"), b"13");
        } else if self.body != RequestBody::Raw {
            f(Name::Ours("Connection"), b"keep-alive");
        }
        match self.body {
            RequestBody::Length(n) => {
                let mut digits = itoa::Buffer::new();
                f(Name::Ours("Content-Length"), digits.format(n).as_bytes());
            }
            RequestBody::Chunked => f(Name::Ours("Transfer-Encoding"), b"chunked"),
            RequestBody::Raw => f(Name::Ours("Connection"), b"close"),
            RequestBody::None => {}
        }
        if let Some(auth) = &self.proxy_auth {
            f(Name::Ours("Proxy-Authorization"), auth);
        }
    }

    /// The HTTP/1.1 request head, written straight from the edge request into one buffer.
    pub(super) fn encode(&self) -> Bytes {
        let edge: usize = self
            .req
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        let mut out = BytesMut::with_capacity(edge + self.target.len() + 256);
        out.put_slice(self.method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.target.as_bytes());
        out.put_slice(b" HTTP/1.1\r\n");
        self.headers(|name, value| {
            match name {
                Name::Ours(n) => out.put_slice(n.as_bytes()),
                Name::Edge(n) => put_canonical(&mut out, n),
            }
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        });
        out.put_slice(b"\r\n");
        out.freeze()
    }
}

/// Proxies one request; on `Outcome::Failed` nothing was sent and `respond` is still usable.
/// An answered upgrade is returned, not piped: the origin request, its encoded head and the
/// pool key are dropped here, and the caller drops the rest before it pipes.
pub async fn proxy_http<B: BodyReader, R: ResponseSender>(
    core: &Core,
    req: &StreamHead,
    mut recv: B,
    respond: &mut R,
    d: &Dial,
    opts: &OriginRequest,
    websocket: bool,
) -> Outcome<B, R::Writer> {
    let mut first = None;
    if !websocket && d.tls.as_ref().is_some_and(|t| t.http2) {
        // Websockets stay on HTTP/1.1 (no upgrade over h2), as with Go's transport.
        match Box::pin(h2_client(core, d)).await {
            Ok(H2Choice::H2(client)) => {
                return Box::pin(proxy_h2(core, req, recv, respond, client, opts)).await;
            }
            Ok(H2Choice::Http1(stream)) => first = Some(stream),
            Err(e) => return Outcome::Failed(e),
        }
    }
    let mut out = outgoing(core, req, recv.is_end(), opts, websocket);
    out.via_proxy(d);
    let head = out.encode();
    let key = d.key();
    // A pooled connection may have been closed by the origin meanwhile: a request without a
    // body is retried once on a fresh connection if the reused one fails before any reply.
    let fresh = first.is_some();
    // An upgraded connection is never pooled again and may idle for hours: it gets a fresh
    // connection with small buffers rather than a pooled one with HTTP-sized buffers.
    let mut pooled = first.or_else(|| {
        (!websocket)
            .then(|| core.pool.checkout(&key, opts.keep_alive_timeout))
            .flatten()
    });
    loop {
        let reused = pooled.is_some() && !fresh;
        let stream = match pooled.take() {
            Some(s) => s,
            // Dialing and the exchange are boxed: `serve`'s start box, which this future is
            // part of, is as large as its largest state, and stream services that idle for
            // hours hold that box (the memory budget in the module docs of `stream`); one
            // allocation each per request.
            None => match if websocket {
                Box::pin(dial_upgrade(d, &core.origin_tls)).await
            } else {
                Box::pin(dial(d, &core.origin_tls)).await
            } {
                Ok(s) => s,
                Err(e) => return Outcome::Failed(e.into()),
            },
        };
        match Box::pin(exchange(stream, &head, &out, &mut recv, respond, websocket)).await {
            Exchange::Upgraded { rd, wr, buf, send } => {
                return Outcome::Upgraded(Upgraded {
                    rd,
                    wr,
                    leftover: buf,
                    recv,
                    send,
                });
            }
            Exchange::Done { status, reusable } => {
                if let Some(stream) = reusable {
                    core.pool.checkin(key, stream, opts.keep_alive_connections);
                }
                return Outcome::Responded(status);
            }
            Exchange::Failed {
                error,
                silent_origin,
            } => {
                let retry = reused && silent_origin && out.body == RequestBody::None;
                if !retry {
                    return Outcome::Failed(error);
                }
            }
            Exchange::Aborted { status, error } => return Outcome::Aborted { status, error },
        }
    }
}

enum Exchange<W> {
    /// A WebSocket upgrade was answered (101 sent to the edge): the connection and the body
    /// writer, to be piped once the caller let go of the request.
    Upgraded {
        rd: Rd,
        wr: Wr,
        /// Origin bytes read past the 101 head.
        buf: BytesMut,
        send: W,
    },
    /// The response went out; `reusable` holds the connection when it can be pooled.
    Done {
        status: u16,
        reusable: Option<OriginStream>,
    },
    /// Failed before the response head; `silent_origin` when the origin sent no byte at all.
    Failed {
        error: ProxyError,
        silent_origin: bool,
    },
    /// Failed after the head was sent: the stream was reset.
    Aborted { status: u16, error: ProxyError },
}

async fn exchange<B: BodyReader, R: ResponseSender>(
    stream: OriginStream,
    head: &Bytes,
    out: &Outgoing<'_>,
    recv: &mut B,
    respond: &mut R,
    websocket: bool,
) -> Exchange<R::Writer> {
    let (mut rd, mut wr) = stream.split();
    if let Err(e) = write_all(&mut wr, head.clone()).await {
        return Exchange::Failed {
            error: ProxyError::Write(e),
            silent_origin: true,
        };
    }
    // An upgrade reads its head without a buffer of its own while it waits (thousands of
    // WebSockets may be opening at once).
    let mut buf = if websocket {
        BytesMut::new()
    } else {
        BytesMut::with_capacity(crate::connector::origin::http::READ_CHUNK)
    };
    let mut got_bytes = false;
    let (status, mut send, body_res, upload_ok, keep_alive) = {
        // One upload future for the whole exchange: it runs alongside reading the head (an
        // origin may answer before reading the body) and alongside the response body.
        let mut upload = pin!(upload(recv, &mut wr, out.body));
        let mut up_out = None;
        let down = {
            let head_fut = pin!(compio::time::timeout(RESPONSE_HEADER_TIMEOUT, async {
                let head = if websocket {
                    read_head(&mut IdleRead(&mut rd), &mut buf, &mut got_bytes).await?
                } else {
                    read_head(&mut rd, &mut buf, &mut got_bytes).await?
                };
                let framing = response_framing(&out.method, &head)?;
                Ok::<_, ResponseError>((head, framing))
            }));
            // The edge's reset (visitor gone, edge timeout) ends the wait at once; dropping the
            // exchange then closes the origin connection instead of pooling it.
            let watched = pin!(async {
                let reset = poll_fn(|cx| respond.poll_reset(cx).map(|_| ()));
                match select_first(head_fut, pin!(reset)).await {
                    Either::Left(Ok(r)) => r.map_err(ProxyError::from),
                    Either::Left(Err(_)) => Err(ProxyError::HeadTimeout(RESPONSE_HEADER_TIMEOUT)),
                    Either::Right(()) => Err(ProxyError::EdgeReset),
                }
            });
            drive(upload.as_mut(), &mut up_out, watched).await
        };
        let (mut resp_head, framing) = match down {
            Ok(h) => h,
            Err(e) => {
                return Exchange::Failed {
                    error: e,
                    silent_origin: !got_bytes,
                };
            }
        };
        let upgraded = websocket && resp_head.status == 101;
        let empty = !upgraded
            && matches!(
                framing,
                ResponseFraming::Framed(BodyFraming::Empty | BodyFraming::Length(0))
            );
        let status = resp_head.status;
        let keep_alive = resp_head.keep_alive();
        // The origin's header list moves into the head sent to the edge (no copy).
        let sent_head = ResponseHead {
            status,
            headers: std::mem::take(&mut resp_head.headers),
        };
        let mut send = match respond.send(&sent_head, empty) {
            Ok(s) => s,
            Err(e) => {
                return Exchange::Failed {
                    error: e.into(),
                    silent_origin: false,
                };
            }
        };
        if upgraded {
            (status, send, None, false, false)
        } else {
            let body_res = {
                let body = pin!(async {
                    match send.as_mut() {
                        Some(send) if !empty => stream_body(&mut rd, &mut buf, framing, send).await,
                        _ => Ok(true),
                    }
                });
                drive(upload.as_mut(), &mut up_out, body).await
            };
            let upload_ok = matches!(up_out, Some(Ok(())));
            (status, send, Some(body_res), upload_ok, keep_alive)
        }
    };
    match body_res {
        None => match send {
            Some(send) => Exchange::Upgraded { rd, wr, buf, send },
            None => Exchange::Done {
                status,
                reusable: None,
            },
        },
        Some(Ok(clean)) => {
            let reusable = if clean && keep_alive && upload_ok {
                crate::connector::origin::reunite(rd, wr)
            } else {
                None
            };
            Exchange::Done { status, reusable }
        }
        Some(Err(error)) => {
            if let Some(send) = send.as_mut() {
                send.abort();
            }
            Exchange::Aborted { status, error }
        }
    }
}

/// Polls `a` (unless it already finished into `a_out`) alongside `b`, until `b` completes.
async fn drive<A, B>(
    mut a: Pin<&mut A>,
    a_out: &mut Option<A::Output>,
    mut b: Pin<&mut B>,
) -> B::Output
where
    A: Future,
    B: Future,
{
    poll_fn(|cx| {
        if a_out.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            *a_out = Some(v);
        }
        b.as_mut().poll(cx)
    })
    .await
}

type Rd = crate::connector::origin::OriginRead;
type Wr = crate::connector::origin::OriginWrite;

async fn write_all(wr: &mut Wr, data: Bytes) -> std::io::Result<()> {
    wr.write_bytes(data).await?;
    wr.flush().await
}

/// Streams the request body to the origin with the chosen framing.
async fn upload<B: BodyReader>(
    recv: &mut B,
    wr: &mut Wr,
    body: RequestBody,
) -> Result<(), ProxyError> {
    if body == RequestBody::None {
        return Ok(());
    }
    upload_rest(recv, wr, body).await
}

async fn upload_rest<B: BodyReader>(
    recv: &mut B,
    wr: &mut Wr,
    body: RequestBody,
) -> Result<(), ProxyError> {
    let mut sent: u64 = 0;
    while let Some(chunk) = recv.chunk().await? {
        let n = chunk.len();
        if n == 0 {
            continue;
        }
        // No copy on a bare socket: the chunk goes to the kernel as it is (with its chunk
        // framing in one vectored write); the compat stream copies it into its buffer (or rustls).
        let res = match body {
            RequestBody::Chunked => {
                let size = Bytes::from(format!("{n:x}\r\n"));
                wr.write_vectored([size, chunk, Bytes::from_static(b"\r\n")])
                    .await
            }
            _ => wr.write_bytes(chunk).await,
        };
        res.map_err(ProxyError::Write)?;
        // Flushed per chunk: a slow, interactive upload must reach the origin as it arrives.
        wr.flush().await.map_err(ProxyError::Write)?;
        sent += n as u64;
        // Window goes back to the edge only once the origin took the bytes: backpressure.
        recv.release(n);
        if let RequestBody::Length(limit) = body
            && sent >= limit
        {
            break;
        }
    }
    match body {
        RequestBody::Chunked => wr
            .write_bytes(Bytes::from_static(b"0\r\n\r\n"))
            .await
            .map_err(ProxyError::Write)?,
        RequestBody::Raw => wr.close().await.map_err(ProxyError::Write)?,
        _ => {}
    }
    wr.flush().await.map_err(ProxyError::Write)
}

/// Streams the response body to the edge; `Ok(true)` when it ended at its framed end (the
/// connection can be reused), `Ok(false)` for until-close bodies.
async fn stream_body<W: BodyWriter>(
    rd: &mut Rd,
    buf: &mut BytesMut,
    framing: ResponseFraming,
    send: &mut W,
) -> Result<bool, ProxyError> {
    let Some(mut dec) = decoder(framing) else {
        if !buf.is_empty() {
            send.write(buf.split().freeze()).await?;
        }
        loop {
            if fill_watching(rd, buf, send).await? == 0 {
                send.finish(None)?;
                return Ok(false);
            }
            send.write(buf.split().freeze()).await?;
        }
    };
    // Small decoded chunks (an origin writing 1-byte chunks) are gathered and sent as one DATA
    // frame per origin read, at most `BATCH` bytes each: never one tiny frame per chunk.
    let mut batch = BytesMut::new();
    loop {
        match dec.decode(buf) {
            Ok(Some(BodyEvent::Data(data))) => {
                if data.len() >= BATCH && batch.is_empty() {
                    send.write(data).await?;
                } else {
                    batch.extend_from_slice(&data);
                    if batch.len() >= BATCH {
                        send.write(batch.split().freeze()).await?;
                    }
                }
            }
            Ok(Some(BodyEvent::End { trailers })) => {
                if trailers.is_empty() {
                    // The rest and the end in one frame (a small body: its only frame).
                    send.write_last(batch.split().freeze()).await?;
                } else {
                    if !batch.is_empty() {
                        send.write(batch.split().freeze()).await?;
                    }
                    let mut map = HeaderMap::new();
                    for t in trailers {
                        if let Ok(v) = HeaderValue::from_bytes(&t.value) {
                            map.append(t.name, v);
                        }
                    }
                    send.finish(Some(map))?;
                }
                return Ok(buf.is_empty());
            }
            Ok(None) => {
                // Everything read so far is decoded: send it before waiting for the origin.
                if !batch.is_empty() {
                    send.write(batch.split().freeze()).await?;
                }
                if fill_watching(rd, buf, send).await? == 0 {
                    return Err(ResponseError::Eof.into());
                }
            }
            Err(e) => return Err(ResponseError::Malformed(e.to_string()).into()),
        }
    }
}

/// Reads more of the response from the origin, unless the edge resets the stream first.
async fn fill_watching<W: BodyWriter>(
    rd: &mut Rd,
    buf: &mut BytesMut,
    send: &mut W,
) -> Result<usize, ProxyError> {
    let read = pin!(fill(rd, buf));
    let reset = pin!(poll_fn(|cx| send.poll_reset(cx).map(|_| ())));
    match select_first(read, reset).await {
        Either::Left(r) => r.map_err(|e| ResponseError::Io(e).into()),
        Either::Right(()) => Err(ProxyError::EdgeReset),
    }
}

/// Whichever of two futures completes first (the first is polled first).
async fn select_first<A: Future, B: Future>(
    mut a: Pin<&mut A>,
    mut b: Pin<&mut B>,
) -> Either<A::Output, B::Output> {
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}

/// What an `http2Origin` dial produced.
enum H2Choice {
    H2(h2::client::SendRequest<Bytes>),
    /// The origin did not pick h2 by ALPN: use this connection for HTTP/1.1.
    Http1(OriginStream),
}

/// A ready HTTP/2 client for `d`: pooled, or dialled (and its driver spawned on this core).
async fn h2_client(core: &Core, d: &Dial) -> Result<H2Choice, ProxyError> {
    let key = d.key();
    if let Some(c) = core.h2_pool.ready(&key).await {
        return Ok(H2Choice::H2(c));
    }
    let (stream, is_h2) = dial_alpn(d, &core.origin_tls).await?;
    // ALPN chose h2, so the connection is TLS; anything else speaks HTTP/1.1.
    let tls = match stream {
        OriginStream::Tls(tls) if is_h2 => tls,
        other => return Ok(H2Choice::Http1(other)),
    };
    let client = crate::connector::origin::h2::handshake(tls)
        .await
        .map_err(ProxyError::Http2Origin)?;
    let client = client.ready().await.map_err(ProxyError::Http2Origin)?;
    core.h2_pool.insert(key, client.clone());
    Ok(H2Choice::H2(client))
}

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2) or carries as pseudo-headers.
const NOT_ON_H2: [&str; 7] = [
    "host",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "te",
];

/// One request over an HTTP/2 origin connection.
async fn proxy_h2<B: BodyReader, R: ResponseSender>(
    core: &Core,
    req: &StreamHead,
    mut recv: B,
    respond: &mut R,
    mut client: h2::client::SendRequest<Bytes>,
    opts: &OriginRequest,
) -> Outcome<B, R::Writer> {
    let out = outgoing(core, req, recv.is_end(), opts, false);
    let mut builder = Request::builder().method(out.method.clone()).uri(format!(
        "https://{}{}",
        String::from_utf8_lossy(out.host_header()),
        out.target
    ));
    out.headers(|name, value| {
        if !NOT_ON_H2
            .iter()
            .any(|n| name.as_str().eq_ignore_ascii_case(n))
        {
            builder = std::mem::take(&mut builder).header(name.as_str(), value);
        }
    });
    let request = match builder.body(()) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(ProxyError::Write(std::io::Error::other(e))),
    };
    let no_body = matches!(out.body, RequestBody::None);
    let (resp_fut, mut up) = match client.send_request(request, no_body) {
        Ok(x) => x,
        Err(e) => return Outcome::Failed(ProxyError::Http2Origin(e)),
    };
    let mut upload = pin!(async {
        if no_body {
            return Ok(());
        }
        while let Some(chunk) = recv.chunk().await? {
            let n = chunk.len();
            crate::runtime::h2stream::send_all(&mut up, chunk)
                .await
                .map_err(ProxyError::Http2Origin)?;
            recv.release(n);
        }
        up.send_data(Bytes::new(), true)
            .map_err(ProxyError::Http2Origin)
    });
    let mut up_out: Option<Result<(), ProxyError>> = None;
    let resp = match drive(upload.as_mut(), &mut up_out, pin!(resp_fut)).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(ProxyError::Http2Origin(e)),
    };
    let status = resp.status().as_u16();
    let headers: Vec<(String, Bytes)> = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                crate::connector::origin::http::canonical_key(n.as_str()),
                Bytes::copy_from_slice(v.as_bytes()),
            )
        })
        .collect();
    let mut body = resp.into_body();
    let end = body.is_end_stream();
    let mut send = match respond.send(&ResponseHead { status, headers }, end) {
        Ok(Some(s)) => s,
        Ok(None) => return Outcome::Responded(status),
        Err(e) => return Outcome::Failed(e.into()),
    };
    let streamed = drive(
        upload.as_mut(),
        &mut up_out,
        pin!(async {
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(ProxyError::Http2Origin)?;
                let n = chunk.len();
                send.write(chunk).await?;
                let _ = body.flow_control().release_capacity(n);
            }
            let trailers = body.trailers().await.map_err(ProxyError::Http2Origin)?;
            send.finish(trailers)?;
            Ok::<(), ProxyError>(())
        }),
    )
    .await;
    if streamed.is_err() {
        send.abort();
    }
    Outcome::Responded(status)
}
