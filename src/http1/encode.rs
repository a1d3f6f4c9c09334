//! Response-head encoding and the chunked body encoder.
//!
//! The caller chooses the framing (it adds `Content-Length` or `Transfer-Encoding:
//! chunked` to the headers); this module only writes bytes. Header values arrive from the
//! tunnel (ultimately from an origin), so CR, LF and NUL are refused: they would let an
//! origin split the response.

use std::io::Write;

use bytes::{BufMut, BytesMut};
use http::StatusCode;

use super::{Header, Http1Error};

/// A response head to send to the eyeball (always as HTTP/1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code; the reason phrase is the canonical one.
    pub status: StatusCode,
    /// Header fields in order, including the framing header the caller chose.
    pub headers: Vec<Header>,
}

impl ResponseHead {
    /// Appends the status line, fields and the empty line to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Http1Error> {
        for h in &self.headers {
            if h.value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(Http1Error::InvalidHeaderValue {
                    name: h.name.to_string(),
                });
            }
        }
        let reason = self.status.canonical_reason().unwrap_or("Unknown");
        let size: usize = self
            .headers
            .iter()
            .map(|h| h.name.as_str().len() + h.value.len() + 4)
            .sum();
        dst.reserve(size + reason.len() + 16);
        dst.put_slice(b"HTTP/1.1 ");
        dst.put_slice(self.status.as_str().as_bytes());
        dst.put_u8(b' ');
        dst.put_slice(reason.as_bytes());
        dst.put_slice(b"\r\n");
        for h in &self.headers {
            dst.put_slice(h.name.as_str().as_bytes());
            dst.put_slice(b": ");
            dst.put_slice(&h.value);
            dst.put_slice(b"\r\n");
        }
        dst.put_slice(b"\r\n");
        Ok(())
    }
}

/// Appends one chunk (`size CRLF data CRLF`). Empty data writes nothing: an empty chunk
/// would end the body.
pub fn encode_chunk(data: &[u8], dst: &mut BytesMut) {
    if data.is_empty() {
        return;
    }
    dst.reserve(data.len() + 20);
    // Writing to a BytesMut cannot fail.
    let _ = write!(dst.writer(), "{:x}\r\n", data.len());
    dst.put_slice(data);
    dst.put_slice(b"\r\n");
}

/// Appends the last chunk, the trailers and the final empty line.
pub fn encode_last_chunk(trailers: &[Header], dst: &mut BytesMut) -> Result<(), Http1Error> {
    if let Some(bad) = trailers
        .iter()
        .find(|h| h.value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)))
    {
        return Err(Http1Error::InvalidHeaderValue {
            name: bad.name.to_string(),
        });
    }
    dst.put_slice(b"0\r\n");
    for h in trailers {
        dst.put_slice(h.name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(&h.value);
        dst.put_slice(b"\r\n");
    }
    dst.put_slice(b"\r\n");
    Ok(())
}
