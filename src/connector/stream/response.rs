//! Building the HTTP/2 response heads the edge expects (spec §3.4-§3.5): `:status` (101 becomes
//! 200), the serialized origin headers, the response meta and a real `content-length`.

#![forbid(unsafe_code)]

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};

use crate::proto::headers::{RESPONSE_HEADERS, RESPONSE_META, serialize_headers_into};
use crate::proto::http2::{META_CLOUDFLARED, META_ORIGIN};

/// Whether an origin header travels in the serialized set.
fn keep_serialized(name: &str) -> bool {
    let always = ["sec-websocket-accept", "connection", "upgrade"];
    if always.iter().any(|a| name.eq_ignore_ascii_case(a)) {
        return true;
    }
    // Go moves Transfer-Encoding out of the header map, so it never reaches the edge.
    if name.eq_ignore_ascii_case("transfer-encoding") {
        return false;
    }
    let starts_with = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    !(name.starts_with(':') || starts_with("cf-int-") || starts_with("cf-cloudflared-"))
}

/// The response head for an origin response.
pub fn origin_head(status: u16, headers: &[(String, Bytes)]) -> Response<()> {
    // Sized once: base64 of every name and value (4 bytes per 3, rounded up) and the
    // separators, so serializing never grows the string.
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.len().div_ceil(3) * 4 + v.len().div_ceil(3) * 4 + 2)
        .sum();
    let mut serialized = String::with_capacity(size);
    serialize_headers_into(
        headers
            .iter()
            .filter(|(n, _)| keep_serialized(n))
            .map(|(n, v)| (n.as_bytes(), v.as_ref())),
        &mut serialized,
    );
    let status = if status == 101 { 200 } else { status };
    let mut resp = Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    h.reserve(3);
    // Names from `from_static` and the serialized text moved in: no copies (inserting by
    // `&str` would allocate each custom name again).
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(serialized)) {
        h.insert(HeaderName::from_static(RESPONSE_HEADERS), v);
    }
    h.insert(
        HeaderName::from_static(RESPONSE_META),
        HeaderValue::from_static(META_ORIGIN),
    );
    if let Some((_, v)) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        && let Ok(v) = HeaderValue::from_bytes(v)
    {
        h.insert(http::header::CONTENT_LENGTH, v);
    }
    resp
}

/// cloudflared's error response: 502, no serialized headers, meta `{"src":"cloudflared"}`.
pub fn error_head() -> Response<()> {
    let mut resp = Response::new(());
    *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
    resp.headers_mut()
        .insert(RESPONSE_META, HeaderValue::from_static(META_CLOUDFLARED));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::headers::deserialize_headers;

    #[test]
    fn filtering_and_status_mapping() {
        let headers = vec![
            ("Content-Type".to_owned(), Bytes::from_static(b"text/plain")),
            ("Cf-Cloudflared-X".to_owned(), Bytes::from_static(b"no")),
            (
                "Transfer-Encoding".to_owned(),
                Bytes::from_static(b"chunked"),
            ),
            ("Upgrade".to_owned(), Bytes::from_static(b"websocket")),
            ("Content-Length".to_owned(), Bytes::from_static(b"5")),
        ];
        let resp = origin_head(101, &headers);
        assert_eq!(resp.status(), 200);
        let ser = resp.headers()[RESPONSE_HEADERS].to_str().unwrap();
        let decoded = deserialize_headers(ser).unwrap();
        let names: Vec<&str> = decoded.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Content-Type", "Upgrade", "Content-Length"]);
        assert_eq!(resp.headers()["content-length"], "5");
        assert_eq!(error_head().headers()[RESPONSE_META], META_CLOUDFLARED);
    }
}
