//! One edge-opened data stream, start to finish: classify (spec §3.2) -> match ingress ->
//! serve (HTTP origin, fixed status, hello_world, websocket-wrapped TCP, private TCP, config
//! push) -> count. Failures before any response bytes become cloudflared's 502 with
//! `{"src":"cloudflared"}`; later failures reset the stream. Nothing here panics on peer input.

use std::sync::atomic::Ordering::Relaxed;

use super::config_push::config_update;
use super::error::{Cause, Side, StreamError};
use super::http::{Outcome, proxy_http};
use super::pipe::Upgraded;
use super::status::status_only;
use super::tcp::{jump_destination, socks_error, stream_service, tcp_stream};
use super::{EdgeStream, ResponseSender, StreamHead};
use crate::connector::core::Core;
use crate::connector::origin::{Dial, Target, TlsParams};
use crate::ingress::{Matched, OriginRequest, Rule, Service};
use crate::proto::http2::RequestKind;

/// Decrements the concurrent-requests gauge however the stream ends.
struct InFlight<'a>(&'a Core);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.counters().concurrent_requests.fetch_sub(1, Relaxed);
    }
}

/// An upgraded stream's body reader and writer, for transport `S`.
type UpgradedOf<S> = Upgraded<<S as EdgeStream>::Body, Writer<S>>;
type Writer<S> = <<S as EdgeStream>::Respond as ResponseSender>::Writer;

/// Serves one data stream of any transport; `conn_index` labels logs.
///
/// The stream's task holds this future whole for the stream's life (hours for an idle
/// WebSocket): everything up to the response head is boxed at once (the stream itself moves
/// into that box, so the returned future does not carry it) and freed once it is over, so that
/// an upgraded stream's task holds only the piping (see the memory budget in the module
/// docs). One allocation per stream.
pub fn serve<'a, S: EdgeStream + 'a>(
    core: &'a Core,
    stream: S,
    conn_index: u8,
) -> impl Future<Output = ()> + 'a {
    let start = Box::pin(start(core, stream, conn_index));
    async move {
        let counters = core.counters();
        counters.total_requests.fetch_add(1, Relaxed);
        counters.concurrent_requests.fetch_add(1, Relaxed);
        let _guard = InFlight(core);
        if let Some(upgraded) = start.await {
            upgraded.pipe().await;
            responded(core, 101, conn_index);
        }
    }
}

/// Serves a stream up to its response head, or whole where it never idles as an upgraded
/// HTTP origin connection does: returns that connection, answered, for the caller to pipe.
async fn start<S: EdgeStream>(core: &Core, stream: S, conn_index: u8) -> Option<UpgradedOf<S>> {
    let (head, body, mut respond) = stream.into_parts();
    let kind = head.kind;
    // Services other than HTTP origins are boxed: an HTTP request's box stays small.
    let status = match kind {
        RequestKind::ControlStream => {
            log::warn!(connIndex = conn_index; "edge opened a second control stream; refusing it");
            respond.refuse();
            return None;
        }
        RequestKind::ConfigurationUpdate => Box::pin(config_update(core, body, &mut respond)).await,
        RequestKind::TcpStream => Box::pin(tcp_stream(core, &head, body, &mut respond))
            .await
            .map_err(|e| e.in_rule(None, "warp-routing".into())),
        RequestKind::Http | RequestKind::Websocket => {
            let websocket = kind == RequestKind::Websocket;
            match route(core, &head, body, &mut respond, websocket, conn_index).await {
                Ok(Served::Upgraded(upgraded)) => return Some(upgraded),
                Ok(Served::Status(code)) => Ok(code),
                Err(e) => Err(e),
            }
        }
    };
    match status {
        Ok(code) => responded(core, code, conn_index),
        Err(err) => fail(core, &mut respond, &err, conn_index),
    }
    None
}

/// Counts and logs a response the stream got.
fn responded(core: &Core, code: u16, conn_index: u8) {
    core.counters().response(code);
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("");
    log::debug!(connIndex = conn_index; "{code} {reason}");
}

/// How [`route`] served a stream.
enum Served<B, W> {
    /// Done, with this status.
    Status(u16),
    /// An HTTP origin answered an upgrade: pipe it.
    Upgraded(Upgraded<B, W>),
}

/// Ingress lookup and the rule's service.
async fn route<B: super::BodyReader, R: ResponseSender>(
    core: &Core,
    req: &StreamHead,
    body: B,
    respond: &mut R,
    websocket: bool,
    conn_index: u8,
) -> Result<Served<B, R::Writer>, StreamError> {
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers
                .get("host")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    // The table is held for this request only: a reload during it does not affect it.
    let table = core.shared.ingress.load();
    let (rule, index) = match table.find(&host, req.uri.path()) {
        Matched::Rule(i) => (table.rule(i), i.0),
        Matched::Internal(_) => {
            return Err(StreamError::refused(
                "management requests are not supported",
            ));
        }
    };
    log_request(req, &host, conn_index, index, rule);
    if let Some(access) = rule.access.as_ref().filter(|a| a.required) {
        let token = req.headers.get(super::access::HEADER).map(|v| v.as_bytes());
        if let super::access::Decision::Deny(reason) = Box::pin(super::access::check(access, token))
            .await
            .map_err(|e| StreamError::new(Side::Local, Cause::Access(e)))?
        {
            log::error!(connIndex = conn_index; "request filtered by middleware handler (AccessJWTValidator) due to: {reason}");
            return status_only(respond, 403).map(Served::Status);
        }
    }
    // The service's text only labels an error: formatted then, not for every request.
    let service = || rule.service.to_string();
    let status = match &rule.service {
        Service::Status(code) => status_only(respond, *code),
        Service::HelloWorld => Ok(Box::pin(super::hello::serve(req, body, respond, websocket))
            .await
            .unwrap_or(200)),
        Service::Http(o) => {
            let tls = (o.scheme == "https").then(|| tls_params(&rule.options, &host, &o.host));
            let target = Target::Tcp {
                host: o.host.clone(),
                port: o.port,
            };
            return http_origin(core, req, body, respond, rule, target, tls, websocket)
                .await
                .map_err(|e| e.in_rule(Some(index), service()));
        }
        Service::Unix { path, tls } => {
            let tls = tls.then(|| tls_params(&rule.options, &host, "localhost"));
            let target = Target::Unix { path: path.clone() };
            return http_origin(core, req, body, respond, rule, target, tls, websocket)
                .await
                .map_err(|e| e.in_rule(Some(index), service()));
        }
        Service::Stream(s) if websocket => {
            let dest = s.dest.clone();
            Box::pin(stream_service(req, body, respond, rule, &dest)).await
        }
        Service::Bastion if websocket => {
            let dest = req
                .headers
                .get("cf-access-jump-destination")
                .and_then(|v| v.to_str().ok())
                .map(jump_destination)
                .ok_or_else(|| StreamError::refused("Did not receive final destination from client. The --destination flag is likely not set on the client side"))?;
            Box::pin(stream_service(req, body, respond, rule, &dest)).await
        }
        Service::SocksProxy { rules } if websocket => {
            Box::pin(super::socks::serve_proxy(req, body, respond, rule, rules))
                .await
                .map_err(socks_error)
        }
        Service::Stream(_) | Service::Bastion | Service::SocksProxy { .. } => {
            Err(StreamError::refused(
                "stream services need a websocket request (use cloudflared access)",
            ))
        }
    };
    status
        .map(Served::Status)
        .map_err(|e| e.in_rule(Some(index), service()))
}

/// cloudflared's per-request debug line (`GET http://... HTTP/2.0 connIndex=N ...`). The
/// level check comes first, so a disabled debug level costs nothing per request.
fn log_request(req: &StreamHead, host: &str, conn_index: u8, index: usize, rule: &Rule) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let path_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let cf_ray = req
        .headers
        .get("cf-ray")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let length = req
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-1");
    log::debug!(
        connIndex = conn_index,
        cfRay = cf_ray,
        host = host,
        path = req.uri.path(),
        ingressRule = index,
        originService = rule.service.to_string().as_str(),
        content_length = length;
        "{} http://localhost:8080{path_query} HTTP/2.0", req.method
    );
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

#[allow(clippy::too_many_arguments)]
async fn http_origin<B: super::BodyReader, R: ResponseSender>(
    core: &Core,
    req: &StreamHead,
    body: B,
    respond: &mut R,
    rule: &Rule,
    target: Target,
    tls: Option<TlsParams>,
    websocket: bool,
) -> Result<Served<B, R::Writer>, StreamError> {
    let o = &rule.options;
    let dial = Dial {
        target,
        tls,
        connect_timeout: o.connect_timeout,
        tls_timeout: o.tls_timeout,
        tcp_keep_alive: o.tcp_keep_alive,
    };
    match proxy_http(core, req, body, respond, &dial, o, websocket).await {
        Outcome::Responded(code) => Ok(Served::Status(code)),
        Outcome::Upgraded(upgraded) => Ok(Served::Upgraded(upgraded)),
        Outcome::Failed(e) => Err(e.into()),
        Outcome::Aborted { status, error } => Err(StreamError::from(error).after_head(status)),
    }
}

/// The one place a failed stream becomes an answer, a log line and a count.
fn fail<R: ResponseSender>(core: &Core, respond: &mut R, err: &StreamError, conn_index: u8) {
    let counters = core.counters();
    counters.request_errors.fetch_add(1, Relaxed);
    err.log(conn_index);
    if let Some(status) = err.after_head {
        // The head went out and the body writer already reset the stream.
        counters.response(status);
        return;
    }
    // cloudflared counts `response_by_code` only for responses an origin sent: its own 502
    // and an Access 403 are not counted.
    respond.fail(err);
}
