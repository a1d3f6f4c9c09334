//! The stream phase of the connector: one edge-opened stream served from its request metadata
//! to its last byte. [`dispatch`] classifies a stream and picks its service; the services talk
//! to the edge only through the transport-agnostic interface below, which the HTTP/2
//! transport implements in [`h2`] and the QUIC transport implements for its streams.
//!
//! The interface, per stream: [`StreamHead`] (request metadata in), a [`BodyReader`] (the
//! visitor's body, with flow-control credit released only once the bytes went onward), a
//! [`ResponseSender`] (the response head, or an error mapped by [`StreamError::answer`]) that
//! yields a [`BodyWriter`] (the response body, sent within the transport's window). Failures
//! are [`StreamError`]s. Everything runs on the core that owns the connection (no `Send`).
//! [`serve`] and every service are generic over these traits (no `Box<dyn>` per stream): each
//! transport gets its own monomorphised copy of the pipeline.
//!
//! Beyond the request/response basics, the services need two things from a transport:
//! [`ResponseSender::refuse`] (a stream the connector never serves: a second HTTP/2 control
//! stream) and [`ResponseSender::send_plain`] (a reply that is not an origin's, without response
//! meta: the HTTP/2 configuration-push answer). A test-only transport over in-memory state lives
//! in `mem` (with the pipeline's unit tests in `pipeline_tests`).
//!
//! Files: [`dispatch`] (classify, ingress, the one failure path), [`http`] (HTTP origins, with
//! [`pipe`] for upgraded connections), [`tcp`] (WebSocket-wrapped and private TCP),
//! [`socks`], [`hello`], [`status`], [`config_push`], [`access`]; [`websocket`] bridges frames
//! ([`crate::proto::ws`] is the codec); [`response`] builds HTTP/2 response heads.
//!
//! # Memory per stream (budget)
//! - Idle WebSocket / TCP stream, beyond the socket and h2's own stream state (h2 keeps one
//!   slab entry of a few hundred bytes per open stream): the stream's task (the `serve`
//!   future, allocated whole by the executor), one origin read in flight (compio's op, a
//!   few hundred bytes, no buffer) and a few small handles; nothing else.
//!   * No origin read buffer: origin sockets of upgrades and stream services are bare (no
//!     compat buffers), and a waiting read takes a buffer from the core's provided-buffer pool
//!     only when data arrives (`origin::OriginRead::read_idle`, io_uring driver; the poll
//!     driver holds one 4 KiB read buffer). The WebSocket-wrapped TCP bridge and SOCKS read the
//!     same way; TLS origins read lean through rustls (`runtime::h2io::RustlsIo`).
//!   * No request data: everything up to the response head (the request's head, ingress
//!     match, dialing, the HTTP exchange, the origin request and its encoded head) runs in one
//!     box that [`serve`] allocates per stream and frees once the 101 went out
//!     (`http::proxy_http` hands the answered connection back as a `pipe::Upgraded`).
//!   * A small task: an upgraded stream's task then holds only the piping
//!     (`pipe::Upgraded::pipe`): the origin halves, the body reader and writer, the idle
//!     origin read and the wait for the next edge chunk. Origin writes and bulk reads are
//!     boxed per operation (they exist only while data flows); the http2 transport spawns the
//!     task with the accepted stream still boxed (a future keeps what it captures for its
//!     whole life). Measured (`size_of_val` of the spawned future, quickbench build): 1,192
//!     bytes, was 4,952. Services that run whole (WebSocket-wrapped TCP, private TCP, SOCKS,
//!     hello) still hold the start box and their own box while they idle.
//!   * At most one pending pong (125 bytes) and no reassembly buffer while no frame is partly
//!     received.
//!   * The allocator: mimalloc is built without transparent huge pages (`main.rs`), which
//!     made every 2 MiB heap region a stream touched resident whole.
//!
//!   Measured (connector, 2,000 idle upgraded WebSockets via `ringflare bench --mode ws-idle`
//!   through 4 HA connections, http2, quickbench build, io_uring, a loaded 2-core machine;
//!   medians of 3 runs, RSS while held minus RSS at rest): 5.2 KiB per stream, was 12.5; at
//!   rest 15 MiB, was 26; peak RSS 33 MiB, was 54. The peak is now mostly the opening burst
//!   (streams between accept and their 101, each with its request and exchange state), not
//!   the idle streams. 10,000 idle WebSockets (`bench e2e --workloads ws_idle`, one run each):
//!   peak RSS 74.5 MiB over http2 (was 126.7; cloudflared 2026.8.2: 530.7), 83.5 MiB over
//!   QUIC (was 131.9; cloudflared: 583.2).
//! - In flight, upstream: at most one received DATA frame, whose window is released only once
//!   its bytes went into the origin socket, plus a WebSocket frame being reassembled (at most
//!   `MAX_FRAME`, paced by the window).
//! - In flight, downstream: one origin read (4 KiB growing to 64 KiB on full reads) plus what
//!   h2 queues, which is bounded by the edge's stream window: the connector asks for send
//!   capacity before reading more from the origin. Decoded body chunks smaller than 16 KiB are
//!   batched (one DATA frame per origin read), so the queue never holds tiny frames.
//! - An HTTP request in flight: its task plus the start box and, inside it, the boxed
//!   exchange (response head, body framing, the upload alongside), freed when the response
//!   ends.
//! - HTTP origin connections: plain TCP and unix ones are bare sockets (no buffers while
//!   pooled); TLS origins hold rustls' own state and no read buffer while idle.

#![forbid(unsafe_code)]

pub mod access;
pub(crate) mod config_push;
mod dispatch;
pub mod error;
pub mod h2;
pub mod hello;
pub mod http;
#[cfg(test)]
pub mod mem;
pub mod pipe;
pub mod quic;
pub mod response;
pub mod socks;
mod status;
mod tcp;
pub mod websocket;

#[cfg(test)]
mod pipeline_tests;

use std::future::Future;
use std::task::{Context, Poll};

use ::http::{HeaderMap, Method, Uri};
use bytes::Bytes;

pub use dispatch::serve;
pub use error::{Answer, Cause, Side, StreamError};

use crate::proto::http2::RequestKind;

/// Request metadata of one stream, as the transport decoded it.
#[derive(Debug, Clone)]
pub struct StreamHead {
    pub kind: RequestKind,
    pub method: Method,
    /// Authority and path-and-query as the edge sent them.
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// A response head from the origin (or a fixed status): the transport encodes it (HTTP/2:
/// `:status`, serialized headers and response meta; 101 travels as 200).
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    pub status: u16,
    /// Origin header fields, names in Go's canonical form, in arrival order.
    pub headers: Vec<(String, Bytes)>,
}

/// The visitor's request body.
pub trait BodyReader {
    /// The next chunk; `Ok(None)` at the end of the body. The chunk's flow-control credit stays
    /// held until [`BodyReader::release`].
    fn chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, StreamError>>;
    /// Returns `n` bytes of credit to the edge, once they were written onward (backpressure).
    fn release(&mut self, n: usize);
    /// Whether the body has already ended (or there is none).
    fn is_end(&self) -> bool;
}

/// The response body towards the edge.
pub trait BodyWriter {
    /// Sends `data`, waiting for the transport's send window (never queues beyond it).
    fn write(&mut self, data: Bytes) -> impl Future<Output = Result<(), StreamError>>;
    /// Ends the body, with trailers when there are any.
    fn finish(&mut self, trailers: Option<HeaderMap>) -> Result<(), StreamError>;
    /// Sends `data` as the end of the body (no trailers). A transport that can mark its last
    /// frame as the end (HTTP/2 END_STREAM on the DATA frame) does so, instead of an empty
    /// frame after it that would leave in a write of its own.
    fn write_last(&mut self, data: Bytes) -> impl Future<Output = Result<(), StreamError>> {
        async move {
            self.write(data).await?;
            self.finish(None)
        }
    }
    /// Aborts the body: the visitor sees an incomplete response, never a clean end.
    fn abort(&mut self);
    /// Ready once the edge has reset (cancelled) the stream.
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<StreamError>;
}

/// Sends the response head, once.
pub trait ResponseSender {
    type Writer: BodyWriter;
    /// Sends the head; with `end` the response has no body and no writer is returned.
    fn send(&mut self, head: &ResponseHead, end: bool)
    -> Result<Option<Self::Writer>, StreamError>;
    /// Answers a failure before any head was sent: 502, 403 or a reset, as `err.answer` says.
    fn fail(&mut self, err: &StreamError);
    /// Refuses a stream the connector never serves (HTTP/2: a second control stream, reset
    /// with `REFUSED_STREAM`).
    fn refuse(&mut self);
    /// A reply that is not an origin's: a bare `status` and a complete `body`, with no
    /// serialized headers and no response meta (the answer to an HTTP/2 configuration push).
    fn send_plain(&mut self, status: u16, body: Bytes) -> Result<(), StreamError>;
    /// Ready once the edge has reset (cancelled) the stream.
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<StreamError>;
}

/// One edge-opened stream of some transport.
pub trait EdgeStream {
    type Body: BodyReader;
    type Respond: ResponseSender;
    /// Splits the stream into its metadata, request body and response side.
    fn into_parts(self) -> (StreamHead, Self::Body, Self::Respond);
}

/// Resolves when the edge resets the stream: race it against origin work to cancel that work.
pub async fn reset_by_edge<R: ResponseSender>(respond: &mut R) -> StreamError {
    std::future::poll_fn(|cx| respond.poll_reset(cx)).await
}
