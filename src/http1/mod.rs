//! A sans-IO HTTP/1.1 codec for the edge simulator's eyeball listener.
//!
//! Visitors speak plain HTTP/1.1 to the edge, which forwards each request over the tunnel
//! and must stream bodies without holding them. This module parses request heads into
//! owned values, frames bodies (Content-Length or chunked) incrementally from a `BytesMut`,
//! decides keep-alive, detects websocket upgrades and encodes response heads and chunked
//! bodies. It never touches sockets or clocks: a driver feeds it bytes and writes what it
//! produces. "Need more bytes" is `Ok(None)`; malformed input is an [`Http1Error`].

mod body;
mod encode;
mod error;
mod head;

pub use body::{BodyDecoder, BodyEvent, ChunkedDecoder};
pub use encode::{ResponseHead, encode_chunk, encode_last_chunk};
pub use error::Http1Error;
pub use head::{BodyFraming, Header, RequestHead, Version, parse_request_head};

/// Largest request head (request line + headers) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields accepted in a request head or a trailer section.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (size plus extensions, without CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 1024;
/// Largest trailer section accepted, in bytes.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[cfg(test)]
mod tests;
