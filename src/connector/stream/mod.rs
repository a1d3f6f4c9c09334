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
//!
//! # Memory per stream
//! At rest (an idle WebSocket or TCP stream): the service's state (a few hundred bytes), the
//! transport's own stream state, and the origin socket; no read buffer is held while no bytes
//! are in flight. In flight: at most one received DATA frame (window held until written to the
//! origin) upstream, and downstream one origin read (bounded by the read size) plus what the
//! transport's send window allows.

#![forbid(unsafe_code)]

mod dispatch;
pub mod error;
pub mod h2;

use std::future::Future;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

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
