//! HTTP/2 transport rules fed by the peer: the `cf-cloudflared-response-meta` JSON, the
//! configuration-push bodies, and request classification from arbitrary header lists. No panic;
//! a parsed response meta serializes to JSON that parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::proto::http2::{
    ConfigPushRequest, ConfigPushResponse, RequestKind, ResponseMeta, classify, should_flush,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = ResponseMeta::parse(data) {
        let json = meta.to_json();
        assert_eq!(
            ResponseMeta::parse(json.as_bytes()).expect("own JSON"),
            meta
        );
    }
    let _ = serde_json::from_slice::<ConfigPushRequest>(data);
    let _ = serde_json::from_slice::<ConfigPushResponse>(data);

    // Classification: the input as `name:value` lines.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let headers: Vec<(&str, &[u8])> = text
        .lines()
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            (n, v.as_bytes())
        })
        .collect();
    let kind = classify(headers.iter().copied());
    let first = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    };
    let flush = should_flush(
        kind,
        first("content-length"),
        first("transfer-encoding"),
        first("content-type"),
    );
    if matches!(
        kind,
        RequestKind::Websocket | RequestKind::TcpStream | RequestKind::ControlStream
    ) {
        assert!(flush);
    }
});
