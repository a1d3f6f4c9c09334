//! One eyeball request's tunnel stream, over either transport (spec §3.4, §4.2, §4.3).
//!
//! The eyeball side ([`super::eyeball`]) opens a stream through a connection's [`Opener`] and
//! then only sees [`Up`] (the request body or websocket bytes toward the connector),
//! [`Pending`] (resolving to a [`TunnelResponse`]) and [`Down`] (the response body):
//! - **http2**: the h2 client handles are `Send`, so the eyeball task drives the stream itself;
//! - **QUIC**: compio-quic connections are `!Send` and live on one core, so the eyeball task
//!   sends an [`OpenRequest`] over a bounded channel to that core's opener task, which runs
//!   one stream task per request: it opens the server-initiated bidirectional stream, writes the
//!   data-stream preamble + `ConnectRequest` then the body, reads the `ConnectResponse` then the
//!   body. Bodies cross cores in bounded channels of chunks, so a slow side stops reading and
//!   QUIC flow control paces the other. An empty chunk marks a clean end in both directions;
//!   a channel that closes without it is an abort (the stream is reset).
//!
//! When the eyeball side goes away before the response ended, the stream task resets its send
//! side and stops its receive side. Nothing here panics on peer input.

use std::{
    future::{Future, poll_fn},
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use compio::quic::{Connection, RecvStream, SendStream};
use futures_channel::{mpsc, oneshot};
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};

use crate::proto::headers::{DecodedHeaders, RESPONSE_HEADERS, RESPONSE_META};
use crate::proto::http2::ResponseMeta;
use crate::proto::quic_meta::{HTTP_HEADER, HTTP_HOST, HTTP_METHOD, HTTP_STATUS};
use crate::proto::{ConnectRequest, ConnectResponse, ConnectionType, FrameLimits};
use crate::runtime::h2stream::send_all;

/// Open requests queued toward one QUIC connection's core (plus one slot per sender).
const OPEN_QUEUE: usize = 64;
/// Body chunks in flight per direction per QUIC stream (plus one slot for the sender); each
/// is at most [`MAX_CHUNK`].
const BODY_QUEUE: usize = 2;
/// Largest chunk the stream task hands to the eyeball side: packet-sized QUIC chunks that
/// are already received are gathered up to this size, so a bulk download costs one
/// cross-core message per 64 KiB rather than one per packet.
const MAX_CHUNK: usize = 64 * 1024;
/// Received chunks (one STREAM frame's payload each, at most a packet) taken per read.
const GATHER: usize = 32;
/// Upper bound on a received chunk's size, for sizing gathers (a chunk is one STREAM frame's
/// payload, under [`crate::quic::MAX_UDP_PAYLOAD`]; a larger one only costs a reallocation).
const PACKET: usize = crate::quic::MAX_UDP_PAYLOAD as usize;
/// Bound on the `ConnectResponse` (preamble excluded): 256 KiB, a few segments.
const RESPONSE_LIMITS: FrameLimits = FrameLimits {
    max_segments: 16,
    max_words: 32 * 1024,
};
/// Most metadata entries (status + header values) a `ConnectResponse` may carry.
const MAX_RESPONSE_METADATA: usize = 1024;

/// How eyeball requests reach one connector connection; `Send + Sync`, usable from any core.
pub(crate) enum Opener {
    H2(h2::client::SendRequest<Bytes>),
    Quic(mpsc::Sender<OpenRequest>),
}

/// Creates the channel a QUIC connection's opener task serves.
pub(crate) fn quic_opener() -> (Opener, mpsc::Receiver<OpenRequest>) {
    let (tx, rx) = mpsc::channel(OPEN_QUEUE);
    (Opener::Quic(tx), rx)
}

/// Why a stream could not be opened.
pub(crate) enum OpenError {
    /// Nothing was sent: another connection may be tried with the request given back.
    Retry(String, Box<http::Request<()>>),
    /// The request may have reached the connector.
    Failed(String),
}

/// Opens a stream for `request` (built for http2: URI, method, headers with the edge's own).
/// `end_of_stream`: no body follows; `chunked`: the body has no length (QUIC needs to say so).
pub(crate) async fn open(
    opener: &Opener,
    request: http::Request<()>,
    end_of_stream: bool,
    websocket: bool,
    chunked: bool,
) -> Result<(Pending, Up), OpenError> {
    match opener {
        Opener::H2(send) => {
            let mut send = match send.clone().ready().await {
                Ok(send) => send,
                Err(e) => return Err(OpenError::Retry(e.to_string(), Box::new(request))),
            };
            let (response, body) = send
                .send_request(request, end_of_stream)
                .map_err(|e| OpenError::Failed(e.to_string()))?;
            Ok((Pending::H2(response), Up::H2(body)))
        }
        Opener::Quic(tx) => {
            let mut head = BytesMut::with_capacity(512);
            connect_request(&request, websocket, chunked).encode(&mut head);
            let (up_tx, up_rx) = if end_of_stream {
                (None, None)
            } else {
                let (t, r) = mpsc::channel(BODY_QUEUE);
                (Some(t), Some(r))
            };
            let (down_tx, down_rx) = mpsc::channel(BODY_QUEUE);
            let (reply_tx, reply_rx) = oneshot::channel();
            let (alive_tx, alive_rx) = oneshot::channel();
            let open = OpenRequest {
                head: head.freeze(),
                up: up_rx,
                down: down_tx,
                reply: reply_tx,
                alive: alive_tx,
            };
            if tx.clone().send(open).await.is_err() {
                return Err(OpenError::Retry(
                    "QUIC connection closed".to_owned(),
                    Box::new(request),
                ));
            }
            let pending = Pending::Quic {
                reply: reply_rx,
                down: Some(QuicDown {
                    rx: down_rx,
                    _alive: alive_rx,
                    ended: false,
                }),
            };
            Ok((pending, Up::Quic(up_tx)))
        }
    }
}

/// The `ConnectRequest` for an eyeball request (spec §4.3): `dest` is the absolute URL,
/// `HttpMethod`, `HttpHost`, then one `HttpHeader:<Name>` entry per header value (names
/// Go-canonical, as Cloudflare's edge sends them). A chunked body is announced with
/// `Transfer-Encoding: chunked`, since the connector reads no body without a length or it.
fn connect_request(request: &http::Request<()>, websocket: bool, chunked: bool) -> ConnectRequest {
    let headers = request.headers();
    let mut metadata = Vec::with_capacity(headers.len() + 3);
    metadata.push((HTTP_METHOD.to_owned(), request.method().as_str().to_owned()));
    let host = request
        .uri()
        .authority()
        .map_or_else(String::new, |a| a.as_str().to_owned());
    metadata.push((HTTP_HOST.to_owned(), host));
    for (name, value) in headers {
        if name.as_str() == crate::proto::headers::PROXY_CONNECTION_UPGRADE {
            continue;
        }
        metadata.push((
            format!("{HTTP_HEADER}:{}", canonical(name.as_str())),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
    }
    if chunked && !websocket {
        metadata.push((
            format!("{HTTP_HEADER}:Transfer-Encoding"),
            "chunked".to_owned(),
        ));
    }
    ConnectRequest {
        dest: request.uri().to_string(),
        kind: if websocket {
            ConnectionType::Websocket
        } else {
            ConnectionType::Http
        },
        metadata,
    }
}

/// Go's `CanonicalMIMEHeaderKey` for a valid lowercase token: `content-type` → `Content-Type`.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// The request body (or websocket bytes) toward the connector.
pub(crate) enum Up {
    H2(h2::SendStream<Bytes>),
    /// `None`: the request had no body (the stream's send side is already finished).
    Quic(Option<mpsc::Sender<Bytes>>),
}

impl Up {
    /// Sends `data`, waiting for the transport to take it.
    pub async fn send(&mut self, data: Bytes) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self {
            Up::H2(tx) => send_all(tx, data).await.map_err(io::Error::other),
            Up::Quic(Some(tx)) => tx.send(data).await.map_err(|_| stream_gone()),
            Up::Quic(None) => Err(stream_gone()),
        }
    }

    /// Ends the body cleanly; `trailers` go out on http2 (QUIC has none, spec §4.3).
    pub async fn finish(&mut self, trailers: Option<HeaderMap>) -> io::Result<()> {
        match self {
            Up::H2(tx) => match trailers {
                Some(map) => tx.send_trailers(map).map_err(io::Error::other),
                None => tx.send_data(Bytes::new(), true).map_err(io::Error::other),
            },
            Up::Quic(tx) => match tx.take() {
                Some(mut tx) => tx.send(Bytes::new()).await.map_err(|_| stream_gone()),
                None => Ok(()),
            },
        }
    }

    /// Abandons the body: the connector sees the stream reset.
    pub fn reset(&mut self, reason: h2::Reason) {
        match self {
            Up::H2(tx) => tx.send_reset(reason),
            // Closing the channel without the end marker resets the send side.
            Up::Quic(tx) => drop(tx.take()),
        }
    }
}

fn stream_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "tunnel stream closed")
}

/// The connector's answer, not yet arrived.
pub(crate) enum Pending {
    H2(h2::client::ResponseFuture),
    Quic {
        reply: oneshot::Receiver<Result<ConnectResponse, String>>,
        down: Option<QuicDown>,
    },
}

impl Future for Pending {
    type Output = Result<TunnelResponse, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Pending::H2(fut) => fut.poll_unpin(cx).map(|r| match r {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let connector_error = parts
                        .headers
                        .get(RESPONSE_META)
                        .is_some_and(|v| ResponseMeta::from_connector(v.as_bytes()));
                    Ok(TunnelResponse {
                        status: parts.status,
                        connector_error,
                        headers: RespHeaders::H2(parts.headers),
                        body: Down::H2(body),
                    })
                }
                Err(e) => Err(e.to_string()),
            }),
            Pending::Quic { reply, down } => {
                let result = match reply.poll_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => Err("tunnel stream closed".to_owned()),
                    Poll::Ready(Ok(Err(e))) => Err(e),
                    Poll::Ready(Ok(Ok(resp))) => match down.take() {
                        Some(down) => Ok(quic_response(resp, down)),
                        None => Err("response already taken".to_owned()),
                    },
                };
                Poll::Ready(result)
            }
        }
    }
}

/// A `ConnectResponse` as a response: a non-empty `error` (or no usable `HttpStatus`) is the
/// connector's failure, which the eyeball sees as a 502, as on http2.
fn quic_response(resp: ConnectResponse, down: QuicDown) -> TunnelResponse {
    let status = resp
        .metadata
        .iter()
        .rev()
        .find(|(k, _)| k == HTTP_STATUS)
        .and_then(|(_, v)| v.trim().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    let connector_error = !resp.error.is_empty() || status.is_none();
    if !resp.error.is_empty() {
        log::debug!(error:% = resp.error; "Connector reported an error on a QUIC stream");
    }
    TunnelResponse {
        status: status.unwrap_or(StatusCode::BAD_GATEWAY),
        connector_error,
        headers: RespHeaders::Quic(resp.metadata),
        body: Down::Quic(down),
    }
}

/// The connector's response head and body.
pub(crate) struct TunnelResponse {
    pub status: StatusCode,
    /// The connector's own error (`{"src":"cloudflared"}` on http2, `error` on QUIC).
    pub connector_error: bool,
    headers: RespHeaders,
    pub body: Down,
}

enum RespHeaders {
    /// Origin headers serialized in `cf-cloudflared-response-headers`.
    H2(HeaderMap),
    /// `HttpHeader:<Name>` metadata entries.
    Quic(Vec<(String, String)>),
}

impl TunnelResponse {
    /// Whether the origin accepted a websocket upgrade: 200 on http2 (cloudflared rewrites
    /// 101), 101 on QUIC (spec §4.3).
    pub fn switched(&self) -> bool {
        match self.headers {
            RespHeaders::H2(_) => self.status == StatusCode::OK,
            RespHeaders::Quic(_) => self.status == StatusCode::SWITCHING_PROTOCOLS,
        }
    }

    /// Calls `f(name, value)` for each origin header value; `None` when they cannot be decoded.
    /// Over http2 the values share one decoded buffer (no allocation per value).
    pub fn for_each_header(&self, mut f: impl FnMut(&[u8], Bytes)) -> Option<()> {
        match &self.headers {
            RespHeaders::H2(map) => {
                let mut decoded = DecodedHeaders::default();
                if let Some(v) = map.get(RESPONSE_HEADERS) {
                    crate::proto::headers::deserialize_headers_into(v.as_bytes(), &mut decoded)
                        .ok()?;
                }
                decoded.into_each(f);
            }
            RespHeaders::Quic(meta) => {
                for (key, value) in meta {
                    let Some((prefix, name)) = key.split_once(':') else {
                        continue;
                    };
                    if prefix == HTTP_HEADER && !name.contains(':') {
                        f(name.as_bytes(), Bytes::copy_from_slice(value.as_bytes()));
                    }
                }
            }
        }
        Some(())
    }
}

/// The response body (or websocket bytes) from the connector.
pub(crate) enum Down {
    H2(h2::RecvStream),
    Quic(QuicDown),
}

/// The eyeball end of a QUIC stream's response: chunks, an empty one at the clean end.
pub(crate) struct QuicDown {
    rx: mpsc::Receiver<Bytes>,
    /// Dropped with this: tells the stream task the eyeball went away.
    _alive: oneshot::Receiver<()>,
    ended: bool,
}

impl Down {
    /// The next chunk; `None` at the clean end.
    pub async fn data(&mut self) -> Option<io::Result<Bytes>> {
        match self {
            Down::H2(body) => body.data().await.map(|r| r.map_err(io::Error::other)),
            Down::Quic(q) => {
                if q.ended {
                    return None;
                }
                match q.rx.next().await {
                    Some(b) if b.is_empty() => {
                        q.ended = true;
                        None
                    }
                    Some(b) => Some(Ok(b)),
                    None => {
                        q.ended = true;
                        Some(Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "tunnel stream reset",
                        )))
                    }
                }
            }
        }
    }

    /// Gives `n` bytes of window back once written onward (http2; QUIC's stream task reads
    /// only as far as the bounded channel lets it).
    pub fn release(&mut self, n: usize) {
        if let Down::H2(body) = self {
            crate::runtime::h2stream::release(body, n);
        }
    }

    /// Trailers after the body (http2 only; QUIC has none).
    pub async fn trailers(&mut self) -> io::Result<Option<HeaderMap>> {
        match self {
            Down::H2(body) => body.trailers().await.map_err(io::Error::other),
            Down::Quic(_) => Ok(None),
        }
    }
}

/// What an eyeball task asks of a QUIC connection's core.
pub(crate) struct OpenRequest {
    /// Preamble + framed `ConnectRequest`.
    head: Bytes,
    /// Body chunks (empty chunk: end); `None`: no body.
    up: Option<mpsc::Receiver<Bytes>>,
    down: mpsc::Sender<Bytes>,
    reply: oneshot::Sender<Result<ConnectResponse, String>>,
    /// Cancelled when the eyeball side drops its end.
    alive: oneshot::Sender<()>,
}

/// Serves one QUIC stream on the connection's core until it ends or either side goes away.
pub(crate) async fn run_quic_stream(conn: Connection, open: OpenRequest) {
    let OpenRequest {
        head,
        up,
        down,
        reply,
        mut alive,
    } = open;
    let opened = {
        let open = conn.open_bi_wait();
        let cancelled = alive.cancellation();
        futures_util::pin_mut!(open, cancelled);
        match futures_util::future::select(open, cancelled).await {
            futures_util::future::Either::Left((r, _)) => r,
            futures_util::future::Either::Right(_) => return,
        }
    };
    let (mut send, mut recv) = match opened {
        Ok(s) => s,
        Err(e) => {
            let _ = reply.send(Err(format!("opening a QUIC stream failed: {e}")));
            return;
        }
    };
    let aborted = {
        let upload = pin_fuse(send_side(&mut send, head, up));
        let download = pin_fuse(recv_side(&mut recv, reply, down));
        let cancelled = pin_fuse(alive.cancellation());
        let (mut upload, mut download, mut cancelled) = (upload, download, cancelled);
        let (mut up_done, mut down_done) = (false, false);
        poll_fn(|cx| {
            if !up_done && upload.as_mut().poll(cx).is_ready() {
                up_done = true;
            }
            if !down_done && let Poll::Ready(ok) = download.as_mut().poll(cx) {
                if !ok {
                    return Poll::Ready(true);
                }
                down_done = true;
            }
            if up_done && down_done {
                return Poll::Ready(false);
            }
            // The eyeball may drop its end once the response is complete; before that, its
            // going away aborts the stream.
            if !down_done && cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            Poll::Pending
        })
        .await
    };
    if aborted {
        let _ = send.reset(0u32.into());
        let _ = recv.stop(0u32.into());
    }
}

fn pin_fuse<F: Future>(f: F) -> Pin<Box<futures_util::future::Fuse<F>>> {
    Box::pin(f.fuse())
}

/// Writes the request head, then the body; finishes on the end marker, resets when the
/// eyeball side closes the channel without it.
async fn send_side(send: &mut SendStream, head: Bytes, up: Option<mpsc::Receiver<Bytes>>) {
    if send.write_all_chunks(&mut [head]).await.is_err() {
        return;
    }
    let Some(mut up) = up else {
        let _ = send.finish();
        return;
    };
    loop {
        match up.next().await {
            Some(chunk) if chunk.is_empty() => {
                let _ = send.finish();
                return;
            }
            Some(chunk) => {
                if send.write_all_chunks(&mut [chunk]).await.is_err() {
                    return;
                }
            }
            None => {
                let _ = send.reset(0u32.into());
                return;
            }
        }
    }
}

/// Reads the `ConnectResponse` (answering `reply`), then the body into `down`; true when the
/// body ended cleanly.
async fn recv_side(
    recv: &mut RecvStream,
    reply: oneshot::Sender<Result<ConnectResponse, String>>,
    mut down: mpsc::Sender<Bytes>,
) -> bool {
    let mut buf = BytesMut::new();
    let response = loop {
        let mut view = &buf[..];
        match ConnectResponse::decode(&mut view, &RESPONSE_LIMITS) {
            Ok(resp) => {
                let used = buf.len() - view.len();
                let _ = buf.split_to(used);
                break resp;
            }
            Err(e) if e.is_incomplete() => {}
            Err(e) => {
                let _ = reply.send(Err(format!("bad ConnectResponse: {e}")));
                return false;
            }
        }
        match recv.read_chunk(MAX_CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                let _ = reply.send(Err("stream ended before its ConnectResponse".to_owned()));
                return false;
            }
            Err(e) => {
                let _ = reply.send(Err(format!("reading the ConnectResponse: {e}")));
                return false;
            }
        }
    };
    if response.metadata.len() > MAX_RESPONSE_METADATA {
        let _ = reply.send(Err(format!(
            "ConnectResponse has {} metadata entries (most {MAX_RESPONSE_METADATA})",
            response.metadata.len()
        )));
        return false;
    }
    if reply.send(Ok(response)).is_err() {
        return false;
    }
    if !buf.is_empty() && down.send(buf.split().freeze()).await.is_err() {
        return false;
    }
    let mut chunks: [Bytes; GATHER] = Default::default();
    loop {
        // Everything already received, up to GATHER packet-sized chunks per call: one look at
        // the connection state (and one flow-control credit check) per batch, not per packet.
        let mut n = match recv.read_chunks(&mut chunks).await {
            Ok(Some(n)) => n,
            Ok(None) => return down.send(Bytes::new()).await.is_ok(),
            Err(_) => return false,
        };
        let mut ended = false;
        let chunk = if n == 1 {
            std::mem::take(&mut chunks[0])
        } else {
            // Gather into one message, reading on (without waiting) up to MAX_CHUNK.
            let mut gathered = BytesMut::with_capacity(MAX_CHUNK);
            loop {
                for c in &mut chunks[..n] {
                    gathered.extend_from_slice(c);
                    *c = Bytes::new();
                }
                // As many more chunks as surely fit (each is at most a packet).
                let room = ((MAX_CHUNK - gathered.len().min(MAX_CHUNK)) / PACKET).min(GATHER);
                if room == 0 {
                    break;
                }
                match recv.read_chunks(&mut chunks[..room]).now_or_never() {
                    Some(Ok(Some(more))) => n = more,
                    Some(Ok(None)) => {
                        ended = true;
                        break;
                    }
                    Some(Err(_)) => return false,
                    None => break,
                }
            }
            gathered.freeze()
        };
        if down.send(chunk).await.is_err() {
            return false;
        }
        if ended {
            return down.send(Bytes::new()).await.is_ok();
        }
    }
}

/// Serves one QUIC connection's open requests on its core until `closed` resolves (the
/// connection task ended) or every opener is gone; each stream runs as its own task.
/// (Not `Connection::closed`: compio-quic lets only one caller wait on it at a time.)
pub(crate) async fn serve_opens(
    conn: Connection,
    mut opens: mpsc::Receiver<OpenRequest>,
    closed: impl Future,
    mut spawn: impl FnMut(Connection, OpenRequest),
) {
    futures_util::pin_mut!(closed);
    loop {
        let next = opens.next();
        futures_util::pin_mut!(next);
        match futures_util::future::select(next, closed.as_mut()).await {
            futures_util::future::Either::Left((Some(open), _)) => spawn(conn.clone(), open),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(canonical("cf-ray"), "Cf-Ray");
        assert_eq!(canonical("te"), "Te");
    }

    #[test]
    fn connect_request_carries_method_host_and_headers() {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("https://app.example.com/a?b=1")
            .header("content-length", "5")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .header(crate::proto::headers::PROXY_CONNECTION_UPGRADE, "websocket")
            .body(())
            .unwrap();
        let cr = connect_request(&req, false, false);
        assert_eq!(cr.dest, "https://app.example.com/a?b=1");
        assert_eq!(cr.kind, ConnectionType::Http);
        let meta: Vec<(&str, &str)> = cr
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            meta,
            [
                ("HttpMethod", "POST"),
                ("HttpHost", "app.example.com"),
                ("HttpHeader:Content-Length", "5"),
                ("HttpHeader:X-Multi", "1"),
                ("HttpHeader:X-Multi", "2"),
            ]
        );
        req.headers_mut().remove("content-length");
        let cr = connect_request(&req, false, true);
        assert!(
            cr.metadata
                .contains(&("HttpHeader:Transfer-Encoding".into(), "chunked".into()))
        );
        assert_eq!(
            connect_request(&req, true, true).kind,
            ConnectionType::Websocket
        );
    }

    #[test]
    fn quic_response_status_headers_and_errors() {
        let (_tx, rx) = mpsc::channel(1);
        let (_a, alive) = oneshot::channel();
        let down = || QuicDown {
            rx: mpsc::channel(1).1,
            _alive: oneshot::channel().1,
            ended: false,
        };
        let ok = quic_response(
            ConnectResponse {
                error: String::new(),
                metadata: vec![
                    ("HttpStatus".into(), "201".into()),
                    ("HttpHeader:Content-Type".into(), "text/plain".into()),
                    ("HttpHeader:Bad:Name".into(), "x".into()),
                    ("Other".into(), "y".into()),
                ],
            },
            QuicDown {
                rx,
                _alive: alive,
                ended: false,
            },
        );
        assert_eq!(ok.status, StatusCode::CREATED);
        assert!(!ok.connector_error);
        let mut seen = Vec::new();
        ok.for_each_header(|n, v| seen.push((n.to_vec(), v.to_vec())));
        assert_eq!(seen, [(b"Content-Type".to_vec(), b"text/plain".to_vec())]);
        let failed = quic_response(
            ConnectResponse {
                error: "dial tcp: refused".into(),
                metadata: vec![("HttpStatus".into(), "502".into())],
            },
            down(),
        );
        assert!(failed.connector_error);
        let no_status = quic_response(ConnectResponse::default(), down());
        assert!(no_status.connector_error);
        let ws = quic_response(
            ConnectResponse {
                error: String::new(),
                metadata: vec![("HttpStatus".into(), "101".into())],
            },
            down(),
        );
        assert!(ws.switched());
    }
}
