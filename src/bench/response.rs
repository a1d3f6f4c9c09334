//! A sans-IO HTTP/1.1 response reader tuned for the load generator.
//!
//! The generator only needs each response's status, its body length and whether the
//! connection stays open, so bodies are *counted* and dropped, never kept. The head is parsed
//! with httparse; chunked bodies go through [`crate::http1::ChunkedDecoder`]. This module
//! never touches sockets or clocks: the driver reads into a `BytesMut` and calls
//! [`ResponseReader::feed`] until it returns a [`Response`].

use bytes::{Buf, BytesMut};

use crate::http1::{BodyEvent, ChunkedDecoder};

/// Largest response head accepted (the generator talks to servers, not to attackers, but a
/// runaway head must still end with an error rather than unbounded memory).
const MAX_HEAD: usize = 64 * 1024;
/// Header slots for httparse.
const MAX_HEADERS: usize = 64;

/// A response that was read completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes counted (after de-chunking).
    pub body_bytes: u64,
    /// Whether the connection may carry the next request.
    pub keep_alive: bool,
}

/// What went wrong in a response.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    /// httparse rejected the head.
    #[error("malformed response head: {0}")]
    Head(String),
    /// The head exceeds [`MAX_HEAD`].
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// Content-Length is not a number or disagrees with itself.
    #[error("invalid Content-Length")]
    ContentLength,
    /// The chunked body is malformed.
    #[error("malformed chunked body: {0}")]
    Chunked(String),
    /// The connection closed before the response ended.
    #[error("connection closed mid-response")]
    Truncated,
}

/// Body framing of the response being read.
#[derive(Debug)]
enum Body {
    /// Exactly this many bytes remain.
    Length(u64),
    /// Chunked coding.
    Chunked(Box<ChunkedDecoder>),
    /// Delimited by connection close (no length, no chunking).
    UntilClose,
}

/// Reads consecutive responses on one connection.
#[derive(Debug, Default)]
pub struct ResponseReader {
    /// `Some` once the head of the current response was parsed.
    current: Option<Current>,
}

#[derive(Debug)]
struct Current {
    status: u16,
    keep_alive: bool,
    body: Body,
    counted: u64,
}

impl ResponseReader {
    /// A reader waiting for a response head.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes bytes from `buf`; `Ok(Some)` once a whole response (head and body) was read.
    ///
    /// `head_only` is true for a HEAD request, whose response has no body whatever it says.
    /// Interim 1xx responses other than 101 are skipped.
    pub fn feed(
        &mut self,
        buf: &mut BytesMut,
        head_only: bool,
    ) -> Result<Option<Response>, ResponseError> {
        loop {
            let Some(cur) = self.current.as_mut() else {
                match parse_head(buf, head_only)? {
                    None => return Ok(None),
                    Some(Head::Interim) => continue,
                    Some(Head::Final(cur)) => {
                        self.current = Some(cur);
                        continue;
                    }
                }
            };
            return match consume_body(cur, buf)? {
                false => Ok(None),
                true => Ok(self.current.take().map(Current::finish)),
            };
        }
    }

    /// The peer closed the connection: completes a close-delimited body, else reports truncation.
    pub fn eof(&mut self) -> Result<Response, ResponseError> {
        match self.current.take() {
            Some(
                cur @ Current {
                    body: Body::UntilClose,
                    ..
                },
            ) => Ok(Current {
                keep_alive: false,
                ..cur
            }
            .finish()),
            _ => Err(ResponseError::Truncated),
        }
    }
}

impl Current {
    fn finish(self) -> Response {
        Response {
            status: self.status,
            body_bytes: self.counted,
            keep_alive: self.keep_alive,
        }
    }
}

enum Head {
    /// A 1xx other than 101: ignore and read the next head.
    Interim,
    Final(Current),
}

fn parse_head(buf: &mut BytesMut, head_only: bool) -> Result<Option<Head>, ResponseError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(ResponseError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ResponseError::Head(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = http10;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_u64(h.value).ok_or(ResponseError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ResponseError::ContentLength);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = ends_with_token(h.value, b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, b"close") {
                close = true;
            } else if has_token(h.value, b"keep-alive") {
                close = false;
            }
        }
    }
    buf.advance(len);
    if (100..200).contains(&status) && status != 101 {
        return Ok(Some(Head::Interim));
    }
    let no_body = head_only || status == 101 || status == 204 || status == 304;
    let body = match (no_body, chunked, length) {
        (true, _, _) => Body::Length(0),
        (false, true, _) => Body::Chunked(Box::default()),
        (false, false, Some(n)) => Body::Length(n),
        (false, false, None) => Body::UntilClose,
    };
    let keep_alive = !close && !matches!(body, Body::UntilClose);
    Ok(Some(Head::Final(Current {
        status,
        keep_alive,
        body,
        counted: 0,
    })))
}

/// Counts body bytes out of `buf`; true when the body is complete.
fn consume_body(cur: &mut Current, buf: &mut BytesMut) -> Result<bool, ResponseError> {
    match &mut cur.body {
        Body::Length(remaining) => {
            let n = (*remaining).min(buf.len() as u64);
            buf.advance(n as usize);
            *remaining -= n;
            cur.counted += n;
            Ok(*remaining == 0)
        }
        Body::UntilClose => {
            cur.counted += buf.len() as u64;
            buf.clear();
            Ok(false)
        }
        Body::Chunked(dec) => loop {
            match dec.decode(buf) {
                Ok(Some(BodyEvent::Data(d))) => cur.counted += d.len() as u64,
                Ok(Some(BodyEvent::End { .. })) => return Ok(true),
                Ok(None) => return Ok(false),
                Err(e) => return Err(ResponseError::Chunked(e.to_string())),
            }
        },
    }
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

fn has_token(v: &[u8], token: &[u8]) -> bool {
    tokens(v).any(|t| t.eq_ignore_ascii_case(token))
}

fn ends_with_token(v: &[u8], token: &[u8]) -> bool {
    tokens(v)
        .filter(|t| !t.is_empty())
        .last()
        .is_some_and(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(input: &[u8], step: usize, head_only: bool) -> Vec<Response> {
        let mut reader = ResponseReader::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(r) = reader.feed(&mut buf, head_only).unwrap() {
                out.push(r);
            }
        }
        out
    }

    #[test]
    fn content_length_chunked_and_interim_in_any_split() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
            HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n\
            HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        for step in [1, 2, 7, input.len()] {
            let got = feed_all(input, step, false);
            assert_eq!(
                got,
                vec![
                    Response {
                        status: 200,
                        body_bytes: 5,
                        keep_alive: true
                    },
                    Response {
                        status: 404,
                        body_bytes: 5,
                        keep_alive: true
                    },
                    Response {
                        status: 204,
                        body_bytes: 0,
                        keep_alive: false
                    },
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn head_request_has_no_body_and_close_delimited_ends_at_eof() {
        let got = feed_all(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 3, true);
        assert_eq!(got[0].body_bytes, 0);
        let mut reader = ResponseReader::new();
        let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\nabcdef"[..]);
        assert_eq!(reader.feed(&mut buf, false).unwrap(), None);
        let r = reader.eof().unwrap();
        assert_eq!((r.body_bytes, r.keep_alive), (6, false));
        assert_eq!(ResponseReader::new().eof(), Err(ResponseError::Truncated));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut r = ResponseReader::new();
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"[..]);
        assert_eq!(r.feed(&mut buf, false), Err(ResponseError::ContentLength));
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        );
        assert_eq!(r.feed(&mut buf, false), Err(ResponseError::ContentLength));
        let mut buf = BytesMut::from(&b"garbage\r\n\r\n"[..]);
        assert!(matches!(
            r.feed(&mut buf, false),
            Err(ResponseError::Head(_))
        ));
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..]);
        assert!(matches!(
            r.feed(&mut buf, false),
            Err(ResponseError::Chunked(_))
        ));
        let mut r = ResponseReader::new();
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX: "[..]);
        assert_eq!(r.feed(&mut buf, false), Ok(None));
        buf.extend_from_slice(&vec![b'a'; MAX_HEAD]);
        assert_eq!(r.feed(&mut buf, false), Err(ResponseError::HeadTooLarge));
    }
}
