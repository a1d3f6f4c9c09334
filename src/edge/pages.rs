//! Cloudflare-like error pages the edge answers with when it cannot forward a request.
//!
//! Statuses follow Cloudflare: 530 with error 1033 when no connector serves the tunnel,
//! 502 when the connector reports an origin failure, 524 when the response took too long,
//! 404 (error 1001-like) for a host no tunnel claims, 400 for malformed requests.

use bytes::Bytes;

/// One error page: status, Cloudflare error code (0 = none), title and explanation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorPage {
    pub status: u16,
    pub code: u32,
    pub title: &'static str,
    pub detail: &'static str,
}

pub(crate) const NO_CONNECTOR: ErrorPage = ErrorPage {
    status: 530,
    code: 1033,
    title: "Cloudflare Tunnel error",
    detail: "The tunnel for this hostname has no connector registered with this edge. \
             Start cloudflared (or ringflare tunnel run) for it and try again.",
};

pub(crate) const UNKNOWN_HOST: ErrorPage = ErrorPage {
    status: 404,
    code: 1001,
    title: "Unknown hostname",
    detail: "No tunnel on this edge is routed for this hostname. \
             Add it to a tunnel's hostnames in edge.yml.",
};

pub(crate) const BAD_GATEWAY: ErrorPage = ErrorPage {
    status: 502,
    code: 502,
    title: "Bad gateway",
    detail: "The connector could not reach the origin service for this hostname.",
};

pub(crate) const TUNNEL_FAILED: ErrorPage = ErrorPage {
    status: 502,
    code: 1033,
    title: "Tunnel connection failed",
    detail: "The tunnel connection failed while forwarding this request.",
};

pub(crate) const TIMEOUT: ErrorPage = ErrorPage {
    status: 524,
    code: 524,
    title: "A timeout occurred",
    detail: "The origin did not answer in time.",
};

pub(crate) const BAD_REQUEST: ErrorPage = ErrorPage {
    status: 400,
    code: 400,
    title: "Bad request",
    detail: "The request could not be parsed.",
};

impl ErrorPage {
    /// The HTML body for `host` and `ray`.
    pub fn body(&self, host: &str, ray: &str) -> Bytes {
        let host = escape(host);
        let code = if self.code == 0 {
            String::new()
        } else {
            format!("Error {} ", self.code)
        };
        Bytes::from(format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{code}| {title} | {host} | ringflare edge</title></head>\n\
             <body><h1>{code}</h1><h2>{title}</h2><p>{detail}</p>\n\
             <p>Host: {host}<br>Ray ID: {ray}</p><p>ringflare built-in edge</p></body></html>\n",
            title = self.title,
            detail = self.detail,
        ))
    }
}

/// Minimal HTML escaping for the host, which comes from the eyeball.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().take(256) {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}
