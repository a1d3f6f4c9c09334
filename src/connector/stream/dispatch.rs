//! One edge-opened data stream, start to finish: classify (spec §3.2) -> match ingress ->
//! serve (HTTP origin, fixed status, hello_world, websocket-wrapped TCP, private TCP, config
//! push) -> count. Failures before any response bytes become cloudflared's 502 with
//! `{"src":"cloudflared"}`; later failures reset the stream. Nothing here panics on peer input.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::Request;

use super::error::{Answer, Cause, Side, StreamError};
use crate::connector::core::Core;
use crate::connector::origin::{Dial, Target, TlsParams};
use crate::connector::pipe::pipe_raw;
use crate::connector::proxy::{Outcome, proxy_http};
use crate::connector::response::origin_head;
use crate::ingress::{Matched, OriginRequest, Rule, Service};
use crate::proto::http2::{
    ConfigPushRequest, ConfigPushResponse, RequestKind, classify, websocket_accept,
};

/// Decrements the concurrent-requests gauge however the stream ends.
struct InFlight<'a>(&'a Core);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.counters().concurrent_requests.fetch_sub(1, Relaxed);
    }
}

/// Serves one data stream; `conn_index` labels logs.
pub async fn serve(
    core: &Core,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    conn_index: u8,
) {
    let kind = classify(
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    let counters = core.counters();
    counters.total_requests.fetch_add(1, Relaxed);
    counters.concurrent_requests.fetch_add(1, Relaxed);
    let _guard = InFlight(core);
    let status = match kind {
        RequestKind::ControlStream => {
            log::warn!(connIndex = conn_index; "edge opened a second control stream; refusing it");
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            return;
        }
        RequestKind::ConfigurationUpdate => config_update(core, req, &mut respond).await,
        RequestKind::TcpStream => tcp_stream(core, req, &mut respond).await,
        RequestKind::Http | RequestKind::Websocket => {
            route(
                core,
                req,
                &mut respond,
                kind == RequestKind::Websocket,
                conn_index,
            )
            .await
        }
    };
    match status {
        Ok(code) => {
            counters.response(code);
            let reason = http::StatusCode::from_u16(code)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("");
            log::debug!(connIndex = conn_index; "{code} {reason}");
        }
        Err(err) => fail(core, &mut respond, &err, conn_index),
    }
}

/// Ingress lookup and the rule's service.
async fn route(
    core: &Core,
    req: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
    websocket: bool,
    conn_index: u8,
) -> Result<u16, StreamError> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    // The table is held for this request only: a reload during it does not affect it.
    let table = core.shared.ingress.load();
    let (rule, index) = match table.find(&host, req.uri().path()) {
        Matched::Rule(i) => (table.rule(i), i.0),
        Matched::Internal(_) => {
            return Err(StreamError::refused(
                "management requests are not supported",
            ));
        }
    };
    log_request(&req, &host, conn_index, index, rule);
    if let Some(access) = rule.access.as_ref().filter(|a| a.required) {
        let token = req
            .headers()
            .get(crate::connector::access::HEADER)
            .map(|v| v.as_bytes());
        if let crate::connector::access::Decision::Deny(reason) =
            crate::connector::access::check(access, token)
                .await
                .map_err(|e| StreamError::new(Side::Local, Cause::Access(e)))?
        {
            log::error!(connIndex = conn_index; "request filtered by middleware handler (AccessJWTValidator) due to: {reason}");
            return status_only(respond, 403);
        }
    }
    match &rule.service {
        Service::Status(code) => status_only(respond, *code),
        Service::HelloWorld => Ok(crate::connector::hello::serve(req, respond, websocket)
            .await
            .unwrap_or(200)),
        Service::Http(o) => {
            let tls = (o.scheme == "https").then(|| tls_params(&rule.options, &host, &o.host));
            let target = Target::Tcp {
                host: o.host.clone(),
                port: o.port,
            };
            http_origin(core, req, respond, rule, target, tls, websocket).await
        }
        Service::Unix { path, tls } => {
            let tls = tls.then(|| tls_params(&rule.options, &host, "localhost"));
            let target = Target::Unix { path: path.clone() };
            http_origin(core, req, respond, rule, target, tls, websocket).await
        }
        Service::Stream(s) if websocket => {
            let dest = s.dest.clone();
            stream_service(req, respond, rule, &dest).await
        }
        Service::Bastion if websocket => {
            let dest = req
                .headers()
                .get("cf-access-jump-destination")
                .and_then(|v| v.to_str().ok())
                .map(jump_destination)
                .ok_or_else(|| StreamError::refused("Did not receive final destination from client. The --destination flag is likely not set on the client side"))?;
            stream_service(req, respond, rule, &dest).await
        }
        Service::SocksProxy { rules } if websocket => {
            crate::connector::socks::serve_proxy(req, respond, rule, rules)
                .await
                .map_err(socks_error)
        }
        Service::Stream(_) | Service::Bastion | Service::SocksProxy { .. } => {
            Err(StreamError::refused(
                "stream services need a websocket request (use cloudflared access)",
            ))
        }
    }
}

/// cloudflared's per-request debug line (`GET http://... HTTP/2.0 connIndex=N ...`). The
/// level check comes first, so a disabled debug level costs nothing per request.
fn log_request(req: &Request<RecvStream>, host: &str, conn_index: u8, index: usize, rule: &Rule) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let path_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let cf_ray = req
        .headers()
        .get("cf-ray")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let length = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-1");
    log::debug!(
        connIndex = conn_index,
        cfRay = cf_ray,
        host = host,
        path = req.uri().path(),
        ingressRule = index,
        originService = rule.service.to_string().as_str(),
        content_length = length;
        "{} http://localhost:8080{path_query} HTTP/2.0", req.method()
    );
}

/// `Cf-Access-Jump-Destination` with scheme and path stripped.
fn jump_destination(v: &str) -> String {
    let v = v.split_once("://").map_or(v, |(_, rest)| rest);
    v.split('/').next().unwrap_or(v).to_owned()
}

fn tls_params(opts: &OriginRequest, req_host: &str, origin_host: &str) -> TlsParams {
    let server_name = if !opts.origin_server_name.is_empty() {
        opts.origin_server_name.clone()
    } else if opts.match_sni_to_host {
        crate::ingress::gourl::strip_port(req_host).to_owned()
    } else {
        origin_host.to_owned()
    };
    TlsParams {
        server_name,
        ca_pool: opts.ca_pool.clone(),
        no_verify: opts.no_tls_verify,
        http2: opts.http2_origin,
    }
}

async fn http_origin(
    core: &Core,
    req: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
    rule: &Rule,
    target: Target,
    tls: Option<TlsParams>,
    websocket: bool,
) -> Result<u16, StreamError> {
    let o = &rule.options;
    let dial = Dial {
        target,
        tls,
        connect_timeout: o.connect_timeout,
        tls_timeout: o.tls_timeout,
        tcp_keep_alive: o.tcp_keep_alive,
    };
    match proxy_http(core, req, respond, &dial, o, websocket).await {
        Outcome::Responded(code) => Ok(code),
        Outcome::Failed(e) => Err(e.into()),
        Outcome::Aborted { status, error } => Err(StreamError::from(error).after_head(status)),
    }
}

/// A fixed status with an empty body and no headers (`http_status:NNN`, Access refusals).
fn status_only(respond: &mut SendResponse<Bytes>, code: u16) -> Result<u16, StreamError> {
    respond
        .send_response(origin_head(code, &[]), true)
        .map_err(StreamError::edge)?;
    Ok(code)
}

/// TCP carried in websocket frames (`tcp://`, `ssh://`, ... and bastion): acknowledge with
/// 101 (sent as 200), then bridge.
async fn stream_service(
    req: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
    rule: &Rule,
    dest: &str,
) -> Result<u16, StreamError> {
    if rule.options.proxy_type == "socks" {
        return crate::connector::socks::serve_fixed(req, respond, rule, dest)
            .await
            .map_err(socks_error);
    }
    let origin = dial_tcp(dest, &rule.options).await?;
    let mut headers = Vec::new();
    if let Some(key) = req
        .headers()
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
    let mut send = respond
        .send_response(origin_head(101, &headers), false)
        .map_err(StreamError::edge)?;
    let mut recv = req.into_body();
    crate::connector::ws::bridge(&mut recv, &mut send, origin).await;
    Ok(101)
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
    crate::connector::origin::dial(&dial, &crate::connector::origin::OriginTls::default())
        .await
        .map_err(StreamError::from)
}

fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

/// Private-network TCP (spec §3.7): dial `:authority`, acknowledge, pipe raw bytes.
async fn tcp_stream(
    core: &Core,
    req: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
) -> Result<u16, StreamError> {
    let dest = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    if dest.is_empty() {
        return Err(StreamError::refused(
            "cloudflared received a warp-routing request with an empty host value",
        ));
    }
    let warp = &core.shared.ingress.load().ingress().warp_routing.clone();
    let o = OriginRequest {
        connect_timeout: warp.connect_timeout,
        tcp_keep_alive: warp.tcp_keep_alive,
        ..OriginRequest::default()
    };
    let origin = dial_tcp(&dest, &o).await?;
    let counters = core.counters();
    counters.tcp_active.fetch_add(1, Relaxed);
    counters.tcp_total.fetch_add(1, Relaxed);
    let result = async {
        let mut send = respond
            .send_response(origin_head(101, &[]), false)
            .map_err(StreamError::edge)?;
        let mut recv = req.into_body();
        let (rd, wr) = futures_util::io::AsyncReadExt::split(origin);
        pipe_raw(rd, wr, bytes::BytesMut::new(), &mut recv, &mut send).await;
        Ok(101)
    }
    .await;
    counters.tcp_active.fetch_sub(1, Relaxed);
    result
}

/// A configuration push over http2 (spec §3.8, §5.6): a newer version replaces the ingress
/// rules; an older one is acknowledged with the current version; a bad one keeps the rules.
async fn config_update(
    core: &Core,
    req: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
) -> Result<u16, StreamError> {
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(StreamError::edge)?;
        crate::runtime::h2stream::release(&mut body, chunk.len());
        bytes.extend_from_slice(&chunk);
        if bytes.len() > 16 << 20 {
            return Err(config_push("configuration push too large".into()));
        }
    }
    let push: ConfigPushRequest = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        // cloudflared answers a body it cannot decode with its 502.
        Err(e) => return Err(config_push(e.to_string())),
    };
    let reply = apply_push(core, &push);
    let json = serde_json::to_string(&reply).map_err(|e| config_push(e.to_string()))?;
    let mut resp = http::Response::new(());
    *resp.status_mut() = http::StatusCode::OK;
    let mut send = respond
        .send_response(resp, false)
        .map_err(StreamError::edge)?;
    send.send_data(Bytes::from(json), true)
        .map_err(StreamError::edge)?;
    Ok(200)
}

fn apply_push(core: &Core, push: &ConfigPushRequest) -> ConfigPushResponse {
    let shared = &core.shared;
    // Held while parsing so two cores applying pushes at once cannot go backwards.
    let Ok(mut current) = shared.config_version.lock() else {
        return ConfigPushResponse {
            last_applied_version: -1,
            err: Some("configuration state unavailable".into()),
        };
    };
    if push.version <= *current {
        return ConfigPushResponse {
            last_applied_version: *current,
            err: None,
        };
    }
    match crate::connector::remote_config::parse_remote(push.config.get().as_bytes()) {
        Ok(table) => {
            shared.ingress.publish(table);
            *current = push.version;
            log::info!(version = push.version, config = push.config.get(); "Updated to new configuration");
            ConfigPushResponse {
                last_applied_version: push.version,
                err: None,
            }
        }
        Err(e) => {
            log::error!(version = push.version, error = e.as_str(); "Failed to apply remote configuration");
            ConfigPushResponse {
                last_applied_version: *current,
                err: Some(e),
            }
        }
    }
}

fn config_push(reason: String) -> StreamError {
    StreamError::new(Side::Local, Cause::ConfigPush(reason))
}

/// The one place a failed stream becomes an answer, a log line and a count.
fn fail(core: &Core, respond: &mut SendResponse<Bytes>, err: &StreamError, conn_index: u8) {
    let counters = core.counters();
    counters.request_errors.fetch_add(1, Relaxed);
    err.log(conn_index);
    if let Some(status) = err.after_head {
        // The head went out and the body writer already reset the stream.
        counters.response(status);
        return;
    }
    super::h2::H2Respond::fail_on(respond, err);
    match err.answer(false) {
        Answer::BadGateway => counters.response(502),
        Answer::Forbidden => counters.response(403),
        Answer::Reset => {}
    }
}

fn socks_error(reason: String) -> StreamError {
    StreamError::new(Side::Origin, Cause::Socks(reason))
}
