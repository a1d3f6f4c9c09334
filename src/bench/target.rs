//! The load target: URL parsing, address resolution and the request bytes sent on the wire.
//!
//! Resolution happens once, before any worker starts (a blocking `getaddrinfo` is fine
//! there and would stall a runtime on the hot path). The request head is built once and
//! shared by every connection as cheap `Bytes` clones.

use std::net::{SocketAddr, ToSocketAddrs};

use bytes::{Bytes, BytesMut};

/// What kind of traffic a URL scheme implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`.
    Http,
    /// `ws://`: WebSocket over plain HTTP/1.1.
    Ws,
    /// `tcp://host:port`: raw bytes.
    Tcp,
}

/// A parsed and resolved target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Its scheme.
    pub scheme: Scheme,
    /// `host[:port]` as written, for the Host header.
    pub authority: String,
    /// Path and query (`/` when absent).
    pub path: String,
    /// First resolved address.
    pub addr: SocketAddr,
}

/// Parses `url` and resolves its host.
pub fn parse_target(url: &str) -> Result<Target, String> {
    let (scheme, rest, default_port) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r, 80)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (Scheme::Ws, r, 80)
    } else if let Some(r) = url.strip_prefix("tcp://") {
        (Scheme::Tcp, r, 0)
    } else if url.starts_with("https://") || url.starts_with("wss://") {
        return Err(format!(
            "{url}: TLS targets are not supported by this generator; benchmark the plain-HTTP side (the built-in edge listens on plain HTTP)"
        ));
    } else {
        return Err(format!("{url}: expected an http://, ws:// or tcp:// URL"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.is_empty() {
        return Err(format!("{url}: missing host"));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    if !has_port && default_port == 0 {
        return Err(format!("{url}: tcp:// needs an explicit port"));
    }
    let lookup = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    let addr = lookup
        .to_socket_addrs()
        .map_err(|e| format!("{url}: resolving {lookup}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: {lookup} resolved to no address"))?;
    Ok(Target {
        url: url.to_owned(),
        scheme,
        authority: authority.to_owned(),
        path,
        addr,
    })
}

/// Builds the request head sent for every HTTP request.
///
/// `body_len` adds `Content-Length` (uploads stream their body after this head).
pub fn request_head(
    target: &Target,
    method: &str,
    body_len: u64,
    extra: &[String],
) -> Result<Bytes, String> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("invalid method {method:?}"));
    }
    let mut head = BytesMut::with_capacity(256);
    head.extend_from_slice(
        format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\n",
            target.path, target.authority
        )
        .as_bytes(),
    );
    if body_len > 0 || matches!(method, "POST" | "PUT" | "PATCH") {
        head.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
    }
    for h in extra {
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("header {h:?}: expected 'Name: value'"));
        };
        if name.trim().is_empty() || h.contains(['\r', '\n']) {
            return Err(format!("header {h:?}: invalid"));
        }
        head.extend_from_slice(format!("{}: {}\r\n", name.trim(), value.trim()).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    Ok(head.freeze())
}

/// The WebSocket upgrade request for `key`.
pub fn upgrade_head(target: &Target, key: &str) -> Bytes {
    Bytes::from(format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n",
        target.path, target.authority
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes_paths_and_ports() {
        let t = parse_target("http://127.0.0.1:8080/bytes/1024?x=1").unwrap();
        assert_eq!(
            (t.scheme, t.authority.as_str(), t.path.as_str()),
            (Scheme::Http, "127.0.0.1:8080", "/bytes/1024?x=1")
        );
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        let t = parse_target("ws://[::1]:9/ws").unwrap();
        assert_eq!((t.scheme, t.addr.port()), (Scheme::Ws, 9));
        let t = parse_target("http://localhost?q").unwrap();
        assert_eq!((t.path.as_str(), t.addr.port()), ("/?q", 80));
        assert!(parse_target("tcp://127.0.0.1").is_err());
        assert!(parse_target("https://x").unwrap_err().contains("TLS"));
        assert!(parse_target("ftp://x").is_err());
        assert!(parse_target("http:///x").is_err());
    }

    #[test]
    fn request_head_has_length_and_headers() {
        let t = parse_target("http://127.0.0.1:1/upload").unwrap();
        let h = request_head(&t, "POST", 10, &["X-A: b".into()]).unwrap();
        assert_eq!(
            &h[..],
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 10\r\nX-A: b\r\n\r\n"
        );
        assert!(request_head(&t, "G T", 0, &[]).is_err());
        assert!(request_head(&t, "GET", 0, &["nocolon".into()]).is_err());
    }
}
