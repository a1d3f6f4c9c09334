//! Origin requests through an HTTP proxy, as Go's `http.Transport` sends them for cloudflared
//! when `HTTP_PROXY`/`HTTPS_PROXY` name one ([`super::proxy_env`] decides which): https origins
//! get a `CONNECT host:port` tunnel and TLS inside it; plain http origins get absolute-form
//! requests (`GET http://host:port/path`) on the connection to the proxy.
//!
//! This module owns the CONNECT exchange and the proxy's credentials header; it never decides
//! whether a proxy is used, and never speaks TLS to the proxy itself.

#![forbid(unsafe_code)]

use std::io;
use std::sync::OnceLock;

use base64::Engine as _;
use bytes::Bytes;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;

use super::proxy_env::{ProxyEnv, ProxyUrl};

/// Longest CONNECT response head accepted from a proxy.
const MAX_HEAD: usize = 8 * 1024;

/// The process's proxy settings, read once from its environment (Go's
/// `ProxyFromEnvironment` also reads it once, on first use).
pub fn global() -> &'static ProxyEnv {
    static ENV: OnceLock<ProxyEnv> = OnceLock::new();
    ENV.get_or_init(|| ProxyEnv::from_env(&std::env::vars().collect()))
}

/// Why going through the proxy failed, worded as Go's transport words it.
pub fn proxy_error(reason: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("proxyconnect tcp: {reason}"))
}

/// Whether ringflare can speak to this proxy: plain-HTTP proxies only (an `https://` or SOCKS
/// proxy fails the request with a clear error rather than silently going direct).
pub fn supported(proxy: &ProxyUrl) -> io::Result<()> {
    match proxy.scheme.as_str() {
        "http" => Ok(()),
        other => Err(proxy_error(format!(
            "{other}:// proxies are not supported by ringflare (use an http:// proxy)"
        ))),
    }
}

/// `Proxy-Authorization: Basic ...` when the proxy URL carries `user:password`.
pub fn authorization(proxy: &ProxyUrl) -> Option<Bytes> {
    proxy.userinfo.as_ref().map(|u| {
        let creds = base64::engine::general_purpose::STANDARD.encode(u.as_bytes());
        Bytes::from(format!("Basic {creds}"))
    })
}

/// Opens a `CONNECT host:port` tunnel on `tcp` (already connected to `proxy`); on success
/// the stream carries bytes to the origin. Any status but 200 fails, as in Go.
pub async fn tunnel(
    tcp: &mut TcpStream,
    host: &str,
    port: u16,
    proxy: &ProxyUrl,
) -> io::Result<()> {
    let authority = super::origin::join(host, port);
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = authorization(proxy) {
        head.push_str("Proxy-Authorization: ");
        head.push_str(&String::from_utf8_lossy(&auth));
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    tcp.write_all(head.into_bytes()).await.0?;
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    loop {
        // The proxy sends nothing after the head until the client speaks (TLS begins with the
        // client), so a read never takes origin bytes along with the head.
        let chunk = Vec::with_capacity(512);
        let compio::BufResult(res, chunk) = tcp.read(chunk).await;
        match res? {
            0 => return Err(proxy_error("proxy closed the connection during CONNECT")),
            _ => buf.extend_from_slice(&chunk),
        }
        if let Some(status) = connect_status(&buf)? {
            return match status {
                200 => Ok(()),
                _ => Err(proxy_error(status_text(&buf))),
            };
        }
        if buf.len() > MAX_HEAD {
            return Err(proxy_error("CONNECT response head too long"));
        }
    }
}

/// The status of a complete response head in `buf`; `None` while incomplete.
fn connect_status(buf: &[u8]) -> io::Result<Option<u16>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Ok(resp.code),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(proxy_error(format!("malformed CONNECT response: {e}"))),
    }
}

/// The status line without its version (`403 Forbidden`), as Go reports a refused CONNECT.
fn status_text(buf: &[u8]) -> String {
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    line.split_once(' ')
        .map_or(line.to_string(), |(_, s)| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_status_waits_for_the_whole_head() {
        assert_eq!(connect_status(b"HTTP/1.1 200 Connection").unwrap(), None);
        assert_eq!(
            connect_status(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap(),
            Some(200)
        );
        assert!(connect_status(b"garbage\r\n\r\n").is_err());
        assert_eq!(
            status_text(b"HTTP/1.1 403 Forbidden\r\nX: y\r\n\r\n"),
            "403 Forbidden"
        );
    }

    #[test]
    fn credentials_become_basic_auth() {
        let p = ProxyUrl {
            scheme: "http".into(),
            host: "proxy".into(),
            port: 3128,
            userinfo: Some("user:pass".into()),
        };
        assert_eq!(authorization(&p).unwrap(), "Basic dXNlcjpwYXNz");
        assert!(supported(&p).is_ok());
        let socks = ProxyUrl {
            scheme: "socks5".into(),
            ..p
        };
        assert!(
            supported(&socks)
                .unwrap_err()
                .to_string()
                .contains("socks5://")
        );
    }
}
