//! The stream interface over QUIC data streams (spec §4.2-§4.3): an edge-opened bidirectional
//! stream starts with the data-stream preamble and one capnp `ConnectRequest` (destination,
//! type, metadata `HttpMethod`, `HttpHost`, `HttpHeader:<Name>`), then the request body as raw
//! bytes. The connector answers with the preamble and a `ConnectResponse` (`error`, or metadata
//! `HttpStatus` and `HttpHeader:<Name>` for every origin header value, 101 staying 101; empty
//! metadata for a TCP acknowledgement), then the response body as raw bytes. Trailers are
//! dropped (QUIC has none). WebSocket and TCP streams carry raw bytes both ways after the
//! `ConnectResponse`.
//!
//! Close rules (§4.2): a finished stream closes its write side with FIN (and stops its read
//! side when dropped); a failure after the `ConnectResponse` resets the write side with code 0.
//!
//! Bounds: the `ConnectRequest` is refused beyond [`REQUEST_LIMITS`] before it is read whole,
//! at most [`MAX_METADATA`] entries are accepted, and the request body is read one chunk of at
//! most [`MAX_CHUNK`] bytes at a time. QUIC returns flow-control credit as bytes are read, and
//! the body reader reads the next chunk only when the service asks for it (after the previous
//! one went onward), so unreleased bytes are bounded by the stream window plus one chunk:
//! [`BodyReader::release`] has nothing left to do.

#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use compio::quic::{RecvStream, SendStream};
use futures_util::FutureExt;
use http::header::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Uri};

use super::{
    Answer, BodyReader, BodyWriter, Cause, EdgeStream, ResponseHead, ResponseSender, Side,
    StreamError, StreamHead,
};
use crate::proto::connect::{ConnectResponse, RequestMessage, encode_response_head};
use crate::proto::error::DecodeError;
use crate::proto::framing::{FrameLimits, StreamSignature};
use crate::proto::http2::RequestKind;
use crate::proto::quic_meta::{HTTP_STATUS, MetaError, QuicRequestHead, RequestHeadBuilder};

/// Bounds on one `ConnectRequest`: one segment is what legitimate edges send (a few allowed),
/// 256 KiB in all (Go's default header limit is 1 MiB, but the edge caps visitor heads far
/// lower).
pub const REQUEST_LIMITS: FrameLimits = FrameLimits {
    max_segments: 8,
    max_words: 32 * 1024,
};

/// Most metadata entries (headers included) one `ConnectRequest` may carry.
pub const MAX_METADATA: usize = 1024;

/// Most bytes one body read takes from the stream.
pub const MAX_CHUNK: usize = 64 * 1024;

/// QUIC application error code for every reset and stop (cloudflared uses 0).
const CODE: u32 = 0;

/// Metadata flag of a flow refused by `warp-routing.maxActiveFlows` (spec §4.3).
const RATE_LIMITED_KEY: &str = "FlowConnectRateLimited";

/// What an edge-opened stream turned out to be.
// Moved once per stream, never stored: boxing the large variant would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Opened {
    /// A data stream, ready for [`super::serve`].
    Data(QuicStream),
    /// An RPC stream (`CloudflaredServer` calls); its signature is consumed and `pending`
    /// holds any bytes read past it.
    Rpc {
        send: SendStream,
        recv: RecvStream,
        pending: Bytes,
    },
}

/// Why an edge-opened stream could not be classified or decoded.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("reading stream preamble: {0}")]
    Read(String),
    #[error("stream ended before its first message")]
    Eof,
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("too many metadata entries ({0})")]
    TooManyEntries(usize),
}

/// Reads an edge-opened stream's signature and, for a data stream, its `ConnectRequest`.
/// On an error the stream is reset (cloudflared's `CancelWrite(0)`).
pub async fn open(mut send: SendStream, recv: RecvStream) -> Result<Opened, OpenError> {
    let (recv, rest) = match read_first(recv).await {
        Ok(r) => r,
        Err(e) => {
            let _ = send.reset(CODE.into());
            return Err(e);
        }
    };
    Ok(match rest {
        First::Rpc(pending) => Opened::Rpc {
            send,
            recv,
            pending,
        },
        First::Data(head, has_body, pending) => Opened::Data(QuicStream {
            respond: QuicRespond {
                send: Some(send),
                tcp: head.kind == RequestKind::TcpStream,
            },
            head,
            body: QuicBody {
                recv,
                pending,
                has_body,
                ended: !has_body,
                fin_read: false,
                error: None,
            },
        }),
    })
}

#[allow(clippy::large_enum_variant)]
enum First {
    Rpc(Bytes),
    Data(StreamHead, bool, Bytes),
}

async fn read_first(mut recv: RecvStream) -> Result<(RecvStream, First), OpenError> {
    // The preamble and the whole request usually arrive in the first chunk: they are decoded
    // from it in place and the body bytes behind them stay a slice of it (no copy).
    let mut data = Bytes::new();
    let signature = loop {
        match StreamSignature::decode(&mut &data[..]) {
            Ok(s) => break s,
            Err(e) if e.is_incomplete() => read_more(&mut recv, &mut data).await?,
            Err(e) => return Err(e.into()),
        }
    };
    data.advance(signature.wire_len());
    if signature != StreamSignature::Data {
        return Ok((recv, First::Rpc(data)));
    }
    let (head, has_body) = loop {
        match decode_request(&mut data)? {
            Some(r) => break r,
            None => read_more(&mut recv, &mut data).await?,
        }
    };
    Ok((recv, First::Data(head, has_body, data)))
}

/// Appends the next chunk of the stream to `data`.
async fn read_more(recv: &mut RecvStream, data: &mut Bytes) -> Result<(), OpenError> {
    match recv.read_chunk(MAX_CHUNK, true).await {
        Ok(Some(chunk)) if data.is_empty() => {
            *data = chunk.bytes;
            Ok(())
        }
        Ok(Some(chunk)) => {
            let mut joined = BytesMut::with_capacity(data.len() + chunk.bytes.len());
            joined.extend_from_slice(data);
            joined.extend_from_slice(&chunk.bytes);
            *data = joined.freeze();
            Ok(())
        }
        Ok(None) => Err(OpenError::Eof),
        Err(e) => Err(OpenError::Read(e.to_string())),
    }
}

/// Decodes the `ConnectRequest` at the front of `data` (the preamble already consumed) into
/// the stream head and whether a body follows, consuming it; `None` while it is incomplete.
/// The metadata is read in place from the capnp message (see [`RequestMessage`]).
fn decode_request(data: &mut Bytes) -> Result<Option<(StreamHead, bool)>, OpenError> {
    let mut view = &data[..];
    let message = match RequestMessage::decode(&mut view, &REQUEST_LIMITS) {
        Ok(m) => m,
        Err(e) if e.is_incomplete() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let used = data.len() - view.len();
    data.advance(used);
    let request = message.view()?;
    let entries = request.metadata()?;
    if entries.len() > MAX_METADATA {
        return Err(OpenError::TooManyEntries(entries.len()));
    }
    let mut meta = RequestHeadBuilder::with_capacity(entries.len());
    for entry in entries {
        let (key, val) = entry?;
        meta.push(key, val)?;
    }
    let head = meta.finish(request.dest()?, request.kind()?)?;
    Ok(Some(stream_head(head)))
}

/// The interpreted request metadata as a [`StreamHead`] (as cloudflared's
/// `buildHTTPRequest`), and whether the stream carries a body.
fn stream_head(h: QuicRequestHead) -> (StreamHead, bool) {
    let uri = match h.kind {
        // `dest` is `host:port`: the authority of the private TCP destination.
        RequestKind::TcpStream => h.uri,
        _ => http_uri(h.uri, &h.host),
    };
    let mut headers = h.headers;
    if uri.authority().is_none()
        && !h.host.is_empty()
        && let Ok(v) = HeaderValue::from_str(&h.host)
    {
        headers.insert(http::header::HOST, v);
    }
    (
        StreamHead {
            kind: h.kind,
            method: h.method,
            uri,
            headers,
        },
        h.has_body,
    )
}

/// The request URI: `dest`'s path and query under the eyeball's host (ingress matches on the
/// host and the path; the origin transport replaces scheme and host). The path and query are
/// moved from the parsed `dest`, not parsed again.
fn http_uri(dest: Uri, host: &str) -> Uri {
    let parts = dest.into_parts();
    let authority = if host.is_empty() {
        parts.authority
    } else {
        Authority::try_from(host).ok()
    };
    let mut out = http::uri::Parts::default();
    out.path_and_query = Some(
        parts
            .path_and_query
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    if authority.is_some() {
        out.scheme = Some(Scheme::HTTP);
        out.authority = authority;
    }
    Uri::from_parts(out).unwrap_or_else(|_| Uri::from_static("/"))
}

/// An edge-opened QUIC data stream.
pub struct QuicStream {
    head: StreamHead,
    body: QuicBody,
    respond: QuicRespond,
}

impl EdgeStream for QuicStream {
    type Body = QuicBody;
    type Respond = QuicRespond;

    fn into_parts(self) -> (StreamHead, QuicBody, QuicRespond) {
        (self.head, self.body, self.respond)
    }
}

fn edge_error(e: impl std::fmt::Display) -> StreamError {
    StreamError::new(Side::Edge, Cause::EdgeTransport(e.to_string()))
}

fn read_error(e: compio::quic::ReadError) -> StreamError {
    match e {
        compio::quic::ReadError::Reset(_) => edge_reset(),
        e => edge_error(e),
    }
}

fn edge_reset() -> StreamError {
    StreamError::new(Side::Edge, Cause::EdgeReset)
}

/// The request body of a QUIC data stream.
pub struct QuicBody {
    recv: RecvStream,
    /// Body bytes read together with the `ConnectRequest`.
    pending: Bytes,
    has_body: bool,
    ended: bool,
    /// The stream's end was read (quinn then sends no STOP_SENDING when it is dropped).
    fin_read: bool,
    /// A read error met while gathering, reported by the next call.
    error: Option<compio::quic::ReadError>,
}

impl BodyReader for QuicBody {
    async fn chunk(&mut self) -> Result<Option<Bytes>, StreamError> {
        if !self.has_body {
            return Ok(None);
        }
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        if let Some(e) = self.error.take() {
            return Err(read_error(e));
        }
        if self.ended {
            return Ok(None);
        }
        let first = match self.recv.read_chunk(MAX_CHUNK, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => {
                self.ended = true;
                self.fin_read = true;
                return Ok(None);
            }
            Err(e) => return Err(read_error(e)),
        };
        // quinn hands out one received frame (about a packet) per read: gather what has
        // already arrived, so the origin gets one write per MAX_CHUNK rather than per packet.
        let mut gathered: Option<BytesMut> = None;
        while gathered.as_ref().map_or(first.len(), BytesMut::len) < MAX_CHUNK {
            let room = MAX_CHUNK - gathered.as_ref().map_or(first.len(), BytesMut::len);
            match self.recv.read_chunk(room, true).now_or_never() {
                Some(Ok(Some(next))) => gathered
                    .get_or_insert_with(|| {
                        let mut g = BytesMut::with_capacity(MAX_CHUNK);
                        g.extend_from_slice(&first);
                        g
                    })
                    .extend_from_slice(&next.bytes),
                Some(Ok(None)) => {
                    self.ended = true;
                    self.fin_read = true;
                    break;
                }
                // The bytes gathered go first; the error comes with the next call.
                Some(Err(e)) => {
                    self.error = Some(e);
                    break;
                }
                None => break,
            }
        }
        Ok(Some(gathered.map_or(first, BytesMut::freeze)))
    }

    fn release(&mut self, _n: usize) {
        // QUIC returned the credit when the chunk was read (see the module docs).
    }

    fn is_end(&self) -> bool {
        self.ended && self.pending.is_empty()
    }
}

impl Drop for QuicBody {
    fn drop(&mut self) {
        // A request without a body (or one read to its length): the edge's FIN has usually
        // arrived by now. Reading it marks the receive side complete, so dropping it sends no
        // STOP_SENDING (quinn sends one for a stream whose end was never read, and the edge
        // answers it). Done here, at the stream's end, so that whatever quinn sends for it
        // leaves with the response rather than in a packet of its own.
        if !self.fin_read && self.error.is_none() {
            let _ = self.recv.read_chunk(MAX_CHUNK, true).now_or_never();
        }
    }
}

/// The response side of a QUIC data stream.
pub struct QuicRespond {
    /// Taken by the body writer once the head went out.
    send: Option<SendStream>,
    /// A TCP stream: its acknowledgement carries no status.
    tcp: bool,
}

/// Encodes the preamble and a `ConnectResponse`.
fn encode_response(error: String, metadata: Vec<(String, String)>) -> Bytes {
    let mut out = BytesMut::new();
    ConnectResponse { error, metadata }.encode(&mut out);
    out.freeze()
}

/// Writes as much of `data` as the stream takes right now, without waiting; what is left
/// stays in `data`.
fn write_now(send: &mut SendStream, data: &mut Bytes) -> Result<(), StreamError> {
    let mut cx = Context::from_waker(Waker::noop());
    while !data.is_empty() {
        let mut bufs = [std::mem::take(data)];
        let res = {
            let fut = pin!(send.write_chunks(&mut bufs));
            fut.poll(&mut cx)
        };
        let [rest] = bufs;
        *data = rest;
        match res {
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Err(edge_error(e)),
            Poll::Pending => return Ok(()),
        }
    }
    Ok(())
}

/// Sends `data` then ends the stream: at once when the stream takes it now, else from a small
/// task on this core (flow control is blocking the write; the caller cannot wait).
fn write_and_finish(mut send: SendStream, mut data: Bytes) {
    if write_now(&mut send, &mut data).is_err() {
        return;
    }
    if data.is_empty() {
        let _ = send.finish();
        return;
    }
    compio::runtime::spawn(async move {
        if send.write_all_chunks(&mut [data]).await.is_ok() {
            let _ = send.finish();
        }
    })
    .detach();
}

/// `poll_reset` for a send stream: the edge's STOP_SENDING, or the connection's end.
fn poll_stopped(send: &mut SendStream, cx: &mut Context<'_>) -> Poll<StreamError> {
    let fut = pin!(send.stopped());
    match fut.poll(cx) {
        Poll::Ready(Ok(Some(_))) => Poll::Ready(edge_reset()),
        Poll::Ready(Err(e)) => Poll::Ready(edge_error(e)),
        // Finished or reset by us: nothing will come from the edge any more.
        Poll::Ready(Ok(None)) | Poll::Pending => Poll::Pending,
    }
}

impl QuicRespond {
    /// The preamble and `ConnectResponse` of `head`, encoded straight from it.
    fn encode_head(&self, head: &ResponseHead) -> Bytes {
        if self.tcp {
            return encode_response(String::new(), Vec::new());
        }
        let code = http::StatusCode::from_u16(head.status);
        let text;
        let status = match &code {
            Ok(c) => c.as_str(),
            Err(_) => {
                text = head.status.to_string();
                &text
            }
        };
        let headers = head.headers.iter().map(|(n, v)| (n.as_str(), v.as_ref()));
        encode_response_head(status, headers)
    }
}

impl ResponseSender for QuicRespond {
    type Writer = QuicWriter;

    fn send(&mut self, head: &ResponseHead, end: bool) -> Result<Option<QuicWriter>, StreamError> {
        let Some(mut send) = self.send.take() else {
            return Err(edge_error("response already sent"));
        };
        let mut data = self.encode_head(head);
        if end {
            write_and_finish(send, data);
            return Ok(None);
        }
        write_now(&mut send, &mut data)?;
        Ok(Some(QuicWriter {
            send: Some(send),
            pending: data,
        }))
    }

    fn fail(&mut self, err: &StreamError) {
        let Some(mut send) = self.send.take() else {
            return;
        };
        let (error, metadata) = match err.answer(false) {
            Answer::Reset => {
                let _ = send.reset(CODE.into());
                return;
            }
            Answer::Forbidden => (
                String::new(),
                vec![(HTTP_STATUS.to_owned(), "403".to_owned())],
            ),
            Answer::BadGateway => {
                let rate_limited =
                    matches!(&err.cause, Cause::Refused(m) if m == super::tcp::RATE_LIMITED);
                let metadata = if rate_limited {
                    vec![(RATE_LIMITED_KEY.to_owned(), "true".to_owned())]
                } else {
                    Vec::new()
                };
                (err.edge_message(), metadata)
            }
        };
        write_and_finish(send, encode_response(error, metadata));
    }

    fn refuse(&mut self) {
        if let Some(mut send) = self.send.take() {
            let _ = send.reset(CODE.into());
        }
    }

    fn send_plain(&mut self, status: u16, body: Bytes) -> Result<(), StreamError> {
        let Some(send) = self.send.take() else {
            return Err(edge_error("response already sent"));
        };
        let head = encode_response(
            String::new(),
            vec![(HTTP_STATUS.to_owned(), status.to_string())],
        );
        let mut all = BytesMut::with_capacity(head.len() + body.len());
        all.extend_from_slice(&head);
        all.extend_from_slice(&body);
        write_and_finish(send, all.freeze());
        Ok(())
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<StreamError> {
        match self.send.as_mut() {
            Some(send) => poll_stopped(send, cx),
            None => Poll::Pending,
        }
    }
}

/// The response body of a QUIC data stream.
pub struct QuicWriter {
    /// `None` once finished with the head still blocked (a task completes it).
    send: Option<SendStream>,
    /// The part of the `ConnectResponse` the stream did not take yet; goes out first.
    pending: Bytes,
}

impl BodyWriter for QuicWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StreamError> {
        let Some(send) = self.send.as_mut() else {
            return Err(edge_error("stream already finished"));
        };
        let res = if self.pending.is_empty() {
            send.write_all_chunks(&mut [data]).await
        } else {
            let head = std::mem::take(&mut self.pending);
            send.write_all_chunks(&mut [head, data]).await
        };
        res.map_err(|e| match e {
            compio::quic::WriteError::Stopped(_) => edge_reset(),
            e => edge_error(e),
        })
    }

    fn finish(&mut self, _trailers: Option<HeaderMap>) -> Result<(), StreamError> {
        // QUIC carries no trailers (cloudflared drops them too).
        let Some(mut send) = self.send.take() else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return send.finish().map_err(edge_error);
        }
        write_and_finish(send, std::mem::take(&mut self.pending));
        Ok(())
    }

    fn abort(&mut self) {
        if let Some(send) = self.send.as_mut() {
            let _ = send.reset(CODE.into());
        }
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<StreamError> {
        match self.send.as_mut() {
            Some(send) => poll_stopped(send, cx),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::proto::connect::{ConnectRequest, ConnectionType};
    use crate::proto::quic_meta::response_metadata;

    fn req(kind: ConnectionType, dest: &str, meta: &[(&str, &str)]) -> ConnectRequest {
        ConnectRequest {
            dest: dest.into(),
            kind,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The request as the edge sends it, decoded as the connector does (preamble skipped).
    fn stream_head(r: &ConnectRequest) -> Result<(StreamHead, bool), OpenError> {
        let mut out = BytesMut::new();
        r.encode(&mut out);
        out.extend_from_slice(b"body");
        let mut data = out.freeze();
        data.advance(StreamSignature::Data.wire_len());
        let whole = data.clone();
        // Incomplete until the last byte of the message is there, and nothing consumed.
        let mut short = whole.slice(..whole.len() - 5);
        assert!(decode_request(&mut short)?.is_none());
        assert_eq!(short.len(), whole.len() - 5);
        let head = decode_request(&mut data)?.expect("complete");
        assert_eq!(&data[..], b"body");
        Ok(head)
    }

    #[test]
    fn metadata_becomes_the_stream_head() {
        let r = req(
            ConnectionType::Http,
            "https://example.com/a/b?c=1",
            &[
                ("HttpMethod", "POST"),
                ("HttpHost", "tunnel.test"),
                ("HttpHeader:Content-Length", "5"),
                ("HttpHeader:X-Two", "1"),
                ("HttpHeader:X-Two", "2"),
            ],
        );
        let (h, body) = stream_head(&r).unwrap();
        assert!(body);
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.uri.scheme_str(), Some("http"));
        assert_eq!(h.uri.authority().unwrap().as_str(), "tunnel.test");
        assert_eq!(h.uri.path_and_query().unwrap().as_str(), "/a/b?c=1");
        assert_eq!(h.headers.get_all("x-two").iter().count(), 2);
        assert_eq!(h.kind, RequestKind::Http);
        // No HttpHost: the URL's own host; a bad one leaves the path alone.
        let r = req(ConnectionType::Http, "http://a.test:8080/p?q", &[]);
        let (h, _) = stream_head(&r).unwrap();
        assert_eq!(h.uri.to_string(), "http://a.test:8080/p?q");
        let r = req(ConnectionType::Http, "/p", &[("HttpHost", "bad host")]);
        let (h, _) = stream_head(&r).unwrap();
        assert_eq!(h.uri.to_string(), "/p");
    }

    #[test]
    fn no_length_means_no_body_and_colons_are_refused() {
        let r = req(ConnectionType::Http, "/x", &[("HttpMethod", "POST")]);
        let (h, body) = stream_head(&r).unwrap();
        assert!(!body);
        assert_eq!(h.uri.path(), "/x");
        let r = req(
            ConnectionType::Http,
            "/x",
            &[("HttpHeader:Transfer-Encoding", "chunked")],
        );
        assert!(stream_head(&r).unwrap().1);
        let r = req(ConnectionType::Http, "/x", &[("HttpHeader:A:B", "v")]);
        assert!(matches!(stream_head(&r), Err(OpenError::Meta(_))));
        let r = req(ConnectionType::Tcp, "10.0.0.1:22", &[]);
        let (h, body) = stream_head(&r).unwrap();
        assert!(body);
        assert_eq!(h.kind, RequestKind::TcpStream);
        assert_eq!(h.uri.authority().unwrap().as_str(), "10.0.0.1:22");
    }

    #[test]
    fn too_many_entries_are_refused() {
        let meta: Vec<(String, String)> = (0..=MAX_METADATA)
            .map(|i| (format!("HttpHeader:X-{i}"), "v".to_owned()))
            .collect();
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (&**k, &**v)).collect();
        let r = req(ConnectionType::Http, "/", &meta);
        assert!(matches!(
            stream_head(&r),
            Err(OpenError::TooManyEntries(n)) if n == MAX_METADATA + 1
        ));
    }

    #[test]
    fn response_head_encodes_as_its_metadata() {
        let head = ResponseHead {
            status: 200,
            headers: vec![
                ("Content-Type".into(), Bytes::from_static(b"text/plain")),
                ("Set-Cookie".into(), Bytes::from_static(b"a=1")),
                ("Set-Cookie".into(), Bytes::from_static(b"b=\xff")),
                ("X-Long".into(), Bytes::from(vec![b'x'; 3000])),
            ],
        };
        let respond = QuicRespond {
            send: None,
            tcp: false,
        };
        let got = respond.encode_head(&head);
        let want = encode_response(
            String::new(),
            response_metadata(
                head.status,
                head.headers.iter().map(|(n, v)| (n.as_str(), v.as_ref())),
            ),
        );
        assert_eq!(got, want);
        let mut view = &got[..];
        let back = ConnectResponse::decode(&mut view, &REQUEST_LIMITS).unwrap();
        assert_eq!(back.metadata[0], ("HttpStatus".into(), "200".into()));
        assert_eq!(back.metadata.len(), 5);
        // A status outside http's range still says what the origin sent.
        let odd = ResponseHead {
            status: 1000,
            headers: Vec::new(),
        };
        let mut view = &respond.encode_head(&odd)[..];
        let back = ConnectResponse::decode(&mut view, &REQUEST_LIMITS).unwrap();
        assert_eq!(back.metadata, [("HttpStatus".into(), "1000".into())]);
    }

    /// A bodiless request whose FIN came with it: serving it and dropping the stream sends
    /// the edge no STOP_SENDING (quinn sends one for a receive side whose end was never read).
    #[test]
    fn a_bodiless_request_ends_without_stop_sending() {
        use crate::quic::{QuicSettings, testing::Loopback};
        use crate::runtime::{DriverKind, build_runtime};

        let rt = build_runtime(DriverKind::Poll).unwrap();
        rt.block_on(async move {
            let lo = Loopback::new(&QuicSettings::default());
            let (edge_conn, conn) = lo.pair().await;
            // The connector serves two GETs in turn; the second one's answer leaves after the
            // first stream was dropped, so anything that drop sent has arrived by then.
            let serve = compio::runtime::spawn(async move {
                for _ in 0..2 {
                    let (send, recv) = conn.accept_bi().await.unwrap();
                    let Ok(Opened::Data(stream)) = open(send, recv).await else {
                        panic!("not a data stream");
                    };
                    let (head, body, mut respond) = stream.into_parts();
                    assert_eq!(head.uri.path(), "/x");
                    drop(body);
                    let ok = ResponseHead {
                        status: 204,
                        headers: Vec::new(),
                    };
                    assert!(respond.send(&ok, true).unwrap().is_none());
                }
                conn
            });
            for _ in 0..2 {
                let (mut send, mut recv) = edge_conn.open_bi().unwrap();
                let mut out = BytesMut::new();
                req(ConnectionType::Http, "/x", &[("HttpHost", "t.test")]).encode(&mut out);
                send.write_all_chunks(&mut [out.freeze()]).await.unwrap();
                send.finish().unwrap();
                let compio::BufResult(r, got) = recv.read_to_end(Vec::new()).await;
                r.unwrap();
                let back = ConnectResponse::decode(&mut &got[..], &REQUEST_LIMITS).unwrap();
                assert_eq!(back.metadata, [("HttpStatus".into(), "204".into())]);
            }
            let _conn = serve.await.expect("the connector side");
            assert_eq!(edge_conn.stats().frame_rx.stop_sending, 0);
        });
    }

    #[test]
    fn oversized_request_is_refused_before_it_is_read() {
        let big = "x".repeat(400 * 1024);
        let r = req(ConnectionType::Http, "/", &[("HttpHeader:X-Big", &big)]);
        let mut out = BytesMut::new();
        r.encode(&mut out);
        // The frame header (segment table) only, after the preamble: the size check needs no more.
        let mut data = out.freeze().slice(8..8 + 64);
        let err = decode_request(&mut data).unwrap_err();
        assert!(matches!(err, OpenError::Decode(_)), "{err}");
    }
}
