//! The HTTP/1.1 client side of one origin exchange: request-head encoding, response-head
//! parsing and response-body framing. Bytes in, values out; the caller owns the socket and the
//! concurrency (request upload and response download run at the same time, see `proxy`).

#![forbid(unsafe_code)]

use std::io;

use super::ReadInto;
use bytes::{BufMut, Bytes, BytesMut};
use http::Method;

use crate::http1::{BodyDecoder, BodyFraming};

/// Bytes asked for per origin read. Larger reads of response bodies (256 KiB) cut the
/// connector's CPU per GB of a one-stream download by a few per cent on this VM (the tunnel
/// connection's own 256 KiB writes, `runtime::h2io`, took the bulk of that cost), but 64
/// concurrent downloads then held 0.4 MiB more per stream (peak RSS 53 -> 80 MiB, past
/// cloudflared's 69): kept at 64 KiB.
pub const READ_CHUNK: usize = 64 * 1024;
/// Largest response head accepted from an origin, interim (1xx) heads included. Go's transport
/// (cloudflared's) allows 10 MiB by default; the connector keeps 1 MiB, because the head is
/// buffered whole per stream and the edge refuses header blocks far smaller than either.
pub const MAX_HEAD: usize = 1 << 20;
/// Most interim (1xx other than 101) responses accepted before the final one; Go counts only
/// their bytes, so an origin could send 100-continue without end. More is a 502.
pub const MAX_INTERIM: usize = 16;
/// Most header fields accepted in a response head.
const MAX_FIELDS: usize = 256;

/// How the request body goes to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
    /// `disableChunkedEncoding` with no length: raw bytes, then the write side is closed.
    Raw,
}

/// A response head from the origin.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    /// HTTP/1.0 responses close the connection unless they ask otherwise.
    pub http10: bool,
    /// Names in Go's canonical form, values byte-exact, in arrival order.
    pub headers: Vec<(String, Bytes)>,
}

impl ResponseHead {
    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the connection may be reused after this response.
    pub fn keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        !self.http10 || self.has_token("connection", "keep-alive")
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// Framed (length or chunked); decoded by [`BodyDecoder`].
    Framed(BodyFraming),
    /// No framing header: the body runs until the origin closes.
    UntilClose,
}

/// Why an origin response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("origin closed the connection before sending a response")]
    Eof,
    #[error("reading from origin: {0}")]
    Io(#[from] io::Error),
    #[error("malformed response from origin: {0}")]
    Malformed(String),
    #[error("origin response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("origin sent more than {MAX_INTERIM} interim (1xx) responses")]
    TooManyInterim,
}

/// Appends the request line and headers; the caller has already added framing headers.
pub fn encode_head<N: AsRef<str>, V: AsRef<[u8]>>(
    method: &Method,
    target: &str,
    headers: &[(N, V)],
    out: &mut BytesMut,
) {
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_ref().len() + v.as_ref().len() + 4)
        .sum();
    out.reserve(size + target.len() + 32);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.put_slice(name.as_ref().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_ref());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// Reads more bytes into `buf`; returns 0 at EOF.
///
/// Bare sockets read into `buf`'s spare capacity (no copy); the compat stream copies once.
pub async fn fill<R: ReadInto>(r: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    r.read_into(buf, READ_CHUNK).await
}

/// Smallest read of a [`ReadSize`].
const MIN_READ: usize = 4 * 1024;

/// The read size of a stream that may sit idle for hours (a WebSocket, a TCP pipe): it starts
/// at 4 KiB and doubles each time a read fills it, up to [`READ_CHUNK`]. A pending read holds a
/// zeroed buffer of that size, so 10,000 idle WebSockets hold 4 KiB each instead of 64 KiB,
/// while a bulk transfer reaches full-size reads after four reads.
#[derive(Debug, Clone, Copy)]
pub struct ReadSize(usize);

impl ReadSize {
    /// Starts small.
    pub const fn new() -> ReadSize {
        ReadSize(MIN_READ)
    }

    /// The size of the next read.
    pub fn get(self) -> usize {
        self.0
    }

    /// Still at the smallest size: no read of this stream has filled its buffer yet, so it
    /// is likely interactive or idle rather than a bulk transfer.
    pub fn is_min(self) -> bool {
        self.0 == MIN_READ
    }

    /// Grows after a read of `n` bytes that filled the buffer.
    pub fn update(&mut self, n: usize) {
        if n >= self.0 {
            self.0 = (self.0 * 2).min(READ_CHUNK);
        }
    }
}

impl Default for ReadSize {
    fn default() -> ReadSize {
        ReadSize::new()
    }
}

/// [`fill`] with a [`ReadSize`].
pub async fn fill_sized<R: ReadInto>(
    r: &mut R,
    buf: &mut BytesMut,
    size: &mut ReadSize,
) -> io::Result<usize> {
    let n = r.read_into(buf, size.get()).await?;
    size.update(n);
    Ok(n)
}

/// Reads the final response head (skipping 1xx interim responses other than 101).
/// Leftover bytes (the start of the body) stay in `buf`. `got_bytes` tells the caller whether
/// the origin sent anything at all, for retry decisions on reused connections.
pub async fn read_head<R: ReadInto>(
    r: &mut R,
    buf: &mut BytesMut,
    got_bytes: &mut bool,
) -> Result<ResponseHead, ResponseError> {
    // Interim heads count against the same budget as the final one (as Go's transport counts
    // them), and only MAX_INTERIM of them are accepted.
    let mut consumed = 0usize;
    let mut interim = 0usize;
    loop {
        let before = buf.len();
        if let Some(head) = parse_head(buf)? {
            consumed += before - buf.len();
            if (100..200).contains(&head.status) && head.status != 101 {
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(ResponseError::TooManyInterim);
                }
                if consumed > MAX_HEAD {
                    return Err(ResponseError::HeadTooLarge);
                }
                continue;
            }
            if consumed > MAX_HEAD {
                return Err(ResponseError::HeadTooLarge);
            }
            return Ok(head);
        }
        if consumed + buf.len() > MAX_HEAD {
            return Err(ResponseError::HeadTooLarge);
        }
        if fill(r, buf).await? == 0 {
            return Err(ResponseError::Eof);
        }
        *got_bytes = true;
    }
}

/// Parses one head from the front of `buf`, consuming it; `None` means incomplete.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, ResponseError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ResponseError::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let head = ResponseHead {
        status,
        http10: resp.version == Some(0),
        headers: resp
            .headers
            .iter()
            .map(|h| {
                (
                    canonical_key(h.name),
                    Bytes::copy_from_slice(h.value.trim_ascii()),
                )
            })
            .collect(),
    };
    let _ = buf.split_to(len);
    Ok(Some(head))
}

/// The body framing of a response to `method` (RFC 9112 §6.3).
pub fn response_framing(
    method: &Method,
    head: &ResponseHead,
) -> Result<ResponseFraming, ResponseError> {
    let status = head.status;
    if method == Method::HEAD || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(ResponseFraming::Framed(BodyFraming::Empty));
    }
    if head.has_token("transfer-encoding", "chunked") {
        return Ok(ResponseFraming::Framed(BodyFraming::Chunked));
    }
    if let Some(v) = head.get("content-length") {
        let n = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ResponseError::Malformed("invalid Content-Length".into()))?;
        return Ok(ResponseFraming::Framed(BodyFraming::Length(n)));
    }
    Ok(ResponseFraming::UntilClose)
}

/// A body decoder for `framing`, `None` for until-close bodies.
pub fn decoder(framing: ResponseFraming) -> Option<BodyDecoder> {
    match framing {
        ResponseFraming::Framed(f) => Some(BodyDecoder::new(f)),
        ResponseFraming::UntilClose => None,
    }
}

/// Appends Go's canonical form of `name` (what [`canonical_key`] returns) to `out`: the name
/// is copied and its case fixed in place, no `String` in between.
pub fn put_canonical(out: &mut BytesMut, name: &str) {
    let start = out.len();
    out.put_slice(name.as_bytes());
    canonicalize(&mut out[start..]);
}

/// Go's canonical case, in place: upper case first and after each `-`, lower case elsewhere;
/// a name with a byte outside the token set is left as it is, as Go leaves it.
fn canonicalize(name: &mut [u8]) {
    if !name.iter().all(|&b| is_token(b)) {
        return;
    }
    let mut upper = true;
    for b in name {
        *b = if upper {
            b.to_ascii_uppercase()
        } else {
            b.to_ascii_lowercase()
        };
        upper = *b == b'-';
    }
}

/// RFC 9110 `tchar`, by byte: a table, as this runs for every byte of every header name.
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
};

/// Whether `b` may appear in an HTTP token (a header name, a tag name).
pub fn is_token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `content-type` -> `Content-Type`. Names with
/// characters outside the token set are returned unchanged, as Go does.
pub fn canonical_key(name: &str) -> String {
    let mut bytes = name.as_bytes().to_vec();
    canonicalize(&mut bytes);
    // Only ASCII letters changed case: still the UTF-8 it was.
    String::from_utf8(bytes).unwrap_or_else(|_| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_size_starts_small_and_grows_only_on_full_reads() {
        let mut size = ReadSize::new();
        assert_eq!(size.get(), 4096);
        size.update(100);
        assert_eq!(size.get(), 4096, "a short read keeps the size");
        for _ in 0..10 {
            let full = size.get();
            size.update(full);
        }
        assert_eq!(
            size.get(),
            READ_CHUNK,
            "full reads grow it to READ_CHUNK and no further"
        );
    }

    /// Bytes to read, front first.
    struct Slab(Vec<u8>);

    impl ReadInto for Slab {
        async fn read_into(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
            let n = want.min(self.0.len());
            buf.extend_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn fill_sized_reads_at_most_the_current_size() {
        let data = vec![7u8; 20_000];
        let mut reader = Slab(data);
        let mut buf = BytesMut::new();
        let mut size = ReadSize::new();
        let n = futures::executor::block_on(fill_sized(&mut reader, &mut buf, &mut size)).unwrap();
        assert_eq!(n, 4096);
        assert_eq!(size.get(), 8192);
        let n = futures::executor::block_on(fill_sized(&mut reader, &mut buf, &mut size)).unwrap();
        assert_eq!((n, buf.len()), (8192, 4096 + 8192));
    }

    #[test]
    fn head_parsing_framing_and_keepalive() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nContent-Length: 5\r\n\r\nhello"[..],
        );
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.headers[0].0, "Content-Type");
        assert!(head.keep_alive());
        assert_eq!(&buf[..], b"hello");
        assert_eq!(
            response_framing(&Method::GET, &head).unwrap(),
            ResponseFraming::Framed(BodyFraming::Length(5))
        );
        assert_eq!(
            response_framing(&Method::HEAD, &head).unwrap(),
            ResponseFraming::Framed(BodyFraming::Empty)
        );
        let mut partial = BytesMut::from(&b"HTTP/1.0 200 OK\r\nX: y\r\n"[..]);
        assert!(parse_head(&mut partial).unwrap().is_none());
        partial.extend_from_slice(b"\r\n");
        let h10 = parse_head(&mut partial).unwrap().unwrap();
        assert!(!h10.keep_alive());
        assert_eq!(
            response_framing(&Method::GET, &h10).unwrap(),
            ResponseFraming::UntilClose
        );
        let mut bad = BytesMut::from(&b"NOT HTTP\r\n\r\n"[..]);
        assert!(parse_head(&mut bad).is_err());
    }

    #[test]
    fn canonical_keys_like_go() {
        assert_eq!(canonical_key("x-custom-HEADER"), "X-Custom-Header");
        assert_eq!(
            canonical_key("sec-websocket-accept"),
            "Sec-Websocket-Accept"
        );
        assert_eq!(canonical_key("bad header"), "bad header");
        // Written in place, the same names (edge names arrive lower case over HTTP/2).
        let mut out = BytesMut::new();
        for name in [
            "accept",
            "cf-connecting-ip",
            "x-forwarded-for",
            "sec-websocket-key",
            "x-custom-HEADER",
            "User-Agent",
            "bad header",
            "a--b-",
            "",
        ] {
            out.clear();
            out.put_slice(b"prefix");
            put_canonical(&mut out, name);
            assert_eq!(&out[..6], b"prefix", "{name}: what was there stays");
            assert_eq!(&out[6..], canonical_key(name).as_bytes(), "{name}");
        }
    }
}
