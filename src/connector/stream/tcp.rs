//! Stream services: TCP carried in WebSocket frames (`tcp://`, `ssh://`, `rdp://`, bastion,
//! with `proxyType: socks` handed to [`super::socks`]) and private-network TCP (spec §3.7).

#![forbid(unsafe_code)]

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::error::{Cause, Side, StreamError};
use super::pipe::pipe_raw;
use super::{BodyReader, ResponseHead, ResponseSender, StreamHead};
use crate::connector::core::Core;
use crate::connector::origin::{Dial, Target};
use crate::ingress::{OriginRequest, Rule};
use crate::proto::http2::websocket_accept;

/// The refusal when `warp-routing.maxActiveFlows` is reached (QUIC flags it in the
/// `ConnectResponse` metadata as `FlowConnectRateLimited`).
pub(super) const RATE_LIMITED: &str =
    "failed to start tcp flow due to rate limiting: too many active flows";

/// `Cf-Access-Jump-Destination` with scheme and path stripped.
pub(super) fn jump_destination(v: &str) -> String {
    let v = v.split_once("://").map_or(v, |(_, rest)| rest);
    v.split('/').next().unwrap_or(v).to_owned()
}

/// TCP carried in websocket frames (`tcp://`, `ssh://`, ... and bastion): acknowledge with
/// 101 (sent as 200), then bridge.
pub(super) async fn stream_service<B: BodyReader, R: ResponseSender>(
    req: &StreamHead,
    mut recv: B,
    respond: &mut R,
    rule: &Rule,
    dest: &str,
) -> Result<u16, StreamError> {
    if rule.options.proxy_type == "socks" {
        return super::socks::serve_fixed(req, recv, respond, rule, dest)
            .await
            .map_err(socks_error);
    }
    let origin = dial_tcp(dest, &rule.options).await?;
    let mut send = acknowledge(req, respond)?;
    super::websocket::bridge(&mut recv, &mut send, origin).await;
    Ok(101)
}

/// The 101 (sent as 200 on HTTP/2) that accepts a websocket for a stream service, with
/// `Sec-Websocket-Accept` when the visitor sent a key.
pub(super) fn acknowledge<R: ResponseSender>(
    req: &StreamHead,
    respond: &mut R,
) -> Result<R::Writer, StreamError> {
    let mut headers = Vec::new();
    if let Some(key) = req
        .headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
    {
        headers.push(("Connection".to_owned(), Bytes::from_static(b"Upgrade")));
        headers.push((
            "Sec-Websocket-Accept".to_owned(),
            Bytes::from(websocket_accept(key)),
        ));
        headers.push(("Upgrade".to_owned(), Bytes::from_static(b"websocket")));
    }
    upgraded(respond, headers)
}

/// Sends a 101 head and returns its body writer.
fn upgraded<R: ResponseSender>(
    respond: &mut R,
    headers: Vec<(String, Bytes)>,
) -> Result<R::Writer, StreamError> {
    let head = ResponseHead {
        status: 101,
        headers,
    };
    respond
        .send(&head, false)?
        .ok_or_else(|| StreamError::refused("transport gave no body writer for an upgrade"))
}

async fn dial_tcp(
    dest: &str,
    o: &OriginRequest,
) -> Result<crate::connector::origin::OriginStream, StreamError> {
    let (host, port) = split_host_port(dest)
        .ok_or_else(|| StreamError::refused(format!("invalid destination {dest:?}")))?;
    let dial = Dial {
        target: Target::Tcp { host, port },
        tls: None,
        connect_timeout: o.connect_timeout,
        tls_timeout: o.tls_timeout,
        tcp_keep_alive: o.tcp_keep_alive,
    };
    crate::connector::origin::dial_stream(&dial)
        .await
        .map_err(StreamError::from)
}

fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

/// Private-network TCP (spec §3.7): dial `:authority`, acknowledge, pipe raw bytes.
pub(super) async fn tcp_stream<B: BodyReader, R: ResponseSender>(
    core: &Core,
    req: &StreamHead,
    mut recv: B,
    respond: &mut R,
) -> Result<u16, StreamError> {
    let dest = req
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    if dest.is_empty() {
        return Err(StreamError::refused(
            "cloudflared received a warp-routing request with an empty host value",
        ));
    }
    let warp = &core.shared.ingress.load().ingress().warp_routing.clone();
    let Some(_slot) = core.shared.acquire_flow(warp.max_active_flows) else {
        log::warn!(event = 2, destAddr = dest.as_str(); "Too many concurrent flows being handled, rejecting tcp proxy");
        return Err(StreamError::refused(RATE_LIMITED));
    };
    let o = OriginRequest {
        connect_timeout: warp.connect_timeout,
        tcp_keep_alive: warp.tcp_keep_alive,
        ..OriginRequest::default()
    };
    let counters = core.counters();
    // cloudflared's connect latency: dial plus acknowledgement, whole milliseconds; a failure
    // of either is a connect-stream error.
    let started = std::time::Instant::now();
    let origin = match dial_tcp(&dest, &o).await {
        Ok(origin) => origin,
        Err(e) => {
            counters.connect_stream_errors.fetch_add(1, Relaxed);
            return Err(e);
        }
    };
    counters.tcp_active.fetch_add(1, Relaxed);
    counters.tcp_total.fetch_add(1, Relaxed);
    let result = async {
        let mut send = match upgraded(respond, Vec::new()) {
            Ok(send) => send,
            Err(e) => {
                counters.connect_stream_errors.fetch_add(1, Relaxed);
                return Err(e);
            }
        };
        counters
            .connect_latency
            .observe(started.elapsed().as_millis() as f64);
        let (mut rd, mut wr) = origin.split();
        let mut leftover = bytes::BytesMut::new();
        pipe_raw(&mut rd, &mut wr, &mut leftover, &mut recv, &mut send).await;
        Ok(101)
    }
    .await;
    counters.tcp_active.fetch_sub(1, Relaxed);
    result
}

pub(super) fn socks_error(reason: String) -> StreamError {
    StreamError::new(Side::Origin, Cause::Socks(reason))
}
