//! The serialized-headers codec of the HTTP/2 transport (spec §3.4) and the header names it uses.
//!
//! Origin response headers travel to the edge inside one HTTP/2 header, `cf-cloudflared-response-headers`,
//! as `B64(name):B64(value)` pairs joined by `;` (standard alphabet, no padding). This module encodes,
//! decodes and filters those pairs. It is on the per-request hot path, so encoding appends into one
//! `String` and [`deserialize_headers_into`] decodes into a reusable [`DecodedHeaders`] buffer without
//! per-pair allocations. It knows nothing about HTTP/2 framing or about which request is being served.

use std::ops::Range;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use thiserror::Error;

/// Request header whose value selects websocket, configuration update or control stream (spec §3.2).
pub const PROXY_CONNECTION_UPGRADE: &str = "cf-cloudflared-proxy-connection-upgrade";
/// Request header marking a TCP (private network) stream when non-empty.
pub const PROXY_SRC: &str = "cf-cloudflared-proxy-src";
/// Response header carrying the serialized origin headers.
pub const RESPONSE_HEADERS: &str = "cf-cloudflared-response-headers";
/// Response header carrying the [`crate::proto::http2::ResponseMeta`] JSON.
pub const RESPONSE_META: &str = "cf-cloudflared-response-meta";
/// Response header with base64 OTLP spans; sent as a real header, never serialized.
pub const TRACING: &str = "cf-int-cloudflared-tracing";
/// Request-side serialized headers; defined by cloudflared but unused in 2025.5.0.
pub const REQUEST_HEADERS: &str = "cf-cloudflared-request-headers";
/// Trace id request header (case-insensitive on the wire).
pub const TRACE_ID: &str = "cf-trace-id";

/// `cf-cloudflared-proxy-connection-upgrade` value for a configuration push.
pub const UPGRADE_UPDATE_CONFIGURATION: &str = "update-configuration";
/// `cf-cloudflared-proxy-connection-upgrade` value for a websocket.
pub const UPGRADE_WEBSOCKET: &str = "websocket";
/// `cf-cloudflared-proxy-connection-upgrade` value for the control stream.
pub const UPGRADE_CONTROL_STREAM: &str = "control-stream";

/// Go's `base64.RawStdEncoding`: standard alphabet, no padding written or accepted, and (like Go's
/// non-strict mode) nonzero trailing bits tolerated when decoding.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Why a serialized-headers value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderDecodeError {
    /// A `;`-separated piece did not split into exactly two parts on `:` (cloudflared's exact wording).
    #[error("Unable to deserialize headers")]
    Malformed,
    /// A name or value is not valid unpadded standard base64.
    #[error("Unable to deserialize headers: invalid base64 in header {which}")]
    Base64 {
        /// `"name"` or `"value"`.
        which: &'static str,
    },
    /// The decoded bytes are not UTF-8 (only from the `String` convenience API).
    #[error("Unable to deserialize headers: header {which} is not UTF-8")]
    NotUtf8 {
        /// `"name"` or `"value"`.
        which: &'static str,
    },
}

/// Serializes `(name, value)` pairs; pass one pair per header value, in the order to keep.
pub fn serialize_headers<I, N, V>(headers: I) -> String
where
    I: IntoIterator<Item = (N, V)>,
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut out = String::new();
    serialize_headers_into(headers, &mut out);
    out
}

/// Like [`serialize_headers`] but appends to `out`, so a caller can reuse one buffer.
pub fn serialize_headers_into<I, N, V>(headers: I, out: &mut String)
where
    I: IntoIterator<Item = (N, V)>,
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    for (i, (name, value)) in headers.into_iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        ENGINE.encode_string(name.as_ref(), out);
        out.push(':');
        ENGINE.encode_string(value.as_ref(), out);
    }
}

/// Decoded header pairs stored in one byte buffer. Reuse it across requests with
/// [`deserialize_headers_into`] to avoid allocating per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedHeaders {
    /// All decoded names and values back to back.
    bytes: Vec<u8>,
    /// Per pair: the byte ranges of the name and the value inside `bytes`.
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl DecodedHeaders {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs as raw bytes, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.pairs.iter().map(|(n, v)| {
            (
                self.bytes.get(n.clone()).unwrap_or_default(),
                self.bytes.get(v.clone()).unwrap_or_default(),
            )
        })
    }

    /// Calls `f(name, value)` for each pair, the values as `Bytes` slices of the one decoded
    /// buffer, which is moved, not copied: owned values without an allocation each.
    pub fn into_each(self, mut f: impl FnMut(&[u8], Bytes)) {
        let bytes = Bytes::from(self.bytes);
        for (n, v) in self.pairs {
            if let (Some(name), true) = (bytes.get(n), v.end <= bytes.len()) {
                f(name, bytes.slice(v));
            }
        }
    }

    /// Empties the buffer but keeps its capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.pairs.clear();
    }

    fn push_decoded(
        &mut self,
        encoded: &[u8],
        which: &'static str,
    ) -> Result<Range<usize>, HeaderDecodeError> {
        let start = self.bytes.len();
        // Go's decoder skips '\r' and '\n' anywhere in the input; the rare value that has them is
        // filtered into a temporary so the common path decodes straight from the wire bytes.
        let result = if encoded.iter().any(|&b| b == b'\r' || b == b'\n') {
            let filtered: Vec<u8> = encoded
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect();
            ENGINE.decode_vec(&filtered, &mut self.bytes)
        } else {
            ENGINE.decode_vec(encoded, &mut self.bytes)
        };
        result.map_err(|_| HeaderDecodeError::Base64 { which })?;
        Ok(start..self.bytes.len())
    }
}

/// Decodes a serialized-headers value into `out` (cleared first). On error `out` holds a partial result.
pub fn deserialize_headers_into(
    input: &[u8],
    out: &mut DecodedHeaders,
) -> Result<(), HeaderDecodeError> {
    out.clear();
    // Decoded base64 is at most 3/4 of the input: one reservation instead of growing per pair.
    out.bytes.reserve(input.len() / 4 * 3 + 3);
    for piece in input.split(|&b| b == b';').filter(|p| !p.is_empty()) {
        let mut parts = piece.split(|&b| b == b':');
        let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(HeaderDecodeError::Malformed);
        };
        let name = out.push_decoded(name, "name")?;
        let value = out.push_decoded(value, "value")?;
        out.pairs.push((name, value));
    }
    Ok(())
}

/// Decodes a serialized-headers value into owned UTF-8 pairs (convenience for tests and the simulator).
pub fn deserialize_headers(input: &str) -> Result<Vec<(String, String)>, HeaderDecodeError> {
    let mut decoded = DecodedHeaders::default();
    deserialize_headers_into(input.as_bytes(), &mut decoded)?;
    decoded
        .iter()
        .map(|(n, v)| Ok((utf8(n, "name")?, utf8(v, "value")?)))
        .collect()
}

fn utf8(bytes: &[u8], which: &'static str) -> Result<String, HeaderDecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| HeaderDecodeError::NotUtf8 { which })
}

/// Whether an origin response header goes into `cf-cloudflared-response-headers` (spec §3.4).
///
/// Drops names starting (case-insensitively) with `:`, `cf-int-`, `cf-cloudflared-`, and with
/// `drop_cf_proxy` (HEAD behaviour) also `cf-proxy-`; always keeps `sec-websocket-accept`,
/// `connection` and `upgrade`.
pub fn is_serializable_response_header(name: &str, drop_cf_proxy: bool) -> bool {
    const ALWAYS_KEEP: [&str; 3] = ["sec-websocket-accept", "connection", "upgrade"];
    if ALWAYS_KEEP.iter().any(|k| name.eq_ignore_ascii_case(k)) {
        return true;
    }
    let control = [":", "cf-int-", "cf-cloudflared-"]
        .iter()
        .any(|p| starts_with_ignore_case(name, p));
    !(control || (drop_cf_proxy && starts_with_ignore_case(name, "cf-proxy-")))
}

/// Serializes only the headers [`is_serializable_response_header`] keeps.
pub fn serialize_response_headers<'a, I>(headers: I, drop_cf_proxy: bool) -> String
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    serialize_headers(
        headers
            .into_iter()
            .filter(|(name, _)| is_serializable_response_header(name, drop_cf_proxy)),
    )
}

pub(crate) fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_round_trips() {
        let wire = serialize_headers([("Content-Type", "text/plain"), ("X-A", "1")]);
        assert_eq!(wire, "Q29udGVudC1UeXBl:dGV4dC9wbGFpbg;WC1B:MQ");
        let back = deserialize_headers(&wire).unwrap();
        assert_eq!(
            back,
            vec![
                ("Content-Type".into(), "text/plain".into()),
                ("X-A".into(), "1".into())
            ]
        );
    }

    #[test]
    fn empty_pieces_are_skipped_and_bad_pieces_rejected() {
        assert_eq!(deserialize_headers(";;WC1B:MQ;").unwrap().len(), 1);
        assert_eq!(deserialize_headers("").unwrap(), vec![]);
        assert_eq!(
            deserialize_headers("WC1B").unwrap_err(),
            HeaderDecodeError::Malformed
        );
        assert_eq!(
            deserialize_headers("a:b:c").unwrap_err(),
            HeaderDecodeError::Malformed
        );
        assert!(
            deserialize_headers("WC1B:MQ==")
                .unwrap_err()
                .to_string()
                .starts_with("Unable to deserialize headers")
        );
        assert!(matches!(
            deserialize_headers("!!:MQ"),
            Err(HeaderDecodeError::Base64 { which: "name" })
        ));
    }

    #[test]
    fn line_breaks_inside_base64_are_skipped_like_go() {
        // Go's base64 decoder ignores CR and LF anywhere in its input.
        assert_eq!(
            deserialize_headers("Q29udGVu\r\ndC1UeXBl:dGV4\ndC9wbGFpbg").unwrap(),
            vec![("Content-Type".into(), "text/plain".into())]
        );
        assert!(matches!(
            deserialize_headers("WC1B:M\tQ"),
            Err(HeaderDecodeError::Base64 { which: "value" })
        ));
    }

    #[test]
    fn buffer_is_reusable() {
        let mut buf = DecodedHeaders::default();
        deserialize_headers_into(b"WC1B:MQ", &mut buf).unwrap();
        deserialize_headers_into(b"WC1C:Mg;WC1E:", &mut buf).unwrap();
        let pairs: Vec<_> = buf.iter().collect();
        assert_eq!(
            pairs,
            vec![(&b"X-B"[..], &b"2"[..]), (&b"X-D"[..], &b""[..])]
        );
    }

    #[test]
    fn owned_values_are_slices_of_the_decoded_buffer() {
        let wire = serialize_headers([
            ("Content-Type", "text/plain"),
            ("X-Empty", ""),
            ("X-A", "1"),
        ]);
        let mut buf = DecodedHeaders::default();
        deserialize_headers_into(wire.as_bytes(), &mut buf).unwrap();
        let mut seen = Vec::new();
        buf.into_each(|n, v| seen.push((n.to_vec(), v)));
        let want: [(&[u8], &[u8]); 3] = [
            (b"Content-Type", b"text/plain"),
            (b"X-Empty", b""),
            (b"X-A", b"1"),
        ];
        assert_eq!(seen.len(), want.len());
        for ((n, v), (wn, wv)) in seen.iter().zip(want) {
            assert_eq!((n.as_slice(), v.as_ref()), (wn, wv));
        }
        // One buffer behind every value: the first and the last are slices of the same bytes.
        let (first, last) = (seen[0].1.as_ptr() as usize, seen[2].1.as_ptr() as usize);
        assert!(
            last > first && last - first < wire.len(),
            "{first:x} {last:x}"
        );
    }

    #[test]
    fn response_filter_follows_spec() {
        for keep in [
            "Content-Type",
            "Sec-WebSocket-Accept",
            "Connection",
            "Upgrade",
            "cf-proxy-x",
        ] {
            assert!(is_serializable_response_header(keep, false), "{keep}");
        }
        for drop in [
            ":status",
            "cf-int-foo",
            "Cf-Cloudflared-Response-Meta",
            "CF-INT-x",
        ] {
            assert!(!is_serializable_response_header(drop, false), "{drop}");
        }
        assert!(!is_serializable_response_header("Cf-Proxy-X", true));
        let wire = serialize_response_headers([("A", &b"1"[..]), ("cf-int-x", &b"2"[..])], false);
        assert_eq!(
            deserialize_headers(&wire).unwrap(),
            vec![("A".into(), "1".into())]
        );
    }
}
