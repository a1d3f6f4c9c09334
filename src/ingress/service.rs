//! What a rule proxies to: the `service:` value parsed into one of cloudflared's kinds (spec §7.2).

use std::fmt;

use super::gourl::GoUrl;
use super::origin_request::{IpRule, OriginRequest};
use crate::config::raw::RawIpRule;

/// A parsed `service:`.
#[derive(Debug, Clone, PartialEq)]
pub enum Service {
    /// `http://`, `https://`, `ws://`, `wss://` origins (ws/wss are sent as http/https).
    Http(HttpOrigin),
    /// `unix:/path` (plain HTTP) or `unix+tls:/path` (HTTPS) over a unix socket.
    Unix { path: String, tls: bool },
    /// `http_status:NNN`: a fixed status with an empty body.
    Status(u16),
    /// The built-in test server.
    HelloWorld,
    /// A jump host: the destination comes from `Cf-Access-Jump-Destination`.
    Bastion,
    /// SOCKS5 over websocket with an IP access policy (default deny).
    SocksProxy { rules: Vec<IpRule> },
    /// `tcp://`, `ssh://`, `rdp://`, `smb://` or any other scheme: TCP carried over websocket.
    Stream(StreamOrigin),
}

/// An HTTP origin, as written (printed back by `ingress rule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOrigin {
    /// `http` or `https` (ws and wss mapped).
    pub scheme: &'static str,
    /// `host[:port]`, as written.
    pub authority: String,
    /// Host without port or brackets, for SNI and dialing.
    pub host: String,
    /// Explicit or scheme default port.
    pub port: u16,
    /// The URL as Go prints it (scheme lowercased).
    display: String,
}

/// A TCP destination reached through a websocket stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOrigin {
    pub scheme: String,
    /// `host:port` with the scheme's default port filled in (ssh 22, rdp 3389, smb 445, tcp 7864).
    pub dest: String,
}

impl Service {
    /// Parses a `service:` value in cloudflared's order, with its error texts.
    /// `options` are the rule's resolved options (`bastionMode` turns any URL into a bastion);
    /// `own_ip_rules` are the rule's own `ipRules`, which a `socks-proxy` rule validates.
    pub fn parse(
        value: &str,
        options: &OriginRequest,
        own_ip_rules: &[RawIpRule],
    ) -> Result<Service, String> {
        if let Some(path) = value.strip_prefix("unix:") {
            return Ok(Service::Unix {
                path: path.into(),
                tls: false,
            });
        }
        if let Some(path) = value.strip_prefix("unix+tls:") {
            return Ok(Service::Unix {
                path: path.into(),
                tls: true,
            });
        }
        if let Some(code) = value.strip_prefix("http_status:") {
            return parse_status(code);
        }
        if value == "hello_world" || value == "hello-world" {
            return Ok(Service::HelloWorld);
        }
        if value == "socks-proxy" {
            return parse_socks(value, own_ip_rules);
        }
        if value == "bastion" || options.bastion_mode {
            return Ok(Service::Bastion);
        }
        parse_url(value)
    }

    /// True for services that answer a websocket-style stream rather than HTTP.
    pub fn is_stream(&self) -> bool {
        matches!(
            self,
            Service::Bastion | Service::SocksProxy { .. } | Service::Stream(_)
        )
    }
}

/// Go's `strconv.Atoi` accepts an optional sign and decimal digits, nothing else.
fn parse_status(code: &str) -> Result<Service, String> {
    let digits = code.strip_prefix(['+', '-']).unwrap_or(code);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid HTTP status code: strconv.Atoi: parsing \"{code}\": invalid syntax"
        ));
    }
    let n: i64 = code.parse().map_err(|_| {
        format!("invalid HTTP status code: strconv.Atoi: parsing \"{code}\": value out of range")
    })?;
    match u16::try_from(n) {
        Ok(status) if (100..=999).contains(&status) => Ok(Service::Status(status)),
        _ => Err(format!("invalid HTTP status code: {n}")),
    }
}

fn parse_socks(value: &str, own: &[RawIpRule]) -> Result<Service, String> {
    let mut rules = Vec::with_capacity(own.len());
    for raw in own {
        let rule = IpRule::from_raw(raw)
            .map_err(|e| format!("unable to create ip rule for {value}: {e}"))?;
        rules.push(rule);
    }
    Ok(Service::SocksProxy { rules })
}

fn parse_url(value: &str) -> Result<Service, String> {
    let url = GoUrl::parse(value).map_err(|e| e.to_string())?;
    if url.scheme.is_empty() || url.hostname().is_empty() {
        return Err(format!(
            "{value} is an invalid address, please make sure it has a scheme and a hostname"
        ));
    }
    if !url.path.is_empty() {
        return Err(format!(
            "{value} is an invalid address, ingress rules don't support proxying to a different path on the origin service. The path will be the same as the eyeball request's path"
        ));
    }
    let http_scheme = match url.scheme.as_str() {
        "http" | "ws" => Some("http"),
        "https" | "wss" => Some("https"),
        _ => None,
    };
    match http_scheme {
        Some(scheme) => Ok(Service::Http(http_origin(&url, scheme)?)),
        None => Ok(Service::Stream(stream_origin(&url))),
    }
}

fn http_origin(url: &GoUrl, scheme: &'static str) -> Result<HttpOrigin, String> {
    let port = match url.port() {
        "" if scheme == "https" => 443,
        "" => 80,
        // Go's url.Parse checks only that the port is digits; a port past 65535 fails when
        // cloudflared dials it. Port 0 fails the same way here.
        p => p.parse().unwrap_or(0),
    };
    Ok(HttpOrigin {
        scheme,
        authority: url.host.clone(),
        host: url.hostname().to_owned(),
        port,
        display: url.to_go_string(),
    })
}

fn stream_origin(url: &GoUrl) -> StreamOrigin {
    let default_port = match url.scheme.as_str() {
        "ssh" => Some(22),
        "rdp" => Some(3389),
        "smb" => Some(445),
        "tcp" => Some(7864),
        _ => None,
    };
    let dest = match default_port {
        Some(port) if url.port().is_empty() => join_host_port(url.hostname(), port),
        _ => url.host.clone(),
    };
    StreamOrigin {
        scheme: url.scheme.clone(),
        dest,
    }
}

/// `net.JoinHostPort`: brackets around hosts that contain a colon.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl fmt::Display for Service {
    /// The string form `ingress rule` prints and the local-config JSON carries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::Http(o) => f.write_str(&o.display),
            Service::Unix { path, tls: false } => write!(f, "unix:{path}"),
            Service::Unix { path, tls: true } => write!(f, "unix+tls:{path}"),
            Service::Status(code) => write!(f, "http_status:{code}"),
            Service::HelloWorld => f.write_str("hello_world"),
            Service::Bastion => f.write_str("bastion"),
            Service::SocksProxy { .. } => f.write_str("socks-proxy"),
            Service::Stream(s) => write!(f, "{}://{}", s.scheme, s.dest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<Service, String> {
        Service::parse(v, &OriginRequest::default(), &[])
    }

    #[test]
    fn every_kind_and_its_string_form() {
        let cases = [
            ("http://localhost:8000", "http://localhost:8000"),
            ("HTTPS://Example.com", "https://Example.com"),
            ("ws://localhost:9000", "ws://localhost:9000"),
            ("wss://[::1]:9000", "wss://[::1]:9000"),
            ("unix:/run/app.sock", "unix:/run/app.sock"),
            ("unix+tls:/run/app.sock", "unix+tls:/run/app.sock"),
            ("http_status:404", "http_status:404"),
            ("hello_world", "hello_world"),
            ("hello-world", "hello_world"),
            ("bastion", "bastion"),
            ("socks-proxy", "socks-proxy"),
            ("ssh://localhost", "ssh://localhost:22"),
            ("rdp://10.0.0.5", "rdp://10.0.0.5:3389"),
            ("smb://nas", "smb://nas:445"),
            ("tcp://db", "tcp://db:7864"),
            ("tcp://db:5432", "tcp://db:5432"),
            ("ssh://[::1]", "ssh://[::1]:22"),
            ("redis://cache", "redis://cache"),
        ];
        for (input, shown) in cases {
            assert_eq!(parse(input).unwrap().to_string(), shown, "{input}");
        }
        match parse("wss://h").unwrap() {
            Service::Http(o) => {
                assert_eq!((o.scheme, o.port, o.host.as_str()), ("https", 443, "h"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bastion_mode_wins_over_a_url() {
        let opts = OriginRequest {
            bastion_mode: true,
            ..Default::default()
        };
        assert_eq!(
            Service::parse("http://x", &opts, &[]).unwrap(),
            Service::Bastion
        );
        // ...but not over the kinds checked before it.
        assert_eq!(
            Service::parse("http_status:200", &opts, &[]).unwrap(),
            Service::Status(200)
        );
    }

    #[test]
    fn error_texts_match_cloudflared() {
        let err = |v: &str| parse(v).unwrap_err();
        assert_eq!(
            err("http_status:abc"),
            "invalid HTTP status code: strconv.Atoi: parsing \"abc\": invalid syntax"
        );
        assert_eq!(err("http_status:99"), "invalid HTTP status code: 99");
        assert_eq!(err("http_status:1000"), "invalid HTTP status code: 1000");
        assert_eq!(
            err("localhost:8000"),
            "localhost:8000 is an invalid address, please make sure it has a scheme and a hostname"
        );
        assert_eq!(
            err("http://localhost:8000/"),
            "http://localhost:8000/ is an invalid address, ingress rules don't support proxying to a different path on the origin service. The path will be the same as the eyeball request's path"
        );
        assert_eq!(
            err("127.0.0.1:8000"),
            "parse \"127.0.0.1:8000\": first path segment in URL cannot contain colon"
        );
        let bad_rule = RawIpRule {
            prefix: Some("nope".into()),
            ..Default::default()
        };
        assert_eq!(
            Service::parse("socks-proxy", &OriginRequest::default(), &[bad_rule]).unwrap_err(),
            "unable to create ip rule for socks-proxy: unable to parse cidr: nope"
        );
    }
}
