//! `hello_world`: cloudflared's built-in test origin (spec §8.4), served in-process on the core
//! that received the request, with no socket: `/` (an HTML page describing the request),
//! `/uptime`, `/_health`, `/sse?freq=` (an event stream) and `/ws` (websocket echo).

#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{BodyReader, BodyWriter, ResponseHead, ResponseSender, StreamHead};
use crate::config::duration::parse_go_duration;
use crate::logging::rfc3339_utc;
use crate::proto::http2::websocket_accept;

/// Process start, for `/uptime` (set on first use).
pub fn start_time() -> SystemTime {
    static START: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

/// Serves one request; returns the status sent.
pub async fn serve<B: BodyReader, R: ResponseSender>(
    req: &StreamHead,
    recv: B,
    respond: &mut R,
    websocket: bool,
) -> Option<u16> {
    let path = req.uri.path();
    if websocket && path == "/ws" {
        return serve_ws(req, recv, respond).await;
    }
    let (status, ctype, body) = match path {
        "/" => (200, "text/html; charset=utf-8", page(req)),
        "/uptime" => {
            let start = start_time();
            let up = SystemTime::now().duration_since(start).unwrap_or_default();
            let body = format!(
                "{{\"startTime\":\"{}\",\"uptime\":\"{}\"}}",
                rfc3339_utc(start),
                crate::connector::backoff::go_duration(up)
            );
            (200, "application/json", body)
        }
        "/_health" => (200, "text/plain; charset=utf-8", "ok".into()),
        "/sse" => return serve_sse(req, respond).await,
        _ => (
            404,
            "text/plain; charset=utf-8",
            "404 page not found\n".into(),
        ),
    };
    let headers = vec![
        (
            "Content-Type".to_owned(),
            Bytes::from_static(ctype.as_bytes()),
        ),
        (
            "Content-Length".to_owned(),
            Bytes::from(body.len().to_string()),
        ),
    ];
    let mut send = respond
        .send(&ResponseHead { status, headers }, false)
        .ok()??;
    send.write(Bytes::from(body)).await.ok()?;
    send.finish(None).ok()?;
    Some(status)
}

fn page(req: &StreamHead) -> String {
    let host = req.uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let mut headers = String::new();
    for (name, value) in &req.headers {
        headers.push_str(&format!(
            "<li>{}: {}</li>\n",
            escape(name.as_str()),
            escape(&String::from_utf8_lossy(value.as_bytes()))
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html>\n<head><title>Cloudflare Tunnel Connection</title></head>\n<body>\n\
<h1>Congrats! You created a tunnel!</h1>\n<p>Served by ringflare's built-in hello_world origin.</p>\n\
<ul>\n<li>Method: {}</li>\n<li>Protocol: HTTP/1.1</li>\n<li>URL: {}</li>\n<li>Host: {}</li>\n</ul>\n\
<h2>Headers</h2>\n<ul>\n{headers}</ul>\n</body>\n</html>\n",
        escape(req.method.as_str()),
        escape(&req.uri.to_string()),
        escape(host),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn serve_sse<R: ResponseSender>(req: &StreamHead, respond: &mut R) -> Option<u16> {
    let freq = req
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("freq=")))
        .and_then(|v| parse_go_duration(v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(1));
    let headers = vec![(
        "Content-Type".to_owned(),
        Bytes::from_static(b"text/event-stream"),
    )];
    let mut send = respond
        .send(
            &ResponseHead {
                status: 200,
                headers,
            },
            false,
        )
        .ok()??;
    // Runs until the eyeball goes away (the send fails).
    for n in 0u64.. {
        if send.write(Bytes::from(format!("{n}\n\n"))).await.is_err() {
            break;
        }
        compio::time::sleep(freq).await;
    }
    Some(200)
}

async fn serve_ws<B: BodyReader, R: ResponseSender>(
    req: &StreamHead,
    mut recv: B,
    respond: &mut R,
) -> Option<u16> {
    let key = req
        .headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(websocket_accept);
    let mut headers = vec![
        ("Connection".to_owned(), Bytes::from_static(b"Upgrade")),
        ("Upgrade".to_owned(), Bytes::from_static(b"websocket")),
    ];
    if let Some(accept) = key {
        headers.push(("Sec-Websocket-Accept".to_owned(), Bytes::from(accept)));
    }
    let mut send = respond
        .send(
            &ResponseHead {
                status: 101,
                headers,
            },
            false,
        )
        .ok()??;
    super::websocket::echo(&mut recv, &mut send).await;
    Some(101)
}
