//! Errors of the HTTP/1.1 codec. Decoding errors are always the eyeball's fault (the
//! downstream side); encoding errors mean a response header from the tunnel could not be
//! written safely (the upstream side). Neither is retryable on the same connection.

/// Malformed or over-limit HTTP/1.1 input, or an unencodable response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Http1Error {
    /// The request head exceeds [`super::MAX_HEAD_BYTES`].
    #[error("decoding request head from eyeball: head exceeds {limit} bytes")]
    HeadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More header fields than [`super::MAX_HEADERS`].
    #[error("decoding {what} from eyeball: more than {limit} header fields")]
    TooManyHeaders {
        /// `request head` or `trailers`.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// httparse rejected the syntax.
    #[error("decoding {what} from eyeball: {reason}")]
    Malformed {
        /// `request head` or `trailers`.
        what: &'static str,
        /// httparse's description.
        reason: String,
    },
    /// A header name that is not a valid token.
    #[error("decoding request head from eyeball: invalid header name {0:?}")]
    InvalidHeaderName(String),
    /// Only HTTP/1.0 and HTTP/1.1 are spoken here.
    #[error("decoding request head from eyeball: unsupported HTTP version 1.{0}")]
    UnsupportedVersion(u8),
    /// Content-Length is not a number, or several disagree.
    #[error("decoding request head from eyeball: invalid Content-Length")]
    InvalidContentLength,
    /// Both Content-Length and Transfer-Encoding: a request smuggling vector, refused.
    #[error("decoding request head from eyeball: both Content-Length and Transfer-Encoding")]
    ConflictingFraming,
    /// A transfer coding other than a final `chunked`.
    #[error("decoding request head from eyeball: unsupported Transfer-Encoding {0:?}")]
    UnsupportedTransferEncoding(String),
    /// A chunk-size line longer than [`super::MAX_CHUNK_LINE`].
    #[error("decoding chunked body from eyeball: chunk-size line exceeds {limit} bytes")]
    ChunkLineTooLong {
        /// The limit.
        limit: usize,
    },
    /// A chunk size that is not hex, overflows, or is not followed by CRLF.
    #[error("decoding chunked body from eyeball: invalid chunk-size line")]
    InvalidChunkSize,
    /// Chunk data not followed by CRLF.
    #[error("decoding chunked body from eyeball: chunk data not followed by CRLF")]
    BadChunkTerminator,
    /// A trailer section larger than [`super::MAX_TRAILER_BYTES`].
    #[error("decoding trailers from eyeball: section exceeds {limit} bytes")]
    TrailersTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A response header value containing CR, LF or NUL (would split the response).
    #[error("encoding response head for eyeball: header {name} has a forbidden byte")]
    InvalidHeaderValue {
        /// The header's name.
        name: String,
    },
}

impl Http1Error {
    /// The status to answer the eyeball with before closing, when no response has
    /// started yet.
    pub fn status(&self) -> u16 {
        match self {
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::UnsupportedVersion(_) => 505,
            Self::UnsupportedTransferEncoding(_) => 501,
            Self::InvalidHeaderValue { .. } => 502,
            _ => 400,
        }
    }
}
