//! Pure rules of the HTTP/2 transport: request classification (§3.2), the flush rule (§3.4), the
//! response-meta JSON (§3.4-§3.5), the configuration-push bodies (§3.8) and `Sec-WebSocket-Accept` (§3.6).
//!
//! Everything here is a function of headers or bytes the caller already has. This module does not speak
//! HTTP/2, hold streams, or decide what to proxy; it only answers "what kind of request is this", "must
//! this write be flushed" and "what are the exact bytes of this small JSON document".

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::headers::{
    PROXY_CONNECTION_UPGRADE, PROXY_SRC, UPGRADE_CONTROL_STREAM, UPGRADE_UPDATE_CONFIGURATION,
    UPGRADE_WEBSOCKET, starts_with_ignore_case,
};

/// What an edge-opened HTTP/2 stream carries (spec §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// A remote configuration push (JSON body).
    ConfigurationUpdate,
    /// A websocket upgrade to proxy.
    Websocket,
    /// A raw TCP stream for private networking.
    TcpStream,
    /// The capnp RPC control stream.
    ControlStream,
    /// An ordinary eyeball request.
    Http,
}

/// Classifies a request from its headers, in the spec's order. Names match case-insensitively; values
/// of the upgrade header match exactly; like Go's `Header.Get`, only the first value of a name counts.
pub fn classify<'a, I>(headers: I) -> RequestKind
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut upgrade: Option<&[u8]> = None;
    let mut src: Option<&[u8]> = None;
    for (name, value) in headers {
        if upgrade.is_none() && name.eq_ignore_ascii_case(PROXY_CONNECTION_UPGRADE) {
            upgrade = Some(value);
        } else if src.is_none() && name.eq_ignore_ascii_case(PROXY_SRC) {
            src = Some(value);
        }
    }
    let upgrade = upgrade.unwrap_or_default();
    if upgrade == UPGRADE_UPDATE_CONFIGURATION.as_bytes() {
        RequestKind::ConfigurationUpdate
    } else if upgrade == UPGRADE_WEBSOCKET.as_bytes() {
        RequestKind::Websocket
    } else if src.is_some_and(|v| !v.is_empty()) {
        RequestKind::TcpStream
    } else if upgrade == UPGRADE_CONTROL_STREAM.as_bytes() {
        RequestKind::ControlStream
    } else {
        RequestKind::Http
    }
}

/// Content types whose responses are streamed, so every write is flushed.
const FLUSHABLE_CONTENT_TYPES: [&str; 3] = [
    "text/event-stream",
    "application/grpc",
    "application/x-ndjson",
];

/// Whether each write of a response body must be flushed to the edge at once (spec §3.4, http2 only).
///
/// Arguments are the origin response's first `Content-Length`, `Transfer-Encoding` and `Content-Type`
/// values; an empty value counts as absent, as in Go.
pub fn should_flush(
    kind: RequestKind,
    content_length: Option<&str>,
    transfer_encoding: Option<&str>,
    content_type: Option<&str>,
) -> bool {
    if matches!(
        kind,
        RequestKind::Websocket | RequestKind::TcpStream | RequestKind::ControlStream
    ) {
        return true;
    }
    if content_length.is_none_or(str::is_empty) {
        return true;
    }
    if transfer_encoding.is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        return true;
    }
    content_type.is_some_and(|ct| {
        FLUSHABLE_CONTENT_TYPES
            .iter()
            .any(|p| starts_with_ignore_case(ct, p))
    })
}

/// `cf-cloudflared-response-meta` for a response produced by the origin.
pub const META_ORIGIN: &str = r#"{"src":"origin"}"#;
/// `cf-cloudflared-response-meta` for an error produced by the connector.
pub const META_CLOUDFLARED: &str = r#"{"src":"cloudflared"}"#;
/// `cf-cloudflared-response-meta` when the flow limiter refused a TCP stream.
pub const META_FLOW_RATE_LIMITED: &str = r#"{"src":"cloudflared","flow_rate_limited":true}"#;

/// Parsed `cf-cloudflared-response-meta`: who produced a response (the edge uses it for error pages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseMeta {
    /// `origin` or `cloudflared`.
    pub src: String,
    /// True when the connector refused a flow because of `max-active-flows`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flow_rate_limited: bool,
}

impl ResponseMeta {
    /// Parses the JSON, tolerating key order, whitespace and unknown keys.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether a `cf-cloudflared-response-meta` value says the connector (not the origin)
    /// produced the response. The exact bytes cloudflared sends (every response carries one)
    /// are recognised without parsing JSON; anything else is parsed, and unparseable counts
    /// as the origin's.
    pub fn from_connector(bytes: &[u8]) -> bool {
        match bytes {
            b if b == META_ORIGIN.as_bytes() => false,
            b if b == META_CLOUDFLARED.as_bytes() || b == META_FLOW_RATE_LIMITED.as_bytes() => true,
            _ => Self::parse(bytes).is_ok_and(|m| m.src == "cloudflared"),
        }
    }

    /// The exact bytes cloudflared sends for this value.
    pub fn to_json(&self) -> String {
        match (self.src.as_str(), self.flow_rate_limited) {
            ("origin", false) => META_ORIGIN.to_owned(),
            ("cloudflared", false) => META_CLOUDFLARED.to_owned(),
            ("cloudflared", true) => META_FLOW_RATE_LIMITED.to_owned(),
            // Field order matches the struct, which matches Go's encoder.
            _ => serde_json::to_string(self).unwrap_or_default(),
        }
    }
}

/// Body of an HTTP/2 configuration push (spec §3.8).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigPushRequest {
    /// Monotonic version; applied only when greater than the current one.
    pub version: i32,
    /// The remote configuration object (spec §5.6), kept raw for the config module to parse.
    pub config: Box<serde_json::value::RawValue>,
}

/// Response body of an HTTP/2 configuration push: `{"lastAppliedVersion":N,"err":null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPushResponse {
    /// The version in force after the push.
    #[serde(rename = "lastAppliedVersion")]
    pub last_applied_version: i32,
    /// `None` on success. On failure cloudflared sends `{}` (a Go error value encodes as an empty
    /// object), so the edge can only tell null from not-null; we send `{}` too.
    #[serde(with = "go_error")]
    pub err: Option<String>,
}

/// Encodes `Option<String>` the way Go's `json.Marshal(error)` does: `null` or `{}`.
mod go_error {
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(err: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match err {
            None => s.serialize_none(),
            Some(_) => s.serialize_map(Some(0))?.end(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let value = Option::<serde_json::Value>::deserialize(d)?;
        Ok(value.map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

/// The GUID RFC 6455 appends to the client key.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2): base64(SHA-1(key + GUID)).
pub fn websocket_accept(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(headers: &[(&'static str, &'static str)]) -> RequestKind {
        classify(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn classification_order() {
        let up = PROXY_CONNECTION_UPGRADE;
        assert_eq!(
            kind(&[(up, "update-configuration"), (PROXY_SRC, "x")]),
            RequestKind::ConfigurationUpdate
        );
        assert_eq!(
            kind(&[
                (PROXY_SRC, "x"),
                ("Cf-Cloudflared-Proxy-Connection-Upgrade", "websocket")
            ]),
            RequestKind::Websocket
        );
        assert_eq!(
            kind(&[(up, "control-stream"), (PROXY_SRC, "1.2.3.4")]),
            RequestKind::TcpStream
        );
        assert_eq!(
            kind(&[(up, "control-stream"), (PROXY_SRC, "")]),
            RequestKind::ControlStream
        );
        assert_eq!(kind(&[(up, "Websocket")]), RequestKind::Http);
        assert_eq!(kind(&[]), RequestKind::Http);
    }

    #[test]
    fn flush_rule() {
        let http = RequestKind::Http;
        assert!(should_flush(RequestKind::Websocket, Some("5"), None, None));
        assert!(should_flush(http, None, None, None));
        assert!(should_flush(http, Some(""), None, None));
        assert!(should_flush(http, Some("5"), Some("Chunked"), None));
        assert!(should_flush(
            http,
            Some("5"),
            None,
            Some("Text/Event-Stream; charset=utf-8")
        ));
        assert!(should_flush(
            http,
            Some("5"),
            None,
            Some("application/grpc+proto")
        ));
        assert!(!should_flush(
            http,
            Some("5"),
            Some("gzip"),
            Some("text/html")
        ));
    }

    #[test]
    fn meta_bytes_and_parse() {
        let origin = ResponseMeta {
            src: "origin".into(),
            flow_rate_limited: false,
        };
        assert_eq!(origin.to_json(), META_ORIGIN);
        let limited =
            ResponseMeta::parse(b" { \"flow_rate_limited\" : true, \"src\":\"cloudflared\" } ")
                .unwrap();
        assert_eq!(limited.to_json(), META_FLOW_RATE_LIMITED);
        assert_eq!(
            serde_json::to_string(&limited).unwrap(),
            META_FLOW_RATE_LIMITED
        );
        assert_eq!(
            ResponseMeta::parse(META_CLOUDFLARED.as_bytes())
                .unwrap()
                .to_json(),
            META_CLOUDFLARED
        );
        // The fast path and the parser agree, and spacing or key order does not matter.
        assert!(!ResponseMeta::from_connector(META_ORIGIN.as_bytes()));
        assert!(ResponseMeta::from_connector(META_CLOUDFLARED.as_bytes()));
        assert!(ResponseMeta::from_connector(
            META_FLOW_RATE_LIMITED.as_bytes()
        ));
        assert!(ResponseMeta::from_connector(
            br#"{ "src" : "cloudflared" }"#
        ));
        assert!(!ResponseMeta::from_connector(br#"{"src":"origin","x":1}"#));
        assert!(!ResponseMeta::from_connector(b"not json"));
    }

    #[test]
    fn config_push_bodies() {
        let req: ConfigPushRequest =
            serde_json::from_str(r#"{"version":3,"config":{"ingress":[]}}"#).unwrap();
        assert_eq!(req.version, 3);
        assert_eq!(req.config.get(), r#"{"ingress":[]}"#);
        let ok = ConfigPushResponse {
            last_applied_version: 3,
            err: None,
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"lastAppliedVersion":3,"err":null}"#
        );
        let bad = ConfigPushResponse {
            last_applied_version: -1,
            err: Some("x".into()),
        };
        assert_eq!(
            serde_json::to_string(&bad).unwrap(),
            r#"{"lastAppliedVersion":-1,"err":{}}"#
        );
        let parsed: ConfigPushResponse =
            serde_json::from_str(r#"{"lastAppliedVersion":-1,"err":{}}"#).unwrap();
        assert!(parsed.err.is_some());
    }

    #[test]
    fn websocket_accept_rfc_example() {
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
