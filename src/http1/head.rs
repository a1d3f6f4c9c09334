//! Request heads: parsing with httparse into owned values, body framing, keep-alive and
//! websocket-upgrade decisions. Header values share the head's buffer (`Bytes` slices), so
//! parsing copies nothing but the method and the name lookups.

use bytes::{Bytes, BytesMut};
use http::{HeaderName, Method, header};

use super::{Http1Error, MAX_HEAD_BYTES, MAX_HEADERS};

/// One header field; the name is lowercased, the value is kept byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name, validated and lowercased (HTTP/2 requires lowercase anyway).
    pub name: HeaderName,
    /// Field value as sent, without surrounding whitespace.
    pub value: Bytes,
}

/// HTTP/1.x minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: no keep-alive unless asked for, no chunked bodies.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// A parsed request head, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Request method.
    pub method: Method,
    /// Request target as sent (origin-form path and query, or absolute-form).
    pub target: Bytes,
    /// Protocol version.
    pub version: Version,
    /// Header fields in arrival order, duplicates kept.
    pub headers: Vec<Header>,
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, ended by a zero-size chunk and optional trailers.
    Chunked,
}

/// Parses a request head from the front of `buf`, consuming it on success.
///
/// `Ok(None)` means the head is incomplete: read more and call again with the same buffer.
pub fn parse_request_head(buf: &mut BytesMut) -> Result<Option<RequestHead>, Http1Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_BYTES => return Ok(None),
        // Complete or not, a head over the limit is refused.
        Ok(_) => {
            return Err(Http1Error::HeadTooLarge {
                limit: MAX_HEAD_BYTES,
            });
        }
        Err(e) => return Err(parse_error("request head", e)),
    };
    // Everything httparse returns borrows `buf`; record offsets, then split without copying.
    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| parse_error("request head", httparse::Error::Token))?;
    let target = range(req.path.unwrap_or_default().as_bytes());
    let version = match req.version.unwrap_or_default() {
        0 => Version::Http10,
        1 => Version::Http11,
        other => return Err(Http1Error::UnsupportedVersion(other)),
    };
    let fields = req
        .headers
        .iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| Http1Error::InvalidHeaderName(h.name.to_owned()))?;
            Ok((name, range(h.value)))
        })
        .collect::<Result<Vec<_>, Http1Error>>()?;
    let head = buf.split_to(len).freeze();
    Ok(Some(RequestHead {
        method,
        target: head.slice(target),
        version,
        headers: fields
            .into_iter()
            .map(|(name, r)| Header {
                name,
                value: head.slice(r),
            })
            .collect(),
    }))
}

pub(super) fn parse_error(what: &'static str, e: httparse::Error) -> Http1Error {
    match e {
        httparse::Error::TooManyHeaders => Http1Error::TooManyHeaders {
            what,
            limit: MAX_HEADERS,
        },
        e => Http1Error::Malformed {
            what,
            reason: e.to_string(),
        },
    }
}

impl RequestHead {
    /// Values of every field named `name`, in order.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| &h.value)
    }

    /// Whether any `name` field lists `token` (comma-separated, case-insensitive).
    pub fn has_token(&self, name: &HeaderName, token: &str) -> bool {
        self.values(name).any(|v| {
            v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// How the body is delimited; errors on ambiguous or unsupported framing.
    pub fn body_framing(&self) -> Result<BodyFraming, Http1Error> {
        let has_te = self.values(&header::TRANSFER_ENCODING).next().is_some();
        let length = self.content_length()?;
        match (has_te, length) {
            (true, Some(_)) => Err(Http1Error::ConflictingFraming),
            (true, None) => self.transfer_coding(),
            (false, Some(0)) | (false, None) => Ok(BodyFraming::Empty),
            (false, Some(n)) => Ok(BodyFraming::Length(n)),
        }
    }

    /// The Content-Length, if present; every value (and list element) must agree.
    fn content_length(&self) -> Result<Option<u64>, Http1Error> {
        let mut found = None;
        for value in self.values(&header::CONTENT_LENGTH) {
            for part in value.split(|b| *b == b',') {
                let n = parse_decimal(part.trim_ascii()).ok_or(Http1Error::InvalidContentLength)?;
                if found.is_some_and(|f| f != n) {
                    return Err(Http1Error::InvalidContentLength);
                }
                found = Some(n);
            }
        }
        Ok(found)
    }

    /// Accepts only a coding list ending in `chunked`, and only on HTTP/1.1.
    fn transfer_coding(&self) -> Result<BodyFraming, Http1Error> {
        let codings: Vec<&[u8]> = self
            .values(&header::TRANSFER_ENCODING)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
            .collect();
        let all = || String::from_utf8_lossy(&codings.join(&b", "[..])).into_owned();
        match codings.as_slice() {
            [.., last] if last.eq_ignore_ascii_case(b"chunked") => {
                if self.version == Version::Http10 || codings.len() > 1 {
                    // Other codings would need decoding we do not offer; 1.0 has no chunked.
                    return Err(Http1Error::UnsupportedTransferEncoding(all()));
                }
                Ok(BodyFraming::Chunked)
            }
            _ => Err(Http1Error::UnsupportedTransferEncoding(all())),
        }
    }

    /// Whether the connection may carry another request after this exchange.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.has_token(&header::CONNECTION, "close"),
            Version::Http10 => self.has_token(&header::CONNECTION, "keep-alive"),
        }
    }

    /// A websocket handshake: HTTP/1.1 GET with `Connection: upgrade`, `Upgrade: websocket`.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.method == Method::GET
            && self.version == Version::Http11
            && self.has_token(&header::CONNECTION, "upgrade")
            && self.has_token(&header::UPGRADE, "websocket")
    }
}

/// Parses 1–19 ASCII digits (no sign, no overflow).
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}
