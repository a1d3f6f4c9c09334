//! Which HTTP proxy an origin request goes through, decided as Go's
//! `http.ProxyFromEnvironment` (golang.org/x/net/http/httpproxy) decides it for cloudflared:
//! `HTTPS_PROXY`/`https_proxy` for https origins, `HTTP_PROXY`/`http_proxy` for http ones
//! (uppercase wins; `HTTP_PROXY` is ignored under CGI, when `REQUEST_METHOD` is set),
//! `NO_PROXY`/`no_proxy` exclusions, and never for `localhost` or loopback addresses.
//!
//! Pure: the environment is passed in, nothing is dialled. The origin dialer asks
//! [`ProxyEnv::proxy_for`] and, given a proxy, connects to it (CONNECT for https and
//! websockets, absolute-form requests for plain http).

use std::collections::HashMap;
use std::net::IpAddr;

/// A proxy to use: scheme (`http`, `https`, `socks5`, `socks5h`), host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// `user:password` when the URL carries credentials (sent as Proxy-Authorization Basic).
    pub userinfo: Option<String>,
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq)]
enum NoProxy {
    /// Everything (`*`).
    All,
    /// An address range (`10.0.0.0/8`).
    Cidr(IpAddr, u8),
    /// One address, optionally one port.
    Ip(IpAddr, Option<u16>),
    /// A domain: `exact` also matches the name itself (an entry without a leading dot).
    Domain {
        suffix: String,
        exact: bool,
        port: Option<u16>,
    },
}

/// The proxy settings read from one environment snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyEnv {
    http: Option<ProxyUrl>,
    https: Option<ProxyUrl>,
    no_proxy: Vec<NoProxy>,
}

fn get_any<'a>(env: &'a HashMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| env.get(*n).map(String::as_str))
        .filter(|v| !v.is_empty())
}

impl ProxyEnv {
    /// Reads the variables as Go's `httpproxy.FromEnvironment`. Unparsable proxy URLs are
    /// treated as absent (Go returns an error for the request; ringflare logs it once).
    pub fn from_env(env: &HashMap<String, String>) -> ProxyEnv {
        let cgi = env.contains_key("REQUEST_METHOD");
        let http = if cgi {
            None
        } else {
            get_any(env, &["HTTP_PROXY", "http_proxy"]).and_then(parse_proxy_url)
        };
        let https = get_any(env, &["HTTPS_PROXY", "https_proxy"]).and_then(parse_proxy_url);
        let no_proxy = get_any(env, &["NO_PROXY", "no_proxy"])
            .map(parse_no_proxy)
            .unwrap_or_default();
        ProxyEnv {
            http,
            https,
            no_proxy,
        }
    }

    /// The proxy for a request to `host:port` over `scheme` (`http`/`ws` or `https`/`wss`).
    pub fn proxy_for(&self, scheme: &str, host: &str, port: u16) -> Option<&ProxyUrl> {
        let proxy = match scheme {
            "https" | "wss" => self.https.as_ref(),
            "http" | "ws" => self.http.as_ref(),
            _ => None,
        }?;
        self.use_proxy(host, port).then_some(proxy)
    }

    fn use_proxy(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case("localhost") {
            return false;
        }
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return false;
        }
        let name = host.to_ascii_lowercase();
        !self.no_proxy.iter().any(|rule| match rule {
            NoProxy::All => true,
            NoProxy::Cidr(net, bits) => ip.is_some_and(|ip| in_cidr(ip, *net, *bits)),
            NoProxy::Ip(want, p) => ip == Some(*want) && p.is_none_or(|p| p == port),
            NoProxy::Domain {
                suffix,
                exact,
                port: p,
            } => {
                p.is_none_or(|p| p == port)
                    && ((*exact && name == suffix.trim_start_matches('.'))
                        || name.ends_with(suffix.as_str()))
            }
        })
    }
}

/// Go's parse: a URL without a scheme is taken as `http://...`; only http, https, socks5 and
/// socks5h are proxies.
fn parse_proxy_url(raw: &str) -> Option<ProxyUrl> {
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_owned(), raw),
    };
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        "socks5" | "socks5h" => 1080,
        _ => return None,
    };
    let authority = rest.split('/').next()?;
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_owned()), h),
        None => (None, authority),
    };
    let (host, port) = split_host_port(hostport)?;
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| ProxyUrl {
        scheme,
        host: host.to_owned(),
        port,
        userinfo,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return Some((host, after.strip_prefix(':')));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p))),
        Some(_) => Some((s, None)),
        None => Some((s, None)),
    }
}

fn parse_no_proxy(text: &str) -> Vec<NoProxy> {
    let mut rules = Vec::new();
    for entry in text.split(',').map(|e| e.trim().to_ascii_lowercase()) {
        if entry.is_empty() {
            continue;
        }
        if entry == "*" {
            return vec![NoProxy::All];
        }
        if let Some((net, bits)) = entry.split_once('/') {
            if let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u8>()) {
                rules.push(NoProxy::Cidr(net, bits));
            }
            continue;
        }
        let Some((host, port)) = split_host_port(&entry) else {
            continue;
        };
        let port = match port.map(str::parse::<u16>) {
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => continue,
            None => None,
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            rules.push(NoProxy::Ip(ip, port));
            continue;
        }
        // `*.example.com` is `.example.com`: subdomains only.
        let host = host.strip_prefix('*').unwrap_or(host);
        let (suffix, exact) = match host.strip_prefix('.') {
            Some(_) => (host.to_owned(), false),
            None => (format!(".{host}"), true),
        };
        rules.push(NoProxy::Domain {
            suffix,
            exact,
            port,
        });
    }
    rules
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ProxyEnv {
        ProxyEnv::from_env(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn scheme_picks_the_variable_and_uppercase_wins() {
        let e = env(&[
            ("HTTP_PROXY", "proxy.corp:3128"),
            ("http_proxy", "other:1"),
            ("https_proxy", "https://secure.corp"),
        ]);
        let p = e.proxy_for("http", "origin.internal", 80).unwrap();
        assert_eq!(
            (p.scheme.as_str(), p.host.as_str(), p.port),
            ("http", "proxy.corp", 3128)
        );
        let p = e.proxy_for("wss", "origin.internal", 443).unwrap();
        assert_eq!((p.scheme.as_str(), p.port), ("https", 443));
        assert!(env(&[]).proxy_for("http", "a.b", 80).is_none());
        assert!(
            env(&[("HTTP_PROXY", "ftp://x")])
                .proxy_for("http", "a.b", 80)
                .is_none()
        );
        let p = env(&[("HTTP_PROXY", "http://u:p@[::1]:8080/")]);
        let p = p.proxy_for("http", "a.b", 80).unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.userinfo.as_deref()),
            ("::1", 8080, Some("u:p"))
        );
    }

    #[test]
    fn cgi_ignores_http_proxy_but_not_https_proxy() {
        let e = env(&[
            ("HTTP_PROXY", "p:1"),
            ("HTTPS_PROXY", "p:2"),
            ("REQUEST_METHOD", "GET"),
        ]);
        assert!(e.proxy_for("http", "a.b", 80).is_none());
        assert_eq!(e.proxy_for("https", "a.b", 443).unwrap().port, 2);
    }

    #[test]
    fn localhost_loopback_and_no_proxy_bypass() {
        let e = env(&[
            ("HTTP_PROXY", "p:1"),
            (
                "NO_PROXY",
                "example.com, .sub.org,*.star.net,10.0.0.0/8,192.168.1.1,host.io:8080",
            ),
        ]);
        let via = |h: &str, port: u16| e.proxy_for("http", h, port).is_some();
        assert!(!via("localhost", 80));
        assert!(!via("127.0.0.2", 80));
        assert!(!via("[::1]", 80));
        assert!(!via("example.com", 80) && !via("a.example.com", 80));
        assert!(via("notexample.com", 80));
        assert!(!via("x.sub.org", 80) && via("sub.org", 80));
        assert!(!via("x.star.net", 80) && via("star.net", 80));
        assert!(!via("10.2.3.4", 80) && via("11.0.0.1", 80));
        assert!(!via("192.168.1.1", 80) && via("192.168.1.2", 80));
        assert!(!via("host.io", 8080) && via("host.io", 80));
        assert!(
            env(&[("HTTP_PROXY", "p:1"), ("no_proxy", "*")])
                .proxy_for("http", "a", 80)
                .is_none()
        );
    }
}
