//! Resolved `originRequest` options: cloudflared's defaults, then the global block, then the
//! rule's own block, field by field (spec §7.5).

use std::net::IpAddr;
use std::time::Duration;

use crate::config::raw::{RawAccess, RawIpRule, RawOriginRequest};

/// Every option that shapes how requests reach an origin. Field docs give cloudflared's default.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginRequest {
    /// TCP dial timeout (30s).
    pub connect_timeout: Duration,
    /// TLS handshake timeout (10s).
    pub tls_timeout: Duration,
    /// TCP keepalive period for origin sockets (30s).
    pub tcp_keep_alive: Duration,
    /// Turns off v4/v6 racing (false).
    pub no_happy_eyeballs: bool,
    /// Max idle pooled connections (100).
    pub keep_alive_connections: usize,
    /// Idle pooled-connection timeout (90s).
    pub keep_alive_timeout: Duration,
    /// Replaces `Host`; the original goes to `X-Forwarded-Host` ("").
    pub http_host_header: String,
    /// SNI and verify name for https origins ("").
    pub origin_server_name: String,
    /// SNI from the request's Host (false).
    pub match_sni_to_host: bool,
    /// Extra PEM CA file for origin verification ("").
    pub ca_pool: String,
    /// Skip origin certificate verification (false).
    pub no_tls_verify: bool,
    /// No chunked bodies towards the origin, for WSGI servers (false).
    pub disable_chunked_encoding: bool,
    /// Jump-host mode (false).
    pub bastion_mode: bool,
    /// Parsed, unused by cloudflared 2025.5 ("127.0.0.1").
    pub proxy_address: String,
    /// Parsed, unused (0).
    pub proxy_port: u64,
    /// `socks` turns stream services into SOCKS5 ("").
    pub proxy_type: String,
    /// Access policy for `socks-proxy` (empty).
    pub ip_rules: Vec<IpRule>,
    /// ALPN h2 towards https origins (false).
    pub http2_origin: bool,
    /// Cloudflare Access JWT check; only a rule's own block installs it.
    pub access: Access,
}

impl Default for OriginRequest {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            tls_timeout: Duration::from_secs(10),
            tcp_keep_alive: Duration::from_secs(30),
            no_happy_eyeballs: false,
            keep_alive_connections: 100,
            keep_alive_timeout: Duration::from_secs(90),
            http_host_header: String::new(),
            origin_server_name: String::new(),
            match_sni_to_host: false,
            ca_pool: String::new(),
            no_tls_verify: false,
            disable_chunked_encoding: false,
            bastion_mode: false,
            proxy_address: "127.0.0.1".into(),
            proxy_port: 0,
            proxy_type: String::new(),
            ip_rules: Vec::new(),
            http2_origin: false,
            access: Access::default(),
        }
    }
}

/// `originRequest.access`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    pub required: bool,
    pub team_name: String,
    pub aud_tag: Vec<String>,
    /// HEAD's `environment` (`fed` selects the FedRAMP Access domain).
    pub environment: String,
}

/// One `ipRules` entry: allow or deny a prefix (optionally only some ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRule {
    pub network: IpAddr,
    pub prefix_len: u8,
    /// Sorted; empty means every port.
    pub ports: Vec<u16>,
    pub allow: bool,
}

impl IpRule {
    /// cloudflared's `NewRuleByCIDR` with its error texts.
    pub fn from_raw(raw: &RawIpRule) -> Result<IpRule, String> {
        let prefix = raw.prefix.as_deref().unwrap_or("");
        if prefix.is_empty() {
            return Err("no prefix provided".into());
        }
        let (addr, len) =
            parse_cidr(prefix).ok_or_else(|| format!("unable to parse cidr: {prefix}"))?;
        let mut ports = Vec::new();
        for &port in raw.ports.iter().flatten() {
            match u16::try_from(port) {
                Ok(p) if p >= 1 => ports.push(p),
                _ => {
                    return Err(format!(
                        "invalid port {port}, needs to be between 1 and 65535"
                    ));
                }
            }
        }
        ports.sort_unstable();
        Ok(IpRule {
            network: addr,
            prefix_len: len,
            ports,
            allow: raw.allow.unwrap_or(false),
        })
    }
}

/// Go's `net.ParseCIDR`: an address, `/`, and a prefix length within the family's width.
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

impl OriginRequest {
    /// cloudflared's `setConfig`: each field the overrides set replaces the base value.
    /// `access` is taken only from a rule's own block (see [`OriginRequest::for_rule`]).
    pub fn merged(&self, o: &RawOriginRequest) -> OriginRequest {
        let mut r = self.clone();
        set(&mut r.connect_timeout, o.connect_timeout.map(|d| d.0));
        set(&mut r.tls_timeout, o.tls_timeout.map(|d| d.0));
        set(&mut r.tcp_keep_alive, o.tcp_keep_alive.map(|d| d.0));
        set(&mut r.no_happy_eyeballs, o.no_happy_eyeballs);
        set(
            &mut r.keep_alive_connections,
            o.keep_alive_connections.map(|n| n.max(0) as usize),
        );
        set(&mut r.keep_alive_timeout, o.keep_alive_timeout.map(|d| d.0));
        set(&mut r.http_host_header, o.http_host_header.clone());
        set(&mut r.origin_server_name, o.origin_server_name.clone());
        set(&mut r.match_sni_to_host, o.match_sni_to_host);
        set(&mut r.ca_pool, o.ca_pool.clone());
        set(&mut r.no_tls_verify, o.no_tls_verify);
        set(&mut r.disable_chunked_encoding, o.disable_chunked_encoding);
        set(&mut r.bastion_mode, o.bastion_mode);
        set(&mut r.proxy_address, o.proxy_address.clone());
        set(&mut r.proxy_port, o.proxy_port);
        set(&mut r.proxy_type, o.proxy_type.clone());
        if let Some(rules) = o.ip_rules.as_ref().filter(|r| !r.is_empty()) {
            // cloudflared drops entries that fail to parse here; validation reports them for
            // socks-proxy rules, where they matter.
            r.ip_rules = rules
                .iter()
                .filter_map(|raw| IpRule::from_raw(raw).ok())
                .collect();
        }
        set(&mut r.http2_origin, o.http2_origin);
        if let Some(access) = &o.access {
            r.access = Access::from_raw(access);
        }
        r
    }

    /// The options of one rule: `defaults` (built-ins + global block) overridden by the rule.
    pub fn for_rule(defaults: &OriginRequest, rule: Option<&RawOriginRequest>) -> OriginRequest {
        match rule {
            Some(raw) => defaults.merged(raw),
            None => defaults.clone(),
        }
    }
}

impl Access {
    pub fn from_raw(raw: &RawAccess) -> Access {
        Access {
            required: raw.required.unwrap_or(false),
            team_name: raw.team_name.clone().unwrap_or_default(),
            aud_tag: raw.aud_tag.clone().unwrap_or_default(),
            environment: raw.environment.clone().unwrap_or_default(),
        }
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::GoDuration;

    #[test]
    fn rule_overrides_global_overrides_defaults() {
        let global = RawOriginRequest {
            connect_timeout: Some(GoDuration(Duration::from_secs(5))),
            no_tls_verify: Some(true),
            ..Default::default()
        };
        let defaults = OriginRequest::default().merged(&global);
        let rule = RawOriginRequest {
            connect_timeout: Some(GoDuration(Duration::from_secs(1))),
            http_host_header: Some("internal".into()),
            ..Default::default()
        };
        let resolved = OriginRequest::for_rule(&defaults, Some(&rule));
        assert_eq!(resolved.connect_timeout, Duration::from_secs(1));
        assert!(resolved.no_tls_verify);
        assert_eq!(resolved.http_host_header, "internal");
        assert_eq!(resolved.keep_alive_connections, 100);
        assert_eq!(resolved.keep_alive_timeout, Duration::from_secs(90));
        assert_eq!(resolved.proxy_address, "127.0.0.1");
    }

    #[test]
    fn ip_rule_errors_match_cloudflared() {
        let rule = |prefix: Option<&str>, ports: Vec<i64>| RawIpRule {
            prefix: prefix.map(str::to_owned),
            ports: Some(ports),
            allow: Some(true),
            unknown: vec![],
        };
        assert_eq!(
            IpRule::from_raw(&rule(None, vec![])).unwrap_err(),
            "no prefix provided"
        );
        assert_eq!(
            IpRule::from_raw(&rule(Some("10.0.0.0"), vec![])).unwrap_err(),
            "unable to parse cidr: 10.0.0.0"
        );
        assert_eq!(
            IpRule::from_raw(&rule(Some("10.0.0.0/8"), vec![0])).unwrap_err(),
            "invalid port 0, needs to be between 1 and 65535"
        );
        let ok = IpRule::from_raw(&rule(Some("10.1.2.3/8"), vec![443, 80])).unwrap();
        assert_eq!(ok.ports, vec![80, 443]);
        assert!(IpRule::from_raw(&rule(Some("::1/129"), vec![])).is_err());
    }
}
