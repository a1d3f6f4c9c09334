//! Interpreting QUIC data-stream metadata (spec §4.3), pure: a `ConnectRequest`'s keys into a
//! request head, and a response head into `ConnectResponse` metadata.
//!
//! As cloudflared's `buildHTTPRequest`: `dest` is the request URL, `HttpMethod` the method
//! (empty means GET), `HttpHost` the Host; every key containing `HttpHeader` must split on `:`
//! into exactly two parts (`header Key: … malformed` otherwise) and adds one header value; a
//! body exists for websockets, a non-zero `Content-Length`, or a chunked `Transfer-Encoding`.
//! Never panics on peer input: every failure is a [`MetaError`] the connector answers with a
//! `ConnectResponse` error.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::connect::{ConnectRequest, ConnectionType};
use super::http2::RequestKind;

/// Metadata key of the request method.
pub const HTTP_METHOD: &str = "HttpMethod";
/// Metadata key of the eyeball Host.
pub const HTTP_HOST: &str = "HttpHost";
/// Marker (and prefix) of header entries: `HttpHeader:<Name>`.
pub const HTTP_HEADER: &str = "HttpHeader";
/// Metadata key of the response status.
pub const HTTP_STATUS: &str = "HttpStatus";
/// The edge's websocket hint header; accepted and stripped (the type field decides).
const PROXY_CONNECTION_UPGRADE: &str = "cf-cloudflared-proxy-connection-upgrade";

/// A data stream's request as the services need it.
#[derive(Debug, Clone)]
pub struct QuicRequestHead {
    pub kind: RequestKind,
    pub method: Method,
    /// `dest`: an absolute URL, a path, or `host:port` for TCP streams.
    pub uri: Uri,
    /// `HttpHost` (may be empty: then the URL's host applies).
    pub host: String,
    pub headers: HeaderMap,
    /// Whether request body bytes follow on the stream (see the module doc).
    pub has_body: bool,
}

/// Why a `ConnectRequest` cannot become a request; the text is what the edge is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("net/http: invalid method {0:?}")]
    Method(String),
    #[error("parse {0:?}: invalid URL")]
    Dest(String),
    #[error("header Key: {0} malformed")]
    MalformedHeader(String),
    #[error("invalid header field name {0:?}")]
    HeaderName(String),
    #[error("invalid header field value for {0:?}")]
    HeaderValue(String),
    #[error("Error setting content-length: invalid syntax {0:?}")]
    ContentLength(String),
}

/// Interprets `req`'s metadata; for a repeated `HttpMethod` or `HttpHost` the last entry wins,
/// as in cloudflared's `MetadataMap`.
pub fn request_head(req: &ConnectRequest) -> Result<QuicRequestHead, MetaError> {
    let mut b = RequestHeadBuilder::with_capacity(req.metadata.len());
    for (key, val) in &req.metadata {
        b.push(key, val)?;
    }
    b.finish(&req.dest, req.kind)
}

/// [`request_head`] one entry at a time, over borrowed strings: the connector feeds it straight
/// from the decoded capnp message, with no owned copy of every key and value first.
#[derive(Debug, Default)]
pub struct RequestHeadBuilder<'a> {
    method: &'a str,
    host: &'a str,
    headers: HeaderMap,
}

impl<'a> RequestHeadBuilder<'a> {
    /// A builder for about `entries` metadata entries (sizes the header map once).
    pub fn with_capacity(entries: usize) -> Self {
        Self {
            method: "",
            host: "",
            headers: HeaderMap::with_capacity(entries),
        }
    }

    /// Takes one metadata entry.
    pub fn push(&mut self, key: &'a str, val: &'a str) -> Result<(), MetaError> {
        let name = match key.strip_prefix("HttpHeader:") {
            // The usual `HttpHeader:<Name>`: the same result as the split below, without it.
            Some(name) if !name.contains(':') => name,
            _ => match key {
                HTTP_METHOD => {
                    self.method = val;
                    return Ok(());
                }
                HTTP_HOST => {
                    self.host = val;
                    return Ok(());
                }
                k if !k.contains(HTTP_HEADER) => return Ok(()),
                k => {
                    let mut parts = k.split(':');
                    let (Some(_), Some(name), None) = (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(MetaError::MalformedHeader(k.to_owned()));
                    };
                    name
                }
            },
        };
        let name =
            HeaderName::try_from(name).map_err(|_| MetaError::HeaderName(name.to_owned()))?;
        if name.as_str() == PROXY_CONNECTION_UPGRADE {
            return Ok(());
        }
        let value = HeaderValue::try_from(val)
            .map_err(|_| MetaError::HeaderValue(name.as_str().to_owned()))?;
        self.headers.append(name, value);
        Ok(())
    }

    /// The request of `dest` and `kind` with the entries taken so far.
    pub fn finish(self, dest: &str, kind: ConnectionType) -> Result<QuicRequestHead, MetaError> {
        let method = match self.method {
            "" => Method::GET,
            m => Method::from_bytes(m.as_bytes()).map_err(|_| MetaError::Method(m.to_owned()))?,
        };
        let uri = Uri::try_from(dest).map_err(|_| MetaError::Dest(dest.to_owned()))?;
        let kind = match kind {
            ConnectionType::Http => RequestKind::Http,
            ConnectionType::Websocket => RequestKind::Websocket,
            ConnectionType::Tcp => RequestKind::TcpStream,
        };
        let headers = self.headers;
        let has_body = match kind {
            RequestKind::Websocket | RequestKind::TcpStream => true,
            _ => content_length(&headers)? > 0 || chunked(&headers),
        };
        Ok(QuicRequestHead {
            kind,
            method,
            uri,
            host: self.host.to_owned(),
            headers,
            has_body,
        })
    }
}

fn content_length(headers: &HeaderMap) -> Result<u64, MetaError> {
    match headers.get(http::header::CONTENT_LENGTH) {
        None => Ok(0),
        Some(v) => {
            let text = String::from_utf8_lossy(v.as_bytes());
            text.parse::<u64>()
                .map_err(|_| MetaError::ContentLength(text.into_owned()))
        }
    }
}

fn chunked(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::TRANSFER_ENCODING)
        .is_some_and(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .to_ascii_lowercase()
                .contains("chunked")
        })
}

/// `ConnectResponse` metadata for a response: `HttpStatus` (101 stays 101 on QUIC), then one
/// `HttpHeader:<Name>` entry per header value, unfiltered.
pub fn response_metadata<'a>(
    status: u16,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<(String, String)> {
    let mut out = vec![(HTTP_STATUS.to_owned(), status.to_string())];
    for (name, value) in headers {
        out.push((
            format!("{HTTP_HEADER}:{name}"),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: ConnectionType, dest: &str, meta: &[(&str, &str)]) -> ConnectRequest {
        ConnectRequest {
            dest: dest.to_owned(),
            kind,
            metadata: meta
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn http_request_with_body() {
        let r = req(
            ConnectionType::Http,
            "https://app.example.com/up?x=1",
            &[
                ("HttpMethod", "POST"),
                ("HttpHost", "app.example.com"),
                ("HttpHeader:Content-Length", "5"),
                ("HttpHeader:Accept", "a"),
                ("HttpHeader:Accept", "b"),
                (
                    "HttpHeader:Cf-Cloudflared-Proxy-Connection-Upgrade",
                    "websocket",
                ),
            ],
        );
        let h = request_head(&r).unwrap();
        assert_eq!(h.kind, RequestKind::Http);
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.uri.path(), "/up");
        assert_eq!(h.host, "app.example.com");
        assert_eq!(h.headers.get_all("accept").iter().count(), 2);
        assert!(h.headers.get(PROXY_CONNECTION_UPGRADE).is_none());
        assert!(h.has_body);
    }

    #[test]
    fn no_length_means_no_body_except_chunked_and_websocket() {
        let get = request_head(&req(ConnectionType::Http, "/", &[])).unwrap();
        assert_eq!(get.method, Method::GET);
        assert!(!get.has_body);
        let chunked = req(
            ConnectionType::Http,
            "/",
            &[("HttpHeader:Transfer-Encoding", "gzip, Chunked")],
        );
        assert!(request_head(&chunked).unwrap().has_body);
        let ws = request_head(&req(ConnectionType::Websocket, "/ws", &[])).unwrap();
        assert_eq!(ws.kind, RequestKind::Websocket);
        assert!(ws.has_body);
        let tcp = request_head(&req(ConnectionType::Tcp, "10.0.0.1:22", &[])).unwrap();
        assert_eq!(tcp.kind, RequestKind::TcpStream);
        assert_eq!(tcp.uri.authority().unwrap().as_str(), "10.0.0.1:22");
    }

    #[test]
    fn hostile_metadata_is_an_error() {
        let bad = |meta: &[(&str, &str)], dest: &str| {
            request_head(&req(ConnectionType::Http, dest, meta)).unwrap_err()
        };
        assert_eq!(
            bad(&[("HttpHeader:X:Y", "v")], "/"),
            MetaError::MalformedHeader("HttpHeader:X:Y".into())
        );
        assert_eq!(
            bad(&[("HttpHeader:X", "a\nb")], "/"),
            MetaError::HeaderValue("x".into())
        );
        assert!(matches!(
            bad(&[("HttpHeader:bad name", "v")], "/"),
            MetaError::HeaderName(_)
        ));
        assert!(matches!(
            bad(&[("HttpMethod", "GE T")], "/"),
            MetaError::Method(_)
        ));
        assert!(matches!(bad(&[], "http://[::1"), MetaError::Dest(_)));
        assert!(matches!(
            bad(&[("HttpHeader:Content-Length", "-1")], "/"),
            MetaError::ContentLength(_)
        ));
        assert_eq!(
            bad(&[("HttpHeader:X:Y", "v")], "/").to_string(),
            "header Key: HttpHeader:X:Y malformed"
        );
    }

    #[test]
    fn response_metadata_keeps_101_and_every_value() {
        let m = response_metadata(
            101,
            [
                ("Upgrade", &b"websocket"[..]),
                ("Set-Cookie", b"a"),
                ("Set-Cookie", b"b"),
            ],
        );
        assert_eq!(m[0], ("HttpStatus".into(), "101".into()));
        assert_eq!(m[1], ("HttpHeader:Upgrade".into(), "websocket".into()));
        assert_eq!(m.len(), 4);
    }
}
