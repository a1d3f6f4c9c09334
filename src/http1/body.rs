//! Incremental request-body decoding: Content-Length and chunked.
//!
//! Decoders take bytes from the front of a `BytesMut` and yield data as `Bytes` split off
//! that buffer (no copy), so a body of any size streams through a bounded buffer. They
//! never allocate based on a peer-supplied length.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderName;

use super::{
    BodyFraming, Header, Http1Error, MAX_CHUNK_LINE, MAX_HEADERS, MAX_TRAILER_BYTES,
    head::parse_error,
};

/// What a body decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEvent {
    /// The next piece of body data (never empty).
    Data(Bytes),
    /// The body is complete; trailers only for chunked bodies that sent some.
    End {
        /// Trailer fields, in order.
        trailers: Vec<Header>,
    },
}

/// Decodes a request body of any framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecoder {
    /// Counts down a Content-Length (`Empty` starts at zero).
    Length {
        /// Bytes still expected.
        remaining: u64,
        /// Whether `End` was already returned.
        ended: bool,
    },
    /// Chunked transfer coding.
    Chunked(ChunkedDecoder),
}

impl BodyDecoder {
    /// A decoder for the framing found in the request head.
    pub fn new(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::Empty => Self::length(0),
            BodyFraming::Length(n) => Self::length(n),
            BodyFraming::Chunked => Self::Chunked(ChunkedDecoder::default()),
        }
    }

    fn length(remaining: u64) -> Self {
        Self::Length {
            remaining,
            ended: false,
        }
    }

    /// Next event from `buf`; `Ok(None)` means read more (or, once ended, nothing left).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BodyEvent>, Http1Error> {
        match self {
            Self::Chunked(c) => c.decode(buf),
            Self::Length { ended: true, .. } => Ok(None),
            Self::Length {
                remaining: 0,
                ended,
            } => {
                *ended = true;
                Ok(Some(BodyEvent::End {
                    trailers: Vec::new(),
                }))
            }
            Self::Length { .. } if buf.is_empty() => Ok(None),
            Self::Length { remaining, .. } => {
                let n = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                *remaining -= n as u64;
                Ok(Some(BodyEvent::Data(buf.split_to(n).freeze())))
            }
        }
    }

    /// Whether the body was fully decoded and `End` returned.
    pub fn is_done(&self) -> bool {
        match self {
            Self::Length { ended, .. } => *ended,
            Self::Chunked(c) => c.is_done(),
        }
    }
}

/// Where a chunked decoder is within the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the zero-size chunk: trailer fields, then an empty line.
    Trailers,
    /// `End` was returned.
    Done,
}

/// Streaming decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
///
/// Strict where leniency enables request smuggling: line ends must be CRLF, sizes are
/// plain hex (at most 16 digits), extensions are skipped but bounded by [`MAX_CHUNK_LINE`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkedDecoder {
    /// Current position in the chunked grammar.
    state: ChunkState,
}

impl ChunkedDecoder {
    /// Whether the final chunk and trailers were decoded.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Next event from `buf`; `Ok(None)` means read more (or, once done, nothing left).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BodyEvent>, Http1Error> {
        // Each pass either consumes bytes, returns, or moves to a later state, so the loop
        // ends; no pass waits for more than it needs.
        loop {
            match self.state {
                ChunkState::Size => match take_size_line(buf)? {
                    None => return Ok(None),
                    Some(0) => self.state = ChunkState::Trailers,
                    Some(n) => self.state = ChunkState::Data(n),
                },
                ChunkState::Data(_) if buf.is_empty() => return Ok(None),
                ChunkState::Data(remaining) => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Some(BodyEvent::Data(buf.split_to(n).freeze())));
                }
                ChunkState::DataEnd => {
                    match buf.get(..2) {
                        None if buf.first().is_none_or(|b| *b == b'\r') => return Ok(None),
                        Some(b"\r\n") => buf.advance(2),
                        _ => return Err(Http1Error::BadChunkTerminator),
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(trailers) = take_trailers(buf)? else {
                        return Ok(None);
                    };
                    self.state = ChunkState::Done;
                    return Ok(Some(BodyEvent::End { trailers }));
                }
                ChunkState::Done => return Ok(None),
            }
        }
    }
}

/// Consumes a `chunk-size [ext] CRLF` line and returns the size.
fn take_size_line(buf: &mut BytesMut) -> Result<Option<u64>, Http1Error> {
    let window = &buf[..buf.len().min(MAX_CHUNK_LINE + 2)];
    let Some(lf) = window.iter().position(|b| *b == b'\n') else {
        if buf.len() > MAX_CHUNK_LINE + 1 {
            return Err(Http1Error::ChunkLineTooLong {
                limit: MAX_CHUNK_LINE,
            });
        }
        return Ok(None);
    };
    let line = match window[..lf].strip_suffix(b"\r") {
        Some(line) => line,
        None => return Err(Http1Error::InvalidChunkSize),
    };
    if line.len() > MAX_CHUNK_LINE {
        return Err(Http1Error::ChunkLineTooLong {
            limit: MAX_CHUNK_LINE,
        });
    }
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || rest.trim_ascii_start().first() == Some(&b';');
    if digits == 0 || digits > 16 || !rest_ok {
        return Err(Http1Error::InvalidChunkSize);
    }
    let size = line[..digits]
        .iter()
        .fold(0u64, |n, d| (n << 4) | u64::from(hex_value(*d)));
    buf.advance(lf + 1);
    Ok(Some(size))
}

/// Value of a byte already checked with `is_ascii_hexdigit`.
fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        _ => d.to_ascii_lowercase() - b'a' + 10,
    }
}

/// Consumes the trailer section (fields then an empty line).
fn take_trailers(buf: &mut BytesMut) -> Result<Option<Vec<Header>>, Http1Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (len, fields) = match httparse::parse_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete((len, fields))) => (len, fields),
        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILER_BYTES => {
            return Err(Http1Error::TrailersTooLarge {
                limit: MAX_TRAILER_BYTES,
            });
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(parse_error("trailers", e)),
    };
    if len > MAX_TRAILER_BYTES {
        return Err(Http1Error::TrailersTooLarge {
            limit: MAX_TRAILER_BYTES,
        });
    }
    let trailers = fields
        .iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| Http1Error::InvalidHeaderName(h.name.to_owned()))?;
            Ok(Header {
                name,
                value: Bytes::copy_from_slice(h.value),
            })
        })
        .collect::<Result<Vec<_>, Http1Error>>()?;
    buf.advance(len);
    Ok(Some(trailers))
}
